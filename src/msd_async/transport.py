"""The client's HTTP layer, and the only module of the client that imports aiohttp: the
connection pool, timeouts, streaming request and response bodies, and the translation of
aiohttp/OS errors into ours. (aiohttp.web is imported too, by the server side only: the
``web.aiohttp`` adapter and the local server in ``testing``.)

What this module relies on in aiohttp beyond its documented API (a private attribute, and
how aiohttp drives an upload payload) is listed in docs/connections.md ("Event loops and
aiohttp") and checked by tests/unit/test_hardening_aiohttp.py.

Seam: :meth:`Transport.send` takes a method, a URL, headers and an optional
:class:`~msd_async.body.UploadBody`, and returns a :class:`Response` that holds one pool
slot until it is released or closed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import struct
from collections.abc import Mapping
from typing import Any, Final

import aiohttp
import anyio
from aiohttp.abc import AbstractStreamWriter
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
    SessionClosedError,
    TransportError,
    WriteTimeout,
)

__all__ = ["PoolStats", "Response", "Transport"]

USER_AGENT: Final = f"msd-async/{__version__}"
_NO_CONTENT_TYPE: Final = ("Content-Type",)
_NO_KWARGS: Final[dict[str, Any]] = {}
#: How long ending a request waits for its cancelled body writer to unwind.
_SETTLE_TIMEOUT: Final = 5.0
#: SO_LINGER on, 0 s: close() resets the connection instead of flushing and sending FIN.
_LINGER_RESET: Final = struct.pack("ii", 1, 0)

#: The private aiohttp attributes this module reads, where aiohttp has no public API:
#: ``(class, attribute, what for)``. tests/unit/test_hardening_aiohttp.py fails, naming
#: the attribute, if an aiohttp upgrade removes one. (How aiohttp drives _UploadPayload is
#: the other reliance: see docs/connections.md.)
AIOHTTP_PRIVATE_ATTRIBUTES: Final = (
    (aiohttp.TCPConnector, "_conns", "PoolStats.idle: the idle keep-alive connections"),
)


def _idle_connections(connector: aiohttp.BaseConnector | None) -> int:
    conns: Mapping[Any, Any] = getattr(connector, "_conns", {})
    return sum(len(v) for v in conns.values())


class _UploadPayload(Payload):
    """Feeds an :class:`UploadBody` to aiohttp one chunk at a time.

    Each chunk is handed to the socket as soon as the body yields it (aiohttp writes it
    straight to the transport), so a live encoder's chunks are not held back. Errors raised
    here (the size limit, a stalled peer) are kept in ``error``: aiohttp wraps them in its
    own connection errors, and the caller must see ours (or, when the body's iterator or
    the ``progress`` callback raised, its own exception: a crashed encoder is not a
    connection failure to retry).

    Any failure (the size limit, a write timeout, the caller's error, a cancellation)
    aborts the connection at once: the unsent buffer is discarded and the socket is reset,
    so the service sees a cut upload and stores nothing, before the caller hears of it.

    aiohttp runs this in a task of its own, which may still be inside the caller's iterator
    when the request has already failed or been answered; :meth:`stop` ends it, so the body
    can be closed (or retried) without "asynchronous generator is already running".
    """

    def __init__(
        self, body: UploadBody | None, meter: Meter | None, write_timeout: float | None
    ) -> None:
        super().__init__(body, content_type=None)
        self._body = body
        self._meter = meter
        self._write_timeout = write_timeout
        self.error: BaseException | None = None
        #: An exception raised by the body's iterator or the progress callback, re-raised
        #: to the caller as is.
        self.source_error: Exception | None = None
        self._writer_task: asyncio.Task[Any] | None = None
        self._finished = asyncio.Event()

    @property
    def size(self) -> int | None:
        return 0 if self._body is None else self._body.size

    @property
    def consumed(self) -> bool:
        # Always "consumed": aiohttp silently resends an idempotent request (PUT, DELETE)
        # once when a pooled connection turns out dead, inside what we count as one
        # attempt. For a PUT that reuses this payload and its meter (bytes counted twice, a
        # one-shot body failing without its cause); for a DELETE it hides that the first
        # one may have been carried out. A consumed payload makes aiohttp raise instead,
        # so our retry policy decides and counts the attempt.
        return True

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError("an upload body cannot be decoded")

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        self._writer_task = task = asyncio.current_task()
        assert task is not None
        # Kept now: aiohttp detaches the transport from its protocol when it closes the
        # connection (gracefully, still flushing) before this writer is stopped.
        transport = writer.transport
        watchdog = None
        if self._write_timeout is not None:
            watchdog = _WriteWatchdog(self._write_timeout, task)
        try:
            if self._body is not None:
                assert self._meter is not None
                await self._write_body(writer, self._body, self._meter, watchdog)
            # End the body here rather than leave it to aiohttp: its own write_eof runs
            # outside its error handling, so a connection the server closed right after
            # the last chunk (an early error answer) made it fail in a task nobody awaits
            # ("Task exception was never retrieved"). From here a failure is reported to
            # the response like any write error; aiohttp's write_eof is then a no-op.
            if watchdog is not None:
                watchdog.started = watchdog.now()
            await writer.write_eof()
        except BaseException as exc:
            timed_out = watchdog is not None and watchdog.fired
            if timed_out and isinstance(exc, asyncio.CancelledError):
                task.uncancel()
                exc = WriteTimeout(
                    f"the server accepted no upload bytes for {self._write_timeout} s; the "
                    "connection was closed"
                )
                self.error = exc
                _abort(transport)
                raise exc from None
            self.error = exc
            _abort(transport)
            raise
        finally:
            if watchdog is not None:
                watchdog.cancel()
            self._finished.set()

    async def _write_body(
        self,
        writer: AbstractStreamWriter,
        body: UploadBody,
        meter: Meter,
        watchdog: _WriteWatchdog | None,
    ) -> None:
        chunks = body.chunks()
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
                # Only the time the server takes to accept a chunk counts against the
                # write timeout, never the time spent in the caller's iterator.
                if watchdog is not None:
                    watchdog.started = watchdog.now()
                await writer.write(chunk)
                if watchdog is not None:
                    watchdog.started = None
                try:
                    meter.sent_chunk(chunk)
                except Exception as exc:
                    # The progress callback failed: the caller's bug, reported as is.
                    self.source_error = exc
                    raise
        finally:
            # The body's generator (an open file, the caller's iterator) is closed here,
            # in the writer's task, however the write ends, not later by the GC.
            closer = getattr(chunks, "aclose", None)
            if closer is not None:
                await closer()

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


class _WriteWatchdog:
    """The write timeout of one upload with one timer, not one per chunk (a timer per
    chunk was ~20% of the client CPU of a STREAMING upload in 64 KiB chunks).

    The writer sets ``started`` before handing a chunk to aiohttp and clears it after; the
    timer wakes up once per ``timeout`` and cancels the writer if one write has been
    waiting on the server for ``timeout`` seconds (``fired`` then tells the writer why).
    """

    __slots__ = ("_handle", "_loop", "_task", "_timeout", "fired", "now", "started")

    def __init__(self, timeout: float, task: asyncio.Task[Any]) -> None:
        self._timeout = timeout
        self._task = task
        self._loop = loop = asyncio.get_running_loop()
        self.now = loop.time
        self.started: float | None = None
        self.fired = False
        self._handle = loop.call_at(loop.time() + timeout, self._check)

    def _check(self) -> None:
        started = self.started
        now = self._loop.time()
        if started is not None and now - started >= self._timeout:
            self.fired = True
            self._task.cancel()
            return
        base = now if started is None else started
        self._handle = self._loop.call_at(base + self._timeout, self._check)

    def cancel(self) -> None:
        self._handle.cancel()


def _abort(transport: asyncio.WriteTransport | None) -> None:
    """Reset the connection now: discard what is buffered and send RST, not FIN, so the
    server cannot mistake what it got for a body that ended."""
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, AttributeError, TypeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    transport.abort()


class _Slots:
    """A counting gate for the pool: first come, first served, and no coroutine when a
    slot is free (``asyncio.Semaphore.acquire`` is a coroutine even then)."""

    __slots__ = ("_free", "_waiters")

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

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
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
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

    def fail_waiters(self, error: BaseException) -> None:
        """Raise ``error`` in every queued call (the pool is closing: no slot will come)."""
        waiters, self._waiters = self._waiters, collections.deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(error)

    def _wake(self) -> None:
        waiters = self._waiters
        while self._free > 0 and waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                self._free -= 1
                waiter.set_result(None)


class PoolStats:
    """Live counters of a transport's pool (read-only; for tests and monitoring)::

        >>> session.pool
        <Pool in_use=3 idle=5 waiting=0 max_connections=256 max_connections_per_host=0>
    """

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
        return _idle_connections(session.connector)

    @property
    def waiting(self) -> int:
        """Calls queued for a connection (at ``max_connections`` or the per-host limit)."""
        transport = self._transport
        return transport._slots.waiting + sum(s.waiting for s in transport._hosts.values())

    def __repr__(self) -> str:
        limits = self._transport.limits
        return (
            f"<Pool in_use={self.in_use} idle={self.idle} waiting={self.waiting} "
            f"max_connections={limits.max_connections} "
            f"max_connections_per_host={limits.max_connections_per_host}>"
        )


#: The foreign errors translated into ours at this boundary (a MediaStoreError passes unchanged).
_FOREIGN_ERRORS: Final = (aiohttp.ClientError, OSError, TimeoutError)


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


def _closed_error() -> SessionClosedError:
    return SessionClosedError(
        "this Session is closed; open a new Session and get the container from it again"
    )


class Response:
    """An HTTP response whose body is still on the wire; holds one pool slot.

    Release it (``release()`` after reading everything, or ``close()`` to drop the
    connection) exactly once; both are idempotent. :meth:`read` does it itself, on every
    exit: a failed or cancelled read closes the connection and frees the slot.
    """

    __slots__ = ("_done", "_host", "_payload", "_raw", "_transport", "_url")

    def __init__(
        self,
        raw: aiohttp.ClientResponse,
        transport: Transport,
        url: str,
        payload: _UploadPayload | None = None,
        host: _Slots | None = None,
    ) -> None:
        self._raw = raw
        self._transport = transport
        self._url = url
        self._payload = payload
        self._host = host
        self._done = False

    @property
    def status(self) -> int:
        return self._raw.status

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        return self._raw.headers

    async def read(self) -> bytes:
        """The whole body; then the response is released. Whatever ends the read early
        (a timeout, a cut, a cancellation) closes the connection instead: the slot is
        never lost.

        A server that answers an upload early (an error before the whole body arrived)
        leaves the body writer running: it is stopped here, after the answer was read, so
        the caller may close or resend the body at once.
        """
        ok = False
        try:
            data = await self._raw.read()
            ok = True
        except MediaStoreError:
            raise
        except _FOREIGN_ERRORS as exc:
            raise _translate(exc, self._url) from exc
        finally:
            # The one place a body read ends. close() first and synchronously, so even
            # a cancellation arriving in the await below cannot keep the slot.
            if not ok:
                self.close()
            try:
                if self._payload is not None:
                    await self._payload.stop()
            finally:
                self.release()
        return data

    async def read_some(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (``-1``: whatever has arrived); ``b""`` at the end."""
        # No context manager here: this runs for every received chunk, and entering a
        # generator-based one each time is measurable on a 1 MiB GET.
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
            self._transport._release_slot(self._host)

    def close(self) -> None:
        """Drop the connection: for an abandoned body or a broken exchange."""
        if not self._done:
            self._done = True
            self._raw.close()
            self._transport._release_slot(self._host)


class Transport:
    """One aiohttp connection pool shared by every container of a session.

    Our own gate in front of aiohttp's pool enforces ``Limits.max_connections`` and
    ``Limits.max_connections_per_host``, so waiting for a connection is bounded by
    ``Timeouts.pool`` (:class:`PoolTimeout`) and observable (:class:`PoolStats`).
    aiohttp's own limits are off: they would make a call wait with no timeout.
    """

    def __init__(
        self, *, limits: Limits = DEFAULT_LIMITS, timeouts: Timeouts = DEFAULT_TIMEOUTS
    ) -> None:
        self.limits = limits
        self.timeouts = timeouts
        self._session: aiohttp.ClientSession | None = None
        self._slots = _Slots(limits.max_connections)
        #: Per-origin gates, when ``max_connections_per_host`` is set.
        self._hosts: dict[str, _Slots] = {}
        self._in_use = 0
        self._closed = False
        self.stats = PoolStats(self)

    @property
    def closed(self) -> bool:
        return self._closed

    def _client(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None or session.closed:
            if self._closed:
                # A client kept past its Session would otherwise open a new pool that
                # nobody closes.
                raise _closed_error()
            connector = aiohttp.TCPConnector(
                limit=0, limit_per_host=0, keepalive_timeout=self.limits.keepalive_expiry
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

    def _release_slot(self, host: _Slots | None) -> None:
        self._in_use -= 1
        self._slots.release()
        if host is not None:
            host.release()

    async def _acquire(self, origin: str) -> _Slots | None:
        """Take a connection slot (and ``origin``'s, with a per-host limit) within
        ``Timeouts.pool``; return the per-host gate taken, if any."""
        host: _Slots | None = None
        per_host = self.limits.max_connections_per_host
        if per_host:
            host = self._hosts.get(origin)
            if host is None:
                host = self._hosts[origin] = _Slots(per_host)
            # A free slot is taken without suspending: no coroutine, no timer.
            if host.try_acquire():
                if self._slots.try_acquire():
                    return host
                waiting_for = None
            else:
                waiting_for = host
        elif self._slots.try_acquire():
            return None
        else:
            waiting_for = None
        # Per-host first, then the pool's: a call waiting for its busy host does not hold
        # one of the pool's slots that a call to another host could use.
        try:
            async with asyncio.timeout(self.timeouts.pool):
                if waiting_for is not None:
                    await waiting_for.acquire()
                    waiting_for = None
                await self._slots.acquire()
        except BaseException as exc:
            if host is not None and waiting_for is None:
                host.release()
            if isinstance(exc, TimeoutError):
                if waiting_for is not None:
                    raise PoolTimeout(
                        f"no free connection to {origin} within {self.timeouts.pool} s: "
                        f"all {per_host} allowed per host are busy (raise "
                        "Limits.max_connections_per_host, or release responses sooner)"
                    ) from exc
                raise PoolTimeout(
                    f"no free connection within {self.timeouts.pool} s: all "
                    f"{self.limits.max_connections} are busy (raise Limits.max_connections, "
                    "or release responses sooner)"
                ) from exc
            raise
        return host

    async def send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        *,
        origin: str = "",
        body: UploadBody | None = None,
        meter: Meter | None = None,
        chunked: bool = False,
        read_timeout: float | None = None,
    ) -> Response:
        """Send a request; return once the response headers have arrived.

        ``origin`` (scheme://host:port) keys the per-host limit. With ``body``, ``meter``
        counts and limits it; ``chunked`` forces chunked transfer encoding even when the
        size is known (STREAMING uploads). ``read_timeout`` overrides ``Timeouts.read``
        (a deadline may shorten it). Raises :class:`PoolTimeout` when no connection is
        free within ``Timeouts.pool``, :class:`SessionClosedError` after :meth:`aclose`.
        """
        session = self._client()
        host: _Slots | None = None
        if self.limits.max_connections_per_host or not self._slots.try_acquire():
            host = await self._acquire(origin)
            if self._closed:  # closed while this call was queued (and handed a slot)
                self._slots.release()
                if host is not None:
                    host.release()
                raise _closed_error()
        self._in_use += 1
        payload: _UploadPayload | None = None
        # Only what differs from the session's defaults, so a plain GET passes no extras.
        kwargs: dict[str, Any] = _NO_KWARGS
        if body is not None or read_timeout is not None or method == "DELETE":
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
            elif method == "DELETE":
                # An empty body that aiohttp counts as consumed, so it never resends a
                # DELETE by itself (see _UploadPayload.consumed); on the wire it is the
                # same "Content-Length: 0" aiohttp sends for a DELETE without a body.
                payload = _UploadPayload(None, None, self.timeouts.write)
                kwargs["data"] = payload
                kwargs["skip_auto_headers"] = _NO_CONTENT_TYPE
            if read_timeout is not None:
                kwargs["timeout"] = aiohttp.ClientTimeout(
                    total=None, connect=None, sock_connect=self.timeouts.connect,
                    sock_read=read_timeout,
                )
        # Translated inline (as in read_some): a generator-based context manager per request
        # is measurable on small requests.
        try:
            raw = await session.request(
                method, URL(url, encoded=True), headers=headers, allow_redirects=False, **kwargs
            )
        except BaseException as exc:
            mapped = None
            if not isinstance(exc, MediaStoreError) and isinstance(exc, _FOREIGN_ERRORS):
                mapped, cause = _mapped(exc, url, payload)
            self._release_slot(host)
            if payload is not None:
                await payload.stop()
            if mapped is None:
                raise
            raise mapped from cause
        return Response(raw, self, url, payload, host)

    async def aclose(self) -> None:
        """Close every pooled connection; later sends, and calls queued for a connection,
        raise :class:`SessionClosedError`."""
        self._closed = True
        for gate in (self._slots, *self._hosts.values()):
            gate.fail_waiters(_closed_error())
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()
