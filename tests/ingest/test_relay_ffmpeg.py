"""ffmpeg through `msd relay` into `msd serve` (signed writes only), end to end."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from ingest_harness import (
    FFMPEG_H264,
    FFMPEG_INPUT,
    PlaylistReader,
    Proc,
    aws_env,
    ffprobe_frames,
    hls_names,
    msd,
    origin,
    run_ffmpeg,
    status_of,
    wait_until,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SECONDS = 7


async def start_relay(endpoint: str, tmp_path: Path, *extra: str) -> tuple[Proc, str]:
    return await Proc.start(
        msd("relay", "--endpoint", endpoint, "--listen", "127.0.0.1:0", *extra),
        tmp_path / "relay.log",
        "relay: ",
        env=aws_env(),
    )


def hls_args(url: str, segment_type: str) -> list[str]:
    return [
        *FFMPEG_INPUT, "-t", str(SECONDS), *FFMPEG_H264,
        "-f", "hls", "-hls_time", "1", "-hls_list_size", "3",
        "-hls_flags", "delete_segments", "-hls_segment_type", segment_type,
        "-method", "PUT", "-http_persistent", "1",
        url,
    ]


@pytest.mark.parametrize("segment_type", ["mpegts", "fmp4"])
async def test_hls_through_relay(tmp_path: Path, segment_type: str) -> None:
    async with origin(tmp_path) as (endpoint, server):
        relay, url = await start_relay(endpoint, tmp_path)
        try:
            reader = PlaylistReader(f"{endpoint}/live/index.m3u8")
            stop = asyncio.Event()
            reading = asyncio.create_task(reader.run(stop))
            rc, err = await run_ffmpeg(hls_args(f"{url}/live/index.m3u8", segment_type))
            # The encoder never saw an error: every answer was a 2xx.
            assert rc == 0, err
            assert err.strip() == ""
            await asyncio.wait_for(reader.ended.wait(), 30)
            stop.set()
            await reading
        finally:
            code = await relay.stop()
        log = relay.stderr()
        assert code == 0, log

        assert reader.versions >= 3
        assert reader.missing == [], log
        assert reader.gone_early == [], log
        final = hls_names(reader.final)
        assert len(final) >= 3
        # ffmpeg asked for these deletes; none is in the final playlist, and each reached
        # the origin after the window delay (or, at shutdown, is left in place).
        deleted = set(re.findall(r"DELETE live/(\S+)", log))
        assert deleted and not deleted & set(final)
        # Every object at the origin was written by the relay: the origin accepts only
        # signed writes, and it logged no unsigned PUT.
        access = server.stderr()
        assert " 403 " not in access

        for name in final:
            assert await status_of(f"{endpoint}/live/{name}") == 200
        frames = await ffprobe_frames(f"{endpoint}/live/index.m3u8")
        assert frames >= 25 * (len([n for n in final if not n.endswith(".mp4")]) - 1)


async def test_hls_window_deletes_happen_later(tmp_path: Path) -> None:
    """A segment ffmpeg deleted disappears from the origin only after it left the playlist
    (the reader found it fetchable then), and the final playlist's segments stay."""
    async with origin(tmp_path) as (endpoint, _server):
        relay, url = await start_relay(endpoint, tmp_path)
        try:
            reader = PlaylistReader(f"{endpoint}/live/index.m3u8")
            stop = asyncio.Event()
            reading = asyncio.create_task(reader.run(stop))
            rc, err = await run_ffmpeg(hls_args(f"{url}/live/index.m3u8", "mpegts"))
            assert rc == 0, err
            await asyncio.wait_for(reader.ended.wait(), 30)
            stop.set()
            await reading
            deleted = set(re.findall(r"DELETE live/(\S+)", relay.stderr()))
            assert deleted

            async def all_gone() -> bool:
                statuses = [await status_of(f"{endpoint}/live/{n}") for n in deleted]
                return all(s == 404 for s in statuses)

            assert await wait_until(all_gone, 30), relay.stderr()
        finally:
            code = await relay.stop()
        assert code == 0
        assert reader.gone_early == []
        for name in hls_names(reader.final):
            assert await status_of(f"{endpoint}/live/{name}") == 200
