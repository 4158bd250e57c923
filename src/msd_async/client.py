"""The client of one MediaStore container: the five operations, signed, retried, typed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Generator, Iterable
from threading import get_ident
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeVar
from urllib.parse import unquote, urlsplit

from . import protocol, rules
from ._context import ClientContext
from .body import Body, Buffer, Meter, ProgressCallback, UploadBody, prepare_body
from .config import check_plain_callback, is_whole_number, refuse_awaitable
from .credentials import Credentials
from .credentials import without_user_info as _without_user_info
from .errors import (
    SESSION_CLOSED_MESSAGE,
    ChecksumMismatchError,
    CredentialsError,
    DownloadAlreadyEnteredError,
    InvalidParameterError,
    MediaStoreError,
    ObjectNotFoundError,
    ObjectTooLargeError,
    SessionClosedError,
    WrongEventLoopError,
)
from .events import EventHook, EventKind, Operation, new_event
from .results import Item, ListPage, ObjectInfo, PutResult
from .retry import (
    Deadline,
    RetryPolicy,
    call_with_retries,
    check_retry_policy,
    waiting_before_sending,
)
from .signing import SigV4Signer, signing_host
from .stream import ObjectStream

if TYPE_CHECKING:
    from .config import Limits, Timeouts
    from .session import Session
    from .transport import Response

__all__ = ["ContainerClient", "ObjectDownload"]

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
T = TypeVar("T")
logger = logging.getLogger("msd_async.client")


def _deadline(seconds: float | None) -> Deadline | None:
    return None if seconds is None else Deadline.after(seconds)


def check_event_hook(hook: object) -> None:
    check_plain_callback(hook, "an event hook", rule="session.event_hooks")


def _check_limit(name: str, value: object) -> None:
    if not is_whole_number(value, 1):
        raise InvalidParameterError(
            f"{name} must be a whole number of bytes, 1 or more, not {value!r}",
            rule=f"container.{name}",
        )


def _operation(request: protocol.Request) -> tuple[Operation, str]:
    """``(operation name, object or folder path)`` of a request, for events."""
    method = request.method
    # "/" without a query is the root listed without a page size or token: no object has
    # an empty path, so a GET of "/" is never a GetObject.
    if method == "GET" and (request.query or request.path == "/"):
        return "ListItems", dict(request.query).get("Path", "")
    path = unquote(request.path[1:])
    if method == "GET":
        return "GetObject", path
    if method == "PUT":
        return "PutObject", path
    if method == "HEAD":
        return "DescribeObject", path
    return "DeleteObject", path


def _declared_length(method: str, response: Response) -> int | None:
    """Body bytes the response announces, for events."""
    if method == "HEAD":
        return 0
    length = response.headers.get("Content-Length")
    return int(length) if length is not None and length.isdigit() else None


def _parse_endpoint(endpoint: str) -> tuple[str, str]:
    """``(base_url, host_header)`` for a container endpoint, as botocore derives the host."""
    if not isinstance(endpoint, str) or "://" not in endpoint:
        raise InvalidParameterError(
            f"endpoint must be a URL such as "
            "'https://abc123.data.mediastore.us-east-1.amazonaws.com', not "
            f"{_without_user_info(endpoint)!r}",
            rule="endpoint.form",
        )
    if any(c.isspace() for c in endpoint):
        # urlsplit() drops leading space and some control characters, but the endpoint is
        # also reported as given, in every request event: refuse it, showing where.
        raise InvalidParameterError(
            f"endpoint {_without_user_info(endpoint)!r} contains white space (copied with "
            "a space or a line end?); give it as https://HOST[:PORT]",
            rule="endpoint.form",
        )
    try:
        parts = urlsplit(endpoint)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise InvalidParameterError(
            f"endpoint {_without_user_info(endpoint)!r} is not a valid URL ({exc}); give "
            "it as https://HOST[:PORT]",
            rule="endpoint.form",
        ) from None
    if "@" in parts.netloc:
        # A user:password@ part means nothing to a SigV4 service, and the endpoint is
        # reported in every request event (a tracing span's url.full): refuse it without
        # echoing the password.
        raise InvalidParameterError(
            f"endpoint {_without_user_info(endpoint)!r} carries user info (user:password@); "
            "MediaStore requests are signed with AWS keys, not URL passwords: remove it and "
            "give the keys as the Session's credentials",
            rule="endpoint.form",
        )
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise InvalidParameterError(
            f"endpoint {_without_user_info(endpoint)!r} must be http:// or https:// with a host",
            rule="endpoint.form",
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise InvalidParameterError(
            f"endpoint {_without_user_info(endpoint)!r} must not have a path or query: "
            "object paths are given to each call",
            rule="endpoint.form",
        )
    host = signing_host(endpoint)
    return f"{parts.scheme}://{host}", host


def _bind_loop(context: ClientContext, loop: asyncio.AbstractEventLoop) -> None:
    """Tie the session's pool to ``loop`` at its first request; refuse any other loop.

    aiohttp's connections belong to the loop that opened them: from another one (a second
    ``asyncio.run``) a request failed deep in aiohttp with "Event loop is closed", or
    worse, touched a running loop from another thread."""
    if context.loop is None or context.closed:
        context.loop = loop
        context.loop_thread = get_ident()
        return
    raise WrongEventLoopError(
        "this Session's connections belong to the event loop of its first request, not "
        "this one (a second asyncio.run(), or another thread); open one Session per event "
        "loop, inside the coroutine it runs (async with Session(...) as session: ...)"
    )


async def _get_credentials(context: ClientContext) -> Credentials:
    """The provider's credentials for one signature, within ``Timeouts.credentials``.

    Whatever goes wrong is a :class:`CredentialsError` that names the provider: a provider
    that raises something else (a bug, an OSError), returns something else, or does not
    answer (a ``credential_process`` that hangs) would otherwise surface as a stranger
    error, or hold the call forever.
    """
    provider = context.credentials
    if type(provider) is Credentials:
        # Static keys: nothing to wait for, nothing that can fail but their expiry.
        if provider.expiry is not None:
            _check_not_expired(provider, None)
        return provider
    if context.closed:
        # Not even asked: a provider that waits (an MFA prompt) would be waited out first.
        raise SessionClosedError(SESSION_CLOSED_MESSAGE, unsent=True)
    timeout = context.timeouts.credentials
    name = type(provider).__name__
    scope: asyncio.Timeout | None = None
    try:
        # A provider answers at once while its keys are fresh (every call but a refresh):
        # its first step is taken by hand, and only a provider that waits gets a timer.
        # asyncio.timeout() costs ~7 us per call, more than the rest of the signing.
        call = provider.get_credentials()
        step = getattr(call, "send", None)
        if step is None:  # another awaitable (a future): nothing to take by hand
            waiting_before_sending.set(f"the credentials provider {name}")
            async with asyncio.timeout(timeout) as scope:
                credentials = await context.unless_closed(call)
            waiting_before_sending.set(None)
        else:
            try:
                waiting = step(None)
            except StopIteration as answered:
                credentials = answered.value
            else:
                # Left set if the call's deadline ends the wait, for its message.
                waiting_before_sending.set(f"the credentials provider {name}")
                async with asyncio.timeout(timeout) as scope:
                    # Session.aclose() ends this wait (and the provider's process) at once.
                    credentials = await context.unless_closed(_Resumed(call, waiting))
                waiting_before_sending.set(None)
    except MediaStoreError:
        raise
    except TimeoutError as exc:
        if scope is None or not scope.expired():
            raise CredentialsError(
                f"the credentials provider {name} failed (TimeoutError: {exc}); check its "
                "source (credential_process, SSO, instance metadata)"
            ) from exc
        raise CredentialsError(
            f"the credentials provider {name} did not answer within {timeout} s "
            "(Timeouts.credentials); check its source (a credential_process that waits for "
            "input, an unreachable SSO or instance metadata endpoint)"
        ) from exc
    except Exception as exc:
        raise CredentialsError(
            f"the credentials provider {name} failed ({type(exc).__name__}: "
            f"{_short(exc)}); fix the provider, or pass credentials=Credentials(...)"
        ) from exc
    if not isinstance(credentials, Credentials):
        raise CredentialsError(
            f"the credentials provider {name} returned a {type(credentials).__name__}, not "
            "msd_async.Credentials; its get_credentials() must return Credentials(...)"
        )
    if credentials.expiry is not None:
        _check_not_expired(credentials, name)
    return credentials


def _check_not_expired(credentials: Credentials, provider: str | None) -> None:
    """Refuse keys whose expiry has passed: signed with them, the call would come back a
    403 (ExpiredTokenException) whose fix is not in the request."""
    expiry = credentials.expiry
    assert expiry is not None
    if expiry.timestamp() > time.time():
        return
    if provider is None:
        fix = "get new keys and pass them as credentials=, or pass a provider that refreshes"
    else:
        fix = f"the credentials provider {provider} did not refresh them: check its source"
    raise CredentialsError(
        f"the credentials {credentials.access_key_id!r} expired at {expiry.isoformat()}; {fix}"
    )


class _Resumed:
    """Awaits the rest of a coroutine whose first step was taken by hand (``waiting``: what
    that step yielded, a future its task must wait for), as ``await`` would have run it:
    what the task sends or throws in goes to the coroutine."""

    __slots__ = ("_call", "_waiting")

    def __init__(self, call: Coroutine[Any, Any, Any], waiting: Any) -> None:
        self._call = call
        self._waiting = waiting

    def __await__(self) -> Generator[Any, Any, Any]:
        call, waiting = self._call, self._waiting
        while True:
            try:
                sent = yield waiting
            except BaseException as exc:  # a cancellation (the timeout's), GeneratorExit
                try:
                    waiting = call.throw(exc)
                except StopIteration as answered:
                    return answered.value
            else:
                try:
                    waiting = call.send(sent)
                except StopIteration as answered:
                    return answered.value


def _short(exc: BaseException) -> str:
    # A provider's error text is not ours: keep it to one bounded line.
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:300] + "..."


class _Emitter:
    """Builds :class:`RequestEvent` objects for one call and hands them to the hooks."""

    __slots__ = (
        "_attempt", "_context", "_endpoint", "_hooks", "_operation", "_path", "_started",
        "failed",
    )

    def __init__(
        self,
        context: ClientContext,
        hooks: tuple[EventHook, ...],
        operation: Operation,
        path: str,
        endpoint: str,
        attempt: int,
        started: float | None = None,
    ) -> None:
        self._context = context
        self._hooks = hooks
        self._operation: Operation = operation
        self._path = path
        self._endpoint = endpoint
        self._attempt = attempt
        self._started = time.monotonic() if started is None else started
        #: The indexes of the hooks that raised on the last event (every other one had it).
        self.failed: tuple[int, ...] = ()

    def others(self) -> _Emitter:
        """An emitter for the hooks that took the last event without raising: they must
        hear how the attempt or call ends, when a hook's error ends it."""
        return _Emitter(
            self._context, tuple(h for i, h in enumerate(self._hooks) if i not in self.failed),
            self._operation, self._path, self._endpoint, self._attempt, self._started,
        )

    def log_failure(self, what: str, error: BaseException) -> None:
        """Log a hook's ``error`` that cannot reach the caller (``what``: where it failed):
        the first of the session, then every 1000th. A hook broken for every cancelled
        call (viewers leaving a web proxy all day) logged a traceback per call."""
        context = self._context
        context.hook_failures += 1
        count = context.hook_failures
        if count == 1 or count % 1000 == 0:
            logger.error(
                "an event hook failed %s (%d time(s) so far in this session; later ones "
                "are logged every 1000th)", what, count, exc_info=error,
            )

    def __call__(
        self,
        kind: EventKind,
        *,
        attempt: int | None = None,
        status: int | None = None,
        error: BaseException | None = None,
        delay: float | None = None,
        bytes_sent: int | None = None,
        bytes_received: int | None = None,
    ) -> None:
        event = new_event(
            kind, self._operation, self._path, self._endpoint,
            self._attempt if attempt is None else attempt, time.monotonic() - self._started,
            status, error, delay, bytes_sent, bytes_received,
        )
        # Every hook gets the event even when one before it raised: they observe the call
        # independently, and one that saw an attempt start and never its end kept a
        # tracing span open (until the task's next call, which ended it as cancelled) or
        # a count short. The first error then reaches the caller, as events.py promises.
        failure: BaseException | None = None
        for index, hook in enumerate(self._hooks):
            try:
                result = hook(event)
                if result is not None:
                    # An async hook appended to session.event_hooks after the Session
                    # checked them: its coroutine would be dropped, the event lost.
                    refuse_awaitable(result, "the event hook", hook,
                                     rule="session.event_hooks")
            except BaseException as exc:
                if failure is None:
                    failure = exc
                    self.failed = (index,)
                else:
                    self.failed += (index,)
                    self.log_failure(f"too, on a {self._operation} {kind} event", exc)
        if failure is not None:
            raise failure


