"""The download direction: objects to a local folder, never a half file under a final name."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import anyio
import anyio.to_thread

from ..errors import (
    ChecksumMismatchError,
    InvalidParameterError,
    ObjectNotFoundError,
    ProtocolError,
)
from . import _local
from ._local import LocalFile
from .events import TransferEvent
from .names import temporary_owners
from .options import PART_SIZE, SMALL_FILE
from .parts import ClaimedParts, download_parts, is_local_error
from .plan import REMOTE_SCHEME, Selection, check_deletions, local_index, remote_index
from .pool import Job, Pool
from .record import RecordEntry
from .walk import RemoteObject

__all__ = ["run_download"]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_length(obj: RemoteObject, etag: str | None, got: int) -> None:
    """The same version (ETag) as listed must have the listed length: the stream checks a
    body against its own Content-Length only, and an origin (or a proxy) that cuts or pads
    a body and declares that length would otherwise be written and recorded as complete."""
    if etag is not None and etag == obj.etag and obj.size is not None and got != obj.size:
        raise ProtocolError(
            f"{obj.path} (ETag {etag}) was listed with {obj.size:,} bytes, but its GET "
            f"answered {got:,}; nothing was written (a proxy or cache in between may hold a "
            "damaged copy)",
            attempts=1,
        )


def _local_delete_job(pool: Pool, f: LocalFile, root: Path) -> Job:
    rel = f.relative_path

    async def run() -> None:
        if not pool.options.dry_run:

            def remove() -> None:
                with contextlib.suppress(FileNotFoundError):
                    f.path.unlink()
                _local.remove_empty_parents(f.path, root)

            await anyio.to_thread.run_sync(remove)
            if pool.record is not None:
                pool.record.forget(rel)
        pool.report.deleted.append(rel)
        pool.emit(TransferEvent("delete", rel, "delete"))

    return Job(rel, "delete", 0, run)


async def _hash_local(path: Path) -> str:
    """The SHA-256 of a local file: on the event loop when small (a hop to a thread costs
    more), else in a thread. Sized when opened, not by the scan: a file grown since would
    be hashed whole on the loop, stalling every other request."""
    with _local.open_regular(path) as f:
        if os.fstat(f.fileno()).st_size <= SMALL_FILE:
            return _local.hash_open(f)
        return await anyio.to_thread.run_sync(_local.hash_open, f)


def _download_job(pool: Pool, obj: RemoteObject, root: Path, existing: LocalFile | None) -> Job:
    rel = obj.relative_path
    final = root.joinpath(*rel.split("/"))
    size = obj.size or 0
    client, options = pool.client, pool.options

    async def run() -> None:
        record = pool.record
        local_sha: str | None = None
        if existing is not None:
            local_sha = await _hash_local(existing.path)
            entry = record.get(rel) if record is not None else None
            if entry is not None and entry.etag == obj.etag and entry.sha256 == local_sha:
                pool.skip(rel, "download", size)
                return
        if not options.keep_dirlinks:
            # A few lstats (one per folder of the path): cheaper than a hop to a thread.
            linked = _local.linked_folder_error(root, rel)
            if linked is not None:
                raise linked
        if final.is_dir():  # one stat: cheaper than a hop to a worker thread
            if final.is_symlink():
                # Not replaced, as a link to a file is: what it points to may be a tree.
                raise IsADirectoryError(
                    f"{final} is a symbolic link to a folder ({_local.link_target(final)});"
                    f" the object {obj.path} is not written there, and the link is left as "
                    "it was (remove it, or exclude the path)"
                )
            raise IsADirectoryError(
                f"{final} is a folder; the object {obj.path} cannot be written there"
            )
        if options.dry_run:
            pool.done(rel, "download", size)  # what would move: --dry-run counts it
            return
        pool.start(rel, "download", size)
        etag: str | None
        data: bytes | None = None
        held: ClaimedParts | None = None
        try:
            if obj.size is not None and obj.size > PART_SIZE:
                progress = pool.byte_progress(rel, "download", size)
                sha, etag, got, modified, held = await download_parts(
                    client, obj, final, pool.retry, progress, pool.connections
                )
            else:
                async with (
                    pool.connections,
                    client.get_object(obj.path, retry=pool.retry) as stream,
                ):
                    data = await stream.read()
                    etag, modified = stream.etag, stream.last_modified
                got = len(data)
                _check_length(obj, etag, got)
                sha = _sha256(data) if got <= SMALL_FILE else await anyio.to_thread.run_sync(
                    _sha256, data
                )
        except ObjectNotFoundError:
            # Listed, then deleted (a live window rotated it out): nothing to download (the
            # parts of a large one were removed with it).
            pool.vanished(rel, "download")
            return
        try:
            pool.report.bytes_transferred += got
            entry = record.get(rel) if record is not None else None
            if (
                entry is not None and etag is not None and entry.etag == etag
                and entry.sha256 != sha
            ):
                if held is not None:
                    held.discard()
                raise ChecksumMismatchError(
                    f"{obj.path} (ETag {etag}) was recorded with SHA-256 {entry.sha256} but "
                    f"downloaded as {sha}",
                    expected=entry.sha256,
                    actual=sha,
                )
            if local_sha is not None and local_sha == sha:
                # Compared by downloading (no record of this version): identical, keep it.
                if held is not None:
                    held.discard()
                pool.report.compared += 1
                mtime_ns = existing.mtime_ns if existing is not None else 0
                if record is not None and etag is not None:
                    record.set(rel, RecordEntry(got, mtime_ns, sha, etag))
                pool.skip(rel, "download", got)
                return
            # As `aws s3 sync` does: the file's modification time is the object's.
            mtime = modified.timestamp() if modified is not None else None
            if held is not None:
                mtime_ns = await anyio.to_thread.run_sync(held.finish, final, mtime)
            else:
                assert data is not None
                if got <= SMALL_FILE:
                    mtime_ns = _local.write_atomically(final, data, mtime)
                else:
                    mtime_ns = await anyio.to_thread.run_sync(
                        _local.write_atomically, final, data, mtime
                    )
            if record is not None and etag is not None:
                record.set(rel, RecordEntry(got, mtime_ns, sha, etag))
            pool.report.transferred.append(rel)
            pool.emit(TransferEvent("done", rel, "download", size=got, done=got))
        finally:
            if held is not None:
                held.close()  # renamed or discarded above, else let go of here

    return Job(rel, "download", size, run)


def _not_behind_other_links(root: Path, paths: set[str], remote: Iterable[str]) -> set[str]:
    """``paths`` minus those under a linked folder (see
    :func:`~msd_async.transfer._local.linked_folder`) that holds no object of the source,
    as rsync's ``--keep-dirlinks`` keeps a link as a folder only where the sender has that
    folder. Another such link (``/srv/site/big -> /mnt/disk``) is not the source's folder,
    and deleting "what the source lacks" there would empty the disk it points to."""
    folders = {rel.rsplit("/", 1)[0] for rel in remote if "/" in rel}
    held: set[str] = set()
    for folder in folders:  # each folder's parents hold an object too
        while folder and folder not in held:
            held.add(folder)
            folder = folder.rpartition("/")[0]
    kept: set[str] = set()
    for path in paths:
        linked = _local.linked_folder(root, path)
        if linked is None or linked in held:
            kept.add(path)
    return kept


def _leftovers(
    root: Path, select: Selection, remote: Iterable[str], keep: set[str]
) -> list[tuple[Path, Path]]:
    """Temporary downloads and part states under ``root`` of this run's paths (``select``:
    another shard's worker may be writing its own, or keep them to resume) except those
    in ``keep`` (whose download may still resume); ``remote`` are the selected objects.
    Each as ``(its download's file, the file)``: the first is locked while a download
    runs (:func:`~msd_async.transfer._local.claim`), and then the file is not removed."""
    found: list[tuple[Path, Path]] = []
    # The resumable download's file of each object of this run whose name is shortened
    # there: its owner cannot be read back from it.
    known = {
        _local.temporary_path(root.joinpath(*rel.split("/"))): rel
        for rel in remote if _local.is_shortened(rel.rpartition("/")[2])
    }
    for f in _local.scan(root):
        folder, _, name = f.relative_path.rpartition("/")
        # Only the names a download writes (owned by NAME): a user's own notes.msdpart is
        # kept out of transfers, but it is not ours to delete.
        readings, cut = temporary_owners(name)
        if not readings:
            continue
        tmp = f.path.with_name(name.removesuffix(".json.tmp").removesuffix(".json"))
        owner = known.get(tmp)
        if owner is not None:
            owners = [owner]
        elif cut and not select.takes_everything:
            continue  # the start of a longer NAME, maybe another shard's: whose is unknown
        else:
            owners = [f"{folder}/{o}" if folder else o for o in readings]
        # A name that reads as either of two paths is the run's only when both are.
        if all(select(o) and o not in keep for o in owners):
            found.append((tmp, f.path))
    return found


async def run_download(
    pool: Pool,
    prefix: str,
    root: Path,
    select: Selection,
    *,
    compare: bool,
    delete: bool,
    max_delete: int | None,
    record_folder: Path | None = None,
) -> None:
    """Download ``prefix`` into ``root`` (``compare``: skip or compare what is there;
    ``delete``: then delete the files the folder lacks, and leftover partial downloads).
    ``record_folder``: see :func:`~msd_async.transfer.plan.local_index` (its record files
    are left out of the scan however a followed link reaches them)."""
    if await anyio.to_thread.run_sync(lambda: root.exists() and not root.is_dir()):
        raise NotADirectoryError(f"{root} exists and is not a folder")
    remote, any_object = await remote_index(pool.client, prefix, select, pool.retry)
    if delete and not any_object:
        # A typo in ms:PATH lists as empty; deleting "what the source lacks" would then
        # delete the whole tree.
        raise InvalidParameterError(
            f"{REMOTE_SCHEME}{prefix} holds no object (is the folder name right?); a sync "
            "with delete from it would delete every local file, so nothing was done",
            rule="transfer.source-missing",
        )
    keep_dirlinks = pool.options.keep_dirlinks
    local: dict[str, LocalFile] = {}
    if compare or delete:
        # Written through, the files under a linked folder are compared there too: else
        # each run downloads them all again.
        local = await local_index(
            root, select, follow_links=keep_dirlinks,
            record_folder=record_folder if keep_dirlinks else None,
        )
    stale: list[str] = []
    if delete:
        missing = set(local) - set(remote)
        if keep_dirlinks:
            missing = await anyio.to_thread.run_sync(_not_behind_other_links, root, missing, remote)
        stale = check_deletions(missing, max_delete=max_delete, what="files")
    jobs = [
        _download_job(pool, obj, root, local.get(rel) if compare else None)
        for rel, obj in sorted(remote.items())
    ]
    pool.plan(jobs)
    await pool.run(jobs)
    if delete and not pool.stopped:
        await pool.run([_local_delete_job(pool, local[rel], root) for rel in stale])
        if not pool.options.dry_run:
            # Partial downloads whose object is gone, or failed for a reason another try
            # cannot fix, would stay forever: only a resumable failure keeps its parts.
            keep = {
                f.path for f in pool.report.failed
                if f.action == "download" and not is_local_error(f.error)
            }
            for owner, path in await anyio.to_thread.run_sync(
                _leftovers, root, select, remote, keep
            ):
                # Not while a download holds it: an overlapping run into this folder, or a
                # `msd get`, is writing it.
                await anyio.to_thread.run_sync(_local.remove_unless_in_use, owner, path)
