"""``msd`` object commands at the edges of their input and environment: an endpoint URL
with user info or a malformed host, a region variable that is not a region, expired
environment credentials, ``rm --concurrency`` out of range, a folder path with a trailing
``/``, and SIGTERM mid-transfer. Each failure is one line on stderr, no traceback."""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from scripted_server import Connection, response_head, scripted_server
from serve_process import MSD, SCRIPTED_ENV, one_line_error
from serve_process import ServeProcess as Server


def test_an_endpoint_with_a_password_is_refused_without_printing_it(server: Server) -> None:
    """It was accepted and the password dropped silently (and handed to event hooks)."""
    host = server.endpoint.split("://", 1)[1]
    line = one_line_error(
        server.run("ls", "--endpoint", f"http://me:s3cr3t@{host}"), "ls"
    )
    assert "user info" in line and "s3cr3t" not in line and "***@" in line


def test_a_malformed_endpoint_is_one_line_without_debug_hint(server: Server) -> None:
    """urllib's ValueError came out as "ValueError: Invalid IPv6 URL (run with --debug)"."""
    line = one_line_error(server.run("ls", "--endpoint", "http://[::1"), "ls")
    assert "InvalidParameterError" in line and "https://HOST[:PORT]" in line
    assert "--debug" not in line


@pytest.mark.parametrize("name", ["AWS_REGION", "AWS_DEFAULT_REGION"])
def test_a_region_variable_that_is_not_a_region_names_the_variable(
    server: Server, name: str
) -> None:
    """It was signed with; the service's 403 then said to check the keys."""
    env = {"AWS_REGION": "", name: "us east 1"}
    line = one_line_error(server.run("ls", env=env), "ls")
    assert f"{name}='us east 1'" in line
    assert "AWS_SECRET_ACCESS_KEY" not in line


def test_expired_environment_credentials_say_so(server: Server) -> None:
    env = {"AWS_SESSION_TOKEN": "token", "AWS_CREDENTIAL_EXPIRATION": "2000-01-01T00:00:00Z"}
    line = one_line_error(server.run("ls", env=env), "ls")
    assert "CredentialsError" in line and "expired at 2000-01-01" in line


# --- SIGTERM mid-transfer --------------------------------------------------------------------



@pytest.mark.anyio
async def test_sigterm_mid_download_leaves_nothing_and_exits_143(tmp_path: Path) -> None:
    """`kill` (systemd, Kubernetes, timeout(1)) ended msd where it stood: no message, and
    the temporary `.seg.ts.msdpart` stayed in the destination folder."""
    sent = anyio.Event()

    async def half_then_stall(conn: Connection) -> None:
        await conn.read_request()
        await conn.send(response_head(200, {"Content-Length": 100_000}) + b"x" * 50_000)
        sent.set()
        await anyio.sleep(120)

    target = tmp_path / "seg.ts"
    async with scripted_server(half_then_stall) as server, await anyio.open_process(
        [MSD, "get", "--endpoint", server.endpoint, "live/seg.ts", str(target)],
        env=SCRIPTED_ENV,
    ) as process:
        with anyio.fail_after(120):
            await sent.wait()
            while not _writing_a_part(tmp_path):  # noqa: ASYNC110
                await anyio.sleep(0.02)  # msd is writing the first half
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 143
        assert process.stderr is not None
        stderr = (await process.stderr.receive()).decode()
    assert stderr.splitlines() == ["msd get: stopped by SIGTERM"], stderr
    assert os.listdir(tmp_path) == []  # neither seg.ts nor its .msdpart


def _writing_a_part(folder: Path) -> bool:
    """Whether ``msd get`` has written into its temporary file (.NAME.XXXXXXXX.msdpart)."""
    return any(p.stat().st_size for p in folder.glob(".*.msdpart"))


