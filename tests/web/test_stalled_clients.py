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
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from socket_reads import drained
from webapps import Calls, captured_logs, running_app, wait_for

from msd_async import Credentials, Limits, ObjectNotFoundError, Session, Timeouts
from msd_async.testing import LocalMediaStore
from msd_async.web import WriteWatch, core, watch_writes

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
async def idle_client(url: str, path: str = PATH) -> AsyncIterator[socket.socket]:
    """A raw TCP client that sends a GET for the object and never reads."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: tiny window
    sock.setblocking(False)
    host, port = url.removeprefix("http://").rsplit(":", 1)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        sock.send(f"GET /ok/{path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        yield sock
    finally:
        sock.close()


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


@pytest.mark.parametrize("kind", ["aiohttp", "asgi"])
async def test_a_stalled_viewer_is_cut_with_one_quiet_line(
    kind: str, mediastore_server: LocalMediaStore
) -> None:
    """A viewer that stops reading is an everyday event, not a server error: its cut is
    one INFO line of the app's logger, no traceback, nothing at WARNING or above (from the
    server either), and the handler has returned (no task left behind)."""
    origin = mediastore_server
    async with Session(
        credentials=origin.credentials, region=origin.region,
        timeouts=Timeouts(write=WRITE_TIMEOUT),
    ) as session:
        store = session.container(origin.endpoint)
        await store.put_object(PATH, DATA)
        calls = Calls()
        async with contextlib.AsyncExitStack() as stack:
            url = await stack.enter_async_context(
                running_app(kind, {"ok": store}, send_buffer=4096, calls=calls)
            )
            records = stack.enter_context(captured_logs())
            async with idle_client(url) as sock:
                await wait_for(lambda: calls.done == 1, 40 * WRITE_TIMEOUT, "the cut")
                await wait_for(lambda: session.pool.in_use == 0, 10, "the origin's slot")
                received, ended = await drained(sock)
                assert ended and received < len(DATA)
            assert calls.in_flight == 0
        # After the server's shutdown too: it found nothing left to cancel or complain of.
        said = [
            (r.name, r.levelname, r.getMessage(), r.exc_info is not None)
            for r in records
            if r.levelno >= logging.INFO and r.name != "aiohttp.access"
        ]
        assert said == [
            ("msd_async.web", "INFO",
             f"the client took no data for {WRITE_TIMEOUT:g} s: connection cut", False),
        ]


# --- the watch itself, both implementations (asyncio's timer; anyio's task for trio) ------


Watcher = Callable[..., Awaitable[WriteWatch]]


@pytest.fixture(params=["asyncio", "anyio"])
def watcher(request: pytest.FixtureRequest) -> Watcher:
    """``watch_writes`` (asyncio's timer), or the portable implementation it uses where
    there is no asyncio loop (trio), called directly."""
    if request.param == "asyncio":
        return watch_writes

    async def portable(
        body: Callable[[WriteWatch], Awaitable[None]], limit: float | None, **options: Any
    ) -> WriteWatch:
        return await core._watch_with_anyio(body, WriteWatch(limit, **options))

    return portable


async def test_a_stalled_write_is_cancelled_and_reported(watcher: Watcher) -> None:
    wrote = []

    async def body(watch: WriteWatch) -> None:
        for chunk in (b"a", b"b"):
            watch.begin()
            await asyncio.sleep(0.01)  # a client that keeps up
            watch.end()
            wrote.append(chunk)
        watch.begin()
        await asyncio.Event().wait()  # a client that stopped reading

    loop = asyncio.get_running_loop()
    started = loop.time()
    watch = await watcher(body, WRITE_TIMEOUT)
    assert watch.stalled and not watch.gone
    assert wrote == [b"a", b"b"]
    assert WRITE_TIMEOUT <= loop.time() - started < 20 * WRITE_TIMEOUT


async def test_a_client_that_keeps_reading_is_never_cut(watcher: Watcher) -> None:
    async def body(watch: WriteWatch) -> None:
        # Longer in all than the limit, but no single write is.
        for _ in range(8):
            watch.begin()
            await asyncio.sleep(WRITE_TIMEOUT / 4)
            watch.end()

    watch = await watcher(body, WRITE_TIMEOUT)
    assert not watch.stalled and not watch.gone
    await asyncio.sleep(WRITE_TIMEOUT * 1.5)  # no cancellation left behind for this task


async def test_a_client_gone_during_a_pause_is_noticed(watcher: Watcher) -> None:
    connected = [True]

    async def body(watch: WriteWatch) -> None:
        connected[0] = False
        await asyncio.Event().wait()  # the origin pauses; no write to fail

    watch = await watcher(body, None, alive=lambda: connected[0], interval=0.05)
    assert watch.gone and not watch.stalled


async def test_an_error_of_the_body_propagates_as_it_is(watcher: Watcher) -> None:
    async def body(watch: WriteWatch) -> None:
        raise ConnectionResetError("gone")

    with pytest.raises(ConnectionResetError):
        await watcher(body, WRITE_TIMEOUT)


async def test_someone_elses_cancellation_is_not_swallowed() -> None:
    async def body(watch: WriteWatch) -> None:
        watch.begin()
        await asyncio.Event().wait()

    task = asyncio.ensure_future(watch_writes(body, 60))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_the_clients_timeouts_are_the_sessions() -> None:
    # serve_object's default write limit is read through this public property, not the
    # client's private context.
    timeouts = Timeouts(write=7.5)
    async with Session(
        credentials=Credentials("AKIDEXAMPLE", "secret"), region="us-east-1", timeouts=timeouts
    ) as session:
        assert session.container("http://127.0.0.1:9").timeouts is timeouts


# --- the end of a body of unknown length ------------------------------------------------

#: What the proxy writes before the pause: over aiohttp's 64 KiB between drains, so its
#: write drains (the client's socket has room yet); then a piece under 64 KiB, which does
#: not drain but fills the socket's buffer past its high-water mark. aiohttp's write_eof()
#: then writes the terminating chunk and waits for the drain. The socket buffers absorb a
#: few KiB to a few tens: several first pieces cover that range.
LAST_PIECE = 60 * 1024


@pytest.mark.parametrize("first_piece", [66 * 1024, 96 * 1024])
@pytest.mark.parametrize("kind", ["aiohttp", "asgi"])
async def test_a_client_that_stops_before_the_end_of_a_live_body_is_cut(
    kind: str, first_piece: int, mediastore_server: LocalMediaStore
) -> None:
    """An object still uploading (STREAMING) is sent chunked: the end of its body is one
    more write to the client (the terminating chunk), and it has the same time limit as
    the others. A client that stopped reading just before it is cut, not kept waiting for
    with the handler held."""
    origin = mediastore_server
    path = "live/growing.ts"
    steps = [asyncio.Event() for _ in range(2)]

    async def produce() -> AsyncIterator[bytes]:
        yield os.urandom(first_piece)
        await steps[0].wait()
        yield os.urandom(LAST_PIECE)
        await steps[1].wait()

    async with Session(
        credentials=origin.credentials, region=origin.region,
        timeouts=Timeouts(write=WRITE_TIMEOUT),
    ) as session:
        store = session.container(origin.endpoint)
        upload = asyncio.ensure_future(store.put_object(path, produce(), streaming=True))
        try:
            async with running_app(kind, {"ok": store}, send_buffer=4096) as url:
                for _ in range(500):  # until the upload is readable
                    with contextlib.suppress(ObjectNotFoundError):
                        await store.describe_object(path)
                        break
                    await asyncio.sleep(0.02)
                async with idle_client(url, path) as sock:
                    # The first piece through the proxy, then the last, then the end.
                    await asyncio.sleep(0.3)
                    steps[0].set()
                    await asyncio.sleep(0.3)
                    steps[1].set()
                    await upload
                    # Past the write limit since the end reached the proxy, unread.
                    await asyncio.sleep(4 * WRITE_TIMEOUT)
                    received, ended = await drained(sock)
                # Cut (aiohttp), or closed once the handler gave up (uvicorn closes,
                # flushing what it had been handed): either way not held open.
                assert ended, f"the client still connected after {received} bytes"
                await wait_for(lambda: session.pool.in_use == 0, 10, "the origin's slot")
        finally:
            for step in steps:
                step.set()
            await upload


async def test_a_stall_in_cleanup_after_a_cancellation_is_a_stall() -> None:
    """A body written by a task whose own cancellation was already delivered (cleanup
    after it: ``cancelling()`` is 1). The watch took that old cancellation for someone
    else's new one, and raised CancelledError instead of reporting the stall."""
    async def body(watch: WriteWatch) -> None:
        watch.begin()
        await asyncio.Event().wait()

    outcome: list[object] = []

    async def work() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            try:
                outcome.append(await watch_writes(body, WRITE_TIMEOUT))
            except asyncio.CancelledError:
                outcome.append("CancelledError")
            raise

    task = asyncio.ensure_future(work())
    await asyncio.sleep(0.01)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=20 * WRITE_TIMEOUT)
    assert done
    assert len(outcome) == 1 and isinstance(outcome[0], WriteWatch), outcome
    assert outcome[0].stalled
