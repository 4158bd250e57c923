"""A publication whose body is a path to a pipe (a FIFO, ``/dev/stdin``): the pipe gives its
bytes once, so the publisher reads it once, as it is written, and every destination and
every retry gets those same bytes (like an async iterable body), instead of each opening
the pipe again."""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from fifo_writer import feeding, stalling

from msd_async import ClientValidationError, ContainerClient, Session
from msd_async.live import LivePublisher, Status
from msd_async.testing import LocalMediaStore

pytestmark = pytest.mark.anyio

#: More than a pipe holds (64 KiB) and more than one 1 MiB read.
DATA = random.Random(5).randbytes(1024 * 1024 + 333)


@pytest.fixture
async def backup() -> AsyncIterator[ContainerClient]:
    """A second destination: a container on another local server."""
    async with (
        LocalMediaStore() as other,
        Session(credentials=other.credentials, region=other.region) as session,
    ):
        yield session.container(other.endpoint)


async def test_a_fifo_segment_reaches_every_destination_whole(
    store: ContainerClient, backup: ContainerClient, tmp_path: Path
) -> None:
    fifo = tmp_path / "seg_1.ts"
    with feeding(fifo, DATA) as broken, anyio.fail_after(20):
        async with LivePublisher(store, backups=[backup]) as publisher:
            publication = await publisher.publish("p/seg_1.ts", fifo, duration=2.0)
            outcome = await publication.wait(all_destinations=True)
    assert broken == []
    assert [d.status for d in outcome.destinations] == [Status.ACKNOWLEDGED] * 2
    assert await store.get_bytes("p/seg_1.ts") == DATA
    assert await backup.get_bytes("p/seg_1.ts") == DATA


async def test_a_fifo_segment_is_retried_from_what_was_read(
    store: ContainerClient, mediastore_server: LocalMediaStore, tmp_path: Path
) -> None:
    mediastore_server.faults.inject(
        "cut-upload", method="PUT", path="q/seg_1.ts", after_bytes=200_000
    )
    fifo = tmp_path / "seg_1.ts"
    with feeding(fifo, DATA) as broken, anyio.fail_after(20):
        async with LivePublisher(store) as publisher:
            publication = await publisher.publish("q/seg_1.ts", fifo, duration=2.0)
            outcome = await publication.wait()
    assert broken == []
    assert outcome.status is Status.ACKNOWLEDGED, outcome
    assert [k for k, _, p in mediastore_server.faults.history if p == "q/seg_1.ts"] == [
        "cut-upload"
    ]
    assert await store.get_bytes("q/seg_1.ts") == DATA


async def test_a_regular_file_is_still_read_per_attempt(
    store: ContainerClient, tmp_path: Path
) -> None:
    """The pipe path must not take regular files: they keep their known size (a STANDARD
    upload with Content-Length, not a chunked STREAMING one)."""
    segment = tmp_path / "seg_1.ts"
    segment.write_bytes(DATA)
    async with LivePublisher(store) as publisher:
        outcome = await (await publisher.publish("r/seg_1.ts", segment, duration=2.0)).wait()
    assert outcome.acknowledged
    info = await store.describe_object("r/seg_1.ts")
    assert info.content_length == len(DATA)
    assert await store.get_bytes("r/seg_1.ts") == DATA


async def test_a_fifo_playlist_is_read_whole_and_reaches_every_destination(
    store: ContainerClient, backup: ContainerClient, tmp_path: Path
) -> None:
    text = b"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nseg_1.ts\n"
    fifo = tmp_path / "index.m3u8"
    with feeding(fifo, text) as broken, anyio.fail_after(20):
        async with LivePublisher(store, backups=[backup], auto_delete=False) as publisher:
            await publisher.publish("m/seg_1.ts", b"media", duration=2.0)
            publication = await publisher.publish("m/index.m3u8", fifo)
            outcome = await publication.wait(all_destinations=True)
    assert broken == []
    assert outcome.acknowledged, outcome
    assert publication.kind.is_manifest
    assert await store.get_bytes("m/index.m3u8") == text
    assert await backup.get_bytes("m/index.m3u8") == text


async def test_a_folder_is_refused_when_published(store: ContainerClient, tmp_path: Path) -> None:
    async with LivePublisher(store) as publisher:
        with pytest.raises(ClientValidationError, match="is a folder"):
            await publisher.publish("f/seg_1.ts", tmp_path, duration=2.0)


async def test_closing_the_publisher_is_not_held_up_by_a_stalled_fifo(
    store: ContainerClient, mediastore_server: LocalMediaStore, tmp_path: Path
) -> None:
    """The FIFO's writer sends a little and then nothing, holding the pipe open: close()
    gives the upload up after its close_timeout (before: its read held on, in a worker
    thread the cancellation had to wait for, until the writer wrote again)."""
    fifo = tmp_path / "seg_1.ts"
    close_timeout = 0.5
    with stalling(fifo, b"x" * 1000):
        async with LivePublisher(store, close_timeout=close_timeout) as publisher:
            publication = await publisher.publish("s/seg_1.ts", fifo, duration=2.0)
            await anyio.sleep(0.3)
            closing = time.monotonic()
        closed_in = time.monotonic() - closing
        outcome = await publication.wait()
        assert closed_in < close_timeout + 10, closed_in  # a busy machine's margin
        assert outcome.status is Status.FAILED
        assert mediastore_server.store.get("s/seg_1.ts") is None


async def test_publishing_a_fifo_playlist_whose_writer_stalls_can_be_cancelled(
    store: ContainerClient, tmp_path: Path
) -> None:
    """A playlist from a pipe is read whole at publish(): a writer that never finishes must
    not make that publish() (nor the block around it) deaf to its cancellation (before:
    the read ran in a worker thread the cancellation had to wait for)."""
    fifo = tmp_path / "index.m3u8"
    given_up = 0.3
    with stalling(fifo, b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n") as release:
        async with LivePublisher(store) as publisher:
            started = time.monotonic()
            with anyio.move_on_after(given_up) as scope:
                await publisher.publish("st/index.m3u8", fifo)
            took = time.monotonic() - started
            assert scope.cancelled_caught
            assert took < given_up + 10, took  # a busy machine's margin; before: until release
            seg = await publisher.publish("st/seg_1.ts", b"s", duration=2.0)
            assert (await seg.wait()).acknowledged  # the publisher carries on
        assert not release.is_set()
