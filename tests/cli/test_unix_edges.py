"""``msd`` at the edges a Unix tool meets: a reader that goes away, an origin that ignores
Range, an interrupt, a missing object, a wrong region (issue 17, items 11-13). Every test
runs the real ``msd`` entry point as a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from scripted_server import Connection, response, scripted_server
from serve_process import MSD, SCRIPTED_ENV, one_line_error, start_serve
from serve_process import ServeProcess as Server

BLOB = bytes(range(256)) * 4096  # 1 MiB: far more than a pipe holds (64 KiB)


def run_into(fd: int, server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    """``msd ARGS`` with stdout on ``fd``."""
    raw = subprocess.run(
        [MSD, *args], env=server.env, stdout=fd, stderr=subprocess.PIPE, timeout=120,
        check=False,
    )
    return subprocess.CompletedProcess(raw.args, raw.returncode, "", raw.stderr.decode())


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    """One ``msd serve`` for this module: each test uses its own paths."""
    server = start_serve("--no-fsync", "--quiet")
    yield server
    server.stop()




@pytest.fixture(scope="module")
def tree(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Server:
    """A few objects, and one object larger than a pipe's buffer."""
    src = tmp_path_factory.mktemp("tree")
    for i in range(30):
        (src / f"f{i:02}.txt").write_text(str(i))
    (src / "blob.bin").write_bytes(BLOB)
    synced = server.run("sync", str(src), "ms:tree")
    assert synced.returncode == 0, synced.stderr
    return server


