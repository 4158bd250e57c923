"""HTTP rules for serving objects, without I/O: ranges (RFC 9110 §14), conditional
requests (RFC 9110 §13) and validators (ETag, Last-Modified; RFC 9110 §8.8).

Everything here works on plain values, so it is tested without a server and shared by the
aiohttp and ASGI adapters.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from ..errors import InvalidRangeError
from ..httpdate import format_http_date, parse_http_date
from ..rules import parse_range_header

__all__ = [
    "CONDITIONAL_HEADERS",
    "Decision",
    "Validators",
    "evaluate_preconditions",
    "format_http_date",
    "parse_http_date",
    "parse_range",
    "quote_etag",
    "resolve_range",
]

#: Request headers that make a request conditional (If-Range only together with Range).
CONDITIONAL_HEADERS: Final = (
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
    "if-range",
)

#: A single byte range as requested: ``(first, last)`` (``last`` may be ``None``: to the
#: end), or ``(None, n)`` for the last n bytes.
RequestedRange = tuple[int | None, int | None]

# entity-tag (RFC 9110 §8.8.3): [W/] DQUOTE *etagc DQUOTE
_ENTITY_TAG: Final = re.compile(r'(W/)?"([\x21\x23-\x7e\x80-\xff]*)"')


def parse_range(value: str | None) -> RequestedRange | Literal["ignore", "unsatisfiable"] | None:
    """Read a ``Range`` request header with the package's one range parser
    (:func:`msd_async.rules.parse_range_header`).

    Returns ``None`` when there is none, the single range it asks for, ``"unsatisfiable"``
    for ``bytes=-0`` (a suffix of zero bytes is never satisfiable), or ``"ignore"`` when
    the header must be ignored: another unit, invalid syntax, a last position before the
    first (RFC 9110 §14.1.1 and §14.2 let a server answer 200 then), more than one range
    (this server serves one range or the whole object) or a position past 2**64 - 1.
    """
    if value is None:
        return None
    try:
        return parse_range_header(value)
    except InvalidRangeError as exc:
        return "unsatisfiable" if exc.rule == "range.empty" else "ignore"


def resolve_range(requested: RequestedRange, size: int) -> tuple[int, int] | None:
    """The ``(first, last)`` byte positions a range selects in an object of ``size``
    bytes (``last`` clamped to the end), or ``None`` if it is not satisfiable."""
    first, last = requested
    if first is None:
        assert last is not None
        if size == 0 or last == 0:
            return None
        return max(0, size - last), size - 1
    if first >= size:
        return None
    return first, size - 1 if last is None else min(last, size - 1)


def quote_etag(etag: str) -> str:
    """MediaStore's bare ETag as an HTTP strong entity-tag (``"..."``). Every PUT gets a
    new ETag and a version's bytes never change, so the tag is strong."""
    return f'"{etag}"'


def _entity_tags(value: str) -> list[tuple[bool, str]] | None:
    """``[(weak, opaque-tag)]`` of an If-Match / If-None-Match list; ``None`` for ``*``."""
    if value.strip(" \t") == "*":
        return None
    tags = []
    for match in _ENTITY_TAG.finditer(value):
        tags.append((match.group(1) is not None, match.group(2)))
    return tags


@dataclass(frozen=True, slots=True)
class Validators:
    """The current object's validators: its bare ETag and Last-Modified (either may be
    ``None``), and whether it exists at all."""

    etag: str | None
    last_modified: _dt.datetime | None
    exists: bool = True


@dataclass(frozen=True, slots=True)
class Decision:
    """What the preconditions decided: ``status`` 304 or 412 to answer without a body, or
    ``None`` to go on; ``use_range`` says whether a ``Range`` header still applies
    (If-Range)."""

    status: Literal[304, 412] | None
    use_range: bool = True


_PROCEED: Final = Decision(None, True)


def _seconds(value: _dt.datetime) -> _dt.datetime:
    # HTTP dates have one-second resolution: compare at that resolution.
    return value.replace(microsecond=0)


def evaluate_preconditions(
    method: str,
    headers: Mapping[str, str],
    current: Validators,
    *,
    now: _dt.datetime | None = None,
) -> Decision:
    """Evaluate the request's preconditions in the order of RFC 9110 §13.2.2.

    ``headers`` maps lower-case names to values (repeated fields joined with ``", "``).
    ``method`` is ``GET``, ``HEAD`` or ``PUT``. The caller ignores preconditions when the
    unconditional answer would not be 2xx (a GET of a missing object is a 404, §13.2.1);
    for PUT, ``current.exists=False`` makes ``If-Match`` fail and ``If-None-Match: *``
    pass. If-Range (only with a Range, GET only) compares strongly: an entity-tag must
    equal the current ETag; a date must equal Last-Modified, which must be at least one
    second older than ``now`` to count as strong (§8.8.2.2).
    """
    etag = current.etag
    last_modified = current.last_modified
    safe = method in ("GET", "HEAD")
    # 1. If-Match (strong comparison; §13.1.1)
    if_match = headers.get("if-match")
    if if_match is not None:
        tags = _entity_tags(if_match)
        if tags is None:
            ok = current.exists
        else:
            ok = current.exists and any(not weak and tag == etag for weak, tag in tags)
        if not ok:
            return Decision(412)
    else:
        # 2. If-Unmodified-Since, only without If-Match, and only with a Last-Modified
        since = parse_http_date(headers.get("if-unmodified-since"))
        if (
            since is not None
            and current.exists
            and last_modified is not None
            and _seconds(last_modified) > since
        ):
            return Decision(412)
    # 3. If-None-Match (weak comparison; §13.1.2)
    if_none_match = headers.get("if-none-match")
    if if_none_match is not None:
        tags = _entity_tags(if_none_match)
        if tags is None:
            matched = current.exists
        else:
            matched = current.exists and any(tag == etag for _, tag in tags)
        if matched:
            return Decision(304 if safe else 412)
    elif safe:
        # 4. If-Modified-Since, GET/HEAD only, only without If-None-Match
        since = parse_http_date(headers.get("if-modified-since"))
        if (
            since is not None
            and current.exists
            and last_modified is not None
            and _seconds(last_modified) <= since
        ):
            return Decision(304)
    # 5. If-Range (§13.1.5), GET with a Range only
    if method == "GET" and "range" in headers:
        if_range = headers.get("if-range")
        if if_range is not None:
            return Decision(None, _if_range_matches(if_range.strip(" \t"), current, now))
    return _PROCEED


def _if_range_matches(value: str, current: Validators, now: _dt.datetime | None) -> bool:
    if not current.exists:
        return False
    tag = _ENTITY_TAG.fullmatch(value)
    if tag is not None:
        return tag.group(1) is None and tag.group(2) == current.etag
    date = parse_http_date(value)
    if date is None or current.last_modified is None:
        return False
    modified = _seconds(current.last_modified)
    reference = now if now is not None else _dt.datetime.now(_dt.UTC)
    return modified == date and (reference - modified).total_seconds() >= 1
