"""The statistics keep constant memory (issue 16 item 20) and stay accurate."""

from __future__ import annotations

import itertools
import math
import random
import re
import sys

import anyio
import pytest

from msd_async import ContainerClient
from msd_async.live import LivePublisher
from msd_async.live.stats import Histogram
from msd_async.testing import LocalMediaStore


def _exact(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def test_percentiles_are_within_five_percent_of_the_exact_ones() -> None:
    rng = random.Random(16)
    values = [rng.lognormvariate(-4, 1.5) for _ in range(20_000)]
    values += [-v for v in values[:3_000]]  # lateness: mostly early, some late
    histogram = Histogram()
    for value in values:
        histogram.add(value)
    for q in (0.01, 0.1, 0.5, 0.9, 0.99, 0.999):
        exact = _exact(values, q)
        assert math.isclose(histogram.percentile(q) or 0.0, exact, rel_tol=0.05), q
    assert histogram.max == max(values) and histogram.min == min(values)
    assert histogram.count == len(values)
    assert Histogram().percentile(0.5) is None


def test_memory_is_fixed_however_many_values() -> None:
    histogram = Histogram()
    empty = sys.getsizeof(histogram._counts)
    for n in range(100_000):
        histogram.add(n / 1000)
    histogram.add(float("nan"))  # ignored, not a crash
    assert sys.getsizeof(histogram._counts) == empty < 8_000
    bounds = histogram.buckets()
    assert bounds[-1] == (math.inf, 100_000)
    assert all(a[1] <= b[1] for a, b in itertools.pairwise(bounds))


@pytest.mark.anyio
async def test_stats_have_a_short_one_line_repr(store: ContainerClient) -> None:
    """Issue 16 item 19: ``print(publisher.stats())`` is one line that says how it goes,
    not the dataclass dump of every kind, histogram and request counter."""
    async with LivePublisher(store, prefix="repr") as publisher:
        await (await publisher.publish("a/seg_0.m4s", b"x" * 100, duration=2.0)).wait()
        await (await publisher.publish("a/seg_1.m4s", b"y" * 100, duration=2.0)).wait()
        text = repr(publisher.stats())
    assert "\n" not in text and len(text) <= 160, text
    assert re.fullmatch(
        r"<PublisherStats \d+\.\d s: 2 published, 2 acknowledged, 0 dropped, 0 failed, "
        r"0 retries, 0 pending, 1 destination\(s\)>", text,
    ), text


def test_merged_histograms_answer_like_one_fed_everything() -> None:
    rng = random.Random(20)
    parts = [[rng.lognormvariate(-3, 1) for _ in range(500)] for _ in range(3)]
    whole, merged = Histogram(), Histogram()
    for values in parts:
        one = Histogram()
        for value in values:
            one.add(value)
            whole.add(value)
        merged.merge(one)
    merged.merge(Histogram())  # an empty one changes nothing
    assert merged.count == whole.count == 1500
    assert (merged.min, merged.max) == (whole.min, whole.max)
    assert merged.total == pytest.approx(whole.total)
    for q in (0.5, 0.9, 0.99):
        assert merged.percentile(q) == whole.percentile(q)


@pytest.mark.anyio
async def test_an_upload_given_up_in_flight_counts_as_a_cancelled_attempt(
    store: ContainerClient, mediastore_server: LocalMediaStore
) -> None:
    """Closing gives up a PUT the origin holds: the attempt was started and never ended
    with an answer or an error; it is counted as cancelled, so the counters add up."""
    mediastore_server.faults.inject("delay", method="PUT", path="c/seg_1.m4s", delay=30)
    async with LivePublisher(store, close_timeout=0.3) as publisher:
        await publisher.publish("c/seg_1.m4s", b"x" * 1000, duration=60.0)
        await anyio.sleep(0.3)  # the PUT is with the origin now
    put = publisher.stats().destinations[0].requests["PutObject"]
    assert put.cancelled == 1
    assert put.attempts == put.responses + put.errors + put.cancelled
