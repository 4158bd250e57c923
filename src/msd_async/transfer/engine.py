"""upload_tree, download_tree and sync: many files, bounded concurrency, every file verified.

One engine serves all three. It plans (scan the local tree, walk the remote folder, check
names and sizes), then runs the transfers from a pool of ``concurrency`` workers. A file that
fails is retried as a whole (``file_attempts``, on top of each request's own retries) when
another try can help, then reported in :class:`TransferReport.failed` while the others go on;
``fail_fast=True`` stops at the first failure instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

import anyio
import anyio.to_thread

from .. import rules
from ..errors import (
    ChecksumMismatchError,
    ConnectionLostError,
    InvalidParameterError,
    MediaStoreError,
    ObjectChangedError,
    ObjectNotFoundError,
    ObjectTooLargeError,
    ServerError,
    ThrottlingError,
    TransportError,
)
from ..media_types import content_type_for
from ..retry import RetryPolicy
from . import _local
from ._local import LocalFile
from .events import (
    Action,
    FileFailure,
    ProgressHook,
    TransferEvent,
    TransferReport,
    first_error,
)
from .record import RecordEntry, SyncRecord
from .shard import Shard, check_shard, in_shard
from .walk import RemoteObject, walk

if TYPE_CHECKING:
    from ..client import ContainerClient

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_FILE_ATTEMPTS",
    "INLINE_LIMIT",
    "PART_CONCURRENCY",
    "PART_SIZE",
    "REMOTE_SCHEME",
    "TRANSFER_RETRY",
    "download_tree",
    "parse_location",
    "sync",
    "upload_tree",
]

#: Files transferred at the same time.
DEFAULT_CONCURRENCY: Final = 16
#: Tries of one file (each request inside also retries under ``retry``).
DEFAULT_FILE_ATTEMPTS: Final = 4
#: Each request's retry policy in a transfer: more patient than a single call's default,
#: since a tree transfer should ride out a bad minute rather than report it.
TRANSFER_RETRY: Final = RetryPolicy(max_attempts=6)
#: Files up to this size are read (and hashed) in one go and sent from memory: one thread
#: hop per file instead of one per MiB. Larger ones are hashed, then sent from the path.
INLINE_LIMIT: Final = 8 * 1024 * 1024
#: Files up to this size are read, hashed and written on the event loop itself: a
#: page-cached read or write of 256 KiB takes less time than handing it to a worker thread
#: costs (about 0.3 ms of CPU per file at 200 KB, measured in benchmarks/bench_tree.py).
SMALL_FILE: Final = 256 * 1024
#: Objects larger than this download in ranged parts of this size, in parallel.
PART_SIZE: Final = 8 * 1024 * 1024
#: Ranged GETs of one object at the same time (within the file's worker).
PART_CONCURRENCY: Final = 4
#: Per-file byte progress is reported only for files larger than this.
_PROGRESS_MIN: Final = 1024 * 1024
#: How a container location is written in :func:`sync` and on the command line.
REMOTE_SCHEME: Final = "ms:"

Location = tuple[Literal["local"], Path] | tuple[Literal["remote"], str]


def parse_location(location: str | os.PathLike[str]) -> Location:
    """``("remote", folder)`` for ``"ms:FOLDER"`` (``"ms:"`` is the container's root),
    else ``("local", Path)``. A local folder whose name starts with ``ms:`` is written
    ``./ms:...``. Raises :class:`~msd_async.errors.InvalidPathError` for an invalid folder."""
    if isinstance(location, str) and location.startswith(REMOTE_SCHEME):
        return ("remote", rules.normalize_folder_path(location[len(REMOTE_SCHEME) :]))
    return ("local", Path(location))


def _retry_file(exc: BaseException, retry: RetryPolicy) -> bool:
    """Whether trying the whole file again may succeed."""
    if isinstance(exc, ChecksumMismatchError | ObjectChangedError | ConnectionLostError):
        return True
    if isinstance(exc, ServerError | ThrottlingError | TransportError):
        return True
    return retry.is_retryable(exc)


class _Job:
    __slots__ = ("action", "path", "run", "size")

    def __init__(
        self, path: str, action: Action, size: int, run: Callable[[], Awaitable[None]]
    ) -> None:
        self.path = path
        self.action = action
        self.size = size
        self.run = run


class _Engine:
    def __init__(
        self,
        client: ContainerClient,
        report: TransferReport,
        *,
        concurrency: int,
        progress: ProgressHook | None,
        fail_fast: bool,
        retry: RetryPolicy,
        file_attempts: int,
        record: SyncRecord | None,
    ) -> None:
        if concurrency < 1:
            raise InvalidParameterError(
                f"concurrency must be at least 1, not {concurrency}", rule="transfer.concurrency"
            )
        if file_attempts < 1:
            raise InvalidParameterError(
                f"file_attempts must be at least 1, not {file_attempts}",
                rule="transfer.file-attempts",
            )
        self.client = client
        self.report = report
        self.concurrency = concurrency
        self.progress = progress
        self.fail_fast = fail_fast
        self.retry = retry
        self.file_attempts = file_attempts
        self.record = record
        self.stopped = False

    def emit(self, event: TransferEvent) -> None:
        if self.progress is not None:
            self.progress(event)

    def fail(self, path: str, action: Action, error: BaseException) -> None:
        self.report.failed.append(FileFailure(path, action, error))
        self.emit(TransferEvent("fail", path, action, error=error))

    async def run(self, jobs: list[_Job]) -> None:
        """Run ``jobs`` from ``concurrency`` workers; failures are collected."""
        if self.stopped or not jobs:
            return
        queue: Iterator[_Job] = iter(jobs)

        async def worker(scope: anyio.CancelScope) -> None:
            # One shared iterator: next() runs without an await in between, so each job is
            # taken by exactly one worker.
            for job in queue:
                if not await self._attempt(job) and self.fail_fast:
                    self.stopped = True
                    scope.cancel()
                    return

        try:
            async with anyio.create_task_group() as tg:
                for _ in range(min(self.concurrency, len(jobs))):
                    tg.start_soon(worker, tg.cancel_scope)
        except ExceptionGroup as group:
            # Not a file's failure (those are collected): a bug, or the progress hook raised.
            raise first_error(group) from None

    async def _attempt(self, job: _Job) -> bool:
        for attempt in range(1, self.file_attempts + 1):
            try:
                await job.run()
                return True
            except (MediaStoreError, OSError) as exc:
                if (
                    isinstance(exc, MediaStoreError)
                    and attempt < self.file_attempts
                    and _retry_file(exc, self.retry)
                ):
                    await anyio.sleep(self.retry.backoff(attempt))
                    continue
                self.fail(job.path, job.action, exc)
                return False
        return False  # pragma: no cover - the loop always returns

    def byte_progress(self, path: str, action: Action, size: int) -> Callable[[int], None] | None:
        if self.progress is None or size <= _PROGRESS_MIN:
            return None

        def report(done: int) -> None:
            self.emit(TransferEvent("bytes", path, action, size=size, done=done))

        return report

    def done(self, path: str, action: Action, size: int) -> None:
        self.report.transferred.append(path)
        self.report.bytes_transferred += size
        self.emit(TransferEvent("done", path, action, size=size, done=size))

    def skip(self, path: str, action: Action, size: int) -> None:
        self.report.skipped.append(path)
        self.emit(TransferEvent("skip", path, action, size=size))

    def plan(self, jobs: Iterable[_Job]) -> None:
        jobs = list(jobs)
        self.emit(
            TransferEvent("plan", files=len(jobs), size=sum(j.size for j in jobs))
        )


def _object_key(prefix: str, relative_path: str) -> str:
    return f"{prefix}/{relative_path}" if prefix else relative_path


def _check_name(key: str) -> None:
    """Raise InvalidPathError if the API cannot store ``key``; names are never rewritten."""
    rules.normalize_object_path(key)


async def _remote_index(
    client: ContainerClient, prefix: str, shard: Shard, retry: RetryPolicy
) -> dict[str, RemoteObject]:
    return {
        obj.relative_path: obj
        async for obj in walk(client, prefix, retry=retry)
        if in_shard(obj.relative_path, shard)
    }


def _save_record(record: SyncRecord | None) -> None:
    if record is not None and record.dirty:
        with contextlib.suppress(OSError):
            record.save()


# --- upload ------------------------------------------------------------------------------


async def _upload(
    engine: _Engine,
    root: Path,
    prefix: str,
    *,
    compare: bool,
    delete: bool,
    dry_run: bool,
    shard: Shard,
    content_type: str | None,
    cache_control: str | None,
) -> None:
    client, report, record = engine.client, engine.report, engine.record
    if not await anyio.to_thread.run_sync(root.is_dir):
        raise NotADirectoryError(f"{root} is not a folder")
    files = [
        f
        for f in await anyio.to_thread.run_sync(_local.scan, root)
        if in_shard(f.relative_path, shard)
    ]
    remote: dict[str, RemoteObject] = {}
    if compare or delete:
        remote = await _remote_index(client, prefix, shard, engine.retry)
    limit = client.standard_limit

    def upload_job(f: LocalFile) -> _Job:
        rel = f.relative_path
        key = _object_key(prefix, rel)

        async def run() -> None:
            if f.size <= SMALL_FILE:
                sha, data, size = _local.read_and_hash(f.path, INLINE_LIMIT)
            else:
                sha, data, size = await anyio.to_thread.run_sync(
                    _local.read_and_hash, f.path, INLINE_LIMIT
                )
            existing = remote.get(rel)
            if compare and existing is not None and record is not None:
                entry = record.get(rel)
                if entry is not None and entry.etag == existing.etag and entry.sha256 == sha:
                    engine.skip(rel, "upload", size)
                    return
            if size > limit:
                raise ObjectTooLargeError(
                    f"{rel} is {size:,} bytes; STANDARD objects are limited to {limit:,} bytes",
                    rule="body.max-size.standard",
                    limit=limit,
                    size=size,
                )
            if dry_run:
                engine.done(rel, "upload", size)  # what would move: --dry-run counts it
                return
            engine.emit(TransferEvent("start", rel, "upload", size=size))
            result = await client.put_object(
                key,
                data if data is not None else f.path,
                content_type=content_type or content_type_for(rel),
                cache_control=cache_control,
                progress=engine.byte_progress(rel, "upload", size),
                retry=engine.retry,
            )
            if result.content_sha256 != sha:
                raise ChecksumMismatchError(
                    f"the service stored SHA-256 {result.content_sha256} for {key}, but the "
                    f"file hashed to {sha} (did it change during the upload?)",
                    expected=sha,
                    actual=result.content_sha256,
                )
            if record is not None:
                record.set(rel, RecordEntry(size, f.mtime_ns, sha, result.etag))
            engine.done(rel, "upload", size)

        return _Job(rel, "upload", f.size, run)

    jobs: list[_Job] = []
    for f in files:
        key = _object_key(prefix, f.relative_path)
        try:
            _check_name(key)
            if f.size > limit:
                raise ObjectTooLargeError(
                    f"{f.relative_path} is {f.size:,} bytes; STANDARD objects are limited to "
                    f"{limit:,} bytes",
                    rule="body.max-size.standard",
                    limit=limit,
                    size=f.size,
                )
        except MediaStoreError as exc:
            engine.fail(f.relative_path, "upload", exc)
            continue
        jobs.append(upload_job(f))
    if engine.fail_fast and report.failed:
        return
    engine.plan(jobs)
    try:
        await engine.run(jobs)
        if delete and not engine.stopped:
            local_names = {f.relative_path for f in files}
            stale = sorted(set(remote) - local_names)
            await engine.run([_remote_delete_job(engine, remote[rel], dry_run) for rel in stale])
    finally:
        _save_record(record)


def _remote_delete_job(engine: _Engine, obj: RemoteObject, dry_run: bool) -> _Job:
    rel = obj.relative_path

    async def run() -> None:
        if not dry_run:
            # Gone already (someone else, or a retried DELETE): the goal is reached.
            with contextlib.suppress(ObjectNotFoundError):
                await engine.client.delete_object(obj.path, retry=engine.retry)
            if engine.record is not None:
                engine.record.forget(rel)
        engine.report.deleted.append(rel)
        engine.emit(TransferEvent("delete", rel, "delete"))

    return _Job(rel, "delete", 0, run)


# --- download ----------------------------------------------------------------------------


async def _download(
    engine: _Engine,
    prefix: str,
    root: Path,
    *,
    compare: bool,
    delete: bool,
    dry_run: bool,
    shard: Shard,
) -> None:
    record = engine.record
    if await anyio.to_thread.run_sync(lambda: root.exists() and not root.is_dir()):
        raise NotADirectoryError(f"{root} exists and is not a folder")
    remote = await _remote_index(engine.client, prefix, shard, engine.retry)
    local: dict[str, LocalFile] = {}
    if compare or delete:
        local = {
            f.relative_path: f
            for f in await anyio.to_thread.run_sync(_local.scan, root)
            if in_shard(f.relative_path, shard)
        }
    jobs = [
        _download_job(engine, obj, root, local.get(rel) if compare else None, dry_run)
        for rel, obj in sorted(remote.items())
    ]
    engine.plan(jobs)
    try:
        await engine.run(jobs)
        if delete and not engine.stopped:
            stale = sorted(set(local) - set(remote))
            await engine.run(
                [_local_delete_job(engine, local[rel], root, dry_run) for rel in stale]
            )
    finally:
        _save_record(record)


def _local_delete_job(engine: _Engine, f: LocalFile, root: Path, dry_run: bool) -> _Job:
    rel = f.relative_path

    async def run() -> None:
        if not dry_run:

            def remove() -> None:
                with contextlib.suppress(FileNotFoundError):
                    f.path.unlink()
                _local.remove_empty_parents(f.path, root)

            await anyio.to_thread.run_sync(remove)
            if engine.record is not None:
                engine.record.forget(rel)
        engine.report.deleted.append(rel)
        engine.emit(TransferEvent("delete", rel, "delete"))

    return _Job(rel, "delete", 0, run)


def _download_job(
    engine: _Engine, obj: RemoteObject, root: Path, existing: LocalFile | None, dry_run: bool
) -> _Job:
    rel = obj.relative_path
    final = root.joinpath(*rel.split("/"))
    size = obj.size or 0

    async def run() -> None:
        record = engine.record
        local_sha: str | None = None
        if existing is not None:
            if existing.size <= SMALL_FILE:
                local_sha = _local.hash_file(existing.path)
            else:
                local_sha = await anyio.to_thread.run_sync(_local.hash_file, existing.path)
            entry = record.get(rel) if record is not None else None
            if entry is not None and entry.etag == obj.etag and entry.sha256 == local_sha:
                engine.skip(rel, "download", size)
                return
        if final.is_dir():  # one stat: cheaper than a hop to a worker thread
            raise IsADirectoryError(
                f"{final} is a folder; the object {obj.path} cannot be written there"
            )
        if dry_run:
            engine.done(rel, "download", size)  # what would move: --dry-run counts it
            return
        engine.emit(TransferEvent("start", rel, "download", size=size))
        etag: str | None
        if obj.size is not None and obj.size > PART_SIZE:
            sha, etag, got = await _download_parts(engine, obj, final)
            tmp: Path | None = _local.temporary_path(final)
            data: bytes | None = None
        else:
            async with engine.client.get_object(obj.path, retry=engine.retry) as stream:
                data = await stream.read()
                etag = stream.etag
            got = len(data)
            sha = _sha256(data) if got <= SMALL_FILE else await anyio.to_thread.run_sync(
                _sha256, data
            )
            tmp = None
        engine.report.bytes_transferred += got
        entry = record.get(rel) if record is not None else None
        if entry is not None and etag is not None and entry.etag == etag and entry.sha256 != sha:
            _discard(tmp)
            raise ChecksumMismatchError(
                f"{obj.path} (ETag {etag}) was recorded with SHA-256 {entry.sha256} but "
                f"downloaded as {sha}",
                expected=entry.sha256,
                actual=sha,
            )
        if local_sha is not None and local_sha == sha:
            # Compared by downloading (no record of this version): identical, keep the file.
            _discard(tmp)
            engine.report.compared += 1
            mtime_ns = existing.mtime_ns if existing is not None else 0
            if record is not None and etag is not None:
                record.set(rel, RecordEntry(got, mtime_ns, sha, etag))
            engine.skip(rel, "download", got)
            return
        if tmp is not None:
            await anyio.to_thread.run_sync(_finish_parts, tmp, final)
        else:
            assert data is not None
            if got <= SMALL_FILE:
                mtime_ns = _local.write_atomically(final, data)
            else:
                mtime_ns = await anyio.to_thread.run_sync(_local.write_atomically, final, data)
        if tmp is not None:
            mtime_ns = (await anyio.to_thread.run_sync(final.stat)).st_mtime_ns
        if record is not None and etag is not None:
            record.set(rel, RecordEntry(got, mtime_ns, sha, etag))
        engine.report.transferred.append(rel)
        engine.emit(TransferEvent("done", rel, "download", size=got, done=got))

    return _Job(rel, "download", size, run)


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _discard(tmp: Path | None) -> None:
    if tmp is None:
        return
    for path in (tmp, _state_path(tmp)):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _state_path(tmp: Path) -> Path:
    return tmp.with_name(tmp.name + ".json")


def _finish_parts(tmp: Path, final: Path) -> None:
    os.replace(tmp, final)
    with contextlib.suppress(FileNotFoundError):
        _state_path(tmp).unlink()


def _open_parts(tmp: Path, etag: str, size: int) -> tuple[int, set[int]]:
    """Open (or resume) the temporary file of a ranged download: ``(fd, parts done)``.

    A previous attempt's parts are kept only if it was downloading the same version (ETag
    and size) and its file has the full length."""
    state = _state_path(tmp)
    done: set[int] = set()
    try:
        saved = json.loads(state.read_text("utf-8"))
        if saved.get("etag") == etag and saved.get("size") == size and tmp.stat().st_size == size:
            done = {int(i) for i in saved.get("parts", [])}
    except (OSError, ValueError, TypeError, AttributeError):
        done = set()
    tmp.parent.mkdir(parents=True, exist_ok=True)
    if done:
        fd = os.open(tmp, os.O_WRONLY)
    else:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.ftruncate(fd, size)
    return fd, done


class _PartState:
    """Which parts of a ranged download are on disk, saved after each one.

    Parts are written from several worker threads: the lock makes each save list only
    parts whose bytes were already written and fsynced, and keeps two saves from sharing
    the temporary file of the rename."""

    def __init__(self, fd: int, state: Path, etag: str, size: int, done: set[int]) -> None:
        self.fd = fd
        self.state = state
        self.etag = etag
        self.size = size
        self.done = set(done)
        self.lock = threading.Lock()

    def write(self, index: int, offset: int, data: bytes) -> int:
        """Write part ``index`` at ``offset``, then record it; returns the parts done."""
        view = memoryview(data)
        while view:
            written = os.pwrite(self.fd, view, offset)
            view = view[written:]
            offset += written
        os.fsync(self.fd)  # the state file must not claim a part the disk does not hold
        with self.lock:
            self.done.add(index)
            tmp = self.state.with_name(self.state.name + ".tmp")
            tmp.write_text(
                json.dumps({"etag": self.etag, "size": self.size, "parts": sorted(self.done)}),
                "utf-8",
            )
            os.replace(tmp, self.state)
            return len(self.done)


async def _download_parts(
    engine: _Engine, obj: RemoteObject, final: Path
) -> tuple[str, str, int]:
    """Download a large object in ranged parts into its temporary file; resume the parts a
    previous attempt completed. Returns ``(sha256, etag, size)``; the file is not renamed."""
    client = engine.client
    info = await client.describe_object(obj.path, retry=engine.retry)
    etag, size = info.etag, info.content_length
    if etag is None or size is None:
        raise ObjectChangedError(
            f"{obj.path} has no ETag or length (a STREAMING upload in progress?)",
            expected_etag=obj.etag,
            actual_etag=etag,
        )
    tmp = _local.temporary_path(final)
    state = _state_path(tmp)
    fd, done = await anyio.to_thread.run_sync(_open_parts, tmp, etag, size)
    parts = _PartState(fd, state, etag, size, done)
    count = (size + PART_SIZE - 1) // PART_SIZE
    progress = engine.byte_progress(obj.relative_path, "download", size)
    limiter = anyio.CapacityLimiter(PART_CONCURRENCY)

    async def part(index: int) -> None:
        first = index * PART_SIZE
        last = min(size, first + PART_SIZE) - 1
        async with limiter:
            async with client.get_object(obj.path, range=(first, last), retry=engine.retry) as s:
                if s.etag != etag:
                    raise ObjectChangedError(
                        f"{obj.path} changed during the download (ETag {etag} became {s.etag})",
                        expected_etag=etag,
                        actual_etag=s.etag,
                    )
                data = await s.read()
            if len(data) != last - first + 1:
                raise ConnectionLostError(
                    f"part {index} of {obj.path}: {len(data)} bytes instead of "
                    f"{last - first + 1}"
                )
            finished = await anyio.to_thread.run_sync(parts.write, index, first, data)
            if progress is not None:
                progress(min(size, finished * PART_SIZE))

    try:
        try:
            async with anyio.create_task_group() as tg:
                for index in range(count):
                    if index not in done:
                        tg.start_soon(part, index)
        except ExceptionGroup as group:
            raise first_error(group) from None
    except ObjectChangedError:
        _discard(tmp)  # another version: its parts are worth nothing
        raise
    finally:
        os.close(fd)
    sha = await anyio.to_thread.run_sync(_local.hash_file, tmp)
    return sha, etag, size


# --- public functions --------------------------------------------------------------------


def _record_for(
    use: bool, root: Path, client: ContainerClient, prefix: str, shard: Shard
) -> SyncRecord | None:
    if not use:
        return None
    record = SyncRecord(root, client.endpoint, prefix, shard)
    record.load()
    return record


async def upload_tree(
    client: ContainerClient,
    local_root: str | os.PathLike[str],
    prefix: str = "",
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    progress: ProgressHook | None = None,
    fail_fast: bool = False,
    dry_run: bool = False,
    shard: Shard | None = None,
    content_type: str | None = None,
    cache_control: str | None = None,
    record: bool = True,
    retry: RetryPolicy = TRANSFER_RETRY,
    file_attempts: int = DEFAULT_FILE_ATTEMPTS,
) -> TransferReport:
    """Upload every file under ``local_root`` to the folder ``prefix``, whatever is there.

    Each file becomes ``prefix/relative/path`` (STANDARD availability); its Content-Type is
    ``content_type`` or, by default, the one :func:`~msd_async.content_type_for` gives for its
    name. Every upload is verified: the SHA-256 the service stored must equal the file's.

    Files are never renamed: a name the API cannot store (characters outside ``A-Za-z0-9 .
    - _ ~ = :``, more than 10 folders, over 900 characters) and a file over the object limit
    (25 MB) are reported in :attr:`TransferReport.failed` before anything is sent, while the
    others are uploaded. ``concurrency`` files (default 16) go at the same time.
    ``progress`` gets :class:`TransferEvent` objects. ``fail_fast`` stops at the first
    failure. ``dry_run`` lists what would be uploaded without sending. ``shard=(i, n)``
    takes only this worker's share (see :mod:`msd_async.transfer.shard`). ``record`` (default
    True) writes the sync record so a later :func:`sync` can skip these files. ``retry`` is
    each request's policy; a file that still fails with a transient error is tried again as
    a whole, up to ``file_attempts`` times.

    Raises :class:`NotADirectoryError` if ``local_root`` is not a folder,
    :class:`~msd_async.errors.InvalidPathError` for an invalid ``prefix``, and the error of a
    listing that failed; per-file errors are in the report, not raised.
    """
    return await _run_upload(
        client, Path(local_root), rules.normalize_folder_path(prefix),
        compare=False, delete=False, dry_run=dry_run, concurrency=concurrency,
        progress=progress, fail_fast=fail_fast, shard=shard, content_type=content_type,
        cache_control=cache_control, record=record, retry=retry, file_attempts=file_attempts,
    )


async def _run_upload(
    client: ContainerClient,
    root: Path,
    prefix: str,
    *,
    compare: bool,
    delete: bool,
    dry_run: bool,
    concurrency: int,
    progress: ProgressHook | None,
    fail_fast: bool,
    shard: Shard | None,
    content_type: str | None,
    cache_control: str | None,
    record: bool,
    retry: RetryPolicy,
    file_attempts: int,
) -> TransferReport:
    shard_ = check_shard(shard)
    if content_type is not None:
        rules.check_content_type(content_type)
    if cache_control is not None:
        rules.check_cache_control(cache_control)
    report = TransferReport("upload", dry_run=dry_run)
    engine = _Engine(
        client, report, concurrency=concurrency, progress=progress, fail_fast=fail_fast,
        retry=retry, file_attempts=file_attempts,
        record=_record_for(record, root, client, prefix, shard_),
    )
    await _upload(
        engine, root, prefix, compare=compare, delete=delete, dry_run=dry_run, shard=shard_,
        content_type=content_type, cache_control=cache_control,
    )
    return report


async def download_tree(
    client: ContainerClient,
    prefix: str,
    local_root: str | os.PathLike[str],
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    progress: ProgressHook | None = None,
    fail_fast: bool = False,
    dry_run: bool = False,
    shard: Shard | None = None,
    record: bool = True,
    retry: RetryPolicy = TRANSFER_RETRY,
    file_attempts: int = DEFAULT_FILE_ATTEMPTS,
) -> TransferReport:
    """Download every object under the folder ``prefix`` into ``local_root``, replacing
    what is there.

    Each object is written under a temporary name (``.NAME.msdpart`` next to it) and renamed
    when complete, so no half file ever has the final name. Objects over 8 MiB download in
    ranged parts, 4 at a time; a part that a failed attempt completed is not fetched again
    (the next attempt, or the next run, resumes from the temporary file while the object's
    ETag is unchanged). Other arguments as :func:`upload_tree`.

    Raises :class:`NotADirectoryError` if ``local_root`` exists and is not a folder, and the
    error of a listing that failed; per-object errors are in the report.
    """
    return await _run_download(
        client, rules.normalize_folder_path(prefix), Path(local_root), compare=False,
        delete=False, dry_run=dry_run, concurrency=concurrency, progress=progress,
        fail_fast=fail_fast, shard=shard, record=record, retry=retry,
        file_attempts=file_attempts,
    )


async def _run_download(
    client: ContainerClient,
    prefix: str,
    root: Path,
    *,
    compare: bool,
    delete: bool,
    dry_run: bool,
    concurrency: int,
    progress: ProgressHook | None,
    fail_fast: bool,
    shard: Shard | None,
    record: bool,
    retry: RetryPolicy,
    file_attempts: int,
) -> TransferReport:
    shard_ = check_shard(shard)
    report = TransferReport("download", dry_run=dry_run)
    engine = _Engine(
        client, report, concurrency=concurrency, progress=progress, fail_fast=fail_fast,
        retry=retry, file_attempts=file_attempts,
        record=_record_for(record, root, client, prefix, shard_),
    )
    await _download(
        engine, prefix, root, compare=compare, delete=delete, dry_run=dry_run, shard=shard_
    )
    return report


async def sync(
    client: ContainerClient,
    source: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    *,
    delete: bool = False,
    dry_run: bool = False,
    concurrency: int = DEFAULT_CONCURRENCY,
    progress: ProgressHook | None = None,
    fail_fast: bool = False,
    shard: Shard | None = None,
    content_type: str | None = None,
    cache_control: str | None = None,
    record: bool = True,
    retry: RetryPolicy = TRANSFER_RETRY,
    file_attempts: int = DEFAULT_FILE_ATTEMPTS,
) -> TransferReport:
    """Make ``destination`` hold what ``source`` holds, transferring only what differs.

    One side is a local folder, the other a container folder written ``"ms:FOLDER"``
    (``"ms:"`` for the whole container): ``sync(client, "site", "ms:www")`` uploads,
    ``sync(client, "ms:www", "site")`` downloads.

    "Differs" is decided by content: every local file is hashed (SHA-256) and compared with
    the sync record (see :mod:`msd_async.transfer.record`), which says which SHA-256 each
    object version (ETag) holds. A path is skipped only when the object's ETag and the
    file's SHA-256 both match the record, so a file changed without a change of size or
    modification time is transferred, and so is an object replaced by someone else. Without
    a record, uploads send every file and downloads fetch every object and leave local files
    that turn out identical untouched.

    ``delete=True`` also deletes what is in the destination and not in the source (within
    this shard). ``dry_run=True`` reports what would be transferred and deleted, and changes
    nothing. Other arguments as :func:`upload_tree`.

    Raises :class:`~msd_async.errors.InvalidParameterError` unless exactly one side is
    remote; otherwise as :func:`upload_tree` and :func:`download_tree`.
    """
    src, dst = parse_location(source), parse_location(destination)
    if src[0] == "local" and dst[0] == "remote":
        return await _run_upload(
            client, src[1], dst[1], compare=True, delete=delete, dry_run=dry_run,
            concurrency=concurrency, progress=progress, fail_fast=fail_fast, shard=shard,
            content_type=content_type, cache_control=cache_control, record=record,
            retry=retry, file_attempts=file_attempts,
        )
    if src[0] == "remote" and dst[0] == "local":
        return await _run_download(
            client, src[1], dst[1], compare=True, delete=delete, dry_run=dry_run,
            concurrency=concurrency, progress=progress, fail_fast=fail_fast, shard=shard,
            record=record, retry=retry, file_attempts=file_attempts,
        )
    raise InvalidParameterError(
        f"sync needs one local folder and one container folder written ms:FOLDER; got "
        f"{os.fspath(source)!r} and {os.fspath(destination)!r}",
        rule="transfer.locations",
    )
