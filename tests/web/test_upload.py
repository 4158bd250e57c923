"""Uploads through the aiohttp and ASGI helpers: streamed into put_object, limits, aborts."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import shutil
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import aiohttp
import anyio
import pytest
from webapps import FAST_RETRY, App, running_app, wait_for

from msd_async import ObjectNotFoundError, Session, content_type_for
from msd_async.testing import LocalMediaStore

pytestmark = pytest.mark.anyio

CURL = shutil.which("curl") or "curl"


async def stored(app: App, path: str) -> bytes | None:
    try:
        return await app.store.get_bytes(path)
    except ObjectNotFoundError:
        return None


async def raw_put(
    app: App,
    target: str,
    chunks: Iterable[bytes],
    *,
    content_length: int | None,
    headers: str = "",
) -> bytes:
    """Send a PUT over a raw socket, writing the body while reading the answer (a server may
    answer early and stop reading); returns the status line."""
    port = int(app.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    framing = (
        f"Content-Length: {content_length}" if content_length is not None
        else "Transfer-Encoding: chunked"
    )
    writer.write(f"PUT {target} HTTP/1.1\r\nHost: x\r\n{framing}\r\n{headers}\r\n".encode())

    async def send() -> None:
        with contextlib.suppress(ConnectionError):
            for chunk in chunks:
                if content_length is None:
                    writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                else:
                    writer.write(chunk)
                await writer.drain()
            if content_length is None:
                writer.write(b"0\r\n\r\n")
                await writer.drain()

    sender = asyncio.ensure_future(send())
    try:
        status = await asyncio.wait_for(reader.readline(), 60)
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return status


async def test_upload_creates_then_replaces(app: App, http: aiohttp.ClientSession) -> None:
    data = os.urandom(2_000_000)
    url = app.object_url("up/a.mp4")
    headers = {"Content-Type": "video/mp4; codecs=avc1"}
    async with http.put(url, data=io.BytesIO(data), headers=headers) as resp:
        assert resp.status == 201
        answer = json.loads(await resp.read())
        etag = resp.headers["ETag"]
    assert answer["size"] == len(data)
    assert etag == f'"{answer["etag"]}"'
    info = await app.store.describe_object("up/a.mp4")
    assert info.etag == answer["etag"]
    assert info.content_type == "video/mp4"  # parameters dropped: MediaStore refuses them
    assert await stored(app, "up/a.mp4") == data
    async with http.put(url, data=b"second") as resp:
        assert resp.status == 200
    assert await stored(app, "up/a.mp4") == b"second"
    assert app.session.pool.in_use == 0


async def test_streaming_upload_of_a_chunked_body(app: App, http: aiohttp.ClientSession) -> None:
    parts = [os.urandom(100_000) for _ in range(20)]

    async def body() -> AsyncIterator[bytes]:
        for part in parts:
            yield part
            await asyncio.sleep(0)

    async with http.put(app.object_url("live/seg.m4s") + "?streaming=1", data=body()) as resp:
        assert resp.status == 201, await resp.text()
    assert await stored(app, "live/seg.m4s") == b"".join(parts)
    info = await app.store.describe_object("live/seg.m4s")
    # aiohttp labels a generator body application/octet-stream: the extension tells more.
    assert info.content_type == content_type_for("live/seg.m4s") == "video/iso.segment"


async def test_streaming_upload_over_the_limit_with_content_length_is_413(app: App) -> None:
    """10,000,001 bytes with Content-Length: answered before the body is read."""
    status = await raw_put(
        app, "/ok/live/big.m4s?streaming=1", [], content_length=10_000_001
    )
    assert status.startswith(b"HTTP/1.1 413")
    assert await stored(app, "live/big.m4s") is None


async def test_streaming_upload_of_10_000_001_bytes_is_413_and_nothing_is_stored(
    app: App, http: aiohttp.ClientSession
) -> None:
    """10,000,001 bytes sent chunked (size unknown up front): cut when it passes the
    limit, answered 413; the origin stores nothing."""
    chunk = b"z" * 100_000
    chunks = [chunk] * 100 + [b"!"]  # 10,000,001 bytes
    status = await raw_put(app, "/ok/live/big.m4s?streaming=1", chunks, content_length=None)
    assert status.startswith(b"HTTP/1.1 413")
    await wait_for(lambda: app.session.pool.in_use == 0, 10, "the upload to be aborted")
    assert await stored(app, "live/big.m4s") is None
    assert app.origin.store.in_progress("live/big.m4s") is None
    # Exactly at the limit is fine.
    async with http.put(
        app.object_url("live/big.m4s") + "?streaming=1", data=io.BytesIO(b"z" * 10_000_000)
    ) as resp:
        assert resp.status == 201


async def test_standard_upload_over_the_limit_keeps_the_previous_version(app: App) -> None:
    await app.store.put_object("vod/keep.mp4", b"old version")
    status = await raw_put(app, "/ok/vod/keep.mp4", [], content_length=25_000_001)
    assert status.startswith(b"HTTP/1.1 413")
    assert await stored(app, "vod/keep.mp4") == b"old version"


async def test_client_disconnect_mid_upload_stores_nothing(app: App) -> None:
    await app.store.put_object("vod/keep.mp4", b"old version")
    for target in ("/ok/vod/keep.mp4", "/ok/live/s.m4s?streaming=1"):
        port = int(app.url.rsplit(":", 1)[1])
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"PUT {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"
                     .encode() + b"p" * 200_000)
        await writer.drain()
        await wait_for(lambda: app.session.pool.in_use == 1, 10, "the upstream PUT")
        writer.transport.abort()
        await wait_for(lambda: app.session.pool.in_use == 0, 10, "the upstream to be released")
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    assert await stored(app, "vod/keep.mp4") == b"old version"
    assert await stored(app, "live/s.m4s") is None
    assert app.origin.store.in_progress("live/s.m4s") is None


async def test_conditional_upload(app: App, http: aiohttp.ClientSession) -> None:
    url = app.object_url("vod/c.mp4")
    async with http.put(url, data=b"one", headers={"If-None-Match": "*"}) as resp:
        assert resp.status == 201  # absent: created
        etag = resp.headers["ETag"]
    async with http.put(url, data=b"two", headers={"If-None-Match": "*"}) as resp:
        assert resp.status == 412  # present: refused
    async with http.put(url, data=b"two", headers={"If-Match": '"stale"'}) as resp:
        assert resp.status == 412
    assert await stored(app, "vod/c.mp4") == b"one"
    async with http.put(url, data=b"two", headers={"If-Match": etag}) as resp:
        assert resp.status == 200
    assert await stored(app, "vod/c.mp4") == b"two"


async def test_upload_errors(app: App, http: aiohttp.ClientSession) -> None:
    async with http.put(app.object_url("vod/x.mp4", store="dead"), data=b"x") as resp:
        assert (resp.status, await resp.read()) == (502, b"Bad Gateway")
    async with http.put(app.object_url("vod/bad%20name.mp4"), data=b"x") as resp:
        assert resp.status == 400
        assert "A-Z a-z 0-9" in await resp.text()


async def test_stored_content_type_follows_the_name_not_the_uploader(
    app: App, http: aiohttp.ClientSession
) -> None:
    """By default the uploader cannot choose the type the app will serve from its own origin:
    an HTML page uploaded as video.mp4 is stored, and served, as video/mp4."""
    page = b"<html><script>alert(document.cookie)</script></html>"
    async with http.put(app.object_url("up/video.mp4"), data=page,
                        headers={"Content-Type": "text/html"}) as resp:
        assert resp.status == 201
    assert (await app.store.describe_object("up/video.mp4")).content_type == "video/mp4"
    async with http.get(app.object_url("up/video.mp4")) as resp:
        assert resp.headers["Content-Type"] == "video/mp4"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
    # A name without a known extension: nothing the uploader says is stored.
    async with http.put(app.object_url("up/blob"), data=page,
                        headers={"Content-Type": "text/html"}) as resp:
        assert resp.status == 201
    assert (await app.store.describe_object("up/blob")).content_type in (
        None, "application/octet-stream")


async def test_the_uploaders_content_type_is_used_only_where_the_app_allows_it(
    app: App, http: aiohttp.ClientSession
) -> None:
    url = app.object_url("up/clip.bin") + "?allow=video/*,audio/mp4"
    for sent, kept in [
        ("video/webm; codecs=vp9", "video/webm"),  # parameters dropped (MediaStore refuses ;)
        ("AUDIO/MP4", "audio/mp4"),  # media types are case-insensitive
        ("text/html", None),  # not allowed: the extension's type (none for .bin)
        ("video", None),  # not a media type
    ]:
        async with http.put(url, data=b"x", headers={"Content-Type": sent}) as resp:
            assert resp.status in (200, 201), await resp.text()
        stored_type = (await app.store.describe_object("up/clip.bin")).content_type
        assert stored_type == kept or (kept is None and stored_type in (
            None, "application/octet-stream")), (sent, stored_type)
    async with http.put(app.object_url("up/v.mp4") + "?allow=video/*", data=b"x",
                        headers={"Content-Type": "text/html"}) as resp:
        assert resp.status == 201
    assert (await app.store.describe_object("up/v.mp4")).content_type == "video/mp4"


async def expect_continue(app: App, target: str, length: int) -> tuple[bytes, bytes]:
    """A PUT with ``Expect: 100-continue`` over a raw socket, sending nothing of the body
    until told to: the first status line, and the final one after the body (``b""`` when
    the first was already final)."""
    port = int(app.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"PUT {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n"
                     "Expect: 100-continue\r\n\r\n".encode())
        first = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)).split(b"\r\n")[0]
        if not first.startswith(b"HTTP/1.1 100"):
            return first, b""
        writer.write(b"e" * length)
        return first, await asyncio.wait_for(reader.readline(), 60)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_an_oversize_upload_is_refused_before_100_continue(app: App) -> None:
    """A client that asks first (``Expect: 100-continue``) gets 413 instead of the go-ahead:
    it never sends the 10 MB that would be refused (RFC 9110 §10.1.1)."""
    first, _ = await expect_continue(app, "/ok/live/big.m4s?streaming=1", 10_000_001)
    assert first.startswith(b"HTTP/1.1 413"), first
    first, _ = await expect_continue(app, "/ok/vod/big.mp4", 25_000_001)
    assert first.startswith(b"HTTP/1.1 413"), first
    # Within the limit: 100 Continue, then the upload.
    first, final = await expect_continue(app, "/ok/vod/small.mp4", 1000)
    assert first.startswith(b"HTTP/1.1 100"), first
    assert final.startswith(b"HTTP/1.1 201"), final
    assert await stored(app, "vod/small.mp4") == b"e" * 1000
    assert await stored(app, "live/big.m4s") is None


async def test_curl_is_refused_before_it_sends_an_oversize_body(
    app: App, tmp_path: Path
) -> None:
    big = tmp_path / "big.m4s"
    with big.open("wb") as file:
        file.truncate(10_000_001)  # sparse: nothing to write
    result = await anyio.run_process(
        [CURL, "-sS", "-v", "-o", "/dev/null", "-w", "%{http_code}", "-T", str(big),
         "-H", "Expect: 100-continue", "--expect100-timeout", "30",
         app.object_url("live/big.m4s") + "?streaming=1"],
        check=False,
    )
    assert result.stdout == b"413", result.stderr.decode()
    assert b"< HTTP/1.1 100" not in result.stderr, result.stderr.decode()
    assert await stored(app, "live/big.m4s") is None


async def test_an_upload_the_origin_refuses_as_invalid_is_400_not_502(
    app: App, http: aiohttp.ClientSession
) -> None:
    """The origin's ValidationException is about the request (here: the name is a folder
    already): the client's mistake, not a bad gateway. Found by tests/web/test_fuzz.py."""
    await app.store.put_object("up/folder/inside.mp4", b"x")
    async with http.put(app.object_url("up/folder"), data=b"y") as resp:
        assert (resp.status, await resp.read()) == (400, b"Bad Request")


