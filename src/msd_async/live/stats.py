"""What the publisher reports: per-object events and a stats snapshot.

Events go to the ``on_event`` callback of :class:`~msd_async.live.LivePublisher` (a plain
function called on the event loop: keep it cheap). The snapshot from ``publisher.stats()``
is an immutable copy, safe to keep or render.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final, Literal

from ..events import RequestEvent
from .kinds import ObjectKind

__all__ = [
    "DestinationStats",
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

#: Latency samples kept per kind for the percentiles (the most recent ones).
SAMPLES: Final = 4096


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


def _percentile(values: Iterable[float], q: float) -> float | None:
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(0, math.ceil(q * len(ordered)) - 1)
    return ordered[rank]


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
        return self.kinds.get(ObjectKind(kind), KindStats())

    @property
    def dropped(self) -> int:
        return sum(k.dropped for k in self.kinds.values())

    @property
    def retries(self) -> int:
        return sum(k.retries for k in self.kinds.values())


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
        self.latency: deque[float] = deque(maxlen=SAMPLES)
        self.lateness: deque[float] = deque(maxlen=SAMPLES)
        self.egress_times: deque[float] = deque(maxlen=SAMPLES * 4)

    def snapshot(self) -> KindStats:
        return KindStats(
            published=self.published,
            acknowledged=self.acknowledged,
            dropped=self.dropped,
            superseded=self.superseded,
            failed=self.failed,
            retries=self.retries,
            bytes=self.bytes,
            latency_p50=_percentile(self.latency, 0.5),
            latency_p99=_percentile(self.latency, 0.99),
            latency_max=max(self.latency, default=None),
            lateness_p99=_percentile(self.lateness, 0.99),
            late=self.late,
            egress_p50=_percentile(self.egress_times, 0.5),
            egress_p99=_percentile(self.egress_times, 0.99),
        )


class _RequestCounter:
    __slots__ = ("attempts", "by_status", "errors", "responses", "times")

    def __init__(self) -> None:
        self.attempts = self.responses = self.errors = 0
        self.by_status: dict[int, int] = {}
        self.times: deque[float] = deque(maxlen=SAMPLES)

    def snapshot(self) -> RequestStats:
        return RequestStats(
            attempts=self.attempts,
            responses=self.responses,
            errors=self.errors,
            by_status=dict(self.by_status),
            response_p50=_percentile(self.times, 0.5),
            response_p99=_percentile(self.times, 0.99),
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
                counter.latency.append(event.latency)
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
                self._on_event(event)
            except Exception:
                # The application's bug must not stop settlement, wake-ups or ordering.
                self.callback_errors += 1
                if self.callback_errors == 1 or self.callback_errors % 1000 == 0:
                    logger.exception(
                        "the on_event callback raised (%d time(s) so far); the publisher "
                        "ignores it and carries on", self.callback_errors,
                    )

    def egress(self, kind: ObjectKind, seconds: float) -> None:
        self.counter(kind).egress_times.append(seconds)

    def lateness(self, kind: ObjectKind, seconds: float) -> None:
        counter = self.counter(kind)
        counter.lateness.append(seconds)
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
            counter.times.append(event.elapsed)
            if event.operation == "PutObject":
                self.failing = 0
        elif event.kind == "error":
            counter.errors += 1
            status = event.status or 0
            counter.by_status[status] = counter.by_status.get(status, 0) + 1
            if event.operation == "PutObject" and status != 404:
                self.failing += 1

    def snapshot(self) -> dict[str, RequestStats]:
        return {name: c.snapshot() for name, c in self.operations.items()}
