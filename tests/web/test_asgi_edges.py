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
from typing import Any

import h11
import pytest
import uvicorn
from fastapi import FastAPI, Request, Response
from webapps import Calls, captured_logs, paused_upload, running_app, wait_for

from msd_async import Session, Timeouts
from msd_async.testing import LocalMediaStore
from msd_async.web.asgi import serve_object as asgi_serve

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


async def test_a_viewer_gone_before_the_answer_behind_a_middleware(
    mediastore_server: LocalMediaStore,
) -> None:
    """As above, behind FastAPI's ``@app.middleware("http")`` (a BaseHTTPMiddleware, as
    most FastAPI apps have): the response for a viewer gone sent nothing at all, and the
    middleware, reading the route's response back, raised "No response returned." (a
    traceback at ERROR for every viewer that left before its answer)."""
    origin = mediastore_server
    async with Session(credentials=origin.credentials, region=origin.region) as setup:
        await setup.container(origin.endpoint).put_object(PATH, DATA)
    origin.faults.inject("delay", path=PATH, delay=ORIGIN_DELAY)
    async with Session(
        credentials=origin.credentials, region=origin.region,
        timeouts=Timeouts(write=WRITE_TIMEOUT, read=4 * ORIGIN_DELAY),
    ) as session:
        calls = Calls()
        async with running_app(
            "asgi", {"ok": session.container(origin.endpoint)}, calls=calls, middleware=True
        ) as url:
            with captured_logs() as records:
                async with viewer(url, get(PATH)):
                    await wait_for(
                        lambda: session.pool.in_use == 1, ORIGIN_DELAY / 2, "the GET"
                    )
                await wait_for(lambda: calls.done == 1, ORIGIN_DELAY, "the handler's end")
                await wait_for(lambda: session.pool.in_use == 0, ORIGIN_DELAY, "the slot")
                # The app's task and the server's log come after the handler's end.
                await asyncio.sleep(0.2)
        assert loud(records) == []


async def test_a_viewer_gone_before_the_answer_is_logged_499_not_200_by_aiohttp(
    mediastore_server: LocalMediaStore,
) -> None:
    """The aiohttp adapter answered a viewer gone before the answer with an empty 200:
    its access log (and any middleware counting statuses) showed a success nobody got.
    As under ASGI, it is a 499 (nginx's "client closed request")."""
    origin = mediastore_server
    async with Session(credentials=origin.credentials, region=origin.region) as setup:
        await setup.container(origin.endpoint).put_object(PATH, DATA)
    origin.faults.inject("delay", path=PATH, delay=ORIGIN_DELAY)
    access = logging.getLogger("aiohttp.access")
    level = access.level
    access.setLevel(logging.INFO)
    try:
        async with serving("aiohttp", origin) as (url, session, calls, records):
            async with viewer(url, get(PATH)):
                await wait_for(lambda: session.pool.in_use == 1, ORIGIN_DELAY / 2, "the GET")
            await wait_for(lambda: calls.done == 1, ORIGIN_DELAY * 2, "the handler's end")
            await wait_for(
                lambda: any(r.name == "aiohttp.access" for r in records), ORIGIN_DELAY,
                "the access log line",
            )
    finally:
        access.setLevel(level)
    (line,) = [r.getMessage() for r in records if r.name == "aiohttp.access"]
    assert f"GET /ok/{PATH} HTTP/1.1\" 499 " in line, line


@pytest.mark.parametrize("growing", [False, True])
@pytest.mark.parametrize("kind", ["aiohttp", "asgi"])
async def test_a_viewer_gone_mid_body(
    kind: str, growing: bool, mediastore_server: LocalMediaStore
) -> None:
    """The viewer closes after part of the body: of a stored object (the next write
    fails), or of one still uploading whose bytes pause (no write to fail: the server
    must tell the app)."""
    origin = mediastore_server
    async with Session(credentials=origin.credentials, region=origin.region) as setup:
        store = setup.container(origin.endpoint)
        async with contextlib.AsyncExitStack() as uploads:
            if growing:
                await uploads.enter_async_context(paused_upload(store, PATH, DATA[:200_000]))
            else:
                await store.put_object(PATH, DATA)
            async with serving(kind, origin) as (url, session, calls, records):
                async with viewer(url, get(PATH), rcvbuf=4096) as sock:
                    got = await asyncio.get_running_loop().sock_recv(sock, 4096)
                    assert got.startswith(b"HTTP/1.1 200")
                    await asyncio.sleep(WRITE_TIMEOUT / 5)
                await wait_for(lambda: calls.done == 1, 20 * WRITE_TIMEOUT, "the handler's end")
                await wait_for(lambda: session.pool.in_use == 0, 10, "the slot")
                assert loud(records) == []


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


GRACE = 2 * WRITE_TIMEOUT


