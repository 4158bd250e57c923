"""A large download's part state (``.NAME.msdpart.json``) is one of the tool's temporary
names, in a folder others may write to: what is found there is read without waiting or
following, and never keeps the download (or its descriptor, which holds the download's
lock) stuck."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from open_files import open_files_under

from msd_async.transfer import download_tree

pytestmark = pytest.mark.anyio

#: Two ranged parts (PART_SIZE is 8 MiB).
_SIZE = 9 * 1024 * 1024




@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
async def test_a_fifo_at_the_part_state_does_not_hang_the_download(
    mediastore_client: Any, tmp_path: Path
) -> None:
    """The part state was read with a plain open: a FIFO planted (or left) at
    ``.NAME.msdpart.json`` made it wait for a writer that never came, in a worker thread
    no cancellation ends, so the run hung (Ctrl-C included). It is now opened without
    waiting and, not a regular file, is no part state: the download starts afresh."""
    data = os.urandom(_SIZE)
    await mediastore_client.put_object("ff/big.bin", data)
    dst = tmp_path / "dst"
    dst.mkdir()
    fifo = dst / ".big.bin.msdpart.json"
    os.mkfifo(fifo)
    # Once the download has had ample time, a writer comes and goes, ending a wait for
    # one (the test then fails on the time taken rather than hanging).
    patience = 20.0
    done = threading.Event()

    def unblock() -> None:
        if not done.wait(patience):
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    helper = threading.Thread(target=unblock)
    helper.start()
    started = time.monotonic()
    try:
        report = await download_tree(mediastore_client, "ff", dst)
    finally:
        done.set()
        helper.join()
    took = time.monotonic() - started
    assert took < patience, f"{took:.1f} s: the download waited on the FIFO"
    assert report.transferred == ["big.bin"], report.failed
    assert (dst / "big.bin").read_bytes() == data
    assert sorted(p.name for p in dst.iterdir()) == ["big.bin"]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts /proc/self/fd")
async def test_a_failed_start_lets_go_of_the_claimed_file(
    mediastore_client: Any, tmp_path: Path
) -> None:
    """When a large download cannot start its file (here a folder sits at its part
    state's name, which can be neither read, removed nor replaced), the file claimed for it
    is removed and its descriptor closed. The removal raised first, and the descriptor,
    which holds the download's lock, stayed open for the process's life."""
    await mediastore_client.put_object("fs/big.bin", os.urandom(_SIZE))
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / ".big.bin.msdpart.json").mkdir()
    report = await download_tree(mediastore_client, "fs", dst)
    (failure,) = report.failed
    assert isinstance(failure.error, IsADirectoryError), failure.error
    assert open_files_under(dst) == []
    assert not (dst / "big.bin").exists()
    assert not (dst / ".big.bin.msdpart").exists()


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="gives a file to another user"
)
async def test_a_part_state_of_another_user_is_not_trusted(
    mediastore_client: Any, tmp_path: Path
) -> None:
    """The part state says which parts are on disk; those are not fetched again. One
    written by another user (the ETag and size are public) named every part of an
    interrupted download done, and its missing parts (zeros) were stored as the object.
    Only this user's own state is resumed from."""
    data = os.urandom(_SIZE)
    await mediastore_client.put_object("st/big.bin", data)
    info = await mediastore_client.describe_object("st/big.bin")
    dst = tmp_path / "dst"
    dst.mkdir()
    # This user's interrupted download: full length, nothing fetched yet.
    (dst / ".big.bin.msdpart").write_bytes(bytes(_SIZE))
    state = dst / ".big.bin.msdpart.json"
    state.write_text(json.dumps({"etag": info.etag, "size": _SIZE, "parts": [0, 1]}))
    os.chown(state, 65534, 65534)
    report = await download_tree(mediastore_client, "st", dst)
    assert report.transferred == ["big.bin"], report.failed
    assert (dst / "big.bin").read_bytes() == data
