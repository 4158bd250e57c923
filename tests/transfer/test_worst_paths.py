"""The library API's worst paths against the real local server: a progress hook that
raises or is not a plain function, the session closed or the call cancelled mid-transfer,
a local file that changes while it is uploaded, a disk that refuses a download, names the
API forbids, and what many files cost in descriptors."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from msd_async import (
    InvalidParameterError,
    Limits,
    RetryPolicy,
    Session,
    SessionClosedError,
    Timeouts,
)
from msd_async.transfer import (
    SyncRecord,
    TransferEvent,
    TransferOptions,
    default_record_dir,
    download_tree,
    sync,
    upload_tree,
    walk,
)

pytestmark = pytest.mark.anyio

FAST = RetryPolicy(max_attempts=3, backoff_initial=0.001, backoff_max=0.01)


async def names_under(client: Any, prefix: str) -> list[str]:
    return sorted([o.relative_path async for o in walk(client, prefix)])


def make_files(root: Path, count: int, size: int = 100) -> dict[str, bytes]:
    root.mkdir(parents=True, exist_ok=True)
    files = {}
    for i in range(count):
        data = (f"{i:05d}".encode() * (size // 5 + 1))[:size]
        (root / f"f{i:05d}.bin").write_bytes(data)
        files[f"f{i:05d}.bin"] = data
    return files


def recorded(root: Path, endpoint: str, prefix: str) -> dict[str, str]:
    """What the sync record says, path -> SHA-256, as a new run would load it."""
    record = SyncRecord(root, endpoint, prefix, (0, 1), default_record_dir())
    record.load()
    return {rel: e.sha256 for rel in _paths(record) if (e := record.get(rel)) is not None}


def _paths(record: SyncRecord) -> list[str]:
    return list(record._entries)


def other_tasks() -> set[asyncio.Task[Any]]:
    """The client's tasks still running (the in-process server's request handlers end on
    their own time: a cancelled request's handler may still be sleeping on its fault)."""
    me = asyncio.current_task()
    return {
        t for t in asyncio.all_tasks()
        if t is not me and not t.done()
        and not getattr(t.get_coro(), "__qualname__", "").startswith("RequestHandler.")
    }


# --- the progress hook ---------------------------------------------------------------------


