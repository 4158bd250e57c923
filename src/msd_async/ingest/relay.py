"""The relay: an HTTP server that takes an encoder's unsigned PUT/POST/DELETE requests and
hands them to a live publisher, which signs, orders, retries and deletes them.

Encoders such as ffmpeg, Shaka Packager and GPAC push HLS/DASH with plain HTTP and retry
nothing, so the relay's answers are shaped to keep them going:

- A media body is handed to the publisher as soon as its headers arrive and streams through
  as it arrives (the publisher sends it as a STREAMING upload; what arrived since its last
  take goes as one chunk), so low latency survives the relay: nothing waits for the whole
  body.
- Manifests (``.m3u8``, ``.mpd``) are read whole, then published; the publisher stores them
  only after what they reference, and the newest version wins.
- The encoder gets its answer once its body has arrived completely, never after an origin
  round trip: errors at the origin are the publisher's to retry. ``204`` when the object is
  on its way; ``202`` when the publisher gave it up before its body ended (the rest of the
  body is read and discarded, so the encoder's connection stays usable).
- A request whose body arrived completely is published even if the encoder has gone. ffmpeg
  with ``-http_persistent 1`` pipelines its PUTs and exits right after the final manifest
  without reading the answers, so the relay reads each connection to its end and handles
  every complete request in it, whatever happens to the answers. (This is why the relay
  speaks HTTP/1.1 through h11 over asyncio streams rather than aiohttp.web: on a closed
  connection aiohttp.web drops pipelined requests not yet handled and fails the body reads
  of the current one, even when the whole body is already buffered.)
- A request cut mid-body is not published: its upload is failed with
  :class:`IncompleteBodyError`, which aborts a STREAMING upload at the origin.
- DELETE is answered ``204`` at once and handed to the publisher, which delays it by the
  sliding-window rules (RFC 8216 section 6.2.2).
- A bad request gets a 4xx with the reason in the body, and the connection is closed:
  ``400`` for a path MediaStore does not accept, malformed HTTP, a malformed chunk, or both
  Content-Length and Transfer-Encoding (RFC 9112 section 6.3), ``401`` without the
  configured credentials (decided on the head, before any body is read), ``405`` for
  another method, ``411`` for a PUT with neither length nor chunking, ``413`` over the
  object size limit.
- What an encoder can make the relay hold is bounded: connections (``max_connections``,
  one more gets ``503``), the time a request head may take (``idle_timeout``, however
  slowly its bytes trickle), and the bytes of bodies held for retries (``max_buffer``,
  shared by all connections: when it is full the relay stops reading, and encoders feel
  TCP back-pressure instead of the relay growing).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hmac
import ipaddress
import logging
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import unquote, urlsplit

import h11

from .. import rules
from .._listen import listen, url_host
from ..errors import ClientValidationError, MediaStoreError
from ._publisher import PublicationLike, PublisherLike, check_seconds
from ._report import ObjectRecord, Reporter
from ._report import cause as _cause

__all__ = [
    "DEFAULT_DRAIN_TIMEOUT",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_KEEPALIVE_TIMEOUT",
    "MANIFEST_EXTENSIONS",
    "SECRET_HEADER",
    "IncompleteBodyError",
    "ObjectRecord",
    "Relay",
    "RelayStats",
    "is_loopback",
    "minimum_buffer",
]

logger = logging.getLogger("msd_async.ingest")

#: Bodies of these are read whole before publishing: a manifest is small, and the publisher
#: must see all of it to know what it references.
MANIFEST_EXTENSIONS: Final = (".m3u8", ".m3u", ".mpd")
#: The header an encoder sends the shared secret in (ffmpeg: ``-headers "X-Relay-Secret: s"``).
SECRET_HEADER: Final = "X-Relay-Secret"
#: How long :meth:`Relay.aclose` waits for objects already handed over to reach an outcome.
DEFAULT_DRAIN_TIMEOUT: Final = 30.0
#: A connection that sends nothing for this long is closed; a body in progress is then cut.
#: DASH-IF Live Media Ingest section 5.2.9 asks a receiver to abort a stalled upload, and
#: MediaStore cancels any upload not finished within 30 s anyway.
DEFAULT_IDLE_TIMEOUT: Final = 30.0
#: An idle persistent connection between requests is kept this long: encoders such as
#: ffmpeg (-http_persistent 1) reuse theirs for the next segment, however long it takes.
DEFAULT_KEEPALIVE_TIMEOUT: Final = 300.0
#: Connections served at once; one more is answered ``503`` and closed.
DEFAULT_MAX_CONNECTIONS: Final = 256
#: Bytes of request bodies held at once (received and not yet settled by the publisher,
#: which keeps a body to retry it). Beyond it the relay stops reading from encoders.
DEFAULT_MAX_BUFFER: Final = 64 * 1024 * 1024
#: Bytes read from a socket at once during a body, and while waiting for a request head
#: (small: every connection waiting for its next request holds that much of the budget).
_READ_SIZE: Final = 256 * 1024
_HEAD_READ_SIZE: Final = 1024
#: The asyncio stream buffer per connection (the transport pauses at twice this): bytes the
#: kernel handed over that the relay has not read yet, outside the body budget.
_STREAM_LIMIT: Final = 64 * 1024
#: How long a connection closed after an error answer keeps being read, so the answer is
#: not lost to a TCP reset of unread data.
_LINGER: Final = 1.0
#: Once the relay is closing, how long a connection between requests waits for more: what
#: the encoder sent before the shutdown began is already received (``ffmpeg ...; kill
#: $relay`` sends its final playlist a moment before) and is read and handled; a connection
#: that gets nothing more within this is closed.
_CLOSE_GRACE: Final = 0.1
_SERVER_HEADER: Final = (b"server", b"msd-relay")


def minimum_buffer(max_connections: int) -> int:
    """The smallest ``max_buffer`` for ``max_connections``: every connection waiting for a
    request head reserves a small read from the budget."""
    return 2 * max_connections * _HEAD_READ_SIZE


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) only accepts local connections."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class IncompleteBodyError(ClientValidationError):
    """The encoder's request ended before its body did; the upload is aborted, not stored."""


