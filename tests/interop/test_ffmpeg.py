"""ffmpeg, a real packager, pushes HLS and DASH to the local server; our client and ffprobe
read back what it stored.

ffmpeg cannot sign requests, so it reaches the server through anonymous writes — as it
reached a real container through a public-write policy (docs/contract.md,
"Live publishing").
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess

import anyio
import pytest

from msd_async import ContainerClient, Session
from msd_async.testing import LocalMediaStore

pytestmark = pytest.mark.anyio

FFMPEG = shutil.which("ffmpeg")
FFPROBE = shutil.which("ffprobe")
if FFMPEG is None or FFPROBE is None:  # scripts/test.sh installs them; never skip silently
    raise RuntimeError(
        "ffmpeg and ffprobe are required for the interop tests: apt-get install ffmpeg"
    )

SOURCE = [
    "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25",
    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
    "-t", "3",
    "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p",
    "-c:a", "aac",
]  # fmt: skip


async def run_ffmpeg(*args: str) -> subprocess.CompletedProcess[bytes]:
    assert FFMPEG is not None
    with anyio.fail_after(60):
        return await anyio.run_process(
            [FFMPEG, "-hide_banner", "-loglevel", "error", *args], check=False
        )


async def probe(url: str) -> dict[str, object]:
    assert FFPROBE is not None
    with anyio.fail_after(30):
        result = await anyio.run_process(
            [FFPROBE, "-v", "error", "-show_streams", "-show_format", "-of", "json", url]
        )
    data: dict[str, object] = json.loads(result.stdout)
    return data


@pytest.fixture
async def open_server() -> LocalMediaStore:
    async with LocalMediaStore(allow_anonymous=("read", "write")) as server:
        yield server  # type: ignore[misc]


async def client_for(server: LocalMediaStore, session: Session) -> ContainerClient:
    return session.container(server.endpoint)


async def test_ffmpeg_pushes_hls_that_our_client_and_ffprobe_read(
    open_server: LocalMediaStore,
) -> None:
    result = await run_ffmpeg(
        *SOURCE,
        "-f", "hls", "-hls_time", "1", "-hls_list_size", "0",
        "-method", "PUT", "-http_persistent", "1",
        f"{open_server.endpoint}/live/720p/index.m3u8",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()

    async with Session(credentials=open_server.credentials, region=open_server.region) as s:
        store = s.container(open_server.endpoint)
        playlist = (await store.get_bytes("live/720p/index.m3u8")).decode()
        assert playlist.startswith("#EXTM3U") and "#EXT-X-ENDLIST" in playlist
        segments = [line for line in playlist.splitlines() if line.endswith(".ts")]
        assert len(segments) >= 3
        listed = {item.name async for item in store.list_items("live/720p")}
        # Every segment the playlist names was stored (ffmpeg uploads it first).
        assert set(segments) <= listed
        first = await store.get_bytes(f"live/720p/{segments[0]}")
        assert first[0] == 0x47  # an MPEG-TS sync byte starts every packet
        assert len(first) % 188 == 0

    # ffprobe, another real peer, reads the playlist and its segments over HTTP.
    info = await probe(f"{open_server.endpoint}/live/720p/index.m3u8")
    codecs = {stream["codec_name"] for stream in info["streams"]}  # type: ignore[attr-defined]
    assert {"h264", "aac"} <= codecs
    duration = float(info["format"]["duration"])  # type: ignore[index]
    assert 2.5 <= duration <= 3.5


async def test_ffmpeg_pushes_dash_with_fragmented_mp4(open_server: LocalMediaStore) -> None:
    result = await run_ffmpeg(
        *SOURCE,
        "-f", "dash", "-seg_duration", "1", "-streaming", "1",
        "-method", "PUT", "-http_persistent", "1",
        f"{open_server.endpoint}/dash/manifest.mpd",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    async with Session(credentials=open_server.credentials, region=open_server.region) as s:
        store = s.container(open_server.endpoint)
        manifest = (await store.get_bytes("dash/manifest.mpd")).decode()
        assert "<MPD" in manifest
        names = {item.name async for item in store.list_items("dash")}
        init = sorted(n for n in names if n.startswith("init-stream"))
        chunks = sorted(n for n in names if n.startswith("chunk-stream"))
        assert len(init) == 2 and len(chunks) >= 4
        head = await store.get_bytes(f"dash/{init[0]}", range=(4, 7))
        assert head == b"ftyp"  # an ISO-BMFF init segment
    info = await probe(f"{open_server.endpoint}/dash/manifest.mpd")
    assert {s["codec_name"] for s in info["streams"]} >= {"h264", "aac"}  # type: ignore[attr-defined]


async def test_unsigned_ffmpeg_push_is_refused_without_anonymous_write(
    server_requests: list[logging.LogRecord],
) -> None:
    async with LocalMediaStore(allow_anonymous=("read",)) as server:
        await run_ffmpeg(
            *SOURCE,
            "-f", "hls", "-hls_time", "1",
            "-method", "PUT",
            f"{server.endpoint}/live/index.m3u8",
        )  # fmt: skip
        # ffmpeg's HLS muxer exits 0 even when its PUTs fail; the server's log tells.
        puts = [r.getMessage() for r in server_requests if "PUT /live/" in r.getMessage()]
        assert puts and all(" 403 " in line for line in puts), puts
        async with Session(credentials=server.credentials, region=server.region) as s:
            assert [i async for i in s.container(server.endpoint).list_items()] == []
