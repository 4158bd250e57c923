"""Publish, acknowledge, order, latest-wins: the core against the local server."""

from __future__ import annotations

import anyio
import pytest

from msd_async import ContainerClient
from msd_async.live import LivePublisher, ObjectKind, PublisherClosedError, Status
from msd_async.testing import LocalMediaStore

pytestmark = pytest.mark.anyio

PLAYLIST = (
    "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:{first}\n"
    '#EXT-X-MAP:URI="init.mp4"\n{body}{end}'
)


def playlist(first: int, last: int, *, end: bool = False) -> bytes:
    body = "".join(f"#EXTINF:2.0,\nseg_{n}.m4s\n" for n in range(first, last + 1))
    return PLAYLIST.format(first=first, body=body, end="#EXT-X-ENDLIST\n" if end else "").encode()


async def test_publish_acknowledges_with_kind_headers(
    store: ContainerClient, mediastore_server: LocalMediaStore
) -> None:
    async with LivePublisher(store, prefix="live") as publisher:
        init = await publisher.publish("720p/init.mp4", b"init")
        seg = await publisher.publish("720p/seg_1.m4s", b"x" * 1000, duration=2.0)
        pl = await publisher.publish("720p/index.m3u8", playlist(1, 1))
        assert init.kind is ObjectKind.INIT and seg.kind is ObjectKind.MEDIA
        assert pl.kind is ObjectKind.MEDIA_PLAYLIST
        outcomes = [await p.wait() for p in (init, seg, pl)]
    assert [o.status for o in outcomes] == [Status.ACKNOWLEDGED] * 3
    info = await store.describe_object("live/720p/seg_1.m4s")
    assert info.content_type == "video/iso.segment"
    assert info.cache_control == "max-age=1209600, immutable"
    info = await store.describe_object("live/720p/index.m3u8")
    assert info.content_type == "application/vnd.apple.mpegurl"
    assert info.cache_control == "max-age=1"  # half of a 2 s target duration
    stats = publisher.stats()
    assert stats[ObjectKind.MEDIA].acknowledged == 1
    assert stats[ObjectKind.MEDIA].latency_p50 is not None


async def test_playlist_waits_for_the_segment_it_names(
    store: ContainerClient, mediastore_server: LocalMediaStore
) -> None:
    mediastore_server.faults.inject("delay", method="PUT", path="a/seg_1.m4s", delay=0.6)
    async with LivePublisher(store) as publisher:
        await publisher.publish("a/init.mp4", b"i")
        seg = await publisher.publish("a/seg_1.m4s", b"s1", duration=5.0)
        pl = await publisher.publish("a/index.m3u8", playlist(1, 1))
        await anyio.sleep(0.3)
        # the segment is still on its way, so the playlist must not be there yet
        assert not pl.done()
        assert (await pl.wait()).acknowledged
        assert seg.done()
        assert (await seg.wait()).latency is not None
        assert (await pl.wait()).latency > (await seg.wait()).latency  # type: ignore[operator]


async def test_latest_manifest_wins_over_pending_ones(
    store: ContainerClient, mediastore_server: LocalMediaStore
) -> None:
    mediastore_server.faults.inject("503", method="PUT", path="b/index.m3u8", times=3)
    async with LivePublisher(store) as publisher:
        await publisher.publish("b/init.mp4", b"i")
        await publisher.publish("b/seg_1.m4s", b"1", duration=5.0)
        pubs = [await publisher.publish("b/index.m3u8", playlist(1, 1)) for _ in range(5)]
        final = await publisher.publish("b/index.m3u8", playlist(1, 1, end=True))
        outcome = await final.wait()
    assert outcome.acknowledged
    statuses = [(await p.wait()).status for p in pubs]
    assert Status.SUPERSEDED in statuses
    assert b"#EXT-X-ENDLIST" in await store.get_bytes("b/index.m3u8")


async def test_publish_outside_context_is_refused(store: ContainerClient) -> None:
    publisher = LivePublisher(store)
    with pytest.raises(PublisherClosedError, match="async with"):
        await publisher.publish("x/seg.ts", b"")
