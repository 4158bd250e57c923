"""The scoreboard: every scenario, every client, one run, against the same peer.

Scenarios: 64 KiB PUT at concurrency 1 and 32, 200 KB PUT at 16, 10 MB STREAMING and 25 MB
STANDARD uploads at 4, 1 MiB ranged GETs at 16, DescribeObject at 32, a ListItems listing
of 5,000 objects, and cold start (import + first request, ``import msd_async`` against
``import aiobotocore.session``, ``msd --help``). Clients: msd_async, raw aiohttp (the
floor: no signing, no parsing beyond ``json.loads``), aiobotocore, boto3 in threads and
capo-mediastore-data (when installed), each on asyncio's event loop and on uvloop.

The peer is ``benchmarks/_sink.py`` in its own process; every (scenario, loop, client) run
is a fresh ``benchmarks/_worker.py`` process, so its CPU time and peak RSS are that
client's alone. Runs are interleaved (the client order rotates every repeat) and repeated;
tables give medians, and ratios are the median of the ratios paired within each repeat.

Run: ``python benchmarks/scoreboard.py`` (full: 5 repeats, 7-11 minutes on 2 cores) or
``--quick`` (a smoke run of ~2 minutes that writes ``results/scoreboard-quick.*``). Writes
``results/scoreboard.json``, ``results/scoreboard.md`` and one PNG chart per scenario in
``results/scoreboard/``. Results of the other benchmarks (``results/live*.json``,
``tree*``, ``relay*``, ``web*``, or ``--include FILE``) are summarised when present.
Exits 0 even when a target is missed (``--strict``: exit 1).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))

from run import PINNED_MALLOC, machine, start_sink  # noqa: E402

CLIENTS = ["msd", "aiohttp", "aiobotocore", "boto3", "capo"]
LABELS = {
    "msd": "msd_async",
    "aiohttp": "raw aiohttp",
    "aiobotocore": "aiobotocore",
    "boto3": "boto3 threaded",
    "capo": "capo-mediastore-data",
}
LOOPS = ["asyncio", "uvloop"]
#: Pages in the sink's listing (5,000 objects, 1,000 a page).
LIST_PAGES = 5


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    case: str
    concurrency: int
    #: Measured requests per run (full mode; --quick takes a quarter).
    requests: int
    size: int = 0
    #: What one "request" is, when it is not one HTTP request.
    unit: str = "request"


SCENARIOS = [
    Scenario("put-64k@1", "64 KiB PutObject, concurrency 1", "put-small", 1, 1000, 65536),
    Scenario("put-64k@32", "64 KiB PutObject, concurrency 32", "put-small", 32, 1500, 65536),
    Scenario("put-200k@16", "200 KB PutObject, concurrency 16", "put-small", 16, 1200, 200_000),
    Scenario(
        "stream-10m@4", "10 MB STREAMING upload (64 KiB chunks), concurrency 4", "stream", 4, 32
    ),
    Scenario("put-25m@4", "25 MB STANDARD upload from bytes, concurrency 4", "put-bytes", 4, 24),
    Scenario("get-1m@16", "1 MiB ranged GetObject, concurrency 16", "get-range", 16, 600),
    Scenario("describe@32", "DescribeObject, concurrency 32", "describe", 32, 1500),
    Scenario(
        "list-5000", "ListItems of 5,000 objects (5 pages of 1,000)", "list", 1, 8, unit="listing"
    ),
]
#: What each client is given where it differs from the scenario's name.
FEEDS = {
    ("aiobotocore", "stream"): "iterator gathered into bytes (it cannot send one)",
    ("boto3", "stream"): "iterator gathered into bytes (it cannot send one)",
    ("capo", "stream"): "iterator gathered into bytes (it needs the length up front)",
}
#: The import each client's user writes, for the cold-start rows.
COLD_IMPORTS = {
    "msd": "from msd_async import Credentials, Session",
    "aiohttp": "import aiohttp",
    "aiobotocore": "from aiobotocore.session import get_session",
    "boto3": "import boto3",
    "capo": "from capo_mediastore_data import AsyncMediaStoreDataClient",
}
#: Bare imports and commands timed for the import targets: label -> Python statement.
IMPORTS = {
    "import msd_async": "import msd_async",
    "from msd_async import Credentials, Session": "from msd_async import Credentials, Session",
    "import aiobotocore.session": "import aiobotocore.session",
    "import aiohttp": "import aiohttp",
    # What `msd --help` does in-process: load every command module, build and format the help.
    "msd --help": "from msd_async.cli import build_parser; build_parser().format_help()",
}


def capo_version() -> str | None:
    if importlib.util.find_spec("capo_mediastore_data") is None:
        return None
    from importlib.metadata import version

    return version("capo-mediastore-data")


# --- running ------------------------------------------------------------------------------


def run_json(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    if out.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def worker_env() -> dict[str, str]:
    # The transfer benchmarks' pinned malloc thresholds (see README, "Allocator").
    return {**os.environ, **PINNED_MALLOC}


def worker_command(s: Scenario, client: str, loop: str, endpoint: str, n: int) -> list[str]:
    """The `_worker.py` command line of ``n`` requests of scenario ``s`` (also ab.py's)."""
    cmd = [
        sys.executable,
        "-W",
        "ignore::ResourceWarning",
        str(HERE / "_worker.py"),
        client,
        s.case,
        "--endpoint",
        endpoint,
        "--concurrency",
        str(s.concurrency),
        "--requests",
        str(n),
        "--loop",
        loop,
    ]
    if s.size:
        cmd += ["--size", str(s.size)]
    return cmd


def run_scenario(s: Scenario, client: str, loop: str, endpoint: str, scale: int) -> dict[str, Any]:
    n = max(s.requests // scale, s.concurrency, 2)
    return run_json(worker_command(s, client, loop, endpoint, n), worker_env())


def timed_process(cmd: list[str]) -> float:
    """Wall milliseconds of a process, start to exit."""
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    return (time.perf_counter() - t0) * 1e3


def msd_command() -> list[str]:
    script = Path(sys.executable).parent / "msd"
    return [str(script)] if script.exists() else [sys.executable, "-m", "msd_async.cli"]


def cold_round(clients: list[str], endpoint: str) -> dict[str, Any]:
    """One round of every cold-start measurement, each in a fresh process."""
    out: dict[str, Any] = {"first_request": {}, "import_ms": {}, "process_ms": {}}
    for client in clients:
        out["first_request"][client] = run_json(
            [sys.executable, str(HERE / "_cold.py"), client, endpoint]
        )
    for label, statement in IMPORTS.items():
        code = (
            "import time; t = time.perf_counter(); " + statement + "; "
            "print((time.perf_counter() - t) * 1e3)"
        )
        res = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
        )
        out["import_ms"][label] = float(res.stdout.strip().splitlines()[-1])
    out["process_ms"]["python -c pass"] = timed_process([sys.executable, "-c", "pass"])
    out["process_ms"]["msd --help"] = timed_process([*msd_command(), "--help"])
    out["process_ms"]["python -c 'import aiobotocore.session'"] = timed_process(
        [sys.executable, "-c", "import aiobotocore.session"]
    )
    return out


# --- summarising --------------------------------------------------------------------------

METRICS = ["requests_per_s", "p50_ms", "p99_ms", "cpu_us", "peak_rss_over_base_mb", "peak_rss_mb"]


def metrics_of(run: dict[str, Any]) -> dict[str, float]:
    return {
        "requests_per_s": run["requests_per_s"],
        "p50_ms": run["p50_ms"],
        "p99_ms": run["p99_ms"],
        "cpu_us": run["cpu_ms_per_request"] * 1e3,
        "peak_rss_over_base_mb": run["peak_rss_over_base_mb"],
        "peak_rss_mb": run["peak_rss_mb"],
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over repeats of every metric, for one (scenario, loop, client)."""
    ms = [metrics_of(r) for r in runs]
    out: dict[str, Any] = {k: statistics.median(m[k] for m in ms) for k in METRICS}
    out["repeats"] = len(runs)
    out["requests"] = runs[0]["requests"]
    return out


def paired_ratio(
    runs: dict[str, list[dict[str, Any]]], num: str, den: str, metric: str
) -> dict[str, float] | None:
    """Median, min and max over repeats of ``num``'s metric / ``den``'s, pairing the runs of
    one repeat (they ran back to back, under the same load)."""
    if num not in runs or den not in runs:
        return None
    a = {r["repeat"]: metrics_of(r)[metric] for r in runs[num]}
    b = {r["repeat"]: metrics_of(r)[metric] for r in runs[den]}
    ratios = [a[k] / b[k] for k in a if b.get(k)]
    if not ratios:
        return None
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


#: (target, scenario, numerator, denominator, metric, comparison, bound)
RATIO_TARGETS = [
    (
        "CPU per 200 KB PutObject <= 1.10x raw aiohttp",
        "put-200k@16",
        "msd",
        "aiohttp",
        "cpu_us",
        "<=",
        1.10,
    ),
    (
        "CPU per 200 KB PutObject >= 3.5x cheaper than aiobotocore",
        "put-200k@16",
        "aiobotocore",
        "msd",
        "cpu_us",
        ">=",
        3.5,
    ),
    (
        "CPU per DescribeObject <= 1.10x raw aiohttp",
        "describe@32",
        "msd",
        "aiohttp",
        "cpu_us",
        "<=",
        1.10,
    ),
    (
        "CPU per DescribeObject >= 3.5x cheaper than aiobotocore",
        "describe@32",
        "aiobotocore",
        "msd",
        "cpu_us",
        ">=",
        3.5,
    ),
    (
        "CPU per ListItems page <= 1.2x raw aiohttp + json.loads",
        "list-5000",
        "msd",
        "aiohttp",
        "cpu_us",
        "<=",
        1.2,
    ),
    (
        "CPU per ListItems page >= 6x cheaper than aiobotocore",
        "list-5000",
        "aiobotocore",
        "msd",
        "cpu_us",
        ">=",
        6.0,
    ),
    (
        "ranged GET throughput >= 0.95x raw aiohttp",
        "get-1m@16",
        "msd",
        "aiohttp",
        "requests_per_s",
        ">=",
        0.95,
    ),
    # Issue 20 ("round two"): the same counting, tighter or additional bounds.
    *(
        (f"CPU per 64 KiB PutObject @{c} <= 1.10x raw aiohttp (issue 20)", f"put-64k@{c}",
         "msd", "aiohttp", "cpu_us", "<=", 1.10)
        for c in (1, 32)
    ),
    *(
        (f"CPU per 64 KiB PutObject @{c} >= 3.5x cheaper than aiobotocore (issue 20)",
         f"put-64k@{c}", "aiobotocore", "msd", "cpu_us", ">=", 3.5)
        for c in (1, 32)
    ),
    (
        "CPU per DescribeObject <= 1.15x raw aiohttp (issue 20)",
        "describe@32",
        "msd",
        "aiohttp",
        "cpu_us",
        "<=",
        1.15,
    ),
    (
        "ranged GET throughput >= 0.97x raw aiohttp (issue 20)",
        "get-1m@16",
        "msd",
        "aiohttp",
        "requests_per_s",
        ">=",
        0.97,
    ),
]


def check_targets(data: dict[str, Any]) -> list[dict[str, Any]]:
    targets = []
    for name, key, num, den, metric, op, bound in RATIO_TARGETS:
        for loop, runs in data["runs"].get(key, {}).items():
            ratio = paired_ratio(runs, num, den, metric)
            if ratio is None:
                continue
            value = ratio["median"]
            ok = value <= bound if op == "<=" else value >= bound
            targets.append(
                {
                    "target": name,
                    "scenario": key,
                    "loop": loop,
                    "value": value,
                    "min": ratio["min"],
                    "max": ratio["max"],
                    "bound": bound,
                    "op": op,
                    "pass": ok,
                }
            )
    cold = data.get("cold")
    if cold:
        imp = cold["import_ms"]
        ratio = imp["import msd_async"] / imp["import aiobotocore.session"]
        targets.append(
            {
                "target": "import msd_async <= 0.5x import aiobotocore.session",
                "scenario": "cold start",
                "loop": "-",
                "value": ratio,
                "min": None,
                "max": None,
                "bound": 0.5,
                "op": "<=",
                "pass": ratio <= 0.5,
            }
        )
        # Honest about laziness: the names a user needs, not just the package.
        ratio = (
            imp["from msd_async import Credentials, Session"] / imp["import aiobotocore.session"]
        )
        targets.append(
            {
                "target": "from msd_async import Credentials, Session <= 0.5x import "
                "aiobotocore.session",
                "scenario": "cold start",
                "loop": "-",
                "value": ratio,
                "min": None,
                "max": None,
                "bound": 0.5,
                "op": "<=",
                "pass": ratio <= 0.5,
            }
        )
        ratio = imp["msd --help"] / imp["import aiobotocore.session"]
        targets.append(
            {
                "target": "msd --help <= 0.25x import aiobotocore.session",
                "scenario": "cold start",
                "loop": "-",
                "value": ratio,
                "min": None,
                "max": None,
                "bound": 0.25,
                "op": "<=",
                "pass": ratio <= 0.25,
            }
        )
    return targets


def summarize_cold(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    def med(path: Iterable[str]) -> float:
        values = []
        for r in rounds:
            v: Any = r
            for p in path:
                v = v[p]
            values.append(v)
        return statistics.median(values)

    first = rounds[0]
    return {
        "first_request": {
            c: {
                k: med(["first_request", c, k])
                for k in ("import_ms", "first_request_ms", "total_ms")
            }
            for c in first["first_request"]
        },
        "import_ms": {k: med(["import_ms", k]) for k in first["import_ms"]},
        "process_ms": {k: med(["process_ms", k]) for k in first["process_ms"]},
        "repeats": len(rounds),
    }


# --- other benchmarks' results (the hook) -------------------------------------------------

#: Result files of the live publisher, bulk transfer, relay and web benchmarks.
EXTERNAL_PATTERNS = ("live*.json", "tree*.json", "relay*.json", "web*.json")


def external_results(dirs: list[Path], extra: list[str]) -> list[dict[str, Any]]:
    """Summaries of other benchmarks' result files that exist in ``dirs`` (and ``extra``):
    their own ``targets`` (``target``/``pass`` entries) and ``summary`` (a mapping), if they
    have them."""
    found_paths = {p.resolve() for d in dirs for pat in EXTERNAL_PATTERNS for p in d.glob(pat)}
    paths = sorted(found_paths) + [Path(p) for p in extra]
    found = []
    for path in paths:
        name = _shown_path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            found.append({"file": name, "error": str(exc)})
            continue
        if not isinstance(data, dict):
            data = {}
        targets = [
            {"target": str(t.get("target")), "pass": bool(t.get("pass"))}
            for t in data.get("targets", [])
            if isinstance(t, dict) and "target" in t
        ]
        summary = data.get("summary")
        found.append(
            {
                "file": name,
                "date": data.get("date"),
                "command": data.get("command"),
                "targets": targets,
                "summary": summary if isinstance(summary, dict) else {},
            }
        )
    return found


def _shown_path(path: Path) -> str:
    """``path`` relative to the repository when it is inside it, else as given."""
    try:
        return str(path.resolve().relative_to(HERE.parent))
    except ValueError:
        return str(path)


# --- rendering ----------------------------------------------------------------------------


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _summary_value(value: Any) -> str:
    """A summary entry in one line: numbers rounded, a mapping one level deep inlined."""
    if isinstance(value, bool) or not isinstance(value, (int, float, dict)):
        return str(value)
    if isinstance(value, dict):
        return ", ".join(f"{k} {_summary_value(v)}" for k, v in value.items())
    return _fmt(value)


def render_summary(data: dict[str, Any]) -> str:
    """The targets in one compact table (one row per target, a column per loop), for the
    README and docs/scoreboard.md."""
    rows: dict[str, dict[str, dict[str, Any]]] = {}
    for t in data["targets"]:
        rows.setdefault(t["target"], {})[t["loop"]] = t
    lines = [
        "| target | asyncio | uvloop | result |",
        "|---|---:|---:|---|",
    ]
    for name, by_loop in rows.items():
        if "-" in by_loop:  # cold start: measured once, on asyncio's loop
            cells = [f"{by_loop['-']['value']:.2f}x", "n/a"]
        else:
            cells = [
                f"{by_loop[loop]['value']:.2f}x" if loop in by_loop else "-"
                for loop in ("asyncio", "uvloop")
            ]
        ok = all(t["pass"] for t in by_loop.values())
        lines.append(f"| {name} | {cells[0]} | {cells[1]} | {'met' if ok else '**missed**'} |")
    return "\n".join(lines)


def render_md(data: dict[str, Any]) -> str:
    m = data["machine"]
    lines = [
        "# Scoreboard",
        "",
        f"Every scenario with every client in one run ({data['date']}, {data['duration_s']:.0f}"
        f" s), against `benchmarks/_sink.py` in its own process; each run a fresh client "
        f"process; median of {data['repeats']} interleaved repeats. Ratios are medians of the "
        "ratios paired within each repeat, [min-max] over repeats.",
        "",
        f"Reproduce: `{data['command']}`.",
        "",
        "## Targets",
        "",
        "| target | scenario | loop | msd_async | bound | result |",
        "|---|---|---|---:|---:|---|",
    ]
    for t in data["targets"]:
        spread = f" [{t['min']:.2f}-{t['max']:.2f}]" if t["min"] is not None else ""
        lines.append(
            f"| {t['target']} | {t['scenario']} | {t['loop']} | {t['value']:.2f}x{spread} | "
            f"{t['op']} {t['bound']}x | {'PASS' if t['pass'] else '**MISS**'} |"
        )
    for note in data.get("notes", []):
        lines += ["", note]
    for s in SCENARIOS:
        table = data["table"].get(s.key)
        if not table:
            continue
        per = "page" if s.case == "list" else "request"
        lines += [
            "",
            f"## {s.title}",
            "",
            f"![{s.key}](scoreboard{data['suffix']}/{s.key}.png)",
            "",
            f"| client | loop | {s.unit}s/s | p50 ms | p99 ms | CPU µs/{per} | "
            f"CPU vs raw aiohttp | aiobotocore CPU / this | peak RSS MB (over base) |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for loop, row in table.items():
            runs = data["runs"][s.key][loop]
            for client in CLIENTS:
                if client not in row:
                    continue
                r = row[client]
                cpu = r["cpu_us"] / (LIST_PAGES if s.case == "list" else 1)
                vs_raw = paired_ratio(runs, client, "aiohttp", "cpu_us")
                vs_boto = paired_ratio(runs, "aiobotocore", client, "cpu_us")
                label = LABELS[client]
                if (client, s.case) in FEEDS:
                    label += f" ({FEEDS[(client, s.case)]})"
                raw = f"{vs_raw['median']:.2f}x" if vs_raw else "-"
                boto = f"{vs_boto['median']:.2f}x" if vs_boto else "-"
                lines.append(
                    f"| {label} | {'threads' if client == 'boto3' else loop} | "
                    f"{_fmt(r['requests_per_s'])} | {_fmt(r['p50_ms'])} | {_fmt(r['p99_ms'])} | "
                    f"{_fmt(cpu)} | {raw} | {boto} | "
                    f"{r['peak_rss_mb']:.0f} ({r['peak_rss_over_base_mb']:.1f}) |"
                )
    cold = data.get("cold")
    if cold:
        lines += [
            "",
            "## Cold start",
            "",
            f"![cold start](scoreboard{data['suffix']}/cold-start.png)",
            "",
            "Each in a fresh process, asyncio loop; median of "
            f"{cold['repeats']} rounds. Import = the import a user writes; first request = "
            "from there to the first DescribeObject's response (client creation, event loop, "
            "connection, signing, parsing).",
            "",
            "| client | import | ms | first request ms | total ms |",
            "|---|---|---:|---:|---:|",
        ]
        for client, r in cold["first_request"].items():
            lines.append(
                f"| {LABELS[client]} | `{COLD_IMPORTS[client]}` | {r['import_ms']:.0f} | "
                f"{r['first_request_ms']:.0f} | {r['total_ms']:.0f} |"
            )
        lines += ["", "| measured | ms |", "|---|---:|"]
        for label, v in cold["import_ms"].items():
            lines.append(f"| `{label}` (in-process) | {v:.1f} |")
        for label, v in cold["process_ms"].items():
            lines.append(f"| `{label}` (whole process) | {v:.0f} |")
    if data.get("external"):
        lines += ["", "## Other benchmarks", ""]
        for ext in data["external"]:
            if "error" in ext:
                lines.append(f"- `{ext['file']}`: unreadable ({ext['error']})")
                continue
            head = f"- `{ext['file']}`"
            if ext.get("date"):
                head += f" ({ext['date']})"
            if ext.get("command"):
                head += f": `{ext['command']}`"
            lines.append(head)
            for t in ext["targets"]:
                lines.append(f"  - {t['target']}: {'PASS' if t['pass'] else 'MISS'}")
            for k, v in ext["summary"].items():
                lines.append(f"  - {k}: {_summary_value(v)}")
    lines += [
        "",
        "## Machine",
        "",
        f"Python {m['python']} ({m['implementation']}), {m['cpu']} ({m['cores']} CPUs), "
        f"{m['platform']}; aiohttp {m['aiohttp']}, aiobotocore {m['aiobotocore']}, botocore "
        f"{m['botocore']}, boto3 {m['boto3']}, uvloop {m.get('uvloop')}, msgspec "
        f"{m.get('msgspec')}, capo-mediastore-data {m.get('capo') or 'not installed'}. "
        f"Load average at start {', '.join(f'{x:.2f}' for x in m['loadavg_at_start'])}, at "
        f"end {', '.join(f'{x:.2f}' for x in data['loadavg_at_end'])}.",
        "",
    ]
    return "\n".join(lines)


def _chart_value(row: dict[str, Any], metric: str, s: Scenario) -> float:
    value: float = row[metric]
    return value / LIST_PAGES if metric == "cpu_us" and s.case == "list" else value


def render_charts(data: dict[str, Any], out_dir: Path) -> list[str]:
    """One PNG per scenario (requests/s and CPU per request by client and loop), and one
    for cold start. Needs matplotlib (the ``bench`` extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    colors = {"asyncio": "#4C72B0", "uvloop": "#DD8452"}
    for s in SCENARIOS:
        table = data["table"].get(s.key)
        if not table:
            continue
        clients = [c for c in CLIENTS if any(c in row for row in table.values())]
        loops = list(table)
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
        per = "page" if s.case == "list" else "request"
        for ax, metric, title in (
            (axes[0], "requests_per_s", f"{s.unit}s/s (higher is better)"),
            (axes[1], "cpu_us", f"client CPU µs per {per} (lower is better)"),
        ):
            width = 0.8 / len(loops)
            for j, loop in enumerate(loops):
                xs, ys = [], []
                for i, c in enumerate(clients):
                    # boto3 runs in threads, once: one bar, in the middle of its slot.
                    if c in table[loop] and c != "boto3":
                        xs.append(i + (j - (len(loops) - 1) / 2) * width)
                        ys.append(_chart_value(table[loop][c], metric, s))
                ax.bar(xs, ys, width, label=loop, color=colors[loop])
            if "boto3" in clients and "boto3" in table[loops[0]]:
                value = _chart_value(table[loops[0]]["boto3"], metric, s)
                ax.bar([clients.index("boto3")], [value], width, label="threads", color="#55A868")
            ax.set_xticks(
                range(len(clients)),
                [LABELS[c] for c in clients],
                rotation=20,
                ha="right",
                fontsize=8,
            )
            ax.set_title(title, fontsize=9)
            ax.grid(axis="y", alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.suptitle(s.title, fontsize=10)
        fig.tight_layout()
        path = out_dir / f"{s.key}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path.name)
    cold = data.get("cold")
    if cold:
        clients = list(cold["first_request"])
        fig, ax = plt.subplots(figsize=(8, 3.6))
        imp = [cold["first_request"][c]["import_ms"] for c in clients]
        first = [cold["first_request"][c]["first_request_ms"] for c in clients]
        ax.bar(range(len(clients)), imp, label="import", color="#4C72B0")
        ax.bar(range(len(clients)), first, bottom=imp, label="first request", color="#DD8452")
        ax.set_xticks(
            range(len(clients)), [LABELS[c] for c in clients], rotation=20, ha="right", fontsize=8
        )
        ax.set_ylabel("ms (lower is better)")
        ax.set_title("Cold start: import + first DescribeObject", fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        path = out_dir / "cold-start.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path.name)
    return written


# --- main ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 repeat, 1/4 requests")
    parser.add_argument("--repeats", type=int, help="repeats (default 5; --quick: 1)")
    parser.add_argument("--uvloop", choices=["both", "off", "only"], default="both")
    parser.add_argument("--clients", nargs="+", choices=CLIENTS, default=CLIENTS)
    parser.add_argument(
        "--scenarios",
        nargs="+",
        choices=[s.key for s in SCENARIOS] + ["cold"],
        default=[s.key for s in SCENARIOS] + ["cold"],
    )
    parser.add_argument("--scale", type=int, help="divide every scenario's requests by this")
    parser.add_argument("--include", nargs="*", default=[], help="other result JSON files")
    parser.add_argument("--out", type=Path, help="results folder (default benchmarks/results)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--no-charts", action="store_true")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--note", action="append", default=[], help="a note for the results")
    args = parser.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 5)
    scale = args.scale or (4 if args.quick else 1)
    loops = {"both": LOOPS, "off": ["asyncio"], "only": ["uvloop"]}[args.uvloop]
    clients = list(args.clients)
    notes = list(args.note)
    capo = capo_version()
    if "capo" in clients and capo is None:
        clients.remove("capo")
        notes.append(
            "capo-mediastore-data is not installed (`pip install -e '.[bench]'`): "
            "left out of this run."
        )
    scenarios = [s for s in SCENARIOS if s.key in args.scenarios]
    out_dir = args.out or RESULTS
    suffix = "-quick" if args.quick else ""

    info = machine()
    import msgspec
    import uvloop

    info.update(uvloop=uvloop.__version__, msgspec=msgspec.__version__, capo=capo)
    started = time.perf_counter()
    sink, endpoint = start_sink()
    runs: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = {}
    cold_rounds = []
    try:
        for rep in range(repeats):
            for s in scenarios:
                for loop in loops:
                    order = clients[rep % len(clients) :] + clients[: rep % len(clients)]
                    for client in order:
                        # boto3 runs in threads, not on an event loop: once per repeat.
                        if client == "boto3" and loop != loops[0]:
                            continue
                        r = run_scenario(s, client, loop, endpoint, scale)
                        r["repeat"] = rep
                        slot = "threads" if client == "boto3" else loop
                        runs.setdefault(s.key, {}).setdefault(slot, {}).setdefault(
                            client, []
                        ).append(r)
                        cpu_us = r["cpu_ms_per_request"] * 1e3
                        print(
                            f"[{rep + 1}/{repeats}] {s.key:<13} {slot:<8} {client:<12} "
                            f"{r['requests_per_s']:9.1f}/s  CPU {cpu_us:9.1f} µs  "
                            f"p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms",
                            flush=True,
                        )
            if "cold" in args.scenarios:
                order = clients[rep % len(clients) :] + clients[: rep % len(clients)]
                cold_rounds.append(cold_round(order, endpoint))
                print(
                    f"[{rep + 1}/{repeats}] cold start: {cold_rounds[-1]['import_ms']}", flush=True
                )
    finally:
        sink.terminate()
        sink.wait(10)
        if sink.stdout is not None:
            sink.stdout.close()

    # boto3 (threads) is a row of its own; show it under each loop's table for comparison.
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for key, by_loop in runs.items():
        threads = by_loop.pop("threads", {})
        for loop, by_client in by_loop.items():
            by_client.update(threads)
            table.setdefault(key, {})[loop] = {c: summarize(rs) for c, rs in by_client.items()}
    shown = [
        a
        for a in (argv if argv is not None else sys.argv[1:])
        if a not in ("--no-write", "--strict")
    ]
    data: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "duration_s": time.perf_counter() - started,
        "command": shlex.join(["python", "benchmarks/scoreboard.py", *shown]),
        "mode": "quick" if args.quick else "full",
        "repeats": repeats,
        "suffix": suffix,
        "machine": info,
        "loadavg_at_end": os.getloadavg(),
        "peer": "benchmarks/_sink.py (separate process)",
        "malloc": PINNED_MALLOC,
        "scenarios": {s.key: s.__dict__ for s in scenarios},
        "table": table,
        "runs": runs,
        "cold": summarize_cold(cold_rounds) if cold_rounds else None,
        "cold_rounds": cold_rounds,
        "external": external_results(sorted({RESULTS, out_dir}), args.include),
        "notes": notes,
    }
    data["targets"] = check_targets(data)
    md = render_md(data)
    print()
    print(md)
    print(render_summary(data))
    if not args.no_write:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / f"scoreboard{suffix}.json").write_text(json.dumps(data, indent=1) + "\n")
        (out_dir / f"scoreboard{suffix}.md").write_text(md)
        if not args.no_charts:
            chart_dir = out_dir / f"scoreboard{suffix}"
            if chart_dir.exists():
                shutil.rmtree(chart_dir)
            render_charts(data, chart_dir)
    missed = [t for t in data["targets"] if not t["pass"]]
    return 1 if (missed and args.strict) else 0


if __name__ == "__main__":
    sys.exit(main())
