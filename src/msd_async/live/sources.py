"""Body sources for the publisher: a file still being written by an encoder.

Encoders hand segments over by writing a file and closing it, often under a temporary name
renamed when complete (ffmpeg's ``-hls_flags temp_file``). :func:`follow_file` streams such a
file as it grows, so the upload starts with the first bytes instead of after the last.
"""

from __future__ import annotations

import errno
import os
from collections.abc import AsyncIterator, Callable
from typing import Final

import anyio

from ..errors import ClientValidationError, InvalidParameterError

__all__ = ["DEFAULT_IDLE_TIMEOUT", "SourceChangedError", "follow_file"]

#: Seconds a file with no writer must keep its size before it is taken as complete.
DEFAULT_IDLE_TIMEOUT: Final = 2.0
_CHUNK: Final = 256 * 1024
_TEMP_SUFFIXES: Final = (".tmp", ".part", ".partial")


class SourceChangedError(ClientValidationError):
    """The file behind a streamed body changed in a way no append explains (it shrank): the
    bytes already sent are not its content any more, so the object fails."""


async def follow_file(
    path: str | os.PathLike[str],
    *,
    done: Callable[[], bool] | None = None,
    final: str | os.PathLike[str] | None = None,
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    poll_interval: float = 0.01,
    chunk_size: int = _CHUNK,
) -> AsyncIterator[bytes]:
    """Yield the bytes of ``path`` as a writer appends them, until the writer is finished.

    The writer is finished when, with no new bytes there:

    - ``done()`` returns true (pass one when you know, e.g. from a close event); or
    - the file was renamed or removed and no process has it open for writing (a
      ``temp_file`` encoder renames on close); or
    - no process has it open for writing and its size has not changed for ``idle_timeout``
      seconds (default 2).

    A writer that keeps the file open is never taken to be finished however long it pauses
    (the publisher gives a stalled body up at its media deadline instead). Whether a process
    has the file open for writing is asked of the kernel with a read lease (Linux,
    ``fcntl(F_SETLEASE)``, for files the caller owns); where that cannot be asked, a size
    stable for ``idle_timeout`` is taken as finished.

    If ``path`` is gone when the source starts, its ``final`` name (default: ``path``
    without a ``.tmp`` / ``.part`` / ``.partial`` suffix) is read instead: the writer
    finished and renamed it already. Raises :class:`FileNotFoundError` if neither exists,
    :class:`SourceChangedError` if the file shrinks (rewritten in place: the bytes sent are
    not its content), :class:`InvalidParameterError` for a timeout or interval that is not
    positive. The file is checked every ``poll_interval`` seconds (default 10 ms) while it
    does not grow.
    """
    if not idle_timeout > 0 or not poll_interval > 0 or chunk_size < 1:
        raise InvalidParameterError(
            "idle_timeout and poll_interval must be above 0 s and chunk_size at least 1",
            rule="live.follow-file",
        )
    name = os.fspath(path)
    try:
        fileobj = await anyio.open_file(name, "rb")
    except FileNotFoundError:
        target = _final_name(name, final)
        if target is None:
            raise
        # Renamed before we got to it: the writer finished, the final name has it all.
        fileobj = await anyio.open_file(target, "rb")
        name = target
    try:
        fd = fileobj.wrapped.fileno()
        identity = os.fstat(fd)
        sent = 0
        size_seen = identity.st_size
        stable_since = anyio.current_time()
        while True:
            chunk = await fileobj.read(chunk_size)
            if chunk:
                sent += len(chunk)
                stable_since = anyio.current_time()
                yield chunk
                continue
            size = os.fstat(fd).st_size
            if size < sent:
                raise SourceChangedError(
                    f"{name} shrank from {sent:,} to {size:,} bytes while it was being "
                    "sent; the object is given up rather than stored with the wrong bytes",
                    rule="live.follow-file",
                )
            now = anyio.current_time()
            if size != size_seen:
                size_seen, stable_since = size, now
            if done is not None and done():
                finished = True
            else:
                writer = _has_writer(fd)
                if _moved(name, identity):
                    finished = writer is not True
                else:
                    finished = writer is not True and now - stable_since >= idle_timeout
            if finished:
                while chunk := await fileobj.read(chunk_size):
                    yield chunk
                break
            await anyio.sleep(poll_interval)
    finally:
        with anyio.CancelScope(shield=True):
            await fileobj.aclose()


def _final_name(name: str, final: str | os.PathLike[str] | None) -> str | None:
    if final is not None:
        return os.fspath(final)
    for suffix in _TEMP_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def _has_writer(fd: int) -> bool | None:
    """Whether any process has the file open for writing (``None``: cannot tell here).

    A read lease is refused with EAGAIN exactly when the file is open for writing
    (fcntl(2), "Leases"); taken, it is released at once, before any writer could wait on it.
    """
    try:
        import fcntl
    except ImportError:
        return None
    setlease = getattr(fcntl, "F_SETLEASE", None)
    if setlease is None:
        return None
    try:
        fcntl.fcntl(fd, setlease, fcntl.F_RDLCK)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
            return True
        return None  # not our file (EACCES), leases off, a file system without them
    fcntl.fcntl(fd, setlease, fcntl.F_UNLCK)
    return False


def _moved(name: str, identity: os.stat_result) -> bool:
    try:
        now = os.stat(name)
    except FileNotFoundError:
        return True
    return (now.st_ino, now.st_dev) != (identity.st_ino, identity.st_dev)
