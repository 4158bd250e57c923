"""The wire format of the five operations, without I/O (docs/contract.md, "Operations on the wire"
and "Errors").

Builders turn validated arguments into a :class:`Request` (method, encoded path, query,
headers to sign, payload hash); parsers turn status, headers and body bytes into results or
typed exceptions. The transport never looks inside; tests compare both sides with botocore.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import time
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote

import msgspec

from . import rules
from .errors import (
    ERROR_BODY_LIMIT,
    ClockSkewError,
    InvalidParameterError,
    ObjectNotFoundError,
    ProtocolError,
    RangeNotSatisfiableError,
    ServiceError,
    service_error_class,
)
from .httpdate import parse_http_date
from .results import Item, ItemType, ListPage, ObjectInfo, PutResult
from .retry import parse_retry_after
from .signing import EMPTY_SHA256, UNSIGNED_PAYLOAD

__all__ = [
    "Request",
    "delete_object",
    "describe_object",
    "follow_token",
    "get_object",
    "list_items",
    "parse_content_range",
    "parse_error",
    "parse_length",
    "parse_list_page",
    "parse_object_info",
    "parse_put_result",
    "parse_unsatisfied_range",
    "put_object",
]

# PutObject signs this header with its value, as botocore does (botocore auth.py;
# docs/contract.md, "Signing").
_UNSIGNED_HEADERS: Final = {"x-amz-content-sha256": UNSIGNED_PAYLOAD}


class Request(msgspec.Struct, frozen=True, gc=False):
    """One operation's request, before signing and transport (a frozen struct: one is made
    per call, and a frozen dataclass's ``__init__`` alone cost ~1-2 us; it holds only
    strings, a tuple of them and a header mapping, so it needs no cyclic GC tracking)."""

    method: str
    #: Percent-encoded path, starting with ``/``.
    path: str
    #: Decoded query pairs (only ListItems has any).
    query: tuple[tuple[str, str], ...]
    #: Lower-case headers that are sent *and* signed.
    headers: Mapping[str, str]
    payload_hash: str

    @property
    def target(self) -> str:
        """The request target as sent on the wire: encoded path and query."""
        if not self.query:
            return self.path
        query = "&".join(f"{k}={quote(v, safe='-_.~')}" for k, v in self.query)
        return f"{self.path}?{query}"


def _object_path(path: str) -> str:
    return "/" + rules.encode_path(rules.normalize_object_path(path))


def put_object(
    path: str,
    *,
    content_type: str | None = None,
    cache_control: str | None = None,
    availability: rules.Availability = "STANDARD",
) -> Request:
    headers = dict(_UNSIGNED_HEADERS)
    if content_type is not None:
        headers["content-type"] = rules.check_content_type(content_type)
    if cache_control is not None:
        headers["cache-control"] = rules.check_cache_control(cache_control)
    # Sent even for STANDARD: explicit beats relying on the service default.
    headers["x-amz-upload-availability"] = availability
    return Request("PUT", _object_path(path), (), headers, UNSIGNED_PAYLOAD)


def get_object(path: str, *, byte_range: rules.ByteRange | None = None) -> Request:
    headers = {} if byte_range is None else {"range": rules.format_range(byte_range)}
    return Request("GET", _object_path(path), (), headers, EMPTY_SHA256)


def describe_object(path: str) -> Request:
    return Request("HEAD", _object_path(path), (), {}, EMPTY_SHA256)


def delete_object(path: str) -> Request:
    return Request("DELETE", _object_path(path), (), {}, EMPTY_SHA256)


def list_items(
    path: str | None = None, *, max_results: int | None = None, next_token: str | None = None
) -> Request:
    query: list[tuple[str, str]] = []
    folder = rules.normalize_folder_path(path)
    if folder:
        query.append(("Path", folder))
    if max_results is not None:
        query.append(("MaxResults", str(rules.check_max_results(max_results))))
    if next_token is not None:
        if not isinstance(next_token, str) or not next_token:
            raise InvalidParameterError(
                "next_token must be the non-empty string a previous page returned",
                rule="next-token.value",
            )
        query.append(("NextToken", next_token))
    return Request("GET", "/", tuple(query), {}, EMPTY_SHA256)


# --- parsing -----------------------------------------------------------------------------


def _json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body) if body else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


# One parser for every HTTP date of the package (aware UTC or None, never raises).
_http_date: Final = parse_http_date


def parse_length(value: str | None) -> int | None:
    """A ``Content-Length`` header as an int; ``None`` when absent or malformed."""
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _unquote_etag(value: str | None) -> str | None:
    # The service sends bare hex; tolerate proxies that add quotes.
    if value and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


class _WirePut(msgspec.Struct):
    """A PutObject response body as the service sends it."""

    ContentSHA256: str
    ETag: str
    StorageClass: str = "TEMPORAL"


_decode_put = msgspec.json.Decoder(_WirePut).decode


def parse_put_result(body: bytes, size: int) -> PutResult:
    """A PutObject response body as a :class:`PutResult` (``size``: the bytes sent).

    Raises :class:`ProtocolError` when ContentSHA256 or ETag is missing or not a string.
    """
    try:
        wire = _decode_put(body)
    except msgspec.MsgspecError:
        # Off the usual shape (a StorageClass that is not a string, not JSON at all): the
        # lenient path says precisely what is missing.
        data = _json(body)
        sha = data.get("ContentSHA256")
        etag = data.get("ETag")
        if not isinstance(sha, str) or not isinstance(etag, str):
            raise ProtocolError(
                f"PutObject response lacks ContentSHA256/ETag: {body[:200]!r}", attempts=1
            ) from None
        wire = _WirePut(sha, etag, str(data.get("StorageClass", "TEMPORAL")))
    return PutResult(
        content_sha256=wire.ContentSHA256,
        etag=wire.ETag,
        storage_class=wire.StorageClass,
        size=size,
    )


def parse_object_info(headers: Mapping[str, str]) -> ObjectInfo:
    return ObjectInfo(
        content_type=headers.get("Content-Type"),
        content_length=parse_length(headers.get("Content-Length")),
        etag=_unquote_etag(headers.get("ETag")),
        last_modified=_http_date(headers.get("Last-Modified")),
        cache_control=headers.get("Cache-Control"),
    )


def parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """``bytes a-b/total`` → ``(a, b, total)``; ``total`` is ``None`` for ``*``."""
    if not value or not value.startswith("bytes "):
        return None
    span, _, total = value[6:].partition("/")
    first, _, last = span.partition("-")
    try:
        return int(first), int(last), None if total == "*" else int(total)
    except ValueError:
        return None


def _epoch(value: object) -> _dt.datetime | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return _dt.datetime.fromtimestamp(value, _dt.UTC)
        except (OverflowError, OSError, ValueError):
            return None
    return None


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


class _WirePage(msgspec.Struct):
    """A ListItems response body as the service sends it."""

    Items: tuple[Item, ...] = ()
    NextToken: str | None = None


# Non-strict: LastModified is epoch seconds (a JSON number), which msgspec decodes into an
# aware UTC datetime only in this mode; it also accepts numbers sent as strings.
_decode_page = msgspec.json.Decoder(_WirePage, strict=False).decode


def parse_list_page(body: bytes) -> ListPage:
    """A ListItems response body as a :class:`ListPage`.

    Decoded by msgspec straight into :class:`Item` structs (a 1,000-item page in a fraction
    of what ``json.loads`` takes to build dicts). A page that does not fit that schema goes
    through a lenient parser instead: a field of the wrong type is ``None`` and an unknown
    ``Type`` is ``"OBJECT"``. Raises :class:`ProtocolError` when the body is not a JSON
    object (a web server or a portal answering 200 to anything is not an empty folder),
    ``Items`` is not a list, or an entry has no string ``Name`` (skipped, it would leave
    the listing silently incomplete).
    """
    try:
        page = _decode_page(body)
    except msgspec.MsgspecError:
        return _parse_list_page_leniently(body)
    return ListPage(page.Items, page.NextToken or None)


def follow_token(page: ListPage, followed: set[str], path: str | None) -> str | None:
    """The ``NextToken`` of ``page`` to ask for next (``None``: the listing is complete),
    after adding it to ``followed``, the tokens this listing has followed so far.

    Raises :class:`ProtocolError` for a token the listing has followed before: a peer
    that hands one back (the same token again, or a cycle of them) would make the listing
    serve the same pages forever. botocore's paginators refuse the same. The check comes
    before the page's items are used, so none of them is taken twice.
    """
    token = page.next_token
    if token is None:
        return None
    if token in followed:
        raise ProtocolError(
            f"ListItems of {path or 'the container root'!r} returned a NextToken it had "
            f"already returned (after {len(followed) + 1} pages): following it would list "
            "the same pages forever, so the listing stops here. The endpoint is not "
            "behaving as MediaStore does; check what answers at that address",
            attempts=1,
        )
    followed.add(token)
    return token


def _parse_list_page_leniently(body: bytes) -> ListPage:
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise ProtocolError(
            f"ListItems response is not a JSON object: {body[:200]!r}; is the endpoint a "
            "MediaStore container's data endpoint?",
            attempts=1,
        )
    raw_items = data.get("Items", [])
    if not isinstance(raw_items, list):
        raise ProtocolError(f"ListItems response has no Items list: {body[:200]!r}", attempts=1)
    items = []
    for raw in raw_items:
        if not isinstance(raw, dict) or not isinstance(raw.get("Name"), str):
            raise ProtocolError(
                f"ListItems response lists an entry without a Name: {str(raw)[:200]!r}",
                attempts=1,
            )
        kind: ItemType = "FOLDER" if raw.get("Type") == "FOLDER" else "OBJECT"
        length = raw.get("ContentLength")
        items.append(
            Item(
                name=raw["Name"],
                type=kind,
                etag=_str_or_none(raw.get("ETag")),
                last_modified=_epoch(raw.get("LastModified")),
                content_type=_str_or_none(raw.get("ContentType")),
                content_length=(
                    length if isinstance(length, int) and not isinstance(length, bool) else None
                ),
            )
        )
    token = data.get("NextToken")
    return ListPage(tuple(items), token if isinstance(token, str) and token else None)


def _error_code(headers: Mapping[str, str], data: Mapping[str, Any]) -> str | None:
    # botocore's rule (parsers.py, the rest-json _do_error_parse): the header wins; its
    # value may carry ":<uri>" or "#" parts.
    code = headers.get("x-amzn-ErrorType")
    if not code:
        for key in ("code", "Code", "__type"):
            value = data.get(key)
            if isinstance(value, str) and value:
                code = value
                break
    if not code:
        return None
    code = code.split(":", 1)[0]
    return code.rsplit("#", 1)[-1] or None


def parse_unsatisfied_range(value: str | None) -> int | None:
    """The object size from a 416's ``Content-Range: bytes */N`` (RFC 9110 section 14.4),
    or ``None`` when absent or malformed."""
    if not value or not value.startswith("bytes */"):
        return None
    total = value[8:]
    # At most 20 digits (2**64): a longer number is no object's size, and int() refuses
    # thousands of digits with a bare ValueError.
    return int(total) if total.isdigit() and total.isascii() and len(total) <= 20 else None


_CONTROL_CHARS: Final = re.compile(r"[\x00-\x1f\x7f]+")


def _body_excerpt(headers: Mapping[str, str], body: bytes) -> str:
    """The start of a non-JSON error body for a message: one line, at most
    :data:`~msd_async.errors.ERROR_BODY_LIMIT` bytes, control characters as spaces."""
    text = body[:ERROR_BODY_LIMIT].decode("utf-8", "replace")
    text = " ".join(_CONTROL_CHARS.sub(" ", text).split())
    more = " ..." if len(body) > ERROR_BODY_LIMIT else ""
    kind = headers.get("Content-Type") or "no Content-Type"
    return f"({kind}, {len(body)} bytes): {text}{more}"


#: SigV4 refuses a request dated further than this from the service's clock (API
#: reference, CommonErrors, RequestExpired).
SIGV4_MAX_SKEW: Final = 15 * 60
# A 403 with the clocks this far apart is put down to the clock: the allowance less a
# minute for the request's travel and the Date header's whole seconds.
_SKEW_BLAMED: Final = SIGV4_MAX_SKEW - 60
_SKEW_CODES: Final = frozenset({"RequestExpired", "RequestTimeTooSkewed", "RequestInTheFuture"})
# The service's words for it ("Signature expired: <date> is now earlier than ...", "Signature
# not yet current: ..."), and those of S3-style and local servers.
_SKEW_WORDS: Final = re.compile(
    r"signature expired|signature not yet current|too skewed|clock skew", re.IGNORECASE
)
_AUTH_ADVICE: Final = {
    "InvalidSignatureException": (
        "the signature did not match: check the secret access key and the region"
    ),
    "UnrecognizedClientException": (
        "the service does not know these keys: check the access key id (and the session "
        "token of temporary credentials)"
    ),
    "InvalidClientTokenId": (
        "the service does not know these keys: check the access key id (and the session "
        "token of temporary credentials)"
    ),
    "ExpiredTokenException": (
        "the temporary credentials have expired: get new ones, or check the provider that "
        "should refresh them"
    ),
    "AccessDeniedException": (
        "the keys were accepted but are not allowed this operation: check the IAM policy "
        "and the container policy"
    ),
    "MissingAuthenticationTokenException": (
        "the request was not signed: give the Session credentials"
    ),
}
_AUTH_ADVICE_DEFAULT: Final = "check the keys, the region and this machine's clock"


def _clock_skew(date: str | None) -> float | None:
    """Seconds this machine's clock is ahead of the server's ``Date`` (negative: behind)."""
    when = parse_http_date(date) if date else None
    return None if when is None else time.time() - when.timestamp()


def _skew_advice(skew: float | None) -> str:
    if skew is None:
        return (
            "; the request's date (X-Amz-Date) is more than 15 minutes from the service's "
            "clock: check this machine's clock (NTP)"
        )
    off = abs(skew)
    amount = f"about {round(off / 60)} min" if off >= 90 else f"{off:.0f} s"
    return (
        f"; this machine's clock is {amount} {'ahead of' if skew > 0 else 'behind'} the "
        "service's (its Date header), and SigV4 refuses requests dated more than 15 "
        "minutes off: set this machine's clock (NTP)"
    )


def _stale_note(skew: float) -> str:
    minutes = round(abs(skew) / 60)
    return (
        f" (the answer's Date is about {minutes} min off this machine's clock: a stale "
        "answer from a cache or proxy in between, or this machine's clock is off)"
    )


def parse_error(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    object_operation: bool,
    attempts: int = 1,
    method: str | None = None,
) -> ServiceError:
    """The typed exception for an error response.

    A 404 without an error code on an object read or delete (GET, HEAD, DELETE; a HEAD
    cannot carry a body) is ``ObjectNotFoundError``: that is the only 404 the API models for
    an object path. A PUT never answers "object not found" (it creates the object), so a
    404 without a code there is a plain :class:`ServiceError`: the endpoint is probably not
    a MediaStore container. A body that is not the service's JSON (an HTML page from a load
    balancer) is kept: its start in the message, up to
    :data:`~msd_async.errors.ERROR_BODY_LIMIT` bytes on ``exc.body``, the headers on
    ``exc.headers``. A 416 carries the object size of its ``Content-Range: bytes */N``.
    """
    data = _json(body)
    code = _error_code(headers, data)
    message = data.get("Message") or data.get("message")
    said = isinstance(message, str) and bool(message)
    if not isinstance(message, str) or not message:
        if body and not data:
            excerpt = _body_excerpt(headers, body)
            message = f"HTTP {status} with a body that is not a MediaStore error {excerpt}"
        else:
            message = f"HTTP {status} with no error message"
    cls = service_error_class(code, status)
    skew: float | None = None
    if status == 400 and (code in _SKEW_CODES or _SKEW_WORDS.search(message)):
        # CommonErrors lists RequestExpired with HTTP 400: the same refused date.
        skew = _clock_skew(headers.get("Date"))
        cls = ClockSkewError
        message += _skew_advice(skew)
    elif status == 403:
        skew = _clock_skew(headers.get("Date"))
        far_off = skew is not None and abs(skew) >= _SKEW_BLAMED
        # The answer decides: the service names a refused date in its code or message.
        # The Date alone speaks only for a signature error with no words of its own (a
        # HEAD's): a stale 403 from a cache or proxy (AccessDenied, another signature
        # fault) carries an old Date, and its own cause must not be read as the clock.
        if code in _SKEW_CODES or _SKEW_WORDS.search(message) or (
            far_off and not said and code == "InvalidSignatureException"
        ):
            cls = ClockSkewError
            message += _skew_advice(skew)
        else:
            if not said:
                # A HEAD's 403 has no body to say why: say at least what to check.
                message += f"; {_AUTH_ADVICE.get(code or '', _AUTH_ADVICE_DEFAULT)}"
            if far_off:
                assert skew is not None
                message += _stale_note(skew)
    if code is None and status == 404 and object_operation and method != "PUT":
        cls = ObjectNotFoundError
    elif code is None and status == 404 and method == "PUT":
        message += "; a PUT is never answered 'not found' by MediaStore: check the endpoint"
    exc = cls(
        message,
        code=code or str(status),
        status=status,
        request_id=headers.get("x-amzn-RequestId"),
        attempts=attempts,
        body=body[:ERROR_BODY_LIMIT],
        headers=headers,
    )
    retry_after = headers.get("Retry-After")
    if retry_after is not None:
        exc.retry_after = parse_retry_after(retry_after)
    if isinstance(exc, ClockSkewError):
        exc.skew = skew
    if isinstance(exc, RangeNotSatisfiableError):
        exc.object_size = parse_unsatisfied_range(headers.get("Content-Range"))
    return exc
