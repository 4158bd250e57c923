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

import pytest
from webapps import Calls, captured_logs, running_app, wait_for

from msd_async import Session, Timeouts
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
