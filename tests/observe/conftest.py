"""Reading a Prometheus exposition back, with prometheus_client's own parser."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Exposition:
    @staticmethod
    def samples(text: str) -> Samples:
        """Every sample: ``(name, sorted label pairs) -> value``."""
        out: Samples = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out[s.name, tuple(sorted(s.labels.items()))] = s.value
        return out

    @staticmethod
    def check_histograms(text: str) -> int:
        """Every histogram is well formed (buckets from <= 2.5 ms to >= 20 s, cumulative,
        +Inf equal to _count, _sum present); returns how many label sets were checked."""
        checked = 0
        for family in text_string_to_metric_families(text):
            if family.type != "histogram":
                continue
            series: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
            for s in family.samples:
                labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
                entry = series.setdefault(labels, {"buckets": []})
                if s.name.endswith("_bucket"):
                    entry["buckets"].append((float(s.labels["le"]), s.value))
                elif s.name.endswith("_count"):
                    entry["count"] = s.value
                elif s.name.endswith("_sum"):
                    entry["sum"] = s.value
            for entry in series.values():
                buckets = sorted(entry["buckets"])
                assert buckets[0][0] <= 0.0025 and buckets[-2][0] >= 20
                values = [v for _, v in buckets]
                assert values == sorted(values)
                assert buckets[-1][0] == float("inf") and values[-1] == entry["count"]
                assert entry["sum"] >= 0
                checked += 1
        return checked


@pytest.fixture
def exposition() -> type[Exposition]:
    return Exposition
