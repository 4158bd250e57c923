"""The local MediaStore-compatible server: :class:`LocalMediaStore`, an aiohttp.web application.

It serves one container's data plane (docs/contract.md) over HTTP/1.1 and is strict where
the service is: SigV4 signatures (header or presigned), path rules, object limits while the
body streams, the 30-second upload cap, and error responses with ``x-amzn-ErrorType`` /
``x-amzn-RequestId``.

Choices where the service left a question open (docs/contract.md marks them **(choice)**):

- Paths are resolved from the *raw* request path. One leading extra ``/`` is stripped
  (``//live/a`` is ``live/a``: botocore's rendering of ``Path="/live/a"``); any other
  empty segment, and ``.`` and ``..`` segments, are refused (400): the signature covers the
  path with those removed, so accepting them would let one signature name two objects.
- An in-progress STREAMING object answers GET with a chunked 200 (Range ignored) and HEAD
  without Content-Length; it is listed by ListItems only once complete. A GET that follows
  it checks every ``client_check_interval`` seconds while the upload pauses that its client
  is still there (aiohttp does not cancel the handler of a client that left).
- A client that takes no data of a response for ``send_time_limit`` seconds (30) has its
  connection closed: one that stopped reading never holds a handler or an open file. A
  connection without a whole request head for ``idle_time_limit`` seconds (60) is closed.
- A request whose Host is ``<id>.data.mediastore.<region>.amazonaws.com`` must name this
  server's container (``container``, default ``"local"``); any other Host means this container.
- ``close()`` (``msd serve`` on SIGINT/SIGTERM) stops listening at once, drops the uploads
  whose body is still coming (nothing of them is stored; a follower's body ends without
  its last chunk) and gives the responses being sent ``shutdown_grace`` seconds (2), then
  cuts their connections (logged and counted ``aborted``, one WARNING each).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as _dt
import email.utils
import hmac
import json
import logging
import math
import re
import secrets
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, Literal, Self

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http import HttpProcessingError, HttpVersion11

from .. import rules
from .._listen import listen, serve_sockets, url_host
from ..config import (
    Timeouts,
    check_plain_callback,
    is_number,
    is_seconds,
    is_whole_number,
    refuse_awaitable,
)
from ..credentials import _REGION_RE, Credentials
from ..errors import ClientValidationError, InvalidParameterError
from .auth import AuthFailure, Deferred, Verifier, decode_query, header_value, is_hex_sha256
from .cors import CorsPolicy, parse_request_headers
from .faults import Fault, FaultPlan
from .llhls import BlockingRequest, playlist_progress
from .store import (
    DirectoryStore,
    MemoryStore,
    NameConflictError,
    ObjectVersion,
    Store,
    Upload,
    UploadFailed,
)

__all__ = ["DEFAULT_CREDENTIALS", "LocalMediaStore"]

logger = logging.getLogger("msd_async.testing.server")

#: The well-known keys of a server started without credentials (printed by ``msd serve``).
DEFAULT_CREDENTIALS: Final = Credentials("AKIDLOCALMEDIASTORE", "local-mediastore-secret-key")
#: ListItems NextToken lifetime ("Tokens expire after 15 minutes": the botocore model).
TOKEN_LIFETIME: Final = 15 * 60
#: ``send_time_limit``'s default: what the client library gives a server to take each
#: chunk it sends (``Timeouts.write``), so both ends wait for the other alike.
DEFAULT_SEND_TIME_LIMIT: Final = Timeouts().write
#: ``idle_time_limit``'s default: an AWS load balancer's idle timeout.
DEFAULT_IDLE_TIME_LIMIT: Final = 60.0

_HOST_RE: Final = re.compile(
    r"([A-Za-z0-9-]+)\.data\.mediastore\.[a-z0-9-]+\.amazonaws\.com(?::\d+)?", re.ASCII
)
#: The control plane's ContainerName: pattern [\w-]+ (ASCII), 1 to 255 characters.
_CONTAINER_NAME: Final = re.compile(r"[\w-]{1,255}", re.ASCII)
#: The model's RangePattern, ^bytes=(?:\d+\-\d*|\d*\-\d+)$: stricter than RFC 9110's
#: grammar (no other case of "bytes", no spaces, no list commas), and what the API takes.
_RANGE_PATTERN: Final = re.compile(r"bytes=(?:\d+-\d*|\d*-\d+)", re.ASCII)
_LOOPBACK: Final = frozenset({"127.0.0.1", "::1", "localhost"})
_READ_OPS: Final = frozenset({"GET", "HEAD"})
_BYTES_IN: Final = web.RequestKey("msd_bytes_in", int)
_GONE: Final = web.RequestKey("msd_gone", bool)
#: The most one write to a client carries: the send time limit is per write, so a big
#: chunk (a memory-store object is one) is sent in pieces for the limit to mean "took no
#: data for that long", not "took the whole object that fast".
_SEND_PIECE: Final = 256 * 1024


class ApiError(Exception):
    """An error response: AWS ``code``, HTTP ``status`` and a message."""

    def __init__(self, status: int, code: str, message: str, *, close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        #: Close the connection after answering (the request body was not read to its end).
        self.close = close
        self.headers: dict[str, str] = {}


class _ClientGone(Exception):
    """The client went away (or a fault cut it off); no response can be delivered."""


class _SendWatch:
    """The send time limit of one response: every write to the client goes through
    :meth:`write` (or :meth:`finish`), and a write that has not completed ``limit`` seconds
    after it began means the client stopped reading. Its connection is then aborted, which
    ends the pending write; the write raises :class:`_ClientGone` and the handler lets go
    of whatever it holds (an open object file, a STREAMING upload it follows).

    One timer per response, re-armed at most once per ``limit``, not one per write.
    """

    __slots__ = ("_handle", "_limit", "_loop", "_request", "_since", "stalled")

    def __init__(self, request: web.Request, limit: float | None) -> None:
        self._request = request
        self._limit = limit
        self._loop = asyncio.get_running_loop()
        self._since: float | None = None
        self._handle: asyncio.TimerHandle | None = None
        self.stalled = False

    async def write(self, resp: web.StreamResponse, data: bytes | memoryview) -> None:
        view = memoryview(data) if len(data) > _SEND_PIECE else data  # slices, not copies
        for start in range(0, len(data), _SEND_PIECE):
            piece = view[start : start + _SEND_PIECE] if view is not data else data
            self._begin()
            try:
                await resp.write(piece)
            finally:
                self._since = None
            if self.stalled:
                raise _ClientGone

    async def prepare(self, resp: web.StreamResponse) -> None:
        self._begin()
        try:
            await resp.prepare(self._request)
        finally:
            self._since = None
        if self.stalled:
            raise _ClientGone

    async def finish(self, resp: web.StreamResponse) -> None:
        """Send the rest of ``resp`` (prepared here if it is not yet), to its end: the end
        of a body is a write too (the terminating chunk, or what aiohttp holds back under
        its drain threshold), and a client may stop reading just before it."""
        self._begin()
        try:
            await resp.prepare(self._request)
            await resp.write_eof()
        finally:
            self._since = None
        if self.stalled:
            raise _ClientGone

    def _begin(self) -> None:
        if self.stalled:
            raise _ClientGone
        if self._limit is None:
            return
        now = self._since = self._loop.time()
        if self._handle is None:
            self._handle = self._loop.call_at(now + self._limit, self._check)

    def _check(self) -> None:
        self._handle = None
        since, limit = self._since, self._limit
        if since is None or limit is None:
            return  # between writes: the next one re-arms
        due = since + limit
        if self._loop.time() < due:
            self._handle = self._loop.call_at(due, self._check)
            return
        self.stalled = True
        request = self._request
        logger.warning(
            "%s %s from %s: the client took no data for %g s (send time limit); "
            "connection closed",
            request.method, request.path, request.remote, limit,
        )
        transport = request.transport
        if transport is not None:
            transport.abort()

    def close(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.cancel()


_WATCH: Final = web.RequestKey("msd_send_watch", _SendWatch)
#: The handler has returned: a body still unread is aiohttp's to drop (its lingering).
_ANSWERED: Final = web.RequestKey("msd_answered", bool)


async def _expect_later(request: web.Request) -> None:
    """The route's ``Expect`` handler. aiohttp's default sends ``100 Continue`` before the
    handler runs, so a client was told to send a body the server then refused (an
    oversized Content-Length, a bad signature). ``100-continue`` is answered by the PUT
    once its checks pass; another expectation is refused as aiohttp does (417)."""
    expect = request.headers.get("Expect", "")
    if request.version == HttpVersion11 and expect.lower() != "100-continue":
        raise web.HTTPExpectationFailed(text=f"Unknown Expect: {expect}")


def _validation(message: str, *, close: bool = False) -> ApiError:
    return ApiError(400, "ValidationException", message, close=close)


def _http_date(ts: float) -> str:
    return email.utils.formatdate(ts, usegmt=True)


def _split_path(raw: str) -> str:
    """The decoded object path of a raw request path (``""`` for the container's root).

    The request target's own ``/`` and one more are stripped: botocore sends a Path given
    with a leading ``/`` as ``//live/a`` (docs/contract.md, Names and limits). Any other
    empty segment (``a//b``, a trailing ``/``) is refused, not collapsed: the model's
    ``PathNaming`` has none, and collapsing would let ``a//b`` name ``a/b``.
    """
    from urllib.parse import unquote

    rest = raw[1:] if raw[:1] == "/" else raw
    if rest[:1] == "/":
        rest = rest[1:]
    if not rest:
        return ""
    segments: list[str] = []
    for segment in rest.split("/"):
        if not segment:
            raise _validation(
                f"path {raw!r} has an empty segment ('//' or a trailing '/'); folder and "
                "file names need at least one character"
            )
        try:
            decoded = unquote(segment, errors="strict")
        except UnicodeDecodeError:
            raise _validation(f"path segment {segment!r} is not valid UTF-8") from None
        if decoded in (".", ".."):
            raise _validation(
                f"path {raw!r} has a '{decoded}' segment; dot segments are not allowed"
            )
        segments.append(decoded)
    return "/".join(segments)


def _check_object_path(path: str) -> str:
    try:
        return rules.normalize_object_path(path)
    except ClientValidationError as exc:
        raise _validation(exc.message) from None


#: The API operation of a request, by (method, whether it names the container's root).
_OPERATIONS: Final = {
    ("GET", True): "ListItems",
    ("GET", False): "GetObject",
    ("HEAD", False): "DescribeObject",
    ("PUT", False): "PutObject",
    ("DELETE", False): "DeleteObject",
}


#: Query parameters of a presigned URL that must never reach a log: the signature (anyone
#: holding the URL until it expires can use it), the session token, and the credential
#: scope, which names the access key.
_SECRET_PARAMS: Final = frozenset(
    {"x-amz-signature", "x-amz-security-token", "x-amz-credential"}
)


def _logged_target(raw_path: str) -> tuple[str, str]:
    """The path and the query of a request as the access log may show them: each secret
    parameter's value replaced by ``REDACTED``, everything else (``Path=``, ``X-Amz-Expires``)
    kept as received, so a presigned request is still told from a plain one."""
    from urllib.parse import unquote

    path, _, query = raw_path.partition("?")
    if not query:
        return path, ""
    params = []
    for param in query.split("&"):
        name, equals, _ = param.partition("=")
        # Compared decoded and in any case: the verifier decodes names too, and a log
        # keeps nothing that some spelling of a secret's name carries.
        if equals and unquote(name).lower() in _SECRET_PARAMS:
            param = f"{name}=REDACTED"
        params.append(param)
    return path, "&".join(params)


class _AccessLogger(AbstractAccessLogger):
    """One line per request: method, path and query (secrets redacted: :func:`_logged_target`),
    status, bytes in/out, milliseconds, request id."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        status: Any = response.status
        if request.get(_GONE):
            status = "aborted"
        try:
            sent = response.body_length
        except Exception:  # not prepared (connection lost first)
            sent = 0
        rid = response.headers.get("x-amzn-RequestId", "-")
        received = request.get(_BYTES_IN, 0)
        path, query = _logged_target(request.raw_path)
        self.logger.info(
            "%s %s %s in=%d out=%d %.1fms %s",
            request.method,
            f"{path}?{query}" if query else path,
            status,
            received,
            sent,
            time * 1000,
            rid,
            # For `msd serve --log-format json`: the path alone, as its field says.
            extra={"msd_fields": {
                "event": "request", "method": request.method,
                "path": path, "status": status,
                "bytes_in": received, "bytes_out": sent, "latency_s": round(time, 6),
                "request_id": rid,
            }},
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


class _ServerLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's server logger, with a malformed request (the client's fault, answered 400)
    on one WARNING line instead of an ERROR traceback. Anything else passes unchanged."""

    def _malformed(self, args: tuple[Any, ...], exc_info: Any) -> bool:
        exc = exc_info if isinstance(exc_info, BaseException) else None
        if not isinstance(exc, HttpProcessingError) or not 400 <= (exc.code or 0) < 500:
            return False
        remote = args[0] if args else "?"
        reason = " ".join(str(exc.message).split())
        self.logger.warning("malformed request from %s: %s (HTTP %s)", remote, reason, exc.code)
        return True

    def exception(self, msg: object, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
        if not self._malformed(args, exc_info):
            super().exception(msg, *args, exc_info=exc_info, **kwargs)

    def debug(self, msg: object, *args: Any, **kwargs: Any) -> None:
        if not self._malformed(args, kwargs.get("exc_info")):
            super().debug(msg, *args, **kwargs)


def _check_seconds(name: str, value: object, what: str) -> None:
    # inf is no limit. True was 1 s; a str failed with a TypeError, or (upload_time_limit)
    # inside the first upload, a 500.
    if not is_seconds(value, zero=False, endless=True):
        raise InvalidParameterError(f"{name} must be {what}, not {value!r}",
                                    rule=f"server.{name}")


def _check_options(
    *, port: object, region: object, standard_limit: object, streaming_limit: object,
    upload_time_limit: object, clock_skew: object, faults: object, on_request: object,
    allow_anonymous: object, container: object,
) -> None:
    """Refuse a LocalMediaStore option that would fail at start or inside a request (a
    500 there, far from the test that set it) with an InvalidParameterError, a
    ValueError as the options checked before raised."""
    if not is_whole_number(port) or port > 65535:  # type: ignore[operator]
        raise InvalidParameterError(f"port must be 0-65535 (0: any free one), not {port!r}",
                                    rule="server.port")
    if not isinstance(region, str) or _REGION_RE.fullmatch(region) is None:
        # Every client refuses such a region before signing: a server nobody could use.
        raise InvalidParameterError(f"region {region!r} is not a region name such as "
                                    "'us-east-1'", rule="server.region")
    for name, value in (("standard_limit", standard_limit), ("streaming_limit", streaming_limit)):
        if not is_whole_number(value, 1):
            raise InvalidParameterError(
                f"{name} must be a whole number of bytes, 1 or more, not {value!r}",
                rule=f"server.{name}",
            )
    _check_seconds("upload_time_limit", upload_time_limit, "a number of seconds above 0")
    # Added to the clock as a timedelta: inf or nan failed every signed request.
    if not is_number(clock_skew) or not math.isfinite(clock_skew):  # type: ignore[arg-type]
        raise InvalidParameterError(
            f"clock_skew must be a finite number of seconds, not {clock_skew!r}",
            rule="server.clock_skew",
        )
    if not isinstance(container, str) or _CONTAINER_NAME.fullmatch(container) is None:
        # "" (or a dot, a non-ASCII letter) made every request with a MediaStore-style Host
        # a 404 ContainerNotFound: no service endpoint names such a container.
        raise InvalidParameterError(
            f"container {container!r} is not a container name: 1 to 255 letters, digits, "
            "'_' or '-' (the service's rule), such as 'local'",
            rule="server.container",
        )
    if faults is not None and not isinstance(faults, FaultPlan):
        raise InvalidParameterError(f"faults must be a FaultPlan or None, not {faults!r}",
                                    rule="server.faults")
    if on_request is not None:
        check_plain_callback(on_request, "on_request", rule="server.on_request")
    if isinstance(allow_anonymous, str):
        raise InvalidParameterError(
            f"allow_anonymous takes a collection such as ['read'], not the str "
            f"{allow_anonymous!r}",
            rule="server.allow_anonymous",
        )


class LocalMediaStore:
    """A local MediaStore data-plane server for one container.

    Use ``async with LocalMediaStore() as server:`` or ``await server.start()`` /
    ``await server.close()``. Parameters (all keyword-only):

    ==========================  ==============================================================
    ``host``, ``port``          where to listen; default ``127.0.0.1`` and a free port (0).
                                A name listens on each of its addresses, all on the one
                                port :attr:`endpoint` names
    ``region``                  the SigV4 scope region accepted; default ``us-east-1``
    ``credentials``             the key pair clients sign with; default
                                :data:`DEFAULT_CREDENTIALS`. A ``session_token`` on it must be
                                sent by clients (temporary credentials)
    ``extra_credentials``       more accepted key pairs
    ``permissions``             ``{access key id: operations}``: the API operations
                                (``"PutObject"``, ``"GetObject"``, ``"DescribeObject"``,
                                ``"DeleteObject"``, ``"ListItems"``) that key may call, as
                                an IAM policy would allow them; any other gets a 403
                                ``AccessDeniedException`` (the signature was accepted). A key
                                not named may call all five
    ``data_dir``                store objects in this directory (durable); default in memory
    ``allow_anonymous``         ``"read"`` (GET/HEAD/ListItems) and/or ``"write"`` (PUT/DELETE)
                                without a signature; default neither
    ``standard_limit``          STANDARD object limit in bytes; default 25,000,000
    ``streaming_limit``         STREAMING object limit in bytes; default 10,000,000
    ``upload_time_limit``       seconds an upload may take; default 30
    ``idle_time_limit``         seconds a connection may go without a whole request head,
                                from its start or the end of its previous response; then
                                it is closed (an idle keep-alive, or a head trickling in
                                byte by byte). Default 60
    ``send_time_limit``         seconds one write of a response (at most 256 KiB) may wait
                                for the client to take it; past that the client stopped
                                reading and its connection is closed, releasing the
                                handler. Default 30; ``None``: no limit
    ``faults``                  a :class:`FaultPlan`; default one that injects nothing
    ``container``               the container name a MediaStore-style Host must use: 1
                                to 255 letters, digits, ``_`` or ``-`` (the service's
                                rule); default ``"local"``
    ``fsync``                   directory store: fsync before acknowledging; default ``True``
    ``on_request``              called after each request with ``(operation, status,
                                seconds)``: the API operation name (``"other"`` for another
                                method), the HTTP status as text (``"aborted"`` when the
                                client went away or close() cut the request) and the
                                handling time (``--metrics``); a plain function (an async
                                one is refused). If it raises, the error is logged (the
                                first, then every 1000th) and the answer stands
    ``cors_policy``             a :class:`~msd_async.testing.cors.CorsPolicy` (or its JSON: the
                                list of rules, or ``{"CorsPolicy": [...]}``): answers preflights
                                and adds CORS headers as MediaStore did; default none (no
                                cross-origin access). It opens no reads: see ``allow_anonymous``
    ``ll_hls_blocking``         hold a playlist GET with ``_HLS_msn``/``_HLS_part`` until the
                                playlist has that segment or part (LL-HLS blocking playlist
                                reload; an extension MediaStore never had); default ``False``
    ``clock_skew``              seconds the server's clock is ahead of this machine's
                                (negative: behind), for its signature dates and its ``Date``
                                header: a client's clock seen from a service it is off from;
                                default 0
    ==========================  ==============================================================
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        region: str = "us-east-1",
        credentials: Credentials | None = None,
        extra_credentials: Iterable[Credentials] = (),
        permissions: Mapping[str, Iterable[str]] | None = None,
        data_dir: str | None = None,
        allow_anonymous: Iterable[Literal["read", "write"]] = (),
        standard_limit: int = rules.STANDARD_OBJECT_LIMIT,
        streaming_limit: int = rules.STREAMING_OBJECT_LIMIT,
        upload_time_limit: float = rules.UPLOAD_TIME_LIMIT,
        send_time_limit: float | None = DEFAULT_SEND_TIME_LIMIT,
        idle_time_limit: float = DEFAULT_IDLE_TIME_LIMIT,
        faults: FaultPlan | None = None,
        container: str = "local",
        fsync: bool = True,
        access_logger: logging.Logger | None = None,
        on_request: Callable[[str, str, float], object] | None = None,
        cors_policy: CorsPolicy | object | None = None,
        ll_hls_blocking: bool = False,
        clock_skew: float = 0.0,
    ) -> None:
        _check_options(
            port=port, region=region, standard_limit=standard_limit,
            streaming_limit=streaming_limit, upload_time_limit=upload_time_limit,
            clock_skew=clock_skew, faults=faults, on_request=on_request,
            allow_anonymous=allow_anonymous, container=container,
        )
        self.host = host
        self.clock_skew = clock_skew
        self.on_request = on_request
        #: Times ``on_request`` raised (each logged the first time, then every 1000th).
        self.on_request_failures = 0
        self.ll_hls_blocking = ll_hls_blocking
        self.cors_policy = (
            cors_policy
            if cors_policy is None or isinstance(cors_policy, CorsPolicy)
            else CorsPolicy.from_json(cors_policy)
        )
        self.port = port
        self.region = region
        self.credentials = credentials or DEFAULT_CREDENTIALS
        self.allow_anonymous = frozenset(allow_anonymous)
        unknown = self.allow_anonymous - {"read", "write"}
        if unknown:
            raise InvalidParameterError(
                f"allow_anonymous takes 'read' and/or 'write', not {sorted(unknown)}",
                rule="server.allow_anonymous",
            )
        self.standard_limit = standard_limit
        self.streaming_limit = streaming_limit
        self.upload_time_limit = upload_time_limit
        if send_time_limit is not None:
            _check_seconds("send_time_limit", send_time_limit, "a number of seconds above 0, "
                           "or None for no limit")
        self.send_time_limit = send_time_limit
        _check_seconds("idle_time_limit", idle_time_limit, "a number of seconds above 0")
        self.idle_time_limit = idle_time_limit
        #: Seconds between checks that the client of a GET following a paused STREAMING
        #: upload is still connected. aiohttp does not cancel a handler whose client left,
        #: so without them a viewer gone while the upload pauses would be served until the
        #: upload grows again or ends, which for a stalled encoder is its time limit.
        self.client_check_interval = 1.0
        #: Seconds close() gives the responses still being sent when it begins (a client
        #: taking a large object) to finish; then their connections are cut. Read (and
        #: checked: 0 or more) by start(), so set it before.
        self.shutdown_grace = 2.0
        self._grace = self.shutdown_grace  # the value start() read
        self.faults = faults if faults is not None else FaultPlan()
        self.container = container
        self.data_dir = data_dir
        self.store: Store = (
            DirectoryStore(data_dir, fsync=fsync) if data_dir is not None else MemoryStore()
        )
        self.verifier = Verifier(
            [self.credentials, *extra_credentials],
            region,
            clock=(lambda: _dt.datetime.now(_dt.UTC) + _dt.timedelta(seconds=clock_skew))
            if clock_skew
            else None,
        )
        self.permissions = {
            key: frozenset(operations) for key, operations in (permissions or {}).items()
        }
        for key, operations in self.permissions.items():
            not_operations = operations - set(_OPERATIONS.values())
            if not_operations:
                raise ValueError(
                    f"permissions[{key!r}] names {sorted(not_operations)}; the operations are "
                    f"{sorted(set(_OPERATIONS.values()))}"
                )
        self._token_key = secrets.token_bytes(32)
        #: Clock for NextToken expiry (replaceable in tests).
        self.token_clock: Callable[[], float] = time.time
        self._access_logger = access_logger or logging.getLogger("msd_async.testing.access")
        self._runner: web.AppRunner | None = None
        #: Set by close(): requests held by a delay fault let go.
        self._closing = asyncio.Event()
        #: Set when close() is done, for a close() from another task meanwhile to wait.
        self._closed: asyncio.Event | None = None
        #: Requests with a body, for close() to end the connections still waiting for one.
        #: By id: a request is not hashable.
        self._bodies: weakref.WeakValueDictionary[int, web.BaseRequest] = (
            weakref.WeakValueDictionary()
        )
        #: The connections requests came on, for close() to cut: one whose handler is done
        #: may still hold a response its client stopped reading, which aiohttp's graceful
        #: close of it waits to send.
        self._transports: weakref.WeakSet[asyncio.Transport] = weakref.WeakSet()
        #: The requests being handled, by id (a request is not hashable): those close()
        #: cuts at its grace are logged.
        self._in_flight: dict[int, web.Request] = {}
        self.endpoint = ""

    # -- lifecycle -------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        """The aiohttp application (one catch-all route; the server routes by itself)."""
        middlewares = []
        if self.on_request is not None:

            @web.middleware
            async def observe(
                request: web.Request, handler: Callable[[web.Request], Any]
            ) -> web.StreamResponse:
                return await self._observe(request, handler)

            middlewares.append(observe)
        app = web.Application(client_max_size=1024, middlewares=middlewares)
        app.router.add_route("*", "/{tail:.*}", self._handle, expect_handler=_expect_later)
        if self.cors_policy is not None:
            app.on_response_prepare.append(self._add_cors_headers)
        if self.clock_skew:
            app.on_response_prepare.append(self._add_skewed_date)
        return app

    async def _add_skewed_date(self, request: web.Request, response: web.StreamResponse) -> None:
        # aiohttp dates a response only when it has no Date yet.
        response.headers["Date"] = _http_date(time.time() + self.clock_skew)

    async def _observe(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        started = time.monotonic()
        root = request.raw_path.partition("?")[0].strip("/") == ""
        operation = _OPERATIONS.get((request.method, root), "other")
        try:
            response: web.StreamResponse = await handler(request)
        except BaseException:
            # Cancelled by aiohttp's shutdown (a handler that outlived its connection cut
            # at the grace): exactly the requests a shutdown cut, not to go uncounted.
            self._report(operation, "aborted", started)
            raise
        status = "aborted" if request.get(_GONE) else str(response.status)
        self._report(operation, status, started)
        return response

    def _report(self, operation: str, status: str, started: float) -> None:
        assert self.on_request is not None
        try:
            result = self.on_request(operation, status, time.monotonic() - started)
            if result is not None:
                refuse_awaitable(result, "on_request", self.on_request,
                                 rule="server.on_request")
        except Exception as exc:
            # An observer's bug: it reached aiohttp as the handler's error, which logged
            # "Error handling request" with a traceback for every request, naming no
            # on_request.
            self.on_request_failures += 1
            count = self.on_request_failures
            if count == 1 or count % 1000 == 0:
                logger.error(
                    "on_request %r failed (%d time(s) so far; later ones are logged every "
                    "1000th); the request was answered as usual", self.on_request, count,
                    exc_info=exc,
                )

    async def start(self) -> None:
        """Start listening; sets :attr:`port` and :attr:`endpoint`."""
        if self._runner is not None:
            raise RuntimeError("server already started")
        grace = self.shutdown_grace
        if not is_seconds(grace):
            raise InvalidParameterError(
                f"shutdown_grace must be a finite number of seconds, 0 or more, not {grace!r}",
                rule="server.shutdown_grace",
            )
        self._grace = grace
        self._closing = asyncio.Event()
        runner = web.AppRunner(
            self.make_app(),
            access_log_class=_AccessLogger,
            access_log=self._access_logger,
            logger=_ServerLog(logging.getLogger("aiohttp.server"), {}),
            handle_signals=False,
            # close() cuts what is still in flight at its grace (_cut_connections). aiohttp's
            # own bound only backs it up (a handler that outlived its connection), and is
            # later: a handler that ends as its first wait times out makes aiohttp log an
            # InvalidStateError.
            shutdown_timeout=self._grace + 1.0,
            # aiohttp's timer from a connection's start, and from the end of each response:
            # it closes the connection if no whole request head came by then, so a head
            # that trickles in (slowloris) is cut too, not only an idle keep-alive.
            keepalive_timeout=self.idle_time_limit,
        )
        await runner.setup()
        try:
            # Every address of a name on the one port the endpoint names (msd_async._listen).
            sockets = await listen(self.host, self.port)
            await serve_sockets(runner, sockets)
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(sockets[0].getsockname()[1])
        self.endpoint = f"http://{url_host(self.host)}:{self.port}"

    async def close(self) -> None:
        """Stop listening, end in-progress uploads (readers see them fail), close connections.

        A request body still coming (a stalled upload, the rest of one refused before it
        was read) is not waited for. A response a client is still taking is given
        :attr:`shutdown_grace` (2 s) to finish; then its connection is cut, the request is
        logged and counted as ``aborted``, and one WARNING line names it (one whose handler
        was done, only its last bytes unsent, keeps its status): close() takes about the
        grace at most.

        Cancelled midway (a timeout around a test's teardown, a cancelled anyio scope),
        it still cuts every connection and waits for their handlers (a few loop turns)
        before it re-raises the cancellation: nothing of the server is left open or
        running. A close() while another task's is under way returns when that one is
        done."""
        runner, self._runner = self._runner, None
        if runner is None:
            if self._closed is not None:
                # Another task's close() is under way: done when it is.
                await self._closed.wait()
            return
        self._closed = closed = asyncio.Event()
        self._closing.set()
        cut = asyncio.get_running_loop().call_later(
            self._grace, self._cut_connections, runner, True
        )
        try:
            await self.store.aclose()
            self._end_unread_bodies()
            await runner.cleanup()
            # A connection whose handler is done may still hold the end of a response its
            # client is not taking, and aiohttp's graceful close of it waits to send it:
            # for a client that stopped reading, forever. The grace's cut ends the wait.
            # Polled: nothing public tells when a transport's buffer has drained.
            while any(t.get_write_buffer_size() for t in self._transports):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        except BaseException:
            # Once cut, every handler ends within a few loop turns (its reads and writes
            # fail), and cleanup() waits for aiohttp's tasks and releases the rest. Waited
            # for through further cancellations too (a cancelled anyio scope delivers one
            # at every await): short, everything being cut, and bounded by aiohttp's own.
            self._cut_connections(runner, False)
            cleanup = asyncio.ensure_future(runner.cleanup())
            while not cleanup.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(cleanup)
            if not cleanup.cancelled() and cleanup.exception() is not None:
                logger.warning("cleanup after a cancelled close() failed",
                               exc_info=cleanup.exception())
            raise
        finally:
            cut.cancel()
            closed.set()

    def _cut_connections(self, runner: web.AppRunner, at_grace: bool) -> None:
        """Abort every connection still open (its response, if any, ends incomplete).

        Aborted, not closed: a graceful close first sends what is buffered, which for a
        client that stopped reading never happens."""
        in_flight = list(self._in_flight.values())
        for request in in_flight:
            request[_GONE] = True
            if at_grace:
                logger.warning(
                    "%s %s from %s: still being answered %g s into the server's shutdown "
                    "(its grace); connection cut",
                    request.method, request.path, request.remote, self._grace,
                )
        answering = {id(r.transport) for r in in_flight}
        transports = set(self._transports)
        server = runner.server
        if server is not None:
            transports.update(c.transport for c in server.connections if c.transport is not None)
        for transport in transports:
            unsent = transport.get_write_buffer_size()
            if at_grace and unsent and id(transport) not in answering:
                peer = transport.get_extra_info("peername")
                logger.warning(
                    "a response to %s: its last %d bytes not taken %g s into the server's "
                    "shutdown (its grace); connection cut",
                    f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else peer,
                    unsent, self._grace,
                )
            transport.abort()

    def _end_unread_bodies(self) -> None:
        """Close the connections whose request body is still coming: a PUT's handler
        waiting for the rest of a stalled body, or aiohttp reading and dropping the rest
        of a body refused before it was read (its lingering, up to 10 s, so that a client
        still sending gets the answer). Neither will be stored, and aiohttp's shutdown
        would wait its whole grace for them."""
        for request in list(self._bodies.values()):
            content = request.content
            if content.is_eof() or content.exception() is not None:
                continue
            if request.get(_ANSWERED):
                # aiohttp's lingering read is not woken by the end of its connection: it
                # would run on after close() for the rest of its 10 s.
                content.feed_eof()
            transport = request.transport
            if transport is not None:
                transport.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- request handling ------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.body_exists:
            self._bodies[id(request)] = request
        if request.transport is not None:
            self._transports.add(request.transport)
        self._in_flight[id(request)] = request
        watch = request[_WATCH] = _SendWatch(request, self.send_time_limit)
        try:
            resp = await self._respond(request)
            if not request.get(_GONE):
                # Sent here, not by aiohttp after the handler returns, so the send time
                # limit covers a whole answer (a long listing, an error) to its end.
                try:
                    await watch.finish(resp)
                except (_ClientGone, ConnectionError):
                    # Logged as aborted only when cut here; an answer the client left
                    # before getting keeps its status in the log, as aiohttp logs it.
                    if watch.stalled:
                        request[_GONE] = True
            return resp
        finally:
            del self._in_flight[id(request)]
            request[_ANSWERED] = True
            watch.close()
            # The watch refers to the request: a cycle only the cyclic GC would free.
            del request[_WATCH]

    async def _respond(self, request: web.Request) -> web.StreamResponse:
        rid = secrets.token_hex(16)
        try:
            return await self._dispatch(request, rid)
        except ApiError as exc:
            return self._error_response(request, exc, rid)
        except (_ClientGone, ConnectionError):
            # The client went away (while a delay fault held the request, or mid-answer):
            # nobody is left to answer, and that is not a server failure to log.
            request[_GONE] = True
            resp = web.Response(status=400, headers={"x-amzn-RequestId": rid})
            resp.force_close()
            return resp
        except Exception:
            logger.exception("request %s failed", rid)
            return self._error_response(
                request,
                ApiError(500, "InternalServerError", "The server failed; see its log."),
                rid,
            )

    def _error_response(self, request: web.Request, exc: ApiError, rid: str) -> web.Response:
        headers = {"x-amzn-ErrorType": exc.code, "x-amzn-RequestId": rid, **exc.headers}
        body = None
        if request.method != "HEAD":
            body = json.dumps({"Message": exc.message, "__type": exc.code}).encode()
            headers["Content-Type"] = "application/json"
        resp = web.Response(status=exc.status, body=body, headers=headers)
        if exc.close:
            resp.force_close()
        return resp

    async def _dispatch(self, request: web.Request, rid: str) -> web.StreamResponse:
        method = request.method
        raw_path, _, raw_query = request.raw_path.partition("?")
        path = _split_path(raw_path)
        if method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            return self._preflight(request, rid)

        fault = self.faults.pick(method, path, is_object=bool(path))
        if fault is not None:
            fault = await self._early_fault(fault, request)
            if self._client_gone(request):
                raise _ClientGone  # it disconnected while the fault held its request

        host = request.headers.get("Host", "")
        match = _HOST_RE.fullmatch(host)
        if match is not None and match.group(1) != self.container:
            raise ApiError(
                404,
                "ContainerNotFoundException",
                f"Container {match.group(1)!r} not found; this server hosts {self.container!r}.",
            )

        query = decode_query(raw_query)
        deferred = self._authenticate(
            request, method, raw_path, query, _OPERATIONS.get((method, not path), "other")
        )

        if method == "GET" and not path:
            return self._list_items(query, rid)
        if method not in ("GET", "HEAD", "PUT", "DELETE"):
            raise ApiError(
                405, "MethodNotAllowedException", f"Method {method} is not supported."
            )
        path = _check_object_path(path)
        if method == "PUT":
            return await self._put_object(request, path, rid, deferred, fault)
        if method == "DELETE":
            if not self.store.delete(path):
                raise self._not_found(path)
            return web.json_response({}, headers={"x-amzn-RequestId": rid})
        if self.ll_hls_blocking and method == "GET" and path.endswith((".m3u8", ".m3u")):
            await self._block_for_playlist(request, path, query)
        return await self._get_object(request, path, rid, fault, head=method == "HEAD")

    async def _block_for_playlist(
        self, request: web.Request, path: str, query: list[tuple[str, str]]
    ) -> None:
        """LL-HLS blocking playlist reload (docs/contract.md "Extensions"): return once the
        playlist has the segment or part asked for."""
        try:
            wanted = BlockingRequest.from_query(dict(query))
        except ValueError as exc:
            raise _validation(str(exc)) from None
        if wanted is None:
            return
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        seen: str | None = None
        while True:
            version = self.store.get(path)
            if version is None:
                raise self._not_found(path)
            if version.etag != seen:
                seen = version.etag
                reader = self.store.open(version)
                try:
                    body = b"".join([c async for c in reader.iter_range(0, version.size)])
                finally:
                    reader.close()
                progress = playlist_progress(body)
                if progress.has(wanted.msn, wanted.part):
                    return
                if wanted.too_far(progress):
                    raise _validation(
                        f"_HLS_msn={wanted.msn} is more than two segments beyond the "
                        f"playlist's last ({progress.last_segment})."
                    )
                if deadline is None:
                    deadline = loop.time() + wanted.hold_limit(progress)
            assert deadline is not None  # set with the first version read
            if loop.time() >= deadline:
                raise ApiError(
                    503, "ServiceUnavailableException",
                    f"{path} did not reach segment {wanted.msn}"
                    + ("" if wanted.part is None else f" part {wanted.part}")
                    + " within three target durations.",
                )
            if self._closing.is_set():
                # As a delay fault's hold (_hold): unanswered, and close() not held.
                self._abort_transport(request)
                raise _ClientGone
            if self._client_gone(request):
                raise _ClientGone
            await asyncio.sleep(0.01)

    # -- CORS (docs/contract.md "CORS") ----------------------------------------------------

    def _preflight(self, request: web.Request, rid: str) -> web.Response:
        """A browser's preflight: never signed, answered from the CORS policy alone."""
        origin = request.headers.get("Origin", "")
        method = request.headers["Access-Control-Request-Method"]
        requested = parse_request_headers(request.headers.get("Access-Control-Request-Headers"))
        policy = self.cors_policy
        if policy is None:
            raise ApiError(
                403, "AccessDeniedException",
                "CORS is not enabled on this container (give the server a CORS policy).",
            )
        headers = policy.preflight_headers(origin, method, requested)
        if headers is None:
            raise ApiError(
                403, "AccessDeniedException",
                f"No CORS rule allows origin {origin!r} to send {method}"
                + (f" with headers {', '.join(requested)}" if requested else "")
                + ".",
            )
        return web.Response(status=200, headers={**headers, "x-amzn-RequestId": rid})

    async def _add_cors_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        origin = request.headers.get("Origin")
        if origin is None or self.cors_policy is None or request.method == "OPTIONS":
            return
        for name, value in self.cors_policy.response_headers(origin, request.method).items():
            if name == "Vary" and "Vary" in response.headers:
                value = f"{response.headers['Vary']}, {value}"
            response.headers[name] = value

    async def _early_fault(self, fault: Fault, request: web.Request) -> Fault | None:
        kind = fault.kind
        if kind == "delay":
            await self._hold(request, fault.delay)
            return None
        if kind == "500":
            raise ApiError(500, "InternalServerError", "Injected fault: internal error.",
                           close=True)
        if kind == "503":
            raise ApiError(
                503, "ServiceUnavailableException", "Injected fault: service unavailable.",
                close=True,
            )
        if kind == "throttle":
            raise ApiError(400, "ThrottlingException", "Rate exceeded", close=True)
        return fault

    def _authenticate(
        self,
        request: web.Request,
        method: str,
        raw_path: str,
        query: list[tuple[str, str]],
        operation: str,
    ) -> Deferred | None:
        headers = request.headers
        if "Authorization" in headers or any(k == "X-Amz-Signature" for k, _ in query):
            try:
                creds, deferred = self.verifier.verify(
                    method=method,
                    raw_path=raw_path,
                    query=query,
                    headers=headers,
                    has_body=method == "PUT" and request.body_exists,
                )
            except AuthFailure as exc:
                raise ApiError(403, exc.code, exc.message, close=method == "PUT") from None
            allowed = self.permissions.get(creds.access_key_id)
            if allowed is not None and operation not in allowed:
                raise ApiError(
                    403,
                    "AccessDeniedException",
                    f"The key {creds.access_key_id} is not authorized to perform: "
                    f"mediastore:{operation} on container {self.container!r}.",
                    close=method == "PUT",
                )
            return deferred
        needed = "read" if method in _READ_OPS else "write"
        if needed not in self.allow_anonymous:
            raise ApiError(
                403,
                "MissingAuthenticationTokenException",
                "Missing Authentication Token: sign the request with SigV4 "
                f"(anonymous {needed} is not allowed on this server).",
                close=method == "PUT",
            )
        return None

    @staticmethod
    def _not_found(path: str) -> ApiError:
        return ApiError(404, "ObjectNotFoundException", f"Object '{path}' not found.")

    # -- ListItems -------------------------------------------------------------------------

    def _make_token(self, folder: str, after: str) -> str:
        issued = int(self.token_clock())
        payload = json.dumps([folder, after, issued], separators=(",", ":")).encode()
        mac = hmac.digest(self._token_key, payload, "sha256")[:16]
        return (
            base64.urlsafe_b64encode(payload).decode().rstrip("=")
            + "."
            + base64.urlsafe_b64encode(mac).decode().rstrip("=")
        )

    def _read_token(self, token: str, folder: str) -> str:
        bad = _validation("NextToken is invalid; start the listing again without it.")
        try:
            p64, m64 = token.split(".")
            payload = base64.urlsafe_b64decode(p64 + "=" * (-len(p64) % 4))
            mac = base64.urlsafe_b64decode(m64 + "=" * (-len(m64) % 4))
        except (ValueError, TypeError):
            raise bad from None
        expected = hmac.digest(self._token_key, payload, "sha256")[:16]
        if not hmac.compare_digest(mac, expected):
            raise bad
        token_folder, after, issued = json.loads(payload)
        if self.token_clock() - issued > TOKEN_LIFETIME:
            raise _validation("NextToken has expired (tokens last 15 minutes).")
        if token_folder != folder:
            raise _validation("NextToken belongs to a listing of another Path.")
        return str(after)

    def _list_items(self, query: Sequence[tuple[str, str]], rid: str) -> web.Response:
        params = {k: v for k, v in query if not k.startswith("X-Amz-")}
        try:
            folder_raw = params.get("Path")
            if folder_raw is not None and any(
                s in (".", "..") for s in folder_raw.split("/")
            ):
                raise _validation(f"Path {folder_raw!r} has a dot segment.")
            folder = rules.normalize_folder_path(folder_raw)
            max_results = rules.MAX_RESULTS_LIMIT
            if "MaxResults" in params:
                text = params["MaxResults"]
                # ASCII digits only: isdigit() and int() also take other scripts' digits.
                if not (text.isascii() and text.isdigit()):
                    raise _validation(f"MaxResults must be an integer 1..1000, not {text!r}.")
                max_results = rules.check_max_results(int(text))
        except ClientValidationError as exc:
            raise _validation(exc.message) from None
        token = params.get("NextToken")
        after = self._read_token(token, folder) if token else None
        entries, more = self.store.list(folder, after=after, limit=max_results)
        items: list[dict[str, Any]] = []
        for name, version in entries:
            if version is None:
                items.append({"Name": name, "Type": "FOLDER"})
                continue
            item: dict[str, Any] = {
                "Name": name,
                "Type": "OBJECT",
                "ETag": version.etag,
                "LastModified": version.last_modified,
                "ContentLength": version.size,
            }
            if version.content_type_set:
                item["ContentType"] = version.content_type
            items.append(item)
        body: dict[str, Any] = {"Items": items}
        if more and entries:
            body["NextToken"] = self._make_token(folder, entries[-1][0])
        return web.json_response(body, headers={"x-amzn-RequestId": rid})

    # -- GetObject / DescribeObject --------------------------------------------------------

    @staticmethod
    def _object_headers(version: ObjectVersion, rid: str) -> dict[str, str]:
        headers = {
            "ETag": version.etag,
            "Content-Type": version.content_type,
            "Last-Modified": _http_date(version.last_modified),
            "x-amzn-RequestId": rid,
        }
        if version.cache_control is not None:
            headers["Cache-Control"] = version.cache_control
        return headers

    async def _get_object(
        self, request: web.Request, path: str, rid: str, fault: Fault | None, *, head: bool
    ) -> web.StreamResponse:
        upload = self.store.in_progress(path)
        if upload is not None:
            return await self._follow(request, upload, rid, fault, head=head)
        version = self.store.get(path)
        if version is None:
            raise self._not_found(path)
        headers = self._object_headers(version, rid)
        size = version.size
        if head:
            return await self._head(request, headers, size)
        start, end, status = 0, size, 200
        range_header = header_value(request.headers, "Range")
        if range_header is not None:
            if _RANGE_PATTERN.fullmatch(range_header) is None:
                raise _validation(
                    f"Range {range_header[:100]!r} does not match the API's pattern "
                    "bytes=(?:\\d+-\\d*|\\d*-\\d+): one range, 'bytes' in lower case, no spaces."
                )
            try:
                first, last = rules.parse_range_header(range_header)
            except ClientValidationError as exc:
                raise _validation(exc.message) from None
            if first is None:
                assert last is not None
                start = max(0, size - last)
            else:
                start = first
                end = size if last is None else min(last + 1, size)
            if start >= size or (first is None and size == 0):
                err = ApiError(
                    416,
                    "RequestedRangeNotSatisfiableException",
                    f"Range {range_header!r} is outside the object ({size} bytes).",
                )
                err.headers["Content-Range"] = f"bytes */{size}"
                raise err
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        # Open before any await: a concurrent PUT cannot swap the bytes under the headers.
        reader = self.store.open(version)
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = end - start
        cut_at: int | None = None
        if fault is not None and fault.kind == "cut-download":
            cut_at = fault.after_bytes if fault.after_bytes is not None else (end - start) // 2
        watch = request[_WATCH]
        try:
            await watch.prepare(resp)
            await self._write_body(request, resp, reader.iter_range(start, end), cut_at)
            await watch.finish(resp)
        except (ConnectionError, UploadFailed):
            raise _ClientGone from None
        finally:
            reader.close()
        return resp

    async def _write_body(
        self,
        request: web.Request,
        resp: web.StreamResponse,
        chunks: AsyncIterator[bytes],
        cut_at: int | None,
    ) -> None:
        """Stream ``chunks``; with ``cut_at`` (a cut-download fault), drop the connection
        once that many bytes are out. An empty chunk is a heartbeat (:meth:`Upload.follow`):
        nothing to send, but the client may have left meanwhile."""
        sent = 0
        write = request[_WATCH].write
        async for chunk in chunks:
            if not chunk:
                if self._client_gone(request):
                    raise _ClientGone
                continue
            if cut_at is not None and sent + len(chunk) >= cut_at:
                await write(resp, chunk[: cut_at - sent])
                self._abort_transport(request)
                raise _ClientGone
            await write(resp, chunk)
            sent += len(chunk)

    @staticmethod
    async def _head(
        request: web.Request, headers: dict[str, str], size: int | None
    ) -> web.StreamResponse:
        # A StreamResponse keeps the Content-Length we set on HEAD (a Response would send 0);
        # an in-progress STREAMING object has no length yet, so none is sent.
        resp = web.StreamResponse(status=200, headers=headers)
        if size is not None:
            resp.content_length = size
        try:
            await request[_WATCH].finish(resp)
        except ConnectionError:
            raise _ClientGone from None
        return resp

    async def _hold(self, request: web.Request, seconds: float) -> None:
        """Hold ``request`` for ``seconds`` (a delay fault) while its client is there and
        the server open. aiohttp does not cancel the handler of a client that left, and
        close() waits its shutdown grace for handlers still running: a held request
        outlived its client, and every close after a client gave up on one took 2-4 s."""
        loop = asyncio.get_running_loop()
        closing = self._closing
        end = loop.time() + seconds
        while (left := end - loop.time()) > 0:
            if closing.is_set():
                # Unanswered, as by a server going away: the _ClientGone answer would
                # reach a client still waiting as "400 Bad Request", never retried.
                self._abort_transport(request)
                raise _ClientGone
            if self._client_gone(request):
                raise _ClientGone
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, self.client_check_interval)):
                    await closing.wait()

    @staticmethod
    def _client_gone(request: web.Request) -> bool:
        transport = request.transport
        return transport is None or transport.is_closing()

    @staticmethod
    def _abort_transport(request: web.Request) -> None:
        transport = request.transport
        if transport is not None:
            transport.abort()

    async def _follow(
        self,
        request: web.Request,
        upload: Upload,
        rid: str,
        fault: Fault | None,
        *,
        head: bool,
    ) -> web.StreamResponse:
        headers = {
            "ETag": upload.etag,
            "Content-Type": upload.content_type or "application/octet-stream",
            "Last-Modified": _http_date(upload.started),
            "x-amzn-RequestId": rid,
        }
        if upload.cache_control is not None:
            headers["Cache-Control"] = upload.cache_control
        if head:
            return await self._head(request, headers, None)
        resp = web.StreamResponse(status=200, headers=headers)
        resp.enable_chunked_encoding()
        cut_at: int | None = None
        if fault is not None and fault.kind == "cut-download":
            cut_at = fault.after_bytes if fault.after_bytes is not None else 1
        watch = request[_WATCH]
        # aclosing: a follower that ends early (its client gone) releases the generator now.
        try:
            await watch.prepare(resp)
            async with contextlib.aclosing(
                upload.follow(heartbeat=self.client_check_interval)
            ) as chunks:
                await self._write_body(request, resp, chunks, cut_at)
            await watch.finish(resp)
        except UploadFailed:
            # End without the terminating chunk so the reader can tell the object is partial.
            self._abort_transport(request)
            raise _ClientGone from None
        except ConnectionError:
            raise _ClientGone from None
        return resp

    # -- PutObject -------------------------------------------------------------------------

    async def _put_object(
        self,
        request: web.Request,
        path: str,
        rid: str,
        deferred: Deferred | None,
        fault: Fault | None,
    ) -> web.StreamResponse:
        headers = request.headers
        try:
            content_type = header_value(headers, "Content-Type")
            if content_type is not None:
                rules.check_content_type(content_type)
            cache_control = header_value(headers, "Cache-Control")
            if cache_control is not None:
                rules.check_cache_control(cache_control)
        except ClientValidationError as exc:
            raise _validation(exc.message, close=True) from None
        # The model's enums (StorageClass, UploadAvailability) are upper case and matched
        # exactly: "streaming" is not a value of the API, whatever the User Guide's prose says.
        storage_class = header_value(headers, "x-amz-storage-class")
        if storage_class is not None and storage_class != "TEMPORAL":
            raise _validation(
                f"x-amz-storage-class must be TEMPORAL, not {storage_class!r}.", close=True
            )
        availability_header = header_value(headers, "x-amz-upload-availability")
        if availability_header is None:
            availability_header = "STANDARD"
        if availability_header not in ("STANDARD", "STREAMING"):
            raise _validation(
                "x-amz-upload-availability must be STANDARD or STREAMING, not "
                f"{availability_header!r}.",
                close=True,
            )
        availability: rules.Availability = (
            "STREAMING" if availability_header == "STREAMING" else "STANDARD"
        )
        declared_sha = headers.get("X-Amz-Content-SHA256")
        if declared_sha is not None and declared_sha != "UNSIGNED-PAYLOAD" and not (
            is_hex_sha256(declared_sha)
        ):
            raise _validation(
                "x-amz-content-sha256 must be UNSIGNED-PAYLOAD or a lowercase hex SHA-256.",
                close=True,
            )
        limit = self.streaming_limit if availability == "STREAMING" else self.standard_limit
        declared = request.content_length
        if declared is not None and declared > limit:
            raise _validation(
                f"The object is {declared} bytes; the {availability} limit is {limit} bytes.",
                close=True,
            )
        try:
            upload = self.store.begin_upload(
                path,
                content_type=content_type,
                cache_control=cache_control,
                availability=availability,
                # An unverified body must not reach readers: a deferred signature makes a
                # STREAMING upload visible only when complete.
                visible=availability == "STREAMING" and deferred is None,
            )
        except NameConflictError as exc:
            raise _validation(str(exc), close=True) from None

        if (
            request.version == HttpVersion11
            and request.headers.get("Expect", "").lower() == "100-continue"
        ):
            # Only now, every check passed: a PUT refused sooner got its final answer
            # instead, and its client never sent the body (RFC 9110 section 10.1.1).
            try:
                await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            except ConnectionError:
                upload.abort()
                raise _ClientGone from None
            request.writer.output_size = 0  # the response proper starts after it
        cut_at: int | None = None
        if fault is not None and fault.kind == "cut-upload":
            if fault.after_bytes is not None:
                cut_at = fault.after_bytes
            else:
                cut_at = max(1, (declared or 2) // 2)
        content = request.content
        size = 0
        try:
            async with asyncio.timeout(self.upload_time_limit):
                while True:
                    if cut_at is not None and size >= cut_at:
                        self._abort_transport(request)
                        raise _ClientGone
                    try:
                        chunk = await content.readany()
                    except Exception:
                        # ConnectionResetError when the client closes early (aiohttp cancels
                        # the payload in connection_lost), or a framing error: the body is
                        # incomplete and must never be stored.
                        raise _ClientGone from None
                    if not chunk:
                        if cut_at is not None:
                            self._abort_transport(request)
                            raise _ClientGone
                        break
                    size += len(chunk)
                    if size > limit:
                        raise _validation(
                            f"The body passed the {availability} limit of {limit} bytes; "
                            "the upload was cancelled.",
                            close=True,
                        )
                    if upload.state != "open":
                        # The server is shutting down and aborted this upload: to the
                        # client that is a lost connection, not a server failure.
                        self._abort_transport(request)
                        raise _ClientGone
                    upload.write(chunk)
        except TimeoutError:
            upload.abort()
            raise _validation(
                f"The upload did not complete within {self.upload_time_limit:g} seconds "
                "and was cancelled.",
                close=True,
            ) from None
        except BaseException:
            upload.abort()
            raise
        finally:
            request[_BYTES_IN] = size
        body_sha = upload.sha256.hexdigest()
        try:
            if deferred is not None:
                try:
                    deferred.check(body_sha)
                except AuthFailure as exc:
                    raise ApiError(403, exc.code, exc.message) from None
            if declared_sha is not None and declared_sha != "UNSIGNED-PAYLOAD" and (
                declared_sha != body_sha
            ):
                raise _validation(
                    "x-amz-content-sha256 does not match the SHA-256 of the body received."
                )
            version = await upload.commit()
        except NameConflictError as exc:
            raise _validation(str(exc)) from None
        except BaseException:
            upload.abort()
            raise
        return web.json_response(
            {
                "ContentSHA256": version.content_sha256,
                "ETag": version.etag,
                "StorageClass": "TEMPORAL",
            },
            headers={"x-amzn-RequestId": rid},
        )


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only the local machine."""
    if host in _LOOPBACK:
        return True
    try:
        import ipaddress

        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

