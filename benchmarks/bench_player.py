"""Player benchmark: what a viewer of ``msd demo --watch`` sees, measured in headless Chromium.

Each phase starts ``msd demo --watch`` (3 renditions of real H.264, 30 fps, the embedded
server) and a fresh headless Chromium that opens the player page (hls.js from
tests/player/js, ``npm ci`` there first), driven over the Chrome DevTools Protocol. Phases,
in one run on one machine:

- ``ll``: LL-HLS, 1 s segments, 0.2 s parts, blocking playlist reload on (the extension);
- ``ll-faults``: the same with 3% injected faults (500, 503, throttling, cut uploads);
- ``ll-polling``: the same as ``ll`` with blocking playlist reload off (what MediaStore
  itself offered: hls.js polls the playlist);
- ``hls-6s``: standard HLS, 6 s segments, no parts (the baseline).

Measured per phase: start-up (navigation start to the first frame presented,
``requestVideoFrameCallback``), latency to live (wall clock minus ``hls.playingDate``,
sampled every 250 ms) p50/p95, stalls (a ``waiting`` after the first ``playing``, not caused
by a seek, over 100 ms) and their total time, frames decoded and dropped, hls.js errors.

    python benchmarks/bench_player.py                 # 4 phases x 60 s; writes results/player.*
    python benchmarks/bench_player.py --seconds 20 --no-write
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
HLSJS = ROOT / "tests" / "player" / "js" / "node_modules" / "hls.js" / "dist" / "hls.min.js"
sys.path.insert(0, str(ROOT / "tests" / "player"))

from cdp import Chromium  # noqa: E402

PHASES: dict[str, dict[str, Any]] = {
    "ll": {
        "label": "LL-HLS 1 s / 0.2 s parts, blocking reload",
        "args": ["--segment-duration", "1", "--part-duration", "0.2", "--ll-hls-blocking",
                 "--fault-rate", "0"],
        "blocking": True, "faults": 0.0,
    },
    "ll-faults": {
        "label": "same, 3% faults",
        "args": ["--segment-duration", "1", "--part-duration", "0.2", "--ll-hls-blocking",
                 "--fault-rate", "0.03", "--seed", "19"],
        "blocking": True, "faults": 0.03,
    },
    "ll-polling": {
        "label": "LL-HLS 1 s / 0.2 s parts, no blocking reload",
        "args": ["--segment-duration", "1", "--part-duration", "0.2", "--no-ll-hls-blocking",
                 "--fault-rate", "0"],
        "blocking": False, "faults": 0.0,
    },
    "hls-6s": {
        "label": "standard HLS, 6 s segments",
        "args": ["--segment-duration", "6", "--part-duration", "0", "--no-ll-hls-blocking",
                 "--fault-rate", "0"],
        "blocking": False, "faults": 0.0,
    },
}

SAMPLE = """(() => {
  const v = document.querySelector('video');
  const p = window.msdPlayer;
  if (!v || !p) return null;
  const q = v.getVideoPlaybackQuality();
  const ongoing = p.waitingSince === null ? 0 : (performance.now() - p.waitingSince) / 1000;
  return {
    wall: Date.now() / 1000, now: performance.now(), latency: p.measure(),
    hlsLatency: window.hls ? window.hls.latency : null,
    currentTime: v.currentTime, firstFrame: p.firstFrame, firstPlaying: p.firstPlaying,
    stalls: p.stalls + (ongoing > 0.1 ? 1 : 0),
    stallSeconds: p.stallSeconds + (ongoing > 0.1 ? ongoing : 0),
    stallLog: p.stallLog, decoded: q.totalVideoFrames, dropped: q.droppedVideoFrames,
    errors: p.errors, level: window.hls ? window.hls.currentLevel : null,
  };
})()"""


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, int(q * len(ordered) + 0.999999) - 1))]


def cpu_pressure() -> str | None:
    try:
        return Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except OSError:
        return None


def loadavg() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


async def phase(name: str, seconds: float, shot: Path | None) -> dict[str, Any]:
    spec = PHASES[name]
    segment = float(spec["args"][1])
    # watch: is printed after two segments; then start-up, then the measured window.
    duration = int(2 * segment + seconds + 30)
    cmd = [sys.executable, "-m", "msd_async.cli", "demo", "--watch", "--hlsjs", str(HLSJS),
           "--renditions", "3", "--duration", str(duration), "--no-live-view", *spec["args"]]
    # One phase at a time, nothing else on this loop yet: blocking here is fine.
    demo = subprocess.Popen(  # noqa: ASYNC220
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        start_new_session=True,
    )
    load_start = loadavg()
    try:
        assert demo.stdout is not None
        url = None
        for line in demo.stdout:
            if line.startswith("watch: "):
                url = line.split(" ", 1)[1].strip()
                break
        if url is None:
            raise SystemExit(f"{name}: msd demo printed no watch line")
        async with Chromium() as browser:
            page = await browser.page()
            await page.navigate(url)
            samples: list[dict[str, Any]] = []
            first = None
            with anyio.fail_after(60):
                while first is None:
                    await anyio.sleep(0.1)
                    sample = await page.evaluate(SAMPLE)
                    if sample and sample["firstFrame"] is not None and sample["latency"]:
                        first = sample
            started = time.monotonic()
            while time.monotonic() - started < seconds:
                await anyio.sleep(0.25)
                samples.append(await page.evaluate(SAMPLE))
                if shot is not None and time.monotonic() - started > min(20, seconds / 2):
                    png = await page.screenshot()
                    await anyio.Path(shot).write_bytes(png)
                    shot = None
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGINT)
        try:
            demo.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.communicate()
    last = samples[-1]
    latencies = [s["latency"] for s in samples if s["latency"] is not None]
    elapsed = last["wall"] - first["wall"]
    return {
        "label": spec["label"],
        "blocking_reload": spec["blocking"],
        "fault_rate": spec["faults"],
        "command": " ".join(["msd", *cmd[3:]]).replace(str(HLSJS), "HLSJS"),
        "seconds": round(elapsed, 1),
        "startup_s": round(first["firstFrame"] / 1000, 3),
        "latency_p50": percentile(latencies, 0.5),
        "latency_p95": percentile(latencies, 0.95),
        "latency_max": max(latencies) if latencies else None,
        "hls_latency_p50": percentile(
            [s["hlsLatency"] for s in samples if s["hlsLatency"] is not None], 0.5),
        # stalls before the window (start-up) are left out; stalls in it counted
        "stalls": last["stalls"] - first["stalls"],
        "stall_seconds": round(last["stallSeconds"] - first["stallSeconds"], 3),
        "stall_log": last["stallLog"],
        "advanced_s": round(last["currentTime"] - first["currentTime"], 2),
        "frames_decoded": last["decoded"] - first["decoded"],
        "frames_dropped": last["dropped"] - first["dropped"],
        "errors": last["errors"],
        "series": [[round(s["wall"] - first["wall"], 2), s["latency"]] for s in samples],
        "load_start": load_start,
        "load_end": loadavg(),
    }


def render(result: dict[str, Any]) -> str:
    phases = result["phases"]
    names = list(phases)

    def row(title: str, key: str, fmt: str = "{:.2f}") -> str:
        cells = []
        for n in names:
            value = phases[n].get(key)
            cells.append("-" if value is None else fmt.format(value))
        return f"| {title} | " + " | ".join(cells) + " |"

    lines = [
        "# The viewer's side: `msd demo --watch` in headless Chromium with hls.js",
        "",
        f"3 renditions of H.264 (640x360 at 800 kb/s, 480x270, 360x202; 30 fps, one CMAF "
        f"chunk per frame) published by `msd demo` through `LivePublisher` to its embedded "
        f"server; the page (hls.js {result['hlsjs']}, top rendition) plays it in Chromium "
        f"{result['chromium']}; {result['seconds']:g} s measured per phase after the first "
        "frame, sampled every 250 ms.",
        "",
        "| | " + " | ".join(phases[n]["label"] for n in names) + " |",
        "|---|" + "---:|" * len(names),
        row("blocking playlist reload (extension)", "blocking_reload", "{}"),
        row("injected faults", "fault_rate", "{:.0%}"),
        row("start-up s (page load to first frame; target <= 2)", "startup_s"),
        row("latency to live p50 s (LL target <= 2.0)", "latency_p50"),
        row("latency to live p95 s (LL target <= 3.0)", "latency_p95"),
        row("latency to live max s", "latency_max"),
        row("hls.latency p50 s (to the playlist's edge)", "hls_latency_p50"),
        row("stalls (LL target: 0; 3% faults: <= 1)", "stalls", "{}"),
        row("stall time s", "stall_seconds"),
        row("playback advanced s", "advanced_s"),
        row("frames decoded", "frames_decoded", "{}"),
        row("frames dropped", "frames_dropped", "{}"),
        row("load average at start (1, 5, 15 min)", "load_start", "{}"),
        "",
        "![latency to live over time](player.png)",
        "",
    ]
    lines += result.get("analysis", [])
    lines += [
        "",
        "Latency to live: the wall clock minus `hls.playingDate`, the "
        "EXT-X-PROGRAM-DATE-TIME of the frame on screen (the same clock the picture shows). "
        "`hls.latency` is measured against the playlist's edge, not the encoder's clock, and "
        "reads lower. Start-up: `performance.now()` of the first frame presented "
        "(`requestVideoFrameCallback`), counted from the navigation. Stalls and stall time "
        "count only the measured window (after the first frame).",
        "",
        f"Machine: Python {result['python']}, {result['cores']} CPUs shared with other "
        f"sessions. Load average at start: {result['load_start']}, at end: "
        f"{result['load_end']}; CPU pressure at start: {result['cpu_pressure']}. "
        f"{result['date']}. {result['note']}",
        "",
        f"Reproduce: `{result['command']}` (after `npm ci` in tests/player/js); each phase "
        "runs the `msd demo` command recorded in results/player.json.",
    ]
    return "\n".join(lines) + "\n"


def chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.2))
    for p in result["phases"].values():
        xs = [t for t, v in p["series"] if v is not None]
        ys = [v for _, v in p["series"] if v is not None]
        ax.plot(xs, ys, label=p["label"], linewidth=1.4)
    ax.axhline(2.0, color="grey", linestyle="--", linewidth=0.8)
    ax.text(0.5, 2.05, "LL-HLS target p50 2 s", color="grey", fontsize=8)
    ax.set_yscale("log")
    ax.set_xlabel("seconds after the first frame")
    ax.set_ylabel("latency to live, s (log)")
    ax.set_title("Latency to live in Chromium + hls.js (wall clock - hls.playingDate)")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    if not HLSJS.is_file():
        raise SystemExit(f"{HLSJS} is missing: run 'npm ci' in tests/player/js")
    version = subprocess.run(  # noqa: ASYNC221 (before any phase starts)
        ["chromium", "--version"], capture_output=True, text=True, check=False
    ).stdout.split()
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python benchmarks/bench_player.py"
        + (f" --seconds {args.seconds:g}" if args.seconds != 60 else ""),
        "seconds": args.seconds,
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        "chromium": version[1] if len(version) > 1 else "?",
        "hlsjs": json.loads((HLSJS.parents[1] / "package.json").read_text())["version"],
        "note": args.note,
        "load_start": loadavg(),
        "cpu_pressure": cpu_pressure(),
        "phases": {},
    }
    shot = None if args.no_write else ROOT / "docs" / "player.png"
    for name in args.phases:
        p = await phase(name, args.seconds, shot if name == "ll" else None)
        result["phases"][name] = p
        print(f"{name}: start-up {p['startup_s']} s, latency p50 {p['latency_p50']} "
              f"p95 {p['latency_p95']} s, stalls {p['stalls']} ({p['stall_seconds']} s), "
              f"load {p['load_start']}", flush=True)
    result["load_end"] = loadavg()
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="measured per phase (60)")
    parser.add_argument("--phases", nargs="+", default=list(PHASES), choices=list(PHASES))
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--note", default="", help="recorded with the results")
    parser.add_argument("--render", action="store_true",
                        help="rewrite results/player.md and the chart from results/player.json")
    args = parser.parse_args()
    # SIGTERM ends a run as Ctrl-C does: the phase's `finally` stops its `msd demo` process
    # group and Chromium (without this, Python's default action kills only this process).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if args.render:
        result = json.loads((RESULTS / "player.json").read_text())
    else:
        result = anyio.run(main, args)
        previous = RESULTS / "player.json"
        if set(args.phases) != set(PHASES) and previous.exists():
            # A partial run replaces its phases in the committed results; the rest stay.
            merged = json.loads(previous.read_text())
            merged["phases"].update(result["phases"])
            merged["phases"] = {n: merged["phases"][n] for n in PHASES if n in merged["phases"]}
            merged.setdefault("reruns", []).append(
                {"date": result["date"], "phases": args.phases, "load_start": result["load_start"],
                 "load_end": result["load_end"], "cpu_pressure": result["cpu_pressure"]}
            )
            result = merged
        if not args.no_write:
            (RESULTS / "player.json").write_text(json.dumps(result, indent=2) + "\n")
    print(render(result))
    if not args.no_write:
        (RESULTS / "player.md").write_text(render(result))
        chart(result, RESULTS / "player.png")
