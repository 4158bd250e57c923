"""The folder pusher in process: a real folder, watchfiles, the LivePublisher, the local
server."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from msd_async import ContainerClient, ObjectNotFoundError, Session
from msd_async.ingest import FolderPusher, ObjectRecord, is_ignored, is_temporary
from msd_async.live import LivePublisher, PublishEvent
from msd_async.testing import LocalMediaStore

pytestmark = pytest.mark.anyio

PLAYLIST = "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\n{}\n"


@pytest.fixture
async def store(mediastore_server: LocalMediaStore) -> AsyncIterator[ContainerClient]:
    async with Session(
        credentials=mediastore_server.credentials, region=mediastore_server.region
    ) as session:
        yield session.container(mediastore_server.endpoint)


class Pushing:
    """A pusher running over ``folder`` until :meth:`stop`."""

    def __init__(
        self, store: ContainerClient, folder: Path, settle: float = 0.5, **publisher: Any
    ) -> None:
        self.queued: list[str] = []
        self.records: list[ObjectRecord] = []
        self.publisher = LivePublisher(
            store, on_event=self._event, close_timeout=5, **publisher
        )
        self.folder = folder
        self.settle = settle
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def _event(self, event: PublishEvent) -> None:
        if event.kind == "queued":
            self.queued.append(event.path)

    async def __aenter__(self) -> Pushing:
        await self.publisher.__aenter__()
        self.pusher = FolderPusher(
            self.publisher, self.folder, settle=self.settle, on_object=self.records.append
        )
        self._task = asyncio.create_task(self.pusher.run(self._stop))
        await asyncio.sleep(0.3)  # the catch-up scan and the watch are under way
        return self

    async def stop(self) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task

    async def __aexit__(self, *exc: object) -> None:
        try:
            if self._task is not None and not self._task.done():
                await self.stop()
        finally:
            await self.publisher.__aexit__(None, None, None)


async def wait_for(condition: object, within: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():  # type: ignore[operator]
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def test_temporary_names() -> None:
    assert is_temporary("a/seg1.ts.tmp")
    assert is_temporary("index.m3u8.TMP")
    assert is_temporary(".index.m3u8")
    assert is_temporary("seg.part")
    assert not is_temporary("seg1.ts")
    assert not is_temporary("index.m3u8")


def test_ignored_paths() -> None:
    assert is_ignored(".hidden/seg1.ts") and is_ignored("v/.a/b/seg1.ts")
    assert is_ignored("v/.index.m3u8") and is_ignored("v/seg1.ts.tmp")
    assert is_ignored("../seg1.ts")  # never outside the folder
    assert not is_ignored("v/seg1.ts") and not is_ignored("a.b/seg1.ts")


async def test_catch_up_oldest_first_playlists_last_temporary_never(
    tmp_path: Path, store: ContainerClient
) -> None:
    (tmp_path / "v").mkdir()
    files = {"v/seg1.ts": 1_000, "v/index.m3u8": 500, "v/seg0.ts": 100, "v/seg2.ts.tmp": 50}
    for name, age in files.items():
        path = tmp_path / name
        path.write_bytes(name.encode())
        os.utime(path, (1_700_000_000 - age, 1_700_000_000 - age))
    (tmp_path / "v/index.m3u8").write_text(PLAYLIST.format("seg1.ts"))
    async with Pushing(store, tmp_path) as p:
        await p.stop()
    assert p.queued == ["v/seg1.ts", "v/seg0.ts", "v/index.m3u8"]
    assert await store.get_bytes("v/seg0.ts") == b"v/seg0.ts"
    with pytest.raises(ObjectNotFoundError):
        await store.describe_object("v/seg2.ts.tmp")
    assert {r.outcome for r in p.records} == {"acknowledged"}


async def test_rename_goes_at_once_in_place_waits_until_settled(
    tmp_path: Path, store: ContainerClient
) -> None:
    async with Pushing(store, tmp_path, settle=3.0) as p:
        (tmp_path / "a.ts.tmp").write_bytes(b"renamed")
        os.rename(tmp_path / "a.ts.tmp", tmp_path / "a.ts")
        # Well before the settle time: a rename means the file is complete.
        await wait_for(lambda: "a.ts" in p.queued, within=2.5)

        # Written in place, a bit at a time: not published while it keeps changing.
        with (tmp_path / "b.ts").open("wb") as f:
            for _ in range(6):
                f.write(b"x" * 100)
                f.flush()
                await asyncio.sleep(0.2)
                assert "b.ts" not in p.queued
        await wait_for(lambda: "b.ts" in p.queued, within=10)
        await p.stop()
    assert await store.get_bytes("a.ts") == b"renamed"
    assert await store.get_bytes("b.ts") == b"x" * 600
    assert p.pusher.skipped_temporary >= 1
    assert all(not path.endswith(".tmp") for path in p.queued)


async def test_playlist_flushes_what_it_names_and_deletions_are_mirrored(
    tmp_path: Path, store: ContainerClient
) -> None:
    async with Pushing(store, tmp_path, settle=5.0) as p:
        (tmp_path / "s1.ts").write_bytes(b"one")  # written in place: would wait 5 s
        (tmp_path / "index.m3u8.tmp").write_text(PLAYLIST.format("s1.ts"))
        os.rename(tmp_path / "index.m3u8.tmp", tmp_path / "index.m3u8")
        await wait_for(lambda: "index.m3u8" in p.queued, within=4.5)
        assert p.queued.index("s1.ts") < p.queued.index("index.m3u8")
        await wait_for(lambda: any(r.path == "index.m3u8" for r in p.records))
        assert await store.get_bytes("s1.ts") == b"one"

        (tmp_path / "s1.ts").unlink()
        await wait_for(
            lambda: any(r.method == "DELETE" and r.path == "s1.ts" for r in p.records)
        )
        await p.stop()


async def test_stop_mirrors_a_deletion_the_watcher_has_not_reported(
    tmp_path: Path, store: ContainerClient
) -> None:
    # A file no playlist names waits unknown_delete_delay: 0 makes the delete due at once,
    # and the publisher stays open after the pusher stops (the pusher does not close it),
    # so what the pusher handed over at its stop shows at the origin.
    async with Pushing(store, tmp_path, unknown_delete_delay=0.0) as p:
        for name in ("gone.ts", "kept.ts", "again.ts"):
            (tmp_path / f"{name}.tmp").write_bytes(name.encode())
            os.rename(tmp_path / f"{name}.tmp", tmp_path / name)
        await wait_for(lambda: {r.path for r in p.records} >= {"gone.ts", "kept.ts",
                                                                "again.ts"})
        for name in ("gone.ts", "kept.ts", "again.ts"):
            assert await store.get_bytes(name) == name.encode()

        # No await from the unlink to the stop: the watcher cannot have reported it.
        (tmp_path / "gone.ts").unlink()
        (tmp_path / "again.ts").unlink()
        (tmp_path / "again.ts").write_bytes(b"a new version")  # re-created: not deleted
        await p.stop()

        deletes = [r for r in p.records if r.method == "DELETE"]
        assert [(r.path, r.outcome) for r in deletes] == [("gone.ts", "delete scheduled")]

        async def gone() -> bool:
            try:
                await store.describe_object("gone.ts")
            except ObjectNotFoundError:
                return True
            return False

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not await gone():
            assert loop.time() < deadline, "gone.ts is still at the origin"
            await asyncio.sleep(0.05)
    assert await store.get_bytes("kept.ts") == b"kept.ts"
    assert await store.get_bytes("again.ts") == b"a new version"


async def test_stop_publishes_files_completed_before_it(
    tmp_path: Path, store: ContainerClient
) -> None:
    # Written in place just before the stop: published once unchanged for --settle.
    async with Pushing(store, tmp_path, settle=2.0) as p:
        (tmp_path / "late.ts").write_bytes(b"late")
        (tmp_path / "late.ts.tmp").write_bytes(b"never")
        (tmp_path / "index.m3u8").write_text(PLAYLIST.format("late.ts") + "#EXT-X-ENDLIST\n")
        await p.stop()
    assert p.queued[-1] == "index.m3u8"
    assert await store.get_bytes("late.ts") == b"late"
    assert b"#EXT-X-ENDLIST" in await store.get_bytes("index.m3u8")
    with pytest.raises(ObjectNotFoundError):
        await store.describe_object("late.ts.tmp")


def test_pusher_needs_a_folder(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError, match="not a folder"):
        FolderPusher(object(), tmp_path / "missing")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("setting", "value"),
    [("settle", float("nan")), ("settle", -1.0), ("settle", float("inf")),
     ("drain_timeout", float("nan")), ("media_deadline", 0.0)],
)
def test_a_timing_setting_that_is_no_duration_is_refused(
    tmp_path: Path, setting: str, value: float
) -> None:
    # Taken silently before: the CLI checks its options, the library did not.
    with pytest.raises(ValueError, match=setting):
        FolderPusher(object(), tmp_path, **{setting: value})  # type: ignore[arg-type]


async def test_a_folder_moved_in_while_running_has_its_files_published(
    tmp_path: Path, store: ContainerClient
) -> None:
    """The watcher watches a new folder only once it is told of it, and reports nothing of
    what was in it by then: a folder moved in whole (or filled before its watch was set)
    had its files published only at the stop, or never if the pusher ran on."""
    watched = tmp_path / "out"
    watched.mkdir()
    outside = tmp_path / "staging" / "v1"
    (outside / "deep").mkdir(parents=True)
    (outside / "seg0.ts").write_bytes(b"zero")
    (outside / "deep" / "seg1.ts").write_bytes(b"one")
    (outside / ".hidden.ts").write_bytes(b"never")
    async with Pushing(store, watched, settle=0.5) as p:
        os.rename(outside, watched / "v1")
        await wait_for(lambda: {"v1/seg0.ts", "v1/deep/seg1.ts"} <= set(p.queued), within=8)
        assert p._task is not None and not p._task.done()  # published while it runs
        await p.stop()
    assert await store.get_bytes("v1/seg0.ts") == b"zero"
    assert await store.get_bytes("v1/deep/seg1.ts") == b"one"
    assert "v1/.hidden.ts" not in p.queued


async def test_a_deletion_made_while_stopped_is_not_mirrored_by_the_next_run(
    tmp_path: Path, store: ContainerClient
) -> None:
    """What docs/ingest.md promises: the pusher keeps no memory of what it published, and
    the origin's folder may hold what others put there (another pusher, a relay, a sync),
    so a restart publishes what the folder holds and deletes nothing: a file deleted while
    it was not running stays at the origin (``msd rm`` removes it)."""
    (tmp_path / "s1.ts").write_bytes(b"one")
    async with Pushing(store, tmp_path, settle=0.1) as p:
        await p.stop()
    assert await store.get_bytes("s1.ts") == b"one"
    (tmp_path / "s1.ts").unlink()
    (tmp_path / "s2.ts").write_bytes(b"two")
    async with Pushing(store, tmp_path, settle=0.1) as p:
        await p.stop()
    assert await store.get_bytes("s2.ts") == b"two"
    assert await store.get_bytes("s1.ts") == b"one"
    assert [r.method for r in p.records] == ["PUT"]
