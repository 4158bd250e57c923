"""Item 9 of issue 16: follow_file ends when the writer is finished, never at a pause, and an
object it cannot complete fails instead of being stored short."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from msd_async import ContainerClient, ObjectNotFoundError
from msd_async.live import LivePublisher, Status, follow_file
from msd_async.live.sources import SourceChangedError

pytestmark = pytest.mark.anyio

IDLE = 0.2


async def _read(path: Path, **kwargs: object) -> bytes:
    out = b""
    async for chunk in follow_file(path, idle_timeout=IDLE, **kwargs):  # type: ignore[arg-type]
        out += chunk
    return out


async def test_a_writer_pausing_longer_than_idle_timeout_is_not_done(
    store: ContainerClient, tmp_path: Path
) -> None:
    temp = tmp_path / "seg_0.m4s.tmp"
    writer = temp.open("wb")
    writer.write(b"first;")
    writer.flush()

    async def encoder() -> None:
        await anyio.sleep(IDLE * 4)  # the encoder waits for input, its file still open
        writer.write(b"second")
        writer.close()
        temp.rename(tmp_path / "seg_0.m4s")

    async with LivePublisher(store) as publisher, anyio.create_task_group() as tg:
        tg.start_soon(encoder)
        pub = await publisher.publish("fw/seg_0.m4s", follow_file(temp, idle_timeout=IDLE),
                                      duration=10.0)
        assert (await pub.wait()).acknowledged
    assert await store.get_bytes("fw/seg_0.m4s") == b"first;second"


async def test_a_closed_file_whose_size_stays_stable_is_done(tmp_path: Path) -> None:
    path = tmp_path / "seg_1.m4s"
    path.write_bytes(b"complete")
    started = anyio.current_time()
    with anyio.fail_after(5):
        assert await _read(path) == b"complete"
    assert anyio.current_time() - started >= IDLE * 0.9


async def test_a_temp_file_renamed_before_it_was_opened_is_read_from_its_final_name(
    tmp_path: Path,
) -> None:
    temp = tmp_path / "seg_2.m4s.tmp"
    temp.write_bytes(b"whole segment")
    temp.rename(tmp_path / "seg_2.m4s")
    with anyio.fail_after(5):
        assert await _read(temp) == b"whole segment"
    other = tmp_path / "x.part"
    other.write_bytes(b"x")
    other.rename(tmp_path / "renamed.bin")
    with anyio.fail_after(5):
        assert await _read(other, final=tmp_path / "renamed.bin") == b"x"
    with pytest.raises(FileNotFoundError):
        await _read(tmp_path / "never.tmp")


async def test_a_file_that_shrinks_fails_and_nothing_is_stored(
    store: ContainerClient, tmp_path: Path
) -> None:
    path = tmp_path / "seg_3.m4s"
    writer = path.open("wb")
    writer.write(b"a" * 1000)
    writer.flush()

    async def rewriter() -> None:
        await anyio.sleep(IDLE)
        writer.seek(0)
        writer.truncate()
        writer.write(b"b" * 10)
        writer.close()

    async with LivePublisher(store) as publisher, anyio.create_task_group() as tg:
        tg.start_soon(rewriter)
        pub = await publisher.publish("fs/seg_3.m4s", follow_file(path, idle_timeout=IDLE),
                                      duration=10.0)
        outcome = await pub.wait()
    assert outcome.status is Status.FAILED
    assert isinstance(outcome.destinations[0].error, SourceChangedError)
    assert "shrank" in (outcome.reason or "")
    with pytest.raises(ObjectNotFoundError):
        await store.describe_object("fs/seg_3.m4s")
