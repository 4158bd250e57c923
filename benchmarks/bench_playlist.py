"""A long EVENT playlist: the publisher's CPU per playlist update as the playlist grows.

An EVENT playlist (or a live one with a long DVR window) names every segment since the
start: after an hour of 1 s segments, 3,600 lines. Each new segment brings a new version of
the playlist, and the publisher reads it to hold it back until what it newly names is
stored (docs/live.md, "Ordering"). If reading a version costs what the whole playlist
holds, each update costs more than the last, and an event that runs for hours ends up
spending a core on its playlists.

One ``LivePublisher`` publishes ``--segments`` segments of 188 bytes and, after each, the
playlist naming all of them so far, to ``benchmarks/_sink.py`` (its own process, so the
CPU counted is the publisher's); each update is awaited before the next. The same again
with an LL-HLS playlist (the parts of the last two segments listed, so the end of each
version differs from the last) and with a DASH MPD whose ``SegmentTimeline`` names every
segment (ffmpeg's default).
Reported: process CPU per update (segment + manifest) over the second ``--window`` updates
(the first warm up) and over the last ``--window``, and their ratio, in the same run.
``--baseline-src DIR`` runs the same in a second process with another checkout's ``src``
first on ``PYTHONPATH`` (an A/B of a change).

    python benchmarks/bench_playlist.py                       # writes results/playlist.*
    python benchmarks/bench_playlist.py --segments 600 --no-write
    python benchmarks/bench_playlist.py --baseline-src /tmp/before/src
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))

#: The target, for HLS and for DASH: an update at the end costs at most this many times one
#: near the start.
TARGET_RATIO = 2.0


def mpd(n: int) -> bytes:
    """A dynamic MPD whose SegmentTimeline names ``n`` segments (as ffmpeg's DASH muxer
    writes it with its default of keeping every segment)."""
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="dynamic" '
        'availabilityStartTime="2026-01-01T00:00:00Z" minimumUpdatePeriod="PT1S" '
        f'publishTime="2026-01-01T00:{n // 60 % 60:02d}:{n % 60:02d}Z">\n'
        ' <Period id="0" start="PT0S"><AdaptationSet contentType="video">\n'
        '  <Representation id="0" bandwidth="1000000">\n'
        '   <SegmentTemplate timescale="1000" initialization="init-$RepresentationID$.m4s" '
        'media="seg$Number$.ts" startNumber="0">\n'
        f'    <SegmentTimeline><S t="0" d="1000" r="{n - 1}"/></SegmentTimeline>\n'
        '   </SegmentTemplate>\n  </Representation>\n </AdaptationSet></Period>\n</MPD>\n'
    ).encode()


def ll_playlist(n: int) -> bytes:
    """An LL-HLS EVENT playlist of ``n`` segments, the parts of the last two listed (four
    each; the parts of older segments leave the playlist, RFC 8216bis 6.2.2)."""
    head = ("#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:1\n"
            "#EXT-X-PART-INF:PART-TARGET=0.25\n#EXT-X-PLAYLIST-TYPE:EVENT\n"
            "#EXT-X-MEDIA-SEQUENCE:0\n")
    lines = []
    for i in range(n):
        if i >= n - 2:
            lines += [f'#EXT-X-PART:DURATION=0.25,URI="seg{i}.p{k}.ts"\n' for k in range(4)]
        lines.append(f"#EXTINF:1.000000,\nseg{i}.ts\n")
    return (head + "".join(lines)).encode()


def playlist(n: int) -> bytes:
    head = ("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n"
            "#EXT-X-PLAYLIST-TYPE:EVENT\n#EXT-X-MEDIA-SEQUENCE:0\n")
    return (head + "".join(f"#EXTINF:1.000000,\nseg{i}.ts\n" for i in range(n))).encode()


FORMATS = {"HLS": playlist, "LL-HLS": ll_playlist, "DASH": mpd}


async def _publish(endpoint: str, segments: int, window: int, fmt: str) -> dict[str, float]:
    from msd_async import Credentials, Session
    from msd_async.live import LivePublisher

    creds = Credentials("AKIDBENCHPLAYLIST0000", "bench-playlist-secret-00000000000000000")
    # Built up front: the playlist text is the packager's work, not the publisher's.
    bodies = [FORMATS[fmt](i + 1) for i in range(segments)]
    manifest = "v/manifest.mpd" if fmt == "DASH" else "v/index.m3u8"
    cpu: list[float] = []
    async with Session(credentials=creds, region="us-east-1") as session:
        store = session.container(endpoint)
        # No deletes: the parts that leave an LL-HLS playlist go 3 target durations later
        # by the clock, so they would land in the last window and not the first.
        async with LivePublisher(store, prefix="event", auto_delete=False) as publisher:
            if fmt == "DASH":
                await publisher.publish("v/init-0.m4s", b"\x00" * 188)
            for i in range(segments):
                started = time.process_time()
                if fmt == "LL-HLS":
                    for k in range(4):
                        await publisher.publish(f"v/seg{i}.p{k}.ts", b"\x47" * 188)
                await publisher.publish(f"v/seg{i}.ts", b"\x47" * 188)
                update = await publisher.publish(manifest, bodies[i])
                outcome = await update.wait()
                cpu.append(time.process_time() - started)
                if not outcome.acknowledged:
                    raise SystemExit(f"update {i} was not stored: {outcome}")
    # The first window is a warm-up (connections, imports, the first allocations).
    first, last = cpu[window:2 * window], cpu[-window:]
    return {
        "first_ms": sum(first) / len(first) * 1e3,
        "last_ms": sum(last) / len(last) * 1e3,
        "first_entries": window + (window + 1) / 2,
        "last_entries": segments - (window - 1) / 2,
    }


def _worker(endpoint: str, segments: int, window: int, fmt: str) -> None:
    print(json.dumps(asyncio.run(_publish(endpoint, segments, window, fmt))))


def _run(
    endpoint: str, segments: int, window: int, src: Path | None, fmt: str
) -> dict[str, float]:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, __file__, "--worker", endpoint, "--segments", str(segments),
         "--window", str(window), "--format", fmt],
        env=env, check=True, capture_output=True, text=True,
    )
    result: dict[str, float] = json.loads(out.stdout.splitlines()[-1])
    result["ratio"] = result["last_ms"] / result["first_ms"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=3600, help="default 3600 (1 h)")
    parser.add_argument("--window", type=int, default=100, help="updates averaged (100)")
    parser.add_argument("--baseline-src", type=Path, help="another checkout's src, for A/B")
    parser.add_argument("--note", default="", help="recorded with the results")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--format", choices=list(FORMATS), help=argparse.SUPPRESS)
    parser.add_argument("--worker", metavar="ENDPOINT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.worker, args.segments, args.window, args.format)
        return

    from run import start_sink

    load_before = os.getloadavg()
    sink, endpoint = start_sink()
    try:
        trees: dict[str, Path | None] = {"this tree": None}
        if args.baseline_src is not None:
            trees["baseline"] = args.baseline_src
        runs: dict[str, Any] = {}
        for fmt in FORMATS:
            for name, src in trees.items():
                runs[f"{fmt}, {name}"] = _run(endpoint, args.segments, args.window, src, fmt)
    finally:
        sink.kill()
        sink.wait()
    ratios = {fmt: runs[f"{fmt}, this tree"]["ratio"] for fmt in FORMATS}
    report = {
        "command": "python " + shlex.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "note": args.note,
        "segments": args.segments,
        "window": args.window,
        "runs": runs,
        "target_ratio": TARGET_RATIO,
        "met": all(r <= TARGET_RATIO for r in ratios.values()),
    }
    lines = [
        "# A long EVENT playlist: publisher CPU per update as it grows (`bench_playlist.py`)",
        "",
        f"Command: `{report['command']}`",
        f"Date: {report['date']}; Python {report['python']}; {report['machine']}; load "
        f"average {report['load_average_before']} before, {report['load_average_after']} "
        "after.",
        *([f"Note: {args.note}"] if args.note else []),
        "",
        f"{args.segments} updates (a 188-byte segment, with its four parts for LL-HLS, "
        "then the manifest naming every segment so far: an HLS playlist, an LL-HLS one "
        "listing the parts of its last two segments, a DASH MPD's SegmentTimeline), each "
        f"awaited; process CPU "
        f"of the publisher per update, averaged "
        f"over updates {args.window + 1}-{2 * args.window} (the first {args.window} warm up) "
        f"and over the last {args.window}.",
        "",
        f"| manifest, tree | updates {args.window + 1}-{2 * args.window} (ms) "
        f"| last {args.window} (ms) | last / first |",
        "|---|---:|---:|---:|",
    ]
    for name, run in runs.items():
        lines.append(f"| {name} | {run['first_ms']:.2f} | {run['last_ms']:.2f} | "
                     f"{run['ratio']:.2f}x |")
    lines += [
        "",
        f"Target: an update of a manifest naming {args.segments} segments costs at most "
        f"{TARGET_RATIO:.1f}x one of a short manifest, for each format: "
        f"**{'met' if report['met'] else 'missed'}** ("
        + ", ".join(f"{fmt} {ratio:.2f}x" for fmt, ratio in ratios.items()) + ").",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "playlist.json").write_text(json.dumps(report, indent=2) + "\n")
        (RESULTS / "playlist.md").write_text(text)


if __name__ == "__main__":
    main()
