"""Low-latency DASH through the relay: a segment's first bytes are readable at the origin
long before the encoder has finished sending it."""

from __future__ import annotations

import asyncio
import time

import pytest
from ingest_harness import FFMPEG_H264, FFMPEG_INPUT, run_ffmpeg

from msd_async import ObjectNotFoundError, Session
from msd_async.ingest import ObjectRecord, Relay
from msd_async.live import LivePublisher
from msd_async.testing import LocalMediaStore

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SEGMENT = "dash/chunk-stream0-00002.m4s"


async def first_bytes_at(store: object, path: str, stop: asyncio.Event) -> float | None:
    """Monotonic time a reader first got bytes of ``path`` (while it may still upload)."""
    while not stop.is_set():
        try:
            async with store.get_object(path) as obj:  # type: ignore[attr-defined]
                async for chunk in obj:
                    if chunk:
                        return time.monotonic()
        except ObjectNotFoundError:
            await asyncio.sleep(0.01)
    return None


async def test_ldash_first_bytes_reach_the_origin_before_the_segment_ends(
    mediastore_server: LocalMediaStore,
) -> None:
    records: list[ObjectRecord] = []
    async with Session(
        credentials=mediastore_server.credentials, region=mediastore_server.region
    ) as session:
        store = session.container(mediastore_server.endpoint)
        async with (
            LivePublisher(store, close_timeout=10) as publisher,
            Relay(publisher, on_object=records.append) as relay,
        ):
            stop = asyncio.Event()
            reader = asyncio.create_task(first_bytes_at(store, SEGMENT, stop))
            rc, err = await run_ffmpeg(
                [
                    *FFMPEG_INPUT, "-t", "7", *FFMPEG_H264,
                    "-f", "dash", "-seg_duration", "2", "-streaming", "1", "-ldash", "1",
                    "-use_template", "1", "-use_timeline", "0", "-window_size", "3",
                    "-method", "PUT", "-http_persistent", "1",
                    f"{relay.url}/dash/manifest.mpd",
                ]
            )
            assert rc == 0, err
            stop.set()
            first = await reader
        assert await store.get_bytes(SEGMENT)
        mpd = await store.get_bytes("dash/manifest.mpd")
        assert b'type="static"' in mpd
    assert first is not None
    segment = [r for r in records if r.path == SEGMENT]
    assert segment and segment[0].outcome == "acknowledged", records
    finished = segment[0].received
    assert finished is not None
    # The encoder streams a 2 s segment frame by frame; a reader had its first bytes while
    # most of it was still to come.
    print(f"first bytes {finished - first:.3f} s before the encoder finished")
    assert finished - first >= 0.5, (finished - first, segment[0])
