"""Cancelling a task in any await of put/get/list releases everything it held.

No connection stays checked out, no task keeps running, no file descriptor stays open, no
ResourceWarning is emitted, and a cancelled STANDARD upload never becomes visible.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import random
import warnings
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from reliability_helpers import FAST_RETRY, chunks_of, open_fds

from msd_async import ContainerClient, Limits, Session
from msd_async.testing import LocalMediaStore

pytestmark = pytest.mark.anyio

UPLOADS = 1000


async def _settle(condition: Callable[[], bool], within: float = 5.0) -> bool:
    """Wait (in small steps) until ``condition()`` holds: closed sockets and finished
    handlers take a few loop iterations to be reaped."""
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while not condition():
        if loop.time() > end:
            return False
        await asyncio.sleep(0.01)
    return True


async def _endless(first: bytes, parked: asyncio.Event) -> AsyncIterator[bytes]:
    """Yields a chunk, then waits forever: an upload that can only end by cancellation."""
    yield first
    await parked.wait()
    yield b"never sent"


async def test_a_thousand_cancelled_uploads_leak_nothing(tmp_path: Path) -> None:
    rng = random.Random(1000)
    file_body = tmp_path / "body.bin"
    file_body.write_bytes(os.urandom(300_000))
    file_digest = hashlib.sha256(file_body.read_bytes()).hexdigest()
    parked = asyncio.Event()
    baseline_tasks = asyncio.all_tasks()
    baseline_fds = open_fds()

    with warnings.catch_warnings(record=True) as caught_warnings:
        warnings.simplefilter("always")
        server = LocalMediaStore()
        await server.start()
        session = Session(
            credentials=server.credentials,
            region=server.region,
            retry=FAST_RETRY,
            # Fewer connections than uploads: some are cancelled while waiting for one.
            limits=Limits(max_connections=200),
        )
        store = session.container(server.endpoint)
        # The digests a complete upload of each path would have: a visible object must
        # be one of these, whole, never a prefix.
        complete: dict[str, str] = {}
        endless: set[str] = set()
        tasks: list[tuple[str, bool, asyncio.Task[object]]] = []
        for i in range(UPLOADS):
            path = f"cancel/{i % 10}/up-{i}.bin"
            streaming = rng.random() < 0.3
            kind = rng.choice(("bytes", "iterator", "file", "endless", "endless"))
            body: object
            if kind == "bytes":
                data = rng.randbytes(rng.choice((10, 5_000, 200_000)))
                body, complete[path] = data, hashlib.sha256(data).hexdigest()
            elif kind == "iterator":
                data = rng.randbytes(100_000)
                body, complete[path] = chunks_of(data, 4096), hashlib.sha256(data).hexdigest()
            elif kind == "file":
                body, complete[path] = file_body, file_digest
            else:
                body = _endless(rng.randbytes(3000), parked)
                endless.add(path)
            coro = store.put_object(path, body, streaming=streaming)  # type: ignore[arg-type]
            tasks.append((path, streaming, asyncio.create_task(coro)))

        # Cancel each at a random point: before it starts, while it waits for a
        # connection, mid-body, or while it waits for the answer.
        async def cancel_later(task: asyncio.Task[object], delay: float) -> None:
            await asyncio.sleep(delay)
            task.cancel()

        async with asyncio.TaskGroup() as tg:
            for _, _, task in tasks:
                tg.create_task(cancel_later(task, rng.choice((0, 0.001, 0.01, 0.05, 0.2))))
        results = await asyncio.gather(*(t for _, _, t in tasks), return_exceptions=True)
        cancelled = [
            path for (path, _, _), r in zip(tasks, results, strict=True)
            if isinstance(r, asyncio.CancelledError)
        ]
        unexpected = [r for r in results if isinstance(r, BaseException)
                      and not isinstance(r, asyncio.CancelledError)]
        assert not unexpected, unexpected[:3]
        assert endless <= set(cancelled)
        assert len(cancelled) > UPLOADS // 2

        assert session.pool.in_use == 0
        # The server notices every dropped upload and aborts it.
        assert await _settle(lambda: not server.store._streaming)
        visible = {v.path: v for v in server.store.walk()}
        for path in endless:
            assert path not in visible, f"a cancelled upload of {path} is visible"
        for path, version in visible.items():
            # Whatever is visible is a whole upload (the cancel came after it committed).
            assert version.content_sha256 == complete[path], path
        assert len(visible) < UPLOADS - len(endless) + 1

        # The client is still healthy after the storm.
        await store.put_object("cancel/after.bin", b"fine")
        assert await store.get_bytes("cancel/after.bin") == b"fine"

        await session.aclose()
        await server.close()
        # Nothing of ours or the server's is left running.
        assert await _settle(lambda: asyncio.all_tasks() <= baseline_tasks), (
            asyncio.all_tasks() - baseline_tasks
        )
        gc.collect()
        assert await _settle(lambda: open_fds() <= baseline_fds), (open_fds(), baseline_fds)
    resource_warnings = [w for w in caught_warnings if w.category is ResourceWarning]
    assert not resource_warnings, resource_warnings[:3]


@pytest.fixture
def store(session: Session, mediastore_server: LocalMediaStore) -> ContainerClient:
    return session.container(mediastore_server.endpoint)


async def test_cancel_during_body_iteration_releases_the_connection(
    store: ContainerClient, session: Session, mediastore_server: LocalMediaStore
) -> None:
    data = os.urandom(5_000_000)
    await store.put_object("big.bin", data)
    first_chunk = asyncio.Event()

    async def reader() -> int:
        received = 0
        async with store.get_object("big.bin") as obj:
            async for chunk in obj:
                received += len(chunk)
                first_chunk.set()
                await asyncio.sleep(0.01)  # a slow consumer: the body is mid-flight
        return received

    for _ in range(20):
        first_chunk.clear()
        task = asyncio.create_task(reader())
        await first_chunk.wait()
        assert session.pool.in_use == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert session.pool.in_use == 0
    assert await store.get_bytes("big.bin") == data


async def test_cancel_while_waiting_for_the_response_headers(
    store: ContainerClient, session: Session, mediastore_server: LocalMediaStore
) -> None:
    await store.put_object("slow.bin", b"x")
    mediastore_server.faults.inject("delay", times=None, method="GET", delay=0.5)
    task = asyncio.create_task(store.get_bytes("slow.bin"))
    await asyncio.sleep(0.05)
    assert session.pool.in_use == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert session.pool.in_use == 0
    mediastore_server.faults.clear()
    assert await store.get_bytes("slow.bin") == b"x"


async def test_cancel_during_list_items_releases_the_connection(
    store: ContainerClient, session: Session
) -> None:
    async with asyncio.TaskGroup() as tg:
        for i in range(30):
            tg.create_task(store.put_object(f"list/item-{i:02}", b"x"))
    seen: list[str] = []
    halfway = asyncio.Event()

    async def lister() -> None:
        async for item in store.list_items("list", page_size=2):
            seen.append(item.name)
            if len(seen) == 10:
                halfway.set()
            await asyncio.sleep(0)

    for _ in range(10):
        seen.clear()
        halfway.clear()
        task = asyncio.create_task(lister())
        await halfway.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert session.pool.in_use == 0
        assert 10 <= len(seen) < 30
    names = [item.name async for item in store.list_items("list")]
    assert names == [f"item-{i:02}" for i in range(30)]


async def test_cancelled_standard_upload_is_never_visible(
    store: ContainerClient, session: Session, mediastore_server: LocalMediaStore
) -> None:
    old = await store.put_object("seg.ts", b"old version")
    for delay in (0, 0.001, 0.005, 0.02, 0.05):
        parked = asyncio.Event()
        task = asyncio.create_task(
            store.put_object("seg.ts", _endless(os.urandom(50_000), parked))
        )
        await asyncio.sleep(delay)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert session.pool.in_use == 0
        info = await store.describe_object("seg.ts")
        assert info.etag == old.etag
    assert await store.get_bytes("seg.ts") == b"old version"
