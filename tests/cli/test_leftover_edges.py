"""Three edges of ``msd`` left over from the last round, each through the real entry point
as a subprocess against ``msd serve``: the text request log and a presigned URL's secrets,
``msd put`` of a pipe, FIFO or device, and ``msd rm`` of a missing object."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from fifo_writer import feeding
from serve_process import MSD, one_line_error
from serve_process import ServeProcess as Server

#: More than a pipe holds (64 KiB), so the writer is still writing while msd reads.
DATA = random.Random(7).randbytes(300_000)


# --- the text request log of `msd serve` -----------------------------------------------------


def test_text_request_log_shows_a_presigned_get_without_its_secrets(
    serve: Callable[..., Server], tmp_path: Path
) -> None:
    log = tmp_path / "serve.log"
    token = "TOKENxyz" + "7" * 40  # URL-safe: the same in the URL as in the log
    server = serve(
        "--access-key-id", "AKIDLEFTOVEREDGES", "--secret-access-key", "s3cr3t" * 6,
        "--session-token", token, log=log,
    )
    (tmp_path / "a.ts").write_bytes(b"segment")
    assert server.run("put", str(tmp_path / "a.ts"), "v/a.ts").returncode == 0
    presign = server.run("presign", "v/a.ts")
    assert presign.returncode == 0, presign.stderr
    url = presign.stdout.strip()
    query = parse_qs(urlsplit(url).query)
    secrets = [
        query["X-Amz-Signature"][0],
        query["X-Amz-Security-Token"][0],
        "AKIDLEFTOVEREDGES",  # the key id of X-Amz-Credential
    ]
    assert token in secrets
    with urllib.request.urlopen(url, timeout=60) as response:
        assert response.read() == b"segment"
    # Other spellings of the names are secrets too (the server decodes names; refused: 403).
    forged = "X%2DAmz%2DSignature=00dead00beef&x-amz-security-token=TOKENforged"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{server.endpoint}/v/a.ts?{forged}", timeout=60)
    refused.value.close()
    assert refused.value.code == 403
    assert server.stop() == 0

    text = log.read_text()
    get = [line for line in text.splitlines() if " GET /v/a.ts" in line]
    assert [" 200 " in line for line in get] == [True, False], text
    assert " 403 " in get[1]
    # What is not a secret stays, so the line still tells a presigned GET from a plain one.
    assert "X-Amz-Expires=3600" in get[0] and "X-Amz-Signature=REDACTED" in get[0]
    for secret in [*secrets, "00dead00beef", "TOKENforged"]:
        assert secret not in text


# --- msd put of a pipe, a FIFO, a device -----------------------------------------------------


@pytest.mark.parametrize("streaming", [False, True], ids=["standard", "streaming"])
def test_put_of_a_fifo_uploads_what_was_written_into_it(
    server: Server, tmp_path: Path, streaming: bool
) -> None:
    fifo = tmp_path / "fifo"
    flags = ["--streaming"] if streaming else []
    with feeding(fifo, DATA):
        put = server.run("put", str(fifo), "pipes/fifo.bin", *flags)
    assert put.returncode == 0, put.stderr
    assert f"{len(DATA)} bytes" in put.stdout
    got = subprocess.run(
        [MSD, "get", "pipes/fifo.bin", "-"], env=server.env, capture_output=True,
        timeout=120, check=False,
    )
    assert (got.returncode, got.stdout == DATA) == (0, True), got.stderr


def test_put_of_a_dev_fd_pipe_as_bash_process_substitution_gives_it(
    server: Server,
) -> None:
    # `msd put <(producer) name`: bash passes the read end of a pipe as /dev/fd/N.
    read_end, write_end = os.pipe()
    try:
        with subprocess.Popen(
            [MSD, "put", f"/dev/fd/{read_end}", "pipes/substituted.bin"], env=server.env,
            pass_fds=(read_end,), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        ) as put:
            os.close(read_end)
            read_end = -1
            with os.fdopen(write_end, "wb") as out:
                write_end = -1
                with contextlib.suppress(BrokenPipeError):  # msd failed: its stderr says why
                    out.write(DATA)
            out_text, err_text = put.communicate(timeout=120)
    finally:
        for fd in (read_end, write_end):
            if fd != -1:
                os.close(fd)
    assert put.returncode == 0, err_text
    assert f"{len(DATA)} bytes".encode() in out_text
    got = subprocess.run(
        [MSD, "get", "pipes/substituted.bin", "-"], env=server.env, capture_output=True,
        timeout=120, check=False,
    )
    assert got.stdout == DATA


def test_put_of_a_dev_fd_pipe_into_a_folder_asks_for_the_object_name(server: Server) -> None:
    # `msd put <(producer) live/` would otherwise store the object as live/63.
    read_end, write_end = os.pipe()
    os.write(write_end, b"segment")
    os.close(write_end)
    try:
        put = subprocess.run(
            [MSD, "put", f"/dev/fd/{read_end}", "pipes/"], env=server.env,
            pass_fds=(read_end,), capture_output=True, text=True, timeout=120, check=False,
        )
    finally:
        os.close(read_end)
    line = one_line_error(put, "put")
    assert f"/dev/fd/{read_end} is a pipe with no name of its own" in line
    assert "full path" in line
    listing = server.run("ls", "pipes/")
    assert listing.stdout.strip() == "", listing.stdout


def test_put_of_an_endless_device_is_refused_at_the_limit_and_stores_nothing(
    server: Server,
) -> None:
    line = one_line_error(server.run("put", "/dev/zero", "pipes/zero.bin"), "put")
    assert "/dev/zero" in line and "25,000,000" in line
    assert "no object at" in one_line_error(server.run("stat", "pipes/zero.bin"), "stat")


# --- Ctrl-C while msd put waits on a silent pipe --------------------------------------------


def _waiting_on_a_pipe(pid: int) -> bool:
    """Whether a thread of ``pid`` sleeps in the kernel on a pipe: opening a FIFO without a
    writer (``wait_for_partner``) or reading an empty one (``pipe_read``)."""
    for wchan in Path(f"/proc/{pid}/task").glob("*/wchan"):
        with contextlib.suppress(OSError):
            text = wchan.read_text()
            if "pipe" in text or "partner" in text:
                return True
    return False


def _interrupted_on_a_silent_pipe(server: Server, args: list[str], *, side: str) -> str:
    """Run ``msd ARGS`` with its stdin (``side="stdin"``) or stdout (``"stdout"``) the end
    of a pipe nobody writes to or reads; once msd sleeps on a pipe, Ctrl-C. Returns its
    stderr; fails if it does not end with the interrupted status."""
    read_end, write_end = os.pipe()
    ours, theirs = (write_end, read_end) if side == "stdin" else (read_end, write_end)
    try:
        with subprocess.Popen(
            [MSD, *args], env=server.env, stderr=subprocess.PIPE, text=True,
            stdin=theirs if side == "stdin" else subprocess.DEVNULL,
            stdout=theirs if side == "stdout" else subprocess.DEVNULL,
        ) as process:
            os.close(theirs)
            theirs = -1
            deadline = time.monotonic() + 60
            while not _waiting_on_a_pipe(process.pid) and time.monotonic() < deadline:
                assert process.poll() is None, process.communicate()
                time.sleep(0.05)
            time.sleep(0.2)  # past the check, into the wait
            process.send_signal(signal.SIGINT)
            try:
                _, err = process.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
                pytest.fail(f"msd {args[0]} did not end on Ctrl-C while it waited on a pipe")
    finally:
        for fd in (ours, theirs):
            if fd != -1:
                os.close(fd)
    assert (process.returncode, err.strip()) == (130, f"msd {args[0]}: interrupted")
    return err


@pytest.mark.parametrize(
    "source", ["fifo-without-writer", "silent-stdin", "silent-stdin-streaming"]
)
def test_ctrl_c_ends_a_put_waiting_on_a_silent_pipe(
    server: Server, tmp_path: Path, source: str
) -> None:
    """The read ran in a worker thread the interpreter waited for at exit: Ctrl-C printed
    nothing and msd went on waiting for a writer that would never come."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    args = {
        "fifo-without-writer": [str(fifo)],
        "silent-stdin": ["-"],
        "silent-stdin-streaming": ["--streaming", "-"],
    }[source]
    _interrupted_on_a_silent_pipe(server, ["put", *args, "pipes/silent.bin"], side="stdin")
    assert "no object at" in one_line_error(server.run("stat", "pipes/silent.bin"), "stat")


def test_ctrl_c_ends_a_get_writing_to_a_reader_that_takes_nothing(
    server: Server, tmp_path: Path
) -> None:
    """`msd get big - | slow`: once the pipe is full, every write waits for the reader.
    It waited in a worker thread the interpreter waited for at exit, so Ctrl-C hung too."""
    big = tmp_path / "big.bin"
    big.write_bytes(random.Random(3).randbytes(2_000_000))  # far more than a pipe holds
    assert server.run("put", str(big), "pipes/big.bin").returncode == 0
    _interrupted_on_a_silent_pipe(server, ["get", "pipes/big.bin", "-"], side="stdout")


# --- msd rm of a missing object --------------------------------------------------------------


def test_rm_of_a_missing_object_says_nothing_was_deleted(server: Server) -> None:
    result = server.run("rm", "gone/none.ts")
    line = one_line_error(result, "rm")
    assert line == "msd rm: no object at 'gone/none.ts' in the container; nothing was deleted"
