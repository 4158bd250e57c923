"""Origins the local server cannot imitate, scripted over raw asyncio sockets: one that
ignores Range on a stored object (200 with the length), a proxy's HTML 502, and an object
replaced between the DescribeObject and the GetObject of one conditional request. The
server is tests/support/scripted_server.py; a failed assert in a script fails the test."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from scripted_server import Connection, Handler, response, scripted_server
from webapps import FAST_RETRY, captured_logs, running_app, wait_for

from msd_async import Credentials, Session

pytestmark = pytest.mark.anyio

DATA = os.urandom(100_000)
Answer = tuple[int, dict[str, str], bytes]
Script = Callable[[str, dict[str, str]], Answer]


def scripted_origin(script: Script) -> Handler:
    """Answers each request with ``script(method, headers)``, one request per connection."""

    async def handler(conn: Connection) -> None:
        request = await conn.read_request()
        if request is None:
            return
        status, extra, body = script(request.method, request.headers)
        head = response(status, headers={"Connection": "close", **extra}, length=len(body))
        await conn.send(head if request.method == "HEAD" else head + body)

    return handler


def object_headers(etag: str) -> dict[str, str]:
    return {"ETag": etag, "Content-Type": "video/mp4",
            "Last-Modified": "Tue, 01 Dec 2026 10:00:00 GMT"}


@contextlib.asynccontextmanager
async def proxy(kind: str, script: Script) -> AsyncIterator[tuple[str, Session]]:
    async with (
        scripted_server(scripted_origin(script)) as origin,
        Session(credentials=Credentials("AKIDTEST", "secret"), region="us-east-1",
                retry=FAST_RETRY) as session,
        running_app(kind, {"ok": session.container(origin.endpoint)}) as url,
    ):
        yield url, session


@pytest.fixture(params=["aiohttp", "asgi"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_origin_ignoring_range_is_sliced(kind: str) -> None:
    def ignore_range(method: str, headers: dict[str, str]) -> Answer:
        assert "range" in headers or method == "HEAD"
        return 200, object_headers("v1"), DATA

    async with proxy(kind, ignore_range) as (url, session), aiohttp.ClientSession() as http:
        for spec, first, last in (("bytes=10-19", 10, 19), ("bytes=-5", len(DATA) - 5,
                                  len(DATA) - 1), ("bytes=99990-200000", 99_990, len(DATA) - 1)):
            async with http.get(f"{url}/ok/a.mp4", headers={"Range": spec}) as resp:
                assert resp.status == 206
                assert resp.headers["Content-Range"] == f"bytes {first}-{last}/{len(DATA)}"
                assert await resp.read() == DATA[first : last + 1]
        async with http.get(f"{url}/ok/a.mp4", headers={"Range": "bytes=100000-"}) as resp:
            assert resp.status == 416
            assert resp.headers["Content-Range"] == f"bytes */{len(DATA)}"
        assert session.pool.in_use == 0


async def test_html_502_from_a_proxy_is_502_without_its_body(kind: str) -> None:
    page = b"<html><body>upstream.internal.example:8080 is down</body></html>"

    def failing(method: str, headers: dict[str, str]) -> Answer:
        return 502, {"Content-Type": "text/html"}, page

    async with (
        proxy(kind, failing) as (url, _),
        aiohttp.ClientSession() as http,
        http.get(f"{url}/ok/a.mp4") as resp,
    ):
        assert resp.status == 502
        assert await resp.read() == b"Bad Gateway"


async def test_object_replaced_between_describe_and_get(kind: str) -> None:
    """The DescribeObject sees version a (If-None-Match "b" passes), the GetObject returns
    version b: the answer must be decided again on b (304), not serve b's body as a 200
    that the client's cache already has."""
    heads = []

    def replaced(method: str, headers: dict[str, str]) -> Answer:
        if method == "HEAD":
            heads.append(1)
            return 200, object_headers("a" if len(heads) == 1 else "b"), DATA
        return 200, object_headers("b"), DATA

    async with proxy(kind, replaced) as (url, session), aiohttp.ClientSession() as http:
        async with http.get(f"{url}/ok/a.mp4", headers={"If-None-Match": '"b"'}) as resp:
            assert resp.status == 304
            assert resp.headers["ETag"] == '"b"'
        assert len(heads) == 2
        assert session.pool.in_use == 0


