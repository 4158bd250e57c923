"""Ranged part downloads of large objects, resumable from their state on disk.

An object over :data:`~msd_async.transfer.options.PART_SIZE` is fetched in ranged parts,
:data:`~msd_async.transfer.options.PART_CONCURRENCY` at a time, into its temporary file
``.NAME.msdpart`` (full length from the start, each part written at its offset). After each
part is written and fsynced, ``.NAME.msdpart.json`` lists the parts done, with the object's
ETag and size. A later attempt, or a later run, keeps those parts only while the object has
the same ETag and size, and fetches the rest.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread

from ..errors import (
    ConnectionLostError,
    MediaStoreError,
    ObjectChangedError,
    ObjectNotFoundError,
    ProtocolError,
)
from ..retry import RetryPolicy
from . import _local
from .events import first_error
from .options import PART_CONCURRENCY, PART_SIZE
from .walk import RemoteObject

if TYPE_CHECKING:
    import datetime as _dt

    from ..client import ContainerClient

__all__ = [
    "ClaimedParts", "discard", "download_parts", "finish_parts", "is_local_error", "state_path",
]


def is_local_error(exc: BaseException) -> bool:
    """Whether a download failed on the local side (the disk, the folder): another try
    does not help, and its parts are not kept. A timeout of the network is an ``OSError``
    too (:class:`~msd_async.errors.MediaStoreTimeout` is a ``TimeoutError``), but
    transient: its parts are resumed by the next try. So is ``EBUSY``, the parts file held
    by another run (:func:`~msd_async.transfer._local.claim`): they are that run's to
    resume, not a sweep's to remove once it lets go."""
    return (
        isinstance(exc, OSError) and not isinstance(exc, MediaStoreError)
        and exc.errno != errno.EBUSY
    )


def state_path(tmp: Path) -> Path:
    return tmp.with_name(tmp.name + ".json")


def discard(tmp: Path | None) -> None:
    """Remove a temporary download and its part state, if there."""
    if tmp is None:
        return
    for path in (tmp, state_path(tmp), state_path(tmp).with_name(state_path(tmp).name + ".tmp")):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def finish_parts(tmp: Path, final: Path, mtime: float | None) -> int:
    """Give the completed file its final name (and mtime); returns its mtime in ns."""
    if mtime is not None:
        os.utime(tmp, (mtime, mtime))
    os.replace(tmp, final)
    with contextlib.suppress(FileNotFoundError):
        state_path(tmp).unlink()
    return final.stat().st_mtime_ns


def _open_parts(tmp: Path, etag: str, size: int) -> tuple[int, set[int]]:
    """Claim (:func:`~msd_async.transfer._local.claim`) and open, or resume, the temporary
    file of a ranged download: ``(fd, parts done)``. ``OSError(EBUSY)`` when another run
    is downloading it.

    A previous attempt's parts are kept only if it was downloading the same version (ETag
    and size) and its file has the full length."""
    fd = _local.in_folder(tmp.parent, lambda: _local.claim(tmp))
    try:
        # Read once the file is ours: the state is then that of the file held.
        state = state_path(tmp)
        done: set[int] = set()
        try:
            saved = json.loads(_read_state(state))
            if (
                saved.get("etag") == etag and saved.get("size") == size
                and os.fstat(fd).st_size == size
            ):
                done = {int(i) for i in saved.get("parts", [])}
        except (OSError, ValueError, TypeError, AttributeError):
            done = set()
        if not done:
            with contextlib.suppress(FileNotFoundError):
                state.unlink()  # it describes other bytes than those about to be written
            os.ftruncate(fd, 0)  # what an earlier version left is not kept as holes' content
            os.ftruncate(fd, size)
    except BaseException:
        # A disk that cannot take the object (EFBIG, a quota): neither the descriptor nor
        # a file of ours is left behind.
        try:
            discard(tmp)
        finally:
            # Even when the removal fails: the descriptor holds the download's lock.
            os.close(fd)
        raise
    return fd, done


#: Far more than the state of any object's parts (a 100 GB one's lists 12,800 numbers).
_STATE_LIMIT = 1024 * 1024


def _read_state(state: Path) -> str:
    """The part state's text. Without waiting or following a link, and only from a
    regular file of a sane size: a FIFO at the name (planted in a folder others can write
    to) waited for a writer forever in a thread no cancellation ends, and a link to
    ``/dev/zero`` read until memory ran out. And only this user's: the parts it names
    are not fetched again, so another user's (the ETag and size are public) had missing
    parts stored as zeros. Anything else raises an ``OSError`` (no state: the download
    starts afresh and replaces it)."""
    fd = os.open(state, os.O_RDONLY | os.O_NONBLOCK | _local.NO_FOLLOW)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > _STATE_LIMIT or not (
            _local.is_own_file(st)
        ):
            raise OSError(errno.EINVAL, "not a part state", str(state))
        return os.read(fd, _STATE_LIMIT).decode("utf-8")
    finally:
        os.close(fd)


