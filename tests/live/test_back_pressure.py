"""Item 8 of issue 16: a producer that can wait gets back-pressure instead of silent drops;
drop-oldest stays the default for producers that must never block."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from msd_async import ContainerClient
from msd_async.ingest import FolderPusher, ObjectRecord
from msd_async.live import LivePublisher, PublishEvent, Status
from msd_async.testing import LocalMediaStore

pytestmark = pytest.mark.anyio


async def test_publish_can_wait_for_room_instead_of_dropping(
    store: ContainerClient, mediastore_server: LocalMediaStore
) -> None:
    mediastore_server.faults.inject("delay", method="PUT", times=None, delay=0.05)
    async with LivePublisher(store, max_queued=2, max_in_flight=1) as publisher:
        waited = [await publisher.publish(f"w/seg_{n}.m4s", b"s", duration=5.0,
                                          wait_for_room=True) for n in range(8)]
        # The default stays drop-oldest: a producer that must never block is not held up.
        dropping = [await publisher.publish(f"d/seg_{n}.m4s", b"s", duration=5.0)
                    for n in range(8)]
        waited_out = [await p.wait() for p in waited]
        dropping_out = [await p.wait() for p in dropping]
    assert [o.status for o in waited_out] == [Status.ACKNOWLEDGED] * 8
    assert [o.status for o in dropping_out].count(Status.DROPPED) == 5


async def test_waiting_for_room_ends_when_the_publisher_closes(
    store: ContainerClient, mediastore_server: LocalMediaStore
) -> None:
    from msd_async.live import PublisherClosedError

    mediastore_server.faults.inject("delay", method="PUT", times=None, delay=5.0)
    async with LivePublisher(store, max_queued=1, max_in_flight=1) as publisher:
        await publisher.publish("c/seg_0.m4s", b"s", duration=30.0)
        await publisher.publish("c/seg_1.m4s", b"s", duration=30.0)

        async def blocked() -> None:
            with pytest.raises(PublisherClosedError):
                await publisher.publish("c/seg_2.m4s", b"s", duration=30.0,
                                        wait_for_room=True)

        async with anyio.create_task_group() as tg:
            tg.start_soon(blocked)
            await anyio.sleep(0.2)
            with anyio.fail_after(5):
                await publisher.aclose(cancel=True)


FILES = 400


async def test_push_catches_up_a_folder_behind_a_slow_origin_without_dropping(
    store: ContainerClient, mediastore_server: LocalMediaStore, tmp_path: Path
) -> None:
    # The run had 10,000 files behind a 50 ms origin and dropped 9,655; the same
    # shape, smaller: far more files than the queue holds, each PUT 50 ms late.
    for n in range(FILES):
        (tmp_path / f"seg_{n:05d}.ts").write_bytes(b"t" * 188)
    mediastore_server.faults.inject("delay", method="PUT", times=None, delay=0.05)
    events: list[PublishEvent] = []
    records: list[ObjectRecord] = []
    async with LivePublisher(store, on_event=events.append, close_timeout=30) as publisher:
        pusher = FolderPusher(publisher, tmp_path, on_object=records.append)
        stop = anyio.Event()
        stop.set()  # catch up, scan once more, stop
        with anyio.fail_after(120):
            await pusher.run(stop)
    assert [e.path for e in events if e.kind == "dropped"] == []
    assert len(records) == FILES
    assert {r.outcome for r in records} == {"acknowledged"}
