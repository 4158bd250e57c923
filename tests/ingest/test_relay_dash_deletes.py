"""ffmpeg's LL-DASH through `msd relay`: its DELETEs never break the MPD stored last
(issue 16 item 14). dashenc ends with a static MPD naming every chunk by a number
template, then DELETEs the oldest chunk, which that MPD still names."""

from __future__ import annotations

import asyncio
import math
import re
from pathlib import Path

import aiohttp
import pytest
from ingest_harness import (
    FFMPEG_H264,
    FFMPEG_INPUT,
    Proc,
    aws_env,
    msd,
    origin,
    run_ffmpeg,
    status_of,
    wait_until,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SECONDS = 9
SEGMENT = 1


def _seconds(iso: str) -> float:
    match = re.fullmatch(r"PT(?:(\d+)H)?(?:(\d+)M)?(?:([\d.]+)S)?", iso)
    assert match, iso
    h, m, s = match.groups()
    return int(h or 0) * 3600 + int(m or 0) * 60 + float(s or 0)


def presentation_seconds(mpd: str) -> float:
    match = re.search(r'mediaPresentationDuration="([^"]+)"', mpd)
    assert match, mpd
    return _seconds(match.group(1))


def named_by(mpd: str) -> list[str]:
    """The objects a single-period MPD with number templates names, read independently of
    the parser under test (ISO/IEC 23009-1 5.3.9.5.3: startNumber, and as many segments
    as the period's duration holds)."""
    total = presentation_seconds(mpd)
    names = []
    for rep_id, template in re.findall(
        r'<Representation id="([^"]+)".*?<SegmentTemplate([^>]*)>', mpd, re.S
    ):
        attrs = dict(re.findall(r'(\w+)="([^"]*)"', template))
        count = math.ceil(total / (int(attrs["duration"]) / int(attrs["timescale"])) - 1e-9)
        names.append(attrs["initialization"].replace("$RepresentationID$", rep_id))
        media = attrs["media"].replace("$RepresentationID$", rep_id)
        width = re.search(r"\$Number%0(\d+)d\$", media)
        assert width, media
        for n in range(int(attrs["startNumber"]), int(attrs["startNumber"]) + count):
            names.append(media.replace(width.group(0), f"{n:0{width.group(1)}d}"))
    return names


async def test_ffmpeg_deletes_never_remove_what_the_final_mpd_names(tmp_path: Path) -> None:
    async with origin(tmp_path) as (endpoint, _):
        relay, url = await Proc.start(
            msd("relay", "--endpoint", endpoint, "--listen", "127.0.0.1:0"),
            tmp_path / "relay.log", "relay: ", env=aws_env(),
        )
        try:
            rc, err = await run_ffmpeg([
                *FFMPEG_INPUT, "-t", str(SECONDS), *FFMPEG_H264,
                "-f", "dash", "-seg_duration", str(SEGMENT), "-streaming", "1", "-ldash", "1",
                "-use_template", "1", "-use_timeline", "0", "-window_size", "3",
                "-method", "PUT", "-http_persistent", "1",
                f"{url}/dash/manifest.mpd",
            ])
            assert rc == 0, err
            status, mpd = 0, ""
            for _ in range(50):  # the final MPD may still be on its way to the origin
                async with aiohttp.ClientSession() as http, http.get(
                    f"{endpoint}/dash/manifest.mpd"
                ) as response:
                    status, mpd = response.status, await response.text()
                if 'type="static"' in mpd:
                    break
                await asyncio.sleep(0.2)
            assert status == 200 and 'type="static"' in mpd, mpd
            names = named_by(mpd)
            requested = set(re.findall(r"DELETE dash/(\S+) delete scheduled", relay.stderr()))
            # The case under test: ffmpeg asked to delete a chunk the final MPD names.
            assert requested & set(names), (requested, names, relay.stderr())
            # A delete is carried out at the latest the object's duration plus the MPD's
            # after it was asked for (the window rules): wait that long and a margin.
            bound = SEGMENT + presentation_seconds(mpd) + 3

            async def a_delete_happened() -> bool:
                return re.search(r"DELETE dash/\S+ deleted", relay.stderr()) is not None

            await wait_until(a_delete_happened, bound)
            # Every object the stored MPD names is at the origin, read by a plain client.
            statuses = {name: await status_of(f"{endpoint}/dash/{name}") for name in names}
        finally:
            code = await relay.stop()
    log = relay.stderr()
    assert code == 0, log
    assert all(s == 200 for s in statuses.values()), (statuses, log)
    assert not re.search(r"DELETE dash/\S+ deleted", log), log