async def test_a_hook_raising_mid_body_ends_the_call_and_cancels_the_others(
    mediastore_server: Any, mediastore_client: Any, tmp_path: Path
) -> None:
    """The hook's ``bytes`` event is called from inside the request body's writer: its
    error must still reach the caller as is (not a transport error retried), and a file
    whose answer is slow in coming must be cancelled, not waited for."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    (site / "slow.txt").write_bytes(b"slow")
    delay = 30.0
    mediastore_server.faults.inject("delay", method="PUT", path="hm/slow.txt", delay=delay)
    calls: list[str] = []

    def hook(event: TransferEvent) -> None:
        if event.kind == "bytes":
            calls.append(event.path)
            raise LookupError("the display broke")

    before = set(asyncio.all_tasks())
    started = time.monotonic()
    with pytest.raises(LookupError, match="display broke"):
        await upload_tree(
            mediastore_client, site, "hm", TransferOptions(concurrency=2), progress=hook
        )
    assert time.monotonic() - started < delay / 3  # slow.txt was not waited for
    assert calls == ["big.bin"]  # not retried: the hook's error is not the file's
    await anyio.lowlevel.checkpoint()
    assert not (other_tasks() - before)
    # Both requests are over, their connections back in the pool (or closed).
    for _ in range(100):
        if mediastore_client.session.pool.in_use == 0:
            break
        await anyio.sleep(0.01)
    assert mediastore_client.session.pool.in_use == 0
    assert await names_under(mediastore_client, "hm") == []


class _Stop(BaseException):
    """What a hook may raise that is not an ``Exception`` (as ``KeyboardInterrupt`` is)."""


@pytest.mark.parametrize("direction", ["upload", "download"])
@pytest.mark.parametrize("kind", ["plan", "start", "bytes", "done"])
async def test_a_hook_raising_a_base_exception_ends_the_call_with_it(
    mediastore_client: Any, tmp_path: Path, kind: str, direction: str
) -> None:
    """docs/transfer.md: whatever its type, the hook's exception is raised as is. One that
    is not an Exception came out wrapped in a BaseExceptionGroup; raised from a ``bytes``
    event (inside the request body), it was taken for a lost connection, each file sent
    again and again, and the call returned a report of ConnectionLostError failures."""
    from msd_async.transfer import PART_SIZE

    site = tmp_path / "site"
    make_files(site, 3, size=300 * 1024)  # over 256 KiB: bytes events, uploading
    (site / "big.bin").write_bytes(b"b" * (PART_SIZE + 10))  # and in ranged parts
    if direction == "download":
        assert (await upload_tree(mediastore_client, site, f"be{kind}")).ok
    calls: list[str] = []

    def hook(event: TransferEvent) -> None:
        if event.kind == kind:
            calls.append(event.path)
            raise _Stop(kind)

    with pytest.raises(_Stop, match=kind):
        if direction == "upload":
            await upload_tree(mediastore_client, site, f"be{kind}", progress=hook)
        else:
            await download_tree(mediastore_client, f"be{kind}", tmp_path / "dst",
                                progress=hook)
    assert len(calls) <= 4  # the files in flight at most: nothing was tried again


@pytest.mark.parametrize("wrapped", [False, True])
async def test_an_async_hook_is_refused_before_anything_is_sent(
    mediastore_client: Any, tmp_path: Path, wrapped: bool
) -> None:
    """An ``async def`` hook was called, its coroutine dropped unawaited: the progress the
    caller asked for never happened, silently (only a RuntimeWarning at collection)."""
    make_files(tmp_path / "site", 3)
    seen: list[TransferEvent] = []

    async def hook(event: TransferEvent) -> None:
        seen.append(event)

    # A lambda around it is no coroutine function: found at its first event, the plan.
    progress = (lambda event: hook(event)) if wrapped else hook
    with pytest.raises(InvalidParameterError, match=r"progress.*(async|coroutine)"):
        await upload_tree(mediastore_client, tmp_path / "site", "ah", progress=progress)
    assert await names_under(mediastore_client, "ah") == []
    assert not seen


@pytest.mark.parametrize("other", ["session closed", "a bug"])
async def test_a_hook_raising_with_another_error_at_the_same_instant_wins(
    mediastore_client: Any, other: str
) -> None:
    """docs/transfer.md: the hook's exception ends the call and is raised as is. Two
    workers woken in the same turn of the loop, one failing with an error that ends the
    call and the other calling the hook, which raises: the task group holds both, and the
    first in it was raised, so the hook's error (a bug in the caller's code) was lost.
    The two jobs wait on one event so that they wake together; the pool is the real one."""
    from msd_async.transfer.events import HookError, TransferReport
    from msd_async.transfer.pool import Job, Pool

    go = anyio.Event()

    async def ends_the_call() -> None:
        await go.wait()
        if other == "session closed":
            raise SessionClosedError("the session was closed")
        raise RuntimeError("a bug")

    async def reports() -> None:
        await go.wait()
        pool.start("b.txt", "upload", 1)

    def hook(event: TransferEvent) -> None:
        if event.kind == "start":
            raise LookupError("the display broke")

    pool = Pool(mediastore_client, TransferReport("upload"), TransferOptions(),
                progress=hook, record=None, stop=None)
    jobs = [Job("a.txt", "upload", 1, ends_the_call), Job("b.txt", "upload", 1, reports)]
    async with anyio.create_task_group() as tg:
        tg.start_soon(_set_soon, go)
        with anyio.fail_after(10), pytest.raises(HookError) as caught:
            await pool.run(jobs)
    assert isinstance(caught.value.error, LookupError)


async def _set_soon(event: anyio.Event) -> None:
    for _ in range(3):
        await anyio.lowlevel.checkpoint()
    event.set()


async def test_a_hook_raising_mid_sync_leaves_a_record_of_what_completed(
    mediastore_server: Any, mediastore_client: Any, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    files = make_files(site, 40)

    def hook(event: TransferEvent) -> None:
        if event.kind == "done" and event.path == "f00020.bin":
            raise LookupError("enough")

    with pytest.raises(LookupError):
        await sync(mediastore_client, site, "ms:hr", TransferOptions(concurrency=4),
                   progress=hook)
    stored = await names_under(mediastore_client, "hr")
    facts = recorded(site, mediastore_client.endpoint, "hr")
    # Every fact recorded is true of the object now there; nothing recorded is missing.
    assert set(facts) <= set(stored)
    for rel, sha in facts.items():
        assert hashlib.sha256(files[rel]).hexdigest() == sha
    again = await sync(mediastore_client, site, "ms:hr")
    assert again.ok and sorted(again.skipped) == sorted(facts)


async def test_a_hook_that_blocks_the_loop_past_the_timeouts_fails_nothing(
    mediastore_server: Any, tmp_path: Path
) -> None:
    """A hook must not block (it runs in the loop's thread); one that does anyway, for
    longer than the read and write timeouts, costs time and retried requests, never a
    file (the watchdog finds every request silent when the loop wakes up)."""
    site = tmp_path / "site"
    files = make_files(site, 24, size=300 * 1024)
    timeout = 0.4
    blocked: list[str] = []

    def hook(event: TransferEvent) -> None:
        if event.kind in ("start", "bytes") and len(blocked) < 2:
            blocked.append(event.path)
            time.sleep(3 * timeout)

    async with Session(
        credentials=mediastore_server.credentials, region=mediastore_server.region,
        timeouts=Timeouts(read=timeout, write=timeout),
    ) as session:
        client = session.container(mediastore_server.endpoint)
        options = TransferOptions(concurrency=8)
        up = await sync(client, site, "ms:bl", options, progress=hook)
        assert len(blocked) == 2
        assert up.ok and len(up.transferred) == len(files), up.failed
        blocked.clear()
        down = await sync(client, "ms:bl", tmp_path / "dst", options, progress=hook)
        assert len(blocked) == 2
        assert down.ok and len(down.transferred) == len(files), down.failed


# --- cancellation and a session closed mid-transfer ------------------------------------------


async def test_a_session_closed_mid_transfer_ends_the_call_with_its_error(
    mediastore_server: Any, tmp_path: Path
) -> None:
    """Each queued file failed on its own with SessionClosedError, one after the other,
    and the call returned a report of hundreds of failures as if files were bad."""
    site = tmp_path / "site"
    make_files(site, 200)
    async with Session(
        credentials=mediastore_server.credentials, region=mediastore_server.region
    ) as session:
        client = session.container(mediastore_server.endpoint)
        failures: list[str] = []
        before = set(asyncio.all_tasks())

        def hook(event: TransferEvent) -> None:
            if event.kind == "fail":
                failures.append(event.path)
            if event.kind == "done" and event.path == "f00010.bin":
                asyncio.get_running_loop().create_task(session.aclose())

        with pytest.raises(SessionClosedError):
            await sync(client, site, "ms:sc", TransferOptions(concurrency=4), progress=hook)
        assert len(failures) < 8  # at most the files in flight when it closed
        await anyio.lowlevel.checkpoint()
        assert not (other_tasks() - before)
    async with Session(
        credentials=mediastore_server.credentials, region=mediastore_server.region
    ) as session:
        client = session.container(mediastore_server.endpoint)
        stored = await names_under(client, "sc")
        facts = recorded(site, client.endpoint, "sc")
        assert set(facts) <= set(stored)
        assert "f00199.bin" not in stored  # what was queued never started


async def test_a_session_closed_mid_download_leaves_whole_files_or_resumable_parts(
    mediastore_server: Any, mediastore_client: Any, tmp_path: Path
) -> None:
    from msd_async.transfer import PART_SIZE

    src = tmp_path / "src"
    files = make_files(src, 40, size=1000)
    big = os.urandom(2 * PART_SIZE + 10)
    (src / "big.bin").write_bytes(big)
    assert (await upload_tree(mediastore_client, src, "scd")).ok
    # The ranged parts are slow in coming: in flight when the session closes.
    mediastore_server.faults.inject("delay", method="GET", path="scd/big.bin", delay=30,
                                    times=None)
    dst = tmp_path / "dst"
    started = time.monotonic()
    async with Session(
        credentials=mediastore_server.credentials, region=mediastore_server.region
    ) as session:
        client = session.container(mediastore_server.endpoint)
        before = set(asyncio.all_tasks())

        def hook(event: TransferEvent) -> None:
            if event.kind == "done" and event.path == "f00010.bin":
                asyncio.get_running_loop().create_task(session.aclose())

        with pytest.raises(SessionClosedError):
            await download_tree(client, "scd", dst, TransferOptions(concurrency=4),
                                progress=hook)
        await anyio.lowlevel.checkpoint()
        assert not (other_tasks() - before)
    assert time.monotonic() - started < 15  # the slow parts were not waited for
    mediastore_server.faults.clear()
    present = sorted(os.listdir(dst))
    assert "big.bin" not in present and "f00039.bin" not in present
    for name in present:
        if name.startswith("."):  # only the ranged download's own, to resume
            assert name.startswith(".big.bin.msdpart"), name
        else:
            assert (dst / name).read_bytes() == files[name]


async def test_a_cancelled_download_leaves_only_whole_files_and_their_record(
    mediastore_client: Any, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    files = make_files(src, 60, size=300 * 1024)  # above SMALL_FILE: written in threads
    assert (await upload_tree(mediastore_client, src, "cx")).ok
    dst = tmp_path / "dst"
    done: list[str] = []
    before = set(asyncio.all_tasks())
    with anyio.CancelScope() as scope:

        def hook(event: TransferEvent) -> None:
            if event.kind == "done":
                done.append(event.path)
                if len(done) == 10:
                    scope.cancel()

        await sync(mediastore_client, "ms:cx", dst, TransferOptions(concurrency=6),
                   progress=hook)
    assert scope.cancelled_caught
    await anyio.lowlevel.checkpoint()
    assert not (other_tasks() - before)
    present = sorted(p.name for p in dst.iterdir())
    assert present and len(present) < len(files)
    for name in present:
        assert not name.startswith("."), name  # no temporary file left
        assert (dst / name).read_bytes() == files[name]  # no half file under its name
    facts = recorded(dst, mediastore_client.endpoint, "cx")
    assert set(facts) <= set(present) and set(done) <= set(facts)
    report = await sync(mediastore_client, "ms:cx", dst)
    assert report.ok and sorted(report.skipped) == sorted(facts)
    assert sorted(p.name for p in dst.iterdir()) == sorted(files)


async def test_an_upload_cancelled_mid_body_leaves_the_version_before(
    mediastore_client: Any, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    size = 9 * 1024 * 1024
    (site / "movie.mp4").write_bytes(b"A" * size)
    (site / "a.txt").write_bytes(b"a")
    assert (await sync(mediastore_client, site, "ms:cu")).ok
    facts = recorded(site, mediastore_client.endpoint, "cu")
    (site / "movie.mp4").write_bytes(b"B" * size)
    sent: list[int] = []
    before = set(asyncio.all_tasks())
    with anyio.CancelScope() as scope:

        def hook(event: TransferEvent) -> None:
            if event.kind == "bytes":
                sent.append(event.done)
                scope.cancel()

        await sync(mediastore_client, site, "ms:cu", progress=hook)
    assert scope.cancelled_caught and sent and sent[0] < size
    await anyio.lowlevel.checkpoint()
    assert not (other_tasks() - before)
    assert await mediastore_client.get_bytes("cu/movie.mp4") == b"A" * size
    assert recorded(site, mediastore_client.endpoint, "cu") == facts  # nothing new is true
    report = await sync(mediastore_client, site, "ms:cu")
    assert report.transferred == ["movie.mp4"] and report.skipped == ["a.txt"]
    assert await mediastore_client.get_bytes("cu/movie.mp4") == b"B" * size


# --- a local file that changes while it is uploaded ------------------------------------------


async def test_a_file_rewritten_during_its_upload_never_leaves_a_mix_at_the_origin(
    mediastore_client: Any, tmp_path: Path
) -> None:
    """A file over 8 MiB is hashed, then sent from its path. Rewritten in place (same
    size) while it was sent, the service stored the first bytes of one version and the
    last of the other, complete; the checksum then failed, but the mix stayed."""
    site = tmp_path / "site"
    site.mkdir()
    size = 9 * 1024 * 1024
    old = b"A" * size
    (site / "movie.mp4").write_bytes(old)
    assert (await upload_tree(mediastore_client, site, "mix")).ok
    new = b"B" * size
    rewritten: list[int] = []

    def hook(event: TransferEvent) -> None:
        if event.kind == "bytes" and not rewritten:
            rewritten.append(event.done)
            with open(site / "movie.mp4", "r+b") as f:  # a writer, in place
                f.write(new)

    options = TransferOptions(file_attempts=1, retry=FAST)
    report = await upload_tree(mediastore_client, site, "mix", options, progress=hook)
    assert rewritten and rewritten[0] < size
    stored = await mediastore_client.get_bytes("mix/movie.mp4")
    assert stored in (old, new), "a mix of two versions is stored as the object"
    assert stored == old  # the body was cut: the service kept the version it had
    assert [f.path for f in report.failed] == ["movie.mp4"]
    assert type(report.failed[0].error).__name__ == "ChecksumMismatchError"
    assert "nothing was stored" in str(report.failed[0].error)
    # With the default attempts, the file is sent again and ends whole.
    rewritten.clear()
    (site / "movie.mp4").write_bytes(old)
    report = await upload_tree(
        mediastore_client, site, "mix", TransferOptions(retry=FAST), progress=hook
    )
    assert report.ok, report.failed
    assert await mediastore_client.get_bytes("mix/movie.mp4") == new


@pytest.mark.parametrize("change", ["grow", "shrink"])
async def test_a_file_resized_during_its_upload_is_sent_again(
    mediastore_client: Any, tmp_path: Path, change: str
) -> None:
    """The body is cut (nothing stored) when the file's size changes under it; the docs
    promise the file is then sent again, as for any change during the upload."""
    site = tmp_path / "site"
    site.mkdir()
    size = 9 * 1024 * 1024
    (site / "movie.mp4").write_bytes(b"A" * size)
    changed: list[int] = []

    def hook(event: TransferEvent) -> None:
        if event.kind == "bytes" and not changed:
            changed.append(event.done)
            with open(site / "movie.mp4", "r+b") as f:
                if change == "grow":
                    f.seek(0, os.SEEK_END)
                    f.write(b"C" * 1000)
                else:
                    f.truncate(size - 1000)

    report = await upload_tree(
        mediastore_client, site, "rs", TransferOptions(retry=FAST), progress=hook
    )
    assert changed
    assert report.ok, report.failed
    assert (
        await mediastore_client.get_bytes("rs/movie.mp4")
        == (site / "movie.mp4").read_bytes()
    )


@pytest.mark.parametrize("size", [100 * 1024, 3 * 1024 * 1024])  # on the loop, in a thread
async def test_a_small_file_rewritten_during_its_one_read_is_never_stored_as_a_mix(
    mediastore_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    """A file up to 8 MiB is read once, hashed and sent from memory: the service's SHA-256
    is that of the bytes read, so a writer landing inside the read made a mix of two
    versions that was verified and recorded as the file. The read is wrapped to rewrite
    the file in place (same size) half-way through it, as such a writer would."""
    from msd_async.transfer import _local

    site = tmp_path / "site"
    site.mkdir()
    old, new = b"A" * size, b"B" * size
    path = site / "seg.ts"
    path.write_bytes(old)
    assert (await upload_tree(mediastore_client, site, "smix")).ok
    # Written long ago, as most files are: the rewrite's time is not the one before it.
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    read_all = _local._read_all
    rewritten: list[int] = []

    def read_with_a_writer(f: Any) -> bytes:
        if rewritten:
            return read_all(f)
        first = f.read(size // 2)
        with open(path, "r+b") as w:  # a writer, in place, between two reads
            w.write(new)
        rewritten.append(len(first))
        return first + read_all(f)

    monkeypatch.setattr(_local, "_read_all", read_with_a_writer)
    options = TransferOptions(file_attempts=1, retry=FAST)
    report = await upload_tree(mediastore_client, site, "smix", options)
    assert rewritten == [size // 2]
    stored = await mediastore_client.get_bytes("smix/seg.ts")
    assert stored in (old, new), "a mix of two versions is stored as the object"
    assert stored == old  # nothing was sent
    (failure,) = report.failed
    assert failure.error.rule == "body.changed", failure.message  # type: ignore[attr-defined]
    # With the default attempts, the file is read again and sent whole.
    rewritten.clear()
    path.write_bytes(old)
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    report = await upload_tree(mediastore_client, site, "smix", TransferOptions(retry=FAST))
    assert report.ok, report.failed
    assert rewritten and await mediastore_client.get_bytes("smix/seg.ts") == new


async def test_a_file_deleted_or_replaced_after_the_scan(
    mediastore_client: Any, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    make_files(site, 4)

    def hook(event: TransferEvent) -> None:
        if event.kind == "plan":
            (site / "f00001.bin").unlink()
            (site / "f00002.tmp").write_bytes(b"replacement")
            os.replace(site / "f00002.tmp", site / "f00002.bin")

    report = await upload_tree(mediastore_client, site, "dr", progress=hook)
    # Gone, as an object deleted between its listing and its download: nothing to send.
    assert report.ok, report.failed
    assert report.vanished == ["f00001.bin"]
    assert sorted(report.transferred) == ["f00000.bin", "f00002.bin", "f00003.bin"]
    assert await mediastore_client.get_bytes("dr/f00002.bin") == b"replacement"


def _bytes_read(who: str = "self") -> int:
    """What the process (``self``) or the calling thread (``thread-self``: here, the event
    loop's) has read, in bytes."""
    with open(f"/proc/{who}/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


def _grown_once_planned(path: Path, size: int) -> Callable[[TransferEvent], None]:
    """A progress hook that replaces ``path`` by a ``size``-byte file once the transfer is
    planned (after the scan): sparse, so it costs no disk and reads as zeros."""

    def hook(event: TransferEvent) -> None:
        if event.kind == "plan":
            grown = path.with_name(path.name + ".tmp")
            with open(grown, "wb") as f:
                f.truncate(size)
            os.replace(grown, path)

    return hook


@pytest.mark.skipif(not Path("/proc/self/io").is_file(), reason="counts /proc/self/io")
async def test_a_file_grown_past_the_limit_after_the_scan_is_refused_unread(
    mediastore_client: Any, tmp_path: Path
) -> None:
    """docs/transfer.md: a file over the object limit is refused from its size alone,
    nothing of it read. The size was the scan's: a file replaced by a large one after the
    scan was hashed whole before its refusal, and on the event loop itself when the scan
    had found it small (every other request stalled meanwhile)."""
    site = tmp_path / "site"
    make_files(site, 2)
    huge = 1024 * 1024 * 1024
    before = _bytes_read()
    report = await upload_tree(
        mediastore_client, site, "gl", progress=_grown_once_planned(site / "f00001.bin", huge)
    )
    read = _bytes_read() - before
    assert [f.path for f in report.failed] == ["f00001.bin"]
    assert type(report.failed[0].error).__name__ == "ObjectTooLargeError"
    assert report.transferred == ["f00000.bin"]
    assert read < huge // 16, f"{read:,} bytes read"


# --- a disk that refuses a download ---------------------------------------------------------

_CHILD = r"""
import asyncio, errno, json, os, resource, sys
from pathlib import Path

import msd_async
from msd_async.transfer import TransferOptions, download_tree

endpoint, key, secret, dst, limit = sys.argv[1:6]


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def main() -> None:
    creds = msd_async.Credentials(key, secret)
    before = fds()
    async with msd_async.Session(credentials=creds, region="us-east-1") as session:
        store = session.container(endpoint)
        options = TransferOptions(concurrency=4, retry=msd_async.RetryPolicy.none())
        # Files larger than this cannot be written (EFBIG), as on a full disk (ENOSPC).
        resource.setrlimit(resource.RLIMIT_FSIZE, (int(limit), int(limit)))
        report = await download_tree(store, "disk", dst, options)
    after = fds()  # the session's connections closed
    print(json.dumps({
        "transferred": sorted(report.transferred),
        "failed": sorted(
            [f.path, type(f.error).__name__, getattr(f.error, "errno", None)]
            for f in report.failed
        ),
        "fds": [before, after],
    }))


asyncio.run(main())
"""


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts /proc/self/fd")
async def test_a_download_the_disk_refuses_fails_typed_and_leaves_nothing(
    mediastore_server: Any, mediastore_client: Any, tmp_path: Path
) -> None:
    """RLIMIT_FSIZE in a child process stands for a full disk: every write past the
    limit fails (EFBIG, as ENOSPC would), for a small download and a ranged one alike."""
    import errno
    import json
    import sys

    from msd_async.transfer import PART_SIZE

    await mediastore_client.put_object("disk/ok.txt", b"fits")
    await mediastore_client.put_object("disk/mid.bin", os.urandom(2 * 1024 * 1024))
    await mediastore_client.put_object("disk/big.bin", os.urandom(PART_SIZE + 100))
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "mid.bin").write_bytes(b"old mid")
    (dst / "big.bin").write_bytes(b"old big")
    creds = mediastore_server.credentials
    result = await anyio.run_process(
        [sys.executable, "-c", _CHILD, mediastore_server.endpoint, creds.access_key_id,
         creds.secret_access_key, str(dst), str(1024 * 1024)],
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    out = json.loads(result.stdout)
    assert out["transferred"] == ["ok.txt"]
    assert out["failed"] == [
        ["big.bin", "OSError", errno.EFBIG], ["mid.bin", "OSError", errno.EFBIG]
    ]
    before, after = out["fds"]
    assert after <= before  # no descriptor left open by a failed write
    # The final names are untouched, and no temporary file (of any size) is left.
    assert sorted(p.name for p in dst.iterdir()) == ["big.bin", "mid.bin", "ok.txt"]
    assert (dst / "mid.bin").read_bytes() == b"old mid"
    assert (dst / "big.bin").read_bytes() == b"old big"


@pytest.fixture
def small_disk(tmp_path: Path) -> Any:
    """A 12 MiB tmpfs: a disk that fills up (root only, where mounting is allowed)."""
    import subprocess

    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mount)],
        capture_output=True, check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


async def test_a_ranged_download_onto_a_full_disk_fails_typed_and_frees_its_parts(
    mediastore_client: Any, small_disk: Path
) -> None:
    """The parts of a ranged download that filled the disk stayed in .NAME.msdpart (a
    full-length file) after ENOSPC, holding the space every other file needed."""
    import errno

    from msd_async.transfer import PART_SIZE

    await mediastore_client.put_object("full/big.bin", os.urandom(PART_SIZE + 6 * 1024 * 1024))
    await mediastore_client.put_object("full/ok.txt", b"fits")
    (small_disk / "big.bin").write_bytes(b"old big")
    report = await download_tree(
        mediastore_client, "full", small_disk, TransferOptions(concurrency=1, retry=FAST)
    )
    assert [f.path for f in report.failed] == ["big.bin"]
    error = report.failed[0].error
    assert isinstance(error, OSError) and error.errno == errno.ENOSPC, error
    assert report.transferred == ["ok.txt"]
    assert sorted(os.listdir(small_disk)) == ["big.bin", "ok.txt"]
    assert (small_disk / "big.bin").read_bytes() == b"old big"


# --- names the API forbids ------------------------------------------------------------------


async def test_names_the_api_forbids_are_reported_never_renamed_and_the_rest_sent(
    mediastore_client: Any, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    good = {"ok.txt": b"ok", "a:b=c~d.ts": b"fine"}
    nine = "/".join(f"d{i}" for i in range(9))  # with the folder "nm": 10 folders, allowed
    good[f"{nine}/deep.txt"] = b"deep"
    ten = "/".join(f"d{i}" for i in range(10))  # 11 folders
    long_path = "/".join(["x" * 200] * 4) + "/" + "y" * 120  # 921 characters
    bad = {
        "with space.txt": "path.characters",
        "caf\u00e9.ts": "path.characters",
        f"{ten}/too-deep.txt": "path.max-depth",
        long_path: "path.max-length",
        "\udcffbytes.txt": "path.characters",  # not UTF-8 on disk (b"\xffbytes.txt")
    }
    for rel in [*good, *bad]:
        path = site.joinpath(*rel.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(good.get(rel, b"x"))
    report = await sync(mediastore_client, site, "ms:nm")
    assert sorted(report.transferred) == sorted(good)
    assert {f.path: f.error.rule for f in report.failed} == bad  # type: ignore[attr-defined]
    assert {type(f.error).__name__ for f in report.failed} == {"InvalidPathError"}
    report.to_dict()  # a name that is not UTF-8 still makes a report
    assert await names_under(mediastore_client, "nm") == sorted(good)
    again = await sync(mediastore_client, site, "ms:nm", delete=True)
    assert sorted(again.skipped) == sorted(good) and again.deleted == []


async def test_a_large_object_with_a_name_near_the_local_limit_downloads(
    mediastore_client: Any, tmp_path: Path
) -> None:
    """A name of 250 characters is a valid object name and a valid local file name (255
    bytes at most), but its ranged download's temporary name .NAME.msdpart (and its part
    state .NAME.msdpart.json.tmp) was not: ENAMETOOLONG, while the same name downloaded
    fine as a small object. The temporary names are shortened (with a hash of the name)."""
    from msd_async.transfer import PART_SIZE

    name = "n" * 246 + ".mp4"
    data = os.urandom(PART_SIZE + 10)
    await mediastore_client.put_object(f"ln/{name}", data)
    await mediastore_client.put_object(f"ln/s{name[1:]}", b"small")
    report = await sync(mediastore_client, "ms:ln", tmp_path / "dst", delete=True)
    assert report.ok, report.failed
    assert sorted(report.transferred) == sorted([name, f"s{name[1:]}"])
    assert (tmp_path / "dst" / name).read_bytes() == data
    assert sorted(os.listdir(tmp_path / "dst")) == sorted([name, f"s{name[1:]}"])


# --- many files, a few at a time --------------------------------------------------------------


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts /proc/self/fd")
@pytest.mark.parametrize("direction", ["upload", "download"])
async def test_open_descriptors_stay_bounded_by_the_concurrency(
    mediastore_client: Any, tmp_path: Path, direction: str
) -> None:
    count, concurrency = 300, 4
    src = tmp_path / "src"
    make_files(src, count, size=1000)
    make_files(src / "big", 3, size=300 * 1024)  # written and hashed in worker threads
    if direction == "download":
        assert (await upload_tree(mediastore_client, src, "fd")).ok
    most = [0]

    def hook(event: TransferEvent) -> None:
        if event.kind in ("start", "done"):
            most[0] = max(most[0], len(os.listdir("/proc/self/fd")))

    before = len(os.listdir("/proc/self/fd"))
    options = TransferOptions(concurrency=concurrency)
    if direction == "upload":
        report = await sync(mediastore_client, src, "ms:fd", options, progress=hook)
    else:
        report = await sync(mediastore_client, "ms:fd", tmp_path / "dst", options,
                            progress=hook)
    assert report.ok and len(report.transferred) == count + 3
    # Per file in flight: its file, its connection and the in-process server's end of it;
    # plus the record's journal and some slack. Nothing grows with the number of files.
    assert most[0] - before <= 3 * concurrency + 8, (before, most[0])


#: A read timeout short enough for a test to wait out a stalled download.
_SHORT_READ = 0.5


@contextlib.asynccontextmanager
async def _short_read_client(server: Any) -> AsyncIterator[Any]:
    async with Session(
        credentials=server.credentials, region=server.region,
        timeouts=Timeouts(read=_SHORT_READ),
    ) as session:
        yield session.container(server.endpoint)


@pytest.mark.parametrize("name", ["big.bin", "b" * 246 + ".bin"])
async def test_a_download_that_timed_out_keeps_its_parts_through_a_sync_with_delete(
    mediastore_server: Any, tmp_path: Path, name: str
) -> None:
    """docs/transfer.md: delete removes the partial downloads of failures another try
    cannot fix, and keeps those of a transient failure. A timeout is an OSError too
    (MediaStoreTimeout subclasses TimeoutError), and was taken for a local one: the
    parts of a download that merely timed out were deleted."""
    from msd_async.transfer import PART_SIZE

    timeout = _SHORT_READ
    async with _short_read_client(mediastore_server) as client:
        await client.put_object(f"to/{name}", os.urandom(PART_SIZE + 100))
        await client.put_object("to/ok.txt", b"ok")
        dst = tmp_path / "dst"
        mediastore_server.faults.inject(
            "delay", method="GET", path=f"to/{name}", times=None, delay=4 * timeout
        )
        options = TransferOptions(retry=RetryPolicy.none(), file_attempts=1)
        report = await sync(client, "ms:to", dst, options, delete=True)
        (failure,) = report.failed
        assert failure.path == name
        assert type(failure.error).__name__ == "ReadTimeout"
        (tmp,) = [n for n in os.listdir(dst) if n != "ok.txt"]
        assert tmp.startswith(".b") and tmp.endswith(".msdpart")
        mediastore_server.faults.clear()
        # The object gone from the source: now its parts go too.
        await client.delete_object(f"to/{name}")
        await sync(client, "ms:to", dst, options, delete=True)
        assert os.listdir(dst) == ["ok.txt"]


def _other_shard_than_its_stem(kind: str) -> tuple[str, str]:
    """An object name whose temporary name reads, to the old sweep, as the download of
    another name (``stem``) in the other of two shards: ``(name, stem)``."""
    from msd_async.transfer.shard import shard_of

    for k in range(1000):
        if kind == "hex":  # NAME.XXXXXXXX: a hash-named segment, as many packagers write
            name, stem = f"seg.{k:08x}", "seg"
        else:  # a name too long for .NAME.msdpart.json.tmp: shortened to 200 characters
            name, stem = "b" * 200 + f"{k:040d}.bin", "b" * 200
        if shard_of(name, 2) != shard_of(stem, 2):
            return name, stem
    raise AssertionError("no such name")  # pragma: no cover


@pytest.mark.parametrize("kind", ["hex", "long"])
async def test_a_sync_with_delete_leaves_another_shards_resumable_parts_alone(
    mediastore_server: Any, tmp_path: Path, kind: str
) -> None:
    """Shards share a tree: each sweeps only its own paths' leftovers. The sweep read the
    owner back from the temporary name, and .seg.0000002a.msdpart (the parts of
    seg.0000002a) read as those of seg, as did a shortened long name's as those of its
    first 200 characters: a shard owning that other name deleted parts another shard
    kept to resume (or was writing: that download then failed, FileNotFoundError)."""
    from msd_async.transfer import PART_SIZE
    from msd_async.transfer.shard import shard_of

    name, stem = _other_shard_than_its_stem(kind)
    theirs = (shard_of(name, 2), 2)
    ours = (shard_of(stem, 2), 2)
    timeout = _SHORT_READ
    async with _short_read_client(mediastore_server) as client:
        data = os.urandom(PART_SIZE + 100)
        await client.put_object(f"sh/{name}", data)
        await client.put_object(f"sh/{stem}", b"the stem, an object too")
        dst = tmp_path / "dst"
        mediastore_server.faults.inject(
            "delay", method="GET", path=f"sh/{name}", times=None, delay=4 * timeout
        )
        quick = TransferOptions(retry=RetryPolicy.none(), file_attempts=1)
        report = await sync(client, "ms:sh", dst, replace(quick, shard=theirs), delete=True)
        assert [f.path for f in report.failed] == [name]
        parts = sorted(os.listdir(dst))
        assert parts and all(p.endswith(".msdpart") for p in parts), parts
        mediastore_server.faults.clear()
        report = await sync(client, "ms:sh", dst, replace(quick, shard=ours), delete=True)
        assert report.ok and report.transferred == [stem]
        assert sorted(os.listdir(dst)) == sorted([*parts, stem])  # theirs, to resume
        report = await sync(client, "ms:sh", dst, replace(quick, shard=theirs), delete=True)
        assert report.ok and report.transferred == [name]
        assert sorted(os.listdir(dst)) == sorted([name, stem])
        assert (dst / name).read_bytes() == data


_MEMORY_CHILD = r"""
import asyncio, json, sys, tracemalloc

import msd_async
from msd_async.transfer import TransferOptions, sync

endpoint, key, secret, local, direction = sys.argv[1:6]


async def main() -> None:
    creds = msd_async.Credentials(key, secret)
    async with msd_async.Session(credentials=creds, region="us-east-1") as session:
        store = session.container(endpoint)
        await store.put_object("warm", b"up")  # the session's own buffers, before counting
        tracemalloc.start()
        options = TransferOptions(concurrency=4, record=False)
        if direction == "upload":
            report = await sync(store, local, "ms:mem", options)
        else:
            report = await sync(store, "ms:mem", local, options)
        print(json.dumps({"ok": report.ok, "files": len(report.transferred),
                          "peak": tracemalloc.get_traced_memory()[1] / 2**20}))


asyncio.run(main())
"""


@pytest.mark.parametrize("direction", ["upload", "download"])
async def test_memory_stays_bounded_by_the_concurrency(
    mediastore_server: Any, tmp_path: Path, direction: str
) -> None:
    """100 files of 2 MiB (200 MiB) through 4 workers, in a child process whose peak of
    allocated memory is measured (tracemalloc): a few files in flight, never the tree,
    are in memory."""
    import json
    import sys

    count, size = 100, 2 * 1024 * 1024
    src = tmp_path / "src"
    src.mkdir()
    block = os.urandom(size)
    for i in range(count):
        (src / f"f{i:03d}.bin").write_bytes(block[i:] + block[:i])
    local = src
    if direction == "download":
        async with Session(
            credentials=mediastore_server.credentials, region=mediastore_server.region
        ) as session:
            client = session.container(mediastore_server.endpoint)
            assert (await upload_tree(client, src, "mem", TransferOptions(record=False))).ok
        local = tmp_path / "dst"
    creds = mediastore_server.credentials
    result = await anyio.run_process(
        [sys.executable, "-c", _MEMORY_CHILD, mediastore_server.endpoint,
         creds.access_key_id, creds.secret_access_key, str(local), direction],
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    out = json.loads(result.stdout)
    assert out["ok"] and out["files"] == count
    # 4 files in flight, each held about twice (read and sent, or received and joined):
    # 16 MiB, and what they cost on the way; the whole tree would be 200 MiB.
    assert out["peak"] < 64, out


async def test_more_files_at_once_than_the_session_has_connections_never_time_out_waiting(
    mediastore_server: Any, tmp_path: Path
) -> None:
    """A session limited to 2 connections (a polite client) and a transfer of 16 files at
    a time: each file waited for a connection in the client's gate, gave up after
    Timeouts.pool (PoolTimeout) and was reported failed, though nothing was wrong but the
    transfer's own contention. The transfer now queues its requests for the session's
    connections itself (ranged parts included), so none waits in the gate."""
    from msd_async.transfer import PART_SIZE

    site = tmp_path / "site"
    files = make_files(site, 12)
    for i in range(12):  # folders: listed concurrently too
        (site / f"d{i}").mkdir()
        (site / f"d{i}" / "a.txt").write_bytes(b"a")
    (site / "big.bin").write_bytes(b"b" * (PART_SIZE * 2 + 10))  # three ranged parts
    pool_timeout = 0.3
    # Each request takes most of the gate's patience: three in a row exceed it.
    mediastore_server.faults.inject("delay", times=None, delay=pool_timeout / 2)
    async with Session(
        credentials=mediastore_server.credentials, region=mediastore_server.region,
        timeouts=Timeouts(pool=pool_timeout), limits=Limits(max_connections=2),
    ) as session:
        client = session.container(mediastore_server.endpoint)
        options = TransferOptions(concurrency=16, file_attempts=1)
        up = await sync(client, site, "ms:pool", options)
        assert up.ok, sorted({f.message for f in up.failed})
        down = await sync(client, "ms:pool", tmp_path / "dst", options)
        assert down.ok, sorted({f.message for f in down.failed})
        assert len(down.transferred) == len(files) + 12 + 1
    mediastore_server.faults.clear()


@pytest.mark.skipif(
    not Path("/proc/thread-self/io").is_file(), reason="counts /proc/thread-self/io"
)
async def test_a_local_file_grown_after_the_scan_is_not_hashed_on_the_event_loop(
    mediastore_client: Any, tmp_path: Path
) -> None:
    """A sync down compares a local file with the object by hashing it: on the event loop
    when small (a hop to a thread costs more), in a thread when large. Which was decided
    from the scan's size, so a file grown since was hashed whole on the loop, stalling
    every other request meanwhile. It is now sized when it is opened."""
    await mediastore_client.put_object("gd/f.bin", b"remote" * 100)
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "f.bin").write_bytes(b"local!" * 100)  # same size, other bytes: compared
    grown = 64 * 1024 * 1024
    before = _bytes_read("thread-self")
    report = await sync(
        mediastore_client, "ms:gd", dst, progress=_grown_once_planned(dst / "f.bin", grown)
    )
    on_loop = _bytes_read("thread-self") - before
    assert report.transferred == ["f.bin"]
    assert (dst / "f.bin").read_bytes() == b"remote" * 100
    assert on_loop < grown // 16, f"{on_loop:,} bytes read on the event loop"


# --- two runs downloading one large object into one folder ----------------------------------

async def test_overlapping_syncs_of_one_large_object_never_store_a_half_file(
    mediastore_server: Any, mediastore_client: Any, tmp_path: Path
) -> None:
    """A sync run by cron every minute, whose run takes longer: two runs download one
    large object into one folder at once, through the same resumable ``.NAME.msdpart``.
    The second found no part state yet, so it started the file afresh (a new file under
    that name); the first went on writing its own, then hashed and renamed the second's
    (all zeros so far) into place and reported it done. Now the first run holds its part
    file (an advisory lock) until it is renamed: the second run reports the file in use
    and leaves it alone, and what is stored is the object."""
    data = os.urandom(20 * 1024 * 1024)  # three ranged parts
    await mediastore_client.put_object("ov/big.bin", data)
    dst = tmp_path / "dst"
    # The first run's parts arrive after a while; the second's much later.
    faults = mediastore_server.faults
    faults.inject("delay", method="GET", path="ov/big.bin", times=3, delay=1.0)
    faults.inject("delay", method="GET", path="ov/big.bin", times=3, delay=4.0)
    first = asyncio.ensure_future(download_tree(mediastore_client, "ov", dst))
    part_file = dst / ".big.bin.msdpart"
    for _ in range(500):
        if part_file.exists():
            break
        await asyncio.sleep(0.01)
    overlapping = asyncio.ensure_future(download_tree(mediastore_client, "ov", dst))
    report = await first
    assert report.transferred == ["big.bin"], report.failed
    # What the first run reported done is there as soon as it says so.
    assert hashlib.sha256((dst / "big.bin").read_bytes()).digest() == hashlib.sha256(
        data
    ).digest()
    second = await overlapping
    assert (dst / "big.bin").read_bytes() == data
    assert second.transferred == []
    (failure,) = second.failed
    assert "another download" in str(failure.error), failure.error
    assert sorted(p.name for p in dst.iterdir()) == ["big.bin"]


async def test_a_sweep_of_leftovers_passes_by_a_download_in_progress(
    mediastore_client: Any, tmp_path: Path
) -> None:
    """``sync --delete`` removes the temporary files a crash left. One that a download
    is writing at that moment (a ``msd get`` into the same folder, another run) is not a
    leftover: removed, that download failed at its rename. A download holds its file
    locked while it writes it; once it lets go, a leftover is a leftover."""
    from msd_async.transfer import _local

    await mediastore_client.put_object("sw/keep.bin", b"k" * 100)
    dst = tmp_path / "dst"
    dst.mkdir()
    tmp, fd = _local.create_own_temporary(dst / "other.bin")  # as `msd get` holds it
    try:
        os.write(fd, b"half")
        report = await sync(mediastore_client, "ms:sw", dst, delete=True)
        assert report.ok, report
        assert tmp.exists()
    finally:
        os.close(fd)
    await sync(mediastore_client, "ms:sw", dst, delete=True)
    assert sorted(p.name for p in dst.iterdir()) == ["keep.bin"]


async def test_a_sweep_keeps_the_parts_of_a_download_it_found_in_use(
    mediastore_client: Any, tmp_path: Path
) -> None:
    """A run that finds a large object's parts file held by another run fails that file
    (EBUSY) and leaves it to the other. Its sweep of leftovers took that failure for one
    no retry can fix, so once the other run let go (cut off, its parts kept to resume),
    the sweep removed them: the other's next run fetched them all again. A file found in
    use is kept, as one whose download may resume."""
    from msd_async.transfer import _local
    from msd_async.transfer.parts import state_path

    data = os.urandom(9 * 1024 * 1024)  # two ranged parts
    await mediastore_client.put_object("bz/big.bin", data)
    etag = (await mediastore_client.describe_object("bz/big.bin")).etag
    dst = tmp_path / "dst"
    dst.mkdir()
    tmp = dst / ".big.bin.msdpart"
    # The other run: its first part on disk, recorded, and the file held.
    held = _local.claim(tmp)
    os.pwrite(held, data[: 8 * 1024 * 1024], 0)
    os.ftruncate(held, len(data))
    state_path(tmp).write_text(f'{{"etag": "{etag}", "size": {len(data)}, "parts": [0]}}')
    released = []

    def on_event(event: TransferEvent) -> None:
        if event.kind == "fail" and not released:
            os.close(held)  # the other run is cut off, its parts kept to resume
            released.append(event.error)

    try:
        report = await sync(mediastore_client, "ms:bz", dst, delete=True, progress=on_event)
    finally:
        if not released:
            os.close(held)
    (failure,) = report.failed
    assert "another download" in str(failure.error), failure.error
    assert released
    assert tmp.exists() and state_path(tmp).exists(), sorted(p.name for p in dst.iterdir())


@pytest.mark.parametrize("size", [100, 9 * 1024 * 1024], ids=["small", "ranged"])
async def test_a_folder_an_overlapping_run_removes_is_made_again(
    mediastore_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    """Two shards of a sync with delete into one folder: one deletes the last file of
    ``d/e/`` and removes the folders that emptied (only empty ones, as ``rmdir``), while
    the other creates ``d/e/new.ts``. The folder went between its ``mkdir`` and the
    creation of the file's temporary name: a bare ``FileNotFoundError``, the file failed.
    The creation is tried again, the folder made again. The removal is landed in that
    instant by wrapping the creation: no real thread can be timed to hit it."""
    from msd_async.transfer import PART_SIZE, _local

    data = os.urandom(size)
    await mediastore_client.put_object("rmd/d/e/new.ts", data)
    dst = tmp_path / "dst"
    (dst / "d" / "e").mkdir(parents=True)
    name = "claim" if size > PART_SIZE else "create_own_temporary"
    real = getattr(_local, name)
    swept: list[Path] = []

    def after_a_sweep(path: Path, *args: Any) -> Any:
        if len(swept) < 2:
            # The other shard's delete of d/e/gone.ts, in the instant before.
            _local.remove_empty_parents(path.parent / "gone.ts", dst)
            swept.append(path)
        return real(path, *args)

    monkeypatch.setattr(_local, name, after_a_sweep)
    report = await download_tree(mediastore_client, "rmd", dst)
    assert report.ok, [f.message for f in report.failed]
    assert len(swept) == 2
    assert (dst / "d" / "e" / "new.ts").read_bytes() == data
    assert sorted(p.name for p in (dst / "d" / "e").iterdir()) == ["new.ts"]


def test_a_claim_that_never_sees_its_file_named_gives_up_with_a_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim checks, once locked, that its name still points at its file, and starts
    over if not (a sweep or another run took it meanwhile). Where ``stat`` and ``fstat``
    never agree on the file (some overlay file systems), that looped forever: the whole
    transfer hung. It gives up after a bounded number of tries, saying why, and leaves no
    descriptor open."""
    from msd_async.transfer import _local

    monkeypatch.setattr(_local, "_still_named", lambda fd, path: False)
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(OSError, match="kept changing") as raised:
        _local.claim(tmp_path / ".x.bin.msdpart")
    assert raised.value.filename == str(tmp_path / ".x.bin.msdpart")
    assert len(os.listdir("/proc/self/fd")) == before
