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
            # ffmpeg asked for these deletes; each reaches the origin after the window
            # delay (the reader found every one still there when it left the playlist).
            deleted = set(re.findall(r"DELETE live/(\S+)", relay.stderr()))

            async def all_gone() -> bool:
                return all([await status_of(f"{endpoint}/live/{n}") == 404 for n in deleted])

            assert await wait_until(all_gone, 30), relay.stderr()
        finally:
            code = await relay.stop()
        log = relay.stderr()
        assert code == 0, log

        assert reader.versions >= 3
        assert reader.missing == [], log
        assert reader.gone_early == [], log
        final = hls_names(reader.final)
        assert len(final) >= 3
        assert deleted and not deleted & set(final)
        assert re.search(r"DELETE live/\S+ deleted", log)
        # Every object at the origin was written by the relay: the origin accepts only
        # signed writes, and it logged no unsigned PUT.
        access = server.stderr()
        assert " 403 " not in access

        for name in final:
            assert await status_of(f"{endpoint}/live/{name}") == 200
        frames = await ffprobe_frames(f"{endpoint}/live/index.m3u8")
        assert frames >= 25 * (len([n for n in final if not n.endswith(".mp4")]) - 1)
