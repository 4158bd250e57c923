"""The one exception tree of msd_async.

Every error the library raises derives from :class:`MediaStoreError`::

    MediaStoreError
    ├── ClientValidationError        raised before anything is sent (also a ValueError)
    │   ├── InvalidPathError             path characters, empty segment, depth, length
    │   ├── InvalidRangeError            malformed or empty byte range
    │   ├── InvalidParameterError        MaxResults, Content-Type, Cache-Control, options
    │   └── ObjectTooLargeError          body over the 25 MB / 10 MB limit (before or while sending)
    ├── ServiceError                 the service answered with an error (code, status, request id)
    │   ├── ObjectNotFoundError          ObjectNotFoundException, 404
    │   ├── ContainerNotFoundError       ContainerNotFoundException, 404
    │   ├── RangeNotSatisfiableError     RequestedRangeNotSatisfiableException, 416
    │   ├── ValidationError              ValidationException, 400
    │   ├── ThrottlingError              ThrottlingException (400) or HTTP 429
    │   ├── AuthError                    403 family
    │   │   ├── InvalidSignatureError        InvalidSignatureException
    │   │   │   └── ClockSkewError               the request's date was refused: fix the clock
    │   │   ├── UnrecognizedClientError      UnrecognizedClientException
    │   │   ├── MissingAuthenticationTokenError
    │   │   └── AccessDeniedError            AccessDeniedException
    │   └── ServerError                  5xx (InternalServerError, 502, 503, 504)
    ├── TransportError               the connection failed; the cause is chained
    │   ├── ConnectError
    │   ├── ConnectionLostError          the peer closed or reset mid-request / mid-body
    │   └── MediaStoreTimeout            (also the builtin TimeoutError)
    │       ├── ConnectTimeout, ReadTimeout, WriteTimeout, PoolTimeout
    │       └── DeadlineExceeded         the per-call deadline covering all attempts
    ├── ProtocolError                the response did not have the shape the API promises
    ├── StreamClosedError            an ObjectStream read after it was closed (also a RuntimeError)
    ├── ConcurrentReadError          an ObjectStream read by two tasks at once (also a RuntimeError)
    ├── UnreplayableBodyError        a retry needed a body that can only be read once
    ├── ObjectChangedError           a resumed download found another ETag or size
    ├── ChecksumMismatchError        the service stored other bytes than were sent
    ├── CredentialsError             no credentials, or the provider failed or did not answer
    ├── SessionClosedError           a call after the Session was closed (also a RuntimeError)
    ├── SessionAlreadyEnteredError   a Session entered twice (also a RuntimeError)
    ├── DownloadAlreadyEnteredError  an ObjectDownload entered while open (also a RuntimeError)
    └── WrongEventLoopError          a Session used from another event loop (also a RuntimeError)

Every exception carries ``attempts``: how many HTTP attempts the call made before it
gave up (0 when it failed before sending). An attempt that ended before it reached the
network is not one of them: an error whose ``unsent`` is true (no free connection in the
pool, the session closed, another event loop, no credentials) ended an attempt that took
no connection, so a call that retried twice and then found its session closed says 2,
not 3. Trying to open a connection counts (a ``ConnectError`` after four refusals says 4).
An error reading a download counts its request's attempts and every resume's.
``unwritten`` is true when no byte of the attempt's request was written to a connection
(it could not be opened, or a pooled one was found closed before writing): the server
cannot have acted on it.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from typing import Any, ClassVar, Final

__all__ = [
    "ERROR_BODY_LIMIT",
    "AccessDeniedError",
    "AuthError",
    "ChecksumMismatchError",
    "ClientValidationError",
    "ClockSkewError",
    "ConcurrentReadError",
    "ConnectError",
    "ConnectTimeout",
    "ConnectionLostError",
    "ContainerNotFoundError",
    "CredentialsError",
    "DeadlineExceeded",
    "DownloadAlreadyEnteredError",
    "InvalidParameterError",
    "InvalidPathError",
    "InvalidRangeError",
    "InvalidSignatureError",
    "MediaStoreError",
    "MediaStoreTimeout",
    "MissingAuthenticationTokenError",
    "ObjectChangedError",
    "ObjectNotFoundError",
    "ObjectTooLargeError",
    "PoolTimeout",
    "ProtocolError",
    "RangeNotSatisfiableError",
    "ReadTimeout",
    "ServerError",
    "ServiceError",
    "SessionAlreadyEnteredError",
    "SessionClosedError",
    "StreamClosedError",
    "ThrottlingError",
    "TransportError",
    "UnrecognizedClientError",
    "UnreplayableBodyError",
    "ValidationError",
    "WriteTimeout",
    "WrongEventLoopError",
    "service_error_class",
]


def _rebuild(cls: type[MediaStoreError], message: str, state: dict[str, Any]) -> MediaStoreError:
    """Unpickle an error without calling its ``__init__`` (whose keyword-only fields the
    default ``BaseException`` pickling cannot pass)."""
    exc = cls.__new__(cls, message)
    Exception.__init__(exc, message)
    exc.__dict__.update(state)
    return exc


#: How much of an error response's body is kept on a :class:`ServiceError` (bytes).
ERROR_BODY_LIMIT: Final = 1024


class MediaStoreError(Exception):
    """Base of every error raised by msd_async.

    Every error pickles with its type and fields (``multiprocessing`` and task queues carry
    errors between processes); the chained ``__cause__`` and the traceback do not travel,
    as for any pickled exception.
    """

    attempts: int = 0
    #: The attempt that raised it ended before it reached the network (it took no
    #: connection): not counted in ``attempts``.
    unsent: bool = False
    #: No byte of the attempt's request was written to a connection: the server cannot
    #: have acted on it (a DELETE retried after it does not take a 404 for its own work).
    unwritten: bool = False

    def __init__(self, message: str, *, attempts: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.attempts = attempts

    def __reduce__(self) -> tuple[Any, ...]:
        # __dict__ holds every field (and __notes__ from add_note).
        return (_rebuild, (type(self), self.message, dict(self.__dict__)))


# --- raised before sending -------------------------------------------------------------


class ClientValidationError(MediaStoreError, ValueError):
    """The call was refused before sending: an argument breaks a rule of the API.

    ``rule`` names the rule (for example ``"path.max-length"``); the message says how to fix it.
    """

    def __init__(self, message: str, *, rule: str) -> None:
        super().__init__(message)
        self.rule = rule


class InvalidPathError(ClientValidationError):
    """The object or folder path breaks the MediaStore naming rules."""


class InvalidRangeError(ClientValidationError):
    """The byte range is malformed or empty."""


class InvalidParameterError(ClientValidationError):
    """MaxResults, Content-Type, Cache-Control or another option is out of its allowed range."""


class ObjectTooLargeError(ClientValidationError):
    """The body is larger than the object limit of its upload availability.

    Raised before sending when the size is known, or the moment a streamed body passes the
    limit; in that case the upload is aborted (the connection is cut) so the service never
    stores a truncated object, and the previous version stays intact.
    """

    def __init__(self, message: str, *, rule: str, limit: int, size: int | None) -> None:
        super().__init__(message, rule=rule)
        self.limit = limit
        self.size = size


# --- the service said no -----------------------------------------------------------------


class ServiceError(MediaStoreError):
    """The service answered with an error.

    Keeps the AWS error ``code``, the HTTP ``status``, the service ``message`` and the
    ``request_id`` (``x-amzn-RequestId``) to quote when reporting a problem. ``retry_after``
    is the server's ``Retry-After`` in seconds (``None`` when it sent none); the retry policy
    waits at least that long, capped by ``RetryPolicy.retry_after_max``.

    ``body`` is the start of the response body (at most :data:`ERROR_BODY_LIMIT` bytes; the
    service's JSON, or the HTML of a load balancer or proxy) and ``headers`` the response
    headers: when the answer did not come from MediaStore, they say what did answer.
    """

    #: The AWS error code this class stands for (``None`` for the generic classes).
    CODE: ClassVar[str | None] = None
    #: Seconds the server asked us to wait (``Retry-After``), if it said.
    retry_after: float | None = None

    def __init__(
        self,
        message: str,
        *,
        code: str,
        status: int,
        request_id: str | None = None,
        attempts: int = 1,
        retry_after: float | None = None,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, attempts=attempts)
        self.code = code
        self.status = status
        self.request_id = request_id
        self.retry_after = retry_after
        self.body = body
        #: The response headers (a plain dict, so the error pickles).
        self.headers: dict[str, str] = dict(headers) if headers is not None else {}

    def __str__(self) -> str:
        rid = f", request id {self.request_id}" if self.request_id else ""
        return f"{self.code} (HTTP {self.status}{rid}): {self.message}"


class ObjectNotFoundError(ServiceError):
    """No object at that path (a folder path counts as missing too)."""

    CODE = "ObjectNotFoundException"


class ContainerNotFoundError(ServiceError):
    """The endpoint does not name an existing container."""

    CODE = "ContainerNotFoundException"


class RangeNotSatisfiableError(ServiceError):
    """The requested range starts past the end of the object.

    ``object_size`` is the object's total size from the 416's ``Content-Range: bytes */N``
    (RFC 9110 section 15.5.17), or ``None`` when the server did not send one: enough to
    answer a client's own 416 without another request.
    """

    CODE = "RequestedRangeNotSatisfiableException"
    #: Total size of the object in bytes, if the 416 said.
    object_size: int | None = None

    def with_object_size(self, size: int | None) -> RangeNotSatisfiableError:
        """Set :attr:`object_size`; returns the error itself."""
        self.object_size = size
        return self


class ValidationError(ServiceError):
    """The service rejected the request as invalid (path, size, header, token, 30 s cap)."""

    CODE = "ValidationException"


class ThrottlingError(ServiceError):
    """Over a request-rate quota; retried by the default retry policy."""

    CODE = "ThrottlingException"


class AuthError(ServiceError):
    """The request was not authenticated or not allowed. Check keys, region and clock."""


class InvalidSignatureError(AuthError):
    """The signature did not match: wrong secret key, region, or a clock more than 15 min off."""

    CODE = "InvalidSignatureException"


class ClockSkewError(InvalidSignatureError):
    """The service refused the request's date: this machine's clock is more than 15
    minutes off the service's (SigV4 signatures are valid that long). Setting the clock
    (NTP) is the fix; a retry would be refused the same way, so none is made.

    ``skew`` is how many seconds this machine's clock is ahead of the service's (negative:
    behind), measured from the response's ``Date`` header, or ``None`` when it had none.
    The class is chosen when the answer says so, whatever its code
    (``InvalidSignatureException`` with "Signature expired", ``RequestExpired``,
    ``RequestTimeTooSkewed``), or for an ``InvalidSignatureException`` with no message (a
    HEAD's) when the measured skew is 14 minutes or more. A 403 that says something else
    (AccessDenied, a signature mismatch) keeps its class whatever its ``Date``: a stale
    answer from a cache carries an old one.
    """

    #: Seconds this machine's clock is ahead of the service's (negative: behind), if known.
    skew: float | None = None


class UnrecognizedClientError(AuthError):
    """The access key id is not known to the service."""

    CODE = "UnrecognizedClientException"


class MissingAuthenticationTokenError(AuthError):
    """The request carried no credentials where they are required."""

    CODE = "MissingAuthenticationTokenException"


class AccessDeniedError(AuthError):
    """The credentials are valid but not allowed to do this."""

    CODE = "AccessDeniedException"


class ServerError(ServiceError):
    """The service failed (5xx); retried by the default retry policy."""

    CODE = "InternalServerError"


_CODE_TO_CLASS: dict[str, type[ServiceError]] = {
    cls.CODE: cls
    for cls in (
        ObjectNotFoundError,
        ContainerNotFoundError,
        RangeNotSatisfiableError,
        ValidationError,
        ThrottlingError,
        InvalidSignatureError,
        UnrecognizedClientError,
        MissingAuthenticationTokenError,
        AccessDeniedError,
        ServerError,
    )
    if cls.CODE is not None
}
_CODE_TO_CLASS.update(
    {
        "TooManyRequestsException": ThrottlingError,
        "RequestLimitExceeded": ThrottlingError,
        "InternalFailure": ServerError,
        "ServiceUnavailable": ServerError,
        "ServiceUnavailableException": ServerError,
        "IncompleteSignature": AuthError,
        "InvalidClientTokenId": UnrecognizedClientError,
        "ExpiredTokenException": AuthError,
        "RequestExpired": AuthError,
    }
)


def service_error_class(code: str | None, status: int) -> type[ServiceError]:
    """The exception class for an error response: by AWS code first, then by HTTP status."""
    if code:
        cls = _CODE_TO_CLASS.get(code)
        if cls is not None:
            return cls
    if status == 429:
        return ThrottlingError
    if status >= 500:
        return ServerError
    if status == 416:
        return RangeNotSatisfiableError
    if status == 403:
        return AuthError
    return ServiceError


# --- the connection failed -----------------------------------------------------------------


class TransportError(MediaStoreError):
    """The request could not be completed on the network; ``__cause__`` holds the original."""


class ConnectError(TransportError):
    """Could not open a connection to the endpoint (refused, DNS, TLS)."""

    unwritten = True


class ConnectionLostError(TransportError):
    """The connection closed or reset before the request or response body was complete.

    For a download this means the bytes received so far are not the whole object.
    """


class MediaStoreTimeout(TransportError, builtins.TimeoutError):
    """A timeout expired. Also an instance of the builtin :class:`TimeoutError`, so
    ``except TimeoutError`` catches it as well as asyncio's own timeouts.

    Not named ``TimeoutError``: ``from msd_async import *`` would then shadow the builtin.
    """


class ConnectTimeout(MediaStoreTimeout):
    """Opening the connection took longer than ``Timeouts.connect``."""

    unwritten = True


class ReadTimeout(MediaStoreTimeout):
    """No byte arrived from the server for ``Timeouts.read`` seconds."""


class WriteTimeout(MediaStoreTimeout):
    """The server accepted no byte of the request body for ``Timeouts.write`` seconds."""


class PoolTimeout(MediaStoreTimeout):
    """No connection of the pool became free within ``Timeouts.pool`` seconds."""

    unsent = unwritten = True


class DeadlineExceeded(MediaStoreTimeout):
    """The call's deadline (covering every attempt) passed before it could finish."""


# --- other ----------------------------------------------------------------------------------


class ProtocolError(MediaStoreError):
    """The response did not have the shape the API promises (not MediaStore, or a proxy):
    for example a resumed download answered with other bytes than those asked for, or a
    body longer than the response declared."""


class StreamClosedError(MediaStoreError, RuntimeError):
    """An :class:`~msd_async.ObjectStream` was read after it was closed (after its
    ``async with`` block, or :meth:`~msd_async.ObjectStream.aclose`): read the body inside
    the block."""


class ConcurrentReadError(MediaStoreError, RuntimeError):
    """An :class:`~msd_async.ObjectStream` was read while another task was reading it: read
    a stream from one task at a time (hand the chunks to the others, through a queue for
    example). The read in progress is not disturbed."""


class UnreplayableBodyError(MediaStoreError):
    """A retry was needed, but the upload body could only be read once.

    Pass bytes, a file, a re-openable source (a callable returning a fresh async iterable), or
    set ``replay_buffer=True`` to let the client keep what it sent. ``__cause__`` holds the
    error that made the retry necessary.
    """


class ObjectChangedError(MediaStoreError):
    """A download was resumed, but the object had been replaced: its ETag or its total size
    changed, or it was deleted (``actual_etag`` is then ``None``)."""

    def __init__(self, message: str, *, expected_etag: str | None, actual_etag: str | None) -> None:
        super().__init__(message)
        self.expected_etag = expected_etag
        self.actual_etag = actual_etag


class ChecksumMismatchError(MediaStoreError):
    """``verify=True`` found that the service's ContentSHA256 differs from the bytes sent."""

    def __init__(self, message: str, *, expected: str | None, actual: str | None) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class CredentialsError(MediaStoreError):
    """No usable credentials were found, or the credential provider failed."""

    unsent = unwritten = True


#: What a :class:`SessionClosedError` says when a call finds its Session closed.
SESSION_CLOSED_MESSAGE: Final = (
    "this Session is closed; open a new Session and get the container from it again"
)


class SessionClosedError(MediaStoreError, RuntimeError):
    """A call was made on a :class:`ContainerClient` (or ``Session.container``) after its
    Session was closed. Open a new Session and get the container from it again.

    ``unsent`` when the attempt it ended had taken no connection yet (the session was
    found closed before sending, or closed while the call waited for a connection or its
    credentials); not when the session closed under a request already on its connection.
    """

    def __init__(self, message: str, *, attempts: int = 0, unsent: bool = False) -> None:
        super().__init__(message, attempts=attempts)
        if unsent:
            self.unsent = self.unwritten = True


class SessionAlreadyEnteredError(MediaStoreError, RuntimeError):
    """``async with session`` on a Session already entered (a nested block, or another
    task's): the inner block's exit would close the session under the outer one. Enter a
    Session once, where it is made, and pass it (or its containers) to the code that needs
    it, without ``async with``."""


class DownloadAlreadyEnteredError(MediaStoreError, RuntimeError):
    """``async with`` on an :class:`~msd_async.ObjectDownload` whose block is still open (a
    nested block, or another task's): a second response would replace the first's
    stream, whose connection nothing would then close. Call ``get_object`` once per
    download; a download may be entered again once its block has ended."""


class WrongEventLoopError(MediaStoreError, RuntimeError):
    """A Session's client sent from an event loop other than the one its connections
    belong to (the loop of its first request: a second ``asyncio.run``, another thread).
    Open one Session per event loop, inside the coroutine that loop runs."""

    unsent = unwritten = True
