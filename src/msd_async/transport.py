"""The only module that touches aiohttp: the connection pool, timeouts, streaming request
and response bodies, and the translation of aiohttp/OS errors into ours.

Seam: :meth:`Transport.send` takes a method, a URL, headers and an optional
:class:`~msd_async.body.UploadBody`, and returns a :class:`Response` that holds one pool
slot until it is released or closed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any, Final

import aiohttp
import anyio
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_writer import StreamWriter
from aiohttp.payload import Payload
from multidict import CIMultiDictProxy
from yarl import URL

from ._version import __version__
from .body import Meter, UploadBody
from .config import DEFAULT_LIMITS, DEFAULT_TIMEOUTS, Limits, Timeouts
from .errors import (
    ConnectError,
    ConnectionLostError,
    ConnectTimeout,
    MediaStoreError,
    PoolTimeout,
    ReadTimeout,
    TransportError,
    WriteTimeout,
)

__all__ = ["PoolStats", "Response", "Transport"]

#: Buffered bytes past which aiohttp's StreamWriter.write drains (its ``LIMIT`` default).
_DRAIN_THRESHOLD: Final = 0x10000

USER_AGENT: Final = f"msd-async/{__version__}"
_NO_CONTENT_TYPE: Final = ("Content-Type",)
_NO_KWARGS: Final[dict[str, Any]] = {}
#: How long ending a request waits for its cancelled body writer to unwind.
_SETTLE_TIMEOUT: Final = 5.0


class _UploadPayload(Payload):
    """Feeds an :class:`UploadBody` to aiohttp one chunk at a time.

    Each chunk is handed to the socket as soon as the body yields it (aiohttp writes it
    straight to the transport), so a live encoder's chunks are not held back. Errors raised
    here (the size limit, a stalled peer) are kept in ``error``: aiohttp wraps them in its
    own connection errors, and the caller must see ours (or, when the body's iterator
    raised, its own exception: a crashed encoder is not a connection failure to retry).

    aiohttp runs this in a task of its own, which may still be inside the caller's iterator
    when the request has already failed or been answered; :meth:`stop` ends it, so the body
    can be closed (or retried) without "asynchronous generator is already running".
    """

    def __init__(self, body: UploadBody, meter: Meter, write_timeout: float | None) -> None:
        super().__init__(body, content_type=None)
        self._body = body
        self._meter = meter
        self._write_timeout = write_timeout
        self._size = None if body.size is None else body.size
        self.error: BaseException | None = None
        #: An exception raised by the body's own iterator, re-raised to the caller as is.
        self.source_error: Exception | None = None
        self._writer_task: asyncio.Task[Any] | None = None
        self._finished = asyncio.Event()

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError("an upload body cannot be decoded")

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        meter = self._meter
        timeout = self._write_timeout
        direct = writer if isinstance(writer, StreamWriter) else None
        # aiohttp silently resends an idempotent request (PUT is one) once when a pooled
        # connection turns out dead, reusing this payload and its meter: bytes would be
        # counted twice and a one-shot body would fail without its cause. A consumed
        # payload makes aiohttp raise instead, so our retry policy decides, with a fresh
        # meter and the body's own replay rules.
        self._consumed = True
        self._writer_task = asyncio.current_task()
        try:
            chunks = self._body.chunks()
            try:
                while True:
                    try:
                        chunk = await anext(chunks)
                    except StopAsyncIteration:
                        break
                    except Exception as exc:
                        # The caller's source failed (an encoder crashed, a file could not
                        # be read): its own error, not a broken connection to retry.
                        self.source_error = exc
                        raise
                    if not chunk:
                        continue  # an empty chunk would end a chunked body early
                    meter.check(chunk)
                    try:
                        if direct is not None:
                            # StreamWriter.write's own logic, with the timer armed only
                            # when the socket is backed up: only drain() can wait on the
                            # server, and a timer per chunk was ~20% of the client CPU
                            # of a STREAMING upload in 64 KiB chunks.
                            await direct.write(chunk, drain=False)
                            if direct.buffer_size > _DRAIN_THRESHOLD:
                                direct.buffer_size = 0
                                if direct.protocol.writing_paused:
                                    async with asyncio.timeout(timeout):
                                        await direct.drain()
                        else:
                            async with asyncio.timeout(timeout):
                                await writer.write(chunk)
                    except TimeoutError as exc:
                        raise WriteTimeout(
                            f"the server accepted no upload bytes for {timeout} s; the "
                            "connection was closed"
                        ) from exc
                    meter.sent_chunk(chunk)
            finally:
                # The body's generator (an open file, the caller's iterator) is closed here,
                # in the writer's task, however the write ends, not later by the GC.
                closer = getattr(chunks, "aclose", None)
                if closer is not None:
                    await closer()
            # End the body here rather than leave it to aiohttp: its own write_eof runs
            # outside its error handling, so a connection the server closed right after
            # the last chunk (an early error answer) made it fail in a task nobody awaits
            # ("Task exception was never retrieved"). From here a failure is reported to
            # the response like any write error; aiohttp's write_eof is then a no-op.
            await writer.write_eof()
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            self._finished.set()

    async def stop(self) -> None:
        """Cancel the writer if it is still running and wait until it has let go of the
        body (at most :data:`_SETTLE_TIMEOUT`; shielded, so it also runs while the caller
        is being cancelled)."""
        task = self._writer_task
        if task is None or self._finished.is_set():
            return
        task.cancel()
        with anyio.CancelScope(shield=True), anyio.move_on_after(_SETTLE_TIMEOUT):
            await self._finished.wait()


class _Slots:
    """A counting gate for the pool: first come, first served, and no coroutine when a
    slot is free (``asyncio.Semaphore.acquire`` is a coroutine even then)."""

    __slots__ = ("_free", "_waiters")

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def try_acquire(self) -> bool:
        """Take a free slot if there is one and nobody is queued for it."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return True
        return False

    async def acquire(self) -> None:
        """Queue for a slot; a cancelled waiter leaves the queue (or passes on the slot it
        was handed in the meantime)."""
        if self.try_acquire():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot while being cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):  # release() may have dropped it
                    self._waiters.remove(waiter)
                # Newcomers queue behind a cancelled waiter until it leaves: a slot that
                # is free meanwhile goes to them now.
                self._wake()
            raise

    def release(self) -> None:
        """Give a slot back: to the first live waiter, else to the free count."""
        self._free += 1
        self._wake()

    def _wake(self) -> None:
        waiters = self._waiters
        while self._free > 0 and waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                self._free -= 1
                waiter.set_result(None)


