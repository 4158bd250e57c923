"""Serving objects through the aiohttp and ASGI helpers: every status, over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import os
import time

import aiohttp
import pytest
from multidict import CIMultiDict
from webapps import App, wait_for

from msd_async import ContainerClient, InvalidParameterError
from msd_async.web import open_object

pytestmark = pytest.mark.anyio

DATA = os.urandom(300_000)
PATH = "vod/clip.mp4"


async def put(app: App, data: bytes = DATA, path: str = PATH, **kwargs: object) -> str:
    result = await app.store.put_object(
        path, data, content_type="video/mp4", cache_control="max-age=60", **kwargs,  # type: ignore[arg-type]
    )
    return result.etag


async def closed(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def fetch(
    http: aiohttp.ClientSession, method: str, url: str, **headers: str
) -> tuple[int, CIMultiDict[str], bytes]:
    hdrs = {k.replace("_", "-"): v for k, v in headers.items()}
    async with http.request(method, url, headers=hdrs, allow_redirects=False) as resp:
        return resp.status, resp.headers.copy(), await resp.read()


async def test_get_whole_object(app: App, http: aiohttp.ClientSession) -> None:
    etag = await put(app)
    status, headers, body = await fetch(http, "GET", app.object_url(PATH))
    assert status == 200
    assert body == DATA
    assert headers["ETag"] == f'"{etag}"'
    assert headers["Content-Type"] == "video/mp4"
    assert headers["Cache-Control"] == "max-age=60"
    assert headers["Accept-Ranges"] == "bytes"
    assert headers["Content-Length"] == str(len(DATA))
    assert email.utils.parsedate_to_datetime(headers["Last-Modified"]).tzinfo is not None
    assert app.session.pool.in_use == 0


async def test_every_answer_forbids_content_sniffing(
    app: App, http: aiohttp.ClientSession
) -> None:
    """Browsers must take the stored Content-Type as it is (never guess HTML in a video):
    ``X-Content-Type-Options: nosniff`` on the object and every other answer."""
    etag = await put(app)
    url = app.object_url(PATH)
    for method, headers in [
        ("GET", {}),
        ("HEAD", {}),
        ("GET", {"Range": "bytes=0-9"}),
        ("GET", {"If-None-Match": f'"{etag}"'}),
        ("GET", {"Range": "bytes=999999999-"}),
    ]:
        status, got, _ = await fetch(http, method, url, **headers)
        assert got.get("X-Content-Type-Options") == "nosniff", (method, headers, status)
    assert (await fetch(http, "GET", app.object_url("vod/none")))[1].get(
        "X-Content-Type-Options") == "nosniff"


async def test_head_has_the_get_headers_and_no_body(
    app: App, http: aiohttp.ClientSession
) -> None:
    etag = await put(app)
    status, headers, body = await fetch(http, "HEAD", app.object_url(PATH), Range="bytes=0-9")
    # Range is defined for GET only: a HEAD describes the whole object.
    assert (status, body) == (200, b"")
    assert headers["Content-Length"] == str(len(DATA))
    assert headers["ETag"] == f'"{etag}"'
    assert headers["Accept-Ranges"] == "bytes"
    assert "Content-Range" not in headers


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [
        ("bytes=0-99", 0, 99),
        ("bytes=1000-", 1000, len(DATA) - 1),
        ("bytes=-500", len(DATA) - 500, len(DATA) - 1),
        ("bytes=299990-999999999", 299_990, len(DATA) - 1),  # clamped to the end
        ("BYTES=5-5", 5, 5),  # range units are case-insensitive
    ],
)
async def test_single_range_is_206(
    app: App, http: aiohttp.ClientSession, header: str, first: int, last: int
) -> None:
    await put(app)
    status, headers, body = await fetch(http, "GET", app.object_url(PATH), Range=header)
    assert status == 206
    assert headers["Content-Range"] == f"bytes {first}-{last}/{len(DATA)}"
    assert headers["Content-Length"] == str(last - first + 1)
    assert body == DATA[first : last + 1]


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "bytes=9-2", "items=0-1", "bytes=a-b"])
async def test_multiple_or_invalid_ranges_are_ignored(
    app: App, http: aiohttp.ClientSession, header: str
) -> None:
    await put(app)
    status, headers, body = await fetch(http, "GET", app.object_url(PATH), Range=header)
    assert (status, body) == (200, DATA)
    assert "Content-Range" not in headers


@pytest.mark.parametrize("header", [f"bytes={len(DATA)}-", "bytes=-0", "bytes=999999-1000000"])
async def test_unsatisfiable_range_is_416(
    app: App, http: aiohttp.ClientSession, header: str
) -> None:
    await put(app)
    status, headers, _ = await fetch(http, "GET", app.object_url(PATH), Range=header)
    assert status == 416
    assert headers["Content-Range"] == f"bytes */{len(DATA)}"
    await wait_for(lambda: app.session.pool.in_use == 0, 5, "the pool to be free")


async def test_if_none_match_and_if_modified_since_give_304(
    app: App, http: aiohttp.ClientSession
) -> None:
    etag = await put(app)
    url = app.object_url(PATH)
    for value in (f'"{etag}"', f'W/"{etag}"', f'"other", "{etag}"', "*"):
        status, headers, body = await fetch(http, "GET", url, If_None_Match=value)
        assert (status, body) == (304, b""), value
        assert headers["ETag"] == f'"{etag}"'
        assert headers["Cache-Control"] == "max-age=60"
    status, _, body = await fetch(http, "GET", url, If_None_Match='"other"')
    assert (status, body) == (200, DATA)
    _, headers, _ = await fetch(http, "HEAD", url)
    modified = headers["Last-Modified"]
    assert (await fetch(http, "GET", url, If_Modified_Since=modified))[0] == 304
    assert (await fetch(http, "HEAD", url, If_Modified_Since=modified))[0] == 304
    earlier = email.utils.formatdate(time.time() - 3600, usegmt=True)
    status, _, body = await fetch(http, "GET", url, If_Modified_Since=earlier)
    assert (status, body) == (200, DATA)
    # If-None-Match wins over If-Modified-Since (RFC 9110 §13.1.3)
    status, _, _ = await fetch(
        http, "GET", url, If_None_Match='"other"', If_Modified_Since=modified
    )
    assert status == 200
    assert app.session.pool.in_use == 0


async def test_if_match_and_if_unmodified_since_give_412(
    app: App, http: aiohttp.ClientSession
) -> None:
    etag = await put(app)
    url = app.object_url(PATH)
    status, _, body = await fetch(http, "GET", url, If_Match='"not-it"')
    assert status == 412
    assert b"clip" not in body
    assert (await fetch(http, "GET", url, If_Match=f'W/"{etag}"'))[0] == 412  # strong only
    status, _, body = await fetch(http, "GET", url, If_Match=f'"{etag}"')
    assert (status, body) == (200, DATA)
    earlier = email.utils.formatdate(time.time() - 3600, usegmt=True)
    assert (await fetch(http, "GET", url, If_Unmodified_Since=earlier))[0] == 412
    later = email.utils.formatdate(time.time() + 3600, usegmt=True)
    status, _, body = await fetch(http, "GET", url, If_Unmodified_Since=later, Range="bytes=0-9")
    assert (status, body) == (206, DATA[:10])


async def test_if_range(app: App, http: aiohttp.ClientSession) -> None:
    etag = await put(app)
    url = app.object_url(PATH)
    status, _, body = await fetch(http, "GET", url, Range="bytes=10-19", If_Range=f'"{etag}"')
    assert (status, body) == (206, DATA[10:20])
    # A stale validator: the client's partial copy is of another version, send it all.
    status, headers, body = await fetch(http, "GET", url, Range="bytes=10-19", If_Range='"old"')
    assert (status, body) == (200, DATA)
    assert "Content-Range" not in headers
    old = email.utils.formatdate(time.time() - 86400, usegmt=True)
    status, _, body = await fetch(http, "GET", url, Range="bytes=10-19", If_Range=old)
    assert (status, body) == (200, DATA)


async def test_missing_object_is_404_without_detail(
    app: App, http: aiohttp.ClientSession
) -> None:
    status, _, body = await fetch(http, "GET", app.object_url("vod/none.mp4"))
    assert (status, body) == (404, b"Not Found")
    assert (await fetch(http, "HEAD", app.object_url("vod/none.mp4")))[0] == 404
    # Preconditions are ignored when the answer would not be 2xx (RFC 9110 §13.2.1)
    assert (await fetch(http, "GET", app.object_url("vod/none.mp4"), If_Match="*"))[0] == 404


async def test_dead_origin_is_502_without_detail(app: App, http: aiohttp.ClientSession) -> None:
    status, _, body = await fetch(http, "GET", app.object_url(PATH, store="dead"))
    assert (status, body) == (502, b"Bad Gateway")
    assert (await fetch(http, "HEAD", app.object_url(PATH, store="dead")))[0] == 502


async def test_failing_origin_is_502(app: App, http: aiohttp.ClientSession) -> None:
    await put(app)
    app.origin.faults.inject("500", times=None, method="GET")
    status, headers, body = await fetch(http, "GET", app.object_url(PATH))
    assert (status, body) == (502, b"Bad Gateway")
    assert "x-amzn-RequestId" not in headers
    app.origin.faults.clear()
    assert app.session.pool.in_use == 0


async def test_throttled_origin_is_503(app: App, http: aiohttp.ClientSession) -> None:
    await put(app)
    app.origin.faults.inject("throttle", times=None, method="GET")
    status, headers, _ = await fetch(http, "GET", app.object_url(PATH))
    assert status == 503
    assert int(headers["Retry-After"]) >= 1


async def test_origin_timeout_is_504(app: App, http: aiohttp.ClientSession) -> None:
    from webapps import SLOW_READ_TIMEOUT

    await put(app)
    app.origin.faults.inject("delay", method="GET", delay=SLOW_READ_TIMEOUT * 6)
    status, _, body = await fetch(http, "GET", app.object_url(PATH, store="slow"))
    assert (status, body) == (504, b"Gateway Timeout")


async def test_redirect_mode(app: App, http: aiohttp.ClientSession) -> None:
    await put(app)
    status, headers, _ = await fetch(http, "GET", app.object_url(PATH) + "?redirect=1")
    assert status == 302
    location = headers["Location"]
    assert location.startswith(app.origin.endpoint + "/" + PATH + "?")
    assert "X-Amz-Signature=" in location
    async with http.get(location) as resp:  # the presigned URL works without our app
        assert resp.status == 200
        assert await resp.read() == DATA


async def test_client_disconnect_mid_body_releases_upstream(app: App) -> None:
    big = os.urandom(8_000_000)
    await put(app, big, path="vod/big.mp4")
    reader, writer = await asyncio.open_connection("127.0.0.1", int(app.url.rsplit(":", 1)[1]))
    writer.write(b"GET /ok/vod/big.mp4 HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    assert (await reader.readline()).startswith(b"HTTP/1.1 200")
    await reader.readexactly(64 * 1024)
    # Stalled client: the proxy stops reading the origin (back-pressure) with the upstream
    # connection held...
    await wait_for(lambda: app.session.pool.in_use == 1, 10, "the upstream GET")
    writer.transport.abort()  # ...and gives it back when the client goes away.
    await wait_for(lambda: app.session.pool.in_use == 0, 10, "the upstream connection")
    await closed(writer)


async def test_client_disconnect_from_a_growing_object_releases_upstream(app: App) -> None:
    """A STREAMING object still uploading: the body pauses, and the client leaves during
    the pause (no write fails to tell the app)."""
    more = asyncio.Event()

    async def encoder():  # type: ignore[no-untyped-def]
        yield b"x" * 10_000
        await more.wait()
        yield b"y" * 10_000

    upload = asyncio.ensure_future(put(app, encoder(), path="live/seg.m4s", streaming=True))
    await wait_for(lambda: app.origin.store.in_progress("live/seg.m4s") is not None, 10, "upload")
    reader, writer = await asyncio.open_connection("127.0.0.1", int(app.url.rsplit(":", 1)[1]))
    writer.write(b"GET /ok/live/seg.m4s HTTP/1.1\r\nHost: x\r\nRange: bytes=0-99\r\n\r\n")
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    # The origin ignores Range on a growing object: a correct 200, never a wrong 206.
    assert head.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding: chunked" in head.lower()
    assert b"accept-ranges: none" in head.lower()
    await wait_for(lambda: app.session.pool.in_use == 2, 10, "the upstream GET and PUT")
    writer.transport.abort()
    await wait_for(lambda: app.session.pool.in_use == 1, 10, "the upstream GET to go")
    await closed(writer)
    more.set()
    await upload


async def test_range_on_a_growing_object_is_answered_200(
    app: App, http: aiohttp.ClientSession
) -> None:
    more = asyncio.Event()

    async def encoder():  # type: ignore[no-untyped-def]
        yield b"a" * 1000
        await more.wait()
        yield b"b" * 1000

    upload = asyncio.ensure_future(put(app, encoder(), path="live/s2.m4s", streaming=True))
    await wait_for(lambda: app.origin.store.in_progress("live/s2.m4s") is not None, 10, "upload")
    async with http.get(app.object_url("live/s2.m4s"), headers={"Range": "bytes=0-9"}) as resp:
        assert resp.status == 200
        assert "Content-Range" not in resp.headers
        first = await resp.content.readexactly(1000)
        more.set()
        rest = await resp.read()
    assert first + rest == b"a" * 1000 + b"b" * 1000
    await upload


async def test_origin_cut_mid_body_cuts_the_response(
    app: App, http: aiohttp.ClientSession
) -> None:
    """Headers are out when the origin fails: the client must see an incomplete body,
    never a short one that looks whole."""
    await put(app)
    # Every GET is cut after 10 kB: the client's resumes (3 by default) cannot finish it.
    app.origin.faults.inject("cut-download", method="GET", after_bytes=10_000, times=None)
    received = b""
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.get(app.object_url(PATH)) as resp:
            assert resp.status == 200
            async for chunk in resp.content.iter_any():
                received += chunk
    assert 0 < len(received) < len(DATA)
    assert DATA.startswith(received)
    app.origin.faults.clear()
    await wait_for(lambda: app.session.pool.in_use == 0, 10, "the upstream connection")


async def test_a_bad_argument_of_the_caller_raises_rather_than_answering_502(
    mediastore_client: ContainerClient,
) -> None:
    with pytest.raises(InvalidParameterError):
        await open_object(mediastore_client, PATH, redirect=True, expires_in=8 * 86400)
    # The package's typed error (still a ValueError), as for every other bad argument.
    with pytest.raises(InvalidParameterError, match="GET and HEAD"):
        await open_object(mediastore_client, PATH, method="DELETE")
    reply = await open_object(mediastore_client, "bad name.mp4")
    assert reply.status == 404


@pytest.mark.parametrize("expires_in", [8 * 86400, 0, "3600", 60.0, True])
async def test_a_bad_expires_in_is_refused_without_redirect_too(
    mediastore_client: ContainerClient, expires_in: object
) -> None:
    """It was checked only when ``redirect=True``: the same call site served the object
    with redirect=False and raised once a configuration switched redirects on."""
    with pytest.raises(InvalidParameterError, match="expires_in"):
        await open_object(mediastore_client, PATH, expires_in=expires_in)  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match="expires_in"):
        await open_object(
            mediastore_client, PATH, method="HEAD", expires_in=expires_in  # type: ignore[arg-type]
        )


@pytest.mark.parametrize("write_timeout", [0, -1, float("nan"), "5", True])
async def test_a_write_timeout_that_is_not_a_positive_number_is_refused_before_the_origin(
    mediastore_client: ContainerClient, write_timeout: object
) -> None:
    # It was taken as it came: "5" raised a TypeError once the headers were out, NaN
    # meant no limit and 0 cut any client whose socket filled once.
    reply = None
    with pytest.raises(InvalidParameterError, match="write_timeout"):
        reply = await open_object(
            mediastore_client, PATH, write_timeout=write_timeout  # type: ignore[arg-type]
        )
    assert reply is None
