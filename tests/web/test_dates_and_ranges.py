"""One HTTP-date parser and one range parser for the whole package (client, retry policy,
local server, web helpers): whatever the peer sends, they answer a value, ``None`` or the
package's typed error, never a bare ``OverflowError``/``ValueError``/``TypeError``."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable

import aiohttp
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from test_scripted_origin import Answer, object_headers, proxy

from msd_async import InvalidRangeError
from msd_async.protocol import parse_error, parse_object_info
from msd_async.retry import parse_retry_after
from msd_async.rules import format_range, parse_range_header
from msd_async.web import parse_http_date, parse_range

UTC = dt.UTC
NOVEMBER_6 = dt.datetime(1994, 11, 6, 8, 49, 37, tzinfo=UTC)

# The two troubles of the issue: a year past 9999 and an offset that carries a date there
# or before year 1; asctime has no zone at all.
_AWKWARD_DATES = [
    "Fri, 31 Dec 9999 23:59:59 GMT",
    "Sat, 01 Jan 10000 00:00:00 GMT",
    "Fri, 31 Dec 9999 23:59:59 -2359",
    "Mon, 01 Jan 0001 00:00:00 +2359",
    "Sun Nov  6 08:49:37 1994",
    "Sun Nov  6 08:49:37 99999",
    "Sunday, 06-Nov-94 08:49:37 GMT",
    "Sun, 06 Nov 1994 08:49:60 GMT",
    "Sun, 06 Nov 1994 24:00:00 GMT",
    "Sun, 31 Feb 1994 08:49:37 GMT",
    "Sun, 06 Nov 1994 08:49:37 GMT" + "0" * 5000,
    "9" * 5000,
    "",
    " ",
    "\x00",
]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Sun, 06 Nov 1994 08:49:37 GMT", NOVEMBER_6),  # IMF-fixdate
        ("Sunday, 06-Nov-94 08:49:37 GMT", NOVEMBER_6),  # RFC 850
        ("Sun Nov  6 08:49:37 1994", NOVEMBER_6),  # asctime: no zone, and it is GMT
        ("Sun, 06 Nov 1994 08:49:60 GMT", NOVEMBER_6.replace(second=59)),  # leap second
        ("Fri, 31 Dec 9999 23:59:59 GMT", dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)),
        ("Sat, 01 Jan 10000 00:00:00 GMT", None),
        ("Fri, 31 Dec 9999 23:59:59 -2359", None),  # not an HTTP date (and past 9999 in UTC)
        ("Sun, 31 Feb 1994 08:49:37 GMT", None),
        ("Sun Nov  6 08:49:37 99999", None),
        ("yesterday", None),
    ],
)
def test_http_dates_are_utc_or_none(value: str, expected: dt.datetime | None) -> None:
    parsed = parse_http_date(value)
    assert parsed == expected
    if parsed is not None:
        assert parsed.tzinfo is UTC


def test_an_rfc_850_year_more_than_50_years_ahead_is_in_the_past() -> None:
    """RFC 9110 §5.6.7: a two-digit year that looks more than 50 years in the future
    is the most recent past year with those digits."""
    this_year = dt.datetime.now(UTC).year
    ahead = (this_year + 60) % 100
    parsed = parse_http_date(f"Sunday, 06-Nov-{ahead:02d} 08:49:37 GMT")
    assert parsed is not None
    assert this_year - 100 < parsed.year <= this_year


@pytest.mark.parametrize("value", _AWKWARD_DATES)
def test_every_date_reader_of_the_package_agrees(value: str) -> None:
    """The client's Last-Modified, the retry policy's Retry-After and the web helpers read
    dates with the same parser."""
    parsed = parse_http_date(value)
    assert parse_object_info({"Last-Modified": value}).last_modified == parsed
    wait = parse_retry_after(value, now=0.0)
    if value.strip().isdigit():
        assert wait is not None and math.isfinite(wait)
    elif parsed is None:
        assert wait is None
    else:
        assert wait == max(0.0, parsed.timestamp())


def test_an_enormous_retry_after_is_a_finite_wait() -> None:
    wait = parse_retry_after("9" * 5000)
    assert wait is not None and math.isfinite(wait)
    exc = parse_error(503, {"Retry-After": "9" * 5000}, b"", object_operation=True)
    assert exc.retry_after is not None and math.isfinite(exc.retry_after)


@given(st.text())
@example("Fri, 31 Dec 9999 23:59:59 -2359")
@settings(max_examples=300, derandomize=True)
def test_date_readers_never_raise(value: str) -> None:
    parsed = parse_http_date(value)
    assert parsed is None or parsed.tzinfo is UTC
    wait = parse_retry_after(value, now=0.0)
    assert wait is None or (math.isfinite(wait) and wait >= 0)
    assert parse_object_info({"Last-Modified": value}).last_modified == parsed


_ODD_FIELD = st.text(alphabet="0123456789 :-+.T\u0660\u0966\uff10", min_size=1, max_size=4)


def _fixdate_field(top: int, width: int = 2) -> st.SearchStrategy[str]:
    """Mostly a number in or just past its range, sometimes anything digit-like."""
    return st.integers(0, top).map(lambda n: f"{n:0{width}d}") | _ODD_FIELD


@given(
    day=st.sampled_from(["Sun", "Mon", "Sat", "Xyz"]),
    date=st.tuples(_fixdate_field(32), _fixdate_field(10000, 4)),
    month=st.sampled_from(["Jan", "Feb", "Nov", "Dec", "nov", "Foo"]),
    time=st.tuples(_fixdate_field(25), _fixdate_field(61), _fixdate_field(61)),
    zone=st.sampled_from([" GMT", " GMT", " UTC", "GMT ", " GMT "]),
)
@example(day="Sun", date=("06", "1994"), month="Nov", time=("24", "00", "00"), zone=" GMT")
@example(
    day="Sun", date=("\u0660\u0666", "1994"), month="Nov", time=("08", "49", "37"), zone=" GMT"
)
@example(day="Sun", date=("29", "1900"), month="Feb", time=("08", "49", "60"), zone=" GMT")
@settings(max_examples=500, derandomize=True)
def test_the_fast_imf_fixdate_path_agrees_with_the_regular_expressions(
    day: str,
    date: tuple[str, str],
    month: str,
    time: tuple[str, str, str],
    zone: str,
) -> None:
    """Nearly-IMF-fixdates (fields of ASCII and other digits, separators in the wrong
    place, impossible dates, hour 24, leap seconds) read the same through the positional
    fast path as through the form-by-form regular expressions it shortcuts."""
    from msd_async.httpdate import _parse_by_form

    value = f"{day}, {date[0]} {month} {date[1]} {time[0]}:{time[1]}:{time[2]}{zone}"
    assert parse_http_date(value) == _parse_by_form(value)


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ("bytes=0-" + "9" * 4000, "range.too-large"),
        ("bytes=" + "9" * 5000 + "-", "range.too-large"),
        ("bytes=-" + "9" * 5000, "range.too-large"),
        ("bytes=0-18446744073709551616", "range.too-large"),
        ("bytes=1-2,3-4", "range.form"),
        ("bytes=5-4", "range.order"),
        ("bytes=-0", "range.empty"),
    ],
)
def test_a_range_the_package_cannot_use_is_an_invalid_range_error(value: str, rule: str) -> None:
    with pytest.raises(InvalidRangeError) as caught:
        parse_range_header(value)
    assert caught.value.rule == rule
    with pytest.raises(InvalidRangeError):
        format_range(value)


def test_the_web_helpers_read_ranges_with_the_same_parser() -> None:
    assert parse_range_header("bytes=0-" + "0" * 4000 + "7") == (0, 7)  # zeros are not size
    assert parse_range_header("bytes=0-18446744073709551615") == (0, 2**64 - 1)
    assert parse_range_header(" Bytes=1-2, ") == (1, 2)  # RFC 9110: case, empty elements
    assert parse_range("bytes=0-" + "9" * 4000) == "ignore"  # RFC 9110 §14.2: may ignore
    assert parse_range(" Bytes=1-2, ") == (1, 2)
    assert parse_range("bytes=-0") == "unsatisfiable"


@given(st.text() | st.from_regex(r"\s*bytes\s*=\s*[-0-9, ]{0,60}\s*", fullmatch=True))
@settings(max_examples=300, derandomize=True)
def test_range_readers_raise_only_invalid_range_error(value: str) -> None:
    try:
        first, last = parse_range_header(value)
    except InvalidRangeError:
        assert parse_range(value) in ("ignore", "unsatisfiable")
    else:
        assert parse_range(value) == (first, last)
        assert parse_range_header(format_range(value)) == (first, last)


# --- through the web helpers ---------------------------------------------------------------


@pytest.fixture(params=["aiohttp", "asgi"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "last_modified", ["Sun Nov  6 08:49:37 1994", "Fri, 31 Dec 9999 23:59:59 -2359"]
)
async def test_an_origin_with_odd_dates_is_still_served(kind: str, last_modified: str) -> None:
    """An origin (or a proxy in front of it) that sends an asctime Last-Modified (no zone),
    or one past year 9999 once in UTC: the web app still answers (today: 500s from a
    naive/aware comparison and an OverflowError)."""

    def origin(method: str, headers: dict[str, str]) -> Answer:
        return 200, {**object_headers("a"), "Last-Modified": last_modified}, b"data"

    async with proxy(kind, origin) as (url, _), aiohttp.ClientSession() as http:
        for since in ("Sun, 06 Nov 1994 08:49:37 GMT", "Sun Nov  6 08:49:37 1994", None):
            headers = {"If-Modified-Since": since} if since else {}
            async with http.get(f"{url}/ok/a.mp4", headers=headers) as resp:
                assert resp.status in (200, 304), (since, resp.status)
        async with http.get(f"{url}/ok/a.mp4", headers={"Range": "bytes=0-" + "9" * 4000}) as resp:
            assert resp.status == 200
            assert await resp.read() == b"data"


def _range_answer(parse: Callable[[str], object], value: str) -> object:
    try:
        return parse(value)
    except InvalidRangeError as exc:
        return ("error", exc.rule)


_RANGE_NUMBER = (
    st.integers(0, 2**64 + 10).map(str)
    | st.text(alphabet="0123456789\u0660\uff11 +_", min_size=0, max_size=22)
)


@given(
    unit=st.sampled_from(["bytes=", "bytes=", "Bytes=", "bytes= ", "byte="]),
    first=_RANGE_NUMBER,
    separator=st.sampled_from(["-", "-", "--", "", ","]),
    last=_RANGE_NUMBER,
)
@example(unit="bytes=", first="5", separator="-", last="4")
@example(unit="bytes=", first="0" * 25 + "7", separator="-", last="9")
@example(unit="bytes=", first="1844674407370955161", separator="-", last="18446744073709551616")
@settings(max_examples=500, derandomize=True)
def test_the_fast_range_path_agrees_with_the_grammar(
    unit: str, first: str, separator: str, last: str
) -> None:
    """Values near the normalized 'bytes=a-b' (other digits, signs, leading zeros, numbers
    around 2**64, an end before the start) get the same answer, value or error rule, from
    the positional fast path as from RFC 9110's grammar."""
    from msd_async.rules import _parse_range_by_grammar

    value = f"{unit}{first}{separator}{last}"
    assert _range_answer(parse_range_header, value) == _range_answer(
        _parse_range_by_grammar, value
    )
