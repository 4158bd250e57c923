"""The folder pusher at its edges: names the API refuses, MPD ordering, symbolic links, a
stop while a file is being written, a playlist rewritten in place faster than --settle."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from test_push import PLAYLIST, Pushing, wait_for

from msd_async import ContainerClient, ObjectNotFoundError, Session
from msd_async.ingest import FolderPusher
from msd_async.live import LivePublisher
from msd_async.testing import LocalMediaStore

pytestmark = pytest.mark.anyio



@pytest.fixture
async def store(mediastore_server: LocalMediaStore) -> AsyncIterator[ContainerClient]:
    async with Session(
        credentials=mediastore_server.credentials, region=mediastore_server.region
    ) as session:
        yield session.container(mediastore_server.endpoint)


MPD = """<?xml version="1.0" encoding="utf-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT2S"
     minBufferTime="PT1S" profiles="urn:mpeg:dash:profile:isoff-live:2011">
  <Period id="0" start="PT0S">
    <AdaptationSet contentType="video" mimeType="video/mp4">
      <Representation id="0" bandwidth="100000">
        <SegmentTemplate timescale="1000" initialization="init-$RepresentationID$.m4s"
                         media="chunk-$RepresentationID$-$Number%05d$.m4s" startNumber="1">
          <SegmentTimeline><S t="0" d="1000" r="1"/></SegmentTimeline>
        </SegmentTemplate>
      </Representation>
    </AdaptationSet>
  </Period>
