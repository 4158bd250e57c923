"""Hot-path regressions found by the transfer benchmarks (benchmarks/run.py).

A reference cycle per request costs a cyclic-GC pass over every response it holds (the
headers, the stream reader, the connection's buffers): ~15 us of a 1 MiB GET's ~250 us.
These check that each operation leaves no cyclic garbage behind.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from msd_async import ContainerClient

pytestmark = pytest.mark.anyio

BODY = bytes(range(256)) * 1024  # 256 KiB: several chunks on the wire


@pytest.fixture
def no_gc() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def _cyclic_garbage(run: Callable[[], Awaitable[object]], times: int = 20) -> list[str]:
    """Type names of the objects only the cyclic GC could free, left by ``times`` runs."""
    await run()  # warm-up: connections, lazy imports
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(times):
            await run()
        gc.collect()
        found = [type(o).__name__ for o in gc.garbage]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    return found


async def _chunks() -> AsyncIterator[bytes]:
    for start in range(0, len(BODY), 65536):
        yield BODY[start : start + 65536]


@pytest.mark.usefixtures("no_gc")
async def test_ranged_get_leaves_no_reference_cycle(mediastore_client: ContainerClient) -> None:
    await mediastore_client.put_object("hot/obj.bin", BODY)

    async def get() -> bytes:
        async with mediastore_client.get_object("hot/obj.bin", range=(1000, 200_000)) as obj:
            return await obj.read()

    assert len(await get()) == 199_001
    assert await _cyclic_garbage(get) == []


@pytest.mark.usefixtures("no_gc")
async def test_abandoned_get_leaves_no_reference_cycle(
    mediastore_client: ContainerClient,
) -> None:
    await mediastore_client.put_object("hot/obj.bin", BODY)

    async def first_chunk_only() -> bytes:
        async with mediastore_client.get_object("hot/obj.bin") as obj:
            return await obj.receive()

    assert await first_chunk_only()
    # Closing a connection leaves asyncio's own transport/socket cycle (raw aiohttp does
    # the same); none of the response's objects may be part of one.
    leftovers = set(await _cyclic_garbage(first_chunk_only))
    assert not leftovers & {"ObjectStream", "ObjectDownload", "Response", "ClientResponse"}


@pytest.mark.usefixtures("no_gc")
async def test_uploads_and_describe_leave_no_reference_cycle(
    mediastore_client: ContainerClient,
) -> None:
    async def put_bytes() -> object:
        return await mediastore_client.put_object("hot/a.ts", BODY, content_type="video/MP2T")

    async def put_stream() -> object:
        return await mediastore_client.put_object("hot/b.ts", _chunks(), streaming=True)

    async def describe() -> object:
        return await mediastore_client.describe_object("hot/a.ts")

    for run in (put_bytes, put_stream, describe):
        assert await _cyclic_garbage(run) == [], run.__name__
