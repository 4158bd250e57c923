"""Prometheus metrics of a :class:`~msd_async.Session` and of a live publisher.

Needs the ``metrics`` extra (``pip install 'msd-async[metrics]'``, which brings
`prometheus-client <https://prometheus.github.io/client_python/>`_); nothing else in
``msd_async`` imports this module. ::

    from msd_async.prometheus import metrics_hook, publisher_hook

    session = msd_async.Session(event_hooks=[metrics_hook()])
    publisher = LivePublisher(store, on_event=publisher_hook())

Both register their metrics in ``registry`` (default: prometheus-client's global
``REGISTRY``, which ``prometheus_client.start_http_server`` serves) under ``namespace``
(``msd``: ``msd_requests_total``...). Calling them again with the same registry and
namespace returns a hook sharing the same metrics, so several sessions or publishers add up.
Labels take bounded values only (operation names, HTTP statuses, object kinds): never an
object path, a key or a signature. Every metric is listed in docs/observability.md.
"""

from __future__ import annotations

import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Final

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, Metric
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from .errors import (
    ClientValidationError,
    MediaStoreError,
    SessionClosedError,
)

if TYPE_CHECKING:
    from .events import RequestEvent
    from .live.stats import PublishEvent

__all__ = ["DURATION_BUCKETS", "kind_label", "metrics_hook", "publisher_hook", "server_hook"]

#: Seconds: from a loopback round trip (2.5 ms) to a stalled upload (20 s and beyond).
DURATION_BUCKETS: Final = (
    0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0,
)

# By ObjectKind value (a StrEnum, so its members find these keys): importing the live
# package here would load the publisher for a hook that only counts requests.
#: The status key of an attempt its caller cancelled (no HTTP status is negative).
CANCELLED: Final = -1
#: The status key of an attempt that failed before its request went out (``unsent``).
UNSENT: Final = -2
#: The status key of an attempt the client cut mid-body (``aborted``): its body's source
#: raised, or the body passed the object limit or was not bytes.
ABORTED: Final = -3
_KIND_LABELS: Final = {
    "init": "init",
    "media": "segment",
    "part": "part",
    "media-playlist": "playlist",
    "multivariant-playlist": "playlist",
    "mpd": "mpd",
}
#: Publication outcomes (``outcome`` label) by the publisher's terminal event kind.
_OUTCOMES: Final = {
    "acknowledged": "acknowledged",
    "dropped": "dropped",
    "superseded": "superseded",
    "failed": "failed",
}


def kind_label(kind: str) -> str:
    """The ``kind`` label of an :class:`~msd_async.live.ObjectKind`: init, segment, part,
    playlist, mpd or other."""
    return _KIND_LABELS.get(kind, "other")


class _Metrics:
    """The collectors of one (registry, namespace), created once."""

    def __init__(self, registry: CollectorRegistry, namespace: str) -> None:
        self.registry = registry
        self.namespace = namespace
        self.requests: _RequestCollector | None = None
        self.publications: Counter | None = None
        self.server_requests: Counter | None = None
        self.server_duration: Histogram | None = None

    def client(self) -> _RequestCollector:
        if self.requests is None:
            self.requests = _RequestCollector(self.namespace)
            self.registry.register(self.requests)
        return self.requests

    def live(self) -> None:
        if self.publications is not None:
            return
        ns, registry = self.namespace, self.registry
        self.publications = Counter(
            "publications", "Objects the live publisher settled, by kind and outcome",
            ["kind", "outcome"], namespace=ns, registry=registry,
        )
        self.publish_latency = Histogram(
            "publish_latency_seconds", "Seconds from an object's body being complete "
            "(publish() for bytes and files, the last chunk of a streamed body) to the "
            "origin's acknowledgement, by kind",
            ["kind"], namespace=ns, registry=registry, buckets=DURATION_BUCKETS,
        )
        self.queue_depth = Gauge(
            "publish_queue_depth", "Objects handed to the publisher whose upload has not "
            "started yet, all destinations", namespace=ns, registry=registry,
        )
        self.gaps = Counter(
            "gaps", "Dropped media that a stored manifest marked as a gap", namespace=ns,
            registry=registry,
        )


_BY_REGISTRY: weakref.WeakKeyDictionary[CollectorRegistry, dict[str, _Metrics]] = (
    weakref.WeakKeyDictionary()
)


def _metrics(registry: CollectorRegistry | None, namespace: str) -> _Metrics:
    registry = REGISTRY if registry is None else registry
    by_namespace = _BY_REGISTRY.setdefault(registry, {})
    metrics = by_namespace.get(namespace)
    if metrics is None:
        metrics = by_namespace[namespace] = _Metrics(registry, namespace)
    return metrics


