"""The local side's odd entries against the real local server: symbolic links to folders,
dangling links and link loops; what a scan cannot see is never deleted on the other side."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from msd_async.transfer import TransferOptions, sync, upload_tree, walk

pytestmark = pytest.mark.anyio


async def names_under(client: Any, prefix: str) -> list[str]:
    return sorted([o.relative_path async for o in walk(client, prefix)])


async def test_a_dangling_folder_link_is_reported_and_nothing_under_it_deleted(
    mediastore_client: Any, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    (site / "media").mkdir(parents=True)
    (site / "index.html").write_bytes(b"<p>")
    (site / "media" / "a.ts").write_bytes(b"a" * 100)
    (site / "old.txt").write_bytes(b"old")
    (site / "logo.png").write_bytes(b"png")
    first = await sync(mediastore_client, site, "ms:nas", delete=True)
    assert first.ok, first.failed
    # The media folder becomes a link to a disk that is not mounted now, and old.txt goes.
    (site / "media" / "a.ts").unlink()
    (site / "media").rmdir()
    os.symlink(tmp_path / "unmounted" / "media", site / "media")
    (site / "logo.png").unlink()
    os.symlink(tmp_path / "unmounted" / "logo.png", site / "logo.png")
    (site / "old.txt").unlink()
    report = await sync(mediastore_client, site, "ms:nas", delete=True)
    assert [f.path for f in report.failed] == ["logo.png", "media"]
    for failure in report.failed:
        assert isinstance(failure.error, FileNotFoundError)
        assert "unmounted" in str(failure.error), failure.error
    # What the scan could not see is not "missing from the source": only old.txt goes.
    assert report.deleted == ["old.txt"]
    assert await names_under(mediastore_client, "nas") == [
        "index.html", "logo.png", "media/a.ts"
    ]


async def test_a_link_to_a_folder_is_followed(mediastore_client: Any, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "logo.png").write_bytes(b"png")
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_bytes(b"<p>")
    os.symlink(shared, site / "assets")
    report = await upload_tree(mediastore_client, site, "lnk")
    assert report.ok, report.failed
    assert sorted(report.transferred) == ["assets/logo.png", "index.html"]
    assert await names_under(mediastore_client, "lnk") == ["assets/logo.png", "index.html"]


async def test_a_link_loop_is_reported_once_and_the_rest_uploaded(
    mediastore_client: Any, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    (site / "x").mkdir(parents=True)
    (site / "x" / "a.txt").write_bytes(b"a")
    os.symlink("..", site / "x" / "up")  # back to the root: would recurse forever
    os.symlink("self", site / "self")  # a link to itself
    report = await upload_tree(mediastore_client, site, "loop")
    assert sorted(f.path for f in report.failed) == ["self", "x/up"]
    assert all(isinstance(f.error, OSError) for f in report.failed)
    assert report.transferred == ["x/a.txt"]


async def test_an_excluded_dangling_link_is_not_reported(
    mediastore_client: Any, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "a.txt").write_bytes(b"a")
    os.symlink(tmp_path / "nowhere", site / "cache")
    options = TransferOptions(filters=[("exclude", "cache/")])
    report = await upload_tree(mediastore_client, site, "exl", options)
    assert report.ok, report.failed
    assert report.transferred == ["a.txt"]


async def test_fail_fast_lets_the_files_in_flight_finish(
    mediastore_server: Any, mediastore_client: Any, tmp_path: Path
) -> None:
    from msd_async import RetryPolicy

    site = tmp_path / "site"
    site.mkdir()
    for name in ("bad.bin", "slow.bin", "z1.bin", "z2.bin"):
        (site / name).write_bytes(name.encode())
    # slow.bin is in flight, its answer long in coming, when bad.bin fails for good.
    mediastore_server.faults.inject("delay", method="PUT", path="ff/slow.bin", delay=3)
    mediastore_server.faults.inject("500", method="PUT", path="ff/bad.bin", times=None)
    options = TransferOptions(
        fail_fast=True, concurrency=2, retry=RetryPolicy.none(), file_attempts=1
    )
    report = await sync(mediastore_client, site, "ms:ff", options)
    assert [f.path for f in report.failed] == ["bad.bin"]
    # As the option promises: no new file started, the one in flight finished and recorded.
    assert report.transferred == ["slow.bin"]
    assert await names_under(mediastore_client, "ff") == ["slow.bin"]
    again = await sync(mediastore_client, site, "ms:ff", TransferOptions(retry=RetryPolicy.none()))
    assert again.skipped == ["slow.bin"]


async def test_a_file_replaced_by_a_fifo_after_the_scan_fails_without_blocking(
    mediastore_client: Any, tmp_path: Path
) -> None:
    from contextlib import ExitStack

    from fifo_writer import feeding

    from msd_async.transfer import TransferEvent

    site = tmp_path / "site"
    site.mkdir()
    for name in ("a.txt", "b.txt"):
        (site / name).write_bytes(name.encode())
    with ExitStack() as stack:

        def swap_after_scan(event: TransferEvent) -> None:
            # A FIFO opened for reading waits for a writer: on the event loop, that stopped
            # everything (Ctrl-C included). This writer only shows what was read.
            if event.kind == "plan":
                (site / "a.txt").unlink()
                stack.enter_context(feeding(site / "a.txt", b"from the pipe"))

        report = await upload_tree(mediastore_client, site, "fifo", progress=swap_after_scan)
    assert [f.path for f in report.failed] == ["a.txt"]
    assert "not a regular file" in str(report.failed[0].error)
    assert report.transferred == ["b.txt"]
    assert await names_under(mediastore_client, "fifo") == ["b.txt"]


@pytest.mark.parametrize("direction", ["upload", "download"])
async def test_a_hook_raising_an_os_error_once_is_the_callers_not_a_files_failure(
    mediastore_client: Any, tmp_path: Path, direction: str
) -> None:
    """An OSError (a progress display whose terminal went away) was taken for the file's
    own failure: the file was reported failed, or tried again, and the run went on."""
    from msd_async.transfer import TransferEvent, download_tree

    site = tmp_path / "site"
    site.mkdir()
    for name in ("a.txt", "b.txt"):
        (site / name).write_bytes(name.encode())
    if direction == "download":
        assert (await upload_tree(mediastore_client, site, "hk")).ok
    raised: list[str] = []

    def hook(event: TransferEvent) -> None:
        if event.kind == "start" and not raised:
            raised.append(event.path)
            raise BrokenPipeError("the progress display went away")

    with pytest.raises(BrokenPipeError, match="display went away"):
        if direction == "upload":
            await upload_tree(mediastore_client, site, "hk", progress=hook)
        else:
            await download_tree(mediastore_client, "hk", tmp_path / "copy", progress=hook)
    assert len(raised) == 1


def test_a_download_never_touches_another_writers_temporary_file(tmp_path: Path) -> None:
    """Two syncs writing one tree at once: each wrote its small downloads through the one
    name .NAME.msdpart, removing the other's file there first, and the first to finish
    could rename the other's half-written file into place. A download's temporary name is
    its own, and a crashed run's is still found as the leftover of NAME."""
    from msd_async.transfer import _local
    from msd_async.transfer.names import temporary_owners

    final = tmp_path / "a.ts"
    theirs = tmp_path / ".a.ts.msdpart"  # another run's, still being written
    theirs.write_bytes(b"half of it")
    fd = os.open(theirs, os.O_WRONLY | os.O_APPEND)
    try:
        _local.write_atomically(final, b"the whole object")
        os.write(fd, b", then the rest")
    finally:
        os.close(fd)
    assert final.read_bytes() == b"the whole object"
    assert theirs.read_bytes() == b"half of it, then the rest"
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [".a.ts.msdpart", "a.ts"]  # nothing of this write left behind
    assert temporary_owners(".a.ts.1f2e3d4c.msdpart") == (("a.ts.1f2e3d4c", "a.ts"), False)
    assert temporary_owners(".a.ts.msdpart.json.tmp") == (("a.ts",), False)
    assert temporary_owners("notes.msdpart") == ((), False)
