"""Per-request client CPU on the live hot path: small segment PUTs and DescribeObject.

A live packager pushes a ~200 KB HLS/DASH segment every few seconds per rendition and checks
objects with DescribeObject; there the client's per-request overhead (building, signing,
sending, parsing), not throughput, is what costs. This measures client CPU per request for
msd_async, aiobotocore's ``mediastore-data`` client and raw aiohttp (the floor: no signing,
no parsing), against ``benchmarks/_sink.py`` in a separate process.

Method: one client process; for each round, each client runs N requests (at concurrency C)
and its process CPU time (``time.process_time``) and wall time are taken; clients alternate
round by round and the median round is reported. Malloc thresholds are not pinned here:
bodies are 200 KB, below glibc's mmap threshold.

Run: ``python benchmarks/bench_overhead.py [--requests N] [--rounds R] [--concurrency C]``.
Writes ``benchmarks/results/overhead.json`` and ``benchmarks/results/overhead.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from msd_async import Credentials, Session

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
REGION = "us-east-1"
AKID, SECRET = "AKIDLOCALMEDIASTORE", "local-mediastore-secret-key"
SEGMENT = os.urandom(200_000)
GOAL_RATIO = 2.0  # informational: not an issue target

One = Callable[[int], Awaitable[None]]


def start_sink() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "_sink.py"), "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("endpoint: "):
        proc.kill()
        raise SystemExit(f"the sink did not start: {line!r}")
    return proc, line.split(" ", 1)[1].strip()


async def timed(one: One, n: int, concurrency: int) -> tuple[float, float]:
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            await one(i)

    c0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.process_time() - c0) / n, (time.perf_counter() - t0) / n


async def run(args: argparse.Namespace, endpoint: str) -> dict[str, Any]:
    creds = Credentials(AKID, SECRET)
    config = AioConfig(max_pool_connections=max(10, args.concurrency))
    async with (
        Session(credentials=creds, region=REGION) as session,
        get_session().create_client(
            "mediastore-data",
            endpoint_url=endpoint,
            region_name=REGION,
            aws_access_key_id=AKID,
            aws_secret_access_key=SECRET,
            config=config,
        ) as boto,
        aiohttp.ClientSession() as raw,
    ):
        store = session.container(endpoint)

        async def msd_put(i: int) -> None:
            await store.put_object(
                f"live/720p/seg_{i:05d}.ts",
                SEGMENT,
                content_type="video/MP2T",
                cache_control="max-age=60",
            )

        async def msd_head(i: int) -> None:
            await store.describe_object(f"live/720p/seg_{i:05d}.ts")

        async def boto_put(i: int) -> None:
            await boto.put_object(
                Path=f"live/720p/seg_{i:05d}.ts",
                Body=SEGMENT,
                ContentType="video/MP2T",
                CacheControl="max-age=60",
            )

        async def boto_head(i: int) -> None:
            await boto.describe_object(Path=f"live/720p/seg_{i:05d}.ts")

        async def raw_put(i: int) -> None:
            async with raw.put(
                f"{endpoint}/live/720p/seg_{i:05d}.ts",
                data=SEGMENT,
                headers={"Content-Type": "video/MP2T", "Cache-Control": "max-age=60"},
            ) as resp:
                await resp.read()

        async def raw_head(i: int) -> None:
            async with raw.head(f"{endpoint}/live/720p/seg_{i:05d}.ts") as resp:
                await resp.read()

        ops: dict[str, dict[str, One]] = {
            "PutObject 200 KB": {
                "msd_async": msd_put,
                "aiobotocore": boto_put,
                "raw aiohttp": raw_put,
            },
            "DescribeObject": {
                "msd_async": msd_head,
                "aiobotocore": boto_head,
                "raw aiohttp": raw_head,
            },
        }
        samples: dict[str, dict[str, list[tuple[float, float]]]] = {
            op: {c: [] for c in clients} for op, clients in ops.items()
        }
        for op, clients in ops.items():
            for one in clients.values():  # warm-up: connections, lazy imports
                await timed(one, max(20, args.concurrency), args.concurrency)
            for r in range(args.rounds):
                names = list(clients)
                names = names[r % len(names) :] + names[: r % len(names)]
                for name in names:
                    samples[op][name].append(
                        await timed(clients[name], args.requests, args.concurrency)
                    )
    table: dict[str, dict[str, dict[str, float]]] = {}
    for op, by_client in samples.items():
        table[op] = {}
        for name, runs in by_client.items():
            table[op][name] = {
                "cpu_us_per_request": statistics.median(c for c, _ in runs) * 1e6,
                "wall_us_per_request": statistics.median(w for _, w in runs) * 1e6,
            }
    return table


def render(data: dict[str, Any]) -> str:
    m = data["machine"]
    lines = [
        "# Per-request overhead: small segment PUTs and DescribeObject",
        "",
        f"Client CPU (process time) and wall time per request against `benchmarks/_sink.py` "
        f"in a separate process, concurrency {data['concurrency']}; median of "
        f"{data['rounds']} alternating rounds of {data['requests']} requests. raw aiohttp is "
        "the floor (no signing, no response parsing).",
        "",
        "| operation | client | CPU µs/request | wall µs/request | aiobotocore CPU / this |",
        "|---|---|---:|---:|---:|",
    ]
    for op, row in data["table"].items():
        boto = row["aiobotocore"]["cpu_us_per_request"]
        for name, s in row.items():
            lines.append(
                f"| {op} | {name} | {s['cpu_us_per_request']:.0f} | "
                f"{s['wall_us_per_request']:.0f} | {boto / s['cpu_us_per_request']:.2f}x |"
            )
    lines += [
        "",
        f"Machine: Python {m['python']}, {m['cpu']} ({m['cores']} CPUs); aiohttp "
        f"{m['aiohttp']}. Load average at start: {m['loadavg']}. {data['date']}.",
        "",
        f"Reproduce: `{data['command']}`.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu
            )
    except OSError:
        pass
    sink, endpoint = start_sink()
    try:
        table = asyncio.run(run(args, endpoint))
    finally:
        sink.terminate()
        sink.wait(10)
    data = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python benchmarks/bench_overhead.py",
        "requests": args.requests,
        "rounds": args.rounds,
        "concurrency": args.concurrency,
        "machine": {
            "python": platform.python_version(),
            "cpu": cpu,
            "cores": os.cpu_count(),
            "aiohttp": aiohttp.__version__,
            "loadavg": ", ".join(f"{x:.2f}" for x in os.getloadavg()),
        },
        "table": table,
    }
    md = render(data)
    print(md)
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "overhead.json").write_text(json.dumps(data, indent=2) + "\n")
        (RESULTS / "overhead.md").write_text(md)


if __name__ == "__main__":
    main()
