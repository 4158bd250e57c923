"""A/B two checkouts of msd_async on one scoreboard scenario: client CPU per request.

Each round runs the scenario's ``_worker.py`` process once with ``A``'s source tree first on
``PYTHONPATH`` and once with ``B``'s (the order alternating between rounds), against one
``_sink.py``, so both see the same load; reported are the medians of CPU µs per request and
the median of the per-round ratios B/A with its spread. ``raw aiohttp`` can be added as a
third run per round (``--aiohttp``), for the ratio the scoreboard checks.

Run: ``python benchmarks/ab.py put-64k@32 --a /tmp/before/src --b src [--rounds 9]
[--loop uvloop] [--aiohttp] [--scale 1]``. Prints only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import start_sink  # noqa: E402
from scoreboard import SCENARIOS, run_json, worker_command, worker_env  # noqa: E402


def main() -> None:
    scenarios = {s.key: s for s in SCENARIOS}
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=list(scenarios))
    parser.add_argument("--a", required=True, type=Path, help="source tree A (…/src)")
    parser.add_argument("--b", required=True, type=Path, help="source tree B (…/src)")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--aiohttp", action="store_true", help="also run raw aiohttp")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the requests")
    args = parser.parse_args()
    s = scenarios[args.scenario]
    n = max(int(s.requests * args.scale), s.concurrency)
    load0 = os.getloadavg()[0]
    sink, endpoint = start_sink()
    runs: dict[str, list[float]] = {"A": [], "B": [], "aiohttp": []}
    try:
        for r in range(args.rounds):
            order = [("A", "msd", args.a), ("B", "msd", args.b)]
            if args.aiohttp:
                order.append(("aiohttp", "aiohttp", args.a))
            if r % 2:
                order.reverse()
            for label, client, src in order:
                cmd = worker_command(s, client, args.loop, endpoint, n)
                env = worker_env()
                env["PYTHONPATH"] = str(src.resolve())
                out = run_json(cmd, env)
                runs[label].append(out["cpu_ms_per_request"] * 1e3)
    finally:
        sink.terminate()
        sink.wait(10)
    load1 = os.getloadavg()[0]
    print(
        f"{args.scenario} on {args.loop}, {args.rounds} rounds of {n} requests "
        f"(load {load0:.2f} -> {load1:.2f}); CPU µs per request, median [min-max]"
    )
    for label in ("A", "B", "aiohttp"):
        if runs[label]:
            v = runs[label]
            print(f"  {label:8s} {statistics.median(v):7.1f} [{min(v):.1f}-{max(v):.1f}]")
    ratios = [b / a for a, b in zip(runs["A"], runs["B"], strict=True)]
    print(f"  B/A      {statistics.median(ratios):.3f} [{min(ratios):.3f}-{max(ratios):.3f}]")
    if runs["aiohttp"]:
        for label in ("A", "B"):
            r = [x / y for x, y in zip(runs[label], runs["aiohttp"], strict=True)]
            print(f"  {label}/aiohttp {statistics.median(r):.3f} [{min(r):.3f}-{max(r):.3f}]")


if __name__ == "__main__":
    main()
