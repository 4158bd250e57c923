"""Real media: ffmpeg packages an fMP4 HLS ladder, examples/packager.py publishes it through
the LivePublisher, ffprobe decodes it back from the origin."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from msd_async.testing import LocalMediaStore

pytestmark = pytest.mark.anyio

FFMPEG = shutil.which("ffmpeg")
FFPROBE = shutil.which("ffprobe")
if FFMPEG is None or FFPROBE is None:  # pragma: no cover - scripts/test.sh installs them
    raise RuntimeError("ffmpeg and ffprobe are required: apt-get install ffmpeg")
EXAMPLE = Path(__file__).parents[2] / "examples" / "packager.py"


@pytest.fixture
async def origin() -> AsyncIterator[LocalMediaStore]:
    # Anonymous reads only: ffprobe cannot sign, every write must come signed.
    async with LocalMediaStore(allow_anonymous=["read"]) as server:
        yield server


def env_for(server: LocalMediaStore) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID=server.credentials.access_key_id,
        AWS_SECRET_ACCESS_KEY=server.credentials.secret_access_key,
        AWS_REGION=server.region,
    )
    return env


async def ffprobe(*args: str) -> str:
    assert FFPROBE is not None
    result = await anyio.run_process([FFPROBE, "-v", "error", *args], check=False)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


async def test_ffmpeg_ladder_published_by_the_example_decodes_from_the_origin(
    origin: LocalMediaStore, tmp_path: Path
) -> None:
    assert FFMPEG is not None
    out = tmp_path / "hls"
    out.mkdir()
    await anyio.run_process(
        [
            FFMPEG, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
            "testsrc=duration=3:size=320x240:rate=25", "-filter_complex",
            "[0:v]split=2[a][b];[b]scale=160:120[c]", "-map", "[a]", "-map", "[c]",
            "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-b:v:0", "400k",
            "-b:v:1", "150k", "-f", "hls", "-hls_time", "1", "-hls_playlist_type", "vod",
            "-hls_segment_type", "fmp4", "-hls_segment_filename", f"{out}/v%v/seg_%03d.m4s",
            "-master_pl_name", "master.m3u8", "-var_stream_map", "v:0 v:1",
            f"{out}/v%v/index.m3u8",
        ],
        check=True,
    )
    result = await anyio.run_process(
        [sys.executable, str(EXAMPLE), str(out), "--endpoint", origin.endpoint,
         "--prefix", "ladder"],
        env=env_for(origin),
        check=False,
        stderr=subprocess.STDOUT,
    )
    output = result.stdout.decode()
    assert result.returncode == 0, output
    assert "media: 6/6 stored" in output and "multivariant-playlist: 1/1 stored" in output

    master = f"{origin.endpoint}/ladder/master.m3u8"
    streams = await ffprobe("-show_entries", "stream=codec_name,width", "-of", "csv=p=0",
                            master)
    assert sorted(set(streams.split())) == ["h264,160", "h264,320"]
    frames = await ffprobe(
        "-count_frames", "-select_streams", "v:0", "-show_entries",
        "stream=nb_read_frames", "-of", "csv=p=0", f"{origin.endpoint}/ladder/v1/index.m3u8",
    )
    assert set(frames.split()) == {"75"}  # 3 s at 25 fps, every frame decoded
    # Headers by kind reached the origin.
    from msd_async import Session

    async with Session(credentials=origin.credentials, region=origin.region) as session:
        store = session.container(origin.endpoint)
        init = await store.describe_object("ladder/v0/init_0.mp4")
        seg = await store.describe_object("ladder/v0/seg_000.m4s")
        playlist = await store.describe_object("ladder/v0/index.m3u8")
    assert init.content_type == "video/mp4" and seg.content_type == "video/iso.segment"
    assert seg.cache_control == "max-age=1209600, immutable"
    assert playlist.content_type == "application/vnd.apple.mpegurl"


async def test_the_example_runs_ffmpeg_live_and_publishes_as_it_writes(
    origin: LocalMediaStore,
) -> None:
    result = await anyio.run_process(
        [sys.executable, str(EXAMPLE), "--ffmpeg", "--duration", "3", "--endpoint",
         origin.endpoint, "--prefix", "onair"],
        env=env_for(origin),
        check=False,
        stderr=subprocess.STDOUT,
    )
    assert result.returncode == 0, result.stdout.decode()
    master = f"{origin.endpoint}/onair/master.m3u8"
    streams = await ffprobe("-show_entries", "stream=codec_name,width", "-of", "csv=p=0",
                            master)
    assert sorted(set(streams.split())) == ["h264,160", "h264,320"]
    playlist = (await ffprobe("-show_entries", "format=duration", "-of", "csv=p=0",
                              f"{origin.endpoint}/onair/v0/index.m3u8")).strip()
    assert float(playlist) == pytest.approx(3.0, abs=0.2)
