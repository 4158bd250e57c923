"""The rules of the MediaStore data plane API (docs/contract.md, "Names and
limits"), shared by client and local server.

Pure functions, no I/O. Each check raises a :class:`~msd_async.errors.ClientValidationError`
subclass whose ``rule`` names the rule broken; the local server turns the same errors into
``400 ValidationException`` so both sides enforce one definition.
"""

from __future__ import annotations

import re
from typing import Final, Literal
from urllib.parse import quote

from .errors import InvalidParameterError, InvalidPathError, InvalidRangeError

__all__ = [
    "MAX_FOLDER_DEPTH",
    "MAX_PATH_LENGTH",
    "MAX_RANGE_POSITION",
    "MAX_RESULTS_LIMIT",
    "STANDARD_OBJECT_LIMIT",
    "STREAMING_OBJECT_LIMIT",
    "UPLOAD_TIME_LIMIT",
    "Availability",
    "ByteRange",
    "check_cache_control",
    "check_content_type",
    "check_max_results",
    "encode_path",
    "format_range",
    "is_name",
    "normalize_folder_path",
    "normalize_object_path",
    "object_limit",
    "parse_range_header",
]

#: STANDARD uploads: "25 MB". The service never said which megabyte; we use the SI one.
STANDARD_OBJECT_LIMIT: Final = 25_000_000
#: STREAMING uploads: "10 MB".
STREAMING_OBJECT_LIMIT: Final = 10_000_000
#: An upload not finished within 30 seconds is cancelled by the service.
UPLOAD_TIME_LIMIT: Final = 30.0
MAX_PATH_LENGTH: Final = 900
#: Folders above the file name; the container itself does not count.
MAX_FOLDER_DEPTH: Final = 10
MAX_RESULTS_LIMIT: Final = 1000

Availability = Literal["STANDARD", "STREAMING"]

# The User Guide's set (the SDK models omit "=" and ":", which the service accepted).
_SEGMENT_RE: Final = re.compile(r"[A-Za-z0-9._\-~=:]+")
_BAD_CHAR_RE: Final = re.compile(r"[^A-Za-z0-9._\-~=:/]")
# The SDK model's Content-Type pattern: no ";", space or "=", 1-255 chars.
_CONTENT_TYPE_RE: Final = re.compile(r"[\w\-/.+]{1,255}", re.ASCII)
_HEADER_VALUE_RE: Final = re.compile(r"[\t\x20-\x7e]*")
# An object path every check accepts: 1-11 segments of allowed characters, none starting
# with "." (so none is "." or ".."). Anything else takes the checks one by one.
_PLAIN_SEGMENT: Final = r"[A-Za-z0-9_\-~=:][A-Za-z0-9._\-~=:]*"
_PLAIN_OBJECT_PATH: Final = re.compile(
    rf"(?:{_PLAIN_SEGMENT}/){{0,{MAX_FOLDER_DEPTH}}}{_PLAIN_SEGMENT}"
).fullmatch
# Characters quote(..., safe="/~") leaves as they are.
_URL_SAFE_PATH: Final = re.compile(r"[A-Za-z0-9_.\-~/]*").fullmatch


def object_limit(availability: Availability) -> int:
    """The default size limit for an upload of the given availability."""
    return STREAMING_OBJECT_LIMIT if availability == "STREAMING" else STANDARD_OBJECT_LIMIT


def _check_segments(path: str, segments: list[str], original: str) -> None:
    for segment in segments:
        if not segment:
            raise InvalidPathError(
                f"path {original!r} has an empty segment ('//' or a trailing '/'); "
                "folder and file names need at least one character",
                rule="path.empty-segment",
            )
        if segment in (".", ".."):
            # Made of allowed characters, but URL normalisation (yarl, the SigV4 canonical
            # URI, the service) resolves them away: "a/../b" would sign and fetch "b".
            raise InvalidPathError(
                f"path {original!r} has a {segment!r} segment; '.' and '..' are resolved "
                "by URL normalisation, so they cannot name a folder or an object",
                rule="path.dot-segment",
            )
        if _SEGMENT_RE.fullmatch(segment) is None:
            bad = sorted(set(_BAD_CHAR_RE.findall(segment)))
            raise InvalidPathError(
                f"path {original!r} contains {''.join(bad)!r}; names may use only "
                "A-Z a-z 0-9 . - ~ _ = :",
                rule="path.characters",
            )


