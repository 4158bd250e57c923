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
import functools
import math
import socket
import struct
import warnings
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any, Final, NoReturn, TypeGuard

import aiohttp
import anyio
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import StreamWriter
from aiohttp.payload import Payload
from multidict import CIMultiDictProxy
from yarl import URL

from ._version import __version__
from .body import Buffer, Meter, UploadBody, followable
from .config import DEFAULT_LIMITS, DEFAULT_TIMEOUTS, Limits, Timeouts
from .errors import (
    SESSION_CLOSED_MESSAGE,
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
from .retry import WAITING_FOR_CONNECTION, waiting_before_sending

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
        self,
        body: UploadBody | None,
        meter: Meter | None,
        write_timeout: float | None,
        watchdog: _Watchdog,
        head: _Watch | None,
        loop: asyncio.AbstractEventLoop | None,
    ) -> None:
        super().__init__(body, content_type=None)
        self._loop = loop
        self._body = body
        self._meter = meter
        self._write_timeout = write_timeout
        self._watchdog = watchdog
        #: The request's read watch: its wait for the answer starts once the body is sent.
        self._head = head
        self.error: BaseException | None = None
        #: An exception raised by the body's iterator or the progress callback, re-raised
        #: to the caller as is (a CancelledError too, when it was the source's own).
        self.source_error: BaseException | None = None
        self._writer_task: asyncio.Task[Any] | None = None
        #: The connection the body went to (see abort()).
        self._connection: asyncio.WriteTransport | None = None
        self._finished = False
        #: Made only when stop() has to wait for the writer (an Event per request cost
        #: more than the rest of this constructor).
        self._stopped: asyncio.Future[None] | None = None

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
        self._writer_task = task = _current_task(self._loop)
        assert task is not None
        # Kept now: aiohttp detaches the transport from its protocol when it closes the
        # connection (gracefully, still flushing) before this writer is stopped.
        transport = self._connection = writer.transport
        watchdog = self._watchdog
        watch = None
        if self._write_timeout is not None:
            watch = watchdog.watch(task, self._write_timeout)
            watch.heading = False  # the writer's wait, not a request (see end_requests)
        try:
            if self._body is not None:
                assert self._meter is not None
                await self._write_body(writer, self._body, self._meter, watch)
            # End the body here rather than leave it to aiohttp: its own write_eof runs
            # outside its error handling, so a connection the server closed right after
            # the last chunk (an early error answer) made it fail in a task nobody awaits
            # ("Task exception was never retrieved"). From here a failure is reported to
            # the response like any write error; aiohttp's write_eof is then a no-op.
            if watch is not None:
                watch.since = watchdog.now()
            await writer.write_eof()
            head = self._head
            if head is not None and head.heading:
                # Sent: from now on the server's silence counts against the read timeout.
                head.since = watchdog.now()
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError) and _timed_out(watch):
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
            if watch is not None:
                watchdog.unwatch(watch)
            self._finished = True
            if self._stopped is not None and not self._stopped.done():
                self._stopped.set_result(None)

    async def _write_body(
        self,
        writer: AbstractStreamWriter,
        body: UploadBody,
        meter: Meter,
        watch: _Watch | None,
    ) -> None:
        whole = body.whole()
        if whole is not None:
            # One buffer in memory: one write, as aiohttp writes a bytes body, without
            # an iterator to create, step and close.
            if whole:
                meter.check(whole)
                await self._write_chunk(writer, whole, meter, watch)
            return
        chunks = body.chunks()
        follow = followable(chunks)
        if follow is not None and isinstance(writer, StreamWriter):
            follow.follow(functools.partial(self._write_now, writer, meter))
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
                except asyncio.CancelledError as exc:
                    task = self._writer_task
                    if task is not None and not task.cancelling():
                        # Nobody cancelled the writer: a wait inside the source was
                        # cancelled (its encoder shut down) and it gave up. That is the
                        # source's end, as its own exception is: raised to the caller as
                        # is, not taken for a lost connection to retry (a re-openable
                        # source was started again).
                        self.source_error = exc
                    raise
                if not chunk:
                    continue  # an empty chunk would end a chunked body early
                meter.check(chunk)
                await self._write_chunk(writer, chunk, meter, watch)
        finally:
            # The body's generator (an open file, the caller's iterator) is closed here,
            # in the writer's task, however the write ends, not later by the GC.
            closer = getattr(chunks, "aclose", None)
            if closer is not None:
                await closer()

    async def _write_chunk(
        self,
        writer: AbstractStreamWriter,
        chunk: Buffer,
        meter: Meter,
        watch: _Watch | None,
    ) -> None:
        # Only the time the server takes to accept a chunk counts against the write
        # timeout, never the time spent in the caller's iterator.
        if watch is not None:
            watch.since = self._watchdog.now()
        await writer.write(chunk)
        if watch is not None:
            watch.since = None
        try:
            meter.sent_chunk(chunk)
        except Exception as exc:
            # The progress callback failed: the caller's bug, reported as is.
            self.source_error = exc
            raise

    def _write_now(self, writer: StreamWriter, meter: Meter, chunk: bytes) -> bool:
        """Write ``chunk`` in the caller's step: a followed body's sink (see
        :class:`~msd_async.body.FollowableChunks`), so a live chunk reaches the socket in
        its producer's step. Only when nothing is waiting to be sent: a slow server then
        meets the write timeout on the writer's own path, which also takes any chunk
        refused here (False) and raises what is wrong with it. Never raises."""
        transport = writer.transport
        if (
            self.error is not None
            or transport is None
            or transport.is_closing()
            or transport.get_write_buffer_size()
        ):
            return False
        try:
            meter.check(chunk)
            _write_without_waiting(writer, chunk)
        except Exception:
            return False
        try:
            meter.sent_chunk(chunk)
        except Exception as exc:
            # The progress callback failed: the caller's bug, reported as is, as on the
            # writer's path (the upload is cut; the request fails with this error).
            self.source_error = self.error = exc
            _abort(transport)
        return True

    def abort(self) -> None:
        """Reset the connection the body went to, if the writer got one: the request
        ended before its answer came, and a graceful close would still send what the
        connection buffers, completing an upload the caller gave up on."""
        _abort(self._connection)

    async def stop(self) -> None:
        """Cancel the writer if it is still running and wait until it has let go of the
        body (at most :data:`_SETTLE_TIMEOUT`; shielded, so it also runs while the caller
        is being cancelled)."""
        task = self._writer_task
        if task is None or self._finished:
            return
        task.cancel()
        with anyio.CancelScope(shield=True), anyio.move_on_after(_SETTLE_TIMEOUT):
            if self._stopped is None:
                self._stopped = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._stopped)


