"""The body of a GetObject response as an async stream."""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import IO, TYPE_CHECKING

import anyio.to_thread

from .body import open_in_thread
from .errors import (
    ConnectionLostError,
    ObjectChangedError,
    ObjectNotFoundError,
    RangeNotSatisfiableError,
    ReadTimeout,
    TransportError,
)
from .protocol import parse_content_range, parse_length, parse_object_info
from .results import ObjectInfo

if TYPE_CHECKING:
    from .transport import Response  # imports aiohttp: only once a session sends

__all__ = ["ObjectStream"]

#: Reopen the object from a byte offset: returns the new response (206) for ``bytes=offset-end``.
Reopen = Callable[[int, int], Awaitable["Response"]]


class ObjectStream:
    """An object being downloaded: its metadata, and its body as an async iterator.

    ``async for chunk in stream`` yields bytes as they arrive (for an in-progress STREAMING
    object, as the uploader sends them). :meth:`read`, :meth:`iter_chunks` and
    :meth:`write_to` consume the same body; a body can be consumed once.

    If the connection breaks mid-body and the size of the object is known, the stream
    resumes with a ranged request from where it stopped (up to ``max_resumes`` times),
    provided the object's ETag is unchanged; otherwise (a new version, or none) it raises
    :class:`~msd_async.errors.ObjectChangedError`. An in-progress STREAMING object cannot be
    resumed (the service ignores ranges on it): a cut raises
    :class:`~msd_async.errors.ConnectionLostError` — the bytes seen are not the whole object.
    """

    def __init__(
        self, response: Response, *, reopen: Reopen | None = None, max_resumes: int = 0
    ) -> None:
        self._response = response
        self._reopen = reopen
        self._max_resumes = max_resumes
        self.resumes = 0
        headers = response.headers
        #: 200, or 206 for a ranged response.
        self.status = response.status
        # Parsed on first use: most downloads never look at Last-Modified, and parsing the
        # HTTP date was the costliest part of a GET's header handling (~3-8 us).
        self._headers = headers
        self._info: ObjectInfo | None = None
        self._length = parse_length(headers.get("Content-Length"))
        #: ``(first, last, total)`` of a 206 response, else ``None``.
        self.content_range = parse_content_range(headers.get("Content-Range"))
        self.request_id = headers.get("x-amzn-RequestId")
        self._received = 0
        self._closed = False

    # metadata shortcuts -------------------------------------------------------------------
    @property
    def info(self) -> ObjectInfo:
        """The object's metadata from the response headers."""
        info = self._info
        if info is None:
            info = self._info = parse_object_info(self._headers)
        return info

    @property
    def content_length(self) -> int | None:
        """Bytes in this response body; ``None`` for an in-progress STREAMING object."""
        return self._length

    @property
    def etag(self) -> str | None:
        return self.info.etag

    @property
    def content_type(self) -> str | None:
        return self.info.content_type

    @property
    def cache_control(self) -> str | None:
        return self.info.cache_control

    @property
    def last_modified(self) -> _dt.datetime | None:
        return self.info.last_modified

    @property
    def bytes_received(self) -> int:
        return self._received

    # body ---------------------------------------------------------------------------------
    def __aiter__(self) -> ObjectStream:
        return self

    async def __anext__(self) -> bytes:
        """The next chunk, as it arrives; ``StopAsyncIteration`` at the end of the body."""
        chunk = await self.receive()
        if not chunk:
            raise StopAsyncIteration
        return chunk

    async def receive(self) -> bytes:
        """The next chunk as it arrives, or ``b""`` at the end of the body.

        Raises :class:`~msd_async.errors.ConnectionLostError` if the body was cut short and
        could not be resumed, :class:`~msd_async.errors.ObjectChangedError` if a resume found
        a new version, :class:`~msd_async.errors.ReadTimeout` if the server went silent.
        """
        if self._closed:
            return b""
        while True:
            try:
                chunk = await self._response.read_some()
            except (ConnectionLostError, ReadTimeout) as exc:
                await self._resume(exc)
                continue
            if chunk:
                self._received += len(chunk)
                return chunk
            self._check_complete()
            self._closed = True
            self._response.release()
            return b""

    def _check_complete(self) -> None:
        expected = self.content_length
        if expected is not None and self._received != expected:
            self._closed = True
            self._response.close()
            raise ConnectionLostError(
                f"the object body ended after {self._received} of {expected} bytes"
            )

    async def _resume(self, cause: TransportError) -> None:
        expected = self.content_length
        if (
            self._reopen is None
            or self.resumes >= self._max_resumes
            or expected is None
            or self.etag is None
        ):
            self._closed = True
            self._response.close()
            raise cause
        self.resumes += 1
        self._response.close()
        first = self.content_range[0] if self.content_range else 0
        start = first + self._received
        end = first + expected - 1
        try:
            response = await self._reopen(start, end)
        except (ObjectNotFoundError, RangeNotSatisfiableError) as exc:
            # The ranged request found no object, or a shorter one: a new version (or none)
            # replaced the one being read. Say that, not "range not satisfiable".
            self._closed = True
            raise ObjectChangedError(
                f"the object was replaced or deleted while it was being downloaded (ETag "
                f"{self.etag}); {self._received} bytes of the old version were received",
                expected_etag=self.etag,
                actual_etag=None,
            ) from exc
        etag = parse_object_info(response.headers).etag
        if etag != self.etag:
            response.close()
            self._closed = True
            raise ObjectChangedError(
                f"the object changed while it was being downloaded (ETag {self.etag} became "
                f"{etag}); {self._received} bytes of the old version were received",
                expected_etag=self.etag,
                actual_etag=etag,
            ) from cause
        self._response = response

    async def read(self) -> bytes:
        """The whole (remaining) body."""
        # receive() directly, not `async for`: the iterator protocol's extra coroutine per
        # chunk cost ~8% of the client CPU of a 1 MiB ranged GET.
        parts: list[bytes] = []
        receive = self.receive
        while chunk := await receive():
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def iter_chunks(self, size: int) -> AsyncIterator[bytes]:
        """The body in chunks of exactly ``size`` bytes (the last may be shorter)."""
        if size <= 0:
            raise ValueError(f"chunk size must be positive, not {size}")
        pending = bytearray()
        async for chunk in self:
            pending += chunk
            while len(pending) >= size:
                yield bytes(pending[:size])
                del pending[:size]
        if pending:
            yield bytes(pending)

    async def write_to(self, destination: str | os.PathLike[str] | IO[bytes]) -> int:
        """Write the body to a file path (created or truncated) or a binary file; return the
        number of bytes written. A path is written in place: on failure it holds a prefix."""
        if isinstance(destination, (str, os.PathLike)):
            fileobj = await open_in_thread(destination, "wb")
            try:
                return await self._write_file(fileobj)
            finally:
                fileobj.close()
        return await self._write_file(destination)

    async def _write_file(self, fileobj: IO[bytes]) -> int:
        written = 0
        async for chunk in self:
            await anyio.to_thread.run_sync(fileobj.write, chunk)
            written += len(chunk)
        return written

    async def aclose(self) -> None:
        """Release the connection; an unread body is not drained: the connection is closed."""
        # get_object's context manager holds this stream and ``_reopen`` is its bound
        # method: a reference cycle that kept every response (headers, reader, buffers)
        # alive until the cyclic GC ran, ~15 us per 1 MiB GET. A closed stream never
        # resumes, so the reference can go.
        self._reopen = None
        if not self._closed:
            self._closed = True
            self._response.close()

    def __repr__(self) -> str:
        return (
            f"<ObjectStream status={self.status} length={self.content_length} "
            f"etag={self.etag!r} received={self._received}>"
        )
