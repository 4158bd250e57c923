"""The hot path's shortcuts give exactly what the general code gives.

Request building and signing skip work for the common case (a plain path, a valid
``(first, last)`` range, a header value with nothing to fold); these compare each shortcut
with the general rule it stands for, on generated inputs.
"""

from __future__ import annotations

import datetime as dt
from email.utils import parsedate_to_datetime
from typing import Final
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from msd_async import rules
from msd_async.errors import InvalidPathError, InvalidRangeError
from msd_async.protocol import _http_date
from msd_async.signing import canonical_headers, canonical_uri

# Allowed path characters, the ones that must be encoded, dots, slashes, and a few that
# are refused: every branch of the path checks.
PATH_CHARS = st.sampled_from("aZ09._-~=:/%é \t")
paths = st.text(PATH_CHARS, max_size=40) | st.builds(
    lambda n: "/".join(["s"] * n), st.integers(1, 14)
)


def _checked_segment_by_segment(path: str) -> str:
    """normalize_object_path without its shortcut: the checks one by one."""
    stripped = path[1:] if path.startswith("/") else path
    if not stripped:
        raise InvalidPathError("empty", rule="path.empty")
    if len(stripped) > rules.MAX_PATH_LENGTH:
        raise InvalidPathError("long", rule="path.max-length")
    segments = stripped.split("/")
    rules._check_segments(stripped, segments, path)
    if len(segments) - 1 > rules.MAX_FOLDER_DEPTH:
        raise InvalidPathError("deep", rule="path.max-depth")
    return stripped


def _outcome(fn: object, arg: object) -> tuple[str, str]:
    try:
        return ("ok", fn(arg))  # type: ignore[operator]
    except (InvalidPathError, InvalidRangeError) as exc:
        return ("error", exc.rule)


@given(paths)
def test_object_path_shortcut_agrees_with_the_checks(path: str) -> None:
    assert _outcome(rules.normalize_object_path, path) == _outcome(
        _checked_segment_by_segment, path
    )


def test_object_path_length_and_depth_limits_hold_on_the_shortcut() -> None:
    assert rules.normalize_object_path("/".join(["d"] * 11)) == "/".join(["d"] * 11)
    with pytest.raises(InvalidPathError) as info:
        rules.normalize_object_path("/".join(["d"] * 12))
    assert info.value.rule == "path.max-depth"
    with pytest.raises(InvalidPathError) as info:
        rules.normalize_object_path("a" * (rules.MAX_PATH_LENGTH + 1))
    assert info.value.rule == "path.max-length"


@given(st.text(PATH_CHARS, max_size=40))
def test_encode_path_is_quote(path: str) -> None:
    assert rules.encode_path(path) == quote(path, safe="/~")


def _range_the_long_way(value: object) -> tuple[str, str]:
    start, end = value  # type: ignore[misc]
    if end < start:
        return ("error", "range.order")
    return ("ok", f"bytes={start}-{end}")


ints = st.integers(-3, 10**12)


@given(ints, ints)
def test_format_range_shortcut(start: int, end: int) -> None:
    expected = ("error", "range.negative") if start < 0 else _range_the_long_way((start, end))
    assert _outcome(rules.format_range, (start, end)) == expected


def test_format_range_refuses_bools_and_floats_as_before() -> None:
    for bad in ((True, 5), (0, 5.0), (0, True)):
        with pytest.raises(InvalidRangeError):
            rules.format_range(bad)  # type: ignore[arg-type]


@given(st.text(st.sampled_from("/a%~=:é .-_"), max_size=30))
def test_canonical_uri_shortcut_is_quote(path: str) -> None:
    path = "/" + path
    if "//" in path or "/." in path:
        return  # normalised: not the shortcut's case
    assert canonical_uri(path) == quote(path, safe="/~")


# ASCII and Unicode white space str.split() folds, and characters it does not.
values = st.text(
    st.sampled_from("ab= \t\n\x0b\x0c\r\x1c\x1f\x85\xa0\u2000\u2028\u3000é"), max_size=12
)


@given(st.dictionaries(st.sampled_from(["host", "range", "x-amz-date", "x-a"]), values))
def test_canonical_headers_fold_white_space_like_botocore(headers: dict[str, str]) -> None:
    block, signed = canonical_headers(headers)
    names = sorted(headers)
    assert block == "".join(f"{n}:{' '.join(headers[n].split())}\n" for n in names)
    assert signed == ";".join(names)


_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _parsed_by_email_utils(value: str) -> object:
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None


@given(
    st.sampled_from(_WEEKDAYS),
    st.integers(0, 32),
    st.sampled_from(_MONTH_NAMES),
    st.integers(1000, 9999) | st.sampled_from([1970, 2026, 2038]),
    st.integers(0, 25),
    st.integers(0, 61),
    st.integers(0, 61),
)
def test_http_date_shortcut_matches_email_utils(
    weekday: str, day: int, month: str, year: int, hour: int, minute: int, second: int
) -> None:
    value = f"{weekday}, {day:02d} {month} {year} {hour:02d}:{minute:02d}:{second:02d} GMT"
    ours = _http_date(value)
    # A leap second (RFC 9110 allows :60) is read as :59; email.utils refuses it.
    theirs = _parsed_by_email_utils(value.replace(":60 GMT", ":59 GMT"))
    assert ours == theirs
    if ours is not None:
        assert ours.tzinfo == theirs.tzinfo  # type: ignore[union-attr]


_NOV_6: Final = dt.datetime(1994, 11, 6, 8, 49, 37, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Sun, 06 Nov 1994 08:49:37 GMT", _NOV_6),
        ("Sunday, 06-Nov-94 08:49:37 GMT", _NOV_6),  # RFC 850
        ("Sun Nov  6 08:49:37 1994", _NOV_6),  # asctime: no zone, means GMT, aware
        ("Sun, 06 Nov 1994 08:49:37 GMT ", _NOV_6),
        # email.utils moved 0094 to 1994 and took +0100: neither is RFC 9110's
        ("Sun, 06 Nov 0094 08:49:37 GMT", _NOV_6.replace(year=94)),
        ("Sun, 6 Nov 1994 08:49:37 +0100", None),
        ("not a date", None),
    ],
)
def test_http_date_other_forms_are_read_as_rfc_9110_says(
    value: str, expected: dt.datetime | None
) -> None:
    """The forms besides the shortcut's: one parser for the package (msd_async.httpdate),
    never a naive datetime."""
    parsed = _http_date(value)
    assert parsed == expected
    assert parsed is None or parsed.tzinfo is dt.UTC
