"""The read timeout as the transport's watchdog keeps it (one timer for every wait, see
``msd_async.transport._Watchdog``): progress inside one whole-body read keeps it alive, a
stall ends it, and a body read in another task than the one that sent the request times
out in the reading task only.

Bounds are multiples of the read timeout with wide margins (a busy 2-core machine): they
say "the timeout ended it, not the server's much longer stall".
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable

import pytest
from scripted_server import Connection, response_head, scripted_server

from msd_async import (
    Credentials,
    MediaStoreError,
    ReadTimeout,
    RetryPolicy,
    Session,
    Timeouts,
)

pytestmark = pytest.mark.anyio

READ = 0.3
PUT_ANSWER = json.dumps(
    {"ContentSHA256": "b" * 64, "ETag": "e" * 32, "StorageClass": "TEMPORAL"}
).encode()


def _session() -> Session:
    return Session(
        credentials=Credentials("AKIDEXAMPLE", "secret"),
        region="us-east-1",
        retry=RetryPolicy.none(),
        timeouts=Timeouts(read=READ),
    )


def _trickling_answer(  # type: ignore[no-untyped-def]
    gap: float, stall_after: int | None = None, piece: int = 1
):
    """Answers each PUT with its JSON ``piece`` bytes every ``gap`` seconds (or stalls for
    good after ``stall_after`` bytes)."""

    async def handler(conn: Connection) -> None:
        while await conn.read_request() is not None:
            await conn.send(
                response_head(
                    200,
                    {"Content-Length": len(PUT_ANSWER), "Content-Type": "application/json"},
                )
            )
            for i in range(0, len(PUT_ANSWER), piece):
                if stall_after is not None and i == stall_after:
                    await asyncio.sleep(60 * READ)
                await conn.send(PUT_ANSWER[i : i + piece])
                await asyncio.sleep(gap)

    return handler


async def test_a_body_that_keeps_arriving_outlives_the_read_timeout() -> None:
    """One whole-body read lasting several read timeouts, each gap a fraction of it."""
    # Four bytes a write: one byte a write made the body last 16 read timeouts (5 s),
    # where 4 prove as much.
    gap, piece = READ / 10, 4
    assert len(PUT_ANSWER) / piece * gap > 3 * READ
    async with scripted_server(
        _trickling_answer(gap, piece=piece)
    ) as server, _session() as session:
        store = session.container(server.endpoint)
        result = await store.put_object("a.bin", b"x" * 1000)
        assert result.etag == "e" * 32
        assert session.pool.in_use == 0


async def test_a_body_that_stalls_in_one_read_times_out() -> None:
    async with scripted_server(
        _trickling_answer(0.0, stall_after=10)
    ) as server, _session() as session:
        store = session.container(server.endpoint)
        started = time.monotonic()
        with pytest.raises(ReadTimeout) as caught:
            await store.put_object("a.bin", b"x" * 1000)
        assert READ * 0.9 <= time.monotonic() - started < 20 * READ
        assert isinstance(caught.value.__cause__, TimeoutError)
        assert session.pool.in_use == 0


async def test_a_stream_read_in_another_task_times_out_there_only() -> None:
    """The task that opened the download goes on untouched while another task reads the
    stalled body and gets the ReadTimeout."""

    async def stall_mid_body(conn: Connection) -> None:
        while await conn.read_request() is not None:
            await conn.send(response_head(200, {"Content-Length": 100}) + b"a" * 10)
            await asyncio.sleep(60 * READ)

    async with scripted_server(stall_mid_body) as server, _session() as session:
        store = session.container(server.endpoint)
        async with store.get_object("a.bin") as obj:

            async def read_it() -> bytes:
                return await obj.read()

            reader = asyncio.create_task(read_it())
            started = time.monotonic()
            # The opener keeps working meanwhile: a cancellation meant for the reader
            # would end this sleep early.
            await asyncio.sleep(5 * READ)
            assert time.monotonic() - started >= 5 * READ * 0.9
            with pytest.raises(ReadTimeout):
                await reader
        assert session.pool.in_use == 0


def _stalling(stage: str):  # type: ignore[no-untyped-def]
    """Stalls before the answer (``stage`` "answer") or 10 bytes into its body."""

    async def handler(conn: Connection) -> None:
        if await conn.read_request() is None:
            return
        if stage != "answer":
            await conn.send(
                response_head(200, {"Content-Length": 1000, "ETag": '"e"'}) + b"x" * 10
            )
        await asyncio.sleep(60 * READ)

    return handler


@pytest.mark.parametrize("stage", ["answer", "read", "chunks"])
async def test_a_cancellation_in_the_watchdogs_iteration_is_not_swallowed(
    stage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The caller's cancellation (a ``task.cancel()``, an outer timeout) landing in the
    loop iteration where the watchdog cancelled the same wait: the transport took both
    for its own, raised ReadTimeout, and the caller's cancellation was lost (the task's
    ``cancelling()`` left at 1, so an ``asyncio.timeout`` around it misread its expiry)."""
    from msd_async import transport

    sweep = transport._Watchdog._sweep

    def sweep_and_cancel_too(self: transport._Watchdog) -> None:
        open_watches = list(self._watches)
        sweep(self)
        for watch in open_watches:
            if watch.fired:
                watch.task.cancel()  # the caller's, in the same iteration

    monkeypatch.setattr(transport._Watchdog, "_sweep", sweep_and_cancel_too)
    async with scripted_server(_stalling(stage)) as server, _session() as session:
        store = session.container(server.endpoint)

        async def call() -> bytes:
            async with store.get_object("a.bin") as obj:
                if stage == "chunks":
                    return b"".join([chunk async for chunk in obj])
                return await obj.read()

        task = asyncio.create_task(call())
        done, _ = await asyncio.wait([task], timeout=20 * READ)
        assert done, "the stalled call did not end"
        assert task.cancelled(), repr(task.exception())
        assert session.pool.in_use == 0


