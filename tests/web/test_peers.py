"""Real peers through the helpers: curl range requests, ffprobe seeking in an MP4 whose
index (moov) is at the end, so a player must jump to the end and back with Range."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

import anyio
import pytest
from webapps import App

pytestmark = pytest.mark.anyio

CURL = shutil.which("curl") or "curl"
FFMPEG = shutil.which("ffmpeg") or "ffmpeg"
FFPROBE = shutil.which("ffprobe") or "ffprobe"
DATA = os.urandom(1_500_000)


@pytest.fixture(scope="module")
def moov_last_mp4(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A 5-second MP4 written without +faststart: ftyp, mdat, then moov."""
    out = tmp_path_factory.mktemp("mp4") / "moov_last.mp4"
    subprocess.run(
        [FFMPEG, "-v", "error", "-f", "lavfi", "-i", "testsrc=duration=5:size=320x240:rate=25",
         "-c:v", "mpeg4", "-q:v", "5", "-f", "mp4", str(out)],
        check=True, timeout=120,
    )
    data = out.read_bytes()
    assert data.index(b"moov") > data.index(b"mdat"), "the index must be at the end"
    return data


async def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return await anyio.run_process([CURL, "-s", "-S", *args], check=False)


@pytest.mark.parametrize(
    ("spec", "first", "last"),
    [("0-0", 0, 0), ("1000-1999", 1000, 1999), ("-4096", len(DATA) - 4096, len(DATA) - 1),
     ("1499000-", 1_499_000, len(DATA) - 1)],
)
async def test_curl_ranges_are_byte_exact(
    app: App, tmp_path: Path, spec: str, first: int, last: int
) -> None:
    await app.store.put_object("vod/data.bin", DATA)
    out = tmp_path / "part"
    done = await curl("-r", spec, "-o", str(out), "-w", "%{http_code}",
                      app.object_url("vod/data.bin"))
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"206"
    assert out.read_bytes() == DATA[first : last + 1]


async def test_curl_resumes_a_download(app: App, tmp_path: Path) -> None:
    """curl -C - continues a partial file with a Range request and gets the exact rest."""
    await app.store.put_object("vod/data.bin", DATA)
    out = tmp_path / "data.bin"
    out.write_bytes(DATA[:600_000])
    done = await curl("-C", "-", "-o", str(out), app.object_url("vod/data.bin"))
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == DATA


async def test_curl_head_and_conditional_get(app: App) -> None:
    await app.store.put_object("vod/data.bin", DATA)
    head = await curl("-I", app.object_url("vod/data.bin"))
    lines = dict(
        line.split(": ", 1) for line in head.stdout.decode().lower().splitlines() if ": " in line
    )
    assert lines["content-length"] == str(len(DATA))
    etag = lines["etag"]
    done = await curl("-o", "/dev/null", "-w", "%{http_code}", "-H", f"If-None-Match: {etag}",
                      app.object_url("vod/data.bin"))
    assert done.stdout == b"304"


async def test_ffprobe_seeks_in_a_moov_last_mp4(
    app: App, moov_last_mp4: bytes, server_requests: list[logging.LogRecord]
) -> None:
    await app.store.put_object("vod/movie.mp4", moov_last_mp4, content_type="video/mp4")
    done = await anyio.run_process(
        [FFPROBE, "-v", "error", "-read_intervals", "2%+1", "-select_streams", "v:0",
         "-show_entries", "frame=pts_time", "-of", "csv=p=0", app.object_url("vod/movie.mp4")],
        check=False,
    )
    assert done.returncode == 0, done.stderr
    times = [float(line) for line in done.stdout.decode().split() if line]
    assert times, "no frames decoded"
    # About one second of frames from the seek point (the key frame at or before 2 s): the
    # decoder started there, not at 0.
    assert 1.0 <= min(times) <= 2.0
    assert 0.8 <= max(times) - min(times) <= 1.2
    # The seek reached the origin as ranged GETs (206), not as one whole download.
    statuses = [record.getMessage().split()[2] for record in server_requests
                if record.getMessage().startswith("GET /vod/movie.mp4")]
    assert "206" in statuses


async def test_ffprobe_reads_the_duration_through_the_proxy(
    app: App, moov_last_mp4: bytes
) -> None:
    await app.store.put_object("vod/movie.mp4", moov_last_mp4, content_type="video/mp4")
    done = await anyio.run_process(
        [FFPROBE, "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
         app.object_url("vod/movie.mp4")],
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert abs(float(done.stdout) - 5.0) < 0.1
