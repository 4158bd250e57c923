"""upload_tree, download_tree and sync: many files, bounded concurrency, every file verified.

Each public function checks its :class:`~msd_async.transfer.options.TransferOptions`, opens
the sync record, plans (:mod:`~msd_async.transfer.plan`) and runs the transfers from the
worker pool (:mod:`~msd_async.transfer.pool`): the upload direction in
:mod:`~msd_async.transfer.upload`, the download direction in
:mod:`~msd_async.transfer.download` (large objects in ranged parts,
:mod:`~msd_async.transfer.parts`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from .. import rules
from ..config import check_plain_callback, is_whole_number
from ..errors import InvalidParameterError
from .download import run_download
from .events import HookError, ProgressHook, TransferReport
from .names import OwnNames
from .options import TransferOptions
from .plan import Selection, parse_location
from .pool import Pool
from .record import SyncRecord, default_record_dir
from .upload import run_upload

if TYPE_CHECKING:
    from ..client import ContainerClient

__all__ = ["download_tree", "sync", "upload_tree"]

_DEFAULT = TransferOptions()


async def _run(
    client: ContainerClient,
    direction: str,
    root: Path,
    prefix: str,
    options: TransferOptions,
    *,
    compare: bool,
    delete: bool,
    max_delete: int | None,
    progress: ProgressHook | None,
    stop: anyio.Event | None,
) -> TransferReport:
    if not isinstance(options, TransferOptions):
        raise InvalidParameterError(
            f"options must be a TransferOptions, not {options!r}", rule="transfer.options"
        )
    shard, path_filter = options.check()
    if progress is not None:
        check_plain_callback(progress, "progress", rule="transfer.progress")
    if max_delete is not None and not is_whole_number(max_delete):
        # nan compared False with every count: it never stopped a deletion.
        raise InvalidParameterError(
            f"max_delete must be a whole number, 0 or more, or None, not {max_delete!r}",
            rule="transfer.max-delete",
        )
    if stop is not None and not callable(getattr(stop, "is_set", None)):
        raise InvalidParameterError(
            f"stop must be an anyio.Event (or asyncio.Event) or None, not {stop!r}",
            rule="transfer.stop",
        )
    record_dir = Path(options.record_dir) if options.record_dir is not None else None
    record: SyncRecord | None = None
    if options.record:
        record = SyncRecord(root, client.endpoint, prefix, shard, record_dir)
        await anyio.to_thread.run_sync(record.load)
    record_folder = record_dir if record_dir else default_record_dir()
    select = Selection(shard, path_filter, OwnNames(root, record_folder))
    report = TransferReport("upload" if direction == "upload" else "download",
                            dry_run=options.dry_run)
    pool = Pool(client, report, options, progress=progress, record=record, stop=stop)
    try:
        if direction == "upload":
            await run_upload(
                pool, root, prefix, select, compare=compare, delete=delete,
                max_delete=max_delete, record_folder=record_folder,
            )
        else:
            await run_download(
                pool, prefix, root, select, compare=compare, delete=delete,
                max_delete=max_delete, record_folder=record_folder,
            )
    except HookError as exc:
        raise exc.error from None
    finally:
        if record is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(record.close)
            if record.error is not None:
                report.warnings.append(
                    f"the sync record could not be written in {record.directory} "
                    f"({record.error.strerror or record.error}); the next sync will compare "
                    "everything again (choose another folder with record_dir / --record-dir)"
                )
    report.interrupted = stop is not None and stop.is_set()
    return report


async def upload_tree(
    client: ContainerClient,
    local_root: str | os.PathLike[str],
    prefix: str = "",
    options: TransferOptions = _DEFAULT,
    *,
    progress: ProgressHook | None = None,
    stop: anyio.Event | None = None,
) -> TransferReport:
    """Upload every file under ``local_root`` to the folder ``prefix``, whatever is there.

    Each file becomes ``prefix/relative/path`` (STANDARD availability); its Content-Type is
    ``options.content_type`` or, by default, the one :func:`~msd_async.content_type_for`
    gives for its name. Every upload is verified: the SHA-256 the service stored must equal
    the file's.

    Files are never renamed: a name the API cannot store (characters outside ``A-Za-z0-9 .
    - _ ~ = :``, more than 10 folders, over 900 characters) and a file over the object limit
    (25 MB) are reported in :attr:`TransferReport.failed` before anything is sent, while the
    others are uploaded. Symbolic links to files and folders are followed (never back
    into a folder above them); a link whose target is missing, a link loop or an
    unreadable folder is reported as a failed path, and a ``sync`` with ``delete`` deletes
    nothing at or under it. A file deleted between the scan and its upload (a packager's
    window rotating, an overlapping sync) is reported in :attr:`TransferReport.vanished`,
    not as a failure. ``options`` (:class:`TransferOptions`) sets the concurrency,
    filters, shard, dry run, record, retries and headers. ``progress`` gets
    :class:`TransferEvent` objects. Setting ``stop`` stops scheduling files: those in flight
    finish, the report says ``interrupted``.

    Raises :class:`NotADirectoryError` if ``local_root`` is not a folder,
    :class:`~msd_async.errors.InvalidPathError` for an invalid ``prefix``,
    :class:`~msd_async.errors.InvalidParameterError` for bad options, and the error of a
    listing that failed; per-file errors are in the report, not raised.
    """
    return await _run(
        client, "upload", Path(local_root), rules.normalize_folder_path(prefix), options,
        compare=False, delete=False, max_delete=None, progress=progress, stop=stop,
    )


async def download_tree(
    client: ContainerClient,
    prefix: str,
    local_root: str | os.PathLike[str],
    options: TransferOptions = _DEFAULT,
    *,
    progress: ProgressHook | None = None,
    stop: anyio.Event | None = None,
) -> TransferReport:
    """Download every object under the folder ``prefix`` into ``local_root``, replacing
    what is there.

    Each object is written under a temporary name (``.NAME.msdpart`` next to it) and renamed
    when complete, so no half file ever has the final name; the file's modification time is
    the object's LastModified. Objects over 8 MiB download in ranged parts, 4 at a time; a
    part that a failed attempt completed is not fetched again (the next attempt, or the next
    run, resumes from the temporary file while the object's ETag is unchanged). An object
    deleted between the listing and its download is reported in
    :attr:`TransferReport.vanished`, not as a failure. An object under a folder of the
    tree that is a symbolic link is not written through it: it is a failure
    (:class:`NotADirectoryError` naming the link), unless ``options.keep_dirlinks``.
    Other arguments as :func:`upload_tree`.

    Raises :class:`NotADirectoryError` if ``local_root`` exists and is not a folder, and the
    error of a listing that failed; per-object errors are in the report.
    """
    return await _run(
        client, "download", Path(local_root), rules.normalize_folder_path(prefix), options,
        compare=False, delete=False, max_delete=None, progress=progress, stop=stop,
    )


async def sync(
    client: ContainerClient,
    source: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    options: TransferOptions = _DEFAULT,
    *,
    delete: bool = False,
    max_delete: int | None = None,
    progress: ProgressHook | None = None,
    stop: anyio.Event | None = None,
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
    this shard and the filters), and, downloading, leftover partial downloads. It is refused
    (:class:`~msd_async.errors.InvalidParameterError`, nothing done) when the source
    container folder holds no object, and when more than ``max_delete`` paths would be
    deleted. Other arguments as :func:`upload_tree`.

    Raises :class:`~msd_async.errors.InvalidParameterError` unless exactly one side is
    remote; otherwise as :func:`upload_tree` and :func:`download_tree`.
    """
    src, dst = parse_location(source), parse_location(destination)
    if src[0] == "local" and dst[0] == "remote":
        return await _run(
            client, "upload", src[1], dst[1], options, compare=True, delete=delete,
            max_delete=max_delete, progress=progress, stop=stop,
        )
    if src[0] == "remote" and dst[0] == "local":
        return await _run(
            client, "download", dst[1], src[1], options, compare=True, delete=delete,
            max_delete=max_delete, progress=progress, stop=stop,
        )
    raise InvalidParameterError(
        f"sync needs one local folder and one container folder written ms:FOLDER; got "
        f"{os.fspath(source)!r} and {os.fspath(destination)!r}",
        rule="transfer.locations",
    )