@pytest.mark.parametrize("stage", ["answer", "read", "chunks"])
async def test_a_read_timeout_in_cleanup_after_a_cancellation_is_a_read_timeout(
    stage: str,
) -> None:
    """Cleanup that makes a call after its task was cancelled (an ``except
    CancelledError:`` block, an anyio shielded scope) runs with the task's
    ``cancelling()`` at 1. The transport counted that earlier, already delivered
    cancellation as a new one of the caller's: the cleanup's read timeout came as a
    CancelledError, and a cleanup that handles the client's errors was cut short."""
    async with scripted_server(_stalling(stage)) as server, _session() as session:
        store = session.container(server.endpoint)
        cleanup: list[BaseException] = []
        asleep = asyncio.Event()

        async def call() -> bytes:
            async with store.get_object("a.bin") as obj:
                if stage == "chunks":
                    return b"".join([chunk async for chunk in obj])
                return await obj.read()

        async def work() -> None:
            try:
                asleep.set()
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                try:
                    await call()
                except (MediaStoreError, asyncio.CancelledError) as exc:
                    cleanup.append(exc)
                raise

        await _cancel_into_a_timed_out_cleanup(work, asleep, cleanup, session)


async def _cancel_into_a_timed_out_cleanup(
    work: Callable[[], Awaitable[None]], ready: asyncio.Event,
    cleanup: list[BaseException], session: Session,
) -> None:
    """Run ``work``, cancel it once ``ready``, and check that the call its cleanup makes
    ended with a read timeout, and the cleanup's own cancellation still ended the task."""
    task = asyncio.create_task(work())
    await ready.wait()
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=20 * READ)
    assert done, "the stalled cleanup did not end"
    (error,) = cleanup
    # Mid-body, the stream resumes after the timeout and the scripted server ignores its
    # Range: that ProtocolError's cause is the read timeout.
    assert isinstance(error, ReadTimeout) or isinstance(error.__cause__, ReadTimeout), (
        repr(error)
    )
    assert task.cancelled()
    assert session.pool.in_use == 0


async def test_a_body_read_in_cleanup_after_a_cancellation_times_out_as_a_read_timeout() -> (
    None
):
    """The answer came before the task was cancelled; its body is read in the cleanup
    after (``cancelling()`` 1 by then, 0 when the request was sent): the count the read
    compares with is the reading task's now, not the sender's then."""
    async with scripted_server(_stalling("read")) as server, _session() as session:
        store = session.container(server.endpoint)
        cleanup: list[BaseException] = []
        answered = asyncio.Event()

        async def work() -> None:
            async with store.get_object("a.bin") as obj:
                try:
                    answered.set()
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    try:
                        async for _ in obj:
                            pass
                    except (MediaStoreError, asyncio.CancelledError) as exc:
                        cleanup.append(exc)
                    raise

        await _cancel_into_a_timed_out_cleanup(work, answered, cleanup, session)