async def test_object_shrunk_between_describe_and_a_416_is_decided_again(kind: str) -> None:
    """The DescribeObject sees version a (If-Match "a" holds, the range fits), the GetObject
    finds version b, too short for the range: the origin's 416 is about b, and for b the
    If-Match fails first (RFC 9110 §13.2.2: preconditions before Range), so 412, not 416."""
    heads = []

    def shrunk(method: str, headers: dict[str, str]) -> Answer:
        if method == "HEAD":
            heads.append(1)
            if len(heads) == 1:
                return 200, object_headers("a"), DATA
            return 200, object_headers("b"), b""
        assert headers.get("range") == "bytes=1-"
        extra = {"Content-Type": "application/x-amz-json-1.1", "Content-Range": "bytes */0"}
        return 416, extra, b'{"__type":"RequestedRangeNotSatisfiableException"}'

    async with proxy(kind, shrunk) as (url, session), aiohttp.ClientSession() as http:
        conditions = {"Range": "bytes=1-", "If-Match": '"a"'}
        async with http.get(f"{url}/ok/a.mp4", headers=conditions) as resp:
            assert resp.status == 412, (resp.status, resp.headers)
            assert resp.headers["ETag"] == '"b"'
        assert len(heads) == 2
        assert session.pool.in_use == 0


async def test_a_206_to_a_request_without_range_is_502(kind: str) -> None:
    """An origin (or a cache in front of it) that answers 206 when no Range was sent: the
    viewer did not ask for a part (or its If-Range no longer holds, so its partial copy is
    stale) and must never get one (RFC 9110 §15.3.7); the web app answers 502."""

    def partial_always(method: str, headers: dict[str, str]) -> Answer:
        if method == "HEAD":
            return 200, object_headers("v1"), DATA
        extra = {**object_headers("v1"), "Content-Range": f"bytes 0-9/{len(DATA)}"}
        return 206, extra, DATA[:10]

    async with proxy(kind, partial_always) as (url, session), aiohttp.ClientSession() as http:
        stale = {"Range": "bytes=0-9", "If-Range": '"v0"'}
        for headers in ({}, stale):
            async with http.get(f"{url}/ok/a.mp4", headers=headers) as resp:
                assert resp.status == 502, (headers, resp.status, resp.headers)
                assert "Content-Range" not in resp.headers
                assert await resp.read() == b"Bad Gateway"
        assert session.pool.in_use == 0


async def test_an_origin_cut_mid_body_is_one_warning(kind: str) -> None:
    """The origin cuts every GET half-way (the client's resumes too): the viewer's response
    is cut, visibly incomplete, and the log says so in one WARNING line of the app's logger,
    with no traceback and nothing from the server (an origin failure is not the app's
    bug)."""

    async def cut_half_way(conn: Connection) -> None:
        request = await conn.read_request()
        if request is None:
            return
        head = response(200, headers={**object_headers("v1"), "Connection": "close"},
                        length=len(DATA))
        if request.method == "HEAD":
            await conn.send(head)
            return
        await conn.send(head + DATA[: len(DATA) // 2])
        conn.abort()

    async with (
        scripted_server(cut_half_way) as origin,
        Session(credentials=Credentials("AKIDTEST", "secret"), region="us-east-1",
                retry=FAST_RETRY) as session,
        running_app(kind, {"ok": session.container(origin.endpoint)}) as url,
    ):
        with captured_logs() as records:
            async with aiohttp.ClientSession() as http, http.get(f"{url}/ok/a.mp4") as resp:
                assert resp.status == 200
                with pytest.raises(aiohttp.ClientPayloadError):
                    await resp.read()
            await wait_for(lambda: session.pool.in_use == 0, 10, "the origin's slot")
            await asyncio.sleep(0.2)  # what the server logs once the app has returned
        said = [
            (r.name, r.levelname, r.exc_info is not None) for r in records
            if r.levelno >= logging.WARNING or r.exc_info is not None
        ]
        assert said == [("msd_async.web", "WARNING", False)]
        assert records[-1].getMessage().startswith("origin failed mid-body (connection cut)")