# --- item 11: a reader that goes away --------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("ls", "-r", "tree"),
        ("ls", "-r", "--json", "tree"),
        ("ls", "-l", "tree"),
        ("stat", "--json", "tree/blob.bin"),
        ("get", "tree/blob.bin", "-"),
    ],
    ids=" ".join,
)
def test_a_closed_stdout_pipe_is_a_quiet_success(tree: Server, args: tuple[str, ...]) -> None:
    """The reader is gone before msd writes a byte (as after ``| head -1`` ended): every
    write fails with EPIPE. Unix tools stop quietly then, with no "Broken pipe" message."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = run_into(write_end, tree, *args)
    finally:
        os.close(write_end)
    assert (result.returncode, result.stderr) == (0, "")


@pytest.mark.parametrize(
    "command",
    [f"{MSD} get tree/blob.bin - | head -c 100", f"{MSD} ls -r tree | head -1"],
)
def test_head_of_the_output_exits_0_silently(tree: Server, command: str) -> None:
    result = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {command} > /dev/null"],
        env=tree.env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert (result.returncode, result.stderr) == (0, "")


# --- item 12: get --range writes exactly the range --------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("byte_range", "expected"),
    [("bytes=2-5", BLOB[2:6]), ("bytes=1000-", BLOB[1000:]), ("bytes=-3", BLOB[-3:])],
)
async def test_get_range_from_an_origin_that_ignores_range(
    tmp_path: Path, byte_range: str, expected: bytes
) -> None:
    async def ignores_range(conn: Connection) -> None:
        while (request := await conn.read_request()) is not None:
            assert request.headers["range"] == byte_range
            await conn.send(response(200, BLOB, headers={"ETag": '"e"'}))

    env = SCRIPTED_ENV
    async with scripted_server(ignores_range) as server:
        base = [MSD, "get", "--endpoint", server.endpoint, "--range", byte_range, "o.bin"]
        with anyio.fail_after(120):
            to_stdout = await anyio.run_process([*base, "-"], env=env, check=False)
            to_file = await anyio.run_process(
                [*base, str(tmp_path / "o.bin")], env=env, check=False
            )
    assert to_stdout.returncode == 0, to_stdout.stderr
    assert to_stdout.stdout == expected
    assert to_file.returncode == 0, to_file.stderr
    assert (tmp_path / "o.bin").read_bytes() == expected


def test_get_range_honoured_by_the_origin(tree: Server) -> None:
    for byte_range, expected in (("bytes=10-19", BLOB[10:20]), ("bytes=-5", BLOB[-5:])):
        out = subprocess.run(
            [MSD, "get", "tree/blob.bin", "-", "--range", byte_range], env=tree.env,
            capture_output=True, timeout=120, check=False,
        )
        assert (out.returncode, out.stdout) == (0, expected), out.stderr


@pytest.fixture
def in_progress(server: Server) -> Iterator[subprocess.Popen[bytes]]:
    """``live/x.ts``, a STREAMING upload that has sent 10 bytes and is still going."""
    put = subprocess.Popen(
        [MSD, "put", "-", "live/x.ts", "--streaming"], env=server.env,
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    assert put.stdin is not None and put.stderr is not None
    try:
        put.stdin.write(b"abcdefghij")
        put.stdin.flush()
        for _ in range(600):
            if server.run("stat", "live/x.ts").returncode == 0:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the streaming upload never appeared")
        yield put
    finally:
        put.stdin.close()
        put.wait(timeout=60)
        put.stderr.close()


def test_get_range_of_an_in_progress_streaming_object(
    server: Server, in_progress: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    # The service ignores Range while a STREAMING upload is in progress: a 200, whole body.
    assert json.loads(server.run("stat", "live/x.ts", "--json").stdout)["size"] is None
    out = subprocess.run(
        [MSD, "get", "live/x.ts", "-", "--range", "bytes=2-4"], env=server.env,
        capture_output=True, timeout=120, check=False,
    )
    assert (out.returncode, out.stdout) == (0, b"cde"), out.stderr
    got = server.run("get", "live/x.ts", str(tmp_path / "x.ts"), "--range", "bytes=0-0")
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "x.ts").read_bytes() == b"a"


# --- item 13: clear words ------------------------------------------------------------------


def test_stat_of_a_missing_object_says_there_is_none(server: Server) -> None:
    line = one_line_error(server.run("stat", "live/none.ts"), "stat")
    assert "no object at 'live/none.ts'" in line
    assert "no error message" not in line


def test_get_of_a_folder_says_it_is_a_folder(server: Server, tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"1")
    assert server.run("put", str(tmp_path / "f"), "getdir/f").returncode == 0
    for target in ("-", str(tmp_path / "out")):
        line = one_line_error(server.run("get", "getdir", target), "get")
        assert "'getdir' is a folder" in line and "msd sync ms:getdir" in line
    assert not (tmp_path / "out").exists()
    line = one_line_error(server.run("get", "nothing/here", "-"), "get")
    assert "no object at 'nothing/here'" in line


def test_a_region_mismatch_says_region_not_keys(server: Server) -> None:
    line = one_line_error(server.run("ls", "--region", "eu-west-1"), "ls")
    assert "region" in line and "--region" in line and "eu-west-1" in line
    assert "AWS_SECRET_ACCESS_KEY" not in line


@pytest.mark.anyio
async def test_sigint_prints_one_line_and_exits_130() -> None:
    arrived = anyio.Event()

    async def stalls(conn: Connection) -> None:
        await conn.read_request()
        arrived.set()
        await anyio.sleep(120)

    env = SCRIPTED_ENV
    async with scripted_server(stalls) as server, await anyio.open_process(
        [MSD, "get", "--endpoint", server.endpoint, "a.ts", "-"], env=env
    ) as process:
        with anyio.fail_after(120):
            await arrived.wait()  # msd is inside its event loop, waiting for the answer
            process.send_signal(signal.SIGINT)
            assert await process.wait() == 130
        assert process.stderr is not None
        stderr = (await process.stderr.receive()).decode()
    assert stderr.splitlines() == ["msd get: interrupted"], stderr


def test_rm_r_dry_run_deletes_nothing(server: Server, tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"1")
    for name in ("a", "b"):
        assert server.run("put", str(tmp_path / "f"), f"dir/{name}").returncode == 0
    dry = server.run("rm", "-r", "--dry-run", "dir")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == [
        "would delete: dir/a", "would delete: dir/b", "would delete 2 objects"
    ]
    report = json.loads(server.run("rm", "-r", "--dry-run", "--json", "dir").stdout)
    assert report == {"deleted": ["dir/a", "dir/b"], "failed": [], "dry_run": True}
    assert len(json.loads(server.run("ls", "-r", "--json", "dir").stdout)) == 2


@pytest.mark.parametrize("command", ["ls", "stat", "get", "put", "rm", "presign"])
def test_help_describes_the_command(command: str) -> None:
    result = subprocess.run(
        [MSD, command, "--help"], capture_output=True, text=True, timeout=60, check=True
    )
    between = result.stdout.split("\n\n")[1]  # after the usage: the description
    assert not between.startswith(("positional arguments", "options")), result.stdout


def test_put_stdin_over_the_standard_limit_does_not_suggest_streaming(server: Server) -> None:
    data = b"\0" * (25_000_000 + 1)
    line = one_line_error(server.run("put", "-", "vod/big.bin", input=data), "put")
    assert "25,000,000" in line and "--streaming" not in line


def test_sync_dry_run_counts_the_bytes_it_would_move(server: Server, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a.ts", "b.ts"):
        (src / name).write_bytes(b"x" * 3000)
    dry = server.run("sync", str(src), "ms:dry", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines()[-1].startswith("would upload 2 files (6,000 bytes)")
    assert server.run("sync", str(src), "ms:dry").returncode == 0
    dst = tmp_path / "dst"
    dst.mkdir()
    dry = server.run("sync", "ms:dry", str(dst), "--dry-run", "--json")
    assert json.loads(dry.stdout)["bytes_transferred"] == 6000
    assert list(dst.iterdir()) == []


# --- started without a standard stream (`2>&-`, `>&-`, `<&-`) -------------------------------


def run_with_closed(server: Server, redirect: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``msd ARGS`` started by a shell with ``redirect`` (e.g. ``2>&-``) applied to it."""
    return subprocess.run(
        ["sh", "-c", f'"$0" "$@" {redirect}', MSD, *args], env=server.env,
        capture_output=True, text=True, timeout=120, check=False,
    )


