"""What the publisher reports: per-object events and a stats snapshot.

Events go to the ``on_event`` callback of :class:`~msd_async.live.LivePublisher` (a plain
function called on the event loop: keep it cheap). The snapshot from ``publisher.stats()``
is an immutable copy, safe to keep or render.
"""

from __future__ import annotations

import logging
import math
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Literal

from ..config import refuse_awaitable
from ..events import RequestEvent
from .kinds import ObjectKind, parse_kind

__all__ = [
    "DestinationStats",
    "Histogram",
    "KindStats",
    "PublishEvent",
    "PublishEventKind",
    "PublisherStats",
    "RequestStats",
]

PublishEventKind = Literal[
    "queued",  # accepted by publish()
    "sent",  # an upload attempt started
    "acknowledged",  # the origin stored it (latency set)
    "retried",  # an attempt failed and another follows (error, delay set)
    "dropped",  # given up: deadline passed or back-pressure (reason set)
    "superseded",  # a newer version of the manifest replaced it before it was stored
    "failed",  # the origin refused it for good (400, 403 twice...) or the publisher closed
    "gap",  # a manifest was stored with this dropped object marked as a gap
    "deleted",  # removed from the origin by the window rules
    "delete-failed",
]

logger = logging.getLogger("msd_async.live")

#: Histogram buckets: from 1 µs to 10,000 s, each 2**(1/8) (9 %) wider than the last, so a
#: percentile is within about 5 % of the true value, in constant memory however long the
#: stream runs.
HISTOGRAM_MIN: Final = 1e-6
HISTOGRAM_MAX: Final = 1e4
_FACTOR: Final = 2.0 ** 0.125
_LOG_FACTOR: Final = math.log(_FACTOR)
_BUCKETS: Final = 2 + math.ceil(math.log(HISTOGRAM_MAX / HISTOGRAM_MIN) / _LOG_FACTOR)


@dataclass(frozen=True, slots=True)
class PublishEvent:
    """One step in the life of one object at one destination."""

    kind: PublishEventKind
    path: str
    object_kind: ObjectKind
    #: The endpoint of the destination container.
    endpoint: str
    #: Monotonic time of the event.
    time: float
    #: Attempt number for ``sent`` / ``retried`` / ``acknowledged``.
    attempt: int = 0
    #: ``acknowledged``: seconds from the body being complete (publish() for bytes and
    #: files, the last chunk of a streamed body) to the origin's acknowledgement.
    latency: float | None = None
    #: ``dropped`` / ``failed`` / ``superseded``: why.
    reason: str | None = None
    error: BaseException | None = None
    #: ``retried``: seconds until the next attempt.
    delay: float | None = None
    #: ``acknowledged``: bytes stored.
    size: int | None = None


class Histogram:
    """Counts of seconds in fixed log-spaced buckets (negative values too: lateness), with
    the exact minimum and maximum. Memory is fixed at creation: a stream that runs for
    days keeps the same few kilobytes, where a list of samples would grow without end."""

    __slots__ = ("_counts", "count", "max", "min", "total")

    def __init__(self) -> None:
        # Index _BUCKETS + b for a value >= 0 in bucket b, _BUCKETS - 1 - b for a negative.
        self._counts = array("q", bytes(8 * 2 * _BUCKETS))
        self.count = 0
        self.total = 0.0
        self.min: float | None = None
        self.max: float | None = None

    @staticmethod
    def _bucket(magnitude: float) -> int:
        if magnitude <= HISTOGRAM_MIN:
            return 0
        if magnitude >= HISTOGRAM_MAX:
            return _BUCKETS - 1
        return min(_BUCKETS - 1, 1 + int(math.log(magnitude / HISTOGRAM_MIN) / _LOG_FACTOR))

    @staticmethod
    def _value(bucket: int) -> float:
        # The geometric middle of the bucket (bucket 0 holds the values at or near 0).
        return 0.0 if bucket == 0 else HISTOGRAM_MIN * _FACTOR ** (bucket - 0.5)

    def add(self, value: float) -> None:
        if not math.isfinite(value):
            return
        if value >= 0:
            self._counts[_BUCKETS + self._bucket(value)] += 1
        else:
            self._counts[_BUCKETS - 1 - self._bucket(-value)] += 1
        self.count += 1
        self.total += value
        if self.min is None or value < self.min:
            self.min = value
        if self.max is None or value > self.max:
            self.max = value

    def merge(self, other: Histogram) -> None:
        """Add the values of ``other`` (several readers' or renditions' into one)."""
        for index, n in enumerate(other._counts):
            self._counts[index] += n
        self.count += other.count
        self.total += other.total
        for bound in (other.min, other.max):
            if bound is not None:
                self.min = bound if self.min is None else min(self.min, bound)
                self.max = bound if self.max is None else max(self.max, bound)

    def percentile(self, q: float) -> float | None:
        """The ``q`` quantile (0..1), ``None`` before the first value."""
        if not self.count:
            return None
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for index, n in enumerate(self._counts):
            seen += n
            if seen >= rank:
                if index >= _BUCKETS:
                    value = self._value(index - _BUCKETS)
                else:
                    value = -self._value(_BUCKETS - 1 - index)
                assert self.min is not None and self.max is not None
                return min(max(value, self.min), self.max)
        return self.max

    def buckets(self) -> list[tuple[float, int]]:
        """Cumulative counts by upper bound in seconds, for values >= 0 (what a Prometheus
        histogram exposes; the last bound is ``inf``)."""
        out: list[tuple[float, int]] = []
        seen = sum(self._counts[:_BUCKETS])
        for bucket in range(_BUCKETS):
            seen += self._counts[_BUCKETS + bucket]
            bound = HISTOGRAM_MIN * _FACTOR ** bucket if bucket < _BUCKETS - 1 else math.inf
            out.append((bound, seen))
        return out


