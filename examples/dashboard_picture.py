"""Render the panels of examples/grafana-live.json from a real run, without Grafana.

Runs ``msd demo --metrics`` (a synthetic LL-HLS stream with injected faults through the
embedded local server), scrapes its ``/metrics`` every second as Prometheus would, computes
each panel's query (rates over a 6 s window, ``histogram_quantile`` as Prometheus
interpolates it) and draws them with matplotlib (the ``bench`` extra) into
``docs/observability-dashboard.png``.

Run: ``python examples/dashboard_picture.py [--duration 40] [--out PATH]``.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

Series = dict[tuple[tuple[str, str], ...], float]
#: Scrapes (seconds) per rate: a multiple of the 2 s segments, or the rates saw-tooth.
WINDOW = 6


def scrape(url: str) -> dict[str, Series]:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    out: dict[str, Series] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name][tuple(sorted(s.labels.items()))] = s.value
    return out


def rate(scrapes: list[dict[str, Series]], name: str, by: tuple[str, ...], i: int,
         where: dict[str, tuple[str, ...]] | None = None) -> dict[tuple[str, ...], float]:
    """sum by (BY) (rate(NAME[WINDOW s])) at scrape ``i``."""
    if i < WINDOW:
        return {}
    out: dict[tuple[str, ...], float] = defaultdict(float)
    now, then = scrapes[i].get(name, {}), scrapes[i - WINDOW].get(name, {})
    for labels, value in now.items():
        d = dict(labels)
        if where and any(d.get(k) not in v for k, v in where.items()):
            continue
        out[tuple(d.get(k, "") for k in by)] += (value - then.get(labels, 0.0)) / WINDOW
    return out


def quantile(q: float, scrapes: list[dict[str, Series]], name: str, by: str, i: int
             ) -> dict[str, float]:
    """histogram_quantile(Q, sum by (le, BY) (rate(NAME_bucket[WINDOW s])))."""
    buckets = rate(scrapes, f"{name}_bucket", (by, "le"), i)
    groups: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for (key, le), value in buckets.items():
        groups[key].append((float(le), value))
    out = {}
    for key, points in groups.items():
        points.sort()
        total = points[-1][1]
        if total <= 0:
            continue
        rank, lower, below = q * total, 0.0, 0.0
        for bound, cumulative in points:
            if cumulative >= rank:
                if math.isinf(bound):
                    out[key] = lower
                else:
                    share = (rank - below) / (cumulative - below) if cumulative > below else 1
                    out[key] = lower + (bound - lower) * share
                break
            lower, below = bound, cumulative
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=40.0)
    parser.add_argument(
        "--out", default=str(Path(__file__).parents[1] / "docs" / "observability-dashboard.png")
    )
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # The demo's JSON lines go to a file: a pipe left unread would fill and stall it.
    with tempfile.NamedTemporaryFile("w") as log:
        demo = subprocess.Popen(
            [sys.executable, "-m", "msd_async.cli", "demo", "--duration", str(args.duration),
             "--renditions", "3", "--fault-rate", "0.05", "--seed", "7", "--no-live-view",
             "--metrics", "127.0.0.1:0", "--log-format", "json"],
            stdout=log, text=True,
        )
        url = ""
        while not url:
            if demo.poll() is not None:
                raise SystemExit("msd demo exited before printing its metrics address")
            time.sleep(0.1)
            # Read through a file of our own: the child's shares its offset with `log`.
            with open(log.name) as lines:
                url = next((x.split()[1] for x in lines if x.startswith("metrics: ")), "")
        scrapes: list[dict[str, Series]] = []
        started = time.monotonic()
        while demo.poll() is None:
            try:
                scrapes.append(scrape(url))
            except OSError:
                break
            time.sleep(max(0.0, len(scrapes) - (time.monotonic() - started)))
        demo.wait()
        ts = list(range(len(scrapes)))

    fig, axes = plt.subplots(4, 2, figsize=(14, 14), constrained_layout=True)
    fig.suptitle(
        f"msd live publishing: msd demo, 3 LL-HLS renditions, 5% injected faults, "
        f"{len(scrapes)} s scraped every 1 s (the panels of examples/grafana-live.json)",
        fontsize=12,
    )

    def draw(ax: object, title: str, unit: str, series: dict[str, list[float]]) -> None:
        colors = plt.get_cmap("tab20").colors  # type: ignore[attr-defined]
        for n, (label, values) in enumerate(sorted(series.items())):
            ax.plot(  # type: ignore[attr-defined]
                ts[: len(values)], values, label=label, linewidth=1.2,
                color=colors[n % len(colors)],
            )
        ax.set_ylim(bottom=0)  # type: ignore[attr-defined]
        ax.set_title(title, fontsize=10)  # type: ignore[attr-defined]
        ax.set_ylabel(unit)  # type: ignore[attr-defined]
        ax.set_xlabel("seconds")  # type: ignore[attr-defined]
        ax.grid(alpha=0.3)  # type: ignore[attr-defined]
        if series:
            ax.legend(fontsize=7, ncol=2)  # type: ignore[attr-defined]

    def collect(fn: object) -> dict[str, list[float]]:
        out: dict[str, list[float]] = defaultdict(lambda: [math.nan] * len(scrapes))
        for i in ts:
            for key, value in fn(i).items():  # type: ignore[operator]
                out[key][i] = value
        return dict(out)

    draw(axes[0][0], "Publications / s by kind and outcome", "objects/s", collect(
        lambda i: {f"{k} {o}": v for (k, o), v in
                   rate(scrapes, "msd_publications_total", ("kind", "outcome"), i).items()}
    ))
    draw(axes[0][1], "Publish latency p50 / p99 by kind (body complete to ack)", "seconds",
         collect(lambda i: {
             **{f"{k} p50": v for k, v in quantile(
                 0.5, scrapes, "msd_publish_latency_seconds", "kind", i).items()},
             **{f"{k} p99": v for k, v in quantile(
                 0.99, scrapes, "msd_publish_latency_seconds", "kind", i).items()},
         }))
    draw(axes[1][0], "Publish queue depth (objects not started)", "objects", collect(
        lambda i: {"waiting": scrapes[i].get("msd_publish_queue_depth", {}).get((), 0.0)}
    ))
    draw(axes[1][1], "Dropped, failed, refused and gaps (running total)", "objects", collect(
        lambda i: {
            **{f"{dict(labels)['kind']} {dict(labels)['outcome']}": value
               for labels, value in scrapes[i].get("msd_publications_total", {}).items()
               if dict(labels)["outcome"] in ("dropped", "failed", "refused")},
            "gaps": scrapes[i].get("msd_gaps_total", {}).get((), 0.0),
        }
    ))
    draw(axes[2][0], "Requests / s by operation and status", "requests/s", collect(
        lambda i: {f"{op} {st}": v for (op, st), v in
                   rate(scrapes, "msd_requests_total", ("operation", "status"), i).items()}
    ))
    draw(axes[2][1], "Request duration p99 by operation", "seconds", collect(
        lambda i: {f"{k} p99": v for k, v in quantile(
            0.99, scrapes, "msd_request_duration_seconds", "operation", i).items()}
    ))
    draw(axes[3][0], "Retries / s by operation", "retries/s", collect(
        lambda i: {op: v for (op,), v in
                   rate(scrapes, "msd_retries_total", ("operation",), i).items()}
    ))
    draw(axes[3][1], "Upload throughput", "Mbit/s", collect(
        lambda i: {"sent": sum(rate(scrapes, "msd_bytes_sent_total", (), i).values()) * 8 / 1e6}
        if i >= WINDOW else {}
    ))
    fig.savefig(args.out, dpi=80)
    print(f"wrote {args.out} from {len(scrapes)} scrapes")


if __name__ == "__main__":
    main()
