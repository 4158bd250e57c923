"""1,000 PUT/GET round trips through a server that fails 20% of requests on purpose.

Every fault kind that can lose or corrupt data is in the mix: 500, 503, throttling, uploads
cut mid-body and downloads cut mid-body. The client must hide all of them: every object
arrives intact (SHA-256 compared), every download yields exactly the object, and the
server never holds a half-written object.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from reliability_helpers import FAST_RETRY, chunks_of

from msd_async import Session
from msd_async.client import ContainerClient
from msd_async.retry import RetryBudget
from msd_async.testing import FaultPlan, LocalMediaStore

pytestmark = pytest.mark.anyio

ROUND_TRIPS = 1000
CONCURRENCY = 32
FAULT_KINDS = {"500", "503", "throttle", "cut-upload", "cut-download"}
#: One GET in twenty is cut here (a fifth of the requests fault, a quarter of those as a
#: cut), so four cuts in a row exhaust the default three resumes for one download in
#: 160,000: about once in 160 runs of this test. Eight resumes make it one run in 10**8.
MAX_RESUMES = 8


def _body_for(rng: random.Random, kind: str, data: bytes, tmp: Path, i: int) -> object:
    if kind == "bytes":
        return data
    if kind == "file":
        path = tmp / f"body-{i}"
        path.write_bytes(data)
        return path
    if kind == "reopenable":

        def reopen() -> AsyncIterator[bytes]:
            return chunks_of(data, rng.choice((1000, 4096, 65536)))

        return reopen
    assert kind == "replay-buffered"
    return chunks_of(data, 3000)


async def _round_trip(
    store: ContainerClient,
    rng: random.Random,
    i: int,
    tmp: Path,
    expected: dict[str, str],
    kinds_used: Counter[str],
) -> None:
    size = rng.choice((0, 1, 100, 2000, 20_000, 70_000, 200_000))
    data = rng.randbytes(size)
    kind = rng.choice(("bytes", "file", "reopenable", "replay-buffered"))
    streaming = rng.random() < 0.5
    kinds_used[f"{kind}/{'STREAMING' if streaming else 'STANDARD'}"] += 1
    path = f"rt/{i % 17}/obj-{i}.bin"
    body: object = _body_for(rng, kind, data, tmp, i)
    result = await store.put_object(
        path,
        body,  # type: ignore[arg-type]
        content_type="application/octet-stream",
        streaming=streaming,
        replay_buffer=kind == "replay-buffered",
    )
    digest = hashlib.sha256(data).hexdigest()
    assert result.content_sha256 == digest, path
    expected[path] = digest

    ranged = size > 10 and rng.random() < 0.25
    if ranged:
        first = rng.randrange(size)
        last = rng.randrange(first, size)
        async with store.get_object(path, range=(first, last), max_resumes=MAX_RESUMES) as obj:
            got = bytearray()
            async for chunk in obj:
                got += chunk
            assert obj.etag == result.etag
        assert bytes(got) == data[first : last + 1], (path, first, last)
    else:
        async with store.get_object(path, max_resumes=MAX_RESUMES) as obj:
            got = bytearray()
            async for chunk in obj:
                got += chunk
            assert obj.etag == result.etag
        assert hashlib.sha256(got).hexdigest() == digest, path


async def test_round_trips_survive_twenty_percent_faults(tmp_path: Path) -> None:
    plan = FaultPlan(rate=0.2, kinds=FAULT_KINDS, seed=20240613)
    rng = random.Random(4)
    expected: dict[str, str] = {}
    kinds_used: Counter[str] = Counter()
    async with LocalMediaStore(faults=plan) as server, Session(
        credentials=server.credentials, region=server.region, retry=FAST_RETRY
    ) as session:
        # A budget big enough for a 20% failure rate: the test is about correctness, the
        # budget's own behaviour is unit-tested.
        session._context.budget = RetryBudget(100_000)
        store = session.container(server.endpoint)
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(i: int) -> None:
            async with gate:
                await _round_trip(store, random.Random(rng.random()), i, tmp_path, expected,
                                  kinds_used)

        async with asyncio.TaskGroup() as tg:
            for i in range(ROUND_TRIPS):
                tg.create_task(one(i))

        faults = Counter(kind for kind, _, _ in plan.history)
        # The mix really was injected: every kind, about 20% of the requests.
        assert set(faults) == FAULT_KINDS, faults
        assert sum(faults.values()) >= ROUND_TRIPS * 2 * 0.15
        assert len(kinds_used) == 8, kinds_used

        # Afterwards, faults off: every object is there, whole, and nothing else is.
        plan.rate = 0.0
        assert session.pool.in_use == 0
        versions = {v.path: v for v in server.store.walk()}
        assert set(versions) == set(expected)
        for path, digest in expected.items():
            assert versions[path].content_sha256 == digest
        assert not server.store._streaming, "an in-progress upload is still visible"

        async def verify(path: str) -> None:
            async with gate:
                data = await store.get_bytes(path)
            assert hashlib.sha256(data).hexdigest() == expected[path], path

        async with asyncio.TaskGroup() as tg:
            for path in expected:
                tg.create_task(verify(path))
        listed = 0
        for folder in range(17):
            async for item in store.list_items(f"rt/{folder}"):
                assert item.content_length == versions[f"rt/{folder}/{item.name}"].size
                listed += 1
        assert listed == ROUND_TRIPS

