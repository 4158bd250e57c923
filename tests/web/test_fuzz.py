"""Fuzz of the web helpers through both adapters: arbitrary Range, If-* and date values and
arbitrary paths, sent as raw bytes over a socket to the aiohttp and the FastAPI/uvicorn app
(the local server behind them). Every answer must be a well-formed HTTP/1.1 response (h11
parses it strictly) and never a 5xx; when it carries the object, the bytes are right.

Bounded in CI (a fixed number of derandomized examples per adapter); ``MSD_LONG_TESTS=1``
runs many more.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from urllib.parse import quote

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from webapps import App

pytestmark = pytest.mark.anyio

LONG = os.environ.get("MSD_LONG_TESTS") == "1"
DATA = os.urandom(5_000)
PATH = "fuzz/clip.mp4"
ETAG, LAST_MODIFIED = "<ETAG>", "<LAST-MODIFIED>"  # replaced with the object's own

# --- strategies ------------------------------------------------------------------------------

_DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun", "Sunday", "Xyz", ""]
_MONTHS = ["Jan", "Feb", "Nov", "Dec", "jan", "Foo", ""]
_ZONES = ["GMT", "UTC", "+0000", "-2359", "+9999", "", "GMT GMT"]
numbers = st.one_of(
    st.integers(0, 99).map(str),
    st.integers(0, 100_000).map(str),
    st.sampled_from([9999, 10000, 2**31, 2**63, 2**64 - 1, 2**64, 10**40]).map(str),
    st.integers(1, 4).map(lambda n: "9" * (n * 1000)),  # up to 4,000 digits
)
dates = st.one_of(
    st.builds(
        "{}, {} {} {} {}:{}:{} {}".format,
        st.sampled_from(_DAYS), numbers, st.sampled_from(_MONTHS), numbers, numbers, numbers,
        numbers, st.sampled_from(_ZONES),
    ),
    st.builds(  # RFC 850
        "{}, {}-{}-{} {}:{}:{} {}".format,
        st.sampled_from(_DAYS), numbers, st.sampled_from(_MONTHS), numbers, numbers, numbers,
        numbers, st.sampled_from(_ZONES),
    ),
    st.builds(  # asctime
        "{} {} {:>2} {}:{}:{} {}".format,
        st.sampled_from(_DAYS), st.sampled_from(_MONTHS), numbers, numbers, numbers, numbers,
        numbers,
    ),
    st.just(LAST_MODIFIED),
)
range_specs = st.one_of(
    st.builds("{}-{}".format, numbers, numbers | st.just("")),
    st.builds("-{}".format, numbers),
    st.text(st.sampled_from("0123456789-, "), max_size=12),
)
ranges = st.one_of(
    st.builds(
        "{}{}={}".format,
        st.sampled_from(["bytes", "BYTES", "Bytes", "items", " bytes", ""]),
        st.sampled_from(["", " "]),
        st.lists(range_specs, min_size=0, max_size=3).map(",".join),
    ),
)
etags = st.one_of(
    st.just(f'"{ETAG}"'),
    st.just(f'W/"{ETAG}"'),
    st.just("*"),
    st.lists(st.sampled_from([f'"{ETAG}"', '"x"', 'W/"x"', "*", '"', "W/", ""]), max_size=4)
    .map(", ".join),
)
# Any byte a header value may carry on the wire (RFC 9110 §5.5: VCHAR, obs-text, SP, HTAB
# inside); servers are free to refuse some with a 400, never with a 5xx.
raw_values = st.binary(max_size=60).map(
    lambda b: bytes(c for c in b if c in (9, 32) or 0x21 <= c <= 0x7E or c >= 0x80).strip()
)


def _value(strategy: st.SearchStrategy[str]) -> st.SearchStrategy[bytes]:
    return strategy.map(lambda s: s.encode("latin-1", "replace")) | raw_values


header_values = {
    b"Range": _value(ranges),
    b"If-Match": _value(etags),
    b"If-None-Match": _value(etags),
    b"If-Modified-Since": _value(dates),
    b"If-Unmodified-Since": _value(dates),
    b"If-Range": _value(dates | etags),
}
headers = st.fixed_dictionaries({}, optional=header_values)  # type: ignore[arg-type]
# Paths: the object's, names MediaStore refuses, and arbitrary text percent-encoded.
paths = st.one_of(
    st.just(PATH),
    st.sampled_from(["fuzz//clip.mp4", "fuzz/../clip.mp4", "fuzz/./x", "a%2Fb", "%00", "x" * 950,
                     "/".join("d" * 12), "fuzz/clip.mp4/", "é", "a b", "%ZZ"]),
    st.text(max_size=30).map(lambda s: quote(s, safe="")),
    st.text(st.sampled_from("ab./%:=~_-"), min_size=1, max_size=20),
)

upload_header_values = {
    b"If-Match": _value(etags),
    b"If-None-Match": _value(etags),
    b"If-Unmodified-Since": _value(dates),
    b"Content-Type": _value(st.sampled_from(
        ["video/mp4", "text/html; charset=utf-8", "VIDEO/WEBM", "a/b/c", ";", "", "*/*"])),
}
upload_headers = st.fixed_dictionaries({}, optional=upload_header_values)  # type: ignore[arg-type]

# --- one request, checked ----------------------------------------------------------------------


async def exchange(
    app: App, method: str, target: str, fields: dict[bytes, bytes], body: bytes = b""
) -> bytes:
    port = int(app.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = b"%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" % (
            method.encode(), target.encode("latin-1", "replace"))
        if method == "PUT":
            head += b"Content-Length: %d\r\n" % len(body)
        head += b"".join(b"%s: %s\r\n" % item for item in fields.items())
        writer.write(head + b"\r\n" + body)
        return await asyncio.wait_for(reader.read(), 60)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def parse(method: str, raw: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    """The response, as strictly as h11 reads one; fails if it is not well-formed."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(raw)
    conn.receive_data(b"")
    response, body, ended = None, b"", False
    while not ended:
        event = conn.next_event()
        if isinstance(event, h11.Response):
            response = event
        elif isinstance(event, h11.Data):
            body += bytes(event.data)
        elif isinstance(event, h11.EndOfMessage):
            ended = True
        else:
            raise AssertionError(f"incomplete response ({event!r}): {raw[:300]!r}")
    assert response is not None
    return response.status_code, {k.lower(): v for k, v in response.headers}, body


