"""`msd relay` and `msd push` as commands: arguments, one-line errors, signals."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
from pathlib import Path

import pytest
from ingest_harness import Proc, aws_env, msd, origin

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
        (["relay", "--endpoint", ENDPOINT, "--max-buffer", "1K"], "--max-buffer must be"),
        (["relay", "--endpoint", ENDPOINT, "--max-buffer", "lots"], "a size like 64M"),
        (["relay", "--endpoint", ENDPOINT, "--media-deadline", "0"], "must be above 0"),
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
        result = run("relay", "--endpoint", ENDPOINT, "--listen", f"127.0.0.1:{port}",
                     "--no-preflight")
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
        msd("relay", "--endpoint", ENDPOINT, "--listen", "127.0.0.1:0", "--no-preflight"),
        tmp_path / "relay.log", "relay: ", env=aws_env(),
    )
    assert url.startswith("http://127.0.0.1:")
    assert await relay.stop(sig) == 0, relay.stderr()
    folder = tmp_path / "empty"
    folder.mkdir()
    push, _ = await Proc.start(
        msd("push", str(folder), "--endpoint", ENDPOINT, "--no-preflight"),
        tmp_path / "push.log", "push: ", env=aws_env(),
    )
    assert await push.stop(sig) == 0, push.stderr()


@pytest.mark.anyio
async def test_shutdown_is_bounded_and_fails_when_every_publication_failed(
    tmp_path: Path,
) -> None:
    (tmp_path / "out").mkdir()
    for n in range(3):
        (tmp_path / "out" / f"seg{n}.ts").write_bytes(b"x")
    push, _ = await Proc.start(
        msd("push", str(tmp_path / "out"), "--endpoint", ENDPOINT, "--shutdown-timeout", "1",
            "--no-preflight", "--media-deadline", "0.5"),
        tmp_path / "push.log", "push: ", env=aws_env(),
    )
    await asyncio.sleep(2)
    assert await push.stop(signal.SIGTERM, within=15) == 1, push.stderr()
    log = push.stderr()
    lines = [line for line in log.splitlines() if "seg0.ts" in line]
    assert lines, log
    # Each failure line names its cause once, briefly; the summary names it once per cause.
    assert all(len(line) < 300 for line in lines), lines
    assert all(line.count("ConnectError") == 1 for line in lines), lines
    assert log.count("3 failed: ConnectError") == 1, log
    assert "summary:" in log
    assert "every publication failed" in log
    assert "Traceback" not in log


@pytest.mark.parametrize("command", ["relay", "push"])
def test_preflight_stops_a_wrong_endpoint_in_one_line(tmp_path: Path, command: str) -> None:
    where = ["--listen", "127.0.0.1:0"] if command == "relay" else [str(tmp_path)]
    result = run(command, *where, "--endpoint", ENDPOINT)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"msd {command}: ") and "--endpoint" in lines[0]
    assert result.stdout == ""  # never said "ready"


@pytest.mark.anyio
async def test_preflight_refuses_a_wrong_key_or_no_credentials(tmp_path: Path) -> None:
    async with origin(tmp_path) as (endpoint, _):
        for env, expected in (
            (aws_env(AWS_SECRET_ACCESS_KEY="not-the-secret-key-0000000000000000000000"),
             "Signature"),
            ({k: v for k, v in aws_env().items()
              if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}, "Credentials"),
        ):
            result = await asyncio.to_thread(
                subprocess.run,
                msd("relay", "--endpoint", endpoint, "--listen", "127.0.0.1:0"),
                capture_output=True, text=True, env=env, timeout=60,
            )
            assert result.returncode == 1, result.stderr
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("msd relay: "), result.stderr
            assert expected in lines[0]


def test_relay_without_endpoint_prints_its_own_usage() -> None:
    result = run("relay", "--listen", "127.0.0.1:0")
    assert result.returncode == 2
    assert result.stderr.startswith("usage: msd relay"), result.stderr
    result = run("push", ".")
    assert result.stderr.startswith("usage: msd push"), result.stderr


@pytest.mark.anyio
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_a_signal_with_encoders_connected_stops_within_the_bound(
    tmp_path: Path, sig: signal.Signals
) -> None:
    shutdown = 4.0
    # Every origin request stalls 30 s: nothing settles before the shutdown timeout.
    async with origin(tmp_path, "--fault-rate", "1", "--fault-kinds", "delay",
                      "--fault-delay", "30") as (endpoint, _):
        relay, url = await Proc.start(
            msd("relay", "--endpoint", endpoint, "--listen", "127.0.0.1:0", "--no-preflight",
                "--shutdown-timeout", str(shutdown)),
            tmp_path / "relay.log", "relay: ", env=aws_env(),
        )
        port = int(url.rsplit(":", 1)[1])
        writers = []
        try:
            # A complete segment, a body still arriving, and an idle keep-alive connection.
            _, done = await asyncio.open_connection("127.0.0.1", port)
            done.write(b"PUT /a/seg0.ts HTTP/1.1\r\nHost: r\r\nContent-Length: 5\r\n\r\nmedia")
            _, slow = await asyncio.open_connection("127.0.0.1", port)
            slow.write(b"PUT /a/seg1.ts HTTP/1.1\r\nHost: r\r\n"
                       b"Transfer-Encoding: chunked\r\n\r\n5\r\nmedia\r\n")
            _, idle = await asyncio.open_connection("127.0.0.1", port)
            writers = [done, slow, idle]
            await asyncio.sleep(1.0)
            loop = asyncio.get_running_loop()
            started = loop.time()
            code = await relay.stop(sig, within=30)
            elapsed = loop.time() - started
        finally:
            for writer in writers:
                writer.close()
    log = relay.stderr()
    assert "Traceback" not in log and "CancelledError" not in log, log
    assert elapsed < shutdown + 2 + 2.5, (elapsed, log)  # documented bound, with a margin
    assert code == 1, log  # nothing reached the stalled origin
    assert log.count("a/seg1.ts not published") == 1, log  # the cut request counts once
    assert "1 cut" in log and "summary:" in log, log


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
            *msd("relay", "--endpoint", ENDPOINT, "--listen", "127.0.0.1:0", "--no-preflight"),
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
