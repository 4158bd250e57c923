"""The public API as a demanding user misuses it: a read cancelled by a tiny
``asyncio.wait_for`` and then read again, a Session closed from another task while
downloads are mid-body and other calls wait for headers or for the pool. Each ends in its
own result or a typed error, never a hang, and never a short body presented as complete."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from scripted_server import Connection, response_head, scripted_server

from msd_async import (
    ConcurrentReadError,
    ConnectionLostError,
    Credentials,
    Limits,
    RetryPolicy,
    Session,
    SessionAlreadyEnteredError,
    SessionClosedError,
    Timeouts,
)
from msd_async.testing import LocalMediaStore

pytestmark = pytest.mark.anyio

BODY = bytes(range(256)) * 40
#: Generous bound for something that happens at once (2 busy cores, uvloop or not).
PROMPTLY = 5.0


def _head(status: int = 200, **extra: str | int) -> bytes:
    return response_head(status, {"Content-Length": len(BODY), "ETag": '"v1"', **extra})


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(PROMPTLY):
        while not condition():  # noqa: ASYNC110 - state set by other tasks on this loop
            await asyncio.sleep(0.005)


# --- a read cancelled mid-way, then read again -------------------------------------------


async def test_a_read_cancelled_while_it_resumes_leaves_the_stream_broken_not_ended(
    scripted_session: Session,
) -> None:
    """The body is cut after 3000 bytes; the read that resumes it is cancelled (a caller's
    ``wait_for``) while the ranged request waits for its answer. The next read returned
    ``b""``: 3000 of 10240 bytes read as the whole object."""
    resumed = asyncio.Event()

    async def handler(conn: Connection) -> None:
        await conn.read_request()
        if conn.index == 0:
            await conn.send(_head() + BODY[:3000])
            await asyncio.sleep(0.05)
            conn.abort()
            return
        resumed.set()
        await asyncio.sleep(60)  # the resume is never answered

    async with scripted_server(handler) as server:
        store = scripted_session.container(server.endpoint)
        async with store.get_object("vod/a.mp4") as obj:
            assert await obj.receive() == BODY[:3000]
            reading = asyncio.create_task(obj.receive())
            async with asyncio.timeout(PROMPTLY):
                await resumed.wait()
            reading.cancel()
            with pytest.raises(asyncio.CancelledError):
                await reading
            with pytest.raises(ConnectionLostError) as caught:
                await obj.read()
            assert "3000 of 10240" in str(caught.value)
            # Every later read says so again; none looks like the end of the body.
            with pytest.raises(ConnectionLostError):
                await obj.receive()
        assert scripted_session.pool.in_use == 0


def _first_1000_then(release: asyncio.Event) -> Callable[[Connection], Awaitable[None]]:
    """A peer that sends the head and 1000 bytes of BODY, then the rest once released."""

    async def handler(conn: Connection) -> None:
        await conn.read_request()
        await conn.send(_head() + BODY[:1000])
        await release.wait()
        await conn.send(BODY[1000:])
        await asyncio.sleep(60)

    return handler


@pytest.mark.parametrize("how", ["iter_chunks", "iter_range"])
async def test_a_cancelled_step_of_a_chunk_iterator_loses_no_bytes(
    scripted_session: Session, how: str
) -> None:
    """``iter_chunks`` (and ``iter_range`` cutting a window out of a 200) were async
    generators: a ``wait_for`` that cancelled one step finished the generator, the bytes
    it held were lost and the next step said the body had ended."""
    release = asyncio.Event()
    async with scripted_server(_first_1000_then(release)) as server:
        store = scripted_session.container(server.endpoint)
        # iter_range: the server ignores the range (an in-progress STREAMING object does);
        # the window starts past the first part, so the first step is still waiting.
        window = (1500, 5009)
        async with store.get_object(
            "vod/a.mp4", range=window if how == "iter_range" else None
        ) as obj:
            chunks = obj.iter_chunks(4096) if how == "iter_chunks" else obj.iter_range()
            step = asyncio.ensure_future(anext(chunks))
            await _until(lambda: obj.bytes_received == 1000)
            await asyncio.sleep(0.05)  # the step now waits for more
            assert not step.done()
            step.cancel()
            with pytest.raises(asyncio.CancelledError):
                await step
            release.set()
            got = b"".join([chunk async for chunk in chunks])
    assert got == (BODY if how == "iter_chunks" else BODY[window[0] : window[1] + 1])


async def test_two_tasks_reading_one_stream_get_a_typed_error_and_no_byte_is_lost(
    scripted_session: Session,
) -> None:
    """The second reader got aiohttp's bare RuntimeError ("readany() called while another
    coroutine is already waiting"); now a ConcurrentReadError saying what to do, and the
    first reader still gets every byte."""
    release = asyncio.Event()
    async with scripted_server(_first_1000_then(release)) as server:
        store = scripted_session.container(server.endpoint)
        async with store.get_object("vod/a.mp4") as obj:
            assert await obj.receive() == BODY[:1000]
            first = asyncio.ensure_future(obj.read())
            await asyncio.sleep(0.05)  # the first reader now waits for more
            with pytest.raises(ConcurrentReadError, match="one task at a time"):
                await obj.receive()
            with pytest.raises(RuntimeError):  # what it was, for code that caught that
                await obj.receive()
            release.set()
            assert await asyncio.wait_for(first, PROMPTLY) == BODY[1000:]
            assert await obj.receive() == b""


# --- Session.aclose() from another task ---------------------------------------------------


async def test_closing_the_session_ends_every_call_in_flight_or_queued() -> None:
    """A download mid-body waited for more bytes until Timeouts.read (forever with
    ``read=None``) after ``aclose()``: aiohttp drops the connection without waking its
    reader. Now every call ends at once: the reads, the request waiting for its headers
    and the calls queued for the pool all raise SessionClosedError."""

    async def handler(conn: Connection) -> None:
        request = await conn.read_request()
        if request is not None and request.target.startswith("/vod/"):
            await conn.send(_head() + BODY[:100])
        await asyncio.sleep(60)  # stalls mid-body, or before any answer

    session = Session(
        credentials=Credentials("AKIDEXAMPLE", "secret"),
        region="us-east-1",
        retry=RetryPolicy.none(),
        limits=Limits(max_connections=3),
        timeouts=Timeouts(read=None),
    )
    async with scripted_server(handler) as server:
        store = session.container(server.endpoint)

        async def download(path: str) -> bytes:
            async with store.get_object(path) as obj:
                return await obj.read()

        calls = [
            asyncio.create_task(download("vod/a.mp4")),
            asyncio.create_task(download("vod/b.mp4")),
            asyncio.create_task(store.get_bytes("headers/never.ts")),
        ]
        await _until(lambda: session.pool.in_use == 3)
        calls += [asyncio.create_task(store.get_bytes(f"queued/{n}.ts")) for n in range(3)]
        calls.append(asyncio.create_task(store.put_object("queued/p.ts", b"x" * 10)))
        await _until(lambda: session.pool.waiting == 4)
        await session.aclose()
        _, pending = await asyncio.wait(calls, timeout=PROMPTLY)
        for task in pending:
            task.cancel()
        assert not pending, "calls still running after Session.aclose()"
        errors = [task.exception() for task in calls]
        for error in errors:
            assert isinstance(error, SessionClosedError), repr(error)
        # Each its own: one instance raised in every queued task gathered all their
        # tracebacks, and what one caller set on it (a retry's attempts) the others saw.
        assert len({id(error) for error in errors}) == len(errors)
        assert session.pool.in_use == 0


async def test_a_session_already_entered_refuses_another_block(
    mediastore_server: LocalMediaStore,
) -> None:
    """A nested ``async with session`` (or another task's) was allowed, and its exit closed
    the session under the outer block: the outer block's next call raised
    SessionClosedError. The second entry is refused, and the session stays open."""
    server = mediastore_server
    async with Session(credentials=server.credentials, region=server.region) as session:
        store = session.container(server.endpoint)
        await store.put_object("enter/a.bin", b"a")
        with pytest.raises(SessionAlreadyEnteredError, match="enter it once") as info:
            async with session:
                pass
        assert isinstance(info.value, RuntimeError)

        async def other_task() -> None:
            async with session:
                pass

        with pytest.raises(SessionAlreadyEnteredError):
            await asyncio.create_task(other_task())
        assert not session.closed
        assert await store.get_bytes("enter/a.bin") == b"a"
    assert session.closed


async def test_a_closed_session_cannot_be_entered_again() -> None:
    """``async with session`` on a closed Session went ahead; its calls failed later."""
    session = Session(credentials=Credentials("AKIDEXAMPLE", "secret"), region="us-east-1")
    async with session:
        pass
    with pytest.raises(SessionClosedError, match="closed"):
        async with session:
            pass
