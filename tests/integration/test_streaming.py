"""STREAMING and STANDARD uploads from async iterators at the real 10 MB / 25 MB limits, and
readers following a STREAMING upload while it is still being sent."""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import pytest

from msd_async import (
    ConnectionLostError,
    ContainerClient,
    ObjectNotFoundError,
    ObjectTooLargeError,
    Session,
)
from msd_async.testing import LocalMediaStore

pytestmark = pytest.mark.anyio

STREAMING_LIMIT = 10_000_000
STANDARD_LIMIT = 25_000_000
CHUNK = 1024 * 1024

# One pseudo-random buffer, sliced by every test: building 25 MB once keeps the suite fast.
_DATA = random.Random(5).randbytes(STANDARD_LIMIT + 1)


def data(size: int) -> memoryview:
    return memoryview(_DATA)[:size]


async def chunks_of(body: memoryview, size: int = CHUNK) -> AsyncIterator[bytes]:
    """An async generator that yields ``body`` in ``size`` pieces, as an encoder would."""
    for start in range(0, len(body), size):
        yield bytes(body[start : start + size])
        await anyio.lowlevel.checkpoint()


async def wait_for_put(records: list[logging.LogRecord], path: str, *, after: int = 0) -> str:
    """The status the server logged for the first PUT of ``path`` from ``records[after:]``
    (``"aborted"`` if the client went away), waiting until the server has handled it."""
    target = "/" + path
    with anyio.fail_after(5):
        while True:
            for record in records[after:]:
                assert isinstance(record.args, tuple)
                if record.args[0] == "PUT" and record.args[1] == target:
                    return str(record.args[2])
            await anyio.sleep(0.005)


async def assert_absent(server: LocalMediaStore, store: ContainerClient, path: str) -> None:
    assert server.store.get(path) is None
    assert server.store.in_progress(path) is None
    with pytest.raises(ObjectNotFoundError):
        await store.describe_object(path)


LIMITS = [
    pytest.param(True, STREAMING_LIMIT, "body.max-size.streaming", id="streaming"),
    pytest.param(False, STANDARD_LIMIT, "body.max-size.standard", id="standard"),
]


@pytest.mark.parametrize(("streaming", "limit", "rule"), LIMITS)
async def test_async_generator_upload_of_exactly_the_limit_is_stored(
    mediastore_server: LocalMediaStore,
    mediastore_client: ContainerClient,
    streaming: bool,
    limit: int,
    rule: str,
) -> None:
    body = data(limit)
    expected = hashlib.sha256(body).hexdigest()
    result = await mediastore_client.put_object(
        "live/at-limit.ts", chunks_of(body), streaming=streaming, verify=True
    )
    assert result.size == limit
    assert result.content_sha256 == expected
    stored = mediastore_server.store.get("live/at-limit.ts")
    assert stored is not None
    assert stored.size == limit
    assert stored.content_sha256 == expected
    assert stored.availability == ("STREAMING" if streaming else "STANDARD")
    assert stored.data is not None and hashlib.sha256(stored.data).hexdigest() == expected


@pytest.mark.parametrize(("streaming", "limit", "rule"), LIMITS)
@pytest.mark.parametrize("previous", [False, True], ids=["new", "replace"])
async def test_async_generator_one_byte_over_the_limit_is_cut_and_stores_nothing(
    mediastore_server: LocalMediaStore,
    mediastore_client: ContainerClient,
    server_requests: list[logging.LogRecord],
    streaming: bool,
    limit: int,
    rule: str,
    previous: bool,
) -> None:
    path = "live/over-limit.ts"
    old = None
    if previous:
        old = await mediastore_client.put_object(path, b"previous version", streaming=streaming)
    sent: list[int] = []
    before = len(server_requests)
    with pytest.raises(ObjectTooLargeError) as info:
        await mediastore_client.put_object(
            path, chunks_of(data(limit + 1)), streaming=streaming, progress=sent.append
        )
    error = info.value
    assert error.rule == rule
    assert error.limit == limit
    assert error.size is not None and error.size > limit
    assert f"{limit:,}" in str(error)
    assert error.attempts >= 0
    # Never more than the limit left the client, and the server saw an incomplete body.
    assert sent and sent[-1] <= limit
    assert await wait_for_put(server_requests, path, after=before) == "aborted"
    if old is None:
        await assert_absent(mediastore_server, mediastore_client, path)
    else:
        info_after = await mediastore_client.describe_object(path)
        assert info_after.etag == old.etag
        assert await mediastore_client.get_bytes(path) == b"previous version"


