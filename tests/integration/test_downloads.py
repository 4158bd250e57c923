"""GetObject as an async stream: metadata, ranges, chunking, files, and connection release."""

from __future__ import annotations

import datetime as dt
import io
import logging
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from msd_async import (
    ContainerClient,
    InvalidRangeError,
    RangeNotSatisfiableError,
    Session,
)
from msd_async.rules import ByteRange
from msd_async.testing import LocalMediaStore

pytestmark = pytest.mark.anyio

SIZE = 1000
BODY = random.Random(1).randbytes(SIZE)
BIG = random.Random(2).randbytes(4 * 1024 * 1024 + 17)


@pytest.fixture
async def session(mediastore_server: LocalMediaStore) -> AsyncIterator[Session]:
    async with Session(
        credentials=mediastore_server.credentials, region=mediastore_server.region
    ) as session:
        yield session


@pytest.fixture
async def store(session: Session, mediastore_server: LocalMediaStore) -> ContainerClient:
    client = session.container(mediastore_server.endpoint)
    await client.put_object(
        "vod/obj.bin", BODY, content_type="video/mp4", cache_control="max-age=60"
    )
    await client.put_object("vod/big.bin", BIG)
    return client


# (range, first, last) with ``last`` inclusive, for a 1000-byte object.
RANGES: list[tuple[ByteRange, int, int]] = [
    ((0, 99), 0, 99),
    ((100, 199), 100, 199),
    ((0, SIZE - 1), 0, SIZE - 1),
    ((990, None), 990, SIZE - 1),
    ((0, None), 0, SIZE - 1),
    ((None, 10), SIZE - 10, SIZE - 1),
    ((None, SIZE + 50), 0, SIZE - 1),  # a suffix longer than the object is the object
    ("bytes=5-9", 5, 9),
    ("bytes=995-", 995, SIZE - 1),
    ("bytes=-3", SIZE - 3, SIZE - 1),
    ((990, 5000), 990, SIZE - 1),  # end past the object is clamped
    ("bytes=998-100000", 998, SIZE - 1),
    ((500, 500), 500, 500),  # one byte
    ((SIZE - 1, SIZE - 1), SIZE - 1, SIZE - 1),
    ((None, 1), SIZE - 1, SIZE - 1),
]


@pytest.mark.parametrize(("byte_range", "first", "last"), RANGES, ids=str)
async def test_every_range_form_returns_exact_bytes(
    store: ContainerClient, byte_range: ByteRange, first: int, last: int
) -> None:
    async with store.get_object("vod/obj.bin", range=byte_range) as obj:
        assert obj.status == 206
        assert obj.content_range == (first, last, SIZE)
        assert obj.content_length == last - first + 1
        assert obj.content_type == "video/mp4"
        data = await obj.read()
    assert data == BODY[first : last + 1]
    assert await store.get_bytes("vod/obj.bin", range=byte_range) == BODY[first : last + 1]


@pytest.mark.parametrize("byte_range", [(SIZE, None), (SIZE, SIZE + 10), "bytes=5000-"])
async def test_range_past_the_end_raises_range_not_satisfiable(
    store: ContainerClient, session: Session, byte_range: ByteRange
) -> None:
    with pytest.raises(RangeNotSatisfiableError) as info:
        async with store.get_object("vod/obj.bin", range=byte_range):
            raise AssertionError("a 416 must not produce a stream")
    assert info.value.status == 416
    assert session.pool.in_use == 0


@pytest.mark.parametrize(
    "byte_range",
    [(5, 4), (-1, 5), (None, 0), (None, None), (1.5, 2), "bytes=1-2,4-5", "bytes=-0", "1-2"],
    ids=str,
)
async def test_invalid_ranges_are_refused_before_sending(
    store: ContainerClient, server_requests: list[logging.LogRecord], byte_range: object
) -> None:
    before = len(server_requests)
    with pytest.raises(InvalidRangeError):
        store.get_object("vod/obj.bin", range=byte_range)  # type: ignore[arg-type]
    assert len(server_requests) == before


async def test_stream_metadata(store: ContainerClient) -> None:
    put = await store.put_object(
        "meta.ts", b"abc", content_type="video/MP2T", cache_control="no-store"
    )
    async with store.get_object("meta.ts") as obj:
        assert obj.status == 200
        assert obj.content_range is None
        assert obj.content_length == 3
        assert obj.etag == put.etag
        assert obj.content_type == "video/MP2T"
        assert obj.cache_control == "no-store"
        assert obj.last_modified is not None
        assert dt.timedelta(0) <= dt.datetime.now(dt.UTC) - obj.last_modified < dt.timedelta(
            minutes=1
        )
        assert obj.request_id
        assert await obj.read() == b"abc"
        assert obj.bytes_received == 3
        # A consumed body stays consumed.
        assert await obj.read() == b""


@pytest.mark.parametrize(
    ("path", "size"),
    [
        ("vod/obj.bin", 1),
        ("vod/obj.bin", 7),
        ("vod/big.bin", 188),  # a TS packet
        ("vod/big.bin", 65_536),
        ("vod/big.bin", 1_000_000),
        ("vod/big.bin", len(BIG)),
        ("vod/big.bin", len(BIG) + 1),
    ],
)
async def test_iter_chunks_yields_exact_sizes(
    store: ContainerClient, path: str, size: int
) -> None:
    expected = BODY if path == "vod/obj.bin" else BIG
    async with store.get_object(path) as obj:
        chunks = [chunk async for chunk in obj.iter_chunks(size)]
    full, rest = divmod(len(expected), size)
    assert [len(c) for c in chunks] == [size] * full + ([rest] if rest else [])
    assert b"".join(chunks) == expected


