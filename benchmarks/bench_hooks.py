"""CPU per request of each observability hook, against the same session without hooks.

The session's transport answers at once (bench_own_cost's stub), so what is timed is
msd_async's code for one DescribeObject (two events: start, response) with each hook set:

- no hooks (the baseline; no event is even built)
- a hook that does nothing (the cost of building and dispatching the events)
- ``msd_async.prometheus.metrics_hook`` (target: at most 5 us per request above the baseline)
- ``msd_async.otel.tracing_hook`` with the OpenTelemetry SDK's TracerProvider and a span
  processor that drops the spans (the cost of the span itself, not of an exporter)
- the commands' readiness hook (``msd_async.cli._observe.Readiness``)

and, per publication, ``publisher_hook`` fed the events of one acknowledged segment
(queued, sent, acknowledged). Rounds interleave the configurations; the figure is the best
of 9 rounds of 5,000 calls (process CPU time), the steadiest on a shared machine.

Run: ``python benchmarks/bench_hooks.py`` (needs the metrics and otel extras and
opentelemetry-sdk: ``pip install -e '.[dev]'``); writes ``results/hooks.md``.
"""

from __future__ import annotations

import asyncio
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from prometheus_client import CollectorRegistry

from bench_own_cost import _InstantTransport
from msd_async import Credentials, RequestEvent, Session
from msd_async.cli._observe import Readiness
from msd_async.live import ObjectKind, PublishEvent
from msd_async.otel import tracing_hook
from msd_async.prometheus import metrics_hook, publisher_hook

ROUNDS, CALLS = 9, 5000
TARGET_US = 5.0
RESULTS = Path(__file__).parent / "results" / "hooks.md"


class _Drop(SpanProcessor):
    """Receives every ended span and keeps none."""


def _nothing(event: RequestEvent) -> None:
    pass


async def _timed(op: Callable[[int], Awaitable[object]]) -> float:
    t0 = time.process_time()
    for i in range(CALLS):
        await op(i)
    return (time.process_time() - t0) / CALLS * 1e6


async def main() -> None:
    provider = TracerProvider()
    provider.add_span_processor(_Drop())
    configs: dict[str, list[Any]] = {
        "no hooks (baseline)": [],
        "a hook that does nothing": [_nothing],
        "metrics_hook": [metrics_hook(CollectorRegistry())],
        "tracing_hook (SDK, spans dropped)": [tracing_hook(provider)],
        "readiness (the commands' /readyz)": [Readiness("http://127.0.0.1:9")],
        "metrics_hook + readiness (msd relay --metrics)": [
            metrics_hook(CollectorRegistry()), Readiness("http://127.0.0.1:9")
        ],
    }
    best = dict.fromkeys(configs, float("inf"))
    async with Session(credentials=Credentials("AKID", "SECRET"), region="us-east-1") as s:
        s._context._transport = _InstantTransport()  # type: ignore[attr-defined]
        store = s.container("http://127.0.0.1:9")

        async def describe(i: int) -> object:
            return await store.describe_object(f"live/720p/seg_{i:05d}.ts")

        for hooks in configs.values():  # warm-up: first labels, first spans
            s.event_hooks = hooks
            await _timed(describe)
        for _ in range(ROUNDS):
            for name, hooks in configs.items():
                s.event_hooks = hooks
                best[name] = min(best[name], await _timed(describe))

    on_event = publisher_hook(CollectorRegistry())
    publication_us = float("inf")
    for _ in range(ROUNDS):
        t0 = time.process_time()
        for i in range(CALLS):
            path = f"live/720p/seg_{i:05d}.m4s"
            now = time.monotonic()
            on_event(PublishEvent("queued", path, ObjectKind.MEDIA, "http://o", now))
            on_event(PublishEvent("sent", path, ObjectKind.MEDIA, "http://o", now, attempt=1))
            on_event(PublishEvent("acknowledged", path, ObjectKind.MEDIA, "http://o", now,
                                  attempt=1, latency=0.012, size=200_000))
        publication_us = min(publication_us, (time.process_time() - t0) / CALLS * 1e6)
    # The same loop without the hook: what building the three events costs.
    bare_us = float("inf")
    for _ in range(ROUNDS):
        t0 = time.process_time()
        for i in range(CALLS):
            path = f"live/720p/seg_{i:05d}.m4s"
            now = time.monotonic()
            PublishEvent("queued", path, ObjectKind.MEDIA, "http://o", now)
            PublishEvent("sent", path, ObjectKind.MEDIA, "http://o", now, attempt=1)
            PublishEvent("acknowledged", path, ObjectKind.MEDIA, "http://o", now,
                         attempt=1, latency=0.012, size=200_000)
        bare_us = min(bare_us, (time.process_time() - t0) / CALLS * 1e6)

    base = best["no hooks (baseline)"]
    rows = []
    for name, us in best.items():
        added = us - base
        rows.append(f"| {name} | {us:.1f} | {added:+.1f} |")
    metrics_added = best["metrics_hook"] - base
    verdict = "met" if metrics_added <= TARGET_US else "MISSED"
    text = "\n".join([
        "# Observability hooks: CPU per request",
        "",
        "`python benchmarks/bench_hooks.py` (best of "
        f"{ROUNDS} interleaved rounds of {CALLS:,} DescribeObject calls against a stub "
        "transport that answers at once; process CPU time). "
        f"Python {platform.python_version()}, {platform.machine()}, "
        f"{time.strftime('%Y-%m-%d')}.",
        "",
        "| session event hooks | us per request | above no hooks |",
        "|---|---:|---:|",
        *rows,
        "",
        f"**metrics_hook: {metrics_added:+.1f} us per request above a session without hooks "
        f"(target <= {TARGET_US:g} us: {verdict}).** The figure includes building the two "
        "events (start, response) that any hook costs (the do-nothing hook's row).",
        "",
        f"publisher_hook: {publication_us - bare_us:.1f} us per acknowledged publication "
        f"(its three events, queued, sent and acknowledged; building them costs "
        f"{bare_us:.1f} us more, paid by the publisher whether or not a hook is set).",
        "",
        "The tracing row is the span's own cost with the SDK (ids, attributes, timing, the "
        "processor call); an exporter adds its batching and I/O on top.",
        "",
    ])
    RESULTS.write_text(text)
    print(text)
    sys.exit(0)


if __name__ == "__main__":
    asyncio.run(main())
