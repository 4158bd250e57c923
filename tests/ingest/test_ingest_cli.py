"""`msd relay` and `msd push` as commands: arguments, one-line errors, signals."""

from __future__ import annotations

import signal
import socket
import subprocess
from pathlib import Path

import pytest
from ingest_harness import Proc, aws_env, msd

ENDPOINT = "http://127.0.0.1:9"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(msd(*args), capture_output=True, text=True, env=aws_env(), timeout=60)


def test_relay_refuses_a_remote_address_without_the_flag() -> None:
    result = run("relay", "--endpoint", ENDPOINT, "--listen", "0.0.0.0:0")
    assert result.returncode == 2
    assert "--allow-remote" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["relay", "--listen", "127.0.0.1:0"], "give --endpoint"),
        (["relay", "--endpoint", ENDPOINT, "--listen", "nowhere"], "HOST:PORT"),
        (["relay", "--endpoint", ENDPOINT, "--basic-auth", "nocolon"], "USER:PASSWORD"),
        (["push", "/nonexistent/folder", "--endpoint", ENDPOINT], "is not a folder"),
    ],
)
def test_bad_arguments_get_one_clear_line(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_relay_on_a_busy_port_fails_in_one_line() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run("relay", "--endpoint", ENDPOINT, "--listen", f"127.0.0.1:{port}")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("msd relay: ") and "address already in use" in lines[0]


@pytest.mark.anyio
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_relay_and_push_stop_on_signals_with_status_0(
    tmp_path: Path, sig: signal.Signals
) -> None:
    relay, url = await Proc.start(
        msd("relay", "--endpoint", ENDPOINT, "--listen", "127.0.0.1:0"),
        tmp_path / "relay.log", "relay: ", env=aws_env(),
    )
    assert url.startswith("http://127.0.0.1:")
    assert await relay.stop(sig) == 0, relay.stderr()
    folder = tmp_path / "empty"
    folder.mkdir()
    push, _ = await Proc.start(
        msd("push", str(folder), "--endpoint", ENDPOINT),
        tmp_path / "push.log", "push: ", env=aws_env(),
    )
    assert await push.stop(sig) == 0, push.stderr()


@pytest.mark.anyio
async def test_shutdown_is_bounded_when_the_origin_is_unreachable(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "seg0.ts").write_bytes(b"x")
    push, _ = await Proc.start(
        msd("push", str(tmp_path / "out"), "--endpoint", ENDPOINT, "--shutdown-timeout", "1"),
        tmp_path / "push.log", "push: ", env=aws_env(),
    )
    assert await push.stop(signal.SIGTERM, within=15) == 0, push.stderr()
    assert "seg0.ts" in push.stderr()


@pytest.mark.anyio
async def test_relay_status_line_on_a_terminal(tmp_path: Path) -> None:
    """On a terminal the relay keeps a status line (refreshed from its event loop) and
    still stops cleanly."""
    import asyncio
    import os
    import pty

    leader, follower = pty.openpty()
    try:
        process = await asyncio.create_subprocess_exec(
            *msd("relay", "--endpoint", ENDPOINT, "--listen", "127.0.0.1:0"),
            stdout=asyncio.subprocess.PIPE, stderr=follower, env=aws_env(TERM="xterm"),
        )
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        assert line.startswith(b"relay: http://127.0.0.1:")
        screen = b""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while b"receiving 0" not in screen and loop.time() < deadline:
            await asyncio.sleep(0.1)
            try:
                screen += os.read(leader, 65536) if _readable(leader) else b""
            except OSError:
                break
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
        await process.stdout.read()
        while _readable(leader):
            try:
                screen += os.read(leader, 65536)
            except OSError:
                break
    finally:
        os.close(follower)
        os.close(leader)
    assert b"receiving 0" in screen
    assert b"Traceback" not in screen


def _readable(fd: int) -> bool:
    import select

    return bool(select.select([fd], [], [], 0)[0])


@pytest.mark.anyio
async def test_relay_publishes_to_a_backup_endpoint_too(tmp_path: Path) -> None:
    import aiohttp
    from ingest_harness import ACCESS_KEY, SECRET_KEY

    from msd_async import Credentials, Session
    from msd_async.testing import LocalMediaStore

    creds = Credentials(ACCESS_KEY, SECRET_KEY)
    async with LocalMediaStore(credentials=creds) as primary, LocalMediaStore(
        credentials=creds
    ) as backup:
        relay, url = await Proc.start(
            msd("relay", "--endpoint", primary.endpoint, "--backup-endpoint", backup.endpoint,
                "--listen", "127.0.0.1:0"),
            tmp_path / "relay.log", "relay: ", env=aws_env(),
        )
        try:
            async with aiohttp.ClientSession() as http:
                async with http.put(f"{url}/b/seg0.ts", data=b"media") as r:
                    assert r.status == 204
                async with http.put(
                    f"{url}/b/index.m3u8",
                    data=b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\nseg0.ts\n",
                ) as r:
                    assert r.status == 204
        finally:
            assert await relay.stop() == 0, relay.stderr()
        async with Session(credentials=creds, region=primary.region) as session:
            for server in (primary, backup):
                store = session.container(server.endpoint)
                assert await store.get_bytes("b/seg0.ts") == b"media"
                assert (await store.get_bytes("b/index.m3u8")).startswith(b"#EXTM3U")