@dataclass(slots=True, repr=False)
class RelayStats:
    """Counters since the relay started. ``in_flight``: bodies still arriving;
    ``handed_over``: objects given to the publisher; ``cut``: requests that ended mid-body;
    ``rejected``: requests answered 4xx; ``refused_connections``: connections over
    ``max_connections``, answered 503; ``buffered``: body bytes held now (received, not yet
    settled), ``buffered_peak`` its highest value; ``paused``: times a read waited for room
    in the body budget."""

    connections: int = 0
    requests: int = 0
    bytes_in: int = 0
    in_flight: int = 0
    handed_over: int = 0
    deletes: int = 0
    rejected: int = 0
    cut: int = 0
    refused_connections: int = 0
    buffered: int = 0
    buffered_peak: int = 0
    paused: int = 0

    def __repr__(self) -> str:
        return (
            f"<RelayStats {self.requests} requests, {self.handed_over} handed over, "
            f"{self.bytes_in:,} B in, {self.in_flight} receiving, {self.cut} cut, "
            f"{self.rejected} rejected, buffered {self.buffered:,} B "
            f"(peak {self.buffered_peak:,})>"
        )


class _Budget:
    """The body budget shared by every connection: a read reserves its room before it
    happens, so the bytes held stay within ``limit``; a full budget makes reads wait (the
    encoders feel it as TCP back-pressure).

    A body is held until its outcome, and its outcome needs all of it, while the publisher
    uploads a rendition's objects in arrival order: with the budget full of bodies still
    arriving, none could finish (each would wait for its media deadline). So the oldest
    body that holds any of the budget (no older one left to give bytes back) may always
    read, past the limit if need be: the budget is passed by at most that one body, and a
    stalled origin still stops every other read."""

    def __init__(self, limit: int, stats: RelayStats) -> None:
        self.limit = limit
        self._stats = stats
        #: Bodies received or arriving and not yet settled, oldest first (a dict keeps
        #: insertion order).
        self._bodies: dict[object, None] = {}
        self._room = asyncio.Event()
        self._room.set()

    def begin(self, body: object) -> None:
        """A request head arrived: its body now holds (or will hold) part of the budget."""
        self._bodies[body] = None

    def finished(self, body: object) -> None:
        """``body``'s outcome is known: the next oldest may read past the limit."""
        if self._bodies.pop(body, 0) is None:
            self._room.set()

    async def reserve(self, most: int, body: object | None = None) -> int:
        """Wait for room; reserve and return up to ``most`` bytes (at least 1). ``body``:
        the body being read (``None`` for a request head)."""
        stats = self._stats
        if stats.buffered >= self.limit:
            stats.paused += 1
            while stats.buffered >= self.limit:
                if body is not None and next(iter(self._bodies), None) is body:
                    granted = most
                    break
                self._room.clear()
                await self._room.wait()
            else:
                granted = min(most, self.limit - stats.buffered)
        else:
            granted = min(most, self.limit - stats.buffered)
        stats.buffered += granted
        stats.buffered_peak = max(stats.buffered_peak, stats.buffered)
        return granted

    def release(self, size: int) -> None:
        if size <= 0:
            return
        self._stats.buffered -= size
        if self._stats.buffered < self.limit:
            self._room.set()


class _ResetIsAnEnd(asyncio.StreamReaderProtocol):
    """An encoder's connection whose reset ends its stream like a close: the bytes received
    before the reset stay readable.

    A socket closed with data still unread resets its connection, and an encoder that
    pipelines and leaves without reading its answers (ffmpeg's last requests) does just
    that. asyncio then fails every later read with the error, even of bytes it already
    received, and the complete requests among them would never be handled. Read to the
    end instead, a request the reset cut is still cut, as at any other end."""

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(None if isinstance(exc, OSError) else exc)