class ClaimedParts:
    """A ranged download's completed temporary file, still held (its lock): give it its
    final name with :meth:`finish`, or :meth:`discard` it; each lets go of it after, and
    :meth:`close` (idempotent) on any other way out. Held until then, no overlapping run
    can start it afresh, nor a sweep remove it, between its hash and its rename."""

    __slots__ = ("fd", "tmp")

    def __init__(self, tmp: Path, fd: int) -> None:
        self.tmp = tmp
        self.fd = fd

    def finish(self, final: Path, mtime: float | None) -> int:
        try:
            return finish_parts(self.tmp, final, mtime)
        finally:
            self.close()

    def discard(self) -> None:
        try:
            discard(self.tmp)
        finally:
            self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


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

    def write(self, index: int, offset: int, data: bytes) -> None:
        """Write part ``index`` at ``offset``, then record it."""
        view = memoryview(data)
        while view:
            written = os.pwrite(self.fd, view, offset)
            view = view[written:]
            offset += written
        os.fsync(self.fd)  # the state file must not claim a part the disk does not hold
        with self.lock:
            self.done.add(index)
            tmp = self.state.with_name(self.state.name + ".tmp")
            with _local.open_fresh(tmp) as f:
                f.write(json.dumps(
                    {"etag": self.etag, "size": self.size, "parts": sorted(self.done)}
                ).encode())
            os.replace(tmp, self.state)


async def download_parts(
    client: ContainerClient,
    obj: RemoteObject,
    final: Path,
    retry: RetryPolicy,
    progress: Callable[[int], None] | None,
    connections: anyio.CapacityLimiter,
) -> tuple[str, str, int, _dt.datetime | None, ClaimedParts]:
    """Download a large object in ranged parts into its temporary file; resume the parts a
    previous attempt completed. Returns ``(sha256, etag, size, last_modified, held)``; the
    file is not renamed: ``held`` does that, or discards it. Raises
    :class:`~msd_async.errors.ObjectNotFoundError` if the object is gone (its parts, if
    no other run holds them, are removed). Each request holds one of ``connections`` (the
    transfer's, see :class:`~msd_async.transfer.pool.Pool`)."""
    tmp = _local.temporary_path(final)
    try:
        async with connections:
            info = await client.describe_object(obj.path, retry=retry)
    except ObjectNotFoundError:
        # Listed, then deleted (a live window rotated it out): the parts of an earlier
        # try are worth nothing, unless another run is downloading them.
        await anyio.to_thread.run_sync(
            _local.remove_unless_in_use, tmp, tmp, state_path(tmp),
            state_path(tmp).with_name(state_path(tmp).name + ".tmp"),
        )
        raise
    etag, size = info.etag, info.content_length
    if etag is None or size is None:
        raise ObjectChangedError(
            f"{obj.path} has no ETag or length (a STREAMING upload in progress?)",
            expected_etag=obj.etag,
            actual_etag=etag,
        )
    # Shielded: a cancellation delivered once the thread is done would drop the claimed
    # descriptor, and its lock with it would stay held for the process's life.
    with anyio.CancelScope(shield=True):
        fd, done = await anyio.to_thread.run_sync(_open_parts, tmp, etag, size)
    parts = _PartState(fd, state_path(tmp), etag, size, done)
    count = (size + PART_SIZE - 1) // PART_SIZE
    limiter = anyio.CapacityLimiter(PART_CONCURRENCY)
    # Bytes of this object received so far, parts done by an earlier attempt included.
    moved = [sum(min(size, (i + 1) * PART_SIZE) - i * PART_SIZE for i in done)]

    async def part(index: int) -> None:
        first = index * PART_SIZE
        last = min(size, first + PART_SIZE) - 1
        async with limiter:
            async with (
                connections,
                client.get_object(obj.path, range=(first, last), retry=retry) as s,
            ):
                if s.etag != etag:
                    raise ObjectChangedError(
                        f"{obj.path} changed during the download (ETag {etag} became {s.etag})",
                        expected_etag=etag,
                        actual_etag=s.etag,
                    )
                if s.object_size != size:
                    raise ProtocolError(
                        f"{obj.path} (ETag {etag}) was described with {size:,} bytes, but "
                        f"part {index}'s answer says {s.object_size}; nothing was written "
                        "under its name (a proxy or cache in between may hold another copy)",
                        attempts=1,
                    )
                if progress is None and not s.range_ignored:
                    data = await s.read()
                else:
                    # Bytes are counted as they arrive, not a part (8 MiB) at a time. A
                    # proxy that ignores Range answers with the whole object: the part is
                    # cut out of it (reading stops at the part's last byte).
                    chunks = []
                    async for chunk in s.iter_range():
                        chunks.append(chunk)
                        if progress is not None:
                            moved[0] += len(chunk)
                            progress(min(size, moved[0]))
                    data = b"".join(chunks)
            if len(data) != last - first + 1:
                raise ConnectionLostError(
                    f"part {index} of {obj.path}: {len(data)} bytes instead of "
                    f"{last - first + 1}"
                )
            await anyio.to_thread.run_sync(parts.write, index, first, data)

    held = ClaimedParts(tmp, fd)
    try:
        try:
            async with anyio.create_task_group() as tg:
                for index in range(count):
                    if index not in done:
                        tg.start_soon(part, index)
        except ExceptionGroup as group:
            raise first_error(group) from None
        sha = await anyio.to_thread.run_sync(_local.hash_file, tmp)
    except (ObjectChangedError, ObjectNotFoundError):
        held.discard()  # another version, or none: its parts are worth nothing
        raise
    except OSError as exc:
        if is_local_error(exc):
            # The local disk refused a write (ENOSPC, EIO, EFBIG): the parts it holds take
            # the space that is missing, and after EIO they may not be what was written.
            # A disk that also refuses the removal must not hide why the download failed.
            with contextlib.suppress(OSError):
                await anyio.to_thread.run_sync(held.discard)
        held.close()
        raise
    except BaseException:
        held.close()
        raise
    return sha, etag, size, info.last_modified, held
