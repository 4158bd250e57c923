"""``attempts`` counts the attempts that reached the network, and nothing else: a retry
that never got a connection (the pool full, the session closed, a deadline passing in the
queue) is not one. A DELETE takes a 404 on its retry for its own earlier work only when
that earlier attempt may have reached the server. A download entered twice is refused
rather than leaking the first response's connection."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import anyio
import pytest
from scripted_server import Connection, response, scripted_server

from msd_async import (
    ConnectionLostError,
    Credentials,
    DeadlineExceeded,
    DownloadAlreadyEnteredError,
    Limits,
    ObjectNotFoundError,
    PoolTimeout,
    RequestEvent,
    RetryPolicy,
    ServerError,
    Session,
    SessionClosedError,
    Timeouts,
)

pytestmark = pytest.mark.anyio

KEYS = Credentials("AKIDEXAMPLE", "secret")
FAST = RetryPolicy(max_attempts=3, backoff_initial=0.001, backoff_max=0.001)
NOT_FOUND = response(
    404,
    b'{"__type": "ObjectNotFoundException", "Message": "no such object"}',
    headers={"Content-Type": "application/x-amz-json-1.1"},
)
POOL_WAIT = 0.2
DEADLINE = 0.5


async def _busy_then_ok(conn: Connection) -> None:
    """The first HEAD is a 503; GETs get a small body; later HEADs a 200."""
    while (request := await conn.read_request()) is not None:
        if request.method == "GET":
            await conn.send(response(200, b"held", headers={"ETag": '"e"'}))
        elif sum(r.method == "HEAD" for r in conn.server.requests) == 1:
            await conn.send(response(503, length=0))
        else:
            await conn.send(response(200, headers={"ETag": '"e"'}, length=4))


@pytest.mark.parametrize("ending", ["pool-timeout", "closed", "deadline"])
async def test_a_retry_that_never_got_a_connection_is_not_counted(ending: str) -> None:
    """Attempt 1 is a 503; while the call backs off, another download takes the pool's
    only connection, so attempt 2 queues for it and ends there, having sent nothing
    (Timeouts.pool passing, the session closing, the call's deadline passing). It was
    counted: attempts said 2 for a call that reached the server once."""
    release = asyncio.Event()
    holders: list[asyncio.Task[None]] = []

    async def hold() -> None:
        async with store.get_object("held.ts"):
            await release.wait()

    def on_retry(event: RequestEvent) -> None:
        # Created before the retry's sleep: its first step, which takes the pool's free
        # slot without suspending, runs before the call wakes, however short the backoff.
        if event.kind == "retry":
            holders.append(asyncio.get_running_loop().create_task(hold()))

    session = Session(
        credentials=KEYS, region="us-east-1", retry=FAST, event_hooks=[on_retry],
        limits=Limits(max_connections=1),
        timeouts=Timeouts(pool=POOL_WAIT if ending == "pool-timeout" else 60),
    )
    async with scripted_server(_busy_then_ok) as server:
        store = session.container(server.endpoint)
        try:
            with anyio.fail_after(10):
                call = asyncio.ensure_future(store.describe_object(
                    # Room for attempt 1 on a busy machine; the rest is spent queueing.
                    "busy.ts", deadline=DEADLINE if ending == "deadline" else None
                ))
                if ending == "closed":
                    while session.pool.waiting == 0 and not call.done():  # noqa: ASYNC110 - no event
                        await asyncio.sleep(0.005)
                    await session.aclose()
                expected = {
                    "pool-timeout": PoolTimeout, "closed": SessionClosedError,
                    "deadline": DeadlineExceeded,
                }[ending]
                with pytest.raises(expected) as info:
                    await call
        finally:
            release.set()
            held = await asyncio.gather(*holders, return_exceptions=True)
            await session.aclose()
    # The holder's own GET may still be waiting for its answer when the session closes:
    # aclose() ends it too, with SessionClosedError (a busy machine was seen doing so).
    allowed = (SessionClosedError,) if ending == "closed" else ()
    assert all(h is None or isinstance(h, allowed) for h in held), held
    assert [r.method for r in server.requests] == ["HEAD", "GET"]
    assert info.value.attempts == 1
    if ending == "deadline":
        assert "waiting for a free connection" in str(info.value)
        assert isinstance(info.value.__cause__, ServerError)
    assert session.pool.in_use == 0


async def test_a_pool_timeout_on_the_first_attempt_counts_none() -> None:
    async def ok(conn: Connection) -> None:
        while await conn.read_request() is not None:
            await conn.send(response(200, b"held", headers={"ETag": '"e"'}))

    async with scripted_server(ok) as server, Session(
        credentials=KEYS, region="us-east-1", retry=FAST,
        limits=Limits(max_connections=1), timeouts=Timeouts(pool=0.05),
    ) as session:
        store = session.container(server.endpoint)
        async with store.get_object("held.ts"):
            with pytest.raises(PoolTimeout) as info:
                await store.get_bytes("other.ts")
        assert info.value.attempts == 0 and info.value.unsent
        assert len(server.requests) == 1


async def test_a_404_after_a_delete_that_was_never_written_is_not_found() -> None:
    """The DELETE's pooled connection was dirty (the server sent bytes on it while it sat
    idle): it was refused before a byte of the request was written, and the retry, on a
    new connection, found nothing. That 404 was taken for the refused attempt's work, and
    the call said the object was deleted, though no DELETE had found it."""
    stray = asyncio.Event()

    async def smuggler(conn: Connection) -> None:
        while (request := await conn.read_request()) is not None:
            if request.method == "GET":
                await conn.send(response(200, b"0123", headers={"ETag": '"e"'}))
                await asyncio.sleep(0.05)  # in the pool by now: then bytes nobody asked for
                await conn.send(response(200, b"stray"))
                stray.set()
            else:
                await conn.send(NOT_FOUND)

    events: list[RequestEvent] = []
    async with scripted_server(smuggler) as server, Session(
        credentials=KEYS, region="us-east-1", retry=FAST, event_hooks=[events.append],
    ) as session:
        store = session.container(server.endpoint)
        with anyio.fail_after(10):
            assert await store.get_bytes("gone.ts") == b"0123"
            await stray.wait()
            await asyncio.sleep(0.05)  # the loop has read them on the idle connection
            with pytest.raises(ObjectNotFoundError) as info:
                await store.delete_object("gone.ts")
        assert info.value.attempts == 2
        [retried] = [e for e in events if e.kind == "retry"]
        assert isinstance(retried.error, ConnectionLostError) and retried.error.unwritten
        assert [r.method for r in server.requests] == ["GET", "DELETE"]
        assert session.pool.in_use == 0


async def test_a_404_after_a_refused_connection_is_not_found() -> None:
    """The first DELETE found its endpoint refusing connections (a restart); the retry
    reached it and found nothing. A refused connection sent nothing, so that 404 is the
    answer, not the trace of an earlier deletion."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound, not listening: connecting is refused
    servers: list[asyncio.Task[asyncio.Server]] = []

    async def not_found(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(NOT_FOUND)
        await writer.drain()
        writer.close()

    def on_retry(event: RequestEvent) -> None:
        if event.kind == "retry" and not servers:
            sock.listen()  # the retry connects now; the server below answers it
            servers.append(asyncio.get_running_loop().create_task(
                asyncio.start_server(not_found, sock=sock)
            ))

    try:
        async with Session(
            credentials=KEYS, region="us-east-1", retry=FAST, event_hooks=[on_retry],
        ) as session:
            store = session.container(f"http://127.0.0.1:{sock.getsockname()[1]}")
            with anyio.fail_after(10), pytest.raises(ObjectNotFoundError) as info:
                await store.delete_object("gone.ts")
        assert info.value.attempts == 2
    finally:
        for task in servers:
            server = await task
            server.close()
            await server.wait_closed()
        sock.close()


async def test_a_download_entered_twice_is_refused_and_keeps_one_slot() -> None:
    """The second ``async with`` on an open download sent a second GET and replaced the
    first stream, whose connection then held a pool slot until garbage collection."""
    async def ok(conn: Connection) -> None:
        while await conn.read_request() is not None:
            await conn.send(response(200, b"body", headers={"ETag": '"e"'}))

    async with scripted_server(ok) as server, Session(
        credentials=KEYS, region="us-east-1", retry=FAST,
    ) as session:
        store = session.container(server.endpoint)
        download = store.get_object("a.ts")
        async with download as stream:
            with pytest.raises(DownloadAlreadyEnteredError, match="get_object") as info:
                async with download:
                    pass  # pragma: no cover - refused on entry
            assert isinstance(info.value, RuntimeError)
            assert session.pool.in_use == 1
            assert await stream.read() == b"body"
        assert session.pool.in_use == 0
        assert len(server.requests) == 1
        # Once the block has ended it may be entered again, as before.
        async with download as again:
            assert await again.read() == b"body"
        assert session.pool.in_use == 0


@pytest.mark.parametrize("connect", [None, 30.0])
async def test_closing_the_session_ends_a_call_still_connecting(connect: float | None) -> None:
    """After a 503 that closed its connection, the retry opens a new one; the session
    closed meanwhile. aiohttp's close ends the connections it holds, not one still being
    opened: the call went on until Timeouts.connect (forever with None). A listener
    whose accept queue is full never completes the handshake."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):  # fill the accept queue: later handshakes are left unanswered
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    session = Session(
        credentials=KEYS, region="us-east-1", retry=RetryPolicy.none(),
        timeouts=Timeouts(connect=connect),
    )
    try:
        store = session.container(f"http://127.0.0.1:{port}")
        call = asyncio.ensure_future(store.describe_object("a.ts"))
        await asyncio.sleep(0.2)  # connecting
        assert not call.done() and session.pool.in_use == 1
        with anyio.fail_after(2):
            await session.aclose()
            with pytest.raises(SessionClosedError) as info:
                await call
        assert info.value.attempts == 1  # a connection was being opened
        assert session.pool.in_use == 0
    finally:
        await session.aclose()
        for sock in (listener, *fillers):
            sock.close()