def is_name(name: str) -> bool:
    """Whether ``name`` can name a folder or an object: one path segment, of allowed
    characters, not ``.`` or ``..`` (a name ListItems may list)."""
    return _SEGMENT_RE.fullmatch(name) is not None and name not in (".", "..")


def normalize_object_path(path: str) -> str:
    """Validate an object path and return it without its leading ``/``.

    Raises :class:`InvalidPathError` for an empty path, a path over 900 characters, an empty
    segment, a character outside ``A-Z a-z 0-9 . - ~ _ = :`` or more than 10 folders.
    """
    # The common path in one regex match; the checks below say what is wrong otherwise.
    if type(path) is str:
        stripped = path[1:] if path[:1] == "/" else path
        if len(stripped) <= MAX_PATH_LENGTH and _PLAIN_OBJECT_PATH(stripped) is not None:
            return stripped
    if not isinstance(path, str):
        raise InvalidPathError(
            f"path must be a str, not {type(path).__name__}", rule="path.type"
        )
    stripped = path[1:] if path.startswith("/") else path
    if not stripped:
        raise InvalidPathError("object path is empty; name the object", rule="path.empty")
    if len(stripped) > MAX_PATH_LENGTH:
        raise InvalidPathError(
            f"path is {len(stripped)} characters long; the limit is {MAX_PATH_LENGTH}",
            rule="path.max-length",
        )
    segments = stripped.split("/")
    _check_segments(stripped, segments, path)
    if len(segments) - 1 > MAX_FOLDER_DEPTH:
        raise InvalidPathError(
            f"path {path!r} is {len(segments) - 1} folders deep; the limit is "
            f"{MAX_FOLDER_DEPTH} folders plus the file name",
            rule="path.max-depth",
        )
    return stripped


def normalize_folder_path(path: str | None) -> str:
    """Validate a ListItems folder path; return it without leading and trailing ``/``.

    ``None``, ``""`` and ``"/"`` all mean the container's root and return ``""``.
    """
    if path is None:
        return ""
    if not isinstance(path, str):
        raise InvalidPathError(
            f"path must be a str, not {type(path).__name__}", rule="path.type"
        )
    if len(path) > MAX_PATH_LENGTH:
        raise InvalidPathError(
            f"path is {len(path)} characters long; the limit is {MAX_PATH_LENGTH}",
            rule="path.max-length",
        )
    stripped = path.strip("/") if path not in ("", "/") else ""
    if not stripped:
        if path.count("/") > 1:
            raise InvalidPathError(
                f"folder path {path!r} has an empty segment", rule="path.empty-segment"
            )
        return ""
    if path.startswith("//") or path.endswith("//"):
        raise InvalidPathError(
            f"folder path {path!r} has an empty segment", rule="path.empty-segment"
        )
    segments = stripped.split("/")
    _check_segments(stripped, segments, path)
    if len(segments) > MAX_FOLDER_DEPTH:
        raise InvalidPathError(
            f"folder path {path!r} is {len(segments)} folders deep; the limit is "
            f"{MAX_FOLDER_DEPTH}",
            rule="path.max-depth",
        )
    return stripped


def encode_path(path: str) -> str:
    """Percent-encode a (validated) path for the URL: every byte outside ``A-Za-z0-9_.-~/``."""
    if _URL_SAFE_PATH(path) is not None:
        return path  # nothing to encode (no "=" or ":"): the usual case
    return quote(path, safe="/~")


def check_content_type(value: str) -> str:
    """Validate a Content-Type against the API pattern ``[\\w-/.+]{1,255}``."""
    if not isinstance(value, str) or _CONTENT_TYPE_RE.fullmatch(value) is None:
        raise InvalidParameterError(
            f"content type {value!r} does not match the API pattern [A-Za-z0-9_-/.+]{{1,255}} "
            "(parameters such as '; charset=...' are not allowed)",
            rule="content-type.pattern",
        )
    return value