def check(status: int, fields: dict[bytes, bytes], body: bytes, method: str,
          named: bool) -> None:
    assert status < 500, (status, body[:200])
    if named:  # the path names the object (and the server took the request): the rules
        assert status in (200, 206, 304, 412, 416), (status, body[:200])
    if method == "HEAD" or status in (304, 412):
        assert body == b"" or (method == "GET" and status == 412)
        return
    if status == 200 and named:
        assert body == DATA
    elif status == 206:
        match = re.fullmatch(rb"bytes (\d+)-(\d+)/(\d+)", fields[b"content-range"])
        assert match is not None, fields[b"content-range"]
        first, last, size = map(int, match.groups())
        assert size == len(DATA) and first <= last < size
        assert body == DATA[first : last + 1]
    elif status == 416:
        assert fields[b"content-range"] == b"bytes */%d" % len(DATA)


@pytest.fixture
async def stored(app: App) -> App:
    await app.store.put_object(PATH, DATA, content_type="video/mp4")
    return app


@settings(
    max_examples=2000 if LONG else 60,
    derandomize=not LONG,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(method=st.sampled_from(["GET", "GET", "HEAD"]), fields=headers, path=paths)
async def test_any_header_or_path_gets_a_well_formed_answer_and_never_a_5xx(
    stored: App, method: str, fields: dict[bytes, bytes], path: str
) -> None:
    app = stored
    info = await app.store.describe_object(PATH)
    assert info.last_modified is not None and info.etag is not None
    modified = info.last_modified.strftime("%a, %d %b %Y %H:%M:%S GMT").encode()
    real = {
        name: value.replace(ETAG.encode(), info.etag.encode()).replace(
            LAST_MODIFIED.encode(), modified)
        for name, value in fields.items()
    }
    raw = await exchange(app, method, f"/ok/{path}", real)
    status, answer, body = parse(method, raw)
    # aiohttp refuses a header line over 8,190 bytes itself (400), before any handler.
    taken = all(len(value) < 8000 for value in real.values())
    check(status, answer, body, method, named=path == PATH and taken)
    assert app.session.pool.in_use == 0


@settings(
    max_examples=1000 if LONG else 30,
    derandomize=not LONG,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(fields=upload_headers, path=paths)
async def test_any_upload_header_or_path_gets_a_well_formed_answer_and_never_a_5xx(
    stored: App, fields: dict[bytes, bytes], path: str
) -> None:
    app = stored
    info = await app.store.describe_object(PATH)
    assert info.last_modified is not None and info.etag is not None
    modified = info.last_modified.strftime("%a, %d %b %Y %H:%M:%S GMT").encode()
    real = {
        name: value.replace(ETAG.encode(), info.etag.encode()).replace(
            LAST_MODIFIED.encode(), modified)
        for name, value in fields.items()
    }
    raw = await exchange(app, "PUT", f"/ok/{path}", real, DATA)
    status, _, body = parse("PUT", raw)
    assert status < 500, (status, body[:200])
    if path == PATH and all(len(value) < 8000 for value in real.values()):
        assert status in (200, 412), (status, body[:200])
        # The name decides the type, whatever the uploader said (the app allows nothing).
        assert (await app.store.describe_object(PATH)).content_type == "video/mp4"
    assert app.session.pool.in_use == 0
