"""`msd push` over a folder ffmpeg writes (temporary files renamed into place), end to end
into `msd serve` with signed writes only."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import aiohttp
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


async def test_push_follows_ffmpeg_temp_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "live").mkdir(parents=True)
    async with origin(tmp_path) as (endpoint, server):
        push, _ = await Proc.start(
            msd("push", str(out), "--endpoint", endpoint, "--settle", "0.5"),
            tmp_path / "push.log",
            "push: ",
            env=aws_env(),
        )
        try:
            reader = PlaylistReader(f"{endpoint}/live/index.m3u8")
            stop = asyncio.Event()
            reading = asyncio.create_task(reader.run(stop))
            rc, err = await run_ffmpeg(
                [
                    *FFMPEG_INPUT, "-t", "7", *FFMPEG_H264,
                    "-f", "hls", "-hls_time", "1", "-hls_list_size", "3",
                    "-hls_flags", "delete_segments+temp_file",
                    str(out / "live" / "index.m3u8"),
                ]
            )
            assert rc == 0, err
            await asyncio.wait_for(reader.ended.wait(), 30)
            stop.set()
            await reading
            log = push.stderr()
            deleted = set(re.findall(r"DELETE live/(\S+)", log))
            assert deleted, log

            async def all_gone() -> bool:
                return all(
                    [await status_of(f"{endpoint}/live/{n}") == 404 for n in deleted]
                )

            assert await wait_until(all_gone, 30), push.stderr()
        finally:
            code = await push.stop()
        assert code == 0, push.stderr()

        assert reader.missing == [], push.stderr()
        assert reader.gone_early == [], push.stderr()
        final = hls_names(reader.final)
        assert len(final) >= 3 and not deleted & set(final)
        for name in final:
            assert await status_of(f"{endpoint}/live/{name}") == 200
        assert await ffprobe_frames(f"{endpoint}/live/index.m3u8") >= 25 * (len(final) - 1)
        # The origin's access log has every request: no temporary file was ever sent, and
        # every write was signed (it refuses anonymous ones with 403).
        access = server.stderr()
        assert re.search(r"PUT /live/index\d+\.ts ", access)
        assert ".tmp" not in access
        assert " 403 " not in access


async def test_push_publishes_a_dash_only_folder_mpd_after_its_segments(tmp_path: Path) -> None:
    from msd_async.live.manifests import parse_manifest

    out = tmp_path / "out"
    out.mkdir()
    async with origin(tmp_path) as (endpoint, server):
        push, _ = await Proc.start(
            msd("push", str(out), "--endpoint", endpoint, "--settle", "3"),
            tmp_path / "push.log",
            "push: ",
            env=aws_env(),
        )
        try:
            rc, err = await run_ffmpeg(
                [
                    *FFMPEG_INPUT, "-t", "5", *FFMPEG_H264,
                    "-f", "dash", "-seg_duration", "1", "-use_template", "1",
                    "-use_timeline", "1", "-window_size", "3",
                    str(out / "manifest.mpd"),
                ]
            )
            assert rc == 0, err
            await asyncio.sleep(1.0)
        finally:
            code = await push.stop()
        assert code == 0, push.stderr()
        puts = re.findall(r"PUT /(\S+) 200", server.stderr())
        assert "manifest.mpd" in puts, push.stderr()
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{endpoint}/manifest.mpd") as response,
        ):
            final = await response.read()
        named = parse_manifest("manifest.mpd", final).references
        assert len(named) >= 3, final
        # The final MPD was stored after every segment it names, and each of them is there
        # (test_push_edges covers the ordering for segments still settling).
        last_mpd = len(puts) - 1 - puts[::-1].index("manifest.mpd")
        for path in named:
            assert path in puts[:last_mpd], (path, puts)
            assert await status_of(f"{endpoint}/{path}") == 200