def test_sigterm_while_put_waits_on_stdin_stores_nothing(server: Server) -> None:
    read_end, write_end = os.pipe()
    try:
        with subprocess.Popen(
            [MSD, "put", "-", "term/silent.bin"], env=server.env, stdin=read_end,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        ) as process:
            os.close(read_end)
            read_end = -1
            os.write(write_end, b"some bytes, then silence")
            # Ready when it reads stdin; before its signal handler exists SIGTERM would
            # kill it outright, so wait until it sits in a read of the pipe.
            deadline = time.monotonic() + 60
            while not _reading_a_pipe(process.pid) and time.monotonic() < deadline:
                assert process.poll() is None, process.communicate()
                time.sleep(0.05)
            time.sleep(0.2)
            process.send_signal(signal.SIGTERM)
            try:
                _, err = process.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
                pytest.fail("msd put did not end on SIGTERM while it waited on stdin")
    finally:
        for fd in (read_end, write_end):
            if fd != -1:
                os.close(fd)
    assert (process.returncode, err.strip()) == (143, "msd put: stopped by SIGTERM")
    assert "no object at" in one_line_error(server.run("stat", "term/silent.bin"), "stat")


def _reading_a_pipe(pid: int) -> bool:
    """Whether a thread of ``pid`` sleeps in the kernel reading an empty pipe (as
    tests/cli/test_leftover_edges.py checks it)."""
    for wchan in Path(f"/proc/{pid}/task").glob("*/wchan"):
        with contextlib.suppress(OSError):
            if "pipe" in wchan.read_text():
                return True
    return False


@pytest.mark.parametrize("value", ["0", "-3"])
def test_rm_concurrency_below_1_is_a_usage_error(server: Server, value: str) -> None:
    """It was taken as 1 without a word, and the deletes went ahead."""
    result = server.run("rm", "-r", "--dry-run", "--concurrency", value, "any")
    assert result.returncode == 2, result
    assert f"--concurrency: must be 1 or more, not {value}" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["stat", "get", "rm"])
def test_a_folder_path_with_a_trailing_slash_is_said_to_be_a_folder(
    server: Server, command: str, tmp_path: Path
) -> None:
    """docs/cli.md: stat, get and rm say so when PATH is a folder. Written with its
    trailing "/", it was refused as a path with an empty segment instead."""
    seg = tmp_path / "seg.ts"
    seg.write_bytes(b"media")
    assert server.run("put", str(seg), "live/seg.ts").returncode == 0
    args = [command, "live/"] + ([str(tmp_path / "out.ts")] if command == "get" else [])
    line = one_line_error(server.run(*args, cwd=tmp_path), command)
    assert "'live/' is a folder, not an object" in line, line
    assert "empty segment" not in line
    line = one_line_error(server.run(command, "nothing/", cwd=tmp_path), command)
    assert "no object at 'nothing/'" in line, line
    assert not (tmp_path / "out.ts").exists()
    assert server.run("stat", "live/seg.ts").returncode == 0  # rm deleted nothing


def _stored_segment_and_a_victim(tmp_path: Path, server: Server) -> tuple[Path, Path]:
    """``d/seg.ts`` (b"media") stored; a file a link may point at (b"precious"), and an
    empty folder to download into."""
    seg = tmp_path / "seg.ts"
    seg.write_bytes(b"media")
    assert server.run("put", str(seg), "d/seg.ts").returncode == 0
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    out = tmp_path / "out"
    out.mkdir()
    return victim, out


def test_msd_get_never_writes_through_a_link_planted_beside_its_file(
    tmp_path: Path, server: Server
) -> None:
    """It wrote the object through a link planted at .NAME.msdpart, once its temporary name
    (see tests/transfer/test_planted_links.py); the name is now its own and random, and the
    planted link is left as it was."""
    victim, out = _stored_segment_and_a_victim(tmp_path, server)
    os.symlink(victim, out / ".seg.ts.msdpart")
    result = server.run("get", "d/seg.ts", str(out / "seg.ts"))
    assert result.returncode == 0, result.stderr
    assert victim.read_bytes() == b"precious"
    assert (out / "seg.ts").read_bytes() == b"media"
    assert sorted(p.name for p in out.iterdir()) == [".seg.ts.msdpart", "seg.ts"]


