"""The body of a GetObject response as an async stream."""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import IO, TYPE_CHECKING, NoReturn

import anyio.to_thread

from .body import open_in_thread
from .errors import (
    ConcurrentReadError,
    ConnectionLostError,
    InvalidParameterError,
    MediaStoreError,
    ObjectChangedError,
    ObjectNotFoundError,
    ProtocolError,
    RangeNotSatisfiableError,
    ReadTimeout,
    StreamClosedError,
    TransportError,
)
from .protocol import parse_content_range, parse_length, parse_object_info
from .results import ObjectInfo
from .rules import parse_range_header

if TYPE_CHECKING:
    from .transport import Response  # imports aiohttp: only once a session sends

__all__ = ["ObjectStream", "iter_window"]

#: Reopen the object from a byte offset: returns the new response (206) for
#: ``bytes=offset-end``, and the attempts it took.
Reopen = Callable[[int, int], Awaitable[tuple["Response", int]]]


class ObjectStream:
    """An object being downloaded: its metadata, and its body as an async iterator.

    ``async for chunk in stream`` yields bytes as they arrive (for an in-progress STREAMING
    object, as the uploader sends them). :meth:`read`, :meth:`iter_chunks` and
    :meth:`write_to` consume the same body; a body can be consumed once. After the
    ``async with`` block (or :meth:`aclose`) every read raises
    :class:`~msd_async.errors.StreamClosedError`. A read cancelled while it waits (a
    caller's ``asyncio.wait_for``) loses no byte: the next read goes on from there, except
    after a cancelled resume, when every later read raises
    :class:`~msd_async.errors.ConnectionLostError`.

    Two sizes, not to be confused: :attr:`content_length` is the number of bytes in *this
    response* (the range asked for, or the whole object), :attr:`object_size` the size of
    the *whole object* (the total of ``Content-Range``, or the length of a 200).

    The stream never delivers a byte the response did not promise: a body that runs past
    its declared length raises :class:`~msd_async.errors.ProtocolError` before the extra
    bytes are yielded.

    If the connection breaks mid-body and the size of the object is known, the stream
    resumes with a ranged request from where it stopped (up to ``max_resumes`` times). A
    resumed answer is accepted only if it carries the same ETag (else
    :class:`~msd_async.errors.ObjectChangedError`), is a 206 whose ``Content-Range`` starts
    at the requested offset and ends where asked (else
    :class:`~msd_async.errors.ProtocolError`: a proxy that ignores ``Range`` would otherwise
    make the stream deliver duplicated bytes) and has the same total length (else
    ``ObjectChangedError``); it is checked before any of its bytes is delivered. An
    in-progress STREAMING object cannot be resumed (the service ignores ranges on it): a
    cut raises :class:`~msd_async.errors.ConnectionLostError`: the bytes seen are not the
    whole object.
    """

    def __init__(
        self,
        response: Response,
        *,
        reopen: Reopen | None = None,
        max_resumes: int = 0,
        requested: str | None = None,
        attempts: int = 1,
    ) -> None:
        #: HTTP attempts this download has made: its request's (``attempts``, retries
        #: included) and every resume's. What an error raised reading it says.
        self._attempts = attempts
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
        #: ``(first, last, total)`` of a 206 response, else ``None``.
        self.content_range = parse_content_range(headers.get("Content-Range"))
        self.request_id = headers.get("x-amzn-RequestId")
        self._received = 0
        self._closed = False
        #: Set by aclose(): reading afterwards is a bug in the caller, not an empty body.
        self._released = False
        #: Why the body ended early: raised again by every later read.
        self._failure: MediaStoreError | None = None
        #: A receive() is in progress (waiting for bytes, or resuming a cut body).
        self._reading = False
        encoding = headers.get("Content-Encoding")
        if encoding is not None and encoding.strip().lower() not in ("", "identity"):
            # The transport asks for identity and hands bodies over undecoded: these bytes
            # are not the object's, and would be stored or served as if they were.
            response.close()
            self._closed = True
            raise ProtocolError(
                f"the server sent the object with Content-Encoding {encoding!r} though "
                "'identity' was asked for: not the object's bytes (a proxy in between that "
                "compresses what it forwards?)",
                attempts=self._attempts,
            )
        self._length = self._declared_length(response)
        self._requested = requested
        if response.status == 206:
            if requested is None:
                # A cache in between holding only some of it: a part is not the object.
                self._refuse("the whole object", "only a part of it (a proxy or cache in between?)")
            self._check_range(requested)

    def _declared_length(self, response: Response) -> int | None:
        """Bytes this response promises: Content-Length, else the Content-Range span."""
        length = parse_length(response.headers.get("Content-Length"))
        content_range = self.content_range
        if response.status == 206 and content_range is not None:
            span = content_range[1] - content_range[0] + 1
            if length is not None and length != span:
                response.close()
                self._closed = True
                raise ProtocolError(
                    f"the response declares {length} bytes (Content-Length) but "
                    f"{span} (Content-Range {response.headers.get('Content-Range')}); a proxy "
                    "in between may have changed it",
                    attempts=self._attempts,
                )
            return span
        return length

    def _refuse(self, asked: str, what: str) -> NoReturn:
        """A 206 with other bytes than asked for: closed before any of them is delivered."""
        self._response.close()
        self._closed = True
        got = self._headers.get("Content-Range")
        raise ProtocolError(
            f"asked for {asked} and the server answered 206 with Content-Range {got!r}: "
            f"{what}",
            attempts=self._attempts,
        )

    def _check_range(self, requested: str) -> None:
        """A 206 must carry the range asked for (clamped to the object's end): one that
        starts elsewhere would deliver shifted bytes."""
        first, last = parse_range_header(requested)
        content_range = self.content_range
        matches = False
        if content_range is not None:
            start, end, total = content_range
            if total is None:  # "bytes a-b/*": only the start and the bound can be checked
                matches = first is None or (start == first and (last is None or end <= last))
            elif first is None:
                assert last is not None
                matches = (start, end) == (max(0, total - last), total - 1)
            else:
                stop = total - 1 if last is None else min(last, total - 1)
                matches = (start, end) == (first, stop)
        if not matches:
            self._refuse(requested, "other bytes than asked for (a proxy in between?)")

    @property
    def range_ignored(self) -> bool:
        """Whether a range was asked for and the answer is the whole body (a 200): the
        service ignores ranges on an in-progress STREAMING object, and so does a proxy that
        does not support them. :meth:`iter_range` then cuts the range out."""
        return self._requested is not None and self.status == 200

    def iter_range(self) -> AsyncIterator[bytes]:
        """The bytes of the range asked for, as they arrive: the body itself when the server
        honoured the range (or none was asked for), else the range cut out of the whole
        body (:func:`iter_window`)."""
        if not self.range_ignored:
            return self
        assert self._requested is not None
        first, last = parse_range_header(self._requested)
        return iter_window(self, first, last)

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
        """Bytes in *this response* body: the whole object for a 200, the range for a 206.
        ``None`` for an in-progress STREAMING object (its length is not known yet)."""
        return self._length

    @property
    def object_size(self) -> int | None:
        """Size of the *whole object* in bytes, whatever range was asked for: the total of
        ``Content-Range`` for a 206, the length of a 200. ``None`` while a STREAMING upload
        is still in progress (the service does not know it yet)."""
        content_range = self.content_range
        if self.status == 206 and content_range is not None:
            return content_range[2]
        return self._length if self.status == 200 else None

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
        a new version, :class:`~msd_async.errors.ProtocolError` if the server sent other
        bytes than asked for or more than it declared,
        :class:`~msd_async.errors.ReadTimeout` if the server went silent, and
        :class:`~msd_async.errors.StreamClosedError` once the stream was closed. After
        a failure every later read raises the same error again, never ``b""``.
        """
        if self._released:
            raise StreamClosedError(
                "this ObjectStream was closed when its 'async with' block ended (or by "
                "aclose()); read the body inside the block"
            )
        if self._closed:
            if self._failure is not None:
                raise self._failure
            return b""
        if self._reading:
            raise ConcurrentReadError(
                "another task is reading this ObjectStream; read it from one task at a "
                "time (hand its chunks to the others, through a queue for example)"
            )
        self._reading = True
        try:
            while True:
                try:
                    chunk = await self._response.read_some()
                except (ConnectionLostError, ReadTimeout) as exc:
                    await self._resume(exc)
                    continue
                if chunk:
                    received = self._received + len(chunk)
                    expected = self._length
                    if expected is not None and received > expected:
                        self._closed = True
                        self._response.close()
                        raise ProtocolError(
                            f"the server sent more bytes than the {expected} it declared "
                            f"(at least {received}); the extra bytes were not delivered",
                            attempts=self._attempts,
                        )
                    self._received = received
                    return chunk
                self._check_complete()
                self._closed = True
                self._response.release()
                return b""
        except MediaStoreError as exc:
            if not exc.attempts:
                # Raised reading the body (a cut, a silence, the session closing): the
                # request was sent, and so was each resume. 0 says nothing was.
                exc.attempts = self._attempts
            if self._closed:
                # The body was not delivered: a later read must not look like its end.
                self._failure = exc
            raise
        finally:
            self._reading = False

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
            response, made = await self._reopen(start, end)
        except (ObjectNotFoundError, RangeNotSatisfiableError) as exc:
            # The ranged request found no object, or a shorter one: a new version (or none)
            # replaced the one being read. Say that, not "range not satisfiable".
            self._closed = True
            changed = ObjectChangedError(
                f"the object was replaced or deleted while it was being downloaded (ETag "
                f"{self.etag}); {self._received} bytes of the old version were received",
                expected_etag=self.etag,
                actual_etag=None,
            )
            changed.attempts = self._attempts + exc.attempts
            raise changed from exc
        except MediaStoreError as exc:
            # The resume's own count (a session found closed before it was sent says 0)
            # on top of what the download made before it.
            exc.attempts += self._attempts
            self._closed = True
            raise
        except BaseException:
            # Cancelled (a caller's wait_for around the read): the old connection is gone
            # and the new one never came. The stream is broken, and must say so: left
            # merely closed, the next read returned b"", a cut body read as complete.
            self._closed = True
            self._failure = ConnectionLostError(
                f"the object body was cut after {self._received} of {expected} bytes and "
                "the read resuming it was cancelled; this stream cannot continue: get the "
                f"object again, with range=({start}, None) for the rest"
            )
            self._failure.__cause__ = cause
            self._failure.attempts = self._attempts
            raise
        self._attempts += made
        try:
            self._check_resumed(response, start, end, cause)
        except BaseException:
            response.close()
            self._closed = True
            raise
        self._response = response

    def _check_resumed(
        self, response: Response, start: int, end: int, cause: TransportError
    ) -> None:
        """Accept a resumed answer only if it carries exactly the bytes asked for, of the
        same object; checked before any of its bytes is delivered."""
        headers = response.headers
        etag = parse_object_info(headers).etag
        received = self._received
        if etag != self.etag:
            raise ObjectChangedError(
                f"the object changed while it was being downloaded (ETag {self.etag} became "
                f"{etag}); {received} bytes of the old version were received",
                expected_etag=self.etag,
                actual_etag=etag,
            ) from cause
        asked = f"Range: bytes={start}-{end}"
        if response.status != 206:
            raise ProtocolError(
                f"the connection broke after {received} bytes and the resumed request "
                f"({asked}) was answered with HTTP {response.status} instead of 206: the "
                "server (or a proxy or cache in between) ignored the Range header; the "
                "download cannot continue without repeating bytes",
                attempts=self._attempts,
            ) from cause
        content_range = parse_content_range(headers.get("Content-Range"))
        if content_range is None:
            raise ProtocolError(
                f"the resumed request ({asked}) was answered with a 206 without a valid "
                f"Content-Range ({headers.get('Content-Range')!r}); the download cannot "
                "continue",
                attempts=self._attempts,
            ) from cause
        first, last, total = content_range
        size = self.object_size
        if total is not None and size is not None and total != size:
            raise ObjectChangedError(
                f"the object changed while it was being downloaded: it was {size} bytes "
                f"and the resumed answer says {total} (same ETag {etag}); {received} bytes "
                "of the old version were received",
                expected_etag=self.etag,
                actual_etag=etag,
            ) from cause
        if (first, last) != (start, end):
            raise ProtocolError(
                f"the resumed request ({asked}) was answered with bytes {first}-{last}: the "
                "server sent other bytes than asked for; the download cannot continue",
                attempts=self._attempts,
            ) from cause
        length = parse_length(headers.get("Content-Length"))
        if length is not None and length != end - start + 1:
            raise ProtocolError(
                f"the resumed answer declares {length} bytes (Content-Length) for bytes "
                f"{first}-{last}; the download cannot continue",
                attempts=self._attempts,
            ) from cause

    async def read(self) -> bytes:
        """The whole (remaining) body."""
        # receive() directly, not `async for`: the iterator protocol's extra coroutine per
        # chunk cost ~8% of the client CPU of a 1 MiB ranged GET.
        parts: list[bytes] = []
        receive = self.receive
        while chunk := await receive():
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def iter_chunks(self, size: int) -> AsyncIterator[bytes]:
        """The body in chunks of exactly ``size`` bytes (the last may be shorter).

        A step cancelled while it waits (``asyncio.wait_for`` around ``anext``) loses
        nothing: the next step goes on from the same byte.

        Raises :class:`~msd_async.errors.InvalidParameterError` at once when ``size`` is not
        a positive int.
        """
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise InvalidParameterError(
                f"iter_chunks size must be a positive number of bytes, not {size!r}",
                rule="chunk-size.range",
            )
        return _Rechunked(self, size)

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
        """Release the connection; an unread body is not drained: the connection is closed.
        Idempotent; reading afterwards raises :class:`~msd_async.errors.StreamClosedError`."""
        # get_object's context manager holds this stream and ``_reopen`` is its bound
        # method: a reference cycle that kept every response (headers, reader, buffers)
        # alive until the cyclic GC ran, ~15 us per 1 MiB GET. A closed stream never
        # resumes, so the reference can go.
        self._reopen = None
        self._released = True
        if not self._closed:
            self._closed = True
            self._response.close()

    def __repr__(self) -> str:
        return (
            f"<ObjectStream status={self.status} length={self.content_length} "
            f"object_size={self.object_size} "
            f"etag={self.etag!r} received={self._received}>"
        )


def iter_window(
    stream: ObjectStream, first: int | None, last: int | None
) -> AsyncIterator[bytes]:
    """Bytes ``first..last`` (inclusive; ``last=None``: to the end; ``first=None``: the last
    ``last`` bytes) out of a 200 answer carrying the whole object, for a ranged request
    whose range the server ignored; each chunk as soon as it arrives.

    An absolute window stops reading (the connection is then closed with the stream) as
    soon as it is complete; a suffix needs the end of the object and keeps only the last
    bytes. A window starting past the end raises
    :class:`~msd_async.errors.RangeNotSatisfiableError`, as the service answers for a
    complete object. As with :meth:`ObjectStream.iter_chunks`, a cancelled step loses
    nothing.
    """
    return _Window(stream, first, last)


class _Rechunked:
    """:meth:`ObjectStream.iter_chunks`. Not an async generator: a cancellation thrown
    into one finishes it, and the bytes it held were lost while the next step reported
    the end of the body. Here a cancelled step leaves ``_pending`` as it was."""

    __slots__ = ("_ended", "_pending", "_size", "_stream")

    def __init__(self, stream: ObjectStream, size: int) -> None:
        self._stream = stream
        self._size = size
        self._pending = bytearray()
        self._ended = False

    def __aiter__(self) -> _Rechunked:
        return self

    async def __anext__(self) -> bytes:
        pending, size = self._pending, self._size
        while len(pending) < size and not self._ended:
            chunk = await self._stream.receive()
            if chunk:
                pending += chunk
            else:
                self._ended = True
        if not pending:
            raise StopAsyncIteration
        out = bytes(pending[:size])
        del pending[:size]
        return out


class _Window:
    """:func:`iter_window`, cancellation-safe like :class:`_Rechunked`."""

    __slots__ = ("_done", "_first", "_last", "_position", "_stream", "_tail")

    def __init__(self, stream: ObjectStream, first: int | None, last: int | None) -> None:
        self._stream = stream
        self._first = first
        self._last = last
        #: Offset in the object of the next chunk's first byte.
        self._position = 0
        #: A suffix window's last bytes so far.
        self._tail = bytearray()
        self._done = False

    def __aiter__(self) -> _Window:
        return self

    async def __anext__(self) -> bytes:
        if self._done:
            raise StopAsyncIteration
        first, last, receive = self._first, self._last, self._stream.receive
        if first is None:
            assert last is not None
            tail = self._tail
            while chunk := await receive():
                tail += chunk
                if len(tail) > last:
                    del tail[: len(tail) - last]
            self._done = True
            if not tail:
                raise StopAsyncIteration
            return bytes(tail)
        while True:
            if last is not None and self._position > last:
                # The window is complete; the rest of the body is not needed.
                self._done = True
                raise StopAsyncIteration
            chunk = await receive()
            position = self._position
            if not chunk:
                self._done = True
                if position <= first:
                    raise RangeNotSatisfiableError(
                        f"the range starts at byte {first} but the object has {position} "
                        "bytes",
                        code="RequestedRangeNotSatisfiableException",
                        status=416,
                        attempts=self._stream._attempts,
                    ).with_object_size(position)
                raise StopAsyncIteration
            end = self._position = position + len(chunk)
            if end > first:
                lo = max(first - position, 0)
                hi = len(chunk) if last is None else min(last + 1 - position, len(chunk))
                if hi > lo:
                    return chunk if (lo, hi) == (0, len(chunk)) else chunk[lo:hi]
