"""LL-HLS preload hints at their edge: a hinted part must be requestable when the hint is
stored (RFC 8216bis section 6.2.6). Reproduces a break seen on the code before its fix."""

from __future__ import annotations

import anyio
import pytest
from hls_text import ll_playlist

from msd_async import ContainerClient
from msd_async.errors import ObjectNotFoundError
from msd_async.live import LivePublisher
from msd_async.testing import LocalMediaStore

pytestmark = pytest.mark.anyio


async def test_a_hint_to_a_part_sent_whole_waits_until_a_reader_can_get_it(
    store: ContainerClient, mediastore_server: LocalMediaStore
) -> None:
    """A part published as bytes goes as a STANDARD upload, which no reader sees before it
    is complete: its upload having started does not make the hint true. The playlist waits
    for it (at most one part target, then goes without the hint)."""
    mediastore_server.faults.inject("delay", method="PUT", path="hb/part_0.m4s", delay=0.2)
    async with LivePublisher(store) as publisher:
        part = await publisher.publish("hb/part_0.m4s", b"p" * 1000, duration=5.0)
        hinted = await publisher.publish("hb/index.m3u8", ll_playlist([], "part_0.m4s"))
        with anyio.fail_after(5):
            assert (await hinted.wait()).acknowledged
        stored = await store.get_bytes("hb/index.m3u8")
        if b"PRELOAD-HINT" in stored:  # then a reader must be able to get the part now
            try:
                await store.describe_object("hb/part_0.m4s")
            except ObjectNotFoundError:
                pytest.fail("the playlist hinted a part no reader could get")
        assert (await part.wait()).acknowledged
        # a part that is slower than a part target: the hint waits for the next version
        mediastore_server.faults.inject("delay", method="PUT", path="hb/part_1.m4s",
                                        delay=1.5)
        slow = await publisher.publish("hb/part_1.m4s", b"p" * 1000, duration=5.0)
        without = await publisher.publish("hb/index.m3u8",
                                          ll_playlist(["part_0.m4s"], "part_1.m4s"))
        with anyio.fail_after(5):
            assert (await without.wait()).acknowledged
        assert not slow.done()
        assert b"PRELOAD-HINT" not in await store.get_bytes("hb/index.m3u8")
        assert (await slow.wait()).acknowledged
