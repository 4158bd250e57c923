"""An upload cut at the size limit, or cancelled, is really cut before put_object returns
control: the connection is reset (not closed gracefully after flushing what was buffered)
and its socket is closed by then, so a reader looking right after sees no trace of it, not
even the in-progress STREAMING object the local server shows while an upload runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from reliability_helpers import open_fds
from scripted_server import Connection, scripted_server

from msd_async import (
    ContainerClient,
    Credentials,
    DeadlineExceeded,
    ObjectNotFoundError,
    ObjectTooLargeError,
    RetryPolicy,
    Session,
)
from msd_async.testing import LocalMediaStore

pytestmark = pytest.mark.anyio

CHUNK = 64 * 1024
LIMIT = 8 * CHUNK


async def _assert_gone(store: ContainerClient, path: str) -> None:
    # No await between the error and these looks, other than their own requests.
    with pytest.raises(ObjectNotFoundError):
        await store.describe_object(path)
    with pytest.raises(ObjectNotFoundError):
        await store.get_bytes(path)
    names = [item.name async for item in store.list_items(path.rsplit("/", 1)[0])]
    assert path.rsplit("/", 1)[1] not in names


@pytest.mark.parametrize("streaming", [True, False])
async def test_an_upload_cut_at_the_size_limit_is_gone_when_put_object_raises(
    mediastore_server: LocalMediaStore, streaming: bool
) -> None:
    async with Session(
        credentials=mediastore_server.credentials, region=mediastore_server.region
    ) as session:
        store = session.container(
            mediastore_server.endpoint, streaming_limit=LIMIT, standard_limit=LIMIT
        )
        path = f"cut/{'live' if streaming else 'vod'}.ts"
        # A finished upload of another path keeps the folder listable.
        await store.put_object("cut/keep.ts", b"k")

        async def body() -> AsyncIterator[bytes]:
            for _ in range(20):
                yield b"x" * CHUNK
                await asyncio.sleep(0.01)  # the server shows the upload in progress

        for _ in range(5):
            with pytest.raises(ObjectTooLargeError):
                await store.put_object(path, body(), streaming=streaming)
            await _assert_gone(store, path)
        assert session.pool.in_use == 0


async def test_a_cancelled_streaming_upload_is_gone_when_the_task_ends(
    mediastore_server: LocalMediaStore,
) -> None:
    async with Session(
        credentials=mediastore_server.credentials, region=mediastore_server.region
    ) as session:
        store = session.container(mediastore_server.endpoint)
        await store.put_object("cancel/keep.ts", b"k")
        for i in range(5):
            path = f"cancel/live-{i}.ts"
            parked = asyncio.Event()

            async def body(parked: asyncio.Event = parked) -> AsyncIterator[bytes]:
                for _ in range(4):
                    yield b"x" * CHUNK
                parked.set()
                await asyncio.sleep(3600)
                yield b"never"

            task = asyncio.create_task(store.put_object(path, body(), streaming=True))
            await parked.wait()
            for _ in range(500):  # the server shows it in progress
                if mediastore_server.store.in_progress(path) is not None:
                    break
                await asyncio.sleep(0.01)
            assert mediastore_server.store.in_progress(path) is not None
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await _assert_gone(store, path)
        assert session.pool.in_use == 0


async def _reset_seen(ended: list[str]) -> None:
    """Wait (up to 5 s) for the peer to see how the client left: it must be a reset."""
    for _ in range(100):
        if ended:
            break
        await asyncio.sleep(0.05)
    assert ended == ["reset"]


class _SlowReader:
    """Reads the head and a little of the body, then stops reading (a congested peer), so
    megabytes stay buffered on the client; once released, reads what is left and records
    how the connection ended."""

    def __init__(self) -> None:
        self.reading = asyncio.Event()
        self.release = asyncio.Event()
        self.ended: list[str] = []

    async def __call__(self, conn: Connection) -> None:
        await conn.read_request(body=False)
        await conn.reader.readexactly(100_000)
        self.reading.set()
        await self.release.wait()
        try:
            while await conn.reader.read(1 << 20):
                pass
            self.ended.append("eof")
        except ConnectionResetError:
            self.ended.append("reset")


def _scripted_session() -> Session:
    return Session(
        credentials=Credentials("AKIDEXAMPLE", "secret"),
        region="us-east-1",
        retry=RetryPolicy.none(),
    )


async def _big_chunks(size: int = 1 << 20) -> AsyncIterator[bytes]:
    for _ in range(40):
        yield b"x" * size


async def test_the_size_limit_resets_the_connection_before_put_object_raises() -> None:
    peer = _SlowReader()
    async with scripted_server(peer) as server, _scripted_session() as session:
        # Under what the socket buffers of a loopback connection take: the limit is passed
        # while the peer has read almost none of it.
        store = session.container(server.endpoint, streaming_limit=1 << 20)
        baseline = open_fds()
        upload = asyncio.create_task(
            store.put_object("a.ts", _big_chunks(128 << 10), streaming=True)
        )
        with pytest.raises(ObjectTooLargeError):
            await upload
        await peer.reading.wait()
        assert open_fds() == baseline + 1
        peer.release.set()
        await _reset_seen(peer.ended)
        assert session.pool.in_use == 0


async def test_a_cancelled_upload_resets_the_connection_before_the_task_ends() -> None:
    peer = _SlowReader()
    async with scripted_server(peer) as server, _scripted_session() as session:
        store = session.container(server.endpoint)
        baseline = open_fds()
        upload = asyncio.create_task(store.put_object("a.ts", _big_chunks(), streaming=True))
        await peer.reading.wait()
        await asyncio.sleep(0.1)  # the upload is stuck waiting for the peer to read
        upload.cancel()
        with pytest.raises(asyncio.CancelledError):
            await upload
        assert open_fds() == baseline + 1
        peer.release.set()
        await _reset_seen(peer.ended)
        assert session.pool.in_use == 0


class _ReadsAllThenWaits:
    """Reads the whole request and never answers; records how the client left."""

    def __init__(self) -> None:
        self.read = asyncio.Event()
        self.ended: list[str] = []

    async def __call__(self, conn: Connection) -> None:
        request = await conn.read_request()
        assert request is not None and request.body
        self.read.set()
        try:
            self.ended.append("data" if await conn.reader.read(1) else "eof")
        except ConnectionResetError:
            self.ended.append("reset")


async def _chunks_of(data: bytes, size: int = CHUNK) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize("ending", ["cancelled", "deadline"])
@pytest.mark.parametrize("streaming", [False, True])
async def test_an_upload_ended_while_it_waits_for_its_answer_resets_the_connection(
    ending: str, streaming: bool
) -> None:
    # Found by tests/reliability/test_session_stateful.py: the body was sent, the task was
    # cancelled (or its deadline passed) while it waited for the answer, and aiohttp closed
    # the connection gracefully, so the kernel still delivered what it buffered and a
    # MediaStore completed the upload the caller had given up on (reproduced with 3-4 MiB
    # bodies against the local server). A reset discards what is still buffered.
    peer = _ReadsAllThenWaits()
    async with scripted_server(peer) as server, _scripted_session() as session:
        store = session.container(server.endpoint)
        data = b"x" * (5 * CHUNK)
        body = _chunks_of(data) if streaming else data
        deadline = 0.5 if ending == "deadline" else None
        upload = asyncio.create_task(
            store.put_object("a.ts", body, streaming=streaming, deadline=deadline)
        )
        await peer.read.wait()
        if ending == "cancelled":
            await asyncio.sleep(0.1)  # all of it sent: the client waits for the answer
            upload.cancel()
            with pytest.raises(asyncio.CancelledError):
                await upload
        else:
            with pytest.raises(DeadlineExceeded):
                await upload
        await _reset_seen(peer.ended)
        assert session.pool.in_use == 0
