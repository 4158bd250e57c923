"""What a manifest names, at the edges of the names an origin takes: percent-encoded URIs
and names MediaStore refuses to store. Each test reproduces a break seen on the code
before its fix."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from msd_async import ContainerClient
from msd_async.live import LivePublisher, PublishEvent, resolve_uri

pytestmark = pytest.mark.anyio


def playlist(uris: list[str], *, end: bool = False) -> bytes:
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-TARGETDURATION:1",
             "#EXT-X-MEDIA-SEQUENCE:0"]
    for uri in uris:
        lines += ["#EXTINF:1.000,", uri]
    if end:
        lines.append("#EXT-X-ENDLIST")
    return ("\n".join(lines) + "\n").encode()


def test_a_percent_encoded_uri_names_the_object_a_player_gets() -> None:
    # RFC 3986 section 2.1: the origin decodes the request path, as the relay does.
    assert resolve_uri("live/index.m3u8", "seg%3D1.m4s") == "live/seg=1.m4s"
    assert resolve_uri("live/index.m3u8", "r%5F0/seg_1.m4s") == "live/r_0/seg_1.m4s"
    assert resolve_uri("live/index.m3u8", "seg%201.m4s") == "live/seg 1.m4s"


async def test_a_playlist_naming_a_segment_percent_encoded_waits_for_it(
    store: ContainerClient,
) -> None:
    release = anyio.Event()

    async def held() -> AsyncIterator[bytes]:
        yield b"s"
        await release.wait()
        yield b"1"

    async with LivePublisher(store, reference_wait=0.2) as publisher:
        seg = await publisher.publish("pe/seg=1.m4s", held(), duration=10.0)
        pl = await publisher.publish("pe/index.m3u8", playlist(["seg%3D1.m4s"]))
        await anyio.sleep(0.6)  # three times reference_wait
        assert not pl.done()  # it names seg=1.m4s, which is still uploading
        release.set()
        with anyio.fail_after(5):
            assert (await seg.wait()).acknowledged
            assert (await pl.wait()).acknowledged


async def test_a_name_the_origin_refuses_is_marked_as_a_gap_without_waiting(
    store: ContainerClient,
) -> None:
    """A segment MediaStore refuses to store (a space, a non-ASCII letter) can never be
    there: the playlist is not held back for it, and does not claim it is there."""
    events: list[PublishEvent] = []
    wait = 6.0
    async with LivePublisher(store, reference_wait=wait, on_event=events.append) as publisher:
        await publisher.publish("rf/seg_0.m4s", b"s0", duration=5.0)
        pl = await publisher.publish(
            "rf/index.m3u8", playlist(["seg_0.m4s", "seg 1.m4s", "s\u00e9g_2.m4s"]))
        with anyio.fail_after(wait / 2):
            assert (await pl.wait()).acknowledged
        await publisher.publish("rf/seg_3.m4s", b"s3", duration=5.0)
        with anyio.fail_after(wait / 2):
            assert (await (await publisher.publish(
                "rf/index.m3u8",
                playlist(["seg_0.m4s", "seg 1.m4s", "s\u00e9g_2.m4s", "seg_3.m4s"], end=True),
            )).wait()).acknowledged
    stored = (await store.get_bytes("rf/index.m3u8")).decode().splitlines()
    for name in ("seg 1.m4s", "s\u00e9g_2.m4s"):  # in the second version too
        assert stored[stored.index(name) - 1] == "#EXT-X-GAP"
    assert stored[stored.index("seg_0.m4s") - 1] != "#EXT-X-GAP"
    assert stored[stored.index("seg_3.m4s") - 1] != "#EXT-X-GAP"
    assert {e.path for e in events if e.kind == "gap"} == {"rf/seg 1.m4s", "rf/s\u00e9g_2.m4s"}