def check_cache_control(value: str) -> str:
    """Validate a Cache-Control value: printable ASCII, as an HTTP header needs."""
    if (
        not isinstance(value, str)
        or not value.strip()
        or _HEADER_VALUE_RE.fullmatch(value) is None
    ):
        raise InvalidParameterError(
            f"cache control {value!r} must be non-empty printable ASCII (no line breaks)",
            rule="cache-control.value",
        )
    return value


def check_max_results(value: int) -> int:
    """Validate ListItems ``MaxResults``: an int from 1 to 1000."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_RESULTS_LIMIT:
        raise InvalidParameterError(
            f"max_results must be an int from 1 to {MAX_RESULTS_LIMIT}, not {value!r}",
            rule="max-results.range",
        )
    return value


#: A byte range: ``(start, end)`` inclusive, ``(start, None)`` open-ended,
#: ``(None, n)`` the last n bytes, or a raw ``"bytes=..."`` string.
ByteRange = tuple[int | None, int | None] | str

#: The largest byte position a range may name: no object comes near it, and a bound keeps
#: a position of thousands of digits from reaching int() (Python refuses over 4,300).
MAX_RANGE_POSITION: Final = 2**64 - 1
_MAX_POSITION_DIGITS: Final = len(str(MAX_RANGE_POSITION))

# ranges-specifier (RFC 9110 §14.1.1): the unit is case-insensitive; range-set is a list
# (1#range-spec), so commas with optional spaces around, and empty elements, may appear.
_RANGE_UNIT_RE: Final = re.compile(r"bytes=(.*)", re.ASCII | re.IGNORECASE | re.DOTALL)
_RANGE_SPEC_RE: Final = re.compile(r"(\d+)-(\d*)|-(\d+)", re.ASCII)
_CONTROL_RE: Final = re.compile(r"[\x00-\x1f\x7f]")


def format_range(byte_range: ByteRange) -> str:
    """Return the ``Range`` header value for a byte range, or raise :class:`InvalidRangeError`."""
    if type(byte_range) is tuple and len(byte_range) == 2:
        start, end = byte_range
        # (first, last), the usual form, valid: no need to find out what is wrong with it.
        if type(start) is int and type(end) is int and 0 <= start <= end <= MAX_RANGE_POSITION:
            return f"bytes={start}-{end}"
    if isinstance(byte_range, str):
        # The normalized form, never the caller's string: stray whitespace or a line break
        # must not reach the request headers.
        first, last = parse_range_header(byte_range)
        if first is None:
            return f"bytes=-{last}"
        return f"bytes={first}-" if last is None else f"bytes={first}-{last}"
    if not isinstance(byte_range, tuple) or len(byte_range) != 2:
        raise InvalidRangeError(
            f"range must be (start, end), (start, None), (None, suffix_length) or "
            f"'bytes=...', not {byte_range!r}",
            rule="range.form",
        )
    start, end = byte_range
    for value in (start, end):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise InvalidRangeError(
                f"range bounds must be ints or None, not {byte_range!r}", rule="range.form"
            )
    if start is None and end is None:
        raise InvalidRangeError("range (None, None) selects nothing", rule="range.form")
    for value in (start, end):
        if value is not None and value > MAX_RANGE_POSITION:
            raise InvalidRangeError(
                f"range position {value} is past {MAX_RANGE_POSITION:,}, beyond any object",
                rule="range.too-large",
            )
    if start is None:
        assert end is not None
        if end <= 0:
            raise InvalidRangeError(
                f"suffix range (None, {end}) must ask for at least one byte",
                rule="range.empty",
            )
        return f"bytes=-{end}"
    if start < 0:
        raise InvalidRangeError(f"range start {start} is negative", rule="range.negative")
    if end is None:
        return f"bytes={start}-"
    if end < start:
        raise InvalidRangeError(
            f"range end {end} is before start {start} (ends are inclusive)",
            rule="range.order",
        )
    return f"bytes={start}-{end}"


def _position(digits: str) -> int:
    significant = digits.lstrip("0")
    if len(significant) > _MAX_POSITION_DIGITS or (
        len(significant) == _MAX_POSITION_DIGITS and int(significant) > MAX_RANGE_POSITION
    ):
        shown = f"{digits[:20]}... ({len(digits)} digits)" if len(digits) > 40 else digits
        raise InvalidRangeError(
            f"range position {shown} is past {MAX_RANGE_POSITION:,}, beyond any object; "
            "ask for 'bytes=a-' to read to the end",
            rule="range.too-large",
        )
    return int(significant or "0")


def parse_range_header(value: str) -> tuple[int | None, int | None]:
    """Parse a single-range ``Range`` value: the package's one range parser (the client's
    ``range=`` strings, the local server, the web helpers).

    Returns ``(start, end)`` with ``end`` inclusive or ``None`` for open-ended, or
    ``(None, n)`` for a suffix of n bytes. RFC 9110 §14.1.1's syntax: the ``bytes`` unit in
    any case, spaces around the value and around list commas, empty list elements. Raises
    :class:`InvalidRangeError` and nothing else, with rule ``range.characters`` for
    control characters such as a line break, ``range.form`` for another syntax or
    more than one range, ``range.empty`` for ``bytes=-0``, ``range.order`` for an end
    before the start, ``range.too-large`` for a position past
    :data:`MAX_RANGE_POSITION`.
    """
    if type(value) is str and value[:6] == "bytes=":
        # The normalized form this package writes itself ('bytes=a-b' or 'bytes=a-', each
        # number under 20 digits, so under 2**64), read by position: every ranged GET's
        # answer is checked against it, and the grammar below costs ~3 us.
        first, dash, last = value[6:].partition("-")
        if (
            dash
            and 0 < len(first) < _MAX_POSITION_DIGITS
            and len(last) < _MAX_POSITION_DIGITS
            and first.isdigit()
            and first.isascii()
            and (not last or (last.isdigit() and last.isascii()))
        ):
            start = int(first)
            if not last:
                return start, None
            end = int(last)
            if start <= end:
                return start, end
    return _parse_range_by_grammar(value)


def _parse_range_by_grammar(value: str) -> tuple[int | None, int | None]:
    """:func:`parse_range_header` by RFC 9110's grammar: the reference its fast path must
    agree with (tests/web/test_dates_and_ranges.py)."""
    if isinstance(value, str) and _CONTROL_RE.search(value) is not None:
        raise InvalidRangeError(
            f"range {value[:100]!r} contains control characters (line breaks, tabs, NUL); "
            "write it as 'bytes=a-b', 'bytes=a-' or 'bytes=-n'",
            rule="range.characters",
        )
    unit = _RANGE_UNIT_RE.fullmatch(value.strip()) if isinstance(value, str) else None
    specs = [] if unit is None else [s.strip(" ") for s in unit.group(1).split(",")]
    specs = [spec for spec in specs if spec]
    match = _RANGE_SPEC_RE.fullmatch(specs[0]) if len(specs) == 1 else None
    if match is None:
        shown = f"{value[:60]!r}..." if isinstance(value, str) and len(value) > 60 else repr(value)
        raise InvalidRangeError(
            f"range {shown} is not one of 'bytes=a-b', 'bytes=a-' or 'bytes=-n' "
            "(multiple ranges are not supported)",
            rule="range.form",
        )
    first, last, suffix = match.groups()
    if suffix is not None:
        n = _position(suffix)
        if n == 0:
            raise InvalidRangeError("suffix range 'bytes=-0' selects nothing", rule="range.empty")
        return None, n
    start = _position(first)
    if not last:
        return start, None
    end = _position(last)
    if end < start:
        raise InvalidRangeError(
            f"range 'bytes={start}-{end}' ends before it starts (ends are inclusive)",
            rule="range.order",
        )
    return start, end
