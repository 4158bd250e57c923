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
        (["relay", "--endpoint", ENDPOINT, "--listen", "127.0.0.1:70000"], "0-65535"),
        (["relay", "--endpoint", ENDPOINT, "--listen", "127.0.0.1:9464", "--metrics",
          "127.0.0.1:9464"], "the same address"),
        (["relay", "--endpoint", ENDPOINT, "--basic-auth", "nocolon"], "USER:PASSWORD"),
        (["push", "/nonexistent/folder", "--endpoint", ENDPOINT], "is not a folder"),
        (["relay", "--endpoint", ENDPOINT, "--max-buffer", "1K"], "--max-buffer must be"),
        (["relay", "--endpoint", ENDPOINT, "--max-buffer", "lots"], "a size like 64M"),
        (["relay", "--endpoint", ENDPOINT, "--media-deadline", "0"], "must be above 0"),
        # A negative grace reached the publisher as close_timeout (status 1, naming an
        # option the user never gave); nan or a negative settle time were taken silently.
        (["relay", "--endpoint", ENDPOINT, "--shutdown-timeout", "-1"],
         "argument --shutdown-timeout: must be 0 or more"),
        (["push", ".", "--endpoint", ENDPOINT, "--shutdown-timeout", "nan"],
         "argument --shutdown-timeout: must be 0 or more"),
        (["push", ".", "--endpoint", ENDPOINT, "--settle", "-1"],
         "argument --settle: must be 0 or more"),
        (["push", ".", "--endpoint", ENDPOINT, "--settle", "nan"],
         "argument --settle: must be 0 or more"),
        (["push", ".", "--endpoint", ENDPOINT, "--settle", "inf"],
         "argument --settle: must be 0 or more"),
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
async def test_a_relay_on_every_interface_prints_a_url_that_can_be_pasted(
    tmp_path: Path,
) -> None:
    """``--listen 0.0.0.0:0`` printed ``relay: http://0.0.0.0:PORT``, which browsers and
    some HTTP stacks refuse; as msd serve and --metrics: the loopback, after a line that
    says it listens on every interface."""
    relay, url = await Proc.start(
        msd("relay", "--endpoint", ENDPOINT, "--listen", "0.0.0.0:0", "--allow-remote",
            "--secret", "s3cret", "--no-preflight"),
        tmp_path / "relay.log", "listening: ", env=aws_env(),
    )
    try:
        assert url.startswith("every interface, port ") and "(--listen)" in url, url
        port = url.split("port ", 1)[1].split(" ", 1)[0]
        assert relay.process.stdout is not None
        line = (await asyncio.wait_for(relay.process.stdout.readline(), 30)).decode()
        assert line == f"relay: http://127.0.0.1:{port}\n", line
    finally:
        assert await relay.stop() == 0, relay.stderr()


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


