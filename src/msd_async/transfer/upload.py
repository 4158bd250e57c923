"""The upload direction: local files to a container folder, each verified by SHA-256."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import IO, BinaryIO, cast

import anyio
import anyio.to_thread

from .. import rules
from ..errors import (
    ChecksumMismatchError,
    InvalidParameterError,
    MediaStoreError,
    ObjectNotFoundError,
    ObjectTooLargeError,
)
from ..media_types import content_type_for
from . import _local
from ._local import LocalFile, Unscanned
from .events import TransferEvent
from .options import INLINE_LIMIT, SMALL_FILE
from .plan import (
    REMOTE_SCHEME,
    Selection,
    check_deletions,
    local_index,
    outside,
    remote_index,
)
from .pool import Job, Pool
from .record import RecordEntry
from .walk import RemoteObject

__all__ = ["run_upload"]


def _object_key(prefix: str, relative_path: str) -> str:
    return f"{prefix}/{relative_path}" if prefix else relative_path


def _too_large(rel: str, size: int, limit: int) -> ObjectTooLargeError:
    return ObjectTooLargeError(
        f"{rel} is {size:,} bytes; STANDARD objects are limited to {limit:,} bytes",
        rule="body.max-size.standard",
        limit=limit,
        size=size,
    )


def _upload_job(
    pool: Pool, f: LocalFile, prefix: str, existing: RemoteObject | None, compare: bool
) -> Job:
    rel = f.relative_path
    key = _object_key(prefix, rel)
    client, options = pool.client, pool.options
    limit = client.standard_limit

    async def run() -> None:
        # One open file for the hash and the send: a file replaced by a rename meanwhile
        # is sent as the version that was hashed.
        if f.size <= SMALL_FILE:
            opened = _local.open_scanned(f)
        else:
            opened = await anyio.to_thread.run_sync(_local.open_scanned, f)
        if opened is None:
            pool.vanished(rel, "upload")
            return
        try:
            await send(opened)
        finally:
            opened.close()

    async def send(opened: BinaryIO) -> None:
        record = pool.record
        # The size now, not the scan's: a file replaced or grown since is refused unread
        # when too large, and a large one is never read on the event loop.
        now = os.fstat(opened.fileno()).st_size
        if now > limit:
            raise _too_large(rel, now, limit)
        if now <= SMALL_FILE:
            sha, data, size = _local.read_and_hash(opened, INLINE_LIMIT, str(f.path))
        else:
            sha, data, size = await anyio.to_thread.run_sync(
                _local.read_and_hash, opened, INLINE_LIMIT, str(f.path)
            )
        if compare and existing is not None and record is not None:
            entry = record.get(rel)
            if entry is not None and entry.etag == existing.etag and entry.sha256 == sha:
                pool.skip(rel, "upload", size)
                return
        if size > limit:
            raise _too_large(rel, size, limit)
        if options.dry_run:
            pool.done(rel, "upload", size)  # what would move: --dry-run counts it
            return
        pool.start(rel, "upload", size)
        # The body is the bytes hashed, or nothing is stored (HashedFile: a file object in
        # all but its declared type).
        body = data if data is not None else cast(
            "IO[bytes]", _local.HashedFile(opened, size, sha, str(f.path))
        )
        async with pool.connections:
            result = await client.put_object(
                key,
                body,
                content_type=options.content_type or content_type_for(rel),
                cache_control=options.cache_control,
                progress=pool.byte_progress(rel, "upload", size),
                retry=pool.retry,
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
        pool.done(rel, "upload", size)

    return Job(rel, "upload", f.size, run)


def _remote_delete_job(pool: Pool, obj: RemoteObject) -> Job:
    rel = obj.relative_path

    async def run() -> None:
        if not pool.options.dry_run:
            # Gone already (someone else, or a retried DELETE): the goal is reached.
            with contextlib.suppress(ObjectNotFoundError):
                async with pool.connections:
                    await pool.client.delete_object(obj.path, retry=pool.retry)
            if pool.record is not None:
                pool.record.forget(rel)
        pool.report.deleted.append(rel)
        pool.emit(TransferEvent("delete", rel, "delete"))

    return Job(rel, "delete", 0, run)


async def run_upload(
    pool: Pool,
    root: Path,
    prefix: str,
    select: Selection,
    *,
    compare: bool,
    delete: bool,
    max_delete: int | None,
    record_folder: Path | None = None,
) -> None:
    """Upload ``root`` to ``prefix`` (``compare``: skip what the record says is there;
    ``delete``: then delete the objects the tree lacks; ``record_folder``: where sync
    records are kept, whose files are never uploaded, even through a link)."""
    if not await anyio.to_thread.run_sync(root.is_dir):
        raise NotADirectoryError(f"{root} is not a folder")
    unscanned: list[Unscanned] = []
    files = await local_index(
        root, select, follow_links=True, unscanned=unscanned, record_folder=record_folder
    )
    remote: dict[str, RemoteObject] = {}
    if compare or delete:
        remote, _ = await remote_index(pool.client, prefix, select, pool.retry)
    stale: list[str] = []
    if (
        delete and remote and not files and not unscanned
        and not await anyio.to_thread.run_sync(_local.holds_a_file, root, select.is_own)
    ):
        # An unmounted disk's mount point, or a mistyped folder that exists, is empty: no
        # evidence that the container should be emptied (as a download from a container
        # folder with no object).
        raise InvalidParameterError(
            f"{root} holds no file (is the folder right, is its disk mounted?); a sync "
            f"with delete from it would delete every object under {REMOTE_SCHEME}"
            f"{prefix}, so nothing was done (msd rm -r deletes a folder's objects)",
            rule="transfer.source-empty",
        )
    if delete:
        # A link to an unmounted disk is not a folder that was emptied: what it held is not
        # known, so its objects stay.
        missing = outside(set(remote) - set(files), (u.relative_path for u in unscanned))
        stale = check_deletions(missing, max_delete=max_delete, what="objects")
    for u in unscanned:
        if select.may_hold(u.relative_path):
            pool.fail(u.relative_path, "upload", u.error)
    limit = pool.client.standard_limit
    jobs: list[Job] = []
    for rel, f in sorted(files.items()):
        try:
            rules.normalize_object_path(_object_key(prefix, rel))  # never renamed: refused
            if f.size > limit:
                raise _too_large(rel, f.size, limit)
        except MediaStoreError as exc:
            pool.fail(rel, "upload", exc)
            continue
        jobs.append(_upload_job(pool, f, prefix, remote.get(rel), compare))
    if pool.options.fail_fast and pool.report.failed:
        return
    pool.plan(jobs)
    await pool.run(jobs)
    if stale and not pool.stopped:
        await pool.run([_remote_delete_job(pool, remote[rel]) for rel in stale])