async def test_iter_chunks_refuses_a_non_positive_size(store: ContainerClient) -> None:
    async with store.get_object("vod/obj.bin") as obj:
        with pytest.raises(ValueError, match="positive"):
            await anext(obj.iter_chunks(0))


async def test_write_to_a_path_and_a_file(store: ContainerClient, tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old contents that are longer than nothing" * 1000)
    async with store.get_object("vod/big.bin") as obj:
        assert await obj.write_to(target) == len(BIG)
    assert target.read_bytes() == BIG

    buffer = io.BytesIO()
    async with store.get_object("vod/big.bin", range=(10, 1_000_009)) as obj:
        assert await obj.write_to(buffer) == 1_000_000
    assert buffer.getvalue() == BIG[10:1_000_010]


async def test_break_after_the_first_chunk_releases_the_connection(
    store: ContainerClient, session: Session
) -> None:
    async with store.get_object("vod/big.bin") as obj:
        async for chunk in obj:
            assert chunk == BIG[: len(chunk)]
            break
        assert session.pool.in_use == 1
    assert session.pool.in_use == 0
    # The session still works, on a fresh or reused connection.
    assert await store.get_bytes("vod/big.bin") == BIG
    assert session.pool.in_use == 0


async def test_exception_inside_the_block_releases_the_connection(
    store: ContainerClient, session: Session
) -> None:
    class Stop(Exception):
        pass

    with pytest.raises(Stop):
        async with store.get_object("vod/big.bin") as obj:
            await anext(aiter(obj))
            raise Stop
    assert session.pool.in_use == 0
    with pytest.raises(Stop):
        async with store.get_object("vod/big.bin"):
            raise Stop  # before reading a byte
    assert session.pool.in_use == 0
    assert await store.get_bytes("vod/obj.bin", range=(0, 9)) == BODY[:10]
    assert session.pool.in_use == 0


async def test_many_abandoned_streams_do_not_exhaust_a_small_pool(
    mediastore_server: LocalMediaStore, store: ContainerClient
) -> None:
    from msd_async import Limits, Timeouts

    async with Session(
        credentials=mediastore_server.credentials,
        region=mediastore_server.region,
        limits=Limits(max_connections=2),
        timeouts=Timeouts(pool=2.0),
    ) as small:
        client = small.container(mediastore_server.endpoint)
        for _ in range(10):
            async with client.get_object("vod/big.bin") as obj:
                await anext(aiter(obj))
        assert small.pool.in_use == 0
        assert await client.get_bytes("vod/obj.bin") == BODY


async def test_fully_read_stream_returns_its_connection_to_the_pool(
    store: ContainerClient, session: Session
) -> None:
    async with store.get_object("vod/big.bin") as obj:
        assert await obj.read() == BIG
    assert session.pool.in_use == 0
    assert session.pool.idle >= 1  # drained to the end: kept alive for reuse


@pytest.mark.parametrize(
    ("byte_range", "first", "last"),
    [(None, 0, len(BIG) - 1), ((10, 2_000_009), 10, 2_000_009), ((None, 3_000_000), None, None)],
    ids=["whole", "range", "suffix"],
)
async def test_a_cut_body_resumes_from_where_it_stopped(
    mediastore_server: LocalMediaStore,
    store: ContainerClient,
    session: Session,
    byte_range: ByteRange | None,
    first: int | None,
    last: int | None,
) -> None:
    if first is None:
        first, last = len(BIG) - 3_000_000, len(BIG) - 1
    assert last is not None
    mediastore_server.faults.inject("cut-download", method="GET", path="vod/big.bin",
                                    after_bytes=100_000)
    async with store.get_object("vod/big.bin", range=byte_range) as obj:
        data = await obj.read()
        assert obj.resumes == 1
    assert data == BIG[first : last + 1]
    assert session.pool.in_use == 0


@pytest.mark.parametrize("change", ["shorter", "same-size", "deleted"])
async def test_a_resume_that_finds_another_version_raises_object_changed(
    mediastore_server: LocalMediaStore, store: ContainerClient, session: Session, change: str
) -> None:
    from msd_async import ObjectChangedError

    mediastore_server.faults.inject("cut-download", method="GET", path="vod/big.bin",
                                    after_bytes=100_000)
    with pytest.raises(ObjectChangedError) as info:
        async with store.get_object("vod/big.bin") as obj:
            old_etag = obj.etag
            await anext(aiter(obj))
            if change == "deleted":
                await store.delete_object("vod/big.bin")
            else:
                await store.put_object(
                    "vod/big.bin", b"a new version" if change == "shorter" else BIG
                )
            await obj.read()
    assert info.value.expected_etag == old_etag
    assert info.value.actual_etag != old_etag
    assert session.pool.in_use == 0


async def test_a_cut_body_without_resumes_raises_connection_lost(
    mediastore_server: LocalMediaStore, store: ContainerClient, session: Session
) -> None:
    from msd_async import ConnectionLostError

    mediastore_server.faults.inject("cut-download", method="GET", path="vod/big.bin",
                                    after_bytes=100_000)
    with pytest.raises(ConnectionLostError):
        async with store.get_object("vod/big.bin", max_resumes=0) as obj:
            await obj.read()
    assert session.pool.in_use == 0