class _Watch:
    """One wait on the server that :class:`_Watchdog` times: a request waiting for its
    answer or reading its body (read timeout), or an upload waiting for the server to
    accept a chunk (write timeout)."""

    __slots__ = (
        "cancelling", "closing", "count", "fired", "heading", "since", "source", "task",
        "timeout",
    )

    def __init__(self, task: asyncio.Task[Any], timeout: float) -> None:
        #: The task to cancel when the wait has lasted ``timeout`` seconds.
        self.task = task
        #: Its cancellations requested before this wait (as asyncio.timeout keeps them): a
        #: call made in cleanup after the task's own cancellation starts at 1, and only
        #: one beyond these and the watchdog's is the caller's.
        self.cancelling = task.cancelling()
        self.timeout = timeout
        #: Loop time the current wait started (or last showed progress); ``None``: not
        #: waiting now.
        self.since: float | None = None
        #: A body being read (aiohttp's ``StreamReader``): bytes it received count as
        #: progress even while one read is still waiting for more.
        self.source: Any = None
        self.count = 0
        #: A request still inside Transport.send: connecting, sending, or waiting for the
        #: response head. False for a write watch.
        self.heading = True
        self.fired = False
        #: Fired by Transport.aclose(), not by a timeout.
        self.closing = False


class _Watchdog:
    """Every read and write timeout of one transport, with one timer.

    aiohttp's ``sock_read`` cancels and re-arms a timer on every socket read (two timers
    for a DescribeObject, five or more for a 1 MiB GET), and a timer per upload was the
    write timeout's cost: asyncio's timers are Python objects in a heap, and each costs
    ~1-2 us of CPU. Instead, each wait marks when it began (``_Watch.since``) and one
    timer sweeps every open wait a few times per timeout, cancelling the task of a wait
    that has lasted its timeout. A stall is therefore noticed between ``timeout`` and
    ``timeout * (1 + 2 / _SWEEPS)`` after the last byte, not to the millisecond.
    """

    __slots__ = ("_at", "_handle", "_interval", "_loop", "_watches", "now")

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watches: dict[_Watch, None] = {}
        self._handle: asyncio.TimerHandle | None = None
        #: When the timer fires next (``inf``: not armed), and the interval it was armed
        #: with.
        self._at = math.inf
        self._interval = math.inf
        self.now = _no_loop_time

    def watch(self, task: asyncio.Task[Any], timeout: float) -> _Watch:
        """Time a new wait of ``task`` (not started yet: set ``since`` when it starts)."""
        watch = _Watch(task, timeout)
        self._watches[watch] = None
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
            self.now = loop.time
        interval = max(timeout / _SWEEPS, _MIN_SWEEP)
        if interval < self._interval:
            # Not armed, or armed for longer timeouts than this one (a deadline capped it).
            # Never for an infinite timeout (Timeouts.read=None): only aclose() ends it.
            at = loop.time() + interval
            if at < self._at:
                self._arm(at, interval)
        return watch

    def unwatch(self, watch: _Watch) -> None:
        self._watches.pop(watch, None)

    def end_requests(self) -> None:
        """Cancel every task still inside :meth:`Transport.send` (the pool is closing):
        aiohttp's close ends the connections it holds, not one still being opened, and a
        call connecting went on until ``Timeouts.connect`` (forever with ``None``)."""
        for watch in list(self._watches):
            if watch.heading:
                watch.fired = watch.closing = True
                del self._watches[watch]
                watch.task.cancel()

    def _arm(self, at: float, interval: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        assert self._loop is not None
        self._at = at
        self._interval = interval
        self._handle = self._loop.call_at(at, self._sweep)

    def _sweep(self) -> None:
        self._handle = None
        self._at = self._interval = math.inf
        assert self._loop is not None
        now = self._loop.time()
        shortest = math.inf
        for watch in list(self._watches):
            since = watch.since
            if since is not None:
                source = watch.source
                if source is not None and source.total_bytes != watch.count:
                    watch.count = source.total_bytes
                    watch.since = since = now
                if now - since >= watch.timeout:
                    watch.fired = True
                    del self._watches[watch]
                    watch.task.cancel()
                    continue
            shortest = min(shortest, watch.timeout)
        if shortest != math.inf:
            interval = max(shortest / _SWEEPS, _MIN_SWEEP)
            self._arm(now + interval, interval)


def _no_loop_time() -> float:
    raise RuntimeError("the watchdog has no event loop yet")  # pragma: no cover


#: Sweeps per timeout: a stall is noticed at most 2 / _SWEEPS of the timeout late.
_SWEEPS: Final = 4
#: The shortest interval between sweeps: a deadline can cap a timeout to almost nothing,
#: and sweeping as often as that would spin the loop.
_MIN_SWEEP: Final = 0.001


def _write_without_waiting(writer: StreamWriter, chunk: bytes) -> None:
    """``await writer.write(chunk, drain=False)``, run to its end in the caller's step.

    aiohttp's ``StreamWriter.write`` suspends only for a trace callback, compression or a
    drain: the transport's session has no trace configs, request bodies are never
    compressed, and ``drain=False`` skips the third (docs/connections.md; checked by
    tests/unit/test_hardening_aiohttp.py). Raises RuntimeError, having written nothing,
    if it ever suspends."""
    step = writer.write(chunk, drain=False)
    try:
        step.send(None)
    except StopIteration:
        return
    step.close()
    raise RuntimeError("aiohttp's StreamWriter.write suspended without a drain")


def _abort(transport: asyncio.WriteTransport | None) -> None:
    """Reset the connection now: discard what is buffered and send RST, not FIN, so the
    server cannot mistake what it got for a body that ended."""
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # ValueError: uvloop's socket of a connection already closed (fd -1), when the
        # writer reset it before the request's own end does.
        with contextlib.suppress(OSError, AttributeError, TypeError, ValueError):
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

    def fail_waiters(self, error: Callable[[], BaseException]) -> None:
        """Raise a new ``error()`` in every queued call (the pool is closing: no slot will
        come). One instance raised in many tasks would gather all their tracebacks."""
        waiters, self._waiters = self._waiters, collections.deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(error())

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
    if type(exc) is aiohttp.ClientResponseError:
        # aiohttp's parser refused the answer's head (its "400" is its own verdict, not a
        # status the server sent): its message spans lines and points at a byte.
        what = " ".join(exc.message.split())
        return ConnectionLostError(
            f"the answer from {url} is not valid HTTP/1.1 ({what}); is the endpoint right "
            "(http:// to an HTTPS port, or not a MediaStore endpoint)?"
        )
    lost = ConnectionLostError(f"the connection to {url} failed: {exc}")
    if isinstance(exc, _UnwrittenDisconnect):
        lost.unwritten = True
    return lost


def _closed_error() -> SessionClosedError:
    return SessionClosedError(SESSION_CLOSED_MESSAGE)


def _unsent_closed_error() -> SessionClosedError:
    """The closed session's error for a call that took no connection (not counted in its
    ``attempts``)."""
    return SessionClosedError(SESSION_CLOSED_MESSAGE, unsent=True)


def _timed_out(watch: _Watch | None) -> TypeGuard[_Watch]:
    """Whether the CancelledError being handled is the watchdog's alone; if so the task
    carries on (the cancellation was ours, not the caller's). The caller's own (a
    ``task.cancel()``, a deadline) landing in the same loop iteration stays pending and
    is delivered: taken for the timeout, it was lost, and the call even went on.
    Counted from the wait's start, not from 0: cleanup after the task's own cancellation
    starts at 1, and took every timeout of its calls for a new cancellation."""
    if watch is None or not watch.fired:
        return False
    return watch.task.uncancel() <= watch.cancelling


def _read_timeout(watch: _Watch, url: str) -> NoReturn:
    """Raise the error for a wait the watchdog ended (after :func:`_timed_out`)."""
    raise ReadTimeout(f"no response bytes from {url} within the read timeout") from (
        TimeoutError(f"nothing was received for {watch.timeout} s")
    )


#: Always called with the loop: on Python 3.11, finding the running loop costs a getpid()
#: system call (asyncio checks for a fork), twice per request before this.
_current_task: Final = asyncio.current_task


class Response:
    """An HTTP response whose body is still on the wire; holds one pool slot.

    Release it (``release()`` after reading everything, or ``close()`` to drop the
    connection) exactly once; both are idempotent. :meth:`read` does it itself, on every
    exit: a failed or cancelled read closes the connection and frees the slot.
    """

    __slots__ = ("_done", "_host", "_payload", "_raw", "_transport", "_url", "_watch")

    def __init__(
        self,
        raw: aiohttp.ClientResponse,
        transport: Transport,
        url: str,
        payload: _UploadPayload | None = None,
        host: _Slots | None = None,
        watch: _Watch | None = None,
    ) -> None:
        self._raw = raw
        self._transport = transport
        self._url = url
        self._payload = payload
        self._host = host
        self._done = False
        #: The read timeout of the body (see _Watchdog); gone once the response is.
        self._watch = watch
        if watch is not None:
            watch.source = raw.content

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
        watch = self._watch
        try:
            if watch is not None:
                # The reading task, as it is now (see _Watch.cancelling).
                watch.task = task = _current_task(self._transport._loop)  # type: ignore[assignment]
                watch.cancelling = task.cancelling()  # type: ignore[union-attr]
                watch.since = self._transport._watchdog.now()
            data = await self._raw.read()
            ok = True
        except MediaStoreError:
            raise
        except _FOREIGN_ERRORS as exc:
            raise _translate(exc, self._url) from exc
        except asyncio.CancelledError:
            if _timed_out(watch):
                _read_timeout(watch, self._url)
            raise
        finally:
            if watch is not None:
                watch.since = None
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
        watch = self._watch
        try:
            if watch is not None:
                # The reading task, as it is now (see _Watch.cancelling).
                watch.task = task = _current_task(self._transport._loop)  # type: ignore[assignment]
                watch.cancelling = task.cancelling()  # type: ignore[union-attr]
                watch.since = self._transport._watchdog.now()
            if n < 0:
                return await self._raw.content.readany()
            return await self._raw.content.read(n)
        except MediaStoreError:
            raise
        except _FOREIGN_ERRORS as exc:
            raise _translate(exc, self._url) from exc
        except asyncio.CancelledError:
            if _timed_out(watch):
                _read_timeout(watch, self._url)
            raise
        finally:
            if watch is not None:
                watch.since = None

    def release(self) -> None:
        """Return the connection to the pool (closed instead if the body was not drained)."""
        if not self._done:
            self._done = True
            self._raw.release()
            self._transport._release_slot(self._host, self._watch, self._raw)

    def close(self) -> None:
        """Drop the connection: for an abandoned body or a broken exchange."""
        if not self._done:
            self._done = True
            self._raw.close()
            self._transport._release_slot(self._host, self._watch, self._raw)

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        # Dropped unreleased: a reply a web framework never sent, a download entered and
        # never exited. Without this its slot would be lost for good, and the pool would
        # shrink by one each time until every call waited for Timeouts.pool and failed.
        if self._done:
            return
        loop = self._transport._loop
        if loop is None or loop.is_closed():
            return
        self._done = True
        raw, transport, host, watch = self._raw, self._transport, self._host, self._watch

        def free() -> None:
            raw.close()
            transport._release_slot(host, watch, raw)

        # Collected on the loop's thread as a rule; the slot's waiters must be woken there.
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            free()
        else:
            loop.call_soon_threadsafe(free)
        _warn(
            f"a response from {self._url} was dropped without being released; its "
            "connection was closed (close the reply, or exit the download's async with)",
            ResourceWarning,
            source=self,
        )


#: The read watch of the request the current task is sending without a body (see send()).
_HEAD: Final[ContextVar[_Watch | None]] = ContextVar("msd_async_head", default=None)


class _WatchedResponse(aiohttp.ClientResponse):
    """aiohttp's response, telling the watchdog when the wait for the answer begins: after
    the connection is made and the request written (aiohttp's ``sock_read`` starts at the
    same point)."""

    async def start(self, connection: aiohttp.connector.Connection) -> aiohttp.ClientResponse:
        watch = _HEAD.get()
        if watch is not None:
            # The task's loop, not get_running_loop(): no getpid() (see _current_task).
            watch.since = watch.task.get_loop().time()
        return await super().start(connection)


class _CleanRequest(aiohttp.ClientRequest):
    """aiohttp's request, refusing a pooled connection the server sent bytes on while it
    sat idle.

    aiohttp parses whatever arrives on an idle keep-alive connection (a server that sent
    more than the Content-Length it declared, in a later packet) and queues it as an
    answer; the next request on that connection was handed that stale answer as its own
    (another object's bytes delivered as the one asked for). Nothing can have been sent
    for this request yet, so anything queued there was never asked for: the connection is
    dropped and aiohttp sends the request once more on a new one (as for a pooled
    connection found dead; a PUT or DELETE, whose payload aiohttp will not resend, goes to
    the retry policy as a lost connection instead).
    """

    def send(self, conn: aiohttp.connector.Connection) -> Any:
        # Not a coroutine of its own: the check costs an attribute read, not a frame.
        protocol = conn.protocol
        if protocol is not None and protocol.should_close:
            raise _UnwrittenDisconnect(
                "the server sent bytes on this idle keep-alive connection that no request "
                "asked for; the connection was dropped"
            )
        return super().send(conn)


class _UnwrittenDisconnect(aiohttp.ServerDisconnectedError):
    """A pooled connection refused before any byte of the request was written to it
    (aiohttp resends a GET on a new connection itself; a PUT or DELETE reaches our retry
    policy as a :class:`~msd_async.errors.ConnectionLostError` marked ``unwritten``, so a
    DELETE retried after it does not take a 404 for the work of an attempt never sent)."""


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
        #: The aiohttp responses handed out and not yet released, whose readers aclose()
        #: must wake (the raw ones: holding our Response would keep a dropped one from
        #: being collected, and from freeing its slot).
        self._live: set[aiohttp.ClientResponse] = set()
        self._closed = False
        self._watchdog = _Watchdog()
        #: The loop of the aiohttp session (made in _client(), bound to its loop).
        self._loop: asyncio.AbstractEventLoop | None = None
        self.stats = PoolStats(self)

    @property
    def closed(self) -> bool:
        return self._closed

    @staticmethod
    def host_header(base: str, host: str) -> dict[str, str]:
        """The ``Host`` header requests to ``base`` (``scheme://host[:port]``) must carry
        themselves to send the signed ``host``: none where aiohttp's own (the URL's
        ``host_port_subcomponent``) is already that, which saves aiohttp merging one more
        header into every request."""
        if URL(base, encoded=True).host_port_subcomponent == host:
            return {}
        return {"Host": host}

    def _client(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None or session.closed:
            if self._closed:
                # A client kept past its Session would otherwise open a new pool that
                # nobody closes.
                raise _unsent_closed_error()
            self._loop = asyncio.get_running_loop()
            connector = aiohttp.TCPConnector(
                limit=0, limit_per_host=0, keepalive_timeout=self.limits.keepalive_expiry
            )
            t = self.timeouts
            session = self._session = aiohttp.ClientSession(
                connector=connector,
                # No sock_read: the read timeout is the watchdog's (see _Watchdog).
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=None, sock_connect=t.connect, sock_read=None
                ),
                response_class=_WatchedResponse,
                request_class=_CleanRequest,
                auto_decompress=False,
                # Explicit headers instead of a session-wide skip_auto_headers, which sends
                # every request through aiohttp's slower header path. Bodies are never
                # compressed by MediaStore, and we hand them over undecoded: ask for identity,
                # as botocore does.
                headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
            )
        return session

    def _release_slot(
        self,
        host: _Slots | None,
        watch: _Watch | None = None,
        raw: aiohttp.ClientResponse | None = None,
    ) -> None:
        if raw is not None:
            self._live.discard(raw)
        if watch is not None:
            self._watchdog.unwatch(watch)
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
        # Left set if the call's deadline ends the wait: that attempt sent nothing.
        waiting_before_sending.set(WAITING_FOR_CONNECTION)
        try:
            async with asyncio.timeout(self.timeouts.pool):
                if waiting_for is not None:
                    await waiting_for.acquire()
                    waiting_for = None
                await self._slots.acquire()
            waiting_before_sending.set(None)
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
                raise _unsent_closed_error()
        self._in_use += 1
        payload: _UploadPayload | None = None
        timeout = self.timeouts.read if read_timeout is None else read_timeout
        # Every request is watched, even without a read timeout (never fired then): it is
        # how aclose() finds the calls still connecting.
        watch = self._watchdog.watch(
            _current_task(self._loop), math.inf if timeout is None else timeout  # type: ignore[arg-type]
        )
        # Only what differs from the session's defaults, so a plain GET passes no extras.
        kwargs: dict[str, Any] = _NO_KWARGS
        if body is not None or method == "DELETE":
            kwargs = {}
            if body is not None:
                assert meter is not None
                payload = _UploadPayload(
                    body, meter, self.timeouts.write, self._watchdog, watch, self._loop
                )
                kwargs["data"] = payload
                if chunked or body.size is None:
                    kwargs["chunked"] = True
                if "content-type" not in headers:
                    # aiohttp would label the body application/octet-stream; the service
                    # must see that no Content-Type was given (ListItems then omits it).
                    kwargs["skip_auto_headers"] = _NO_CONTENT_TYPE
            else:
                # An empty body that aiohttp counts as consumed, so it never resends a
                # DELETE by itself (see _UploadPayload.consumed); on the wire it is the
                # same "Content-Length: 0" aiohttp sends for a DELETE without a body.
                payload = _UploadPayload(
                    None, None, self.timeouts.write, self._watchdog, watch, self._loop
                )
                kwargs["data"] = payload
                kwargs["skip_auto_headers"] = _NO_CONTENT_TYPE
        # Without a body the wait for the answer starts when aiohttp starts reading it
        # (after connecting): _WatchedResponse.start() finds the watch here.
        token = _HEAD.set(watch) if payload is None and watch is not None else None
        # Translated inline (as in read_some): a generator-based context manager per request
        # is measurable on small requests.
        try:
            raw = await session.request(
                method, URL(url, encoded=True), headers=headers, allow_redirects=False, **kwargs
            )
        except BaseException as exc:
            mapped: BaseException | None = None
            cause: BaseException | None = None
            if isinstance(exc, asyncio.CancelledError) and _timed_out(watch):
                if watch.closing:
                    # aclose() ended it (connecting, sending, or waiting for the answer): the
                    # request may have reached the origin, as for the connections aiohttp's
                    # close drops.
                    mapped, cause = _closed_error(), ConnectionAbortedError(
                        "the session closed while this request was in flight"
                    )
                else:
                    mapped = ReadTimeout(f"no response bytes from {url} within the read timeout")
                    cause = TimeoutError(f"nothing was received for {watch.timeout} s")
            elif not isinstance(exc, MediaStoreError) and isinstance(exc, _FOREIGN_ERRORS):
                if self._closed and (payload is None or payload.source_error is None):
                    # aclose() dropped the connection under this request ("Connector is
                    # closed", a disconnect): the cause is the closed session.
                    mapped, cause = _closed_error(), exc
                else:
                    mapped, cause = _mapped(exc, url, payload)
            self._release_slot(host, watch)
            if payload is not None:
                payload.abort()
                await payload.stop()
            if mapped is None:
                raise
            raise mapped from cause
        finally:
            if token is not None:
                _HEAD.reset(token)
        if watch is not None:
            watch.heading = False
            watch.since = None
        self._live.add(raw)
        return Response(raw, self, url, payload, host, watch)

    async def aclose(self) -> None:
        """Close every pooled connection; later sends, and calls queued for a connection,
        raise :class:`SessionClosedError`."""
        self._closed = True
        for gate in (self._slots, *self._hosts.values()):
            gate.fail_waiters(_unsent_closed_error)
        self._watchdog.end_requests()
        # aiohttp closes the connections of responses still being read without waking
        # their readers: a download mid-body waited for Timeouts.read (forever with
        # read=None). Each reader hears that the session closed, at once.
        live, self._live = self._live, set()
        for raw in live:
            raw.content.set_exception(_closed_error())
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()
