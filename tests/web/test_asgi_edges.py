"""A viewer that leaves at each point of a request, a request body on a GET, and a server
that stops with responses in flight, against the real local server behind the app (both
adapters where the question is theirs too; raw-socket viewers).

Each test checks that the origin connection comes back to the pool, the handler has
returned, and nothing is logged at WARNING or above (a viewer leaving is not an error)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator

import h11
import pytest
from webapps import Calls, captured_logs, running_app, wait_for

from msd_async import ObjectNotFoundError, Session, Timeouts
from msd_async.testing import LocalMediaStore

pytestmark = pytest.mark.anyio

WRITE_TIMEOUT = 0.5
#: How long the origin holds the app's request (a delay fault): long against what a
#: release may take once the viewer left, so that waiting it out shows.
ORIGIN_DELAY = 12 * WRITE_TIMEOUT
DATA = os.urandom(3_000_000)
PATH = "vod/clip.mp4"


@contextlib.asynccontextmanager
async def viewer(
    url: str, request: bytes, rcvbuf: int | None = None
) -> AsyncIterator[socket.socket]:
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect
    sock.setblocking(False)
    host, port = url.removeprefix("http://").rsplit(":", 1)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        await asyncio.get_running_loop().sock_sendall(sock, request)
        yield sock
    finally:
        sock.close()


def get(path: str, *extra: str) -> bytes:
    return "\r\n".join([f"GET /ok/{path} HTTP/1.1", "Host: x", *extra, "", ""]).encode()


async def read_response(sock: socket.socket, within: float) -> tuple[int | None, bytes, bool]:
    """(status, body, complete) of the response on ``sock``, framed by h11."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    conn.send(h11.EndOfMessage())
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    status, body = None, bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            try:
                data = await asyncio.wait_for(loop.sock_recv(sock, 1 << 16), end - loop.time())
            except ConnectionError:
                data = b""
            conn.receive_data(data)
            if not data:
                with contextlib.suppress(h11.RemoteProtocolError):
                    while (event := conn.next_event()) is not h11.NEED_DATA:
                        if isinstance(event, h11.Data):
                            body += event.data
                return status, bytes(body), False
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return status, bytes(body), True


def loud(records: list[logging.LogRecord]) -> list[str]:
    return [f"{r.name} {r.levelname} {r.getMessage()}" for r in records
            if r.levelno >= logging.WARNING or r.exc_info is not None]


@contextlib.asynccontextmanager
async def serving(
    kind: str, origin: LocalMediaStore
) -> AsyncIterator[tuple[str, Session, Calls, list[logging.LogRecord]]]:
    async with Session(
        credentials=origin.credentials, region=origin.region,
        timeouts=Timeouts(write=WRITE_TIMEOUT, read=4 * ORIGIN_DELAY),
    ) as session:
        calls = Calls()
        async with contextlib.AsyncExitStack() as stack:
            url = await stack.enter_async_context(
                running_app(kind, {"ok": session.container(origin.endpoint)}, calls=calls)
            )
            records = stack.enter_context(captured_logs())
            yield url, session, calls, records


@pytest.mark.parametrize("when", ["at-once", "origin-asked"])
@pytest.mark.parametrize("kind", ["aiohttp", "asgi"])
async def test_a_viewer_gone_while_the_app_waits_on_the_origin(
    kind: str, when: str, mediastore_server: LocalMediaStore
) -> None:
    """The viewer leaves before the response starts: right after its request, or while
    the origin holds the app's request. The origin request is given up at once, its
    connection released, rather than waited out for nobody."""
    origin = mediastore_server
    async with Session(credentials=origin.credentials, region=origin.region) as setup:
        await setup.container(origin.endpoint).put_object(PATH, DATA)
    origin.faults.inject("delay", path=PATH, delay=ORIGIN_DELAY)
    async with serving(kind, origin) as (url, session, calls, records):
        loop = asyncio.get_running_loop()
        async with viewer(url, get(PATH)):
            if when == "origin-asked":
                await wait_for(lambda: session.pool.in_use == 1, ORIGIN_DELAY / 2, "the GET")
            left = loop.time()
        await wait_for(lambda: calls.done == 1, ORIGIN_DELAY * 2, "the handler's end")
        await wait_for(lambda: session.pool.in_use == 0, ORIGIN_DELAY, "the slot")
        assert loop.time() - left < ORIGIN_DELAY / 2, "the origin's answer was waited for"
        assert loud(records) == []


@pytest.mark.parametrize("growing", [False, True])
@pytest.mark.parametrize("kind", ["aiohttp", "asgi"])
async def test_a_viewer_gone_mid_body(
    kind: str, growing: bool, mediastore_server: LocalMediaStore
) -> None:
    """The viewer closes after part of the body: of a stored object (the next write
    fails), or of one still uploading whose bytes pause (no write to fail: the server
    must tell the app)."""
    origin = mediastore_server
    pause = asyncio.Event()

    async def produce() -> AsyncIterator[bytes]:
        yield DATA[:200_000]
        await pause.wait()

    async with Session(credentials=origin.credentials, region=origin.region) as setup:
        store = setup.container(origin.endpoint)
        upload = None
        if growing:
            upload = asyncio.ensure_future(store.put_object(PATH, produce(), streaming=True))
            for _ in range(500):  # until the upload is readable
                with contextlib.suppress(ObjectNotFoundError):
                    await store.describe_object(PATH)
                    break
                await asyncio.sleep(0.02)
        else:
            await store.put_object(PATH, DATA)
        try:
            async with serving(kind, origin) as (url, session, calls, records):
                async with viewer(url, get(PATH), rcvbuf=4096) as sock:
                    got = await asyncio.get_running_loop().sock_recv(sock, 4096)
                    assert got.startswith(b"HTTP/1.1 200")
                    await asyncio.sleep(WRITE_TIMEOUT / 5)
                await wait_for(lambda: calls.done == 1, 20 * WRITE_TIMEOUT, "the handler's end")
                await wait_for(lambda: session.pool.in_use == 0, 10, "the slot")
                assert loud(records) == []
        finally:
            pause.set()
            if upload is not None:
                await upload


@pytest.mark.parametrize("kind", ["aiohttp", "asgi"])
async def test_a_get_with_a_body_in_pieces(kind: str, mediastore_server: LocalMediaStore) -> None:
    """A GET may carry a body (RFC 9110 §9.3.1 gives it no meaning): the server hands it
    to the app in several ``http.request`` messages (``more_body``) as it arrives. The
    answer is the object, whole, whatever the body does."""
    origin = mediastore_server
    async with Session(credentials=origin.credentials, region=origin.region) as setup:
        await setup.container(origin.endpoint).put_object(PATH, DATA)
    piece = b"x" * 100_000
    async with serving(kind, origin) as (url, session, calls, records):
        async with viewer(url, get(PATH, f"Content-Length: {3 * len(piece)}")) as sock:
            loop = asyncio.get_running_loop()
            for _ in range(3):
                await asyncio.sleep(WRITE_TIMEOUT / 5)
                await loop.sock_sendall(sock, piece)
            status, body, complete = await read_response(sock, 20 * WRITE_TIMEOUT)
        assert (status, complete) == (200, True)
        assert body == DATA
        await wait_for(lambda: calls.done == 1, 20 * WRITE_TIMEOUT, "the handler's end")
        await wait_for(lambda: session.pool.in_use == 0, 10, "the slot")
        assert loud(records) == []
