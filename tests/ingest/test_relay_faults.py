"""Origin faults during a relay run: the encoder never sees them, the stream ends complete."""

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
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def test_origin_faults_stay_behind_the_relay(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    faults = [
        "--fault-rate", "0.15", "--fault-seed", "11",
        "--fault-kinds", "500,503,throttle,cut-upload,delay", "--fault-delay", "0.2",
    ]
    async with origin(tmp_path, *faults, data_dir=data, name="faulty") as (endpoint, server):
        relay, url = await Proc.start(
            msd("relay", "--endpoint", endpoint, "--listen", "127.0.0.1:0"),
            tmp_path / "relay.log",
            "relay: ",
            env=aws_env(),
        )
        try:
            reader = PlaylistReader(f"{endpoint}/live/index.m3u8")
            stop = asyncio.Event()
            reading = asyncio.create_task(reader.run(stop))
            rc, err = await run_ffmpeg(
                [
                    *FFMPEG_INPUT, "-t", "7", *FFMPEG_H264,
                    "-f", "hls", "-hls_time", "1", "-hls_list_size", "0",
                    "-method", "PUT", "-http_persistent", "1",
                    f"{url}/live/index.m3u8",
                ]
            )
            # The encoder saw no error at all.
            assert rc == 0, err
            assert err.strip() == ""
            await asyncio.wait_for(reader.ended.wait(), 40)
            stop.set()
            await reading
        finally:
            code = await relay.stop()
        assert code == 0, relay.stderr()
        log = relay.stderr()
        access = server.stderr()
        # Faults did hit the relay's uploads...
        assert re.search(r"PUT /live/\S+ (500|503|400|aborted) ", access), access
        # ...and it retried them: every object ended acknowledged.
        outcomes = re.findall(r"PUT live/\S+ [\d,]+ B (\w+)", log)
        assert outcomes and set(outcomes) == {"acknowledged"}, log
        assert reader.missing == [], log

    # The complete stream, read back from the same data without faults.
    async with origin(tmp_path, data_dir=data, name="clean") as (endpoint, _):
        final = hls_names(reader.final)
        assert len(final) == 7
        for name in final:
            assert await status_of(f"{endpoint}/live/{name}") == 200
        assert await ffprobe_frames(f"{endpoint}/live/index.m3u8") == 7 * 25
