"""A client that stops reading never pins an origin connection (both adapters).

Real idle TCP clients (raw sockets with a tiny receive buffer that send a GET and never
read) against an app whose Session has a small pool: each write to such a client has a
time limit (the Session's ``Timeouts.write``, or ``serve_object(write_timeout=...)``);
when it fires, the client's connection is cut and the upstream response closed, so its
pool slot comes back and every other request through the Session still succeeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from webapps import running_app, wait_for

from msd_async import Limits, Session, Timeouts
from msd_async.testing import LocalMediaStore

pytestmark = pytest.mark.anyio

POOL = 2
IDLE_CLIENTS = 2 * POOL
WRITE_TIMEOUT = 0.5
# Generous against the write limit: a call waiting for a slot must outlive a few of them.
POOL_TIMEOUT = 40 * WRITE_TIMEOUT
# More than loopback's socket buffers absorb for a client that reads nothing.
DATA = os.urandom(8_000_000)
PATH = "vod/big.mp4"


@contextlib.asynccontextmanager
async def idle_client(url: str) -> AsyncIterator[socket.socket]:
    """A raw TCP client that sends a GET for the object and never reads."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: tiny window
    sock.setblocking(False)
    host, port = url.removeprefix("http://").rsplit(":", 1)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        sock.send(f"GET /ok/{PATH} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        yield sock
    finally:
        sock.close()


async def drained(sock: socket.socket) -> tuple[int, bool]:
    """Read what the server sent: (bytes, whether the connection ended: closed or reset,
    rather than still open with nothing more coming within a few seconds)."""
    loop = asyncio.get_running_loop()
    total = 0
    try:
        while chunk := await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), 5):
            total += len(chunk)
    except ConnectionError:
        return total, True
    except TimeoutError:
        return total, False
    return total, True


@pytest.mark.parametrize("kind", ["aiohttp", "asgi"])
async def test_clients_that_stop_reading_do_not_pin_the_pool(
    kind: str, mediastore_server: LocalMediaStore
) -> None:
    origin = mediastore_server
    async with (
        Session(credentials=origin.credentials, region=origin.region) as setup,
        Session(
            credentials=origin.credentials,
            region=origin.region,
            limits=Limits(max_connections=POOL),
            timeouts=Timeouts(write=WRITE_TIMEOUT, pool=POOL_TIMEOUT),
        ) as session,
    ):
        await setup.container(origin.endpoint).put_object(PATH, DATA)
        store = session.container(origin.endpoint)
        async with running_app(kind, {"ok": store}) as url, contextlib.AsyncExitStack() as idle:
            sockets = [await idle.enter_async_context(idle_client(url)) for _ in range(POOL)]
            await wait_for(lambda: session.pool.in_use == POOL, 30, "the idle clients' GETs")
            sockets += [
                await idle.enter_async_context(idle_client(url))
                for _ in range(IDLE_CLIENTS - POOL)
            ]
            # Every other request through the Session succeeds (it waits for a slot that a
            # write time limit gives back), both straight and through the app.
            assert await store.get_bytes(PATH, range=(0, 9)) == DATA[:10]
            assert (await store.describe_object(PATH)).content_length == len(DATA)
            async with aiohttp.ClientSession() as http, http.get(f"{url}/ok/{PATH}") as resp:
                assert resp.status == 200
                assert await resp.read() == DATA
            # Each idle client was cut, its upstream response closed: the pool is free.
            await wait_for(
                lambda: session.pool.in_use == 0, 20 * WRITE_TIMEOUT * IDLE_CLIENTS,
                "the idle clients' slots",
            )
            for sock in sockets:
                received, ended = await drained(sock)
                assert ended
                assert received < len(DATA), "an idle client got the whole object"
