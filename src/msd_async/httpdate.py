"""HTTP dates (RFC 9110 §5.6.7): the one parser and the one formatter of the package.

The client's ``Last-Modified``, the retry policy's ``Retry-After`` and the web helpers'
conditional requests all read dates here, so a peer's odd date gets the same answer
everywhere: an aware UTC ``datetime``, or ``None`` (never an exception).
"""

from __future__ import annotations

import datetime as _dt
import re
from email.utils import format_datetime
from typing import Final

__all__ = ["format_http_date", "parse_http_date"]

_DAYS: Final = "(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_LONG_DAYS: Final = "(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"
_MONTH: Final = "(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_TIME: Final = r"(\d\d):(\d\d):(\d\d)"
# The three forms a recipient must accept; "GMT" is the only zone they have. Years are
# 4 digits in the first and last form (so never past 9999), 2 in RFC 850's.
_IMF_FIXDATE: Final = re.compile(
    rf"{_DAYS}, (\d\d) {_MONTH} (\d{{4}}) {_TIME} GMT", re.ASCII
).fullmatch
_RFC850: Final = re.compile(
    rf"{_LONG_DAYS}, (\d\d)-{_MONTH}-(\d\d) {_TIME} GMT", re.ASCII
).fullmatch
_ASCTIME: Final = re.compile(rf"{_DAYS} {_MONTH} ([ \d]\d) {_TIME} (\d{{4}})", re.ASCII).fullmatch
_MONTHS: Final = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
        start=1,
    )
}


def _datetime(
    year: int, month: str, day: str, hour: str, minute: str, second: str
) -> _dt.datetime | None:
    try:
        return _dt.datetime(
            year,
            _MONTHS[month],
            int(day),
            int(hour),
            int(minute),
            # A leap second (RFC 9110 allows 60) is the second before: datetime has no 60.
            59 if second == "60" else int(second),
            tzinfo=_dt.UTC,
        )
    except ValueError:  # 31 Feb, hour 24, year 0
        return None


_DAY_NAMES: Final = frozenset(("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"))
_MONTH_DIGITS: Final = {name: f"{number:02d}" for name, number in _MONTHS.items()}
_from_iso: Final = _dt.datetime.fromisoformat


def _imf_fixdate_fast(value: str) -> _dt.datetime | None:
    """The IMF-fixdate every server sends, by position: the fixed characters checked here,
    the digits by ``datetime.fromisoformat`` (C, ASCII digits only, real dates only). Half
    the regex path's cost, and this runs for every DescribeObject and GetObject answer.
    ``None`` for anything else (a leap second, 31 Feb, another form): the regex path then
    decides."""
    if (
        len(value) == 29
        and value[25:] == " GMT"
        and value[3:5] == ", "
        and value[7] == value[11] == value[16] == " "
        and value[19] == value[22] == ":"
        and value[17:19] <= "23"  # newer Pythons read hour 24 as the next day's midnight
        and value[:3] in _DAY_NAMES
    ):
        month = _MONTH_DIGITS.get(value[8:11])
        if month is not None:
            try:
                return _from_iso(f"{value[12:16]}-{month}-{value[5:7]}T{value[17:25]}+00:00")
            except ValueError:
                pass
    return None


def parse_http_date(value: str | None) -> _dt.datetime | None:
    """An HTTP date in any of the three forms RFC 9110 §5.6.7 requires recipients to
    accept (IMF-fixdate ``Sun, 06 Nov 1994 08:49:37 GMT``, RFC 850
    ``Sunday, 06-Nov-94 08:49:37 GMT``, asctime ``Sun Nov  6 08:49:37 1994``), as an
    aware UTC ``datetime``; ``None`` for a missing or invalid one. Never raises.

    All three are GMT (asctime says nothing and means GMT); other zones, years past 9999
    and impossible dates are invalid. A two-digit RFC 850 year that would be more than 50
    years ahead is the last such year in the past (§5.6.7). A leap second reads as :59.
    """
    if not value:
        return None
    fast = _imf_fixdate_fast(value)
    if fast is not None:
        return fast
    return _parse_by_form(value)


def _parse_by_form(value: str) -> _dt.datetime | None:
    """:func:`parse_http_date` by regular expression, form by form: the reference the
    fast path must agree with (tests/web/test_dates_and_ranges.py)."""
    value = value.strip(" \t")
    match = _IMF_FIXDATE(value)  # the form servers send: one regex, ~1 us
    if match is not None:
        day, month, year, hour, minute, second = match.groups()
        return _datetime(int(year), month, day, hour, minute, second)
    match = _RFC850(value)
    if match is not None:
        day, month, short_year, hour, minute, second = match.groups()
        this_year = _dt.datetime.now(_dt.UTC).year
        year = this_year - this_year % 100 + int(short_year)
        if year > this_year + 50:
            year -= 100
        return _datetime(year, month, day, hour, minute, second)
    match = _ASCTIME(value)
    if match is not None:
        month, day, hour, minute, second, year = match.groups()
        return _datetime(int(year), month, day.strip(), hour, minute, second)
    return None


def format_http_date(value: _dt.datetime) -> str:
    """IMF-fixdate (RFC 9110 §5.6.7), e.g. ``Sun, 06 Nov 1994 08:49:37 GMT``. A naive
    ``value`` is taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=_dt.UTC)
    return format_datetime(value.astimezone(_dt.UTC), usegmt=True)
