"""Origin faults during a relay run: the encoder never sees them, the stream ends complete."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

import pytest
from ingest_harness import (
    ACCESS_KEY,
    FFMPEG_H264,
    FFMPEG_INPUT,
    SECRET_KEY,
    PlaylistReader,
    Proc,
    aws_env,
    ffprobe_frames,
    hls_names,
    msd,
    run_ffmpeg,
    status_of,
)

from msd_async import Credentials
from msd_async.testing import FaultPlan, LocalMediaStore

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def test_origin_faults_stay_behind_the_relay(
    tmp_path: Path, server_requests: list[logging.LogRecord]
) -> None:
    # A random share of every request faults, and some uploads fault for certain (the
    # random draws also land on the reader's GETs, so they alone prove nothing).
    plan = FaultPlan(rate=0.1, seed=11, kinds={"500", "503", "throttle", "cut-upload", "delay"},
                     delay=0.2)
    plan.inject("503", times=2, method="PUT", path="live/index1.ts")
    plan.inject("cut-upload", times=1, method="PUT", path="live/index3.ts")
    plan.inject("500", times=3, method="PUT", path="live/index.m3u8")
    plan.inject("throttle", times=1, method="PUT", path="live/index5.ts")
    async with LocalMediaStore(
        credentials=Credentials(ACCESS_KEY, SECRET_KEY), allow_anonymous=["read"], faults=plan
    ) as server:
        endpoint = server.endpoint
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
        log = relay.stderr()
        assert code == 0, log
        faulted_puts = {(kind, path) for kind, method, path in plan.history if method == "PUT"}
        assert {("503", "live/index1.ts"), ("cut-upload", "live/index3.ts"),
                ("500", "live/index.m3u8"), ("throttle", "live/index5.ts")} <= faulted_puts
        # The relay retried them: every object ended acknowledged.
        outcomes = re.findall(r"PUT live/\S+ [\d,]+ B (\w+)", log)
        assert outcomes and set(outcomes) == {"acknowledged"}, log
        assert reader.missing == [], log
        unsigned = [r for r in server_requests if " 403 " in r.getMessage()]
        assert unsigned == []

        # The complete stream, read back without faults.
        plan.rate = 0.0
        plan.clear()
        final = hls_names(reader.final)
        assert final == [f"index{i}.ts" for i in range(7)]
        for name in final:
            assert await status_of(f"{endpoint}/live/{name}") == 200
        assert await ffprobe_frames(f"{endpoint}/live/index.m3u8") == 7 * 25
