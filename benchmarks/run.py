"""Transfer benchmarks (issue 5): msd_async vs raw aiohttp, aiobotocore and boto3 threaded.

Cases: a 10 MB STREAMING upload from an async iterator (64 KiB chunks), a 25 MB STANDARD
upload from bytes and from a file, and 1 MiB ranged GETs from a 25 MB object; each at
concurrency 1 and 8. The peer is ``benchmarks/_sink.py`` in its own process (a minimal
MediaStore-shaped HTTP server that discards uploads and serves ranges from a 25 MB buffer);
every (client, case, concurrency) run is a fresh ``benchmarks/_worker.py`` process, so its
CPU time and peak RSS belong to that client alone. Runs are interleaved across clients and
repeated; the median of the repeats is reported.

Run: ``python benchmarks/run.py`` (full, a few minutes) or ``python benchmarks/run.py
--quick`` (a smoke run, ~1 minute, numbers noisy). Writes ``benchmarks/results/transfer.json``
and ``benchmarks/results/transfer.md`` (``--no-write`` to only print); exits 0 either way:
misses are reported, not raised (``--strict`` exits 1 on a miss).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CLIENTS = ["msd", "aiohttp", "aiobotocore", "boto3"]
CLIENT_LABELS = {
    "msd": "msd_async",
    "aiohttp": "raw aiohttp (default path)",
    "aiobotocore": "aiobotocore",
    "boto3": "boto3 threaded",
}
CASES = ["stream", "put-bytes", "put-file", "get-range"]
CASE_LABELS = {
    "stream": "10 MB STREAMING upload, async iterator (64 KiB chunks)",
    "put-bytes": "25 MB STANDARD upload from bytes",
    "put-file": "25 MB STANDARD upload from a file",
    "get-range": "1 MiB ranged GET from a 25 MB object",
}
#: What each client is actually given, where it differs from the case's name.
FEEDS = {
    ("aiobotocore", "stream"): "async iterator gathered into bytes per request (it cannot "
    "stream an async iterator)",
    ("boto3", "stream"): "iterator gathered into bytes per request (it cannot stream one)",
    ("msd", "put-file"): "the file's path",
    ("aiohttp", "put-file"): "open(file, 'rb')",
    ("aiobotocore", "put-file"): "open(file, 'rb')",
    ("boto3", "put-file"): "open(file, 'rb')",
}
CONCURRENCY = [1, 8]
#: Requests per run at concurrency 1 / at higher concurrency (full mode).
REQUESTS = {
    "stream": (40, 96),
    "put-bytes": (24, 64),
    "put-file": (24, 64),
    "get-range": (400, 1200),
}
STREAM_CHUNK = 64 * 1024
STANDARD_SIZE = 25_000_000


def start_sink() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "_sink.py"), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("endpoint: "):
        proc.kill()
        raise SystemExit(f"the sink did not start: {line!r}")
    return proc, line.split(" ", 1)[1].strip()


#: glibc malloc thresholds pinned for every client process (see README, "Allocator"): with
#: glibc's adaptive defaults, whether each 1 MiB response buffer is served from the heap or
#: freshly mmapped/trimmed (~256 page faults each) depends on heap layout, not on the client,
#: and swung CPU per ranged GET by 2-3x between otherwise identical runs.
PINNED_MALLOC = {
    "MALLOC_MMAP_THRESHOLD_": str(32 * 2**20),
    "MALLOC_TRIM_THRESHOLD_": str(64 * 2**20),
}
MALLOC_MODE = "pinned"


def worker_env() -> dict[str, str]:
    env = dict(os.environ)
    if MALLOC_MODE == "pinned":
        env.update(PINNED_MALLOC)
    else:
        for name in PINNED_MALLOC:
            env.pop(name, None)
    return env


def run_worker(
    client: str, case: str, concurrency: int, requests: int, endpoint: str, file: str
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-W",
        "ignore::ResourceWarning",
        str(HERE / "_worker.py"),
        client,
        case,
        "--endpoint",
        endpoint,
        "--concurrency",
        str(concurrency),
        "--requests",
        str(requests),
        "--file",
        file,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=worker_env())
    if out.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def machine() -> dict[str, Any]:
    import aiobotocore
    import aiohttp
    import boto3
    import botocore

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "aiohttp": aiohttp.__version__,
        "aiobotocore": aiobotocore.__version__,
        "botocore": botocore.__version__,
        "boto3": boto3.__version__,
        "loadavg_at_start": os.getloadavg(),
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def med(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    return {
        "mb_per_s": med("mb_per_s"),
        "cpu_ms_per_request": med("cpu_ms_per_request"),
        "peak_rss_over_base_mb": med("peak_rss_over_base_mb"),
        "peak_rss_over_base_mb_max": max(r["peak_rss_over_base_mb"] for r in runs),
        "mb_per_s_all": [round(r["mb_per_s"], 1) for r in runs],
        "requests": runs[0]["requests"],
        "repeats": len(runs),
    }


def check_targets(table: dict[str, dict[str, dict[str, Any]]], python: str) -> list[dict[str, Any]]:
    targets: list[dict[str, Any]] = []

    def add(name: str, key: str, value: float, bound: float, ok: bool, note: str = "") -> None:
        targets.append(
            {
                "target": name,
                "case": key,
                "value": round(value, 3),
                "bound": round(bound, 3),
                "pass": ok,
                "note": note,
            }
        )

    py311 = python.startswith("3.11.")
    for key, row in table.items():
        case, conc = key.rsplit("@", 1)
        c = int(conc)
        msd = row["msd"]
        if case in ("put-bytes", "put-file"):
            ratio = msd["mb_per_s"] / row["aiohttp"]["mb_per_s"]
            add(
                "large upload >= 3x raw aiohttp default path",
                key,
                ratio,
                3.0,
                ratio >= 3.0,
                "" if py311 else f"defined for Python 3.11; this is {python}",
            )
        if case != "get-range":
            ratio = msd["mb_per_s"] / row["boto3"]["mb_per_s"]
            add("upload >= boto3 threaded throughput", key, ratio, 1.0, ratio >= 1.0)
        if case == "put-bytes":
            bound = c * STANDARD_SIZE / 2**20
            rss = msd["peak_rss_over_base_mb"]
            add("memory <= concurrency x body (bytes), MiB", key, rss, bound, rss <= bound)
        if case == "stream":
            bound = c * 4 * STREAM_CHUNK / 2**20
            rss = msd["peak_rss_over_base_mb"]
            add("memory <= 4 chunks per upload (iterator), MiB", key, rss, bound, rss <= bound)
        if case == "get-range":
            ratio = msd["mb_per_s"] / row["aiohttp"]["mb_per_s"]
            add("ranged GET >= 0.95x raw aiohttp", key, ratio, 0.95, ratio >= 0.95)
    return targets


def explain(data: dict[str, Any]) -> list[str]:
    """Why each missed target was missed, with this run's numbers."""
    table = data["table"]
    notes: list[str] = []
    missed = {(t["target"], t["case"]) for t in data["targets"] if not t["pass"]}
    if any(name.startswith("large upload") for name, _ in missed):
        parts = []
        for key in ("put-bytes@1", "put-bytes@8", "put-file@1", "put-file@8"):
            if key in table:
                msd, raw = table[key]["msd"], table[key]["aiohttp"]
                parts.append(
                    f"{key}: {msd['mb_per_s']:.0f} vs {raw['mb_per_s']:.0f} MB/s, "
                    f"{msd['cpu_ms_per_request']:.1f} vs {raw['cpu_ms_per_request']:.1f} ms "
                    f"CPU, {msd['peak_rss_over_base_mb']:.0f} vs "
                    f"{raw['peak_rss_over_base_mb']:.0f} MB RSS"
                )
        notes.append(
            "3x raw aiohttp (missed): msd_async vs raw aiohttp — " + "; ".join(parts) + ". "
            "aiohttp 3.14 on 3.11 still copies a bytes body (the RSS column: ~+25 MB per "
            "upload in flight), but against this sink the copy costs only a few ms of CPU "
            "per 25 MB, while one loopback stream into the sink tops out at ~3-4 GB/s; so "
            "no client can be 3x faster than aiohttp's copying path here, and for a file "
            "aiohttp's default path does not copy at all (256 KiB reads in a thread), so "
            "the ratio there is ~1x by construction. The 3x figure came from an earlier "
            "measurement of 721 MB/s for aiohttp's bytes path, which this peer does not "
            "reproduce. msd_async's own path sends 1 MiB memoryview slices (no copy, flat "
            "memory) and uses the least CPU per byte of the asyncio clients."
        )
    for name, key in sorted(missed):
        if name.startswith("upload >= boto3"):
            msd, boto = table[key]["msd"], table[key]["boto3"]
            notes.append(
                f"boto3 threaded at {key} (missed): {msd['mb_per_s']:.0f} vs "
                f"{boto['mb_per_s']:.0f} MB/s, all runs msd {msd['mb_per_s_all']} vs boto3 "
                f"{boto['mb_per_s_all']}; CPU {msd['cpu_ms_per_request']:.1f} vs "
                f"{boto['cpu_ms_per_request']:.1f} ms/request. "
                + (
                    "The runs overlap: both are at the sink's ceiling, within run-to-run "
                    "noise of each other. "
                    if max(msd["mb_per_s_all"]) >= min(boto["mb_per_s_all"])
                    else "msd_async was slower in every run. "
                )
                + "boto3's blocking sendall needs no user-space copy, while on Python 3.11 "
                "asyncio copies whatever part of each 1 MiB slice the socket does not take "
                "at once, and an event loop serves all connections from one thread."
            )
        if name.startswith("ranged GET"):
            msd, raw = table[key]["msd"], table[key]["aiohttp"]
            extra_us = (msd["cpu_ms_per_request"] - raw["cpu_ms_per_request"]) * 1e3
            notes.append(
                f"ranged GET at {key} (missed): {msd['mb_per_s']:.0f} vs "
                f"{raw['mb_per_s']:.0f} MB/s (runs: msd {msd['mb_per_s_all']}, aiohttp "
                f"{raw['mb_per_s_all']}); CPU {msd['cpu_ms_per_request']:.3f} vs "
                f"{raw['cpu_ms_per_request']:.3f} ms/request, i.e. {extra_us:.0f} us more. "
                "A 1 MiB GET from this sink is CPU-bound on the client (both join 5-7 "
                "socket reads of up to 256 KiB into one bytes), so the ratio follows CPU "
                "per request. The extra is a fixed per-request cost of what raw aiohttp "
                "does not do, measured in-process against this sink by removing one piece "
                "at a time (A/B, alternating rounds; +-2-3 us noise): SigV4 signing "
                "~11-13 us; msd_async's transport layer over the same aiohttp session "
                "(pool gate, response wrapper, encoded URL) ~8-10 us; the session "
                "setting raw aiohttp's default lacks (the sock_read timer aiohttp "
                "re-arms on every socket read, i.e. the read timeout) a few us on 1 MiB "
                "(a session-wide skip_auto_headers, which sent aiohttp down its slower "
                "header path, was replaced by explicit headers); request building, the "
                "retry driver and ObjectStream the rest. With aiohttp stubbed out, "
                "msd_async's own code costs ~10.5 us per GET warm; here the pieces cost "
                "about three times their warm cost, likely because the code runs with "
                "cold caches after each wait on the sink. Earlier fixes (git log: stream.read, "
                "read_some, the get_object reference cycle, lazy info) had taken the gap "
                "at concurrency 8 from ~90 to ~30 us; the next round (signing and path "
                "shortcuts, a coroutine-free pool gate, inline error mapping) took ~8-12 "
                "us more off in-process A/B, which is within the spread of these "
                "separate-process runs. What is left is features (signing, the read "
                "timeout) and code spread thin: no single piece over ~3.5 us warm "
                "(signing)."
                + (
                    " The runs overlap (msd_async's best beats raw aiohttp's worst): at "
                    "this spread the ratio moves by several hundredths between full runs."
                    if max(msd["mb_per_s_all"]) >= min(raw["mb_per_s_all"])
                    else ""
                )
            )
    return notes


