"""The encoded stream without a browser: what ffprobe and the playlists say, the page, and
``--watch`` without PyAV."""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import aiohttp
import anyio
import pytest

from msd_async import Session
from msd_async.live import LivePublisher
from msd_async.live.synthetic import chunk_timestamps
from msd_async.live.video import VideoStream
from msd_async.live.watch import HLSJS_CDN_URL, HLSJS_SRI, HLSJS_VERSION, PlayerPage
from msd_async.testing import LocalMediaStore

pytestmark = pytest.mark.anyio


async def test_video_stream_is_real_h264_with_a_date_on_every_segment(tmp_path: Path) -> None:
    stream = VideoStream(renditions=2, duration=2, segment_duration=1, part_duration=0.2)
    async with (
        LocalMediaStore() as server,
        Session(credentials=server.credentials, region=server.region) as session,
    ):
        store = session.container(server.endpoint)
        async with LivePublisher(store, prefix="v") as publisher:
            reports = await stream.run(publisher)
        master = (await store.get_bytes("v/master.m3u8")).decode()
        playlist = (await store.get_bytes("v/r1/index.m3u8")).decode()
        init = await store.get_bytes("v/r1/init.mp4")
        segment = await store.get_bytes("v/r1/seg_1.m4s")
    assert all(len(r.segments) == 2 and len(r.parts) == 10 for r in reports.values())
    # the codec the encoder made, read from its avcC, and each rendition's size
    assert re.search(r'CODECS="avc1\.[0-9a-f]{6}",RESOLUTION=640x360', master)
    assert "RESOLUTION=480x270" in master
    dates = re.findall(r"#EXT-X-PROGRAM-DATE-TIME:(\S+)", playlist)
    assert len(dates) == 2 and playlist.count("#EXTINF:1.000,") == 2
    # one segment later is one second later, to the millisecond
    first, second = (datetime.datetime.fromisoformat(d) for d in dates)
    assert second - first == datetime.timedelta(seconds=1)
    # every chunk carries its production time for the demo's reader, in a box players skip
    assert chunk_timestamps(bytearray(segment)), "no stamp"
    (tmp_path / "r1.mp4").write_bytes(init + segment)
    with anyio.fail_after(60):
        probe = await anyio.run_process(
            ["ffprobe", "-v", "error", "-count_frames", "-show_entries",
             "stream=codec_name,width,height,nb_read_frames", "-of", "json",
             str(tmp_path / "r1.mp4")],
        )
    video = json.loads(probe.stdout)["streams"][0]
    assert video["codec_name"] == "h264"
    assert (video["width"], video["height"]) == (480, 270)
    assert int(video["nb_read_frames"]) == 30  # one second at 30 fps, every frame decodes


async def test_page_pins_the_cdn_copy_or_serves_the_local_file(tmp_path: Path) -> None:
    cdn = PlayerPage()
    cdn.source = "http://127.0.0.1:1/demo/master.m3u8</script>"
    html = cdn.render()
    assert f'src="{HLSJS_CDN_URL}" integrity="{HLSJS_SRI}" crossorigin="anonymous"' in html
    assert f"hls.js@{HLSJS_VERSION}/" in HLSJS_CDN_URL
    assert "master.m3u8<\\/script>" in html  # cannot end the config's script element
    assert html.count("<video") == 1
    local = tmp_path / "hls.min.js"
    local.write_text("window.Hls = undefined;")
    async with PlayerPage(hlsjs=local) as page, aiohttp.ClientSession() as http:
        async with http.get(page.url) as resp:
            body = await resp.text()
        async with http.get(page.origin + "/hls.min.js") as script:
            served = await script.text()
    assert '<script src="/hls.min.js"></script>' in body and "integrity" not in body
    assert served == "window.Hls = undefined;"


def run_demo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "msd_async.cli", "demo", *args],
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )


def test_watch_without_pyav_names_the_extra(tmp_path: Path) -> None:
    # An 'av' package that fails to import, first on the path: PyAV as if not installed.
    (tmp_path / "av").mkdir()
    (tmp_path / "av" / "__init__.py").write_text("raise ImportError('no PyAV here')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = run_demo("--watch", env=env)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "msd demo: --watch plays real video, which needs PyAV: pip install 'msd-async[video]'"
    )
    # the synthetic stream stays
    plain = run_demo("--duration", "2", "--renditions", "1", "--fault-rate", "0", env=env)
    assert plain.returncode == 0, plain.stderr
    assert "synthetic chunks" in plain.stdout


def test_hlsjs_needs_watch_and_a_file(tmp_path: Path) -> None:
    alone = run_demo("--hlsjs", str(tmp_path / "hls.min.js"))
    assert alone.returncode == 2 and "--hlsjs goes with --watch" in alone.stderr
    missing = run_demo("--watch", "--hlsjs", str(tmp_path / "nope.js"), "--duration", "1")
    assert missing.returncode == 2
    assert missing.stderr.count("\n") == 1 and "is not a file" in missing.stderr