class _Reject(Exception):
    """Answer this request with a 4xx and close the connection."""

    def __init__(
        self, status: int, reason: str, headers: list[tuple[str, str]] | None = None
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or []


class _BodyPipe:
    """A request body on its way to the publisher, as a one-shot async iterator: each chunk
    is yielded as soon as it arrives (the publisher keeps what it needs to retry). A cut
    request fails the iterator with :class:`IncompleteBodyError`, which aborts the STREAMING
    upload at the origin. When the publisher gives the object up it closes the iterator;
    from then on :attr:`abandoned` is true and chunks are dropped.
    """

    def __init__(self) -> None:
        self._chunks: deque[bytes | bytearray] = deque()
        self._done = False
        self._error: BaseException | None = None
        self._changed = asyncio.Event()
        self.received = 0
        self.abandoned = False

    def feed(self, chunk: bytes | bytearray) -> None:
        self.received += len(chunk)
        if not self.abandoned:
            self._chunks.append(chunk)
            self._changed.set()

    def finish(self) -> None:
        self._done = True
        self._changed.set()

    def fail(self, error: BaseException) -> None:
        self._error = error
        self._changed.set()

    def release(self) -> None:
        """Drop what was not consumed (the object has its outcome)."""
        self.abandoned = True
        self._chunks.clear()

    def __aiter__(self) -> _BodyPipe:
        return self

    async def __anext__(self) -> bytes:
        while True:
            if self._error is not None:
                raise self._error
            if self._chunks:
                # Everything that arrived since the last hand-over, as one chunk: h11 cuts
                # a body into its chunked-encoding pieces (ffmpeg sends 32 KiB ones), and
                # each chunk costs the publisher an upload write and its bookkeeping. Only
                # what is already here is joined: nothing waits for more.
                chunks = self._chunks
                if len(chunks) == 1:
                    return bytes(chunks.popleft())
                joined = b"".join(chunks)
                chunks.clear()
                return joined
            if self._done or self.abandoned:
                raise StopAsyncIteration
            self._changed.clear()
            await self._changed.wait()

    async def aclose(self) -> None:
        """The consumer is done: after the whole body, or because it gave the object up."""
        if not (self._done and not self._chunks):
            self.release()


@dataclass(slots=True, eq=False)  # hashed by identity: the budget keys bodies by it
class _Job:
    """One request handed to the submission queue, in arrival order."""

    method: str
    path: str
    body: bytes | _BodyPipe | None
    started: float
    content_type: str | None = None
    cache_control: str | None = None
    cancelled: bool = False
    received: float | None = None
    #: Bytes of the body budget this job holds until its outcome is known.
    held: int = 0
    publication: asyncio.Future[PublicationLike | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass(slots=True)
class _Exchange:
    """The request being received on one connection."""

    method: str
    path: str
    job: _Job | None
    limit: int
    manifest: bool
    parts: list[bytes | bytearray] = field(default_factory=list)
    size: int = 0
    given_up: bool = False


class Relay:
    """An HTTP server in front of a live publisher, for encoders that cannot sign.

    ``publisher``: an open :class:`msd_async.live.LivePublisher` (or anything with its
    ``publish``/``delete`` methods); the relay does not close it. ``host``/``port``: where to
    listen (default ``127.0.0.1``, port 0 = any free port; a name listens on each of its
    addresses, all on the one port :attr:`url` names). A non-loopback ``host`` needs
    ``allow_remote=True``, since the relay signs whatever it receives: pair it with ``secret``
    (the encoder sends it in the ``X-Relay-Secret`` header) or ``basic_auth=(user, password)``
    (``http://user:password@host/...`` in the encoder's URL); when both are set either
    admits a request. ``prefix`` is put in front of every path (``"live/ch1"`` turns
    ``PUT /index.m3u8`` into ``live/ch1/index.m3u8``). The publisher's automatic deletes
    are scoped by the publisher's own ``prefix``, not this one: when streams share a
    container, give the prefix to the :class:`~msd_async.live.LivePublisher` (as
    ``msd relay --prefix`` does), so a playlist naming ``../ch2/...`` cannot get another
    stream's objects deleted. ``streaming_limit`` and
    ``manifest_limit`` bound a media body and a manifest body (MediaStore's 10 MB STREAMING
    and 25 MB STANDARD limits by default). ``idle_timeout``: seconds a request's body may
    pause (default 30; the request is then cut and not published), and the most a request
    head may take to arrive whole; an idle connection between requests is kept 300 s.
    ``on_object`` is called with an :class:`ObjectRecord` once each request's object has
    its outcome (also logged on the ``msd_async.ingest`` logger at INFO; a callback that
    raises is logged and the relay carries on). ``drain_timeout``: how long :meth:`aclose`
    waits, in all, for requests in progress and the outcomes (default 30 s).
    ``max_connections``: connections served at once (default 256; one more is answered
    503). ``max_buffer``: bytes of request bodies held
    at once, shared by every connection (default 64 MiB; at least 2 KiB per connection).
    ``media_deadline``: seconds a segment or part is retried before the publisher gives it
    up (default: its duration).

    Use as an async context manager or call :meth:`start` and :meth:`aclose`. Raises
    ``ValueError`` for a non-loopback host without ``allow_remote`` or a ``max_buffer`` too
    small for ``max_connections``, ``OSError`` if the address cannot be bound.
    """

    def __init__(
        self,
        publisher: PublisherLike,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        prefix: str = "",
        allow_remote: bool = False,
        secret: str | None = None,
        basic_auth: tuple[str, str] | None = None,
        streaming_limit: int = rules.STREAMING_OBJECT_LIMIT,
        manifest_limit: int = rules.STANDARD_OBJECT_LIMIT,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        on_object: Callable[[ObjectRecord], object] | None = None,
        drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        media_deadline: float | None = None,
    ) -> None:
        check_seconds("idle_timeout", idle_timeout)
        check_seconds("drain_timeout", drain_timeout, zero=True)
        check_seconds("media_deadline", media_deadline)
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, not {max_connections}")
        if max_buffer < minimum_buffer(max_connections):
            raise ValueError(
                f"max_buffer of {max_buffer:,} B is too small for {max_connections} "
                f"connections: give at least {minimum_buffer(max_connections):,} B "
                "(and more than the largest segment)"
            )
        if not is_loopback(host) and not allow_remote:
            raise ValueError(
                f"refusing to listen on {host}: the relay signs whatever it receives; pass "
                "allow_remote=True (msd relay --allow-remote) and set a secret or Basic auth"
            )
        self._publisher = publisher
        self.host = host
        self.port = port
        self.prefix = rules.normalize_folder_path(prefix) if prefix else ""
        self._secret = secret.encode() if secret is not None else None
        self._basic = (
            None if basic_auth is None else f"{basic_auth[0]}:{basic_auth[1]}".encode()
        )
        self.streaming_limit = streaming_limit
        self.manifest_limit = manifest_limit
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.media_deadline = media_deadline
        self._drain_timeout = drain_timeout
        self.stats = RelayStats()
        self._budget = _Budget(max_buffer, self.stats)
        self.reporter = Reporter(on_object)
        #: One server per listening socket: asyncio's takes one ready-made socket, and the
        #: sockets are bound here (every address of a name on one port).
        self._servers: list[asyncio.Server] = []
        self._protocol: Callable[[], _ResetIsAnEnd] | None = None
        #: Every connection's task, from the moment its transport is made: aclose() waits
        #: for them all, also those whose handler has not started yet.
        self._tasks: set[asyncio.Task[None]] = set()
        #: Each served connection's task -> while it waits between requests, the timeout of
        #: that wait (aclose() shortens it to _CLOSE_GRACE); None while it serves a request.
        self._connections: dict[asyncio.Task[None], asyncio.Timeout | None] = {}
        self._queue: asyncio.Queue[_Job | None] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._closing = False
        #: Set once aclose() no longer waits for connections: one that starts later (the
        #: loop will not hand over another) is closed unread.
        self._stopped = False
        self._closed = False
        #: When aclose() stops waiting (loop time, set by aclose()); abandon() brings it
        #: forward to now.
        self._deadline = 0.0
        self._abandoned = False

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` once started (the bound port when ``port`` was 0)."""
        return f"http://{url_host(self.host)}:{self.port}"

    async def start(self) -> None:
        """Start accepting connections."""
        loop = asyncio.get_running_loop()

        def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            # The task is made here rather than by the protocol (a coroutine callback), so
            # it is known from the start: a connection made as the shutdown begins is
            # waited for even before its first step.
            task = loop.create_task(self._serve(reader, writer))
            self._tasks.add(task)
            task.add_done_callback(self._connection_ended)

        def protocol() -> _ResetIsAnEnd:
            reader = asyncio.StreamReader(limit=_STREAM_LIMIT, loop=loop)
            return _ResetIsAnEnd(reader, connected, loop=loop)

        # asyncio.start_server, with the protocol above, on every address of the host on
        # the one port the url names (msd_async._listen).
        self._protocol = protocol
        sockets = await listen(self.host, self.port)
        try:
            for sock in sockets:
                self._servers.append(await loop.create_server(protocol, sock=sock))
        except BaseException:
            for server in self._servers:
                server.close()
            self._servers.clear()
            for sock in sockets:  # those not served yet; closing twice is harmless
                sock.close()
            raise
        self.port = int(sockets[0].getsockname()[1])
        self._worker = asyncio.create_task(self._submit_loop(), name="msd-relay-submit")

    async def __aenter__(self) -> Relay:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop accepting; let requests in progress finish, and read what encoders already
        sent on connections between requests, including connections still waiting to be
        accepted (each gets 0.1 s for more, then is closed); hand everything received to
        the publisher and wait for those objects' outcomes: all of it within
        ``drain_timeout`` seconds (then requests still arriving are cut, and the publisher
        keeps publishing what is left when it is closed). Idempotent."""
        if self._closed:
            return
        self._closed = self._closing = True
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + (0.0 if self._abandoned else self._drain_timeout)
        try:
            if self._servers:
                # Connections the kernel completed but the loop has not accepted yet may
                # hold whole requests (an encoder that opens a connection per request sent
                # its last ones): closing the listeners would reset them. The relay keeps
                # the listeners open through duplicates once the server is closed, accepts
                # what is in their backlogs itself and serves it like any connection.
                sockets = [sock for server in self._servers for sock in server.sockets]
                listeners = self._duplicate(sockets)
                # asyncio's own loop makes the transport of a connection it accepted a loop
                # step after the accept, and drops it if the server was closed in between
                # (CPython gh-109564): stop its accepting first, and close the server only
                # once what it accepted is connected (two steps: the transport, then
                # connection_made). uvloop connects at once and ignores this remove_reader.
                for listener in sockets:
                    with contextlib.suppress(NotImplementedError):
                        loop.remove_reader(listener.fileno())
                grace_end = loop.time() + _CLOSE_GRACE
                for waiting in self._connections.values():
                    if waiting is not None:
                        when = waiting.when()
                        waiting.reschedule(grace_end if when is None else min(when, grace_end))
                try:
                    for _ in range(2):
                        await asyncio.sleep(0)
                    self._close_servers()
                    backlog = self._take_backlog(listeners)
                finally:
                    self._close_servers()  # also when cancelled during the steps above
                    for listener in listeners:
                        listener.close()
                await self._adopt(backlog)
                while pending := {task for task in self._tasks if not task.done()}:
                    _, late = await asyncio.wait(
                        pending, timeout=max(0.0, self._deadline - loop.time())
                    )
                    for task in late:
                        task.cancel()
                    if late:
                        await asyncio.wait(late)
                for server in self._servers:
                    await server.wait_closed()
        finally:
            self._stopped = True
            if self._worker is not None:
                self._queue.put_nowait(None)
                await self._worker
            await self.reporter.drain(max(0.0, self._deadline - loop.time()))

    def abandon(self) -> None:
        """End the shutdown now (the one in progress, or the next), as its
        ``drain_timeout`` would: requests still arriving are cut, and the objects whose
        outcome is not known yet are reported ``unfinished at shutdown``. For a second
        signal: an operator who will not wait. :meth:`aclose` still has to be awaited."""
        self._abandoned = True
        if self._closing:
            self._deadline = 0.0  # the loop's clock is past it: every wait left is 0 s
            for task in self._tasks:
                task.cancel()
        self.reporter.abandon()

    # --- connections -------------------------------------------------------------------
    def _close_servers(self) -> None:
        for server in self._servers:
            server.close()

    @staticmethod
    def _duplicate(sockets: list[socket.socket]) -> list[socket.socket]:
        """Listening sockets the relay holds open itself (``sockets``: the server's, which
        are wrappers that only offer ``dup``, ``fileno`` and the like)."""
        listeners = []
        for listener in sockets:
            try:
                listeners.append(listener.dup())
            except OSError as exc:  # out of descriptors: its backlog is reset at the close
                logger.warning("connections waiting at shutdown may be dropped: %s", exc)
        return listeners

    @staticmethod
    def _take_backlog(listeners: list[socket.socket]) -> list[socket.socket]:
        """Accept every connection waiting in the listeners' backlogs, then close them."""
        accepted: list[socket.socket] = []
        for listener in listeners:
            with listener:
                listener.setblocking(False)
                while True:
                    try:
                        conn, _ = listener.accept()
                    except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                        break
                    except OSError as exc:  # out of descriptors: the rest are reset
                        logger.warning("connections waiting at shutdown were dropped: %s",
                                       exc)
                        break
                    conn.setblocking(False)
                    accepted.append(conn)
        return accepted

    async def _adopt(self, backlog: list[socket.socket]) -> None:
        """Serve connections accepted at shutdown, as the loop serves those it accepts."""
        loop = asyncio.get_running_loop()
        assert self._protocol is not None
        for position, conn in enumerate(backlog):
            try:
                await loop.connect_accepted_socket(self._protocol, conn)
            except OSError as exc:
                conn.close()
                logger.warning("a connection waiting at shutdown was dropped: %s", exc)
            except BaseException:
                for rest in backlog[position:]:
                    rest.close()
                raise

    def _connection_ended(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        # What asyncio's stream server does with its handler's failure: report, not raise.
        if not task.cancelled() and (exc := task.exception()) is not None:
            task.get_loop().call_exception_handler({
                "message": "Unhandled exception in the relay's connection handler",
                "exception": exc,
                "task": task,
            })

    async def _refuse_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Over ``max_connections``: answer 503 without parsing anything, and close."""
        self.stats.refused_connections += 1
        text = (f"the relay serves {self.max_connections} connections at once; "
                "retry shortly\n").encode()
        with contextlib.suppress(ConnectionError, OSError):
            writer.write(
                b"HTTP/1.1 503 Service Unavailable\r\nserver: msd-relay\r\nretry-after: 1\r\n"
                b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(text), text)
            )
        await self._linger_close(reader, writer)

    @staticmethod
    async def _linger_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Close after a final answer, reading (and dropping) what the peer still sends for
        a moment: closing with unread data sends a TCP reset, which can destroy the answer
        before the peer reads it."""
        with contextlib.suppress(Exception):
            await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
            async with asyncio.timeout(_LINGER):
                while await reader.read(_READ_SIZE):
                    pass
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if self._stopped:
            logger.warning("a connection made after the relay stopped was closed unread")
            writer.close()
            return
        if len(self._connections) >= self.max_connections:
            await self._refuse_connection(reader, writer)
            return
        self._connections[task] = None
        self.stats.connections += 1
        loop = asyncio.get_running_loop()
        conn = h11.Connection(h11.SERVER)
        exchange: _Exchange | None = None
        writable = True
        linger = False
        eof = False
        # When the request head now awaited began (the connection's start, or its first
        # byte after an idle keep-alive): the whole head must arrive within idle_timeout.
        head_started: float | None = loop.time()
        # Bytes read and charged to the budget that no body has taken yet (heads, framing,
        # discarded bodies): given back before the next read.
        unclaimed = 0

        async def send(*events: h11.Event) -> None:
            # The encoder may be gone (it pipelined and left): answers are best-effort,
            # the requests it completed are handled all the same.
            nonlocal writable
            data = b"".join(conn.send(e) or b"" for e in events)
            if not writable:
                return
            try:
                writer.write(data)
                await writer.drain()
            except (ConnectionError, OSError):
                writable = False

        async def answer(
            status: int,
            text: str = "",
            headers: list[tuple[str, str]] | None = None,
            close: bool = False,
        ) -> None:
            nonlocal linger
            body = (text + "\n").encode() if text else b""
            fields = [_SERVER_HEADER, (b"content-length", str(len(body)).encode())]
            fields += [(k.encode(), v.encode()) for k, v in headers or ()]
            if close:
                fields.append((b"connection", b"close"))
                linger = True
            events: list[h11.Event] = [h11.Response(status_code=status, headers=fields)]
            if body:
                events.append(h11.Data(data=body))
            events.append(h11.EndOfMessage())
            await send(*events)

        def claim(job: _Job | None, size: int) -> None:
            """``size`` bytes just read now belong to ``job``'s body until its outcome."""
            nonlocal unclaimed
            if job is None:
                return
            taken = min(size, unclaimed)
            unclaimed -= taken
            job.held += taken

        try:
            while True:
                try:
                    event = conn.next_event()
                except h11.RemoteProtocolError as exc:
                    if exchange is not None:
                        if not eof and writable and conn.our_state is h11.SEND_RESPONSE:
                            # Malformed framing mid-body, not a connection that ended.
                            self.stats.rejected += 1
                            logger.warning("%s %s rejected 400: malformed body: %s",
                                           exchange.method, exchange.path, exc)
                            self._cut(exchange, f"malformed body ({exc})", counted=False)
                            exchange = None
                            await answer(400, f"malformed request body: {exc}", close=True)
                        else:
                            self._cut(exchange, f"the connection ended mid-body ({exc})")
                            exchange = None
                    elif conn.their_state is not h11.CLOSED and writable and conn.our_state in (
                        h11.IDLE, h11.SEND_RESPONSE
                    ):
                        self.stats.rejected += 1
                        await answer(exc.error_status_hint, f"malformed request: {exc}",
                                     close=True)
                    break
                if event is h11.NEED_DATA:
                    self._budget.release(unclaimed)
                    unclaimed = 0
                    between = exchange is None and conn.their_state is h11.IDLE
                    if exchange is not None:
                        wait = self.idle_timeout
                    elif head_started is not None or conn.trailing_data[0]:
                        if head_started is None:
                            head_started = loop.time()
                        wait = head_started + self.idle_timeout - loop.time()
                        if wait <= 0:
                            logger.warning("connection closed: no complete request head "
                                           "within %g s", self.idle_timeout)
                            break
                    else:
                        wait = max(self.idle_timeout, DEFAULT_KEEPALIVE_TIMEOUT)
                    if between and self._closing:
                        wait = min(wait, _CLOSE_GRACE)
                    paused = loop.time()
                    room = await self._budget.reserve(
                        _READ_SIZE if exchange is not None else _HEAD_READ_SIZE,
                        None if exchange is None else exchange.job,
                    )
                    if head_started is not None and exchange is None:
                        head_started += loop.time() - paused  # the relay's own wait
                    try:
                        async with asyncio.timeout(wait) as waiting:
                            if between:
                                self._connections[task] = waiting
                            data = await reader.read(room)
                    except TimeoutError:
                        self._budget.release(room)
                        if exchange is not None:
                            self._cut(exchange, f"no data for {self.idle_timeout:g} s")
                            exchange = None
                        elif self._closing:
                            if conn.trailing_data[0]:
                                logger.warning("connection closed at shutdown: a request "
                                               "head was still arriving")
                        elif head_started is not None:
                            logger.warning("connection closed: no complete request head "
                                           "within %g s", self.idle_timeout)
                        break
                    except (ConnectionError, OSError):
                        data = b""
                    except BaseException:
                        self._budget.release(room)
                        raise
                    finally:
                        self._connections[task] = None
                    self._budget.release(room - len(data))
                    unclaimed = len(data)
                    if not data:
                        eof = True
                    elif exchange is None and head_started is None:
                        head_started = loop.time()
                    conn.receive_data(data)
                    continue
                if event is h11.PAUSED:
                    break  # only after a response with Connection: close; nothing more to do
                if isinstance(event, h11.ConnectionClosed):
                    break
                if isinstance(event, h11.Request):
                    self.stats.requests += 1
                    head_started = None
                    try:
                        exchange = self._begin(event)
                    except _Reject as reject:
                        self.stats.rejected += 1
                        target = event.target.decode("latin-1")
                        logger.warning("%s %s rejected %d: %s", event.method.decode(), target,
                                       reject.status, reject.reason)
                        await answer(reject.status, reject.reason, reject.headers, close=True)
                        break
                    if exchange is None:  # a DELETE, already handed over
                        continue
                    if conn.they_are_waiting_for_100_continue:
                        await send(h11.InformationalResponse(status_code=100, headers=[]))
                    continue
                if isinstance(event, h11.Data):
                    if exchange is None:
                        continue
                    try:
                        kept = self._feed(exchange, event.data)
                    except _Reject as reject:
                        self.stats.rejected += 1
                        logger.warning("%s %s rejected %d: %s", exchange.method, exchange.path,
                                       reject.status, reject.reason)
                        await answer(reject.status, reject.reason, close=True)
                        exchange = None
                        break
                    if kept:
                        claim(exchange.job, len(event.data))
                    continue
                if isinstance(event, h11.EndOfMessage):
                    if exchange is not None:
                        status, text = self._complete(exchange)
                        exchange = None
                    else:
                        status, text = 204, ""
                    await answer(status, text)
                    if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                        try:
                            conn.start_next_cycle()
                        except h11.LocalProtocolError:
                            break
                    else:
                        break
        except asyncio.CancelledError:
            if exchange is not None:
                self._cut(exchange, "the relay stopped mid-body")
                exchange = None  # counted once, here
            raise
        finally:
            self._budget.release(unclaimed)
            if exchange is not None:
                self._cut(exchange, "the connection ended mid-body")
            self._connections.pop(task, None)
            if linger and writable and not eof:
                await self._linger_close(reader, writer)
            else:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

    # --- requests ----------------------------------------------------------------------
    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        if self._secret is None and self._basic is None:
            return True
        if self._secret is not None:
            given = headers.get(SECRET_HEADER.lower().encode(), b"")
            if hmac.compare_digest(given, self._secret):
                return True
        if self._basic is not None:
            scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
            if scheme.lower() == b"basic":
                try:
                    given_pair = base64.b64decode(token.strip(), validate=True)
                except ValueError:
                    return False
                return hmac.compare_digest(given_pair, self._basic)
        return False

    def _begin(self, request: h11.Request) -> _Exchange | None:
        """Check a request's head; start its exchange (None for a DELETE, which is done).
        Raises :class:`_Reject`."""
        method = request.method.decode("ascii", "replace").upper()
        headers = {name.lower(): value for name, value in request.headers}
        if method not in ("PUT", "POST", "DELETE"):
            raise _Reject(405, f"{method} is not accepted; use PUT, POST or DELETE",
                          [("allow", "PUT, POST, DELETE")])
        if not self._authorized(headers):
            extra = [("www-authenticate", 'Basic realm="msd relay"')] if self._basic else []
            raise _Reject(401, f"missing or wrong credentials: send the {SECRET_HEADER} "
                          "header or the Basic auth the relay was started with", extra)
        target = request.target.decode("latin-1")
        # origin-form (RFC 9112 section 3.2.1) is a path even when it starts with "//";
        # only absolute-form names a host.
        raw = unquote(target.split("?", 1)[0] if target.startswith("/")
                      else urlsplit(target).path)
        try:
            path = rules.normalize_object_path(f"{self.prefix}/{raw.lstrip('/')}"
                                               if self.prefix else raw.lstrip("/"))
        except ClientValidationError as exc:
            raise _Reject(400, f"bad path {raw}: {exc}") from exc
        now = time.monotonic()
        if method == "DELETE":
            self.stats.deletes += 1
            self._queue.put_nowait(_Job("DELETE", path, None, now))
            return None
        manifest = path.lower().endswith(MANIFEST_EXTENSIONS)
        limit = self.manifest_limit if manifest else self.streaming_limit
        length = headers.get(b"content-length")
        if length is not None and b"transfer-encoding" in headers:
            # RFC 9112 section 6.3: the message framing is ambiguous (request smuggling);
            # the connection cannot be trusted for another request either.
            raise _Reject(400, "both Content-Length and Transfer-Encoding: send one of them")
        chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
        if length is None and not chunked:
            raise _Reject(411, "send a Content-Length or Transfer-Encoding: chunked")
        if length is not None and int(length) > limit:
            raise _Reject(413, f"{path} is {int(length):,} bytes; the limit is {limit:,}")
        content_type = headers.get(b"content-type", b"").decode("latin-1") or None
        # The encoder's own type is kept only when it says something: ffmpeg and curl send
        # application/octet-stream or a form type by default, and the publisher knows better.
        if content_type in ("application/octet-stream", "application/x-www-form-urlencoded"):
            content_type = None
        cache_control = headers.get(b"cache-control", b"").decode("latin-1") or None
        self.stats.in_flight += 1
        job = None
        if not manifest:
            # Handed over before the first byte: the upload starts while the body arrives.
            job = _Job(method, path, _BodyPipe(), now, content_type, cache_control)
            self._queue.put_nowait(job)
        else:
            job = _Job(method, path, b"", now, content_type, cache_control)
        self._budget.begin(job)
        return _Exchange(method, path, job, limit, manifest)

    def _feed(self, exchange: _Exchange, chunk: bytes | bytearray) -> bool:
        """Take one piece of a body; returns whether it is kept (then it holds its share of
        the body budget until the object's outcome)."""
        exchange.size += len(chunk)
        self.stats.bytes_in += len(chunk)
        if exchange.size > exchange.limit:
            self._cut(exchange, f"passed the limit of {exchange.limit:,} B", counted=False)
            raise _Reject(413, f"{exchange.path} passed the limit of {exchange.limit:,} B; "
                          "it was not published")
        if exchange.manifest:
            exchange.parts.append(chunk)
            return True
        job = exchange.job
        assert job is not None and isinstance(job.body, _BodyPipe)
        if not exchange.given_up and (job.body.abandoned or job.publication.done()):
            exchange.given_up = job.body.abandoned or self._given_up(job)
        if exchange.given_up:
            job.body.received += len(chunk)  # read and discarded: the connection stays usable
            return False
        job.body.feed(chunk)
        return True

    def _complete(self, exchange: _Exchange) -> tuple[int, str]:
        """The body arrived whole: finish the hand-over; returns the answer."""
        self.stats.in_flight -= 1
        job = exchange.job
        assert job is not None
        job.received = time.monotonic()
        if exchange.manifest:
            job.body = b"".join(exchange.parts)
            self._queue.put_nowait(job)
            return 204, ""
        assert isinstance(job.body, _BodyPipe)
        job.body.finish()
        if exchange.given_up or job.body.abandoned or (
            job.publication.done() and self._given_up(job)
        ):
            return 202, "received; the publisher gave this object up"
        return 204, ""

    def _cut(self, exchange: _Exchange, why: str, *, counted: bool = True) -> None:
        """The request ended before its body: fail its upload, publish nothing."""
        self.stats.in_flight -= 1
        if counted:
            self.stats.cut += 1
        job = exchange.job
        logger.warning("%s %s not published: %s after %d B", exchange.method, exchange.path,
                       why, exchange.size)
        if job is None:
            return
        job.cancelled = True
        if exchange.manifest:
            self._release(job)  # never queued: nothing else will give its bytes back
        if isinstance(job.body, _BodyPipe):
            job.body.fail(
                IncompleteBodyError(
                    f"the encoder's request for {exchange.path} ended after {exchange.size:,} "
                    f"B, before its body did ({why}); the upload was aborted",
                    rule="ingest.body-cut",
                )
            )

    @staticmethod
    def _given_up(job: _Job) -> bool:
        """Whether the publisher refused or already finished with the object (so the rest
        of its body need not be kept)."""
        future = job.publication
        if future.cancelled() or future.exception() is not None:
            return True
        publication = future.result()
        if publication is None:
            return True
        done = getattr(publication, "done", None)
        if callable(done):
            with contextlib.suppress(Exception):
                return bool(done())
        return False


    # --- the hand-over, in arrival order -------------------------------------------------
    async def _submit_loop(self) -> None:
        """Hand jobs to the publisher one at a time, so it sees them in arrival order (its
        latest-wins rule for manifests depends on that). Nothing one job does ends the loop:
        a relay whose loop died would answer 204 and publish nothing."""
        while (job := await self._queue.get()) is not None:
            try:
                await self._submit(job)
            except Exception:
                logger.exception("relaying %s %s failed; carrying on", job.method, job.path)
                self._release(job)
                if not job.publication.done():
                    job.publication.set_result(None)

    async def _submit(self, job: _Job) -> None:
        # A media body cut before its turn is still handed over: its pipe fails at once, so
        # the publisher records the object as failed and marks it as a gap in the playlists
        # that name it, as when the cut comes after the hand-over. Dropped here, it would
        # be an object the publisher never heard of, and the next playlist would be stored
        # naming it (after reference_wait) though it does not exist.
        if job.cancelled and not isinstance(job.body, _BodyPipe):
            self._release(job)
            job.publication.set_result(None)  # cut before it was handed over
            return
        try:
            if job.body is None:
                await self._publisher.delete(job.path)
                job.publication.set_result(None)
                self._finish(job, 0, "delete scheduled")
                return
            publication = await self._publisher.publish(
                job.path,
                job.body,
                content_type=job.content_type,
                cache_control=job.cache_control,
                duration=self.media_deadline,
            )
        except Exception as exc:
            if not isinstance(exc, MediaStoreError):  # the publisher's own failure
                logger.exception("publishing %s failed", job.path)
            self._release(job)
            if not job.publication.done():
                job.publication.set_exception(exc)
                job.publication.exception()  # retrieved here; the handler only checks done()
            self._finish(job, self._size(job), "refused", _cause(exc))
            return
        job.publication.set_result(publication)
        self.stats.handed_over += 1
        body = job.body

        def settled() -> None:
            if isinstance(body, _BodyPipe):
                body.release()
            self._release(job)

        self.reporter.follow(
            job.method,
            job.path,
            functools.partial(self._size, job),
            job.started,
            publication,
            settled,
            functools.partial(getattr, job, "received"),
        )

    def _release(self, job: _Job) -> None:
        """Give a job's share of the body budget back (its outcome is known)."""
        self._budget.finished(job)
        self._budget.release(job.held)
        job.held = 0

    @staticmethod
    def _size(job: _Job) -> int:
        body = job.body
        if isinstance(body, _BodyPipe):
            return body.received
        return len(body) if body is not None else 0

    def _finish(self, job: _Job, size: int, outcome: str, detail: str = "") -> None:
        self.reporter.record(
            job.method, job.path, size, job.started, outcome, detail, received=job.received
        )