class ContainerClient:
    """Operations on one container. Get it from :meth:`Session.container`; it shares the
    session's connection pool, credentials and retry budget, and needs no closing. Once
    the session is closed, every call raises :class:`SessionClosedError`."""

    def __init__(
        self,
        context: ClientContext,
        endpoint: str,
        *,
        region: str,
        standard_limit: int = rules.STANDARD_OBJECT_LIMIT,
        streaming_limit: int = rules.STREAMING_OBJECT_LIMIT,
    ) -> None:
        _check_limit("standard_limit", standard_limit)
        _check_limit("streaming_limit", streaming_limit)
        self._context = context
        self._base, self._host = _parse_endpoint(endpoint)
        #: Transport.host_header's answer, asked at the first request (the transport,
        #: and aiohttp with it, is imported only then).
        self._host_header: dict[str, str] | None = None
        self.endpoint = endpoint
        self.region = region
        self._signer = SigV4Signer(region)
        self.standard_limit = standard_limit
        self.streaming_limit = streaming_limit

    def __repr__(self) -> str:
        return f"<ContainerClient {self._base} region={self.region}>"

    @property
    def session(self) -> Session:
        """The :class:`Session` this client belongs to (its ``event_hooks`` see every call
        of this client)."""
        return self._context.session

    @property
    def timeouts(self) -> Timeouts:
        """The session's :class:`Timeouts` (what a web app proxying this client bounds its
        own writes to a viewer with)."""
        return self._context.timeouts

    @property
    def limits(self) -> Limits:
        """The session's :class:`Limits` (how many requests it sends at once: what a bulk
        transfer queues its own requests for, rather than time out in the pool's gate)."""
        return self._context.limits

    # --- plumbing ----------------------------------------------------------------------
    def _send(
        self,
        request: protocol.Request,
        *,
        body: UploadBody | None = None,
        meter: Meter | None = None,
        chunked: bool = False,
        object_operation: bool = True,
        deadline: Deadline | None = None,
        attempt: int = 1,
    ) -> Awaitable[Response]:
        """One attempt: sign, send, and raise the typed error for an error status; report
        it to the session's event hooks, if it has any. (Not a coroutine itself: without
        hooks it hands back :meth:`_exchange`'s, one coroutine fewer to step through on
        every resumption.)"""
        hooks = self._context.event_hooks
        if not hooks:
            return self._exchange(request, body, meter, chunked, object_operation, deadline)
        return self._send_reporting(
            tuple(hooks), request, body, meter, chunked, object_operation, deadline, attempt
        )

    async def _send_reporting(
        self,
        hooks: tuple[EventHook, ...],
        request: protocol.Request,
        body: UploadBody | None,
        meter: Meter | None,
        chunked: bool,
        object_operation: bool,
        deadline: Deadline | None,
        attempt: int,
    ) -> Response:
        operation, path = _operation(request)
        emit = _Emitter(self._context, hooks, operation, path, self.endpoint, attempt)
        try:
            emit("start")
        except BaseException as exc:
            # The other hooks saw the attempt start: they must see it end (a tracing span
            # would stay open). Nothing was sent (bytes_sent None says so: a metrics hook
            # counts it unsent, not as a failed exchange); the hook's error reaches the
            # caller, and the failed hook is not called again.
            try:
                emit.others()("error", error=exc, bytes_sent=None)
            except Exception as also:
                emit.log_failure(f"after another failed on a {operation} start", also)
            raise
        try:
            response = await self._exchange(
                request, body, meter, chunked, object_operation, deadline
            )
        except MediaStoreError as exc:
            emit("error", status=getattr(exc, "status", None), error=exc,
                 bytes_sent=0 if meter is None else meter.sent)
            raise
        except Exception as exc:
            # The body's own exception (an encoder that crashed, a progress callback): the
            # attempt ended with it, and the hooks must hear so.
            emit("error", error=exc, bytes_sent=0 if meter is None else meter.sent)
            raise
        except asyncio.CancelledError:
            # Without it a tracing span of the call stayed open until the task's next call
            # or its end. A hook that fails here is logged: the cancellation must go on.
            try:
                emit("cancelled", bytes_sent=0 if meter is None else meter.sent)
            except Exception as exc:
                emit.log_failure(f"on a cancelled {operation}", exc)
            raise
        try:
            emit("response", status=response.status,
                 bytes_sent=0 if meter is None else meter.sent,
                 bytes_received=_declared_length(request.method, response))
        except BaseException:
            response.close()  # the hook's exception reaches the caller; the slot does not leak
            raise
        return response

    async def _exchange(
        self,
        request: protocol.Request,
        body: UploadBody | None,
        meter: Meter | None,
        chunked: bool,
        object_operation: bool,
        deadline: Deadline | None,
    ) -> Response:
        context = self._context
        # Not asyncio.get_running_loop(): on Python 3.11 it costs a getpid() system call
        # per call. Its own loop running, on its own thread, is the one running this call.
        loop = context.loop
        if loop is None or not loop.is_running() or get_ident() != context.loop_thread:
            _bind_loop(context, asyncio.get_running_loop())
        credentials = await _get_credentials(context)
        auth = self._signer.sign(
            credentials,
            method=request.method,
            host=self._host,
            path=request.path,
            query=request.query,
            headers=request.headers,
            payload_hash=request.payload_hash,
        )
        transport = context.transport
        host_header = self._host_header
        if host_header is None:
            host_header = self._host_header = transport.host_header(self._base, self._host)
        headers = {**host_header, **request.headers, **auth}
        response = await transport.send(
            request.method,
            self._base + request.target,
            headers,
            origin=self._base,
            body=body,
            meter=meter,
            chunked=chunked,
            read_timeout=None if deadline is None else deadline.cap(transport.timeouts.read),
        )
        status = response.status
        if status < 300:
            return response
        try:
            data = b"" if request.method == "HEAD" else await response.read()
        finally:
            response.close() if request.method != "HEAD" else response.release()
        raise protocol.parse_error(
            status, response.headers, data, object_operation=object_operation,
            method=request.method,
        )

    def _call(
        self,
        attempt: Callable[[int], Awaitable[T]],
        deadline: Deadline | None,
        *,
        replayable: Callable[[], bool] | None = None,
        retry: RetryPolicy | None = None,
        request: protocol.Request | None = None,
    ) -> Awaitable[T]:
        """Run attempts under the retry policy (the call's, else the session's) and the
        session's budget, within ``deadline``. (Hands back the retry driver's coroutine
        rather than wrapping it in one more.)"""
        if retry is not None:
            check_retry_policy(retry)
        context = self._context
        on_retry = on_abandoned = None
        if context.event_hooks and request is not None:
            # The emitter is made at the first retry, not for every call: most calls have
            # none, and this ran on every request of a session with hooks (bench_hooks.py).
            started = time.monotonic()
            emitter: list[_Emitter] = []

            def on_retry(n: int, error: MediaStoreError, delay: float) -> None:
                if not emitter:
                    operation, path = _operation(request)
                    emitter.append(_Emitter(
                        context, tuple(context.event_hooks), operation, path, self.endpoint,
                        0, started,
                    ))
                try:
                    emitter[0]("retry", attempt=n, status=getattr(error, "status", None),
                               error=error, delay=delay)
                except BaseException as exc:
                    # The hook's error ends the call before the next attempt, which the
                    # other hooks now wait for (a span left open): tell them it ended.
                    try:
                        emitter[0].others()("abandoned", attempt=n, error=exc)
                    except Exception as also:
                        emitter[0].log_failure("after another failed on a retry", also)
                    raise

            def on_abandoned(n: int) -> None:
                # As for a cancelled attempt: a failing hook is logged, the cancellation
                # goes on.
                try:
                    emitter[0]("abandoned", attempt=n)
                except Exception as exc:
                    emitter[0].log_failure(
                        f"on a {_operation(request)[0]} cancelled before its retry", exc
                    )

        return call_with_retries(
            attempt,
            policy=context.retry if retry is None else retry,
            budget=context.budget,
            deadline=deadline,
            replayable=replayable,
            on_retry=on_retry,
            on_abandoned=on_abandoned,
            interruptible=context.unless_closed,
        )

    # --- operations --------------------------------------------------------------------
    async def put_object(
        self,
        path: str,
        body: Body | Iterable[Buffer],
        *,
        content_type: str | None = None,
        cache_control: str | None = None,
        streaming: bool = False,
        progress: ProgressCallback | None = None,
        verify: bool = False,
        replay_buffer: bool = False,
        deadline: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> PutResult:
        """Upload an object (PutObject); it replaces any previous version when complete.

        ``body``: bytes-like; a ``str``, uploaded as its UTF-8 text (a playlist, a
        manifest), never read as a file name; a file path as ``os.PathLike``
        (``pathlib.Path``); a binary file; an iterable or async iterable of bytes (each
        chunk is sent as soon as it is yielded, a ``bytearray`` or memoryview copied, so
        the producer may refill its buffer); or a callable returning a fresh async
        iterable (so the upload can be retried). A path that is not a regular file (a
        FIFO, ``/dev/fd/N`` of a pipe, a device) is read once as it gives bytes and sent
        chunked, like a non-seekable file: a retry after it started needs
        ``replay_buffer=True``. ``streaming=True`` makes the object readable while it
        uploads (STREAMING availability, 10 MB limit, sent chunked); otherwise it appears
        only when complete (STANDARD, 25 MB).

        ``progress`` is called with the bytes sent so far (a plain function: an async one
        is refused with :class:`InvalidParameterError`). ``verify=True`` hashes the bytes
        while sending and compares with the service's ContentSHA256 (about 0.6 ms CPU per
        MB, so off by default). ``replay_buffer=True`` keeps what a one-shot iterator sent
        so a failed attempt can be retried. ``deadline`` (seconds) bounds the whole call,
        retries included; ``retry`` replaces the session's retry policy for this call.

        Raises :class:`ObjectTooLargeError` before sending when the size is known and over
        the limit, or the moment a streamed body passes it (the upload is cut and nothing
        is stored); :class:`InvalidPathError` / :class:`InvalidParameterError` for bad
        arguments; :class:`UnreplayableBodyError` when a retry would need a one-shot body
        again; :class:`ChecksumMismatchError` when ``verify`` finds a difference.
        """
        if progress is not None:
            check_plain_callback(progress, "progress", rule="put.progress")
        availability: rules.Availability = "STREAMING" if streaming else "STANDARD"
        request = protocol.put_object(
            path,
            content_type=content_type,
            cache_control=cache_control,
            availability=availability,
        )
        limit = self.streaming_limit if streaming else self.standard_limit
        rule = f"body.max-size.{availability.lower()}"
        upload = prepare_body(body, replay_buffer=replay_buffer)
        if upload.size is not None and upload.size > limit:
            await upload.aclose()
            raise ObjectTooLargeError(
                f"the body is {upload.size:,} bytes; {availability} objects are limited "
                f"to {limit:,} bytes",
                rule=rule,
                limit=limit,
                size=upload.size,
            )

        deadline_ = _deadline(deadline)

        async def attempt(n: int) -> tuple[PutResult, Meter]:
            meter = Meter(limit=limit, limit_rule=rule, hash_sha256=verify, progress=progress)
            response = await self._send(
                request, body=upload, meter=meter, chunked=streaming, deadline=deadline_,
                attempt=n,
            )
            return protocol.parse_put_result(await response.read(), meter.sent), meter

        try:
            result, meter = await self._call(
                attempt, deadline_, replayable=upload.can_replay, retry=retry, request=request
            )
        finally:
            await upload.aclose()
        if verify and meter.sha256 != result.content_sha256:
            raise ChecksumMismatchError(
                f"the service stored SHA-256 {result.content_sha256} for {path!r}, but the "
                f"bytes sent hash to {meter.sha256}; upload it again",
                expected=meter.sha256,
                actual=result.content_sha256,
            )
        return result

    def get_object(
        self,
        path: str,
        *,
        range: rules.ByteRange | None = None,
        max_resumes: int = 3,
        deadline: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> ObjectDownload:
        """Download an object (GetObject): an :class:`ObjectDownload`, the async context
        manager yielding an :class:`ObjectStream`::

            async with store.get_object("vod/movie.mp4", range=(0, 1_048_575)) as obj:
                async for chunk in obj:
                    ...

        ``range``: ``(first, last)`` inclusive, ``(first, None)`` to the end, ``(None, n)``
        for the last n bytes, or a raw ``"bytes=..."`` string; an invalid one raises
        :class:`InvalidRangeError` before sending, one past the end
        :class:`RangeNotSatisfiableError` (its ``object_size`` says how large the object
        is). The service ignores ranges on a STREAMING object that is still uploading: check
        ``obj.status`` (200 = whole body, 206 = the range) when that can happen, or use
        :meth:`get_bytes`, which cuts the range out. ``obj.content_length`` is the bytes of
        this response, ``obj.object_size`` the size of the whole object. A body cut mid-way
        resumes from where it stopped (up to ``max_resumes`` times), accepted only if the
        answer is a 206 at the requested offset with the same total length and ETag
        (else :class:`ProtocolError` or :class:`ObjectChangedError`, before any wrong byte
        is delivered). Reading the stream after the block raises
        :class:`StreamClosedError`. ``deadline`` (seconds) bounds getting the response,
        retries included (:class:`DeadlineExceeded`); the body is bounded only by
        ``Timeouts.read``, the longest silence between two reads, so a long healthy
        download, or a live segment whose encoder pauses longer than the deadline, is never
        cut. ``retry`` replaces the
        session's retry policy for this call and its resumes. Leaving the block early
        closes the connection; nothing leaks.
        """
        if not is_whole_number(max_resumes):
            # Compared with a count of resumes: a str failed mid-download, a negative or
            # nan one silently meant none.
            raise InvalidParameterError(
                f"max_resumes must be a whole number, 0 or more, not {max_resumes!r}",
                rule="get.max_resumes",
            )
        request = protocol.get_object(path, byte_range=range)
        return ObjectDownload(self, request, max_resumes, deadline, retry)

    async def get_bytes(
        self,
        path: str,
        *,
        range: rules.ByteRange | None = None,
        deadline: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> bytes:
        """The whole object, or exactly the bytes of ``range``, as bytes.

        Never more than asked: the service ignores ranges on an in-progress STREAMING object
        and answers 200 with the whole body (so does a proxy that does not support ranges);
        the requested window is then cut out of that body. An absolute range stops reading
        as soon as its bytes are in; a suffix range (``(None, n)``) reads to the end of the
        upload and keeps the last n bytes. A range starting past the end of that body
        raises :class:`RangeNotSatisfiableError`, as the service does for a complete object.
        ``deadline`` bounds getting the response, and other errors are as in
        :meth:`get_object`.
        """
        async with self.get_object(path, range=range, deadline=deadline, retry=retry) as obj:
            if obj.range_ignored:
                return b"".join([chunk async for chunk in obj.iter_range()])
            return await obj.read()

    async def describe_object(
        self, path: str, *, deadline: float | None = None, retry: RetryPolicy | None = None
    ) -> ObjectInfo:
        """Metadata of an object (DescribeObject). Raises :class:`ObjectNotFoundError`."""
        request = protocol.describe_object(path)
        deadline_ = _deadline(deadline)

        async def attempt(n: int) -> ObjectInfo:
            response = await self._send(request, deadline=deadline_, attempt=n)
            response.release()
            return protocol.parse_object_info(response.headers)

        return await self._call(attempt, deadline_, retry=retry, request=request)

    async def delete_object(
        self, path: str, *, deadline: float | None = None, retry: RetryPolicy | None = None
    ) -> None:
        """Delete an object (DeleteObject); empty parent folders disappear with it.

        Raises :class:`ObjectNotFoundError` if there is none. A 404 on a *retry* counts as
        success when an earlier attempt may have reached the server: it may have deleted
        the object and lost the answer. So after a retried call the object is gone, but it
        may have been deleted by someone else. When no earlier attempt wrote a byte of its
        request (the connection could not be opened, or a pooled one was found closed
        first: their errors are ``unwritten``), the 404 is :class:`ObjectNotFoundError`,
        as on a first attempt.
        """
        request = protocol.delete_object(path)
        deadline_ = _deadline(deadline)
        # Whether an attempt so far may have reached the server (and deleted the object).
        reached = False

        async def attempt(n: int) -> None:
            nonlocal reached
            try:
                await (await self._send(request, deadline=deadline_, attempt=n)).read()
            except ObjectNotFoundError:
                if not reached:
                    raise
                # An earlier attempt may have deleted it and lost the answer: the object
                # is gone, which is what was asked.
            except MediaStoreError as exc:
                if not exc.unwritten:
                    reached = True
                raise

        await self._call(attempt, deadline_, retry=retry, request=request)

    async def list_items_page(
        self,
        path: str | None = None,
        *,
        max_results: int | None = None,
        next_token: str | None = None,
        deadline: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> ListPage:
        """One page of the direct children of a folder (ListItems). ``max_results`` 1-1000
        (the service's default is 1000 and it may return fewer); pass the page's
        ``next_token`` to get the next one (tokens expire after 15 minutes)."""
        return await self._list_page(
            path, max_results, next_token, _deadline(deadline), retry
        )

    async def _list_page(
        self,
        path: str | None,
        max_results: int | None,
        next_token: str | None,
        deadline_: Deadline | None,
        retry: RetryPolicy | None,
    ) -> ListPage:
        request = protocol.list_items(path, max_results=max_results, next_token=next_token)

        async def attempt(n: int) -> ListPage:
            response = await self._send(
                request, object_operation=False, deadline=deadline_, attempt=n
            )
            return protocol.parse_list_page(await response.read())

        return await self._call(attempt, deadline_, retry=retry, request=request)

    async def list_items(
        self,
        path: str | None = None,
        *,
        page_size: int | None = None,
        deadline: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> AsyncIterator[Item]:
        """Every direct child of a folder, following NextToken across pages (each page
        retried on its own). ``deadline`` (seconds) bounds the whole listing, every page
        and its retries (:class:`DeadlineExceeded`); time the caller spends between two
        items counts too. A NextToken the listing was handed before raises
        :class:`ProtocolError` (followed, it would list the same pages forever)."""
        deadline_ = _deadline(deadline)
        token: str | None = None
        followed: set[str] = set()
        while True:
            page = await self._list_page(path, page_size, token, deadline_, retry)
            token = protocol.follow_token(page, followed, path)
            for item in page.items:
                yield item
            if token is None:
                return

    # --- presigned URLs ----------------------------------------------------------------
    async def presign_get(self, path: str, *, expires_in: int = 3600) -> str:
        """A URL that lets anyone GET this object until it expires (``expires_in`` seconds,
        1 to 604800 = 7 days; else :class:`InvalidParameterError`)."""
        return await self._presign("GET", path, expires_in, {})

    async def presign_put(
        self, path: str, *, expires_in: int = 3600, content_type: str | None = None
    ) -> str:
        """A URL that lets anyone PUT this object until it expires. With ``content_type``,
        the uploader must send exactly that Content-Type header."""
        headers = {}
        if content_type is not None:
            headers["content-type"] = rules.check_content_type(content_type)
        return await self._presign("PUT", path, expires_in, headers)

    async def _presign(
        self, method: str, path: str, expires_in: int, headers: dict[str, str]
    ) -> str:
        encoded = "/" + rules.encode_path(rules.normalize_object_path(path))
        if self._context.closed:
            raise SessionClosedError(SESSION_CLOSED_MESSAGE)
        credentials = await _get_credentials(self._context)
        query = self._signer.presign(
            credentials,
            method=method,
            host=self._host,
            path=encoded,
            headers=headers,
            expires_in=expires_in,
        )
        return f"{self._base}{encoded}?{query}"


class ObjectDownload(contextlib.AbstractAsyncContextManager["ObjectStream"]):
    """What :meth:`ContainerClient.get_object` returns: an async context manager that
    sends the request on enter (within the call's ``deadline``, retries included) and
    yields the :class:`ObjectStream`; on exit it closes the stream and its connection.
    Use it once: entering it while its block is open raises
    :class:`DownloadAlreadyEnteredError`."""

    def __init__(
        self,
        client: ContainerClient,
        request: protocol.Request,
        max_resumes: int,
        deadline: float | None,
        retry: RetryPolicy | None,
    ) -> None:
        self._client = client
        self._request = request
        self._max_resumes = max_resumes
        self._deadline = deadline
        self._retry = retry
        self._stream: ObjectStream | None = None
        #: From entering until the block ends: a second entry would replace the stream
        #: and leave the first one's connection to the garbage collector.
        self._entered = False

    async def _reopen(self, start: int, end: int) -> tuple[Response, int]:
        original = self._request
        headers = {"range": rules.format_range((start, end))}
        ranged = protocol.Request("GET", original.path, (), headers, original.payload_hash)
        client = self._client
        made = 0

        def attempt(n: int) -> Awaitable[Response]:
            nonlocal made
            made = n
            return client._send(ranged, attempt=n)

        response = await client._call(attempt, None, retry=self._retry, request=ranged)
        return response, made

    async def __aenter__(self) -> ObjectStream:
        if self._entered:
            raise DownloadAlreadyEnteredError(
                f"this download of {unquote(self._request.path[1:])!r} is already entered "
                "and its block has not ended; read it there, or call get_object() again "
                "for a second download"
            )
        self._entered = True
        try:
            request = self._request
            deadline = _deadline(self._deadline)
            client = self._client
            # The deadline bounds getting the response (the retry driver's cancel scope),
            # not the body: it is not turned into the read timeout, which would then apply
            # to every read of a live segment whose encoder pauses. The body has
            # Timeouts.read.
            made = 0

            def attempt(n: int) -> Awaitable[Response]:
                nonlocal made
                made = n  # the stream's errors count the attempts that got it
                return client._send(request, attempt=n)

            response = await client._call(attempt, deadline, retry=self._retry, request=request)
            try:
                self._stream = ObjectStream(
                    response, reopen=self._reopen, max_resumes=self._max_resumes,
                    requested=request.headers.get("range"), attempts=made,
                )
            except BaseException:
                response.close()
                raise
        except BaseException:
            self._entered = False  # no block was entered: it may be tried again
            raise
        return self._stream

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._stream is not None:
                await self._stream.aclose()
        finally:
            self._entered = False

