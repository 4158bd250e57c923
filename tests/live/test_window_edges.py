"""The sliding window's promises at its edges: a delete never removes what was published
after it was scheduled, and never reaches outside the publisher's prefix. Each test
reproduces a break seen on the code before its fix."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from msd_async import ContainerClient
from msd_async.errors import ObjectNotFoundError
from msd_async.live import LivePublisher, PublishEvent

pytestmark = pytest.mark.anyio


def playlist(uris: list[str], *, duration: float = 0.05) -> bytes:
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-TARGETDURATION:1",
             "#EXT-X-MEDIA-SEQUENCE:0"]
    for uri in uris:
        lines += [f"#EXTINF:{duration:.3f},", uri]
    return ("\n".join(lines) + "\n").encode()


async def _held(release: anyio.Event, data: bytes) -> AsyncIterator[bytes]:
    yield data[:1]
    await release.wait()
    yield data[1:]


async def _left_the_window(publisher: LivePublisher, folder: str) -> None:
    """seg_0 stored and named, then dropped from the playlist: its delete comes due in
    about 0.1 s."""
    await publisher.publish(f"{folder}/seg_0.m4s", b"old", duration=5.0)
    await (await publisher.publish(f"{folder}/index.m3u8", playlist(["seg_0.m4s"]))).wait()
    await publisher.publish(f"{folder}/seg_1.m4s", b"s1", duration=5.0)
    await (await publisher.publish(f"{folder}/index.m3u8", playlist(["seg_1.m4s"]))).wait()


async def test_a_playlist_naming_a_segment_published_again_waits_for_the_new_version(
    store: ContainerClient,
) -> None:
    """A packager restarted within the window reuses its segment names: the playlist naming
    the new seg_0 waits for it, not for the old one still at the origin."""
    release = anyio.Event()
    async with LivePublisher(store) as publisher:
        await _left_the_window(publisher, "rg")
        new = await publisher.publish("rg/seg_0.m4s", _held(release, b"new"), duration=5.0)
        named = await publisher.publish("rg/index.m3u8", playlist(["seg_1.m4s", "seg_0.m4s"]))
        await anyio.sleep(0.4)
        assert not named.done()
        release.set()
        with anyio.fail_after(5):
            assert (await new.wait()).acknowledged
            assert (await named.wait()).acknowledged
        await anyio.sleep(0.4)  # well past the old version's delete
        stats = publisher.stats()
    assert b"seg_0.m4s" in await store.get_bytes("rg/index.m3u8")
    assert await store.get_bytes("rg/seg_0.m4s") == b"new"
    assert stats.destinations[0].deletes == 0


async def test_a_multivariant_does_not_wait_for_a_newer_version_of_a_stored_playlist(
    store: ContainerClient,
) -> None:
    """Stored once is enough for a media playlist a multivariant names: a newer version is
    always on its way in a live stream (waiting for it would starve the multivariant)."""
    release = anyio.Event()
    async with LivePublisher(store) as publisher:
        await publisher.publish("mv/r0/seg_0.m4s", b"s0", duration=5.0)
        await (await publisher.publish("mv/r0/index.m3u8", playlist(["seg_0.m4s"]))).wait()
        await publisher.publish("mv/r0/seg_1.m4s", _held(release, b"s1"), duration=5.0)
        gated = await publisher.publish("mv/r0/index.m3u8",
                                        playlist(["seg_0.m4s", "seg_1.m4s"]))
        master = await publisher.publish(
            "mv/master.m3u8",
            b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000\nr0/index.m3u8\n")
        with anyio.fail_after(5):
            assert (await master.wait()).acknowledged
        assert not gated.done()
        release.set()
        with anyio.fail_after(5):
            assert (await gated.wait()).acknowledged


async def test_a_segment_published_again_is_not_removed_by_the_delete_of_its_old_version(
    store: ContainerClient,
) -> None:
    """The delete the old seg_0 earned when it left the playlist must not undo the new
    seg_0, which the next playlist (held back by seg_2 meanwhile) names."""
    release_0, release_2 = anyio.Event(), anyio.Event()
    async with LivePublisher(store) as publisher:
        await _left_the_window(publisher, "rp")
        new = await publisher.publish("rp/seg_0.m4s", _held(release_0, b"new"), duration=5.0)
        seg_2 = await publisher.publish("rp/seg_2.m4s", _held(release_2, b"s2"), duration=5.0)
        named = await publisher.publish(
            "rp/index.m3u8", playlist(["seg_1.m4s", "seg_0.m4s", "seg_2.m4s"]))
        await anyio.sleep(0.4)  # the old version's delete is due
        release_0.set()
        with anyio.fail_after(5):
            assert (await new.wait()).acknowledged
        await anyio.sleep(0.4)
        release_2.set()
        with anyio.fail_after(5):
            assert (await seg_2.wait()).acknowledged
            assert (await named.wait()).acknowledged
        await anyio.sleep(0.4)
        stats = publisher.stats()
    assert b"seg_0.m4s" in await store.get_bytes("rp/index.m3u8")
    assert await store.get_bytes("rp/seg_0.m4s") == b"new"
    assert stats.destinations[0].deletes == 0


async def test_the_window_never_deletes_outside_the_prefix(store: ContainerClient) -> None:
    """A playlist under prefix ch1 that names ../ch2/seg_0.m4s (another stream's object, or
    an encoder behind ``msd relay --prefix ch1``) must not get it deleted when it leaves."""
    await store.put_object("ch2/seg_0.m4s", b"another stream's segment")
    await store.put_object("top.m4s", b"the container root's")
    deleted = anyio.Event()

    def on_event(event: PublishEvent) -> None:
        if event.kind == "deleted" and event.path == "ch1/seg_0.m4s":
            deleted.set()

    async with LivePublisher(store, prefix="ch1", reference_wait=0.2,
                             on_event=on_event) as publisher:
        await publisher.publish("seg_0.m4s", b"s0", duration=5.0)
        await (await publisher.publish(
            "index.m3u8", playlist(["seg_0.m4s", "../ch2/seg_0.m4s", "/top.m4s"]))).wait()
        await publisher.publish("seg_1.m4s", b"s1", duration=5.0)
        await (await publisher.publish("index.m3u8", playlist(["seg_1.m4s"]))).wait()
        with anyio.fail_after(5):
            await deleted.wait()  # ch1/seg_0 goes: the window is at work
        await anyio.sleep(0.5)
        assert publisher.stats().destinations[0].deletes == 1
    with pytest.raises(ObjectNotFoundError):
        await store.get_bytes("ch1/seg_0.m4s")
    assert await store.get_bytes("ch2/seg_0.m4s") == b"another stream's segment"
    assert await store.get_bytes("top.m4s") == b"the container root's"