def test_msd_get_into_a_link_replaces_a_file_link_and_follows_a_folder_link(
    tmp_path: Path, server: Server
) -> None:
    """docs/cli.md: FILE a link to a regular file is replaced by the download, as rsync and
    aws s3 cp replace it (a link planted at a name in a shared folder never gets the
    object written into its target); FILE a link to a folder is that folder, as for cp."""
    victim, out = _stored_segment_and_a_victim(tmp_path, server)
    os.symlink(victim, out / "file-link")
    result = server.run("get", "d/seg.ts", str(out / "file-link"))
    assert result.returncode == 0, result.stderr
    assert victim.read_bytes() == b"precious"
    assert not (out / "file-link").is_symlink()
    assert (out / "file-link").read_bytes() == b"media"
    folder = tmp_path / "folder"
    folder.mkdir()
    os.symlink(folder, out / "folder-link")
    result = server.run("get", "d/seg.ts", str(out / "folder-link"))
    assert result.returncode == 0, result.stderr
    assert (out / "folder-link").is_symlink()
    assert (folder / "seg.ts").read_bytes() == b"media"
    assert sorted(p.name for p in out.iterdir()) == ["file-link", "folder-link"]


def test_msd_get_into_an_empty_file_name_is_refused(tmp_path: Path, server: Server) -> None:
    """An empty FILE (an unset shell variable: msd get PATH "$OUT") wrote ./NAME."""
    seg = tmp_path / "seg.ts"
    seg.write_bytes(b"media")
    assert server.run("put", str(seg), "d/seg.ts").returncode == 0
    work = tmp_path / "work"
    work.mkdir()
    line = one_line_error(server.run("get", "d/seg.ts", "", cwd=work), "get")
    assert "empty" in line
    assert list(work.iterdir()) == []


# --- msd get into something that is not a regular file ---------------------------------------

SMALL = bytes(range(256)) * 40  # 10 KiB: all of it fits in a pipe, no reader thread needed


@pytest.mark.parametrize("kind", ["fifo", "link to a fifo", "/dev/fd/N"])
def test_get_into_a_fifo_or_pipe_writes_into_it_and_keeps_it(
    server: Server, tmp_path: Path, kind: str
) -> None:
    """A FILE that is a FIFO, a link to one (as /dev/stdout is) or the /dev/fd/N of
    `msd get PATH >(command)` was replaced by a regular file renamed over it (so
    `msd get PATH /dev/null` as root replaced the device node /dev/null), or failed
    creating its temporary file in /dev/fd. It is written into, as stdout is."""
    source = tmp_path / "seg.ts"
    source.write_bytes(SMALL)
    assert server.run("put", str(source), "dev/seg.ts").returncode == 0
    out = tmp_path / "out"
    out.mkdir()
    fifo = out / "fifo"
    os.mkfifo(fifo)
    # Opened for reading first, without waiting for a writer: msd's open for writing then
    # returns at once, and what it writes waits in the pipe (less than its 64 KiB).
    read_end = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    write_end = -1
    try:
        if kind == "/dev/fd/N":
            read_end_2, write_end = os.pipe()
            os.close(read_end)
            read_end = read_end_2
            target = f"/dev/fd/{write_end}"
        elif kind == "link to a fifo":
            target = str(out / "stdout")
            os.symlink(fifo, target)
        else:
            target = str(fifo)
        raw = subprocess.run(
            [MSD, "get", "dev/seg.ts", target], env=server.env, pass_fds=(
                () if write_end == -1 else (write_end,)
            ), capture_output=True, timeout=120, check=False,
        )
        if write_end != -1:
            os.close(write_end)
            write_end = -1
        assert (raw.returncode, raw.stderr.decode()) == (0, "")
        os.set_blocking(read_end, True)
        received = b""
        while chunk := os.read(read_end, 65536):
            received += chunk
    finally:
        for fd in (read_end, write_end):
            if fd != -1:
                os.close(fd)
    assert received == SMALL
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["fifo"] + (["stdout"] if kind == "link to a fifo" else [])
    )


def test_get_cut_mid_body_keeps_the_earlier_file_and_leaves_no_part(
    serve: Callable[..., Server], tmp_path: Path
) -> None:
    """docs/cli.md: a failed download leaves an earlier FILE as it was, and no temporary
    file. Every GET is cut half-way, the resumed ones too, so the download fails."""
    server = serve("--fault-rate", "1", "--fault-kinds", "cut-download")
    source = tmp_path / "seg.ts"
    source.write_bytes(os.urandom(1_000_000))
    assert server.run("put", str(source), "cut/seg.ts").returncode == 0
    out = tmp_path / "out"
    out.mkdir()
    (out / "seg.ts").write_bytes(b"the earlier, complete file")
    line = one_line_error(server.run("get", "cut/seg.ts", str(out / "seg.ts")), "get")
    assert "cut short" in line or "broke" in line, line
    assert (out / "seg.ts").read_bytes() == b"the earlier, complete file"
    assert os.listdir(out) == ["seg.ts"]


