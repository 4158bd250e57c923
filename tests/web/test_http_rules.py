"""The pure HTTP rules of msd_async.web (RFC 9110 §13, §14), value by value."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pytest

from msd_async.web import (
    Decision,
    Validators,
    evaluate_preconditions,
    format_http_date,
    parse_http_date,
    parse_range,
    resolve_range,
    status_for_error,
)

MODIFIED = dt.datetime(2026, 12, 1, 10, 0, 0, tzinfo=dt.UTC)
CURRENT = Validators("abc", MODIFIED)
NOW = MODIFIED + dt.timedelta(hours=1)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-99", (0, 99)),
        ("bytes=100-", (100, None)),
        ("bytes=-20", (None, 20)),
        ("Bytes=1-2", (1, 2)),
        ("bytes=1-2,", (1, 2)),  # empty list elements are allowed
        ("bytes=-0", "unsatisfiable"),
        ("bytes=5-4", "ignore"),
        ("bytes=0-1,3-4", "ignore"),
        ("bytes=x-1", "ignore"),
        ("bytes=", "ignore"),
        ("pages=1-2", "ignore"),
        ("bytes=1-2-3", "ignore"),
    ],
)
def test_parse_range(header: str | None, expected: object) -> None:
    assert parse_range(header) == expected


@pytest.mark.parametrize(
    ("requested", "size", "expected"),
    [
        ((0, 9), 100, (0, 9)),
        ((90, 200), 100, (90, 99)),
        ((100, None), 100, None),
        ((None, 10), 100, (90, 99)),
        ((None, 500), 100, (0, 99)),
        ((None, 1), 0, None),
        ((0, None), 0, None),
    ],
)
def test_resolve_range(
    requested: tuple[int | None, int | None], size: int, expected: tuple[int, int] | None
) -> None:
    assert resolve_range(requested, size) == expected


def decide(method: str = "GET", current: Validators = CURRENT, **headers: str) -> Decision:
    lower = {k.replace("_", "-").lower(): v for k, v in headers.items()}
    return evaluate_preconditions(method, lower, current, now=NOW)


def date(value: dt.datetime) -> str:
    return format_http_date(value)


def test_no_preconditions_proceed() -> None:
    assert decide() == Decision(None, True)


def test_if_match() -> None:
    assert decide(If_Match='"abc"').status is None
    assert decide(If_Match='"x", "abc"').status is None
    assert decide(If_Match="*").status is None
    assert decide(If_Match='"x"').status == 412
    assert decide(If_Match='W/"abc"').status == 412  # strong comparison
    assert decide("PUT", Validators(None, None, exists=False), If_Match="*").status == 412


def test_if_unmodified_since() -> None:
    assert decide(If_Unmodified_Since=date(MODIFIED)).status is None
    assert decide(If_Unmodified_Since=date(MODIFIED - dt.timedelta(seconds=1))).status == 412
    assert decide(If_Unmodified_Since="not a date").status is None  # ignored
    # ignored when If-Match is present
    assert decide(If_Match='"abc"', If_Unmodified_Since=date(MODIFIED.replace(year=2000))) \
        .status is None


def test_if_none_match() -> None:
    assert decide(If_None_Match='"abc"').status == 304
    assert decide(If_None_Match='W/"abc"').status == 304  # weak comparison
    assert decide("HEAD", If_None_Match="*").status == 304
    assert decide(If_None_Match='"x"').status is None
    assert decide("PUT", If_None_Match="*").status == 412
    assert decide("PUT", Validators(None, None, exists=False), If_None_Match="*").status is None


def test_if_modified_since() -> None:
    assert decide(If_Modified_Since=date(MODIFIED)).status == 304
    assert decide(If_Modified_Since=date(MODIFIED + dt.timedelta(days=1))).status == 304
    assert decide(If_Modified_Since=date(MODIFIED - dt.timedelta(seconds=1))).status is None
    assert decide(If_Modified_Since="garbage").status is None
    # sub-second precision of the stored time does not matter: HTTP dates have none
    precise = Validators("abc", MODIFIED + dt.timedelta(microseconds=500_000))
    assert decide(current=precise, If_Modified_Since=date(MODIFIED)).status == 304
    # ignored with If-None-Match, and for PUT
    assert decide(If_None_Match='"x"', If_Modified_Since=date(MODIFIED)).status is None
    assert decide("PUT", If_Modified_Since=date(MODIFIED)).status is None


def test_if_match_is_checked_before_if_none_match() -> None:
    assert decide(If_Match='"x"', If_None_Match='"abc"').status == 412


def test_if_range() -> None:
    assert decide(Range="bytes=0-1", If_Range='"abc"') == Decision(None, True)
    assert decide(Range="bytes=0-1", If_Range='"old"') == Decision(None, False)
    assert decide(Range="bytes=0-1", If_Range='W/"abc"') == Decision(None, False)
    assert decide(Range="bytes=0-1", If_Range=date(MODIFIED)) == Decision(None, True)
    assert decide(Range="bytes=0-1", If_Range=date(NOW)) == Decision(None, False)
    # a Last-Modified less than a second old is weak: it cannot validate a range
    fresh = evaluate_preconditions(
        "GET", {"range": "bytes=0-1", "if-range": date(MODIFIED)}, CURRENT,
        now=MODIFIED + dt.timedelta(milliseconds=500),
    )
    assert fresh == Decision(None, False)
    assert decide(If_Range='"old"') == Decision(None, True)  # no Range: ignored
    assert decide("HEAD", Range="bytes=0-1", If_Range='"old"') == Decision(None, True)


def test_http_dates() -> None:
    assert format_http_date(MODIFIED) == "Tue, 01 Dec 2026 10:00:00 GMT"
    assert parse_http_date("Tue, 01 Dec 2026 10:00:00 GMT") == MODIFIED
    assert parse_http_date("Tuesday, 01-Dec-26 10:00:00 GMT") == MODIFIED  # RFC 850
    assert parse_http_date("Tue Dec  1 10:00:00 2026") == MODIFIED  # asctime
    assert parse_http_date("yesterday") is None
    assert parse_http_date(None) is None


def test_status_for_errors() -> None:
    import msd_async as m

    assert status_for_error(m.ObjectNotFoundError("x", code="c", status=404)) == 404
    assert status_for_error(m.RangeNotSatisfiableError("x", code="c", status=416)) == 416
    assert status_for_error(m.ServerError("x", code="c", status=500)) == 502
    assert status_for_error(m.ThrottlingError("x", code="c", status=400)) == 503
    assert status_for_error(m.ConnectError("x")) == 502
    assert status_for_error(m.ReadTimeout("x")) == 504
    assert status_for_error(m.DeadlineExceeded("x")) == 504
    assert status_for_error(m.InvalidSignatureError("x", code="c", status=403)) == 502
    assert status_for_error(m.ValidationError("x", code="c", status=400)) == 400


def test_importing_msd_async_web_does_not_import_starlette() -> None:
    code = (
        "import sys, msd_async.web, msd_async.web.aiohttp; "
        "assert 'starlette' not in sys.modules, 'starlette imported'; "
        "import msd_async.web.asgi; assert 'starlette' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.anyio
async def test_a_reply_without_a_stream_gives_its_body_once() -> None:
    from msd_async.web import Reply

    reply = Reply(404, [("Content-Length", "9")], b"Not Found")
    assert not reply.streamed
    assert reply.header("content-length") == "9"
    assert [await reply.receive(), await reply.receive()] == [b"Not Found", b""]
    assert [chunk async for chunk in Reply(200, [], b"x").chunks()] == [b"x"]
    await reply.aclose()
