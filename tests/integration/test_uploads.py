"""put_object with every body kind, progress, verification, the wire format, and memory."""

from __future__ import annotations

import array
import contextlib
import gc
import hashlib
import io
import logging
import random
import tracemalloc
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiohttp import web

from msd_async import (
    ChecksumMismatchError,
    ContainerClient,
    Credentials,
    InvalidSignatureError,
    RetryPolicy,
    Session,
)
from msd_async.testing import LocalMediaStore

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024
PAYLOAD = random.Random(3).randbytes(3 * MiB + 123)  # several 1 MiB slices, and a tail


class NonSeekable(io.RawIOBase):
    """A pipe-like binary file: readable, not seekable."""

    def __init__(self, data: bytes) -> None:
        self._source = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, buffer: Any) -> int:
        return self._source.readinto(buffer)


class AsyncChunks:
    """An async iterable that is not a generator (only ``__aiter__``/``__anext__``)."""

    def __init__(self, data: bytes, size: int) -> None:
        self._parts = [data[i : i + size] for i in range(0, len(data), size)]

    def __aiter__(self) -> AsyncChunks:
        return self

    async def __anext__(self) -> bytes:
        if not self._parts:
            raise StopAsyncIteration
        return self._parts.pop(0)


async def agen(data: bytes, size: int = 100_000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def _kinds(tmp_path: Path) -> dict[str, Callable[[bytes], object]]:
    def path_body(data: bytes) -> Path:
        target = tmp_path / "body.bin"
        target.write_bytes(data)
        return target

    def pathlike_body(data: bytes) -> object:
        target = tmp_path / "body2.bin"
        target.write_bytes(data)
        return target

    def offset_file(data: bytes) -> object:
        fileobj = io.BytesIO(b"HEADER-NOT-SENT" + data)
        fileobj.seek(len(b"HEADER-NOT-SENT"))
        return fileobj

    def wide_memoryview(data: bytes) -> object:
        # A 4-byte-item view: its len() is a quarter of its size in bytes.
        padded = data + b"\0" * (-len(data) % 4)
        return memoryview(array.array("I", padded)), padded

    return {
        "bytes": bytes,
        "bytearray": bytearray,
        "memoryview": memoryview,
        "memoryview-uint32": wide_memoryview,
        "memoryview-slice": lambda d: memoryview(b"xx" + d + b"yy")[2:-2],
        "path": path_body,
        "path-pathlike": pathlike_body,
        "seekable-file-at-offset": offset_file,
        "real-file": lambda d: open(path_body(d), "rb"),  # closed by the test
        "non-seekable-file": lambda d: io.BufferedReader(NonSeekable(d)),
        "list-of-chunks": lambda d: [d[: len(d) // 3], bytearray(d[len(d) // 3 :])],
        "generator": lambda d: (d[i : i + 70_000] for i in range(0, len(d), 70_000)),
        "async-generator": agen,
        "async-iterable": lambda d: AsyncChunks(d, 70_000),
        "async-generator-of-memoryviews": lambda d: agen_views(d),
        "reopenable-callable": lambda d: (lambda: agen(d)),
    }


async def agen_views(data: bytes) -> AsyncIterator[memoryview]:
    view = memoryview(data)
    for start in range(0, len(data), 300_000):
        yield view[start : start + 300_000]


KIND_NAMES = list(_kinds(Path(".")))


@pytest.mark.parametrize("streaming", [False, True], ids=["standard", "streaming"])
@pytest.mark.parametrize("kind", KIND_NAMES)
async def test_every_body_kind_round_trips(
    mediastore_server: LocalMediaStore,
    mediastore_client: ContainerClient,
    tmp_path: Path,
    kind: str,
    streaming: bool,
) -> None:
    made = _kinds(tmp_path)[kind](PAYLOAD)
    body, expected = made if isinstance(made, tuple) else (made, PAYLOAD)
    progress: list[int] = []
    try:
        result = await mediastore_client.put_object(
            f"kinds/{kind}.bin",
            body,  # type: ignore[arg-type]
            streaming=streaming,
            progress=progress.append,
            verify=True,
            content_type="application/octet-stream",
        )
    finally:
        if isinstance(body, io.IOBase):
            body.close()
    sha = hashlib.sha256(expected).hexdigest()
    assert result.size == len(expected)
    assert result.content_sha256 == sha
    stored = mediastore_server.store.get(f"kinds/{kind}.bin")
    assert stored is not None and stored.content_sha256 == sha
    assert stored.availability == ("STREAMING" if streaming else "STANDARD")
    assert await mediastore_client.get_bytes(f"kinds/{kind}.bin") == expected
    assert progress == sorted(progress) and progress[-1] == len(expected)
    assert len(set(progress)) == len(progress)  # strictly increasing: no empty reports


async def test_empty_body(mediastore_client: ContainerClient) -> None:
    for streaming in (False, True):
        result = await mediastore_client.put_object("empty.bin", b"", streaming=streaming)
        assert result.size == 0
        assert result.content_sha256 == hashlib.sha256(b"").hexdigest()
        assert await mediastore_client.get_bytes("empty.bin") == b""


async def test_seekable_file_is_left_where_it_was_and_can_be_retried(
    mediastore_server: LocalMediaStore,
) -> None:
    mediastore_server.faults.inject("503", method="PUT", path="retry.bin")
    fileobj = io.BytesIO(b"skip" + PAYLOAD)
    fileobj.seek(4)
    async with Session(
        credentials=mediastore_server.credentials,
        region=mediastore_server.region,
        retry=RetryPolicy(backoff_initial=0.001, backoff_max=0.001),
    ) as session:
        store = session.container(mediastore_server.endpoint)
        result = await store.put_object("retry.bin", fileobj)
        assert result.size == len(PAYLOAD)
        assert await store.get_bytes("retry.bin") == PAYLOAD


async def test_reopenable_source_is_called_again_for_a_retry(
    mediastore_server: LocalMediaStore,
) -> None:
    mediastore_server.faults.inject("503", method="PUT", path="live/reopen.ts")
    mediastore_server.faults.inject("cut-upload", method="PUT", path="live/reopen.ts",
                                    after_bytes=MiB)
    opened: list[int] = []
    closed: list[int] = []

    def source() -> AsyncIterator[bytes]:
        number = len(opened)
        opened.append(number)

        async def generate() -> AsyncIterator[bytes]:
            try:
                async for chunk in agen(PAYLOAD, 256 * 1024):
                    yield chunk
            finally:
                closed.append(number)

        return generate()

    async with Session(
        credentials=mediastore_server.credentials,
        region=mediastore_server.region,
        retry=RetryPolicy(backoff_initial=0.001, backoff_max=0.001),
    ) as session:
        store = session.container(mediastore_server.endpoint)
        result = await store.put_object("live/reopen.ts", source, streaming=True, verify=True)
        assert result.size == len(PAYLOAD)
        assert await store.get_bytes("live/reopen.ts") == PAYLOAD
    assert opened == [0, 1, 2]
    assert sorted(closed) == [0, 1, 2]  # every attempt's iterator was closed


async def test_verify_detects_a_service_that_stored_other_bytes() -> None:
    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"ContentSHA256": "0" * 64, "ETag": "e" * 64})

    async with raw_store(handler) as (store, _):
        with pytest.raises(ChecksumMismatchError) as info:
            await store.put_object("x.ts", b"payload", verify=True)
        assert info.value.expected == hashlib.sha256(b"payload").hexdigest()
        assert info.value.actual == "0" * 64
        # Without verify the response is taken as is.
        assert (await store.put_object("x.ts", b"payload")).content_sha256 == "0" * 64


@dataclass
class Seen:
    headers: list[dict[str, str]] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)