def render_md(data: dict[str, Any]) -> str:
    m = data["machine"]
    lines = [
        "# Transfer benchmarks",
        "",
        "msd_async vs raw aiohttp (its default path: `session.put(url, data=...)`, "
        "`resp.read()`), aiobotocore's `mediastore-data` client and boto3's in a "
        "ThreadPoolExecutor of the same concurrency. Peer: `benchmarks/_sink.py` in its own "
        "process (discards uploads, serves ranges from a 25 MB buffer); every run is a fresh "
        f"client process. Median of {data['repeats']} interleaved repeats.",
        "",
        "MB/s = 10^6 bytes/s of body. CPU = client process CPU (user+sys, all threads) per "
        "request. RSS = peak RSS over the baseline taken after imports, client creation and "
        "body allocation (median; max in brackets).",
        "",
    ]
    for key, row in data["table"].items():
        case, conc = key.rsplit("@", 1)
        lines += [
            f"### {CASE_LABELS[case]}, concurrency {conc}",
            "",
            "| client | MB/s | vs raw aiohttp | vs boto3 threaded | CPU ms/request "
            "| RSS over base MB |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for client in CLIENTS:
            if client not in row:
                continue
            s = row[client]
            label = CLIENT_LABELS[client]
            feed = FEEDS.get((client, case))
            if feed:
                label += f" ({feed})"
            lines.append(
                f"| {label} | {s['mb_per_s']:.0f} | "
                f"{s['mb_per_s'] / row['aiohttp']['mb_per_s']:.2f}x | "
                f"{s['mb_per_s'] / row['boto3']['mb_per_s']:.2f}x | "
                f"{s['cpu_ms_per_request']:.2f} | {s['peak_rss_over_base_mb']:.1f} "
                f"[{s['peak_rss_over_base_mb_max']:.1f}] |"
            )
        lines.append("")
    lines += [
        "## Targets",
        "",
        "| target | case@concurrency | msd_async | bound | result |",
        "|---|---|---:|---:|---|",
    ]
    for t in data["targets"]:
        result = "PASS" if t["pass"] else "MISS"
        if t["note"]:
            result += f" ({t['note']})"
        lines.append(f"| {t['target']} | {t['case']} | {t['value']} | {t['bound']} | {result} |")
    notes = explain(data) + data.get("notes", [])
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    lines += [
        "",
        f"Machine: Python {m['python']} ({m['implementation']}), {m['cpu']} ({m['cores']} "
        f"CPUs), {m['platform']}; aiohttp {m['aiohttp']}, aiobotocore {m['aiobotocore']}, "
        f"botocore {m['botocore']}, boto3 {m['boto3']}. Load average at start: "
        f"{', '.join(f'{x:.2f}' for x in m['loadavg_at_start'])}. Run {data['date']}, "
        f"{data['duration_s']:.0f} s.",
        "",
        f"Reproduce: `{data['command']}`.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run (noisy)")
    parser.add_argument("--repeats", type=int, help="runs per (client, case, concurrency)")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=CASES)
    parser.add_argument("--clients", nargs="+", choices=CLIENTS, default=CLIENTS)
    parser.add_argument("--concurrency", nargs="+", type=int, default=CONCURRENCY)
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--note", action="append", default=[], help="a note for the results")
    parser.add_argument(
        "--malloc",
        choices=["pinned", "default"],
        default="pinned",
        help="pin glibc malloc thresholds in the client processes (default) "
        "or leave glibc's adaptive ones",
    )
    args = parser.parse_args()
    global MALLOC_MODE
    MALLOC_MODE = args.malloc
    repeats = args.repeats or (1 if args.quick else 5)
    scale = 4 if args.quick else 1
    for needed in ("msd", "aiohttp", "boto3"):
        if needed not in args.clients:
            args.clients.append(needed)  # the ratios and targets need them

    info = machine()
    started = time.perf_counter()
    sink, endpoint = start_sink()
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            file = os.path.join(tmp, "body.bin")
            with open(file, "wb") as f:
                f.write(os.urandom(STANDARD_SIZE))
            for rep in range(repeats):
                for case in args.cases:
                    for conc in args.concurrency:
                        key = f"{case}@{conc}"
                        n = REQUESTS[case][0 if conc == 1 else 1] // scale
                        n = max(n, conc)
                        # Rotate the order so no client always runs right after another.
                        order = (
                            args.clients[rep % len(args.clients) :]
                            + args.clients[: rep % len(args.clients)]
                        )
                        for client in order:
                            r = run_worker(client, case, conc, n, endpoint, file)
                            results.setdefault(key, {}).setdefault(client, []).append(r)
                            print(
                                f"[{rep + 1}/{repeats}] {key:<14} {client:<12} "
                                f"{r['mb_per_s']:8.0f} MB/s {r['cpu_ms_per_request']:7.2f} "
                                f"ms CPU/req {r['peak_rss_over_base_mb']:7.1f} MB RSS",
                                flush=True,
                            )
    finally:
        sink.terminate()
        sink.wait(10)

    table = {key: {c: summarize(runs) for c, runs in row.items()} for key, row in results.items()}
    targets = check_targets(table, info["python"])
    # The exact command, minus the flags that do not change the numbers.
    shown = [a for a in sys.argv[1:] if a not in ("--no-write", "--strict")]
    command = " ".join(["python benchmarks/run.py", *shown])
    data = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "duration_s": time.perf_counter() - started,
        "command": command,
        "mode": "quick" if args.quick else "full",
        "repeats": repeats,
        "machine": info,
        "peer": "benchmarks/_sink.py (separate process)",
        "malloc": args.malloc if args.malloc == "default" else PINNED_MALLOC,
        "table": table,
        "targets": targets,
        "runs": results,
        "notes": args.note,
    }
    md = render_md(data)
    print()
    print(md)
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "transfer.json").write_text(json.dumps(data, indent=2) + "\n")
        (RESULTS / "transfer.md").write_text(md)
    missed = [t for t in targets if not t["pass"]]
    return 1 if (missed and args.strict) else 0


if __name__ == "__main__":
    sys.exit(main())