def test_a_closed_stderr_keeps_error_lines_out_of_the_data(tree: Server) -> None:
    """With stderr closed, Python leaves ``sys.stderr`` None, and ``print(file=None)``
    writes to stdout: the error line went into ``get NAME -``'s data."""
    result = run_with_closed(tree, "2>&-", "get", "tree/none.bin", "-")
    assert (result.returncode, result.stdout) == (1, "")
    result = run_with_closed(tree, "2>&-", "get", "tree/f07.txt", "-")
    assert (result.returncode, result.stdout) == (0, "7")


def test_get_to_a_closed_stdout_says_so(tree: Server) -> None:
    result = run_with_closed(tree, ">&-", "get", "tree/blob.bin", "-")
    assert result.returncode == 1
    assert "msd get: standard output is closed" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "AttributeError" not in result.stderr


def test_put_from_a_closed_stdin_says_so_and_stores_nothing(server: Server) -> None:
    result = run_with_closed(server, "<&-", "put", "-", "closed/stdin.bin")
    assert result.returncode == 1
    assert "msd put: standard input is closed" in result.stderr, result.stderr
    assert "AttributeError" not in result.stderr
    missing = server.run("stat", "closed/stdin.bin")
    assert missing.returncode == 1 and "no object at" in missing.stderr


def test_a_closed_stdout_does_not_fail_a_command_whose_output_is_a_report(
    tree: Server, tmp_path: Path
) -> None:
    """``sync``'s output only reports: the sync is done, the report dropped."""
    (tmp_path / "a.txt").write_text("a")
    result = run_with_closed(tree, ">&-", "sync", str(tmp_path), "ms:closed-out")
    assert (result.returncode, result.stderr) == (0, "")
    assert tree.run("stat", "closed-out/a.txt").returncode == 0