class _RequestCollector(Collector):
    """The session metrics, kept as plain counts and turned into metric families only when
    scraped: prometheus-client's Counter and Histogram take a lock per update, and a
    request updates four of them, which alone was half the hook's budget of 5 us
    (benchmarks/bench_hooks.py). Updated on the event loop; read by whatever thread serves
    the scrape, through atomic copies of the dicts."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        #: (operation, HTTP status or None) -> attempts
        self.requests: dict[tuple[str, int | None], int] = {}
        #: operation -> [count per bucket..., count above the last bound, sum of seconds]
        self.durations: dict[str, list[float]] = {}
        self.retries: dict[str, int] = {}
        #: [bytes sent, bytes received]
        self.bytes = [0, 0]

    def collect(self) -> Iterator[Metric]:
        ns = self.namespace
        requests = CounterMetricFamily(
            f"{ns}_requests", "HTTP exchanges with MediaStore, one per attempt, by operation "
            "and HTTP status ('error' when no answer came, 'cancelled' when the caller "
            "stopped waiting for it, 'unsent' when it failed before being sent, 'aborted' "
            "when the client cut its own request body)",
            labels=["operation", "status"],
        )
        for (operation, status), count in sorted(
            dict(self.requests).items(), key=lambda item: (item[0][0], item[0][1] or 0)
        ):
            label = (
                "error" if status is None else "cancelled" if status == CANCELLED
                else "unsent" if status == UNSENT else "aborted" if status == ABORTED
                else str(status)
            )
            requests.add_metric([operation, label], count)
        yield requests
        duration = HistogramMetricFamily(
            f"{ns}_request_duration_seconds", "Seconds of one attempt: to the response "
            "headers (PutObject: after its body was sent), or to the failure",
            labels=["operation"],
        )
        for operation, kept in sorted(dict(self.durations).items()):
            counts = list(kept)
            buckets: list[tuple[str, float]] = []
            cumulative = 0.0
            for bound, in_bucket in zip((*_BOUND_TEXTS, "+Inf"), counts[:-1], strict=True):
                cumulative += in_bucket
                buckets.append((bound, cumulative))
            duration.add_metric([operation], buckets, counts[-1])
        yield duration
        retries = CounterMetricFamily(
            f"{ns}_retries", "Attempts retried after a retryable failure", labels=["operation"]
        )
        for operation, count in sorted(dict(self.retries).items()):
            retries.add_metric([operation], count)
        yield retries
        sent, received = self.bytes
        yield CounterMetricFamily(
            f"{ns}_bytes_sent", "Request body bytes written to MediaStore", value=sent
        )
        yield CounterMetricFamily(
            f"{ns}_bytes_received", "Response body bytes MediaStore declared "
            "(Content-Length)", value=received,
        )


#: The ``le`` labels, written as prometheus-client writes them ("0.0025", "1.0", "20.0").
_BOUND_TEXTS: Final = tuple(repr(float(b)) for b in DURATION_BUCKETS)


def metrics_hook(
    registry: CollectorRegistry | None = None, namespace: str = "msd"
) -> Callable[[RequestEvent], None]:
    """An event hook for ``Session(event_hooks=[...])`` that counts every attempt:
    ``msd_requests_total{operation,status}``, ``msd_request_duration_seconds{operation}``,
    ``msd_retries_total{operation}``, ``msd_bytes_sent_total``, ``msd_bytes_received_total``.
    """
    collector = _metrics(registry, namespace).client()
    requests, durations, retries = collector.requests, collector.durations, collector.retries
    totals = collector.bytes
    slots = len(DURATION_BUCKETS) + 2  # the buckets, +Inf, the sum

    def hook(event: RequestEvent) -> None:
        kind = event.kind
        if kind == "start" or kind == "abandoned":  # abandoned: no attempt to count
            return
        operation = event.operation
        if kind == "retry":
            retries[operation] = retries.get(operation, 0) + 1
            return
        key: tuple[str, int | None]
        if kind == "error":
            error = event.error
            if event.bytes_sent is None or getattr(error, "unsent", False):
                # Ended before the request was sent (keys, a closed session, another loop,
                # no free connection in the session's own pool; bytes_sent None: another
                # hook raised on this attempt's start): no answer failed to come, so not
                # 'error', which sends operators to the network. Counted, so an outage of
                # the keys shows; no duration: nothing was sent.
                key = (operation, UNSENT)
                requests[key] = requests.get(key, 0) + 1
                return
            if isinstance(error, SessionClosedError):
                # The session closed under a request already handed to its connection:
                # it may have reached the origin, and its owner stopped waiting for it.
                kind = "cancelled"
        if kind == "cancelled":
            key = (operation, CANCELLED)
        elif kind == "error" and event.status is None and (
            isinstance(event.error, ClientValidationError)
            or not isinstance(event.error, MediaStoreError)
        ):
            # The client cut its own request: the body's source raised (an encoder that
            # died), or the body passed the limit or was not bytes. As 'error' it sent
            # operators to an origin that was never at fault.
            key = (operation, ABORTED)
        else:
            key = (operation, event.status)
        requests[key] = requests.get(key, 0) + 1
        counts = durations.get(operation)
        if counts is None:
            counts = durations[operation] = [0.0] * slots
        elapsed = event.elapsed
        counts[bisect_left(DURATION_BUCKETS, elapsed)] += 1
        counts[-1] += elapsed
        if event.bytes_sent:
            totals[0] += event.bytes_sent
        if event.bytes_received:
            totals[1] += event.bytes_received

    return hook


def publisher_hook(
    registry: CollectorRegistry | None = None, namespace: str = "msd"
) -> Callable[[PublishEvent], None]:
    """An ``on_event`` callable for :class:`~msd_async.live.LivePublisher`:
    ``msd_publications_total{kind,outcome}``, ``msd_publish_latency_seconds{kind}``,
    ``msd_publish_queue_depth`` and ``msd_gaps_total``.

    ``outcome`` is ``acknowledged``, ``dropped`` (deadline passed or back-pressure),
    ``superseded`` (a newer manifest version replaced it), ``refused`` (the origin answered
    it with an error status for good: 400, 403...) or ``failed`` (anything else, such as the
    publisher closing). Each object counts once per destination.
    """
    metrics = _metrics(registry, namespace)
    metrics.live()
    publications, latency = metrics.publications, metrics.publish_latency
    depth, gaps = metrics.queue_depth, metrics.gaps
    assert publications is not None
    # Objects waiting, by (endpoint, path): queued and not started. A manifest
    # republished while its previous version still waits counts twice until both leave.
    waiting: dict[tuple[str, str], int] = {}
    # labels() locks and builds a key on every call: the children are kept here.
    counters: dict[tuple[str, str], Counter] = {}
    histograms: dict[str, Histogram] = {}

    def leave(key: tuple[str, str]) -> None:
        left = waiting.get(key)
        if left is not None:
            depth.dec()
            if left > 1:
                waiting[key] = left - 1
            else:
                del waiting[key]

    def on_event(event: PublishEvent) -> None:
        kind = event.kind
        if kind == "queued":
            key = (event.endpoint, event.path)
            waiting[key] = waiting.get(key, 0) + 1
            depth.inc()
            return
        if kind == "sent":
            if event.attempt == 1:  # its first upload starts: it no longer waits
                leave((event.endpoint, event.path))
            return
        if kind == "gap":
            gaps.inc()
            return
        outcome = _OUTCOMES.get(kind)
        if outcome is None:
            return
        label = kind_label(event.object_kind)
        if outcome == "failed" and getattr(event.error, "status", None):
            outcome = "refused"
        counter = counters.get((label, outcome))
        if counter is None:
            counter = counters[label, outcome] = publications.labels(label, outcome)
        counter.inc()
        if kind == "acknowledged" and event.latency is not None:
            histogram = histograms.get(label)
            if histogram is None:
                histogram = histograms[label] = latency.labels(label)
            histogram.observe(event.latency)
        if event.attempt == 0:  # settled while it waited (dropped, superseded)
            leave((event.endpoint, event.path))

    return on_event


def server_hook(
    registry: CollectorRegistry | None = None, namespace: str = "msd"
) -> Callable[[str, str, float], None]:
    """``on_request`` for :class:`msd_async.testing.LocalMediaStore` (``msd serve
    --metrics``): ``msd_server_requests_total{operation,status}`` and
    ``msd_server_request_duration_seconds{operation}``."""
    metrics = _metrics(registry, namespace)
    if metrics.server_requests is None:
        metrics.server_requests = Counter(
            "server_requests", "Requests the local server answered, by operation and HTTP "
            "status ('aborted' when the client went away)", ["operation", "status"],
            namespace=namespace, registry=metrics.registry,
        )
        metrics.server_duration = Histogram(
            "server_request_duration_seconds", "Seconds the local server spent on a request, "
            "body included", ["operation"], namespace=namespace, registry=metrics.registry,
            buckets=DURATION_BUCKETS,
        )
    requests, duration = metrics.server_requests, metrics.server_duration
    assert duration is not None

    def on_request(operation: str, status: str, seconds: float) -> None:
        requests.labels(operation, status).inc()
        duration.labels(operation).observe(seconds)

    return on_request