UPLOAD_TIME_LIMIT = 1.0


@pytest.mark.parametrize("kind", ["aiohttp", "asgi"])
async def test_an_uploader_that_stalls_is_cut_by_the_origins_time_limit(kind: str) -> None:
    """An uploader that sends part of its body and then nothing, with its connection open:
    the origin cancels the upload at its time limit (MediaStore's 30 s; MediaStore answers a
    ValidationException, so the uploader gets 400), the pool slot comes back while the
    uploader is still connected, the answer closes the connection, and the previous version
    stays."""
    async with (
        LocalMediaStore(upload_time_limit=UPLOAD_TIME_LIMIT) as origin,
        Session(credentials=origin.credentials, region=origin.region, retry=FAST_RETRY)
        as session,
    ):
        store = session.container(origin.endpoint)
        await store.put_object("vod/keep.mp4", b"old version")
        async with running_app(kind, {"ok": store}) as url:
            port = int(url.rsplit(":", 1)[1])
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(b"PUT /ok/vod/keep.mp4 HTTP/1.1\r\nHost: x\r\n"
                             b"Content-Length: 1000\r\n\r\n" + b"p" * 10)
                await writer.drain()
                head = await asyncio.wait_for(
                    reader.readuntil(b"\r\n\r\n"), 20 * UPLOAD_TIME_LIMIT
                )
                assert head.startswith(b"HTTP/1.1 400"), head
                await wait_for(lambda: session.pool.in_use == 0, 20 * UPLOAD_TIME_LIMIT,
                               "the upstream slot, the uploader still connected")
                # The rest of the body will not be read: the answer says the connection ends
                # (aiohttp still drains the unread body for up to 10 s, so that the client
                # gets the answer rather than a reset; the uploader gives up here).
                assert b"\r\nconnection: close\r\n" in head.lower(), head
                writer.write_eof()
                await asyncio.wait_for(reader.read(), 20 * UPLOAD_TIME_LIMIT)
            finally:
                writer.transport.abort()
        assert await store.get_bytes("vod/keep.mp4") == b"old version"


async def test_an_unknown_expectation_is_417_and_forbids_sniffing(app: App) -> None:
    """aiohttp's ``expect_handler`` answers an expectation other than ``100-continue``
    itself: that answer too carries ``nosniff`` (uvicorn leaves it to the app, which stores
    the upload)."""
    port = int(app.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"PUT /ok/vod/e.mp4 HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
                     b"Expect: 200-ok\r\n\r\nx")
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)).lower()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    assert head.startswith(b"http/1.1 417" if app.kind == "aiohttp" else b"http/1.1 201"), head
    assert b"\r\nx-content-type-options: nosniff\r\n" in head, head
