"""Uploads that fail after their body started: which bodies are retried, and how the rest fail."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from reliability_helpers import chunks_of

from msd_async import (
    ConnectionLostError,
    ContainerClient,
    ServerError,
    Session,
    UnreplayableBodyError,
)
from msd_async.testing import LocalMediaStore

pytestmark = pytest.mark.anyio

DATA = os.urandom(150_000)
DIGEST = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def store(session: Session, mediastore_server: LocalMediaStore) -> ContainerClient:
    return session.container(mediastore_server.endpoint)


class OneShot:
    """A one-shot async iterator that pauses after its first chunk, so the server's early
    answer arrives while the body is being sent; records how far it got."""

    def __init__(self, data: bytes, *, pause: float = 0.05) -> None:
        self._data = data
        self._pause = pause
        self.yielded = 0
        self._gen = self._run()

    async def _run(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self._data), 10_000):
            chunk = self._data[start : start + 10_000]
            self.yielded += len(chunk)
            yield chunk
            if start == 0:
                await asyncio.sleep(self._pause)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._gen


async def _stored(server: LocalMediaStore, path: str) -> str | None:
    version = server.store.get(path)
    return None if version is None else version.content_sha256


def _bodies(tmp_path: Path) -> dict[str, Callable[[], object]]:
    file_path = tmp_path / "body.bin"
    file_path.write_bytes(DATA)

    def reopenable() -> Callable[[], AsyncIterator[bytes]]:
        return lambda: chunks_of(DATA, 10_000)

    return {
        "bytes": lambda: DATA,
        "bytearray": lambda: bytearray(DATA),
        "path": lambda: file_path,
        "seekable-file": lambda: io.BytesIO(DATA),
        "reopenable": reopenable,
    }


@pytest.mark.parametrize("streaming", [False, True], ids=["STANDARD", "STREAMING"])
@pytest.mark.parametrize("fault", ["500", "cut-upload"])
@pytest.mark.parametrize(
    "kind", ["bytes", "bytearray", "path", "seekable-file", "reopenable"]
)
async def test_replayable_bodies_are_retried_transparently(
    store: ContainerClient,
    mediastore_server: LocalMediaStore,
    tmp_path: Path,
    kind: str,
    fault: str,
    streaming: bool,
) -> None:
    path = f"replay/{kind}.bin"
    mediastore_server.faults.inject(
        fault, times=2, method="PUT", path=path,  # type: ignore[arg-type]
        after_bytes=20_000,
    )
    body = _bodies(tmp_path)[kind]()
    result = await store.put_object(path, body, streaming=streaming)  # type: ignore[arg-type]
    assert result.content_sha256 == DIGEST
    assert [k for k, _, p in mediastore_server.faults.history if p == path] == [fault] * 2
    assert await _stored(mediastore_server, path) == DIGEST
    assert await store.get_bytes(path) == DATA


@pytest.mark.parametrize("streaming", [False, True], ids=["STANDARD", "STREAMING"])
async def test_one_shot_iterator_after_a_500_raises_unreplayable_from_the_server_error(
    store: ContainerClient, mediastore_server: LocalMediaStore, streaming: bool
) -> None:
    mediastore_server.faults.inject("500", method="PUT", path="replay/once.bin")
    body = OneShot(DATA)
    with pytest.raises(UnreplayableBodyError) as caught:
        await store.put_object("replay/once.bin", body, streaming=streaming)
    assert body.yielded > 0, "the body had started when the server answered"
    exc = caught.value
    assert exc.attempts == 1
    cause = exc.__cause__
    assert isinstance(cause, ServerError)
    assert cause.status == 500 and cause.code == "InternalServerError"
    assert cause.request_id
    # The message names the server's answer, not just "cannot replay", and the way out.
    assert "InternalServerError" in str(exc)
    assert "replay_buffer=True" in str(exc)
    assert await _stored(mediastore_server, "replay/once.bin") is None
    assert mediastore_server.store.in_progress("replay/once.bin") is None


async def test_one_shot_iterator_after_a_cut_upload_raises_unreplayable(
    store: ContainerClient, mediastore_server: LocalMediaStore
) -> None:
    mediastore_server.faults.inject(
        "cut-upload", method="PUT", path="replay/cut.bin", after_bytes=15_000
    )
    with pytest.raises(UnreplayableBodyError) as caught:
        await store.put_object("replay/cut.bin", chunks_of(DATA, 10_000))
    assert caught.value.attempts == 1
    assert isinstance(caught.value.__cause__, ConnectionLostError)
    assert await _stored(mediastore_server, "replay/cut.bin") is None


@pytest.mark.parametrize("fault", ["500", "cut-upload"])
@pytest.mark.parametrize("streaming", [False, True], ids=["STANDARD", "STREAMING"])
async def test_replay_buffer_lets_a_one_shot_iterator_retry(
    store: ContainerClient, mediastore_server: LocalMediaStore, streaming: bool, fault: str
) -> None:
    path = "replay/buffered.bin"
    mediastore_server.faults.inject(
        fault, times=3, method="PUT", path=path, after_bytes=25_000  # type: ignore[arg-type]
    )
    body = OneShot(DATA, pause=0.01)
    result = await store.put_object(path, body, streaming=streaming, replay_buffer=True)
    assert result.content_sha256 == DIGEST
    # The producer ran exactly once: the retries came from the buffer.
    assert body.yielded == len(DATA)
    assert await store.get_bytes(path) == DATA


async def test_replay_buffer_serves_a_non_seekable_file(
    store: ContainerClient, mediastore_server: LocalMediaStore
) -> None:
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "rb") as reader:
        assert not reader.seekable()

        def produce() -> None:
            with open(write_fd, "wb") as writer:
                writer.write(DATA)

        writer_task = asyncio.get_running_loop().run_in_executor(None, produce)
        mediastore_server.faults.inject(
            "cut-upload", method="PUT", path="replay/pipe.bin", after_bytes=40_000
        )
        result = await store.put_object("replay/pipe.bin", reader, replay_buffer=True)
        await writer_task
    assert result.content_sha256 == DIGEST
    assert await store.get_bytes("replay/pipe.bin") == DATA


async def test_non_seekable_file_without_replay_buffer_is_unreplayable(
    store: ContainerClient, mediastore_server: LocalMediaStore
) -> None:
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "rb") as reader:

        def produce() -> None:
            with open(write_fd, "wb") as writer:
                writer.write(DATA)

        writer_task = asyncio.get_running_loop().run_in_executor(None, produce)
        mediastore_server.faults.inject(
            "cut-upload", method="PUT", path="replay/pipe.bin", after_bytes=40_000
        )
        with pytest.raises(UnreplayableBodyError) as caught:
            await store.put_object("replay/pipe.bin", reader)
        await writer_task
    assert caught.value.attempts == 1
    assert isinstance(caught.value.__cause__, ConnectionLostError)