@pytest.mark.parametrize("path", ["", "/"], ids=["empty", "slash"])
def test_rm_r_of_the_root_needs_whole_container(
    server: Server, tmp_path: Path, path: str
) -> None:
    """`msd rm -r "$DIR"` with DIR unset (or "$DIR/") deleted every object in the
    container, as rm -rf "$STEAMROOT/"* once deleted home folders. The root must be asked
    for by name."""
    seg = tmp_path / "seg.ts"
    seg.write_bytes(b"media")
    for name in ("keep/a.ts", "keep/b/c.ts", "top.ts"):
        assert server.run("put", str(seg), name).returncode == 0
    line = one_line_error(server.run("rm", "-r", path), "rm")
    assert "whole container" in line and "--whole-container" in line, line
    assert "nothing was deleted" in line
    listed = server.run("ls", "-r")
    assert sorted(listed.stdout.split()) == ["keep/a.ts", "keep/b/c.ts", "top.ts"]
    # Without -r, the root is a folder: the advice names the flag that will work.
    line = one_line_error(server.run("rm", "/"), "rm")
    assert "msd rm -r --whole-container /" in line, line
    dry = server.run("rm", "-r", "--dry-run", path)  # deletes nothing: no need to insist
    assert dry.returncode == 0 and "would delete 3 objects" in dry.stdout, dry
    done = server.run("rm", "-r", "--whole-container", path)
    assert done.returncode == 0, done.stderr
    assert server.run("ls", "-r").stdout == ""


def test_whole_container_goes_with_r_and_the_root(server: Server) -> None:
    """It must not widen a delete: with a folder PATH, or without -r, it is refused."""
    for args in (["rm", "--whole-container", ""], ["rm", "-r", "--whole-container", "a"]):
        line = one_line_error(server.run(*args), "rm")
        assert "--whole-container" in line, line


@pytest.mark.anyio
async def test_two_gets_into_one_file_never_present_a_half_file(tmp_path: Path) -> None:
    """Two `msd get` into the same FILE (a cron job overlapping its last run) shared one
    temporary name: the second removed the first's and wrote its own there, and the first,
    done, renamed the second's half-written file into place and exited 0."""
    first_half_sent, second_writing, release_first = anyio.Event(), anyio.Event(), anyio.Event()

    async def script(conn: Connection) -> None:
        await conn.read_request()
        if conn.index == 0:
            await conn.send(response_head(200, {"Content-Length": 100_000}) + b"A" * 50_000)
            first_half_sent.set()
            await release_first.wait()
            await conn.send(b"A" * 50_000)
        else:
            await conn.send(response_head(200, {"Content-Length": 100_000}) + b"B" * 10_000)
            second_writing.set()
        await anyio.sleep(120)

    target = tmp_path / "seg.ts"
    command = [MSD, "get", "--endpoint", "", "live/seg.ts", str(target)]

    def written_by_the_second() -> bool:
        return any(p.read_bytes()[:1] == b"B" for p in tmp_path.iterdir())

    async with scripted_server(script) as server:
        command[3] = server.endpoint
        async with await anyio.open_process(command, env=SCRIPTED_ENV) as first:
            with anyio.fail_after(120):
                await first_half_sent.wait()
            async with await anyio.open_process(command, env=SCRIPTED_ENV) as second:
                with anyio.fail_after(120):
                    await second_writing.wait()
                    while not written_by_the_second():  # noqa: ASYNC110
                        await anyio.sleep(0.02)
                    release_first.set()
                    assert await first.wait() == 0
                    assert target.read_bytes() == b"A" * 100_000
                    second.send_signal(signal.SIGTERM)
                    assert await second.wait() == 143
    assert target.read_bytes() == b"A" * 100_000
    assert os.listdir(tmp_path) == ["seg.ts"]
