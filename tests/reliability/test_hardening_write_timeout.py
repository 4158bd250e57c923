"""The write timeout, kept with one timer per upload (not one per chunk), counts only the
time the server takes to accept bytes: a slow producer never trips it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from msd_async import Session, Timeouts
from msd_async.testing import LocalMediaStore

pytestmark = pytest.mark.anyio

WRITE = 0.2


async def test_time_spent_in_the_callers_iterator_does_not_count(
    mediastore_server: LocalMediaStore,
) -> None:
    async def slow_encoder() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"x" * 10_000
            await asyncio.sleep(WRITE * 2)  # longer than the write timeout, every time

    async with Session(
        credentials=mediastore_server.credentials,
        region=mediastore_server.region,
        timeouts=Timeouts(write=WRITE),
    ) as session:
        store = session.container(mediastore_server.endpoint)
        result = await store.put_object("slow/encoder.ts", slow_encoder(), streaming=True)
        assert result.size == 40_000
        assert (await store.describe_object("slow/encoder.ts")).content_length == 40_000
        assert session.pool.in_use == 0