@pytest.mark.parametrize(("streaming", "limit", "rule"), LIMITS)
async def test_known_size_over_the_limit_is_refused_before_sending(
    mediastore_client: ContainerClient,
    server_requests: list[logging.LogRecord],
    streaming: bool,
    limit: int,
    rule: str,
) -> None:
    before = len(server_requests)
    with pytest.raises(ObjectTooLargeError) as info:
        await mediastore_client.put_object("big.ts", bytes(data(limit + 1)), streaming=streaming)
    assert (info.value.rule, info.value.limit, info.value.size) == (rule, limit, limit + 1)
    assert info.value.attempts == 0
    assert len(server_requests) == before  # nothing reached the server


async def test_chunks_reach_readers_before_the_generator_finishes(
    mediastore_client: ContainerClient,
) -> None:
    first, rest = b"#first-chunk" * 100, b"#rest" * 50_000
    release = anyio.Event()
    generator_done = False

    async def encoder() -> AsyncIterator[bytes]:
        nonlocal generator_done
        yield first
        await release.wait()
        yield rest
        generator_done = True

    received: list[bytes] = []
    first_seen = anyio.Event()

    async def upload() -> None:
        await mediastore_client.put_object("live/now.ts", encoder(), streaming=True)

    async def reader() -> None:
        async with mediastore_client.get_object("live/now.ts") as obj:
            assert obj.status == 200
            assert obj.content_length is None  # still being uploaded
            async for chunk in obj:
                received.append(chunk)
                if sum(map(len, received)) >= len(first):
                    first_seen.set()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(upload)
            await _wait_until_visible(mediastore_client, "live/now.ts")
            tg.start_soon(reader)
            await first_seen.wait()
            # The reader has the first chunk while the encoder is still blocked.
            assert not generator_done
            assert b"".join(received) == first
            release.set()
    assert generator_done
    assert b"".join(received) == first + rest


async def _wait_until_visible(store: ContainerClient, path: str) -> None:
    while True:
        try:
            await store.describe_object(path)
            return
        except ObjectNotFoundError:
            await anyio.sleep(0.002)


async def test_in_progress_read_follows_a_large_upload_to_the_end(
    mediastore_client: ContainerClient,
) -> None:
    body = data(STREAMING_LIMIT)
    step = anyio.Event()

    async def paced() -> AsyncIterator[bytes]:
        # Hold the upload after its first chunk until a reader is attached.
        for index, start in enumerate(range(0, len(body), 256 * 1024)):
            yield bytes(body[start : start + 256 * 1024])
            if index == 0:
                await step.wait()

    digest = hashlib.sha256()
    total = 0
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                lambda: mediastore_client.put_object("live/big.ts", paced(), streaming=True)
            )
            await _wait_until_visible(mediastore_client, "live/big.ts")
            async with mediastore_client.get_object("live/big.ts") as obj:
                step.set()
                async for chunk in obj:
                    digest.update(chunk)
                    total += len(chunk)
    assert total == len(body)
    assert digest.hexdigest() == hashlib.sha256(body).hexdigest()


