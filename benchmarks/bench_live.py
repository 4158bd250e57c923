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
    python benchmarks/bench_live.py --tail --no-faults-only --no-write --duration 20
        # what the egress tail is made of: time on a CPU, collections, loop lag (issue 20)
"""

from __future__ import annotations

import argparse
import bisect
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
    from msd_async.live.stats import Histogram
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
    # The reader keeps a bounded histogram (issue 16, item 20): percentiles within its
    # bucket width (about 5 %), not exact order statistics.
    latency = Histogram()
    for r in readers:
        latency.merge(r.stats.chunk_latency)
    return {
        "chunks": latency.count,
        "chunk_p50": latency.percentile(0.5),
        "chunk_p99": latency.percentile(0.99),
        "chunk_max": latency.max,
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
            if args.gc_freeze:
                import gc

                gc.collect()
                gc.freeze()
            cpu0, wall0 = time.process_time(), time.monotonic()
            async with LivePublisher(store, prefix="bench") as publisher:
                tail = TailProbe(publisher, anyio.current_time() + 0.05) if args.tail else None
                try:
                    reports = await stream.run(publisher)
                finally:
                    if tail is not None:
                        tail.close()
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
        **({"tail": tail.summary(args.chunk_duration)} if tail is not None else {}),
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


class TailProbe:
    """``--tail``: what the egress tail is made of (issue 20). Records every part chunk's
    egress sample with its time, every garbage collection (``gc.callbacks``) and the event
    loop's lag (a 5 ms ticker's oversleep), so each tail sample can be attributed: did a
    collection run while it waited, was it on a part/segment boundary tick (the producer
    then starts uploads and renders playlists), how late was the loop. The samples are the
    same ones ``KindStats.egress_p99`` counts (the recorder's ``egress`` is wrapped, not
    replaced)."""

    def __init__(self, publisher: Any, start: float) -> None:
        import gc

        from msd_async.live import ObjectKind

        self.start = start
        self.samples: list[tuple[float, float]] = []  # (write time, egress seconds)
        self.gcs: list[tuple[float, float, int]] = []  # (start, seconds, generation)
        self.lags: list[tuple[float, float]] = []
        self._gc_started = 0.0
        recorder = publisher._recorder
        original = recorder.egress
        part = ObjectKind.PART

        # The thread's CPU clock at each chunk's arrival (the pump's stamp), so each sample
        # splits into time on a CPU (our code and collections: what an idle machine would
        # show) and time off it (the process waiting to be scheduled).
        marks_wall: list[float] = []
        marks_cpu: list[float] = []
        marks_index: list[int] = []
        self.index: list[int] = []  # each sample's chunk index in its part
        self.on_cpu: list[float] = []

        class StampedArrivals(list):  # type: ignore[type-arg]
            def append(self, arrival: float) -> None:
                super().append(arrival)
                marks_wall.append(arrival)
                marks_cpu.append(time.thread_time())
                marks_index.append(len(self) - 1)

        from msd_async.live import bodies

        self._log_init = init = bodies.ChunkLog.__init__

        def log_init(log: Any, *a: Any, **kw: Any) -> None:
            init(log, *a, **kw)
            log.arrivals = StampedArrivals()

        bodies.ChunkLog.__init__ = log_init  # type: ignore[method-assign]

        def egress(kind: Any, seconds: float) -> None:
            if kind is part:
                now, cpu = time.monotonic(), time.thread_time()
                self.samples.append((now, seconds))
                i = bisect.bisect_left(marks_wall, now - seconds - 1e-7)
                i = min(i, len(marks_cpu) - 1)
                self.on_cpu.append(cpu - marks_cpu[i])
                self.index.append(marks_index[i])
            original(kind, seconds)

        recorder.egress = egress

        def on_gc(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                self._gc_started = time.monotonic()
            else:
                self.gcs.append((self._gc_started, time.monotonic() - self._gc_started,
                                 info["generation"]))

        self._on_gc = on_gc
        gc.callbacks.append(on_gc)
        import asyncio

        async def ticker() -> None:
            while True:
                due = time.monotonic() + 0.005
                await asyncio.sleep(0.005)
                self.lags.append((due, time.monotonic() - due))

        self._ticker = asyncio.get_running_loop().create_task(ticker())
        self._sched0 = _schedstat()
        self._wall0 = time.monotonic()

    def close(self) -> None:
        import gc

        from msd_async.live import bodies

        gc.callbacks.remove(self._on_gc)
        self._ticker.cancel()
        bodies.ChunkLog.__init__ = self._log_init  # type: ignore[method-assign]
        sched = _schedstat()
        self.wall = time.monotonic() - self._wall0
        self.ran = sched[0] - self._sched0[0]
        self.waited = sched[1] - self._sched0[1]

    def summary(self, tick: float) -> dict[str, Any]:
        tail = [(t, s) for t, s in self.samples if s > 0.002]
        gcs = self.gcs

        def in_gc(t: float, s: float) -> bool:
            return any(g0 < t and g0 + d > t - s for g0, d, _ in gcs)

        def gc_overlap(t: float, s: float, generation: int) -> float:
            return sum(max(0.0, min(t, g0 + d) - max(t - s, g0))
                       for g0, d, g in gcs if g == generation)

        gen_ms = {g: sorted(d * 1e3 for _, d, gg in gcs if gg == g) for g in (0, 1, 2)}
        lags = sorted(x for _, x in self.lags)
        egress = sorted(s for _, s in self.samples)
        return {
            "samples": len(self.samples),
            "egress_p50_ms": _ms(percentile(egress, 0.5)),
            "egress_p99_ms": _ms(percentile(egress, 0.99)),
            "egress_max_ms": _ms(max(egress, default=None)),
            "over_2ms": len(tail),
            # the same samples counting only the time this thread was on a CPU
            "on_cpu_p50_ms": _ms(percentile(self.on_cpu, 0.5)),
            "on_cpu_p99_ms": _ms(percentile(self.on_cpu, 0.99)),
            "on_cpu_max_ms": _ms(max(self.on_cpu, default=None)),
            # by the chunk's index in its part (5 chunks a part): the tick of index 4 is
            # also where the producer ends a part, starts the next one's upload and
            # publishes a playlist (and every 4th part, a segment's)
            "on_cpu_p99_ms_by_index": [
                _ms(percentile([c for c, j in zip(self.on_cpu, self.index, strict=True)
                                if j == k], 0.99))
                for k in range(5)],
            "egress_p99_ms_by_index": [
                _ms(percentile([s for (_, s), j in zip(self.samples, self.index, strict=True)
                                if j == k], 0.99))
                for k in range(5)],
            "over_2ms_during_gc": sum(in_gc(t, s) for t, s in tail),
            # samples with over 5 ms of work on a CPU: how many, by chunk of the part, and
            # how many overlapped a collection of each generation
            "on_cpu_over_5ms_by_index": [
                sum(1 for c, j in zip(self.on_cpu, self.index, strict=True) if c > 0.005
                    and j == k) for k in range(5)],
            "on_cpu_over_5ms_during_gc_by_generation": [
                sum(1 for (t, s), c in zip(self.samples, self.on_cpu, strict=True)
                    if c > 0.005 and gc_overlap(t, s, g) > 0) for g in (0, 1, 2)],
            # of the time the samples over 2 ms waited, the share spent inside collections
            "over_2ms_wait_in_gc_by_generation": [
                sum(gc_overlap(t, s, g) for t, s in tail) / max(1e-9, sum(s for _, s in tail))
                for g in (0, 1, 2)],
            "p99_samples_wait_in_gc": _gc_share_top(self.samples, gc_overlap),
            # the process's own time on a CPU and waiting for one (/proc schedstat), over
            # the phase's wall time: a busy machine shows as waiting
            "cpu_ran_share": self.ran / self.wall,
            "cpu_runqueue_wait_share": self.waited / self.wall,
            "gc": {str(g): {"count": len(v), "p50_ms": percentile(v, 0.5),
                            "max_ms": max(v, default=None), "total_ms": sum(v)}
                   for g, v in gen_ms.items()},
            "loop_lag_p50_ms": _ms(percentile(lags, 0.5)),
            "loop_lag_p99_ms": _ms(percentile(lags, 0.99)),
        }


def _schedstat() -> tuple[float, float]:
    try:
        ran, waited, _ = Path("/proc/self/schedstat").read_text().split()
    except (OSError, ValueError):
        return 0.0, 0.0
    return int(ran) / 1e9, int(waited) / 1e9


def _gc_share_top(samples: list[tuple[float, float]], overlap: Any) -> float:
    """Of the worst 1% of samples (those at or above the p99), the share of their waiting
    spent inside a collection of any generation."""
    top = sorted(samples, key=lambda x: x[1])[-max(1, len(samples) // 100):]
    waited = sum(s for _, s in top)
    return sum(overlap(t, s, g) for t, s in top for g in (0, 1, 2)) / max(1e-9, waited)


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
           "own share is the egress row (each chunk written to its socket in its "
           "producer's step since issue 20: a fraction of a millisecond); the rest is "
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
    lines += render_egress_tail(result.get("egress_tail"))
    return "\n".join(lines) + "\n"


def render_egress_tail(tail: dict[str, Any] | None) -> list[str]:
    """The "issue 20: the egress tail" section: ``--tail`` runs, A/B alternated."""
    if not tail:
        return []
    lines = [
        "",
        "## issue 20: the egress tail",
        "",
        f"`{tail['command']}`, variants alternated run by run ({tail['date']}); the "
        "no-faults phase only; part chunks' egress (producer -> socket), the samples "
        "`KindStats.egress_p99` counts. Target: p99 <= 2 ms.",
        "",
        "| variant | run | load avg (1, 5, 15 min) | egress p50 ms | p99 ms | max ms | "
        "on a CPU: p50 / p99 ms | on a CPU p99 by chunk of the part (1..5) | "
        "samples > 2 ms | worst 1%: share of wait in GC | GC ms gen0/1/2 (gen2 max) | "
        "loop lag p99 ms | process on CPU / waiting for a CPU |",
        "|---|---:|---|---:|---:|---:|---|---|---:|---:|---|---:|---|",
    ]
    for run in tail["runs"]:
        t = run["tail"]
        gc = t["gc"]
        on_cpu = "-" if "on_cpu_p50_ms" not in t else (
            f"{t['on_cpu_p50_ms']:.2f} / {t['on_cpu_p99_ms']:.2f}")
        by_index = " / ".join(f"{x:.1f}" for x in t.get("on_cpu_p99_ms_by_index", [])) or "-"
        lines.append(
            f"| {run['variant']} | {run['run']} | {run['load']} | {t['egress_p50_ms']:.2f} | "
            f"{t['egress_p99_ms']:.1f} | {t['egress_max_ms']:.1f} | {on_cpu} | {by_index} | "
            f"{t['over_2ms'] / t['samples']:.0%} | {t['p99_samples_wait_in_gc']:.0%} | "
            f"{gc['0']['total_ms']:.0f} / {gc['1']['total_ms']:.0f} / "
            f"{gc['2']['total_ms']:.0f} ({gc['2']['max_ms'] or 0:.0f}) | "
            f"{t['loop_lag_p99_ms']:.1f} | {t['cpu_ran_share']:.0%} / "
            f"{t['cpu_runqueue_wait_share']:.0%} |"
        )
    lines += ["", tail["note"]]
    return lines


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
        "command": "python benchmarks/bench_live.py" + (" --quick" if args.quick else "")
        + (" --gc-freeze" if args.gc_freeze else ""),
        "renditions": args.renditions,
        "duration": args.duration,
        "machine": machine(),
        "note": args.note,
        "loadavg_start": ", ".join(f"{x:.2f}" for x in os.getloadavg()),
        "cpu_pressure_start": cpu_pressure(),
        "phases": {},
    }
    phases = (("no-faults", 0.0), ("faults-5%", 0.05))
    for name, rate in phases[:1] if args.no_faults_only else phases:
        server, endpoint = start_server(rate, seed=11)
        try:
            result["phases"][name] = await phase(endpoint, args)
        finally:
            server.terminate()
            server.wait()
        p = result["phases"][name]
        if "tail" in p:
            print(json.dumps(p["tail"]), flush=True)
        print(f"{name}: {p['segments']} segments, dropped {p['dropped']}, retries "
              f"{p['retries']}, chunk p99 {ms(_ms(p['reader'].get('chunk_p99')))} ms, "
              f"CPU {p['cpu_ms_per_segment']:.1f} ms/segment", flush=True)
    result["loadavg_end"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    if not args.no_faults_only:
        print(render(result))
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 s phases")
    parser.add_argument("--renditions", type=int, default=10)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--note", default="", help="recorded with the results")
    parser.add_argument("--duration", type=float, help="seconds of stream per phase")
    parser.add_argument("--gc-freeze", action="store_true",
                        help="gc.freeze() once the publishing process has started up")
    parser.add_argument("--tail", action="store_true",
                        help="attribute the egress tail: GC pauses, loop lag, boundary ticks")
    parser.add_argument("--no-faults-only", action="store_true",
                        help="run only the no-faults phase (the egress tail runs)")
    parser.add_argument("--render", action="store_true",
                        help="rewrite results/live.md from results/live.json")
    parser.add_argument("--reader", help=argparse.SUPPRESS)
    parser.add_argument("--demo-rss", nargs=2, action="append", metavar=("LABEL", "SAMPLES"),
                        help="with --render: add a 10-minute `msd demo` RSS run (a file of "
                        "'seconds rss_kb' lines)")
    parser.add_argument("--demo-rss-note", default="")
    parser.add_argument("--egress-tail", metavar="JSONL", action="append",
                        help="with --render: add the issue-20 egress-tail runs (lines of "
                        "{variant, run, load, tail} from --tail runs)")
    parser.add_argument("--egress-tail-command", default="")
    parser.add_argument("--egress-tail-note", default="")
    args = parser.parse_args()
    args.duration = args.duration or (10.0 if args.quick else 60.0)
    args.chunk_duration = 0.1
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
        if args.egress_tail:
            stored["egress_tail"] = {
                "command": args.egress_tail_command,
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "runs": [json.loads(line) for path in args.egress_tail
                     for line in Path(path).read_text().splitlines() if line],
                "note": args.egress_tail_note,
            }
            (RESULTS / "live.json").write_text(json.dumps(stored, indent=2) + "\n")
        (RESULTS / "live.md").write_text(render(stored))
    elif args.reader:
        print(json.dumps(anyio.run(reader_main, args.reader, args.renditions)))
    else:
        result = anyio.run(main, args)
        if args.no_faults_only:
            print(json.dumps(result))
        elif not args.no_write:
            (RESULTS / "live.json").write_text(json.dumps(result, indent=2) + "\n")
            (RESULTS / "live.md").write_text(render(result))