@contextlib.asynccontextmanager
async def lifespan_app(
    origin: LocalMediaStore, calls: Calls, pools: list[Session], in_use: list[int]
) -> AsyncIterator[tuple[str, uvicorn.Server, asyncio.Future[None]]]:
    """FastAPI under uvicorn with the Session opened and closed by the app's lifespan, as
    docs/web.md advises; yields the URL, the server and its serving task."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with Session(
            credentials=origin.credentials, region=origin.region,
            timeouts=Timeouts(write=WRITE_TIMEOUT),
        ) as session:
            pools.append(session)
            app.state.store = session.container(origin.endpoint)
            yield
        in_use.append(session.pool.in_use)

    app = FastAPI(lifespan=lifespan)

    @app.get("/ok/{path:path}")
    async def get(path: str, request: Request) -> Response:
        return await asgi_serve(request, request.app.state.store, path)

    async def counted(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await app(scope, receive, send)
        with calls.counting():
            await app(scope, receive, send)

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        counted, log_level="warning", lifespan="on", ws="none", timeout_graceful_shutdown=GRACE
    )
    server = uvicorn.Server(config)
    serving = asyncio.ensure_future(server.serve(sockets=[listener]))
    try:
        while not server.started and not serving.done():
            await asyncio.wait({serving}, timeout=0.02)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", server, serving
    finally:
        server.should_exit = True
        await serving
        listener.close()


async def test_a_shutdown_with_a_live_viewer_in_flight(mediastore_server: LocalMediaStore) -> None:
    """A viewer follows an upload that goes on when the server is told to stop: ASGI
    tells a response nothing of a shutdown, so uvicorn waits its graceful time, then
    cancels the response, and goes on to the lifespan's shutdown without waiting for it
    to unwind (the Session may start closing with the follower's connection in use).
    The viewer sees an incomplete response (never a body passed off as whole), the
    server stops within its grace and a margin, the Session closes cleanly (its pool
    empty, no warning), and what is logged is uvicorn's account of its forced stop alone."""
    origin = mediastore_server
    calls, pools, in_use = Calls(), [], []
    async with Session(credentials=origin.credentials, region=origin.region) as setup:
        store = setup.container(origin.endpoint)
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(paused_upload(store, PATH, DATA[:200_000]))
            url, server, serving = await stack.enter_async_context(
                lifespan_app(origin, calls, pools, in_use)
            )
            records = stack.enter_context(captured_logs())
            async with viewer(url, get(PATH)) as sock:
                loop = asyncio.get_running_loop()
                reading = asyncio.ensure_future(read_response(sock, 30 * GRACE))
                await wait_for(lambda: pools[0].pool.in_use == 1, 10, "the follower")
                await asyncio.sleep(WRITE_TIMEOUT)
                stopping = loop.time()
                server.should_exit = True
                await asyncio.wait_for(asyncio.shield(serving), GRACE + 20 * WRITE_TIMEOUT)
                stopped = loop.time() - stopping
                status, body, complete = await reading
            assert (status, complete) == (200, False)
            assert DATA.startswith(body)
            assert stopped >= GRACE
            assert calls.in_flight == 0
            assert in_use == [0]
            said = [(r.levelname, r.getMessage(), r.exc_info and r.exc_info[0])
                    for r in records if r.levelno >= logging.WARNING]
    assert said == [
        ("ERROR", "Cancel 1 running task(s), timeout graceful shutdown exceeded", None),
        ("ERROR", "Exception in ASGI application\n", asyncio.CancelledError),
    ]


@pytest.mark.parametrize("kind", ["aiohttp", "asgi"])
async def test_heads_then_a_get_on_one_connection(
    kind: str, mediastore_server: LocalMediaStore
) -> None:
    """HEADs of a stored object, of one still uploading (length unknown) and of a missing
    one, then a GET, on one kept-alive connection: no HEAD answer carries a byte of body
    (h11 frames them as HEAD answers, so one stray byte would garble the next response),
    and each says what a GET would."""
    origin = mediastore_server
    live = "live/now.ts"
    async with Session(credentials=origin.credentials, region=origin.region) as setup:
        store = setup.container(origin.endpoint)
        await store.put_object(PATH, DATA)
        async with paused_upload(store, live, DATA[:1000]), serving(kind, origin) as (
            url, session, _, records
        ):
            targets = [("HEAD", PATH), ("HEAD", live), ("HEAD", "vod/none.mp4"),
                       ("GET", PATH)]
            wire = b"".join(
                f"{method} /ok/{path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
                for method, path in targets
            )
            conn = h11.Connection(h11.CLIENT)
            answers: list[tuple[int, dict[bytes, bytes], bytes]] = []
            async with viewer(url, wire) as sock:
                loop = asyncio.get_running_loop()
                for method, _ in targets:
                    if answers:
                        conn.start_next_cycle()
                    conn.send(h11.Request(method=method, target="/", headers=[("Host", "")]))
                    conn.send(h11.EndOfMessage())
                    status, headers, body = 0, {}, bytearray()
                    while (event := conn.next_event()) is not None:
                        if event is h11.NEED_DATA:
                            data = await asyncio.wait_for(loop.sock_recv(sock, 1 << 16), 10)
                            assert data, f"closed after {len(answers)} answers"
                            conn.receive_data(data)
                        elif isinstance(event, h11.Response):
                            status, headers = event.status_code, dict(event.headers)
                        elif isinstance(event, h11.Data):
                            body += event.data
                        elif isinstance(event, h11.EndOfMessage):
                            break
                    answers.append((status, headers, bytes(body)))
            (s1, h1, b1), (s2, h2, b2), (s3, _, b3), (s4, h4, b4) = answers
            assert (s1, h1[b"content-length"], b1) == (200, str(len(DATA)).encode(), b"")
            assert (s2, b2) == (200, b"")
            # Its GET has no length to give (the object grows): no Content-Length, not 0.
            assert b"content-length" not in h2, h2
            assert (s3, b3) == (404, b"")
            assert (s4, h4[b"content-length"], b4) == (200, str(len(DATA)).encode(), DATA)
            await wait_for(lambda: session.pool.in_use == 0, 10, "the slots")
            assert loud(records) == []