</MPD>
"""


async def test_a_playlist_naming_a_refused_name_is_refused_not_stored(
    tmp_path: Path, store: ContainerClient
) -> None:
    (tmp_path / "seg é 0.ts").write_bytes(b"media")
    (tmp_path / "index.m3u8").write_text(PLAYLIST.format("seg é 0.ts"))
    async with Pushing(store, tmp_path) as p:
        await p.stop()
    with pytest.raises(ObjectNotFoundError):
        await store.describe_object("index.m3u8")
    [line] = [r for r in p.records if r.path == "index.m3u8"]
    assert line.outcome == "refused"
    assert "seg é 0.ts" in line.detail and "refuses" in line.detail


async def test_a_refused_name_a_version_marked_as_a_gap_is_refused_once_it_is_not(
    tmp_path: Path, store: ContainerClient
) -> None:
    """What a published version named is not checked again in the next, except where it
    was marked as a gap there (then it was never checked)."""
    head = "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\nseg0.ts\n"
    (tmp_path / "seg0.ts").write_bytes(b"media")
    async with Pushing(store, tmp_path) as p:
        (tmp_path / "index.m3u8").write_text(head + "#EXT-X-GAP\n#EXTINF:1.0,\nseg é 1.ts\n")
        await wait_for(lambda: any(r.path == "index.m3u8" for r in p.records))
        (tmp_path / "index.m3u8").write_text(
            head + "#EXTINF:1.0,\nseg é 1.ts\n#EXTINF:1.0,\nseg0.ts\n"
        )
        await wait_for(lambda: len([r for r in p.records if r.path == "index.m3u8"]) == 2)
        await p.stop()
    first, second = [r for r in p.records if r.path == "index.m3u8"]
    assert first.outcome == "acknowledged"
    assert second.outcome == "refused" and "seg é 1.ts" in second.detail
    assert b"#EXT-X-GAP" in await store.get_bytes("index.m3u8")  # the first version stays


async def test_an_mpd_goes_after_the_segments_it_names(
    tmp_path: Path, store: ContainerClient
) -> None:
    async with Pushing(store, tmp_path, settle=5.0) as p:
        # Written in place: each would wait 5 s, but the MPD renamed into place names them.
        for name in ("init-0.m4s", "chunk-0-00001.m4s", "chunk-0-00002.m4s"):
            (tmp_path / name).write_bytes(name.encode())
        (tmp_path / "manifest.mpd.tmp").write_text(MPD)
        os.rename(tmp_path / "manifest.mpd.tmp", tmp_path / "manifest.mpd")
        await wait_for(lambda: "manifest.mpd" in p.queued, within=4.5)
        await p.stop()
    mpd = p.queued.index("manifest.mpd")
    for name in ("init-0.m4s", "chunk-0-00001.m4s", "chunk-0-00002.m4s"):
        assert p.queued.index(name) < mpd
        assert await store.get_bytes(name) == name.encode()


async def test_links_are_followed_only_inside_the_folder(
    tmp_path: Path, store: ContainerClient
) -> None:
    folder, outside = tmp_path / "out", tmp_path / "secret"
    folder.mkdir()
    outside.mkdir()
    (outside / "key.txt").write_bytes(b"private")
    (folder / "seg0.ts").write_bytes(b"media")
    (folder / "alias.ts").symlink_to(folder / "seg0.ts")
    (folder / "leak0.ts").symlink_to(outside / "key.txt")  # seen by the start-up scan
    (folder / "dir").symlink_to(outside, target_is_directory=True)
    async with Pushing(store, folder) as p:
        (folder / "leak1.ts").symlink_to(outside / "key.txt")  # seen by the watcher
        await asyncio.sleep(1.0)
        (folder / "leak2.ts").symlink_to(outside / "key.txt")  # seen by the final scan
        await p.stop()
    assert await store.get_bytes("alias.ts") == b"media"
    for name in ("leak0.ts", "leak1.ts", "leak2.ts", "dir/key.txt"):
        with pytest.raises(ObjectNotFoundError):
            await store.describe_object(name)
    assert not any("leak" in path or "key" in path for path in p.queued)


async def test_nothing_under_a_hidden_folder_is_ever_published(
    tmp_path: Path, store: ContainerClient
) -> None:
    """Names starting with ``.`` are never published, a folder's included: by the start-up
    scan, the watcher (written in place or renamed into place), a manifest that names one,
    or the final scan."""
    # The folders exist before the watch starts: one made while it runs may have files
    # written before the watcher watches it, which only the final scan would see.
    for folder in (".cache", ".work/deep", "v/.hidden"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / ".cache" / "scan.ts").write_bytes(b"start-up")
    async with Pushing(store, tmp_path, settle=0.3, reference_wait=0.5) as p:
        (tmp_path / ".work" / "deep" / "in_place.ts").write_bytes(b"written in place")
        (tmp_path / ".work" / "renamed.ts.tmp").write_bytes(b"renamed")
        os.rename(tmp_path / ".work" / "renamed.ts.tmp", tmp_path / ".work" / "renamed.ts")
        (tmp_path / "v" / ".hidden" / "named.ts").write_bytes(b"named by the playlist")
        (tmp_path / "v" / "seg0.ts").write_bytes(b"media")
        (tmp_path / "v" / "index.m3u8.tmp").write_text(
            PLAYLIST.format("seg0.ts") + "#EXTINF:1.0,\n.hidden/named.ts\n")
        os.rename(tmp_path / "v" / "index.m3u8.tmp", tmp_path / "v" / "index.m3u8")
        # The watcher saw all of it: the playlist is published (without what it may not
        # name), and well past settle.
        await wait_for(lambda: any(r.path == "v/index.m3u8" for r in p.records))
        await asyncio.sleep(1.0)
        (tmp_path / ".cache" / "late.ts").write_bytes(b"final scan")
        await p.stop()
    assert await store.get_bytes("v/seg0.ts") == b"media"
    assert [path for path in p.queued if "/." in "/" + path] == []
    for name in (".cache/scan.ts", ".work/deep/in_place.ts", ".work/renamed.ts",
                 "v/.hidden/named.ts", ".cache/late.ts"):
        with pytest.raises(ObjectNotFoundError):
            await store.describe_object(name)


async def test_stop_publishes_nothing_half_written(
    tmp_path: Path, store: ContainerClient
) -> None:
    async with Pushing(store, tmp_path, settle=1.0) as p:
        (tmp_path / "done.ts").write_bytes(b"complete")
        writer = (tmp_path / "half.ts").open("wb")
        try:
            writer.write(b"x" * 1000)
            writer.flush()

            async def keep_writing() -> None:
                while True:
                    await asyncio.sleep(0.2)
                    writer.write(b"x" * 1000)
                    writer.flush()

            writing = asyncio.create_task(keep_writing())
            try:
                await p.stop()
            finally:
                writing.cancel()
        finally:
            writer.close()
    assert await store.get_bytes("done.ts") == b"complete"
    with pytest.raises(ObjectNotFoundError):
        await store.describe_object("half.ts")
    assert "half.ts" not in p.queued


async def test_a_playlist_rewritten_faster_than_settle_is_still_published(
    tmp_path: Path, store: ContainerClient
) -> None:
    seen: set[bytes] = set()
    async with Pushing(store, tmp_path, settle=1.0) as p:
        text = "#EXTM3U\n#EXT-X-TARGETDURATION:1\n"
        for n in range(15):
            (tmp_path / f"s{n}.ts.tmp").write_bytes(b"m")
            os.rename(tmp_path / f"s{n}.ts.tmp", tmp_path / f"s{n}.ts")
            text += f"#EXTINF:0.4,\ns{n}.ts\n"
            (tmp_path / "index.m3u8").write_text(text)  # in place, every 0.4 s
            await asyncio.sleep(0.4)
            with contextlib.suppress(ObjectNotFoundError):
                seen.add(await store.get_bytes("index.m3u8"))
        await p.stop()
    # While the stream ran (before the stop), several versions reached the origin.
    assert len(seen) >= 4, len(seen)


async def test_a_playlist_does_not_flush_a_published_segment_being_rewritten_in_place(
    tmp_path: Path, store: ContainerClient
) -> None:
    """A playlist flushes what it names that was never published; a segment already at the
    origin and being rewritten in place (truncated, then written again a piece at a time)
    waits until it has settled, or the origin would store it half-written."""
    old, new = b"old " * 100, b"new " * 300
    async with Pushing(store, tmp_path, settle=1.0) as p:
        (tmp_path / "s0.ts.tmp").write_bytes(old)
        os.rename(tmp_path / "s0.ts.tmp", tmp_path / "s0.ts")
        (tmp_path / "index.m3u8.tmp").write_text(PLAYLIST.format("s0.ts"))
        os.rename(tmp_path / "index.m3u8.tmp", tmp_path / "index.m3u8")
        await wait_for(lambda: sum(r.path == "index.m3u8" for r in p.records) == 1)
        with (tmp_path / "s0.ts").open("wb") as f:
            f.write(new[:100])
            f.flush()
            # The next playlist version, renamed into place (published at once), still
            # names the segment being rewritten.
            (tmp_path / "index.m3u8.tmp").write_text(PLAYLIST.format("s0.ts") + "#\n")
            os.rename(tmp_path / "index.m3u8.tmp", tmp_path / "index.m3u8")
            for start in range(100, len(new), 100):
                await asyncio.sleep(0.1)  # well under settle: still being written
                f.write(new[start:start + 100])
                f.flush()
                assert await store.get_bytes("s0.ts") in (old, new)
        await wait_for(lambda: sum(r.path == "s0.ts" for r in p.records) == 2)
        await p.stop()
    assert await store.get_bytes("s0.ts") == new
    assert [r.size for r in p.records if r.path == "s0.ts"] == [len(old), len(new)]


async def test_a_file_changed_just_before_it_is_due_is_not_published_half_written(
    tmp_path: Path, store: ContainerClient
) -> None:
    """The watcher tells of a change some milliseconds after it happens: a file written in
    place that changes again just before its settle time is up must not be taken as
    settled before that change is heard of (its own modification time says it changed)."""
    from watchfiles import Change

    async with LivePublisher(store, close_timeout=5) as publisher:
        pusher = FolderPusher(publisher, tmp_path, settle=0.3)
        segment = tmp_path / "s0.ts"
        segment.write_bytes(b"complete")
        pusher._note_changes([(Change.added, str(segment))])
        await asyncio.sleep(0.35)  # quiet for settle: due
        with segment.open("wb") as f:  # the encoder starts it again; not heard of yet
            f.write(b"half")
            f.flush()
            await pusher._drain_due()
            await asyncio.sleep(0.1)
            f.write(b" and the rest")
        with pytest.raises(ObjectNotFoundError):
            await store.describe_object("s0.ts")
        pusher._note_changes([(Change.modified, str(segment))])
        await asyncio.sleep(0.35)
        await pusher._drain_due()
        await pusher.reporter.drain(5)
    assert await store.get_bytes("s0.ts") == b"half and the rest"


async def test_a_playlist_caught_truncated_by_its_rewrite_is_not_published(
    tmp_path: Path, store: ContainerClient
) -> None:
    """An encoder rewriting its playlist in place truncates it first: a playlist due just
    then (quiet since the last change the watcher told of) must not be published empty."""
    from watchfiles import Change

    async with LivePublisher(store, close_timeout=5) as publisher:
        pusher = FolderPusher(publisher, tmp_path, settle=1.0)
        playlist = tmp_path / "index.m3u8"
        playlist.write_text("#EXTM3U\n#EXT-X-TARGETDURATION:1\n")
        pusher._note_changes([(Change.added, str(playlist))])
        await asyncio.sleep(0.3)  # quiet for 0.2 s: due
        with playlist.open("w") as f:  # the rewrite has truncated it, not yet heard of
            await pusher._drain_due()
            f.write("#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-ENDLIST\n")
        await asyncio.sleep(0.2)
        with pytest.raises(ObjectNotFoundError):
            await store.describe_object("index.m3u8")
        pusher._note_changes([(Change.modified, str(playlist))])
        await asyncio.sleep(0.3)
        await pusher._drain_due()
        await pusher.reporter.drain(5)
    assert b"#EXT-X-ENDLIST" in await store.get_bytes("index.m3u8")


async def test_a_folder_reached_through_a_link_is_published_by_its_own_path(
    tmp_path: Path, store: ContainerClient
) -> None:
    """The scans never follow a link to a folder, but the watcher does, and reports what
    is written in a folder under whichever of its names it watched last: ``linkdir/x.ts``
    for ``real/x.ts``. Such a file was published under the link's name, a second copy
    that the scans never saw, and its deletion was mirrored under that name only: the
    object under its own name stayed at the origin until the stop. One name per file,
    its own path, whichever way the watcher names it; a path through a link to a folder
    is not published, a playlist naming one included (as a link out of the folder)."""
    (tmp_path / "real").mkdir()
    (tmp_path / "linkdir").symlink_to(tmp_path / "real", target_is_directory=True)
    async with Pushing(
        store, tmp_path, settle=0.3, unknown_delete_delay=0.0, reference_wait=0.3
    ) as p:
        for name in ("seg1.ts", "seg2.ts"):
            (tmp_path / "real" / f"{name}.tmp").write_bytes(name.encode())
            os.rename(tmp_path / "real" / f"{name}.tmp", tmp_path / "real" / name)
        (tmp_path / "top.m3u8").write_text(PLAYLIST.format("linkdir/seg2.ts"))
        await wait_for(lambda: {"real/seg1.ts", "real/seg2.ts", "top.m3u8"} <= {
            r.path for r in p.records if r.outcome == "acknowledged"
        })
        (tmp_path / "real" / "seg1.ts").unlink()
        await wait_for(lambda: any(
            r.path == "real/seg1.ts" and r.method == "DELETE" for r in p.records
        ))
        await p.stop()
    assert [path for path in p.queued if path.startswith("linkdir/")] == []
    with pytest.raises(ObjectNotFoundError):
        await store.describe_object("real/seg1.ts")
    assert await store.get_bytes("real/seg2.ts") == b"seg2.ts"