class RawServer:
    """A bare aiohttp.web server on 127.0.0.1 that records what the client put on the wire."""

    def __init__(self, handler: Callable[[web.Request], Any] | None = None) -> None:
        self.seen = Seen()
        self._handler = handler or self._record
        self._runner: web.AppRunner | None = None

    async def _record(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.headers.append(dict(request.headers))
        self.seen.bodies.append(body)
        sha = hashlib.sha256(body).hexdigest()
        return web.json_response({"ContentSHA256": sha, "ETag": "e" * 64})

    async def __aenter__(self) -> tuple[str, Seen]:
        app = web.Application(client_max_size=30 * MiB)
        app.router.add_route("*", "/{tail:.*}", self._handler)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        return f"http://127.0.0.1:{port}", self.seen

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


@contextlib.asynccontextmanager
async def raw_store(
    handler: Callable[[web.Request], Any] | None = None,
) -> AsyncIterator[tuple[ContainerClient, Seen]]:
    """A client of a :class:`RawServer` (which checks no signature)."""
    async with (
        RawServer(handler) as (endpoint, seen),
        Session(credentials=Credentials("a", "b"), region="us-east-1") as session,
    ):
        yield session.container(endpoint), seen


@pytest.mark.parametrize(
    ("body", "streaming", "chunked"),
    [
        pytest.param(b"segment-bytes" * 1000, True, True, id="streaming-bytes"),
        pytest.param(PAYLOAD, True, True, id="streaming-large-bytes"),
        pytest.param(b"segment-bytes" * 1000, False, False, id="standard-bytes"),
        pytest.param(PAYLOAD, False, False, id="standard-large-bytes"),
        pytest.param("agen", False, True, id="standard-async-generator"),
        pytest.param("agen", True, True, id="streaming-async-generator"),
    ],
)
async def test_wire_framing(body: bytes | str, streaming: bool, chunked: bool) -> None:
    data = PAYLOAD if body == "agen" else body
    assert isinstance(data, bytes)
    async with raw_store() as (store, seen):
        upload = agen(data) if body == "agen" else data
        await store.put_object("w.ts", upload, streaming=streaming, verify=True)
    (headers,) = seen.headers
    assert seen.bodies == [data]
    assert headers["x-amz-upload-availability"] == ("STREAMING" if streaming else "STANDARD")
    if chunked:
        assert headers.get("Transfer-Encoding") == "chunked"
        assert "Content-Length" not in headers
    else:
        assert "Transfer-Encoding" not in headers
        assert headers["Content-Length"] == str(len(data))


async def test_each_chunk_is_on_the_wire_before_the_next_is_asked_for() -> None:
    """No batching: the server receives every chunk while the producer waits to make the
    next one."""
    arrived: list[bytes] = []
    got_chunk = anyio.Event()

    async def handler(request: web.Request) -> web.Response:
        nonlocal got_chunk
        async for data in request.content.iter_any():
            arrived.append(data)
            got_chunk.set()
        return web.json_response({"ContentSHA256": "0" * 64, "ETag": "e" * 64})

    chunks = [b"a" * 10, b"b" * 188, b"c" * 5000]

    async def producer() -> AsyncIterator[bytes]:
        nonlocal got_chunk
        for index, chunk in enumerate(chunks):
            yield chunk
            # Wait until the server has everything sent so far.
            with anyio.fail_after(5):
                while len(b"".join(arrived)) < sum(map(len, chunks[: index + 1])):
                    await got_chunk.wait()
                    got_chunk = anyio.Event()

    async with raw_store(handler) as (store, _):
        await store.put_object("live.ts", producer(), streaming=True)
    assert b"".join(arrived) == b"".join(chunks)


async def test_early_refusal_while_the_generator_waits_closes_it(
    mediastore_server: LocalMediaStore,
) -> None:
    """The server refuses a badly signed PUT before reading its body; the client must surface
    the 403 (not a generator error) and close the caller's generator."""
    finalized = anyio.Event()

    async def stalled() -> AsyncIterator[bytes]:
        try:
            yield b"first"
            await anyio.sleep_forever()
            yield b"never"
        finally:
            finalized.set()

    bad = Credentials(mediastore_server.credentials.access_key_id, "wrong-secret")
    async with Session(credentials=bad, region=mediastore_server.region) as session:
        store = session.container(mediastore_server.endpoint)
        with anyio.fail_after(5), pytest.raises(InvalidSignatureError):
            await store.put_object("live/refused.ts", stalled(), streaming=True)
        assert finalized.is_set()
        assert session.pool.in_use == 0
    assert mediastore_server.store.get("live/refused.ts") is None


# --- memory -----------------------------------------------------------------------------

BIG = 25_000_000


async def _peak_during(upload: Callable[[], Any]) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        await upload()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize("kind", ["bytes", "path"])
async def test_a_25_mb_upload_does_not_copy_the_body(tmp_path: Path, kind: str) -> None:
    data = random.Random(25).randbytes(BIG)
    body: bytes | Path = data
    if kind == "path":
        (tmp_path / "big.bin").write_bytes(data)
        body = tmp_path / "big.bin"
    # A directory store keeps the server's own memory small (it writes chunks to disk as
    # they arrive), so the peak measures the client.
    async with LocalMediaStore(data_dir=str(tmp_path / "store"), fsync=False) as server:
        async with Session(credentials=server.credentials, region=server.region) as session:
            store = session.container(server.endpoint)
            await store.put_object("warm-up.bin", b"x")  # connection and imports outside
            peak = await _peak_during(lambda: store.put_object("big.bin", body, verify=True))
        stored = server.store.get("big.bin")
    assert stored is not None and stored.size == BIG
    assert stored.content_sha256 == hashlib.sha256(data).hexdigest()
    assert peak < 8 * MiB, f"peak traced allocations {peak / MiB:.1f} MiB"



class EncoderCrash(Exception):
    pass


@pytest.mark.parametrize("streaming", [False, True], ids=["standard", "streaming"])
@pytest.mark.parametrize("reopenable", [False, True], ids=["generator", "callable"])
async def test_an_error_raised_by_the_body_reaches_the_caller_unchanged(
    mediastore_server: LocalMediaStore,
    mediastore_client: ContainerClient,
    server_requests: list[logging.LogRecord],
    streaming: bool,
    reopenable: bool,
) -> None:
    """A crashing producer is the caller's bug, not a broken connection: its exception is
    raised as is, nothing is retried, and the upload is cut so nothing is stored."""
    await mediastore_client.put_object("live/crash.ts", b"previous")
    opened: list[int] = []

    def source() -> AsyncIterator[bytes]:
        opened.append(1)

        async def crash() -> AsyncIterator[bytes]:
            yield b"x" * 100_000
            raise EncoderCrash("encoder died")

        return crash()

    body: object = source if reopenable else source()
    before = len(server_requests)
    with pytest.raises(EncoderCrash, match="encoder died"):
        await mediastore_client.put_object(
            "live/crash.ts", body, streaming=streaming  # type: ignore[arg-type]
        )
    assert opened == [1]
    assert await mediastore_client.get_bytes("live/crash.ts") == b"previous"
    # The server saw the connection end mid-body: it aborted the upload.
    with anyio.fail_after(5):
        while True:
            statuses = [r.args[2] for r in server_requests[before:] if isinstance(r.args, tuple)
                        and r.args[:2] == ("PUT", "/live/crash.ts")]
            if statuses:
                break
            await anyio.sleep(0.005)
    assert statuses == ["aborted"]
    assert mediastore_server.store.in_progress("live/crash.ts") is None
    assert await mediastore_client.get_bytes("live/crash.ts") == b"previous"


@pytest.mark.parametrize("streaming", [False, True], ids=["standard", "streaming"])
@pytest.mark.parametrize("reopenable", [False, True], ids=["generator", "callable"])
async def test_a_source_whose_own_wait_is_cancelled_ends_the_upload_with_that(
    mediastore_server: LocalMediaStore,
    mediastore_client: ContainerClient,
    streaming: bool,
    reopenable: bool,
) -> None:
    """A producer whose own wait was cancelled by someone else (its encoder shut down)
    gives up with CancelledError while the caller's task is not cancelled. That was taken
    for a lost connection: a re-openable source was started again, a one-shot one
    reported "Server disconnected" and UnreplayableBodyError. It is the source's end, as
    its own exception is: raised as is, not retried, and nothing stored."""
    import asyncio

    await mediastore_client.put_object("live/stopped.ts", b"previous")
    opened: list[int] = []

    def source() -> AsyncIterator[bytes]:
        opened.append(1)

        async def encoder() -> AsyncIterator[bytes]:
            yield b"x" * 100_000
            shutdown = asyncio.get_running_loop().create_future()
            shutdown.cancel()  # what the encoder waited for was cancelled
            await shutdown
            yield b"never"

        return encoder()

    body: object = source if reopenable else source()
    with anyio.fail_after(10), pytest.raises(asyncio.CancelledError):
        await mediastore_client.put_object(
            "live/stopped.ts", body, streaming=streaming  # type: ignore[arg-type]
        )
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    assert opened == [1]
    assert mediastore_server.store.in_progress("live/stopped.ts") is None
    assert await mediastore_client.get_bytes("live/stopped.ts") == b"previous"
    assert mediastore_client.session.pool.in_use == 0