@pytest.mark.anyio
@pytest.mark.parametrize("command", ["relay", "push"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_a_signal_during_the_preflight_stops_at_once(
    tmp_path: Path, command: str, sig: signal.Signals
) -> None:
    """An origin that accepts and never answers holds the preflight for its 10 s: a signal
    meanwhile stops the command at once, before it says it is ready."""
    from msd_async.ingest.preflight import PREFLIGHT_TIMEOUT

    where = ["--listen", "127.0.0.1:0"] if command == "relay" else [str(tmp_path)]
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        silent.settimeout(30)
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        process = await asyncio.create_subprocess_exec(
            *msd(command, *where, "--endpoint", endpoint, "--metrics", "127.0.0.1:0"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=aws_env(),
        )
        try:
            conn, _ = await asyncio.to_thread(silent.accept)  # the preflight is waiting
            with conn:
                loop = asyncio.get_running_loop()
                started = loop.time()
                process.send_signal(sig)
                out, err = await asyncio.wait_for(process.communicate(), 60)
                elapsed = loop.time() - started
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    log = err.decode()
    assert elapsed < PREFLIGHT_TIMEOUT / 2, (elapsed, log)
    assert process.returncode == 0, log
    assert f"{command}: " not in out.decode().replace("msd ", "")  # never said it was ready
    lines = log.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"msd {command}: stopped by SIG"), log


@pytest.mark.anyio
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_a_second_signal_stops_without_waiting_for_the_drain(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """The first signal waits up to --shutdown-timeout for what is pending; a second one
    (an operator's second Ctrl-C) stops at once: what is pending is abandoned and counted,
    the summary is printed, the status says the stop was forced."""
    shutdown = 30.0
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "seg0.ts").write_bytes(b"media")
    # Every origin request stalls 60 s: nothing settles before the shutdown timeout.
    async with origin(tmp_path, "--fault-rate", "1", "--fault-kinds", "delay",
                      "--fault-delay", "60") as (endpoint, _):
        options = ["--endpoint", endpoint, "--no-preflight", "--media-deadline", "60",
                   "--shutdown-timeout", str(shutdown)]
        relay, url = await Proc.start(
            msd("relay", "--listen", "127.0.0.1:0", *options),
            tmp_path / "relay.log", "relay: ", env=aws_env(),
        )
        push, _ = await Proc.start(
            msd("push", str(tmp_path / "out"), *options),
            tmp_path / "push.log", "push: ", env=aws_env(),
        )
        port = int(url.rsplit(":", 1)[1])
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"PUT /a/seg0.ts HTTP/1.1\r\nHost: r\r\nContent-Length: 5\r\n\r\n"
                         b"media")
            await asyncio.sleep(1.5)  # handed over, and the pusher's file too
            loop = asyncio.get_running_loop()
            started = loop.time()
            for proc in (relay, push):
                proc.process.send_signal(sig)
            await asyncio.sleep(1.0)  # both are waiting for the stalled origin now
            codes = [await proc.stop(sig, within=shutdown) for proc in (relay, push)]
            elapsed = loop.time() - started
        finally:
            writer.close()
    expected = 130 if sig == signal.SIGINT else 143
    for name, proc, code in (("relay", relay, codes[0]), ("push", push, codes[1])):
        log = proc.stderr()
        assert code == expected, log
        assert "Traceback" not in log and "destroyed" not in log, log
        assert "seg0.ts 5 B unfinished at shutdown" in log, log
        assert "1 failed: no outcome before the shutdown was cut short" in log, log
        assert f"msd {name}: summary: 1 unfinished at shutdown" in log, log
        assert f"msd {name}: stopped by a second SIG" in log, log
    # Both stopped well before the first signal's drain could have ended.
    assert elapsed < shutdown / 3, elapsed


def test_ctrl_c_while_the_command_loads_costs_no_traceback() -> None:
    """SIGINT while the command loads lands in its imports (some 0.2 s: aiohttp,
    aiobotocore), before any handler of the command's own.

    Sent once ``main()`` has begun (its first import, ``msd_async.cli._common``, reported
    by ``-X importtime``), not after a fixed sleep: on a busy machine a sleep's signal
    landed in the interpreter's start-up or the package's own first imports, where every
    Python program prints a KeyboardInterrupt traceback and no code of msd's can run."""
    import subprocess

    for _ in range(3):
        command = msd("relay", "--endpoint", ENDPOINT, "--listen", "127.0.0.1:0",
                      "--no-preflight")
        process = subprocess.Popen(
            [command[0], "-X", "importtime", *command[1:]],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=aws_env(),
        )
        assert process.stderr is not None
        said: list[str] = []
        for line in process.stderr:
            said.append(line)
            if line.rstrip().endswith("| msd_async.cli._common"):
                break
        else:
            raise AssertionError("main() never began:\n" + "".join(said))
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
        err = "".join(line for line in (said + err.splitlines(keepends=True))
                      if not line.startswith("import time:"))
        assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
        # The command's own status: interrupted while loading, or stopped once running.
        assert process.returncode in (130, 0), (process.returncode, err)


def test_a_command_started_with_stdout_closed_stops_cleanly(tmp_path: Path) -> None:
    """`msd push DIR >&-` (a service manager with no stdout): Python's sys.stdout is None."""
    import os
    import subprocess
    import time

    process = subprocess.Popen(
        msd("push", str(tmp_path), "--endpoint", ENDPOINT, "--no-preflight"),
        stderr=subprocess.PIPE, text=True, env=aws_env(),
        preexec_fn=lambda: os.close(1),
    )
    time.sleep(3)  # started by now on a busy machine: the stop below is the normal one
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "Error" not in err and "summary:" in err, err
