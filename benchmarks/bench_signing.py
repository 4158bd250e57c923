"""Cost of one SigV4 signature: msd_async's SigV4Signer.sign vs botocore's SigV4Auth.add_auth.

Both sign the same request (a typical PutObject and GetObject), read the clock themselves and
produce the same Authorization header (checked before timing). Each side runs in the same
process: a warm-up, then several repeats of many iterations timed with perf_counter_ns; the
median repeat is reported in microseconds per signature.

Run: ``python benchmarks/bench_signing.py [--repeats N] [--seconds S]``. Writes
``benchmarks/results/signing.json`` and ``benchmarks/results/signing.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore
import botocore.auth
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from msd_async import Credentials
from msd_async.rules import encode_path
from msd_async.signing import (
    EMPTY_SHA256,
    UNSIGNED_PAYLOAD,
    SigV4Signer,
    amz_date,
    signing_host,
)

RESULTS = Path(__file__).parent / "results"
REGION = "us-east-1"
ENDPOINT = "https://abc123.data.mediastore.us-east-1.amazonaws.com"
GOAL_RATIO = 5.0
CREDS = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    headers: dict[str, str]
    payload_hash: str


CASES = [
    Case(
        "PutObject",
        "PUT",
        "/" + encode_path("live/720p/seg_00042.ts"),
        {
            "content-type": "video/MP2T",
            "cache-control": "max-age=31536000, immutable",
            "x-amz-upload-availability": "STANDARD",
            "x-amz-content-sha256": UNSIGNED_PAYLOAD,
        },
        UNSIGNED_PAYLOAD,
    ),
    Case("GetObject", "GET", "/" + encode_path("live/720p/seg_00042.ts"), {}, EMPTY_SHA256),
]


def ours(case: Case) -> Callable[[], object]:
    signer = SigV4Signer(REGION)
    sign = signer.sign
    host = signing_host(ENDPOINT)

    def run() -> object:
        return sign(
            CREDS,
            method=case.method,
            host=host,
            path=case.path,
            headers=case.headers,
            payload_hash=case.payload_hash,
        )

    return run


def theirs(case: Case) -> Callable[[], object]:
    auth = SigV4Auth(
        BotoCredentials(CREDS.access_key_id, CREDS.secret_access_key), "mediastore", REGION
    )
    request = AWSRequest(method=case.method, url=ENDPOINT + case.path, headers=case.headers)
    # What botocore's client puts in the context for an unsigned-payload operation.
    request.context["payload_signing_enabled"] = case.payload_hash != UNSIGNED_PAYLOAD
    add_auth = auth.add_auth

    # add_auth replaces Authorization and X-Amz-Date on a reused request, as on a retry.
    def run() -> object:
        add_auth(request)
        return request

    return run


def check_identical(case: Case) -> None:
    """Both sides must produce the same header, or the timing compares different work."""
    fixed = dt.datetime(2024, 5, 17, 12, 0, 0)
    original = botocore.auth.get_current_datetime
    botocore.auth.get_current_datetime = lambda: fixed
    try:
        request: Any = theirs(case)()
    finally:
        botocore.auth.get_current_datetime = original
    mine = SigV4Signer(REGION).sign(
        CREDS,
        method=case.method,
        host=signing_host(ENDPOINT),
        path=case.path,
        headers=case.headers,
        payload_hash=case.payload_hash,
        timestamp=amz_date(fixed),
    )
    if mine["Authorization"] != request.headers["Authorization"]:
        raise SystemExit(f"{case.name}: signatures differ; fix signing.py before timing it")


def measure(fn: Callable[[], object], repeats: int, seconds: float) -> float:
    """Median µs per call over ``repeats`` timed loops of about ``seconds`` each."""
    # Calibrate (this is also the warm-up): find n so one loop takes ~seconds.
    n = 1
    while True:
        start = time.perf_counter_ns()
        for _ in range(n):
            fn()
        elapsed = time.perf_counter_ns() - start
        if elapsed > seconds * 1e9 / 4:
            break
        n *= 2
    n = max(1, int(n * seconds * 1e9 / max(elapsed, 1)))
    samples = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter_ns() - start) / n / 1000)
    return statistics.median(samples)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.3, help="per timed loop")
    args = parser.parse_args()

    machine = {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "cpu": cpu_name(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "botocore": botocore.__version__,
    }
    rows = []
    for case in CASES:
        check_identical(case)
        ours_us = measure(ours(case), args.repeats, args.seconds)
        theirs_us = measure(theirs(case), args.repeats, args.seconds)
        rows.append(
            {
                "operation": case.name,
                "msd_async_us": round(ours_us, 3),
                "botocore_us": round(theirs_us, 3),
                "ratio": round(theirs_us / ours_us, 2),
            }
        )
    result = {
        "benchmark": "SigV4 signature per request (header auth, cached signing key)",
        "method": f"Median of {args.repeats} loops of ~{args.seconds}s, perf_counter_ns",
        "goal_ratio": GOAL_RATIO,
        "machine": machine,
        "results": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "signing.json").write_text(json.dumps(result, indent=2) + "\n")

    lines = [
        "# SigV4 signing cost",
        "",
        "`SigV4Signer.sign` (msd_async) vs `SigV4Auth.add_auth` on an `AWSRequest` (botocore),",
        "same request, same output; each reads the clock itself (msd_async formats the date",
        f"once per second). {result['method']}. Goal: at least {GOAL_RATIO:g}x faster.",
        "",
        "| Operation | msd_async µs/signature | botocore µs/signature | botocore / msd_async |",
        "|---|---:|---:|---:|",
        *(
            f"| {r['operation']} | {r['msd_async_us']:.2f} | {r['botocore_us']:.2f} "
            f"| {r['ratio']:.1f}x |"
            for r in rows
        ),
        "",
        f"Machine: Python {machine['python']} ({machine['implementation']}), "
        f"{machine['cpu']} ({machine['cpus']} CPUs), {machine['platform']}, "
        f"botocore {machine['botocore']}.",
        "",
        "Reproduce: `python benchmarks/bench_signing.py`.",
        "",
    ]
    (RESULTS / "signing.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
