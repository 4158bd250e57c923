"""A live chunk goes to the socket in its producer's own step (issue 20, target 3).

The publisher's pump hands each chunk to every upload that has caught up and waits, and
the upload writes it there (``ChunkLog`` / ``Replay.follow`` and the transport's
``_write_now``), instead of waking the upload's task to write it one loop iteration later,
behind every other rendition's chunk of the same instant. What must still hold on that
path: the bytes and their order, the progress callback's errors, and the write timeout
when the server stops reading.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator

import anyio
import pytest
from scripted_server import Connection, scripted_server

from msd_async import (
    ContainerClient,
    ObjectNotFoundError,
    RetryPolicy,
    Session,
    Timeouts,
    WriteTimeout,
)
from msd_async.live.bodies import ChunkLog
from msd_async.testing import LocalMediaStore

pytestmark = pytest.mark.anyio

CHUNKS = [bytes([i]) * (1000 + i) for i in range(8)]


class _Progress:
    def __init__(self, fail_after: int | None = None) -> None:
        self.sent = 0
        self._fail_after = fail_after
        self._changed = asyncio.Event()

    def __call__(self, sent: int) -> None:
        self.sent = sent
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        if self._fail_after is not None and sent > self._fail_after:
            raise RuntimeError("the progress callback failed")

    async def reach(self, total: int) -> None:
        while self.sent < total:
            await self._changed.wait()


async def _paced(progress: _Progress, seen: list[bool]) -> AsyncIterator[bytes]:
    """Each chunk once the upload has written the ones before (so it has caught up and
    waits); after each, whether it was written by the time the pump asked for the next."""
    total = 0
    for chunk in CHUNKS:
        await progress.reach(total)
        total += len(chunk)
        yield chunk
        seen.append(progress.sent == total)


async def _upload(store: ContainerClient, log: ChunkLog, progress: _Progress) -> None:
    """``put_object`` of the log's replay while its pump runs; raises what it raised."""
    try:
        async with anyio.create_task_group() as tg:
            log.users = 1
            tg.start_soon(log.pump)
            try:
                await store.put_object(
                    "live/seg.ts", log.replay, streaming=True, progress=progress
                )
            finally:
                log.release()
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


async def test_each_chunk_reaches_the_socket_in_its_producers_step(
    store: ContainerClient,
) -> None:
    progress = _Progress()
    seen: list[bool] = []
    await _upload(store, ChunkLog(_paced(progress, seen), 10_000_000), progress)
    # The first chunk may come before the upload waits for it (the connection is new).
    assert seen[1:] == [True] * (len(CHUNKS) - 1), seen
    assert await store.get_bytes("live/seg.ts") == b"".join(CHUNKS)


async def test_a_progress_callback_failing_on_a_followed_chunk_fails_the_upload(
    store: ContainerClient,
) -> None:
    progress = _Progress(fail_after=3 * 1001)
    with pytest.raises(RuntimeError, match="progress callback failed"):
        await _upload(store, ChunkLog(_paced(progress, []), 10_000_000), progress)
    with pytest.raises(ObjectNotFoundError):
        await store.describe_object("live/seg.ts")
    assert store.session.pool.in_use == 0


async def _deaf(conn: Connection) -> None:
    """Reads the request head, then nothing more."""
    await conn.read_request(body=False)
    await asyncio.Event().wait()


async def test_a_followed_upload_to_a_server_that_stops_reading_meets_the_write_timeout(
) -> None:
    """Chunks written in the producer's step stop once the socket is full: the rest wait
    on the writer's own path, where the write timeout holds (written regardless, they
    would pile up in the transport's buffer until the body ended)."""
    produced = 0
    planned = 9_500_000  # at 64 KiB per 20 ms: about 3 s, far longer than the stall takes

    async def live() -> AsyncIterator[bytes]:
        nonlocal produced
        chunk = os.urandom(64 * 1024)
        while produced + len(chunk) <= planned:
            produced += len(chunk)
            yield chunk
            await asyncio.sleep(0.02)

    async with scripted_server(_deaf, receive_buffer=4096) as deaf, Session(
        credentials=LocalMediaStore().credentials,
        region="us-east-1",
        timeouts=Timeouts(write=0.3, read=5.0),
        retry=RetryPolicy.none(),
    ) as session:
        store = session.container(deaf.endpoint)
        log = ChunkLog(live(), 10_000_000)
        started = time.monotonic()
        with pytest.raises(WriteTimeout):
            await _upload(store, log, _Progress())
        assert time.monotonic() - started < 0.3 * 20
        # Noticed while the producer was still producing, not when its body ended.
        assert produced + 64 * 1024 <= planned
        assert session.pool.in_use == 0


async def test_an_upload_cancelled_while_it_follows_lets_go_of_the_log_and_its_connection(
    store: ContainerClient,
) -> None:
    """Cancelled while it waits for the next chunk: the log forgets its sink (a later
    chunk is not written to a dead connection), the connection goes back, and nothing is
    stored."""
    progress = _Progress()
    more = asyncio.Event()

    async def producer() -> AsyncIterator[bytes]:
        yield CHUNKS[0]
        await more.wait()
        yield CHUNKS[1]

    log = ChunkLog(producer(), 10_000_000)
    log.users = 2  # the pump keeps going after the upload is cancelled
    async with anyio.create_task_group() as tg:
        tg.start_soon(log.pump)
        with anyio.move_on_after(30) as scope:
            upload = asyncio.ensure_future(
                store.put_object("live/seg.ts", log.replay, streaming=True, progress=progress)
            )
            await progress.reach(len(CHUNKS[0]))
            await asyncio.sleep(0)  # the upload is back waiting for the next chunk
            upload.cancel()
            with pytest.raises(asyncio.CancelledError):
                await upload
        assert not scope.cancelled_caught
        assert log._waiting == {}
        more.set()  # the next chunk finds no sink to call
        log.release()
        log.release()
    assert progress.sent == len(CHUNKS[0])
    assert store.session.pool.in_use == 0
    with pytest.raises(ObjectNotFoundError):
        await store.describe_object("live/seg.ts")
