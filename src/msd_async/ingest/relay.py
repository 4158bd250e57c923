"""The relay: an HTTP server that takes an encoder's unsigned PUT/POST/DELETE requests and
hands them to a live publisher, which signs, orders, retries and deletes them.

Encoders such as ffmpeg, Shaka Packager and GPAC push HLS/DASH with plain HTTP and retry
nothing, so the relay's answers are shaped to keep them going:

- A media body is handed to the publisher as soon as its headers arrive and streams through
  chunk by chunk (the publisher sends it as a STREAMING upload), so low latency survives the
  relay: nothing waits for the whole body.
- Manifests (``.m3u8``, ``.mpd``) are read whole, then published; the publisher stores them
  only after what they reference, and the newest version wins.
- The encoder gets its answer once its body has arrived completely, never after an origin
  round trip: errors at the origin are the publisher's to retry. ``204`` when the object is
  on its way; ``202`` when the publisher gave it up before its body ended (the rest of the
  body is read and discarded, so the encoder's connection stays usable).
- A request whose body arrived completely is published even if the encoder has gone (ffmpeg
  with ``-http_persistent 1`` pipelines its PUTs and exits right after the final manifest):
  the publication is owned by the relay, not by the request's handler.
- A request cut mid-body is not published: its upload is failed with
  :class:`IncompleteBodyError`, which aborts a STREAMING upload at the origin.
- DELETE is answered ``204`` at once and handed to the publisher, which delays it by the
  sliding-window rules (RFC 8216 section 6.2.2).
- A bad request gets a 4xx with the reason in the body: ``400`` for a path MediaStore does
  not accept, ``401`` without the configured credentials, ``405`` for another method, ``411``
  for a body with neither length nor chunking, ``413`` over the object size limit.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hmac
import ipaddress
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web

from .. import rules
from ..errors import ClientValidationError, MediaStoreError
from ._publisher import PublicationLike, PublisherLike
from ._report import ObjectRecord, Reporter

__all__ = [
    "DEFAULT_DRAIN_TIMEOUT",
    "MANIFEST_EXTENSIONS",
    "SECRET_HEADER",
    "IncompleteBodyError",
    "ObjectRecord",
    "Relay",
    "RelayStats",
    "is_loopback",
]

logger = logging.getLogger("msd_async.ingest")

#: Bodies of these are read whole before publishing: a manifest is small, and the publisher
#: must see all of it to know what it references.
MANIFEST_EXTENSIONS: Final = (".m3u8", ".m3u", ".mpd")
#: The header an encoder sends the shared secret in (ffmpeg: ``-headers "X-Relay-Secret: s"``).
SECRET_HEADER: Final = "X-Relay-Secret"
#: How long :meth:`Relay.aclose` waits for objects already handed over to reach an outcome.
DEFAULT_DRAIN_TIMEOUT: Final = 30.0


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


@dataclass(slots=True)
class RelayStats:
    """Counters since the relay started. ``in_flight``: bodies still arriving."""

    requests: int = 0
    bytes_in: int = 0
    in_flight: int = 0
    handed_over: int = 0
    deletes: int = 0
    rejected: int = 0
    cut: int = 0


class _BodyPipe:
    """A request body on its way to the publisher, as a one-shot async iterator: each chunk
    is yielded as soon as it arrives (the publisher keeps what it needs to retry). A cut
    request fails the iterator with :class:`IncompleteBodyError`, which aborts the STREAMING
    upload at the origin. When the publisher gives the object up it closes the iterator;
    from then on :attr:`abandoned` is true and chunks are dropped.
    """

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()
        self._done = False
        self._error: BaseException | None = None
        self._changed = asyncio.Event()
        self.received = 0
        self.abandoned = False

    def feed(self, chunk: bytes) -> None:
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
                return self._chunks.popleft()
            if self._done or self.abandoned:
                raise StopAsyncIteration
            self._changed.clear()
            await self._changed.wait()

    async def aclose(self) -> None:
        """The consumer is done: after the whole body, or because it gave the object up."""
        if not (self._done and not self._chunks):
            self.release()


@dataclass(slots=True)
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
    publication: asyncio.Future[PublicationLike | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Relay:
    """An HTTP server in front of a live publisher, for encoders that cannot sign.

    ``publisher``: a started :class:`msd_async.live.LivePublisher` (or anything with its
    ``publish``/``delete`` methods); the relay does not close it. ``host``/``port``: where to
    listen (default ``127.0.0.1``, port 0 = any free port). A non-loopback ``host`` needs
    ``allow_remote=True``, since the relay signs whatever it receives: pair it with ``secret``
    (the encoder sends it in the ``X-Relay-Secret`` header) or ``basic_auth=(user, password)``
    (``http://user:password@host/...`` in the encoder's URL); both may be set, and either
    then admits a request. ``prefix`` is put in front of every path (``"live/ch1"`` turns
    ``PUT /index.m3u8`` into ``live/ch1/index.m3u8``). ``streaming_limit`` and
    ``manifest_limit`` bound a media body and a manifest body (MediaStore's 10 MB STREAMING
    and 25 MB STANDARD limits by default). ``on_object`` is called with an
    :class:`ObjectRecord` once each request's object has its outcome (also logged on the
    ``msd_async.ingest`` logger at INFO).

    Use as an async context manager or call :meth:`start` and :meth:`aclose`. Raises
    ``ValueError`` for a non-loopback host without ``allow_remote``, ``OSError`` if the
    address cannot be bound.
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
        on_object: Callable[[ObjectRecord], object] | None = None,
        drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
    ) -> None:
        if not is_loopback(host) and not allow_remote:
            raise ValueError(
                f"refusing to listen on {host}: the relay signs whatever it receives; pass "
                "allow_remote=True (msd relay --allow-remote) and set a secret or Basic auth"
            )
        self._publisher = publisher
        self.host = host
        self.port = port
        self.prefix = rules.normalize_folder_path(prefix) if prefix else ""
        self._secret = secret
        self._basic = (
            None
            if basic_auth is None
            else "Basic " + base64.b64encode(f"{basic_auth[0]}:{basic_auth[1]}".encode()).decode()
        )
        self.streaming_limit = streaming_limit
        self.manifest_limit = manifest_limit
        self._drain_timeout = drain_timeout
        self.stats = RelayStats()
        self.reporter = Reporter(on_object)
        self._runner: web.AppRunner | None = None
        self._queue: asyncio.Queue[_Job | None] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` once started (the bound port when ``port`` was 0)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Start accepting connections."""
        app = web.Application(client_max_size=max(self.streaming_limit, self.manifest_limit))
        app.router.add_route("*", "/{path:.*}", self._handle)
        # Handlers are never cancelled when an encoder disconnects: a body that arrived
        # whole is published regardless (aiohttp's default since 3.9; stated, not assumed).
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, handler_cancellation=False
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except BaseException:
            await self._runner.cleanup()
            self._runner = None
            raise
        addresses = self._runner.addresses
        if addresses:
            self.port = addresses[0][1]
        self._worker = asyncio.create_task(self._submit_loop(), name="msd-relay-submit")

    async def __aenter__(self) -> Relay:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop accepting, let bodies in progress finish, hand everything received to the
        publisher, and wait up to ``drain_timeout`` seconds for those objects' outcomes
        (the publisher keeps publishing what is left when it is closed). Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._runner is not None:
                await self._runner.cleanup()
        finally:
            if self._worker is not None:
                self._queue.put_nowait(None)
                await self._worker
            await self.reporter.drain(self._drain_timeout)

    # --- requests ----------------------------------------------------------------------
    def _authorized(self, request: web.Request) -> bool:
        if self._secret is None and self._basic is None:
            return True
        if self._secret is not None:
            given = request.headers.get(SECRET_HEADER, "")
            if hmac.compare_digest(given.encode(), self._secret.encode()):
                return True
        if self._basic is not None:
            given = request.headers.get("Authorization", "")
            if hmac.compare_digest(given.encode(), self._basic.encode()):
                return True
        return False

    def _reject(self, request: web.Request, status: int, reason: str) -> web.Response:
        self.stats.rejected += 1
        logger.warning("%s %s rejected %d: %s", request.method, request.path, status, reason)
        headers = {"Connection": "close"} if request.can_read_body else {}
        if status == 401 and self._basic is not None:
            headers["WWW-Authenticate"] = 'Basic realm="msd relay"'
        return web.Response(status=status, text=reason + "\n", headers=headers)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.stats.requests += 1
        method = request.method
        if method not in ("PUT", "POST", "DELETE"):
            response = self._reject(
                request, 405, f"{method} is not accepted; use PUT, POST or DELETE"
            )
            response.headers["Allow"] = "PUT, POST, DELETE"
            return response
        if not self._authorized(request):
            return self._reject(
                request, 401, f"missing or wrong credentials: send the {SECRET_HEADER} header "
                "or Basic auth the relay was started with"
            )
        raw = request.match_info["path"]
        try:
            path = rules.normalize_object_path(f"{self.prefix}/{raw}" if self.prefix else raw)
        except ClientValidationError as exc:
            return self._reject(request, 400, f"bad path /{raw}: {exc}")
        if method == "DELETE":
            return self._delete(path)
        return await self._put(request, path)

    def _delete(self, path: str) -> web.StreamResponse:
        self.stats.deletes += 1
        self._queue.put_nowait(_Job("DELETE", path, None, time.monotonic()))
        return web.Response(status=204)

    async def _put(self, request: web.Request, path: str) -> web.StreamResponse:
        manifest = path.lower().endswith(MANIFEST_EXTENSIONS)
        limit = self.manifest_limit if manifest else self.streaming_limit
        length = request.content_length
        chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
        if length is None and not chunked:
            return self._reject(
                request, 411, "send a Content-Length or Transfer-Encoding: chunked"
            )
        if length is not None and length > limit:
            return self._reject(
                request, 413, f"{path} is {length:,} bytes; the limit is {limit:,}"
            )
        started = time.monotonic()
        content_type = request.headers.get("Content-Type")
        cache_control = request.headers.get("Cache-Control")
        # The encoder's own type is kept only when it says something: ffmpeg and curl send
        # application/octet-stream or a form type by default, and the publisher knows better.
        if content_type in ("application/octet-stream", "application/x-www-form-urlencoded"):
            content_type = None
        self.stats.in_flight += 1
        try:
            if manifest:
                return await self._put_manifest(request, path, limit, started, content_type,
                                                cache_control)
            return await self._put_media(request, path, limit, started, content_type,
                                         cache_control)
        finally:
            self.stats.in_flight -= 1

    async def _put_manifest(
        self,
        request: web.Request,
        path: str,
        limit: int,
        started: float,
        content_type: str | None,
        cache_control: str | None,
    ) -> web.StreamResponse:
        parts: list[bytes] = []
        size = 0
        try:
            async for chunk in request.content.iter_any():
                size += len(chunk)
                if size > limit:
                    return self._reject(request, 413, f"{path} is over the limit of {limit:,} B")
                parts.append(chunk)
        except (OSError, asyncio.CancelledError, Exception) as exc:
            # Cut mid-body (aiohttp reports it as a payload or connection error): nothing
            # is published, so the origin keeps the previous, complete version.
            self.stats.cut += 1
            logger.warning("%s %s cut after %d B, not published: %s", request.method, path,
                           size, exc or type(exc).__name__)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return web.Response(status=400, text="the request body ended early\n")
        self.stats.bytes_in += size
        job = _Job(request.method, path, b"".join(parts), started, content_type, cache_control)
        job.received = time.monotonic()
        self._queue.put_nowait(job)
        return web.Response(status=204)

    async def _put_media(
        self,
        request: web.Request,
        path: str,
        limit: int,
        started: float,
        content_type: str | None,
        cache_control: str | None,
    ) -> web.StreamResponse:
        pipe = _BodyPipe()
        job = _Job(request.method, path, pipe, started, content_type, cache_control)
        # Handed over before the first byte: the upload starts while the body arrives.
        self._queue.put_nowait(job)
        given_up = False
        try:
            async for chunk in request.content.iter_any():
                if not given_up and (pipe.abandoned or job.publication.done()):
                    given_up = pipe.abandoned or self._given_up(job)
                if given_up:
                    pipe.received += len(chunk)
                    continue  # read and discard: the encoder's connection stays usable
                if pipe.received + len(chunk) > limit:
                    error = IncompleteBodyError(
                        f"{path} passed the limit of {limit:,} B; the upload was aborted",
                        rule="ingest.max-size",
                    )
                    pipe.fail(error)
                    job.cancelled = True
                    return self._reject(request, 413, str(error))
                pipe.feed(chunk)
                self.stats.bytes_in += len(chunk)
        except BaseException as exc:
            self.stats.cut += 1
            job.cancelled = True
            pipe.fail(
                IncompleteBodyError(
                    f"the encoder's request for {path} ended after {pipe.received:,} B, before "
                    "its body did; the upload was aborted",
                    rule="ingest.body-cut",
                )
            )
            logger.warning("%s %s cut after %d B, not published: %s", request.method, path,
                           pipe.received, exc or type(exc).__name__)
            if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
                raise
            return web.Response(status=400, text="the request body ended early\n")
        pipe.finish()
        job.received = time.monotonic()
        if given_up or pipe.abandoned or (job.publication.done() and self._given_up(job)):
            return web.Response(status=202, text="received; the publisher gave this object up\n")
        return web.Response(status=204)

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
        latest-wins rule for manifests depends on that)."""
        while (job := await self._queue.get()) is not None:
            if job.cancelled:
                job.publication.set_result(None)  # cut before it was handed over
                continue
            try:
                if job.body is None:
                    await self._publisher.delete(job.path)
                    job.publication.set_result(None)
                    self._finish(job, 0, "delete scheduled")
                    continue
                publication = await self._publisher.publish(
                    job.path,
                    job.body,
                    content_type=job.content_type,
                    cache_control=job.cache_control,
                )
            except MediaStoreError as exc:
                job.publication.set_exception(exc)
                job.publication.exception()  # retrieved here; the handler only checks done()
                self._finish(job, self._size(job), "refused", str(exc))
                continue
            except Exception as exc:  # the publisher's own failure: log it, keep relaying
                logger.exception("publishing %s failed", job.path)
                job.publication.set_exception(exc)
                job.publication.exception()
                self._finish(job, self._size(job), "refused", f"{type(exc).__name__}: {exc}")
                continue
            job.publication.set_result(publication)
            self.stats.handed_over += 1
            body = job.body
            self.reporter.follow(
                job.method,
                job.path,
                functools.partial(self._size, job),
                job.started,
                publication,
                body.release if isinstance(body, _BodyPipe) else None,
                functools.partial(getattr, job, "received"),
            )

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
