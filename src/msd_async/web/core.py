"""Serve and accept objects over HTTP, framework-neutral: what to answer, and the body.

:func:`open_object` turns a GET or HEAD for an object into a :class:`Reply` (status,
headers, and a body streamed from the container); :func:`store_upload` streams a request
body into ``put_object``. The aiohttp and ASGI adapters only copy a ``Reply`` onto their
response objects. Origin failures become statuses here, once: the client of the web app
sees ``404``, ``416``, ``502``, ``503`` or ``504`` with a short fixed text, and the detail
goes to the ``msd_async.web`` logger.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import enum
import json
import logging
import math
import re
import time
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Coroutine,
    Mapping,
)
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import anyio

from ..client import ContainerClient
from ..config import check_plain_callback, is_number, is_seconds, is_whole_number
from ..errors import (
    AuthError,
    ClientValidationError,
    ContainerNotFoundError,
    InvalidParameterError,
    InvalidPathError,
    MediaStoreError,
    MediaStoreTimeout,
    ObjectNotFoundError,
    ObjectTooLargeError,
    ProtocolError,
    RangeNotSatisfiableError,
    ThrottlingError,
    ValidationError,
)
from ..media_types import content_type_for
from ..results import ObjectInfo
from ..signing import check_expires_in
from ..stream import ObjectStream
from .http import (
    Validators,
    evaluate_preconditions,
    format_http_date,
    parse_range,
    quote_etag,
    resolve_range,
)

_T = TypeVar("_T")

__all__ = [
    "REASONS",
    "REQUEST_HEADERS",
    "SESSION_WRITE_TIMEOUT",
    "ClientStalled",
    "Reply",
    "SessionTimeout",
    "UploadInterrupted",
    "WriteWatch",
    "check_upload_length",
    "error_reply",
    "open_object",
    "run_beside",
    "status_for_error",
    "store_upload",
    "stored_content_type",
    "watch_writes",
]

logger = logging.getLogger("msd_async.web")

#: The fixed body text of each status this module answers without an object body. Error
#: bodies never carry the origin's message: it may name hosts, keys or paths.
REASONS: Final[dict[int, str]] = {
    200: "OK",
    201: "Created",
    302: "Found",
    304: "",
    400: "Bad Request",
    404: "Not Found",
    412: "Precondition Failed",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    416: "Range Not Satisfiable",
    417: "Expectation Failed",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}

# How often a GET is re-decided when the object changes between the DescribeObject that
# evaluated the preconditions and the GetObject that fetched the body.
_MAX_DECISIONS: Final = 3
_PRECONDITIONS: Final = ("if-match", "if-none-match", "if-modified-since", "if-unmodified-since")
#: The request headers :func:`open_object` and :func:`store_upload` read (adapters collect
#: only these).
REQUEST_HEADERS: Final = (
    "range",
    *_PRECONDITIONS,
    "if-range",
    "content-length",
    "content-type",
)


class ClientStalled(Exception):
    """The client did not take the next chunk of a body within the write time limit
    (:attr:`Reply.write_timeout`): it stopped reading. Adapters then cut its connection
    and close the reply, so the origin connection goes back to the pool. The bundled
    adapters raise nothing for it (a stalled client is logged, not an error: see
    :attr:`WriteWatch.stalled`); an adapter of your own may raise this."""


class SessionTimeout(enum.Enum):
    """The type of :data:`SESSION_WRITE_TIMEOUT`."""

    WRITE = "the Session's Timeouts.write"


#: ``write_timeout``'s default: the ``Timeouts.write`` of the client's Session.
SESSION_WRITE_TIMEOUT: Final = SessionTimeout.WRITE


class UploadInterrupted(Exception):
    """The upload's request body ended before it was complete (the client went away, or
    sent fewer bytes than its Content-Length). Adapters raise it from the body iterator
    they hand to :func:`store_upload`; the upload is then aborted and nothing is stored."""


@dataclass(slots=True, eq=False)
class Reply:
    """What to answer: ``status``, ``headers`` (name, value pairs, in order) and a body.

    The body is ``body`` (bytes) unless ``streamed`` is true; then iterate
    :meth:`chunks` and call :meth:`aclose` when done, whatever happened (adapters do
    both), and give each write to the client at most :attr:`write_timeout` seconds
    (:func:`watch_writes` does). ``Content-Length`` is in ``headers`` whenever the length
    is known.
    """

    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""
    #: Seconds the client may take to accept each chunk of a streamed body (``None``: no
    #: limit); adapters enforce it with :func:`watch_writes`.
    write_timeout: float | None = None
    _stream: ObjectStream | None = field(default=None, repr=False)
    _exits: contextlib.AsyncExitStack | None = field(default=None, repr=False)
    _skip: int = 0
    _take: int | None = None
    _given: bool = False

    @property
    def streamed(self) -> bool:
        """Whether the body comes from the container (else it is :attr:`body`)."""
        return self._stream is not None

    def header(self, name: str) -> str | None:
        """The first value of a header, by case-insensitive name."""
        lower = name.lower()
        return next((v for k, v in self.headers if k.lower() == lower), None)

    async def receive(self) -> bytes:
        """The next chunk of the body as it arrives from the container (sliced to the
        range when the origin ignored it), or ``b""`` at its end; a non-streamed reply
        gives :attr:`body` once. Raises :class:`MediaStoreError` when the origin fails
        mid-body (the headers are gone by then: the adapter must cut the connection so
        the client sees an incomplete response, never a short one passed off as whole)."""
        stream = self._stream
        if stream is None:
            given, self._given = self._given, True
            return b"" if given else self.body
        if not self._skip and self._take is None:
            return await stream.receive()  # the usual case: the origin honoured the range
        while self._take is None or self._take > 0:
            chunk = await stream.receive()
            if not chunk:
                return b""
            if self._skip:
                if len(chunk) <= self._skip:
                    self._skip -= len(chunk)
                    continue
                chunk, self._skip = chunk[self._skip :], 0
            if self._take is not None:
                if len(chunk) > self._take:
                    chunk = chunk[: self._take]
                self._take -= len(chunk)
            return chunk
        # The rest of the origin's body is not wanted: close its connection now.
        await self.aclose()
        return b""

    async def chunks(self) -> AsyncIterator[bytes]:
        """:meth:`receive` as an async iterator (for ASGI's ``StreamingResponse``)."""
        receive = self.receive
        while chunk := await receive():
            yield chunk

    async def aclose(self) -> None:
        """Release the upstream connection (closed if the body was not read to its end).
        Idempotent; safe in a ``finally`` while being cancelled."""
        exits, self._exits = self._exits, None
        if exits is not None:
            await exits.aclose()


#: On every answer: browsers take the Content-Type as it is and never guess (sniff) HTML
#: or script in an object, whoever uploaded it (https://fetch.spec.whatwg.org/#x-content-type-options-header).
_NOSNIFF: Final = ("X-Content-Type-Options", "nosniff")


class WriteWatch:
    """Times the writes of a body to the client, for :func:`watch_writes`: call
    :meth:`begin` before each write and :meth:`end` after it.

    ``limit``: seconds one write may take (``None``: no limit); ``alive``: a check that
    the client is still connected, made every ``interval`` seconds (for bodies that pause:
    a server may not notice a client that left until it writes). After the watch,
    :attr:`stalled` says a write took too long, :attr:`gone` that the client left.
    An ``alive`` that raises is logged and the client taken as gone. Raises
    :class:`~msd_async.InvalidParameterError` for a ``limit`` or ``interval`` that is not a
    number above 0, or an ``alive`` that is async.
    """

    def __init__(
        self,
        limit: float | None,
        *,
        alive: Callable[[], bool] | None = None,
        interval: float = 0.5,
    ) -> None:
        # Polled from a timer, never awaited: an async alive() was a coroutine, always
        # true (the client never seen gone); an interval of 0 or nan re-armed the timer at
        # once, forever; a limit of 0 or nan cut every client, or none.
        if limit is not None and (not is_number(limit) or not limit > 0):
            raise InvalidParameterError(
                f"limit must be a number of seconds above 0, or None for no limit; not "
                f"{limit!r}",
                rule="web.write-timeout",
            )
        if not is_seconds(interval, zero=False):
            raise InvalidParameterError(
                f"interval must be a finite number of seconds above 0, not {interval!r}",
                rule="web.interval",
            )
        if alive is not None:
            check_plain_callback(alive, "alive", rule="web.alive")
        self.limit = limit
        self.alive = alive
        self.interval = interval
        self.stalled = False
        self.gone = False
        self._since: float | None = None

    def begin(self) -> None:
        # time.monotonic (the asyncio loop's clock): a fraction of anyio.current_time()'s
        # cost, and this runs for every chunk.
        self._since = time.monotonic()

    def end(self) -> None:
        self._since = None

    def _poll(self) -> float | None:
        """Check now: ``None`` when a write stalled or the client left (the flag is set),
        else the seconds until the next check."""
        limit, since, now = self.limit, self._since, time.monotonic()
        if limit is not None and since is not None and now - since >= limit:
            self.stalled = True
            logger.info("the client took no data for %g s: connection cut", limit)
            return None
        if self.alive is not None:
            try:
                connected = self.alive()
            except Exception:
                # Raised in the watch's timer, it went to the loop's handler and the timer
                # was not re-armed: the body ran on unwatched, a stalled client holding
                # its origin connection. Taken as gone, so the adapter cuts it.
                logger.exception("alive() %r raised: the client is taken as gone", self.alive)
                connected = False
            if not connected:
                self.gone = True
                return None
        wait = self.interval if self.alive is not None else math.inf
        if limit is not None:
            wait = min(wait, limit if since is None else since + limit - now)
        return wait


async def watch_writes(
    write_body: Callable[[WriteWatch], Awaitable[None]],
    limit: float | None,
    *,
    alive: Callable[[], bool] | None = None,
    interval: float = 0.5,
) -> WriteWatch:
    """Run ``write_body(watch)``, which writes a body to the client between
    ``watch.begin()`` and ``watch.end()``; when one write takes longer than ``limit``
    seconds, or ``alive()`` turns false, ``write_body`` is cancelled. Returns the watch
    (see :attr:`WriteWatch.stalled` and :attr:`WriteWatch.gone`: the adapter then cuts
    the connection); an exception of ``write_body`` propagates as it is.

    One timer per response, re-armed about once per ``limit`` (or ``interval``) seconds,
    not one per chunk: a write costs two clock reads.
    """
    watch = WriteWatch(limit, alive=alive, interval=interval)
    if limit is None and alive is None:
        await write_body(watch)
        return watch
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # another event loop (trio): anyio's portable way
        return await _watch_with_anyio(write_body, watch)
    task = asyncio.current_task()
    assert task is not None
    # Cancellations already requested (cleanup after the task's own starts at 1): only one
    # beyond these and the timer's is someone else's (as asyncio.timeout counts them).
    before = task.cancelling()
    fired = False
    handle: asyncio.TimerHandle | None = None

    def check() -> None:
        nonlocal fired, handle
        wait = watch._poll()
        if wait is None:
            fired, handle = True, None
            task.cancel()
        else:
            handle = loop.call_later(wait, check)

    first = watch._poll()
    assert first is not None  # nothing is being written yet
    handle = loop.call_later(first, check)
    try:
        await write_body(watch)
    except asyncio.CancelledError:
        # Ours (as asyncio.timeout tells its own): swallow it unless someone else also
        # cancelled this task.
        if fired and task.uncancel() <= before:
            return watch
        raise
    finally:
        if handle is not None:
            handle.cancel()
    if fired:
        # The body ended just as the timer fired: take the cancellation here rather than
        # let it land on the adapter's next await.
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            if task.uncancel() > before:
                raise
    return watch


async def _watch_with_anyio(
    write_body: Callable[[WriteWatch], Awaitable[None]], watch: WriteWatch
) -> WriteWatch:
    async def run(cancel: Callable[[], object]) -> None:
        while True:
            wait = watch._poll()
            if wait is None:
                cancel()
                return
            await anyio.sleep(wait)

    await run_beside(run, write_body(watch))
    return watch


async def run_beside(
    watcher: Callable[[Callable[[], object]], Coroutine[Any, Any, None]], work: Awaitable[_T]
) -> _T | None:
    """``work``'s result, with ``watcher(cancel)`` running beside it until it ends;
    ``cancel()`` ends both, and then ``work`` gives ``None``. An error of either is raised
    as it is, not in an ExceptionGroup (callers catch ``MediaStoreError``, ``OSError``):
    an error of the watcher cancels ``work`` and is raised; an error of ``work`` is raised
    even if the watcher failed too (with a note that names the watcher's). If ``work``
    completed before the watcher's error reached it, its result is returned (it may hold a
    connection only the caller can release) and the watcher's error is logged."""
    result: _T | None = None
    completed = False
    error: Exception | None = None
    watcher_error: Exception | None = None

    async def watch(cancel: Callable[[], object]) -> None:
        nonlocal watcher_error
        try:
            await watcher(cancel)
        except Exception as exc:
            watcher_error = exc
            cancel()

    async with anyio.create_task_group() as group:
        group.start_soon(watch, group.cancel_scope.cancel)
        try:
            result = await work
            completed = True
        except Exception as exc:
            error = exc
        finally:
            group.cancel_scope.cancel()
    if error is not None:
        if watcher_error is not None:
            error.add_note(f"while the watcher beside it failed: {watcher_error!r}")
        raise error
    if watcher_error is not None:
        if not completed:
            raise watcher_error
        logger.warning("the watcher beside a completed call failed: %r", watcher_error)
    return result


def _text(
    status: int, headers: list[tuple[str, str]] | None = None, text: str | None = None
) -> Reply:
    body = (REASONS.get(status, "") if text is None else text).encode()
    pairs = [*(headers or ()), _NOSNIFF]
    if body:
        pairs.append(("Content-Type", "text/plain; charset=utf-8"))
    if status != 304:  # a 304's Content-Length would have to be the 200's (RFC 9110 §8.6)
        pairs.append(("Content-Length", str(len(body))))
    return Reply(status, pairs, body)


def status_for_error(exc: BaseException) -> int:
    """The status to answer for an error of the origin (or of a bad request path).

    ================================================  ======
    error                                             status
    ================================================  ======
    ObjectNotFoundError, InvalidPathError             404
    ValidationError (the origin refused the request:  400
    e.g. an upload's name is already a folder)
    RangeNotSatisfiableError                          416
    ObjectTooLargeError                               413
    ThrottlingError                                   503
    MediaStoreTimeout (read, connect, pool, deadline) 504
    any other (5xx, connection errors, auth, ...)     502
    ================================================  ======
    """
    if isinstance(exc, (ObjectNotFoundError, InvalidPathError)):
        return 404
    if isinstance(exc, ValidationError):
        return 400
    if isinstance(exc, RangeNotSatisfiableError):
        return 416
    if isinstance(exc, ObjectTooLargeError):
        return 413
    if isinstance(exc, ThrottlingError):
        return 503
    if isinstance(exc, MediaStoreTimeout):
        return 504
    return 502


def error_reply(exc: BaseException, *, path: str | None = None) -> Reply:
    """A :class:`Reply` for ``exc`` with the status of :func:`status_for_error` and a
    fixed body; the detail is logged (warning for the origin's failures, debug for a
    missing object), never sent."""
    status = status_for_error(exc)
    if status in (400, 404, 416, 413):
        logger.debug("%s for %r: %s", status, path, exc)
    else:
        # A refused signature or an unknown container is a misconfiguration: louder.
        misconfigured = isinstance(exc, (AuthError, ContainerNotFoundError))
        level = logging.ERROR if misconfigured else logging.WARNING
        logger.log(level, "origin failed for %r (answered %s): %s", path, status, exc)
    headers = []
    if status == 503:
        retry_after = getattr(exc, "retry_after", None)
        headers.append(("Retry-After", str(max(1, round(retry_after or 1)))))
    return _text(status, headers)


def _object_headers(info: ObjectInfo, *, length_known: bool) -> list[tuple[str, str]]:
    headers = [("Content-Type", info.content_type or "application/octet-stream"), _NOSNIFF]
    if info.etag:
        headers.append(("ETag", quote_etag(info.etag)))
    if info.last_modified is not None:
        headers.append(("Last-Modified", format_http_date(info.last_modified)))
    if info.cache_control is not None:
        headers.append(("Cache-Control", info.cache_control))
    # An in-progress STREAMING object has no length yet and the origin ignores ranges on it.
    headers.append(("Accept-Ranges", "bytes" if length_known else "none"))
    return headers


def _validator_headers(info: ObjectInfo) -> list[tuple[str, str]]:
    # RFC 9110 §15.4.5: a 304 carries the validators and Cache-Control a 200 would have.
    headers = []
    if info.etag:
        headers.append(("ETag", quote_etag(info.etag)))
    if info.last_modified is not None:
        headers.append(("Last-Modified", format_http_date(info.last_modified)))
    if info.cache_control is not None:
        headers.append(("Cache-Control", info.cache_control))
    return headers


def _validators(info: ObjectInfo) -> Validators:
    return Validators(info.etag, info.last_modified)


def _unsatisfiable(size: int | None) -> Reply:
    return _text(416, [("Content-Range", f"bytes */{size}")] if size is not None else [])


async def _size_after_416(
    client: ContainerClient, path: str, exc: RangeNotSatisfiableError
) -> int | None:
    """The object's total size when the origin answered 416: from its
    ``Content-Range: bytes */N``, else (an origin that did not say) a DescribeObject."""
    if exc.object_size is not None:
        return exc.object_size
    return (await client.describe_object(path)).content_length


async def open_object(
    client: ContainerClient,
    path: str,
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    redirect: bool = False,
    expires_in: int = 3600,
    write_timeout: float | SessionTimeout | None = SESSION_WRITE_TIMEOUT,
    now: _dt.datetime | None = None,
) -> Reply:
    """Decide the answer to a ``GET`` or ``HEAD`` of the object at ``path``.

    ``headers``: the request's headers, lower-case names (repeated fields joined with
    ``", "``); only Range and the conditional ones are read. A single ``Range`` is passed
    to the origin (206 with Content-Range; 416 with ``bytes */size``); an invalid or
    multiple one is ignored (200, as RFC 9110 §14.2 allows). ``If-Match``,
    ``If-Unmodified-Since`` (412), ``If-None-Match``, ``If-Modified-Since`` (304) and
    ``If-Range`` are evaluated against a DescribeObject (the origin ignores them), then
    checked again against the GetObject's own headers, so an object replaced in between
    is never served under the old decision. A request without them costs one GetObject.

    ``redirect=True`` answers ``302`` to a presigned GetObject URL valid ``expires_in``
    seconds (default 3600, at most 7 days) instead of proxying; the origin is not asked.

    Origin errors become statuses (:func:`status_for_error`), a path MediaStore cannot
    name a 404; the body of a streamed reply can still fail (see :meth:`Reply.chunks`).
    ``write_timeout``: seconds the client may take to accept each chunk of the body
    (:attr:`Reply.write_timeout`; default the ``Timeouts.write`` of the client's Session,
    30 s unless configured; ``None``: no limit). A client that stops reading holds an
    origin connection only that long.

    Raises :class:`~msd_async.InvalidParameterError` (a :class:`ValueError`) for a method
    other than GET and HEAD, an ``expires_in`` out of range (even without ``redirect``) or a
    ``write_timeout`` that is neither ``None`` nor a number of seconds above 0. The
    caller must :meth:`Reply.aclose` the reply.
    """
    if not isinstance(method, str) or method.upper() not in ("GET", "HEAD"):
        # A MediaStoreError like the other argument errors (still a ValueError).
        raise InvalidParameterError(
            f"open_object serves GET and HEAD, not {method!r}: route only those to it",
            rule="web.method",
        )
    method = method.upper()
    # Checked with or without redirect: a bad value a call site passes on every request
    # would otherwise raise only once a configuration switched redirects on.
    check_expires_in(expires_in)
    headers = {} if headers is None else headers
    if write_timeout is SESSION_WRITE_TIMEOUT:
        write_timeout = client.timeouts.write
    elif write_timeout is not None and (
        not is_number(write_timeout) or not write_timeout > 0  # also NaN: it meant no limit
    ):
        # Checked before the origin is asked: taken as it came, a str failed once the
        # headers were out, and 0 cut every client whose socket filled once.
        raise InvalidParameterError(
            "write_timeout must be a number of seconds above 0, or None for no limit; "
            f"not {write_timeout!r}",
            rule="web.write-timeout",
        )
    assert not isinstance(write_timeout, SessionTimeout)
    reply = await _open(client, path, method, headers, redirect, expires_in, now)
    reply.write_timeout = write_timeout
    return reply


async def _open(
    client: ContainerClient,
    path: str,
    method: str,
    headers: Mapping[str, str],
    redirect: bool,
    expires_in: int,
    now: _dt.datetime | None,
) -> Reply:
    try:
        if redirect:
            url = await client.presign_get(path, expires_in=expires_in)
            return _text(302, [("Location", url), ("Cache-Control", "no-store")])
        if method == "HEAD":
            return await _head(client, path, headers, now)
        return await _get(client, path, headers, now)
    except InvalidPathError as exc:
        return error_reply(exc, path=path)  # no object can have that name: 404
    except ClientValidationError:
        raise  # a bad argument of the caller's (expires_in): a bug to see, not a 502
    except MediaStoreError as exc:
        return error_reply(exc, path=path)


async def _head(
    client: ContainerClient, path: str, headers: Mapping[str, str], now: _dt.datetime | None
) -> Reply:
    info = await client.describe_object(path)
    # Range applies to GET only (RFC 9110 §14.2): a HEAD describes the whole object.
    if any(name in headers for name in _PRECONDITIONS):
        decision = evaluate_preconditions("HEAD", headers, _validators(info), now=now)
        if decision.status is not None:
            return _text(decision.status, _validator_headers(info))
    length = info.content_length
    pairs = _object_headers(info, length_known=length is not None)
    if length is not None:
        pairs.append(("Content-Length", str(length)))
    return Reply(200, pairs)


async def _get(
    client: ContainerClient, path: str, headers: Mapping[str, str], now: _dt.datetime | None
) -> Reply:
    requested = parse_range(headers.get("range"))
    conditional = any(name in headers for name in _PRECONDITIONS) or (
        requested is not None and "if-range" in headers
    )
    described: ObjectInfo | None = None  # by the last decision's 416, below
    for _ in range(_MAX_DECISIONS):
        info: ObjectInfo | None = None
        use_range = True
        if conditional:
            info = described or await client.describe_object(path)
            described = None
            decision = evaluate_preconditions("GET", headers, _validators(info), now=now)
            if decision.status is not None:
                return _text(decision.status, _validator_headers(info))
            use_range = decision.use_range
        wanted = requested if use_range and requested not in (None, "ignore") else None
        if wanted == "unsatisfiable":
            if info is None:
                info = await client.describe_object(path)
            if info.content_length is not None:
                return _unsatisfiable(info.content_length)
            wanted = None  # growing object: the origin would ignore the range anyway
        byte_range = wanted if isinstance(wanted, tuple) else None
        exits = contextlib.AsyncExitStack()
        try:
            stream = await exits.enter_async_context(client.get_object(path, range=byte_range))
        except RangeNotSatisfiableError as exc:
            await exits.aclose()
            if info is None:
                return _unsatisfiable(await _size_after_416(client, path, exc))
            # Decided on the DescribeObject, and the range fitted then: the object may have
            # been replaced by a shorter one since, and for that one the preconditions come
            # before the range (RFC 9110 §13.2.2). A 416 carries no ETag to tell.
            described = await client.describe_object(path)
            if described.etag != info.etag:
                continue
            size = exc.object_size
            return _unsatisfiable(described.content_length if size is None else size)
        except BaseException:
            await exits.aclose()
            raise
        if info is not None and stream.etag != info.etag:
            # Replaced between DescribeObject and GetObject: decide again on what GetObject
            # returned, unless that decision is the same.
            again = evaluate_preconditions("GET", headers, _validators(stream.info), now=now)
            if again.status is not None or again.use_range != use_range:
                await exits.aclose()
                continue
        try:
            return _stream_reply(stream, exits, byte_range)
        except BaseException:
            await exits.aclose()
            raise
    return _text(503, [("Retry-After", "1")])


def _stream_reply(
    stream: ObjectStream,
    exits: contextlib.AsyncExitStack,
    byte_range: tuple[int | None, int | None] | None,
) -> Reply:
    info = stream.info
    if stream.status == 206:
        content_range = stream.content_range
        if content_range is None:
            raise ProtocolError("the origin answered 206 without a valid Content-Range")
        first, last, total = content_range
        pairs = _object_headers(info, length_known=True)
        pairs.append(("Content-Range", f"bytes {first}-{last}/{'*' if total is None else total}"))
        pairs.append(("Content-Length", str(last - first + 1)))
        return Reply(206, pairs, _stream=stream, _exits=exits)
    size = stream.object_size
    pairs = _object_headers(info, length_known=size is not None)
    if byte_range is not None and size is not None:
        # The origin ignored the range but said how long the object is: serve the range.
        selected = resolve_range(byte_range, size)
        if selected is None:
            reply = _unsatisfiable(size)
            reply._exits = exits  # the adapter's aclose() closes the unread origin body
            return reply
        first, last = selected
        pairs.append(("Content-Range", f"bytes {first}-{last}/{size}"))
        pairs.append(("Content-Length", str(last - first + 1)))
        return Reply(206, pairs, _stream=stream, _exits=exits, _skip=first, _take=last - first + 1)
    # No range, or a growing STREAMING object (size unknown: Range cannot be honoured, so
    # everything, as a 200, which RFC 9110 §14.2 allows).
    if size is not None:
        pairs.append(("Content-Length", str(size)))
    return Reply(200, pairs, _stream=stream, _exits=exits)


# --- uploads ------------------------------------------------------------------------------


async def _counted(body: AsyncIterable[bytes], expected: int | None) -> AsyncIterator[bytes]:
    received = 0
    async for chunk in body:
        received += len(chunk)
        yield chunk
    if expected is not None and received != expected:
        raise UploadInterrupted(f"the request body ended after {received} of {expected} bytes")


def _content_length(headers: Mapping[str, str]) -> int | None:
    value = headers.get("content-length")
    # 1*DIGIT (RFC 9110 §8.6); int() alone would take "+5", " 5" or "5_000".
    if value is None or not (value.isascii() and value.isdigit()) or len(value) > 20:
        return None
    return int(value)


def check_upload_length(
    headers: Mapping[str, str], limit: int, *, streaming: bool | None = None
) -> Reply | None:
    """The answer to an upload that its ``Content-Length`` alone settles: ``400`` for an
    invalid one, ``413`` (with ``Connection: close``) for one over ``limit``; ``None`` to
    go on. :func:`store_upload` calls it first; adapters call it before they answer
    ``Expect: 100-continue``, so a client that asks first never sends a body that would
    be refused."""
    if not is_whole_number(limit):
        # Compared with each request's length: a str failed every upload with a TypeError
        # (a 500), nan let every one through.
        raise InvalidParameterError(
            f"the upload limit must be a whole number of bytes, not {limit!r}",
            rule="web.upload-limit",
        )
    value = headers.get("content-length")
    if value is None:
        return None
    declared = _content_length(headers)
    if declared is None:
        return _text(400, [("Connection", "close")], "invalid Content-Length\n")
    if declared > limit:
        mode = "" if streaming is None else ("STREAMING " if streaming else "STANDARD ")
        return _text(
            413, [("Connection", "close")], f"{mode}uploads are limited to {limit:,} bytes\n"
        )
    return None


# type "/" subtype (RFC 9110 §8.3.1), both tokens; parameters are cut off before the match.
_MEDIA_TYPE: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+/[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _media_type(value: str | None) -> str | None:
    """The media type of a Content-Type, lower-case, without parameters (MediaStore
    refuses them); ``None`` when absent or not a media type."""
    if not value:
        return None
    kind = value.split(";", 1)[0].strip(" \t").lower()
    return kind if _MEDIA_TYPE.fullmatch(kind) else None


def _allowed(kind: str | None, allowed_types: Collection[str]) -> bool:
    if kind is None:
        return False
    major = kind.split("/", 1)[0]
    return any(
        pattern in ("*/*", kind) or pattern == f"{major}/*"
        for pattern in (p.lower() for p in allowed_types)
    )


def stored_content_type(
    path: str,
    uploaded: str | None,
    *,
    content_type: str | None = None,
    allowed_types: Collection[str] = (),
) -> str | None:
    """The Content-Type an upload is stored with (the policy of :func:`store_upload`).

    1. ``content_type``, when the app fixes one;
    2. the uploader's media type (``uploaded``, the request's Content-Type, lower-case and
       without parameters) when it matches one of ``allowed_types`` (``"video/mp4"``,
       ``"video/*"``, or ``"*/*"`` for any), unless it is the generic
       ``application/octet-stream``;
    3. the type of the path's extension, from the table the CLI uses
       (:func:`msd_async.content_type_for`); ``None`` (stored without one, served as
       ``application/octet-stream``) for an unknown extension.

    So by default the name decides, never the uploader: an HTML page uploaded as
    ``video.mp4`` is served as ``video/mp4`` (and with ``nosniff``), not run as a page
    from the app's origin.
    """
    if isinstance(allowed_types, (str, bytes)):
        # Its characters were the patterns, which match no media type: silently none.
        raise InvalidParameterError(
            f"allowed_types must be a collection of media types such as ['video/mp4'], "
            f"not the str {allowed_types!r}",
            rule="web.allowed-types",
        )
    if content_type:
        return content_type
    kind = _media_type(uploaded)
    # application/octet-stream is what HTTP clients send when they do not know: the
    # extension tells more.
    if kind != "application/octet-stream" and _allowed(kind, allowed_types):
        return kind
    return content_type_for(path)


async def store_upload(
    client: ContainerClient,
    path: str,
    body: AsyncIterable[bytes],
    *,
    headers: Mapping[str, str] | None = None,
    streaming: bool = False,
    content_type: str | None = None,
    allowed_types: Collection[str] = (),
    cache_control: str | None = None,
    now: _dt.datetime | None = None,
) -> Reply:
    """Stream a request body into ``put_object(path, ...)`` and decide the answer.

    ``body`` is the request body as an async iterable of bytes, read only as fast as the
    origin takes it (nothing is buffered beyond the chunk in flight). ``streaming=True``
    makes a STREAMING upload (readable while it arrives; limit ``client.streaming_limit``,
    10,000,000 bytes by default), else STANDARD (``client.standard_limit``, 25,000,000).
    A ``Content-Length`` over the limit is answered ``413`` before a byte is read; a body
    that passes the limit while it arrives is cut and answered ``413``; either way nothing
    is stored and the previous version stays. ``If-Match``, ``If-None-Match`` (``*``: only
    if absent) and ``If-Unmodified-Since`` are checked first (412) against a
    DescribeObject: MediaStore has no conditional writes, so this narrows the race with
    another writer but cannot close it.

    The stored Content-Type is :func:`stored_content_type`'s: ``content_type`` if given,
    else the request's media type only if it matches ``allowed_types`` (none by default),
    else the type of the path's extension (:func:`msd_async.content_type_for`). Answers ``201``
    when no object existed, else ``200``, with the new ``ETag`` and a JSON body
    ``{"etag", "content_sha256", "size"}``; ``400`` when the body ended early
    (:class:`UploadInterrupted`; the client is usually gone by then) or a header is
    invalid; origin errors as :func:`status_for_error`. Every answer but 201/200 carries
    ``Connection: close``: the rest of the body is not read (a server would otherwise keep
    the connection to drain it, from a client that may have stalled, and the client keep
    sending it).
    """
    headers = {} if headers is None else headers
    limit = client.streaming_limit if streaming else client.standard_limit
    refused = check_upload_length(headers, limit, streaming=streaming)
    if refused is not None:
        return refused
    declared = _content_length(headers)
    kind = stored_content_type(
        path, headers.get("content-type"), content_type=content_type, allowed_types=allowed_types
    )
    try:
        existed = True
        try:
            current = await client.describe_object(path)
        except ObjectNotFoundError:
            existed = False
            validators = Validators(None, None, exists=False)
        else:
            validators = _validators(current)
        if any(name in headers for name in ("if-match", "if-none-match", "if-unmodified-since")):
            decision = evaluate_preconditions("PUT", headers, validators, now=now)
            if decision.status is not None:
                return _text(412, [("Connection", "close")])
        result = await client.put_object(
            path,
            _counted(body, declared),
            content_type=kind,
            cache_control=cache_control,
            streaming=streaming,
        )
    except UploadInterrupted as exc:
        logger.info("upload of %r aborted, nothing stored: %s", path, exc)
        return _text(400, [("Connection", "close")], "the request body ended early\n")
    except ObjectTooLargeError as exc:
        logger.info("upload of %r over the limit, nothing stored: %s", path, exc)
        return _text(
            413, [("Connection", "close")], f"uploads are limited to {exc.limit:,} bytes\n"
        )
    except (InvalidParameterError, InvalidPathError) as exc:
        # Our own validation text, about the request: safe and useful to send.
        return _text(400, [("Connection", "close")], f"{exc.message}\n")
    except (MediaStoreError, ClientValidationError) as exc:
        reply = error_reply(exc, path=path)
        reply.headers.append(("Connection", "close"))
        return reply
    data = json.dumps(
        {"etag": result.etag, "content_sha256": result.content_sha256, "size": result.size}
    ).encode()
    return Reply(
        200 if existed else 201,
        [
            ("ETag", quote_etag(result.etag)),
            ("Content-Type", "application/json"),
            _NOSNIFF,
            ("Content-Length", str(len(data))),
        ],
        data,
    )