@dataclass(frozen=True, slots=True)
class KindStats:
    """Counters of one object kind (all destinations together). Latencies in seconds."""

    published: int = 0
    acknowledged: int = 0
    dropped: int = 0
    superseded: int = 0
    failed: int = 0
    retries: int = 0
    bytes: int = 0
    latency_p50: float | None = None
    latency_p99: float | None = None
    latency_max: float | None = None
    #: p99 of (acknowledgement time - the object's deadline): above 0 means late.
    lateness_p99: float | None = None
    #: Acknowledged after their deadline.
    late: int = 0
    #: Streamed bodies: seconds from a chunk's arrival from the producer to its write on
    #: the socket (first attempts), the publisher's own share of chunk latency.
    egress_p50: float | None = None
    egress_p99: float | None = None


@dataclass(frozen=True, slots=True)
class RequestStats:
    """What the session's event hooks saw for one operation of one destination."""

    attempts: int = 0
    responses: int = 0
    errors: int = 0
    #: Error responses and failures by status (0 = no response: connection error).
    by_status: dict[int, int] = field(default_factory=dict)
    response_p50: float | None = None
    response_p99: float | None = None
    #: Attempts cancelled before they ended (the publisher giving an object up, closing):
    #: ``attempts`` = ``responses`` + ``errors`` + ``cancelled`` + those in flight.
    cancelled: int = 0


@dataclass(frozen=True, slots=True)
class DestinationStats:
    endpoint: str
    acknowledged: int
    dropped: int
    failed: int
    retries: int
    #: Objects queued or uploading now.
    pending: int
    deletes: int
    deletes_scheduled: int
    #: Consecutive failed attempts (0 = healthy).
    failing: int
    requests: dict[str, RequestStats]


@dataclass(frozen=True, slots=True)
class PublisherStats:
    """A snapshot of :meth:`LivePublisher.stats`."""

    kinds: dict[ObjectKind, KindStats]
    destinations: tuple[DestinationStats, ...]
    #: Seconds since the publisher started.
    uptime: float

    def __getitem__(self, kind: ObjectKind | str) -> KindStats:
        return self.kinds.get(parse_kind(kind), KindStats())

    @property
    def dropped(self) -> int:
        return sum(k.dropped for k in self.kinds.values())

    @property
    def retries(self) -> int:
        return sum(k.retries for k in self.kinds.values())

    def __repr__(self) -> str:
        # One line for a log or a REPL; the fields hold the detail.
        kinds = self.kinds.values()
        pending = sum(d.pending for d in self.destinations)
        return (
            f"<PublisherStats {self.uptime:.1f} s: "
            f"{sum(k.published for k in kinds)} published, "
            f"{sum(k.acknowledged for k in kinds)} acknowledged, {self.dropped} dropped, "
            f"{sum(k.failed for k in kinds)} failed, {self.retries} retries, "
            f"{pending} pending, {len(self.destinations)} destination(s)>"
        )