class PoolStats:
    """Live counters of a transport's pool (read-only; for tests and monitoring)."""

    __slots__ = ("_transport",)

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    @property
    def in_use(self) -> int:
        """Requests holding a connection: sent and not yet released or closed."""
        return self._transport._in_use

    @property
    def idle(self) -> int:
        """Open keep-alive connections waiting in the pool."""
        session = self._transport._session
        if session is None:
            return 0
        connector = session.connector
        conns: Mapping[Any, list[Any]] = getattr(connector, "_conns", {})
        return sum(len(v) for v in conns.values())


#: What :func:`_map_exceptions` translates (a MediaStoreError passes unchanged).
_FOREIGN_ERRORS: Final = (aiohttp.ClientError, OSError, TimeoutError)


@contextlib.contextmanager
def _map_exceptions(url: str, payload: _UploadPayload | None = None) -> Iterator[None]:
    """Translate aiohttp's and the OS's errors into ours, once, at the boundary."""
    try:
        yield
    except MediaStoreError:
        raise
    except _FOREIGN_ERRORS as exc:
        mapped, cause = _mapped(exc, url, payload)
        raise mapped from cause


def _mapped(
    exc: BaseException, url: str, payload: _UploadPayload | None
) -> tuple[BaseException, BaseException | None]:
    """``(exception the caller sees, its cause)`` for ``exc``: the upload body's own error
    if it had one (its iterator's, or our size limit or write timeout), with no cause; else
    ours for ``exc``, caused by it."""
    if payload is not None and payload.source_error is not None:
        return payload.source_error, None
    if payload is not None and isinstance(payload.error, MediaStoreError):
        return payload.error, None
    return _translate(exc, url), exc


def _translate(exc: BaseException, url: str) -> TransportError:
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return ConnectTimeout(f"connecting to {url} timed out")
    if isinstance(exc, (aiohttp.SocketTimeoutError, aiohttp.ServerTimeoutError, TimeoutError)):
        return ReadTimeout(f"no response bytes from {url} within the read timeout")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return ConnectError(f"cannot connect to {url}: {exc.os_error.strerror or exc}")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return ConnectionLostError(f"the response body from {url} was cut short: {exc}")
    return ConnectionLostError(f"the connection to {url} failed: {exc}")


