"""``msd demo --watch`` played for 30 s by headless Chromium with hls.js, driven over the
Chrome DevTools Protocol: what a viewer sees, checked by the browser that shows it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from cdp import Chromium, Page

pytestmark = pytest.mark.anyio

PLAY_SECONDS = 30.0
#: Read on the page at once, so the readout and window.hls are compared at one instant.
SAMPLE = """(() => {
  const v = document.querySelector('video');
  const p = window.msdPlayer;
  if (!v || !p) return null;  // the page is not there yet
  const q = v.getVideoPlaybackQuality();
  const hls = window.hls;
  const now = Date.now() / 1000;
  return {
    wall: now, currentTime: v.currentTime, paused: v.paused,
    decoded: q.totalVideoFrames - q.droppedVideoFrames,
    videos: document.querySelectorAll('video').length,
    playing: p.firstPlaying !== null, stalls: p.stalls, waiting: p.waitingSince !== null,
    fromHls: hls && hls.playingDate ? now - hls.playingDate.getTime() / 1000 : null,
    readout: document.getElementById('latency').textContent,
    errors: p.errors.filter((e) => e.endsWith('(fatal)')),
    log: { stalls: p.stallLog, errors: p.errors.slice(-6).map((e) => e.slice(0, 200)) },
  };
})()"""


@pytest.fixture
def demo(hlsjs: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``msd demo --watch`` without faults, with the LL-HLS shapes --watch picks (1 s
    segments, 0.2 s parts, blocking playlist reload); yields the process and the page URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "msd_async.cli", "demo", "--watch", "--hlsjs", str(hlsjs),
         "--duration", str(int(PLAY_SECONDS + 40)), "--renditions", "2", "--fault-rate", "0",
         "--no-live-view"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        assert process.stdout is not None
        url = None
        for line in process.stdout:
            if line.startswith("watch: "):
                url = line.removeprefix("watch: ").strip()
                break
        assert url is not None, f"msd demo printed no watch line: {process.communicate()}"
        assert url.startswith("http://127.0.0.1:") and url.endswith("/")
        yield process, url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
        try:
            process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()


async def test_the_live_stream_plays_in_chromium(
    demo: tuple[subprocess.Popen[str], str],
) -> None:
    _, url = demo
    async with Chromium() as browser:
        page = await browser.page()
        await page.navigate(url)
        first: dict[str, Any] | None = None
        with anyio.fail_after(30):
            while first is None:
                await anyio.sleep(0.25)
                sample = await page.evaluate(SAMPLE)
                if sample is None:
                    continue
                assert not sample["errors"], sample
                # Playing, and the page's readout (refreshed every 250 ms) already shows it:
                # a sample taken between the two would compare "-" with a latency.
                if (
                    sample["playing"]
                    and sample["fromHls"] is not None
                    and sample["readout"] != "-"
                ):
                    # hls.playingDate jumps most often right after the start, when the
                    # player settles on the live edge: the first sample gets the same
                    # one-refresh allowance as the rest.
                    first = await settled(page, sample)
        samples = [first]
        started = time.monotonic()
        while time.monotonic() - started < PLAY_SECONDS:
            await anyio.sleep(1.0)
            samples.append(await settled(page, await page.evaluate(SAMPLE)))
    last = samples[-1]
    assert last["videos"] == 1
    assert not last["errors"], last["errors"]
    # Playback advances with the wall clock (a player that stalls or falls back does not).
    advanced = last["currentTime"] - first["currentTime"]
    elapsed = last["wall"] - first["wall"]
    assert 0.85 * elapsed <= advanced <= 1.15 * elapsed, (advanced, elapsed)
    # The video decodes frames: 30 fps of them, with a wide margin for a busy machine.
    assert last["decoded"] - first["decoded"] >= 10 * elapsed, samples
    # No stall after start, without faults (a wait over 100 ms not caused by a seek).
    assert last["stalls"] == 0 and not last["waiting"], last["log"]
    for sample in samples:
        # The page's readout agrees with window.hls, and is a plausible latency.
        assert agrees(sample), sample
        assert 0 < sample["fromHls"] < 10, sample


async def settled(page: Page, sample: dict[str, Any]) -> dict[str, Any]:
    """``sample``, or one taken a refresh later if its readout disagrees with window.hls:
    the readout is refreshed every 250 ms, so it may lag a jump of hls.playingDate by that
    much, and must agree again after one refresh."""
    if agrees(sample):
        return sample
    await anyio.sleep(0.3)
    resampled: dict[str, Any] = await page.evaluate(SAMPLE)
    return resampled


def agrees(sample: dict[str, Any]) -> bool:
    """The page's latency readout is within 0.5 s of wall clock - hls.playingDate."""
    return (
        sample["readout"] != "-"
        and sample["fromHls"] is not None
        and abs(float(sample["readout"]) - sample["fromHls"]) <= 0.5
    )