class _KindCounter:
    __slots__ = (
        "acknowledged",
        "bytes",
        "dropped",
        "egress_times",
        "failed",
        "late",
        "latency",
        "lateness",
        "published",
        "retries",
        "superseded",
    )

    def __init__(self) -> None:
        self.published = self.acknowledged = self.dropped = self.superseded = 0
        self.failed = self.retries = self.bytes = self.late = 0
        self.latency = Histogram()
        self.lateness = Histogram()
        self.egress_times = Histogram()

    def snapshot(self) -> KindStats:
        return KindStats(
            published=self.published,
            acknowledged=self.acknowledged,
            dropped=self.dropped,
            superseded=self.superseded,
            failed=self.failed,
            retries=self.retries,
            bytes=self.bytes,
            latency_p50=self.latency.percentile(0.5),
            latency_p99=self.latency.percentile(0.99),
            latency_max=self.latency.max,
            lateness_p99=self.lateness.percentile(0.99),
            late=self.late,
            egress_p50=self.egress_times.percentile(0.5),
            egress_p99=self.egress_times.percentile(0.99),
        )


class _RequestCounter:
    __slots__ = ("attempts", "by_status", "cancelled", "errors", "responses", "times")

    def __init__(self) -> None:
        self.attempts = self.responses = self.errors = self.cancelled = 0
        self.by_status: dict[int, int] = {}
        self.times = Histogram()

    def snapshot(self) -> RequestStats:
        return RequestStats(
            attempts=self.attempts,
            responses=self.responses,
            errors=self.errors,
            by_status=dict(self.by_status),
            response_p50=self.times.percentile(0.5),
            response_p99=self.times.percentile(0.99),
            cancelled=self.cancelled,
        )


class Recorder:
    """Counts what happens; shared by every destination of one publisher."""

    def __init__(self, on_event: Callable[[PublishEvent], object] | None) -> None:
        self._on_event = on_event
        self.callback_errors = 0
        self.kinds: dict[ObjectKind, _KindCounter] = {}
        self.started = time.monotonic()

    def counter(self, kind: ObjectKind) -> _KindCounter:
        counter = self.kinds.get(kind)
        if counter is None:
            counter = self.kinds[kind] = _KindCounter()
        return counter

    def emit(self, event: PublishEvent) -> None:
        counter = self.counter(event.object_kind)
        kind = event.kind
        if kind == "queued":
            counter.published += 1
        elif kind == "acknowledged":
            counter.acknowledged += 1
            counter.bytes += event.size or 0
            if event.latency is not None:
                counter.latency.add(event.latency)
        elif kind == "retried":
            counter.retries += 1
        elif kind == "dropped":
            counter.dropped += 1
        elif kind == "superseded":
            counter.superseded += 1
        elif kind == "failed":
            counter.failed += 1
        if self._on_event is not None:
            try:
                result = self._on_event(event)
                if result is not None:
                    refuse_awaitable(result, "on_event", self._on_event, rule="live.on_event")
            except Exception:
                # The application's bug must not stop settlement, wake-ups or ordering.
                self.callback_errors += 1
                if self.callback_errors == 1 or self.callback_errors % 1000 == 0:
                    logger.exception(
                        "the on_event callback raised (%d time(s) so far); the publisher "
                        "ignores it and carries on", self.callback_errors,
                    )

    def egress(self, kind: ObjectKind, seconds: float) -> None:
        self.counter(kind).egress_times.add(seconds)

    def lateness(self, kind: ObjectKind, seconds: float) -> None:
        counter = self.counter(kind)
        counter.lateness.add(seconds)
        if seconds > 0:
            counter.late += 1


class RequestRecorder:
    """The session event hook of one destination: counts attempts per operation."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.operations: dict[str, _RequestCounter] = {}
        self.failing = 0

    def __call__(self, event: RequestEvent) -> None:
        if event.endpoint != self.endpoint:
            return  # another container sharing the session
        counter = self.operations.get(event.operation)
        if counter is None:
            counter = self.operations[event.operation] = _RequestCounter()
        if event.kind == "start":
            counter.attempts += 1
        elif event.kind == "response":
            counter.responses += 1
            counter.times.add(event.elapsed)
            if event.operation == "PutObject":
                self.failing = 0
        elif event.kind == "error":
            counter.errors += 1
            status = event.status or 0
            counter.by_status[status] = counter.by_status.get(status, 0) + 1
            if event.operation == "PutObject" and status != 404:
                self.failing += 1
        elif event.kind == "cancelled":
            counter.cancelled += 1

    def snapshot(self) -> dict[str, RequestStats]:
        return {name: c.snapshot() for name, c in self.operations.items()}