async def _reader_of_failed_upload(
    store: ContainerClient,
    path: str,
    run_upload: Callable[[AsyncIterator[bytes]], Awaitable[None]],
) -> tuple[list[bytes], BaseException | None]:
    """Start a STREAMING upload with ``run_upload``, attach a reader after the first chunk,
    then let the upload fail; return what the reader got and what it raised."""
    attached = anyio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b"x" * 1000
        await attached.wait()
        for _ in range(20):
            yield b"y" * CHUNK

    got: list[bytes] = []
    raised: BaseException | None = None
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_upload, body())
            await _wait_until_visible(store, path)
            try:
                async with store.get_object(path) as obj:
                    attached.set()
                    async for chunk in obj:
                        got.append(chunk)
            except ConnectionLostError as exc:
                raised = exc
    return got, raised


async def test_reader_of_an_upload_cut_at_the_limit_sees_connection_lost(
    mediastore_server: LocalMediaStore,
) -> None:
    async with Session(
        credentials=mediastore_server.credentials, region=mediastore_server.region
    ) as session:
        store = session.container(mediastore_server.endpoint, streaming_limit=5 * CHUNK)
        errors: list[BaseException] = []

        async def upload(body: AsyncIterator[bytes]) -> None:
            try:
                await store.put_object("live/cut.ts", body, streaming=True)
            except ObjectTooLargeError as exc:
                errors.append(exc)

        got, raised = await _reader_of_failed_upload(store, "live/cut.ts", upload)
        assert len(errors) == 1
        assert isinstance(raised, ConnectionLostError)
        assert 1000 <= sum(map(len, got)) <= 5 * CHUNK
        assert mediastore_server.store.get("live/cut.ts") is None
        assert session.pool.in_use == 0


async def test_reader_of_a_cancelled_upload_sees_connection_lost(
    mediastore_server: LocalMediaStore, mediastore_client: ContainerClient
) -> None:
    async def upload(body: AsyncIterator[bytes]) -> None:
        # Cancelled after a few chunks, not after a fixed time: on a fast loop (uvloop) or
        # a slow machine a timer could fire on either side of the 10 MB limit.
        with anyio.CancelScope() as scope:

            async def slow() -> AsyncIterator[bytes]:
                sent = 0
                async for chunk in body:
                    yield chunk
                    if len(chunk) > 1000:
                        sent += 1
                        if sent == 3:
                            scope.cancel()
                        await anyio.sleep(0.01)

            await mediastore_client.put_object("live/cancelled.ts", slow(), streaming=True)
            raise AssertionError("the upload should have been cancelled")
        assert scope.cancelled_caught

    got, raised = await _reader_of_failed_upload(mediastore_client, "live/cancelled.ts", upload)
    assert isinstance(raised, ConnectionLostError)
    assert sum(map(len, got)) >= 1000
    assert mediastore_server.store.get("live/cancelled.ts") is None


async def test_leaving_an_in_progress_read_early_does_not_disturb_the_upload(
    mediastore_server: LocalMediaStore,
) -> None:
    """A reader that stops after the first chunk (or asked for a range, which the service
    ignores on an in-progress object: status 200 tells it so) releases its connection, and
    the upload still completes."""
    release = anyio.Event()
    body = data(3 * CHUNK)

    async def encoder() -> AsyncIterator[bytes]:
        yield bytes(body[:1000])
        await release.wait()
        yield bytes(body[1000:])

    async with Session(
        credentials=mediastore_server.credentials, region=mediastore_server.region
    ) as session:
        store = session.container(mediastore_server.endpoint)
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(
                    lambda: store.put_object("live/early.ts", encoder(), streaming=True)
                )
                await _wait_until_visible(store, "live/early.ts")
                async with store.get_object("live/early.ts", range=(0, 9)) as obj:
                    assert obj.status == 200
                    assert obj.content_range is None
                    first = await anext(aiter(obj))
                assert first == bytes(body[: len(first)])
                assert session.pool.in_use == 1  # only the upload
                release.set()
        assert session.pool.in_use == 0
        assert await store.get_bytes("live/early.ts") == bytes(body)