class Response:
    """An HTTP response whose body is still on the wire; holds one pool slot.

    Release it (``release()`` after reading everything, or ``close()`` to drop the
    connection) exactly once; both are idempotent.
    """

    __slots__ = ("_done", "_payload", "_raw", "_transport", "_url")

    def __init__(
        self,
        raw: aiohttp.ClientResponse,
        transport: Transport,
        url: str,
        payload: _UploadPayload | None = None,
    ) -> None:
        self._raw = raw
        self._transport = transport
        self._url = url
        self._payload = payload
        self._done = False

    @property
    def status(self) -> int:
        return self._raw.status

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        return self._raw.headers

    async def read(self) -> bytes:
        """The whole body; then the response is released.

        A server that answers an upload early (an error before the whole body arrived)
        leaves the body writer running: it is stopped here, after the answer was read, so
        the caller may close or resend the body at once.
        """
        try:
            with _map_exceptions(self._url):
                data = await self._raw.read()
        finally:
            if self._payload is not None:
                await self._payload.stop()
        self.release()
        return data

    async def iter_any(self) -> AsyncIterator[bytes]:
        """Chunks as they arrive from the socket."""
        content = self._raw.content
        while True:
            with _map_exceptions(self._url):
                chunk = await content.readany()
            if not chunk:
                return
            yield chunk

    async def read_some(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (``-1``: whatever has arrived); ``b""`` at the end."""
        # _map_exceptions inline: this runs for every received chunk, and entering a
        # generator-based context manager each time is measurable on a 1 MiB GET.
        try:
            if n < 0:
                return await self._raw.content.readany()
            return await self._raw.content.read(n)
        except MediaStoreError:
            raise
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise _translate(exc, self._url) from exc

    def release(self) -> None:
        """Return the connection to the pool (closed instead if the body was not drained)."""
        if not self._done:
            self._done = True
            self._raw.release()
            self._transport._release_slot()

    def close(self) -> None:
        """Drop the connection: for an abandoned body or a broken exchange."""
        if not self._done:
            self._done = True
            self._raw.close()
            self._transport._release_slot()


class Transport:
    """One aiohttp connection pool shared by every container of a session."""

    def __init__(
        self, *, limits: Limits = DEFAULT_LIMITS, timeouts: Timeouts = DEFAULT_TIMEOUTS
    ) -> None:
        self.limits = limits
        self.timeouts = timeouts
        self._session: aiohttp.ClientSession | None = None
        # Our own gate in front of aiohttp's pool, so waiting for a connection has its own
        # timeout (PoolTimeout) and the number in flight is observable.
        self._slots = _Slots(limits.max_connections)
        self._in_use = 0
        self.stats = PoolStats(self)

    def _client(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(
                limit=self.limits.max_connections,
                limit_per_host=self.limits.max_connections_per_host,
                keepalive_timeout=self.limits.keepalive_expiry,
            )
            t = self.timeouts
            session = self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=None, sock_connect=t.connect, sock_read=t.read
                ),
                auto_decompress=False,
                # Explicit headers instead of a session-wide skip_auto_headers, which sends
                # every request through aiohttp's slower header path. Bodies are never
                # compressed by MediaStore, and we hand them over undecoded: ask for identity,
                # as botocore does.
                headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
            )
        return session

    def _release_slot(self) -> None:
        self._in_use -= 1
        self._slots.release()

    async def send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        *,
        body: UploadBody | None = None,
        meter: Meter | None = None,
        chunked: bool = False,
        read_timeout: float | None = None,
    ) -> Response:
        """Send a request; return once the response headers have arrived.

        With ``body``, ``meter`` counts and limits it; ``chunked`` forces chunked transfer
        encoding even when the size is known (STREAMING uploads). ``read_timeout``
        overrides ``Timeouts.read`` (a deadline may shorten it).
        """
        session = self._client()
        # A free slot is taken without suspending: no coroutine, no timer to arm and cancel.
        if not self._slots.try_acquire():
            try:
                async with asyncio.timeout(self.timeouts.pool):
                    await self._slots.acquire()
            except TimeoutError as exc:
                raise PoolTimeout(
                    f"no free connection within {self.timeouts.pool} s: all "
                    f"{self.limits.max_connections} are busy (raise Limits.max_connections, "
                    "or release responses sooner)"
                ) from exc
        self._in_use += 1
        payload: _UploadPayload | None = None
        # Only what differs from the session's defaults, so a plain GET passes no extras.
        kwargs: dict[str, Any] = _NO_KWARGS
        if body is not None or read_timeout is not None:
            kwargs = {}
            if body is not None:
                assert meter is not None
                payload = _UploadPayload(body, meter, self.timeouts.write)
                kwargs["data"] = payload
                if chunked or body.size is None:
                    kwargs["chunked"] = True
                if "content-type" not in headers:
                    # aiohttp would label the body application/octet-stream; the service
                    # must see that no Content-Type was given (ListItems then omits it).
                    kwargs["skip_auto_headers"] = _NO_CONTENT_TYPE
            if read_timeout is not None:
                kwargs["timeout"] = aiohttp.ClientTimeout(
                    total=None, connect=None, sock_connect=self.timeouts.connect,
                    sock_read=read_timeout,
                )
        # _map_exceptions inline (as in read_some): a generator-based context manager per
        # request is measurable on small requests.
        try:
            raw = await session.request(
                method, URL(url, encoded=True), headers=headers, allow_redirects=False, **kwargs
            )
        except BaseException as exc:
            mapped = None
            if not isinstance(exc, MediaStoreError) and isinstance(exc, _FOREIGN_ERRORS):
                mapped, cause = _mapped(exc, url, payload)
            self._release_slot()
            if payload is not None:
                await payload.stop()
            if mapped is None:
                raise
            raise mapped from cause
        return Response(raw, self, url, payload)

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()
