"""Body sources for the publisher: a file still being written by an encoder.

Encoders hand segments over by writing a file and closing it, often under a temporary name
renamed when complete (ffmpeg's ``-hls_flags temp_file``). :func:`follow_file` streams such a
file as it grows, so the upload starts with the first bytes instead of after the last.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from typing import Final

import anyio

from ..errors import InvalidParameterError

__all__ = ["DEFAULT_IDLE_TIMEOUT", "follow_file"]

#: Seconds without growth after which the writer is taken to be done.
DEFAULT_IDLE_TIMEOUT: Final = 2.0
_CHUNK: Final = 256 * 1024


async def follow_file(
    path: str | os.PathLike[str],
    *,
    done: Callable[[], bool] | None = None,
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    poll_interval: float = 0.01,
    chunk_size: int = _CHUNK,
) -> AsyncIterator[bytes]:
    """Yield the bytes of ``path`` as a writer appends them, until the writer is done.

    The writer is done when any of these holds, checked whenever no new bytes are there:
    ``done()`` returns true (pass one when you know, e.g. from a rename or close event);
    the file was renamed or removed (the open file then is read to its end; this is how
    ``temp_file`` encoders finish a segment); or it has not grown for ``idle_timeout``
    seconds (default 2). The file is checked every ``poll_interval`` seconds (default
    10 ms) while it does not grow. Raises :class:`FileNotFoundError` if it does not
    exist, :class:`InvalidParameterError` for a timeout or interval that is not positive.
    """
    if not idle_timeout > 0 or not poll_interval > 0 or chunk_size < 1:
        raise InvalidParameterError(
            "idle_timeout and poll_interval must be above 0 s and chunk_size at least 1",
            rule="live.follow-file",
        )
    name = os.fspath(path)
    fileobj = await anyio.open_file(name, "rb")
    try:
        identity = os.fstat(fileobj.wrapped.fileno())
        idle_since = anyio.current_time()
        while True:
            chunk = await fileobj.read(chunk_size)
            if chunk:
                idle_since = anyio.current_time()
                yield chunk
                continue
            if (done is not None and done()) or _moved(name, identity):
                # Done, renamed or removed: the writer closed it (a temp_file encoder
                # renames on close); what it wrote before that is all there is.
                while chunk := await fileobj.read(chunk_size):
                    yield chunk
                break
            if anyio.current_time() - idle_since >= idle_timeout:
                break
            await anyio.sleep(poll_interval)
    finally:
        with anyio.CancelScope(shield=True):
            await fileobj.aclose()


def _moved(name: str, identity: os.stat_result) -> bool:
    try:
        now = os.stat(name)
    except FileNotFoundError:
        return True
    return (now.st_ino, now.st_dev) != (identity.st_ino, identity.st_dev)
