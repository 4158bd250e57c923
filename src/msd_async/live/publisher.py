"""The live publisher: the object a packager hands its segments, parts and playlists to.

One :class:`LivePublisher` publishes one stream (any number of renditions, HLS and/or DASH)
to a primary container and optional backups. The rules it follows, with their sources, are
in ``docs/live.md``; in short:

- **Ordering**: a playlist or MPD is stored only after every object it newly references is
  acknowledged, or was given up after its deadline (then marked ``#EXT-X-GAP`` in an HLS
  playlist). A part named by ``#EXT-X-PRELOAD-HINT`` only needs its upload to have started
  (RFC 8216bis section 6.2.6). Media of a rendition waits for that rendition's init
  segment. Renditions publish concurrently.
- **Deadlines by kind**: media and parts are retried until their own duration has passed
  (counted from when their body was complete), then dropped and reported. Init, keys and
  manifests are retried until stored; the newest version of a manifest supersedes older
  pending ones, and the last one handed over is always the last one stored.
- **Statuses**: 5xx, 429, throttling, timeouts and connection errors are retried on a new
  connection, honouring ``Retry-After``; a 403 is retried once (credentials are re-read);
  other 4xx fail at once.
- **Window**: an object that leaves every playlist is deleted after its duration plus the
  playlist's (parts: 3 target durations), RFC 8216 section 6.2.2 and 8216bis 6.2.2.
- **Back-pressure**: a bounded queue per rendition; when full, the oldest queued media is
  dropped (never a manifest), or ``publish(..., wait_for_room=True)`` waits for room.
- **Tasks**: the publisher's own, hosted by a task it starts; any task may close it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
import os
import posixpath
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self

import anyio
import anyio.abc
import anyio.lowlevel

from .. import rules
from ..errors import (
    ClientValidationError,
    DeadlineExceeded,
    MediaStoreError,
    ObjectNotFoundError,
    ObjectTooLargeError,
)
from ..retry import NO_RETRIES, RetryPolicy
from .kinds import ObjectKind, default_cache_control, default_content_type, infer_kind
from .manifests import ManifestError, ManifestInfo, Reference, mark_gaps, parse_manifest
from .pacing import Pacer
from .stats import (
    DestinationStats,
    PublisherStats,
    PublishEvent,
    PublishEventKind,
    Recorder,
    RequestRecorder,
)
from .window import DeleteWindow

if TYPE_CHECKING:
    from ..client import ContainerClient

__all__ = [
    "DEFAULT_CLOSE_TIMEOUT",
    "DEFAULT_MEDIA_DURATION",
    "DEFAULT_PART_DURATION",
    "DestinationOutcome",
    "LivePublisher",
    "Outcome",
    "Publication",
    "PublisherClosedError",
    "Status",
]

logger = logging.getLogger("msd_async.live")

#: Deadline of a segment whose duration is neither given nor known from a playlist (s).
DEFAULT_MEDIA_DURATION: Final = 4.0
#: The same for an LL-HLS part.
DEFAULT_PART_DURATION: Final = 1.0
#: How long aclose() lets pending objects finish before cancelling them (s).
DEFAULT_CLOSE_TIMEOUT: Final = 10.0
#: Bounded queue of not-yet-started media per rendition and destination.
DEFAULT_MAX_QUEUED: Final = 32
#: Media uploads of one rendition in flight at once (a streaming segment, its parts and
#: the hinted next part overlap in LL-HLS).
DEFAULT_MAX_IN_FLIGHT: Final = 6
#: One manifest attempt may take this long before it is retried (s).
DEFAULT_MANIFEST_ATTEMPT_TIMEOUT: Final = 5.0
#: Delete delay for an object no stored manifest ever named (s): nothing tells how long
#: players may still want it, so be generous.
DEFAULT_UNKNOWN_DELETE_DELAY: Final = 30.0
#: The retry statuses of RetryPolicy with quicker backoff: a live stream cannot wait long.
DEFAULT_LIVE_RETRY: Final = RetryPolicy(backoff_initial=0.05, backoff_max=1.0)

_HEAD_SIZE: Final = 4096


class PublisherClosedError(MediaStoreError):
    """publish() or delete() on a publisher that is not open (use ``async with``)."""


class Status(enum.StrEnum):
    """How an object ended at one destination."""

    ACKNOWLEDGED = "acknowledged"
    DROPPED = "dropped"
    SUPERSEDED = "superseded"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class DestinationOutcome:
    """The result of one object at one destination container (``status`` is ``None``
    while that destination is still at work: ``wait()`` returns at the first
    acknowledgement unless told to wait for all)."""

    endpoint: str
    status: Status | None
    reason: str | None = None
    error: BaseException | None = None
    attempts: int = 0
    #: Seconds from publish() to the acknowledgement.
    latency: float | None = None
    size: int | None = None
    #: Seconds from the body being complete (publish() for bytes and files, the last
    #: chunk for a streamed body) to the acknowledgement: the origin's share.
    completion_latency: float | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """The final result of a :class:`Publication`.

    ``status`` is ``ACKNOWLEDGED`` when any destination stored the object, else the
    primary's status; ``destinations`` has each one's own result (primary first).
    """

    path: str
    kind: ObjectKind
    status: Status
    reason: str | None
    latency: float | None
    destinations: tuple[DestinationOutcome, ...]

    @property
    def acknowledged(self) -> bool:
        return self.status is Status.ACKNOWLEDGED


# --- bodies --------------------------------------------------------------------------------


class _ChunkLog:
    """A one-shot async iterable read once, replayable by every attempt and destination.

    A pump task pulls the producer's chunks as they come; each upload attempt replays what
    is there and then follows new chunks, so every chunk goes to every socket the moment it
    exists. When every destination has given the object up, the pump stops and closes the
    producer's iterator: the producer sees its upload end.
    """

    def __init__(self, source: AsyncIterable[bytes], limit: int) -> None:
        self._source = source
        self._limit = limit
        self.chunks: list[bytes] = []
        #: Per chunk: the body size after it, and when it arrived (for egress latency).
        self.offsets: list[int] = []
        self.arrivals: list[float] = []
        self.size = 0
        self.done = False
        self.error: BaseException | None = None
        self.started = anyio.current_time()
        self.last_chunk_at = self.started
        self.ended_at: float | None = None
        self._changed = anyio.Event()
        self._scope: anyio.CancelScope | None = None
        self.users = 0

    def _notify(self) -> None:
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    async def pump(self) -> None:
        iterator: AsyncIterator[bytes] | None = None
        try:
            with anyio.CancelScope() as self._scope:
                iterator = aiter(self._source)
                if self.users <= 0:
                    self._scope.cancel()
                async for chunk in iterator:
                    if not isinstance(chunk, (bytes, bytearray, memoryview)):
                        raise ClientValidationError(
                            f"body chunks must be bytes, not {type(chunk).__name__}",
                            rule="body.chunk-type",
                        )
                    if not chunk:
                        continue
                    self.size += len(chunk)
                    if self.size > self._limit:
                        raise ObjectTooLargeError(
                            f"the streamed body passed {self._limit:,} bytes, the limit for "
                            "STREAMING objects; it was given up",
                            rule="body.max-size.streaming",
                            limit=self._limit,
                            size=self.size,
                        )
                    self.chunks.append(bytes(chunk))
                    self.last_chunk_at = anyio.current_time()
                    self.offsets.append(self.size)
                    self.arrivals.append(self.last_chunk_at)
                    self._notify()
            if self._scope.cancelled_caught and not self.done:
                self.error = _GivenUp("every destination gave this object up")
        except Exception as exc:
            self.error = exc
        finally:
            self.done = True
            self.ended_at = anyio.current_time()
            if self.users <= 0:
                self.forget()  # nobody left to replay them
            closer = None if iterator is None else getattr(iterator, "aclose", None)
            if closer is not None:
                with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                    await closer()
            self._notify()

    def forget(self) -> None:
        self.chunks = []
        self.offsets = []
        self.arrivals = []

    def release(self) -> None:
        self.users -= 1
        if self.users <= 0 and not self.done and self._scope is not None:
            self._scope.cancel()

    async def replay(self) -> AsyncIterator[bytes]:
        i = 0
        while True:
            while i < len(self.chunks):
                yield self.chunks[i]
                i += 1
            if self.done:
                if self.error is not None:
                    raise self.error
                return
            await self._changed.wait()

    async def read_all(self) -> bytes:
        while not self.done:
            await self._changed.wait()
        if self.error is not None:
            raise self.error
        return b"".join(self.chunks)


class _GivenUp(Exception):
    pass


class _Source:
    """The body of one publication, shared by its destinations."""

    def __init__(self, body: object, limit: int) -> None:
        #: Destinations still needing the body; at 0 it is let go (memory stays bounded
        #: however long the stream runs).
        self.users = 0
        self.data: bytes | None = None
        self.path: str | None = None
        self.log: _ChunkLog | None = None
        if isinstance(body, (bytes, bytearray, memoryview)):
            self.data = bytes(body)
        elif isinstance(body, os.PathLike):
            self.path = os.fspath(body)
        elif isinstance(body, AsyncIterable):
            self.log = _ChunkLog(body, limit)
        elif isinstance(body, str):
            # As in put_object: a str is its UTF-8 text (a playlist), a file is a Path.
            self.data = body.encode()
        else:
            raise ClientValidationError(
                f"cannot publish a {type(body).__name__}: pass bytes, a str (UTF-8 text), an "
                "os.PathLike file path or an async iterable of bytes",
                rule="body.type",
            )

    @property
    def streaming(self) -> bool:
        return self.log is not None

    def release(self) -> None:
        self.users -= 1
        if self.log is not None:
            self.log.release()
        if self.users <= 0:
            self.data = None
            if self.log is not None and self.log.done:
                self.log.forget()

    def head(self) -> bytes | None:
        if self.data is not None:
            return self.data[:_HEAD_SIZE]
        return None

    def upload_body(self) -> Any:
        if self.data is not None:
            return self.data
        if self.path is not None:
            return Path(self.path)  # a str would be uploaded as text
        assert self.log is not None
        return self.log.replay

    async def read_all(self) -> bytes:
        if self.data is not None:
            return self.data
        if self.path is not None:
            self.data = await anyio.Path(self.path).read_bytes()
            return self.data
        assert self.log is not None
        return await self.log.read_all()


# --- publications and jobs -----------------------------------------------------------------


class Publication:
    """One object handed to :meth:`LivePublisher.publish`: await :meth:`wait` for its end."""

    def __init__(self, path: str, kind: ObjectKind, duration: float | None) -> None:
        #: The container path (prefix included).
        self.path = path
        self.kind = kind
        #: The media duration used for its deadline (``None`` for other kinds).
        self.duration = duration
        self._jobs: list[_Job] = []
        #: Set once every destination has finished; the jobs are let go then, so a caller
        #: keeping its publications (to report outcomes) keeps only these.
        self._final: Outcome | None = None
        self._changed = anyio.Event()

    def __repr__(self) -> str:
        return f"<Publication {self.path} {self.kind} {self.outcome_now()}>"

    def _settled(self) -> None:
        if self._final is None and all(job.status is not None for job in self._jobs):
            self._final = self._outcome()
            self._jobs = []
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    def done(self, *, all_destinations: bool = False) -> bool:
        """Whether :meth:`wait` would return at once."""
        if self._final is not None:
            return True
        settled = [job.status is not None for job in self._jobs]
        if all(settled):
            return True
        if all_destinations:
            return False
        return any(job.status is Status.ACKNOWLEDGED for job in self._jobs)

    def outcome_now(self) -> Status | None:
        """The overall status so far (``None`` while undecided)."""
        if not self.done():
            return None
        return self._outcome().status

    @property
    def outcome(self) -> Outcome | None:
        """The :class:`Outcome` once :meth:`done`, else ``None`` (no waiting)."""
        return self._outcome() if self.done() else None

    async def wait(self, *, all_destinations: bool = False) -> Outcome:
        """The final outcome. Returns when a destination acknowledged the object or every
        destination gave it up (``all_destinations=True``: when every one has finished).
        Never raises for an upload failure: the outcome says what happened."""
        while not self.done(all_destinations=all_destinations):
            await self._changed.wait()
        return self._outcome()

    def _outcome(self) -> Outcome:
        if self._final is not None:
            return self._final
        destinations = tuple(job.destination_outcome() for job in self._jobs)
        acked = [d for d in destinations if d.status is Status.ACKNOWLEDGED]
        first = acked[0] if acked else destinations[0]
        assert first.status is not None
        return Outcome(
            self.path,
            self.kind,
            first.status,
            first.reason,
            first.latency,
            destinations,
        )


class _Job:
    """One publication at one destination."""

    def __init__(
        self,
        publication: Publication,
        ingest: _Ingest,
        source: _Source,
        *,
        kind: ObjectKind,
        rendition: str,
        duration: float | None,
        content_type: str | None,
        cache_control: str | None,
        streaming: bool,
    ) -> None:
        self.publication = publication
        self.ingest = ingest
        self.source = source
        self.path = publication.path
        self.kind = kind
        self.rendition = rendition
        self.duration = duration
        self.content_type = content_type
        self.cache_control = cache_control
        self.streaming = streaming
        self.created = anyio.current_time()
        self.status: Status | None = None
        self.reason: str | None = None
        self.error: BaseException | None = None
        self.attempts = 0
        self.latency: float | None = None
        self.completion_latency: float | None = None
        self.size: int | None = None
        self.settled = anyio.Event()
        self.started = anyio.Event()
        self.scope: anyio.CancelScope | None = None
        self.phase = "queued"
        self.newer_waiting = False
        self.body: bytes | None = None
        #: Cache-Control was not given: a manifest's is recomputed from its content.
        self.cache_default = False
        self._egress_index = 0
        source.users += 1
        if source.log is not None:
            source.log.users += 1

    # The deadline of a media object: its duration after its body was complete. While a
    # streamed body is still coming, the clock restarts with each chunk, so a stalled
    # producer (no chunk for a whole duration) is given up too (DASH-IF Ingest 5.2.9).
    def deadline_at(self) -> float:
        assert self.duration is not None
        log = self.source.log
        if log is None:
            return self.created + self.duration
        if log.done and log.ended_at is not None:
            return log.ended_at + self.duration
        return max(self.created, log.last_chunk_at) + self.duration

    def on_progress(self, sent: int) -> None:
        if not self.started.is_set():
            self.started.set()
            self.ingest.changed()
        log = self.source.log
        if log is not None and self.attempts == 1:
            # Egress latency: a chunk's arrival from the producer to its write on the socket
            # (first attempt only: a retry resends old chunks on purpose).
            offsets, i = log.offsets, self._egress_index
            if i < len(offsets) and offsets[i] <= sent:
                now = anyio.current_time()
                recorder = self.ingest.publisher._recorder
                while i < len(offsets) and offsets[i] <= sent:
                    recorder.egress(self.kind, now - log.arrivals[i])
                    i += 1
                self._egress_index = i

    def settle(
        self, status: Status, reason: str | None = None, error: BaseException | None = None
    ) -> bool:
        if self.status is not None:
            return False
        self.status = status
        self.reason = reason
        self.error = error
        now = anyio.current_time()
        if status is Status.ACKNOWLEDGED:
            self.latency = now - self.created
            log = self.source.log
            ended = log.ended_at if log is not None and log.ended_at is not None else None
            self.completion_latency = now - max(self.created, ended or self.created)
        self.settled.set()
        self.source.release()
        self.body = None
        ingest = self.ingest
        ingest.unsettled.discard(self)
        if ingest.jobs.get(self.path) is self:
            # What later manifests need to know is in `stored` and `gaps` now.
            del ingest.jobs[self.path]
        if status in (Status.DROPPED, Status.FAILED):
            ingest.gaps[self.path] = self.kind
        event: PublishEventKind = status.value
        ingest.emit(event, self, latency=self.completion_latency, reason=reason, error=error,
                    size=self.size)
        if status is Status.ACKNOWLEDGED and self.kind.is_media and self.duration:
            ingest.publisher._recorder.lateness(self.kind, now - self.deadline_at())
        ingest.changed()
        self.publication._settled()
        return True

    def destination_outcome(self) -> DestinationOutcome:
        return DestinationOutcome(
            self.ingest.endpoint,
            self.status,
            self.reason,
            self.error,
            self.attempts,
            self.latency,
            self.size,
            self.completion_latency,
        )


class _Rendition:
    __slots__ = ("active", "init_job", "name", "part_target", "playlist_duration", "queue",
                 "target_duration")

    def __init__(self, name: str) -> None:
        self.name = name
        self.queue: deque[_Job] = deque()
        self.active = 0
        self.init_job: _Job | None = None
        self.target_duration: float | None = None
        self.part_target: float | None = None
        self.playlist_duration: float | None = None


class _ManifestSlot:
    __slots__ = ("current", "info", "pending", "refs", "running")

    def __init__(self) -> None:
        self.pending: _Job | None = None
        self.current: _Job | None = None
        self.running = False
        #: What the last stored version referenced.
        self.refs: dict[str, Reference] = {}
        self.info: ManifestInfo | None = None


# --- one destination -----------------------------------------------------------------------


class _Ingest:
    """Everything the publisher keeps for one destination container: independent queues,
    manifest slots, what is stored, the delete schedule and the request counters."""

    def __init__(self, publisher: LivePublisher, store: ContainerClient) -> None:
        self.publisher = publisher
        self.store = store
        self.endpoint = store.endpoint
        self.renditions: dict[str, _Rendition] = {}
        self.manifests: dict[str, _ManifestSlot] = {}
        self.jobs: dict[str, _Job] = {}
        self.unsettled: set[_Job] = set()
        self.stored: set[str] = set()
        #: Objects given up here (dropped or failed), with their kind.
        self.gaps: dict[str, ObjectKind] = {}
        self._gap_reported: set[str] = set()
        self._changed = anyio.Event()
        self.window = DeleteWindow(anyio.current_time, auto_delete=publisher.auto_delete,
                                   min_delay=publisher.min_delete_delay)
        self._delete_wake = anyio.Event()
        self.deletes_stopped = False
        self.deletes = 0
        self.requests = RequestRecorder(store.endpoint)
        self.counts = {"acknowledged": 0, "dropped": 0, "failed": 0, "retried": 0}

    # -- plumbing
    def changed(self) -> None:
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    async def wait_changed(self, at_most: float | None = None) -> None:
        event = self._changed
        if at_most is None:
            await event.wait()
        else:
            with anyio.move_on_after(at_most):
                await event.wait()

    def emit(self, kind: PublishEventKind, job: _Job, **fields: Any) -> None:
        if kind in self.counts:
            self.counts[kind] += 1
        self.publisher._recorder.emit(
            PublishEvent(kind, job.path, job.kind, self.endpoint, anyio.current_time(),
                         attempt=job.attempts, **fields)
        )

    def rendition(self, name: str) -> _Rendition:
        rendition = self.renditions.get(name)
        if rendition is None:
            rendition = self.renditions[name] = _Rendition(name)
        return rendition

    # -- intake
    def submit(self, job: _Job) -> None:
        self.jobs[job.path] = job
        self.unsettled.add(job)
        kind = job.kind
        start = self.publisher._start
        if kind.is_manifest:
            slot = self.manifests.get(job.path)
            if slot is None:
                slot = self.manifests[job.path] = _ManifestSlot()
            if slot.pending is not None:
                slot.pending.settle(Status.SUPERSEDED, "a newer version was published")
            current = slot.current
            if current is not None and current.status is None:
                if current.phase in ("gating", "backoff"):
                    # Not on the wire: the newer version goes instead, at once.
                    current.settle(Status.SUPERSEDED, "a newer version was published")
                    if current.scope is not None:
                        current.scope.cancel()
                else:
                    current.newer_waiting = True
            slot.pending = job
            if not slot.running:
                slot.running = True
                start(self._run_manifests, slot)
        elif kind.is_media:
            rendition = self.rendition(job.rendition)
            rendition.queue.append(job)
            limit = self.publisher.max_queued
            while len(rendition.queue) > limit:
                oldest = rendition.queue.popleft()
                oldest.settle(
                    Status.DROPPED,
                    f"back-pressure: more than {limit} objects of rendition "
                    f"{rendition.name!r} were waiting for the origin; the oldest was dropped",
                )
            self.pump(rendition)
        else:
            if kind is ObjectKind.INIT:
                self.rendition(job.rendition).init_job = job
            start(self._run_until_stored, job)
        self.changed()

    def has_room(self, rendition_name: str) -> bool:
        rendition = self.renditions.get(rendition_name)
        if rendition is None:
            return True
        waiting = sum(1 for job in rendition.queue if job.status is None)
        return waiting < self.publisher.max_queued

    def pump(self, rendition: _Rendition) -> None:
        init = rendition.init_job
        if init is not None and init.status is None:
            return  # media waits for its rendition's init; its settle() pumps again
        limit = self.publisher.max_in_flight
        while rendition.queue and rendition.active < limit:
            job = rendition.queue.popleft()
            if job.status is not None:
                continue
            rendition.active += 1
            self.publisher._start(self._run_media, job, rendition)

    # -- uploads
    async def _run_media(self, job: _Job, rendition: _Rendition) -> None:
        try:
            if anyio.current_time() >= job.deadline_at():
                job.settle(Status.DROPPED, self._late_reason(job))
                return
            with anyio.CancelScope() as scope:
                job.scope = scope
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._watchdog, job, scope)
                    await self._upload(job)
                    tg.cancel_scope.cancel()
            job.scope = None
            if job.status is None:
                job.settle(Status.DROPPED, self._late_reason(job))
        finally:
            rendition.active -= 1
            self.pump(rendition)

    @staticmethod
    async def _watchdog(job: _Job, scope: anyio.CancelScope) -> None:
        """Cancel ``scope`` once the job's deadline has passed for good."""
        while True:
            wait = job.deadline_at() - anyio.current_time()
            if wait > 0:
                await anyio.sleep(wait)
                continue
            # If this process was starved (a busy machine), the chunks that arrived in the
            # meantime are still queued behind this timer: let them in before judging, or
            # our own stall would count as the producer's.
            for _ in range(3):
                await anyio.lowlevel.checkpoint()
            if anyio.current_time() >= job.deadline_at():
                scope.cancel()
                return

    @staticmethod
    def _late_reason(job: _Job) -> str:
        return (
            f"deadline: not acknowledged within its duration ({job.duration:g} s) after its "
            f"body was complete ({job.attempts} attempt(s))"
        )

    async def _run_until_stored(self, job: _Job) -> None:
        try:
            await self._upload(job)
        finally:
            if job.kind is ObjectKind.INIT:
                self.pump(self.rendition(job.rendition))

    async def _upload(self, job: _Job) -> None:
        """Attempts until stored, refused for good, superseded, or cancelled by the
        job's deadline scope."""
        publisher = self.publisher
        base = publisher.retry
        if job.kind.is_media and job.duration:
            policy = dataclasses.replace(
                base, backoff_max=min(base.backoff_max, max(0.02, job.duration / 4))
            )
        else:
            policy = base
        attempt_deadline = (
            publisher.manifest_attempt_timeout
            if job.kind.is_manifest or (job.source.log is None and not job.kind.is_media)
            else None
        )
        operation = "StreamingPutObject" if job.streaming else "PutObject"
        forbidden_retried = False
        job.phase = "uploading"
        while True:
            await publisher._pacer.acquire(operation)
            if job.status is not None or job.newer_waiting:
                job.settle(Status.SUPERSEDED, "a newer version was published")
                return
            job.attempts += 1
            self.emit("sent", job)
            try:
                body = job.body if job.body is not None else job.source.upload_body()
                result = await self.store.put_object(
                    job.path,
                    body,
                    content_type=job.content_type,
                    cache_control=job.cache_control,
                    streaming=job.streaming,
                    progress=job.on_progress,
                    retry=NO_RETRIES,
                    deadline=attempt_deadline,
                )
            except (MediaStoreError, _GivenUp) as exc:
                if isinstance(exc, _GivenUp):
                    job.settle(Status.DROPPED, str(exc))
                    return
                log = job.source.log
                if log is not None and log.error is exc:
                    # The producer's own error (a file that changed under it): nothing the
                    # origin did, nothing a retry would mend.
                    job.settle(Status.FAILED, f"the body's source failed: {exc}", exc)
                    return
                status = getattr(exc, "status", None)
                if status == 403 and not forbidden_retried:
                    # Credentials may have rotated: the next attempt signs with freshly
                    # resolved ones. Once only: a second 403 is a real refusal.
                    forbidden_retried = True
                    delay = 0.0
                elif policy.is_retryable(exc) or isinstance(exc, DeadlineExceeded):
                    delay = policy.delay(min(job.attempts - 1, 16), exc)
                else:
                    job.settle(Status.FAILED, f"the origin refused it: {exc}", exc)
                    return
                if job.newer_waiting:
                    job.settle(Status.SUPERSEDED, f"a newer version was published ({exc})")
                    return
                if job.started.is_set():
                    # What a hint needs is this object at the origin now; after a failed
                    # attempt it is not there until the next attempt sends its first chunk.
                    job.started = anyio.Event()
                self.emit("retried", job, error=exc, delay=delay)
                job.phase = "backoff"
                with anyio.CancelScope() as job.scope:
                    await anyio.sleep(delay)
                job.scope = None
                job.phase = "uploading"
                if job.status is not None or job.newer_waiting:
                    job.settle(Status.SUPERSEDED, "a newer version was published")
                    return
                continue
            except Exception as exc:
                # The producer's own iterator failed (an encoder crashed): not the origin's
                # fault, and nothing to retry.
                job.settle(Status.FAILED, f"the body's source failed: {exc!r}", exc)
                return
            job.size = result.size
            self.stored.add(job.path)
            self.gaps.pop(job.path, None)
            job.settle(Status.ACKNOWLEDGED)
            return

    # -- manifests
    async def _run_manifests(self, slot: _ManifestSlot) -> None:
        try:
            while slot.pending is not None:
                job, slot.pending = slot.pending, None
                slot.current = job
                try:
                    await self._publish_manifest(job, slot)
                except Exception as exc:
                    # A bug here must not stall the versions after this one.
                    logger.exception("publishing %s failed", job.path)
                    job.settle(Status.FAILED, f"internal error: {exc!r} (logged)", exc)
                finally:
                    slot.current = None
        finally:
            slot.running = False

    async def _publish_manifest(self, job: _Job, slot: _ManifestSlot) -> None:
        job.phase = "gating"
        info: ManifestInfo | None = None
        with anyio.CancelScope() as scope:
            job.scope = scope
            try:
                data = await job.source.read_all()
            except Exception as exc:
                job.settle(Status.FAILED, f"the body's source failed: {exc!r}", exc)
                return
            try:
                info = parse_manifest(job.path, data, job.kind)
            except ManifestError as exc:
                # Not ours to judge: store it as given, ungated, and say so.
                logger.warning("%s; publishing it without ordering", exc)
            if info is not None:
                if info.kind is not job.kind:
                    job.kind = job.publication.kind = info.kind
                if job.cache_control is None or job.cache_default:
                    job.cache_control = default_cache_control(
                        info.kind, target_duration=info.target_duration,
                        low_latency=info.low_latency,
                    )
                unstarted = await self._wait_references(job, info, slot)
            else:
                unstarted = set()
            job.body = self._rewrite(job, data, info, unstarted)
        job.scope = None
        if job.status is not None:
            return
        await self._upload(job)
        if job.status is Status.ACKNOWLEDGED and info is not None:
            self._manifest_stored(job, slot, info)

    async def _wait_references(
        self, job: _Job, info: ManifestInfo, slot: _ManifestSlot
    ) -> set[str]:
        """Wait until what ``info`` newly names is stored or given up; return the hinted
        parts whose upload did not start in time (their hints are left out)."""
        publisher = self.publisher
        unknown_wait = publisher.reference_wait
        if unknown_wait is None:
            unknown_wait = min(10.0, max(1.0, info.target_duration or 2.0))
        now = anyio.current_time()
        give_up_at = now + unknown_wait
        # A hint may only be published once its part is requestable (RFC 8216bis 6.2.6);
        # the part's upload shows at the origin with its first chunk. Waiting longer than
        # a part would hold back the parts already done, so the hint waits for the next
        # version instead.
        hint_until = now + (info.part_target or publisher.default_part_duration)
        unstarted: set[str] = set()
        for path, ref in info.references.items():
            if ref.gap:
                continue
            stored = slot.refs.get(path)
            if (stored is not None and stored.role == ref.role and ref.role != "hint"
                    and not stored.gap):
                continue  # the stored version already names it so: it was waited for then
            hint = ref.role == "hint"
            while path not in self.stored:
                target = self.jobs.get(path)
                if target is None and path in self.gaps:
                    break  # given up: marked as a gap
                if hint and target is not None and (
                    target.started.is_set() or target.status is not None
                ):
                    break
                if not hint and target is not None and target is not job:
                    await self.wait_changed()
                    continue
                remaining = (hint_until if hint else give_up_at) - anyio.current_time()
                if remaining <= 0:
                    if hint:
                        unstarted.add(path)
                    else:
                        logger.warning(
                            "%s names %s, which was never published to %s; storing it anyway",
                            job.path, path, self.endpoint,
                        )
                    break
                await self.wait_changed(remaining)
        return unstarted

    def _rewrite(
        self, job: _Job, data: bytes, info: ManifestInfo | None, unstarted: set[str]
    ) -> bytes:
        if info is None:
            return data
        body, marked = mark_gaps(job.path, data, info, self.gaps, unstarted)
        for path in marked - self._gap_reported:
            self._gap_reported.add(path)
            subject = _EventSubject(path, self.gaps[path])
            self.emit("gap", subject, reason=f"marked as a gap in {job.path}")  # type: ignore[arg-type]
        return body

    def _manifest_stored(self, job: _Job, slot: _ManifestSlot, info: ManifestInfo) -> None:
        old, old_info = slot.refs, slot.info
        slot.refs, slot.info = info.references, info
        if info.kind is ObjectKind.MEDIA_PLAYLIST or info.kind is ObjectKind.MPD:
            rendition = self.rendition(posixpath.dirname(job.path))
            rendition.target_duration = info.target_duration or rendition.target_duration
            rendition.part_target = info.part_target or rendition.part_target
            rendition.playlist_duration = info.duration
        target = (info.target_duration or (old_info.target_duration if old_info else None)
                  or self.publisher.default_duration)
        playlist_duration = old_info.duration if old_info is not None else info.duration
        for path in self.window.stored(job.path, old, info.references, target=target,
                                       playlist_duration=playlist_duration):
            self._forget(path)
        self._wake_deletes()

    def _forget(self, path: str) -> None:
        """Drop what is kept about an object no manifest names any more."""
        self.stored.discard(path)
        self.gaps.pop(path, None)
        self._gap_reported.discard(path)

    # -- deletes
    def request_delete(self, path: str) -> None:
        rendition = self.renditions.get(posixpath.dirname(path))
        if rendition is not None and rendition.target_duration:
            delay = rendition.target_duration + (rendition.playlist_duration or 0.0)
        else:
            delay = self.publisher.unknown_delete_delay
        self.window.request(path, delay)
        self._wake_deletes()

    def _wake_deletes(self) -> None:
        wake, self._delete_wake = self._delete_wake, anyio.Event()
        wake.set()

    def stop_deletes(self) -> None:
        """Closing: deletes not started yet are abandoned (the window only matters while
        the stream runs)."""
        self.deletes_stopped = True
        self.window.clear()
        self._wake_deletes()

    async def delete_loop(self) -> None:
        while not self.deletes_stopped:
            for path in self.window.pop_due():
                self.publisher._start(self._delete_one, path)
            due = self.window.next_due()
            if due is None:
                await self._delete_wake.wait()
            else:
                with anyio.move_on_after(due - anyio.current_time()):
                    await self._delete_wake.wait()

    async def _delete_one(self, path: str) -> None:
        job = self.jobs.get(path)
        if job is not None and job.status is None:
            await job.settled.wait()  # never race the upload it would undo
        await self.publisher._pacer.acquire("DeleteObject")
        if self.window.held(path):
            return  # a manifest stored meanwhile names it again: the delete is void
        kind = job.kind if job is not None else infer_kind(path)
        probe = job or _EventSubject(path, kind)
        try:
            await self.store.delete_object(path, retry=self.publisher.retry)
        except ObjectNotFoundError:
            pass
        except MediaStoreError as exc:
            self.emit("delete-failed", probe, reason=str(exc), error=exc)  # type: ignore[arg-type]
            return
        self._forget(path)
        self.window.deleted(path)
        if self.jobs.get(path) is job:
            self.jobs.pop(path, None)
        self.deletes += 1
        self.emit("deleted", probe)  # type: ignore[arg-type]

    def snapshot(self) -> DestinationStats:
        return DestinationStats(
            endpoint=self.endpoint,
            acknowledged=self.counts["acknowledged"],
            dropped=self.counts["dropped"],
            failed=self.counts["failed"],
            retries=self.counts["retried"],
            pending=len(self.unsettled),
            deletes=self.deletes,
            deletes_scheduled=len(self.window.due),
            failing=self.requests.failing,
            requests=self.requests.snapshot(),
        )


@dataclass(slots=True)
class _EventSubject:
    path: str
    kind: ObjectKind
    attempts: int = 0


# --- the publisher -------------------------------------------------------------------------


class LivePublisher:
    """Publishes one live stream to a container (and optional backups).

    Use it as an async context manager; :meth:`publish` each object as the packager
    produces it::

        async with LivePublisher(store, prefix="live/") as publisher:
            await publisher.publish("720p/init.mp4", init_bytes)
            await publisher.publish("720p/seg_1.m4s", encoder_chunks(), duration=2.0)
            await publisher.publish("720p/index.m3u8", playlist_bytes)

    Parameters (keyword-only after ``store``):

    ==========================  ===========================================================
    ``prefix``                  prepended to every path (``"live"`` and ``"live/"`` alike)
    ``backups``                 more ContainerClients that get the same objects, each
                                with its own queues and health (redundant ingest)
    ``on_event``                called with a :class:`PublishEvent` for every step
    ``retry``                   which errors are retried and the backoff (default: the
                                standard statuses, 50 ms to 1 s); attempts are unlimited
                                within each kind's deadline
    ``default_duration``        media deadline when neither given nor known from a
                                playlist (default 4 s); ``default_part_duration`` (1 s)
    ``max_queued``              media waiting per rendition and destination (default 32);
                                beyond it the oldest is dropped
    ``max_in_flight``           media uploads per rendition and destination (default 6)
    ``rate_limits``             requests/s per operation kind, e.g.
                                :data:`~msd_async.live.MEDIASTORE_RATE_LIMITS`
    ``auto_delete``             delete segments and parts that left every stored
                                playlist, after the RFC delay (default True)
    ``min_delete_delay``        never delete sooner than this after scheduling (0 s)
    ``unknown_delete_delay``    delay of a requested delete of an object no playlist named
                                (default 30 s)
    ``reference_wait``          how long a manifest waits for an object it names that was
                                never published (default: its target duration, 1-10 s)
    ``manifest_attempt_timeout``  one manifest attempt's deadline (default 5 s)
    ``close_timeout``           aclose() waits this long for pending objects (10 s)
    ==========================  ===========================================================

    Raises :class:`InvalidParameterError` for bad settings, :class:`PublisherClosedError`
    when used outside ``async with``.
    """

    def __init__(
        self,
        store: ContainerClient,
        *,
        prefix: str = "",
        backups: Sequence[ContainerClient] = (),
        on_event: Callable[[PublishEvent], object] | None = None,
        retry: RetryPolicy = DEFAULT_LIVE_RETRY,
        default_duration: float = DEFAULT_MEDIA_DURATION,
        default_part_duration: float = DEFAULT_PART_DURATION,
        max_queued: int = DEFAULT_MAX_QUEUED,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        rate_limits: Mapping[str, float] | None = None,
        auto_delete: bool = True,
        min_delete_delay: float = 0.0,
        unknown_delete_delay: float = DEFAULT_UNKNOWN_DELETE_DELAY,
        reference_wait: float | None = None,
        manifest_attempt_timeout: float = DEFAULT_MANIFEST_ATTEMPT_TIMEOUT,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    ) -> None:
        from ..errors import InvalidParameterError

        for name, value in (
            ("default_duration", default_duration),
            ("default_part_duration", default_part_duration),
            ("manifest_attempt_timeout", manifest_attempt_timeout),
        ):
            if not value > 0:
                raise InvalidParameterError(
                    f"{name} must be above 0 s, not {value!r}", rule=f"live.{name}"
                )
        for name, value in (
            ("min_delete_delay", min_delete_delay),
            ("unknown_delete_delay", unknown_delete_delay),
            ("close_timeout", close_timeout),
        ):
            if not value >= 0:
                raise InvalidParameterError(
                    f"{name} must be 0 s or more, not {value!r}", rule=f"live.{name}"
                )
        if max_queued < 1 or max_in_flight < 1:
            raise InvalidParameterError(
                "max_queued and max_in_flight must be at least 1", rule="live.queue"
            )
        self.prefix = _normalize_prefix(prefix)
        self.stores = (store, *backups)
        self.retry = retry
        self.default_duration = default_duration
        self.default_part_duration = default_part_duration
        self.max_queued = max_queued
        self.max_in_flight = max_in_flight
        self.auto_delete = auto_delete
        self.min_delete_delay = min_delete_delay
        self.unknown_delete_delay = unknown_delete_delay
        self.reference_wait = reference_wait
        self.manifest_attempt_timeout = manifest_attempt_timeout
        self.close_timeout = close_timeout
        self._pacer = Pacer(rate_limits)
        self._on_event = on_event
        self._recorder = Recorder(on_event)
        self._ingests: list[_Ingest] = []
        self._supervisor: _Supervisor | None = None
        self._close_done: anyio.Event | None = None
        self._open = False
        self._closed = False

    def __repr__(self) -> str:
        return f"<LivePublisher prefix={self.prefix!r} destinations={len(self.stores)}>"

    # -- lifecycle
    async def __aenter__(self) -> Self:
        if self._open or self._closed:
            raise PublisherClosedError("a LivePublisher can be opened once; make a new one")
        self._recorder = Recorder(self._on_event)
        self._ingests = [_Ingest(self, store) for store in self.stores]
        supervisor = _Supervisor()
        await supervisor.start()
        self._supervisor = supervisor
        self._open = True
        for ingest in self._ingests:
            ingest.store.session.event_hooks.append(ingest.requests)
            self._start(ingest.delete_loop)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Leaving by an exception (a cancellation included) is an emergency stop: pending
        # work is cancelled at once rather than given close_timeout.
        await self.aclose(cancel=exc_type is not None)

    async def aclose(
        # A grace period for pending work, not a cancellation deadline.
        self, *, timeout: float | None = None, cancel: bool = False  # noqa: ASYNC109
    ) -> None:
        """Publish what is pending (manifests after what they name, so the final playlist
        goes last) within ``timeout`` seconds (default ``close_timeout``), then cancel the
        rest: those objects end ``FAILED`` ("closed"); deletes not yet due are abandoned.
        ``cancel=True`` skips the wait. Callable from any task; idempotent (a second call
        waits for the first to finish)."""
        if self._close_done is not None:
            await self._close_done.wait()
            return
        if not self._open:
            return
        self._open = False
        self._closed = True
        done = self._close_done = anyio.Event()
        try:
            for ingest in self._ingests:
                ingest.stop_deletes()
                ingest.changed()  # producers waiting for room learn of the close
            if not cancel:
                limit = self.close_timeout if timeout is None else timeout
                with anyio.move_on_after(limit):
                    for ingest in self._ingests:
                        while ingest.unsettled:
                            await ingest.wait_changed()
        finally:
            self._fail_unsettled()
            supervisor = self._supervisor
            if supervisor is not None:
                await supervisor.stop()
            self._fail_unsettled()
            for ingest in self._ingests:
                with contextlib.suppress(ValueError):
                    ingest.store.session.event_hooks.remove(ingest.requests)
            done.set()

    def _fail_unsettled(self) -> None:
        for ingest in self._ingests:
            for job in list(ingest.unsettled):
                job.settle(Status.FAILED, "the publisher closed before it was stored")

    def _start(
        self,
        func: Callable[..., Any],
        *args: Any,
        owns: Callable[[], Iterable[_Job]] | None = None,
    ) -> None:
        """Run ``func(*args)`` on the publisher's own tasks; if it raises, the jobs
        ``owns()`` names fail with its error."""
        supervisor = self._supervisor
        if supervisor is None or supervisor.stopped:
            raise PublisherClosedError("the publisher is closed")
        supervisor.start_soon(_guarded, func, args, owns)

    # -- API
    async def publish(
        self,
        path: str,
        body: bytes | bytearray | memoryview | str | os.PathLike[str] | AsyncIterable[bytes],
        *,
        kind: ObjectKind | str | None = None,
        duration: float | None = None,
        content_type: str | None = None,
        cache_control: str | None = None,
        rendition: str | None = None,
        streaming: bool | None = None,
        wait_for_room: bool = False,
    ) -> Publication:
        """Hand an object over; returns once it is queued (never waits for the origin).

        ``path``: relative to ``prefix``. ``body``: bytes, a ``str`` (its UTF-8 text), an
        ``os.PathLike`` file, or an async iterable of chunks (uploaded as a STREAMING
        object, each chunk sent as it comes; given up, its iterator is closed).
        ``kind``: an :class:`ObjectKind` (default: from the name, and the content for
        ``.m3u8``). ``duration``: seconds of
        media, the deadline of a segment or part (default: from its rendition's playlist,
        else ``default_duration`` / ``default_part_duration``). ``content_type``,
        ``cache_control``: override the kind's defaults. ``rendition``: the ordering group
        (default: the path's folder). ``streaming``: force or forbid a STREAMING upload
        (default: only for iterable bodies). ``wait_for_room``: for media, when the
        rendition's queue is full at a destination, wait until it has room instead of
        dropping the oldest queued object (back-pressure for a producer that can wait, such
        as a folder catching up; the default never blocks).

        Raises :class:`PublisherClosedError` outside ``async with``,
        :class:`InvalidPathError` for a path the service refuses,
        :class:`ClientValidationError` for a body of another type.
        """
        if not self._open:
            raise PublisherClosedError(
                "the publisher is not open: use 'async with LivePublisher(...)'"
            )
        full = rules.normalize_object_path(self.prefix + path.lstrip("/"))
        limit = min(s.streaming_limit for s in self.stores)
        source = _Source(body, limit)
        if kind is None:
            head = source.head()
            if head is None and source.path is not None and full.endswith((".m3u8", ".m3u")):
                head = (await source.read_all())[:_HEAD_SIZE]
            object_kind = infer_kind(full, head)
        else:
            object_kind = ObjectKind(kind)
        if object_kind.is_manifest and source.path is not None:
            await source.read_all()  # the file may change before the upload: snapshot it
        folder = rendition if rendition is not None else posixpath.dirname(full)
        media_duration = None
        if object_kind.is_media:
            media_duration = duration if duration is not None else self._known_duration(
                folder, object_kind
            )
            if not media_duration > 0:
                from ..errors import InvalidParameterError

                raise InvalidParameterError(
                    f"duration must be above 0 s, not {media_duration!r}", rule="live.duration"
                )
        if content_type is None:
            content_type = default_content_type(full, object_kind)
        cache_default = cache_control is None
        if cache_control is None:
            cache_control = default_cache_control(
                object_kind, target_duration=self._target_duration(folder)
            )
        is_streaming = source.streaming if streaming is None else streaming
        if wait_for_room and object_kind.is_media:
            # No await between the last check and submit(): waiting producers cannot
            # overfill a queue together.
            while (full_at := next(
                (i for i in self._ingests if not i.has_room(folder)), None
            )) is not None:
                await full_at.wait_changed()
                if not self._open:
                    break
        if not self._open:
            raise PublisherClosedError("the publisher closed while this object waited")
        publication = Publication(full, object_kind, media_duration)
        jobs = []
        for ingest in self._ingests:
            job = _Job(
                publication,
                ingest,
                source,
                kind=object_kind,
                rendition=folder,
                duration=media_duration,
                content_type=content_type,
                cache_control=cache_control,
                streaming=is_streaming,
            )
            job.cache_default = cache_default
            jobs.append(job)
        publication._jobs = jobs
        if source.log is not None:
            self._start(source.log.pump, owns=lambda: jobs)
        for job in jobs:
            job.ingest.emit("queued", job)
            job.ingest.submit(job)
        return publication

    async def delete(self, path: str) -> None:
        """Schedule a delete by the window rules: once no stored manifest names ``path``,
        after its duration plus the playlist's (parts: 3 target durations). An encoder's
        DELETE is a hint: never sooner than that. Returns at once."""
        if not self._open:
            raise PublisherClosedError("the publisher is not open")
        full = rules.normalize_object_path(self.prefix + path.lstrip("/"))
        for ingest in self._ingests:
            ingest.request_delete(full)

    def stats(self) -> PublisherStats:
        """A snapshot of the counters (see :class:`PublisherStats`)."""
        recorder = self._recorder
        return PublisherStats(
            kinds={kind: counter.snapshot() for kind, counter in recorder.kinds.items()},
            destinations=tuple(ingest.snapshot() for ingest in self._ingests),
            uptime=anyio.current_time() - recorder.started,
        )

    # -- helpers
    def _known_duration(self, folder: str, kind: ObjectKind) -> float:
        rendition = self._ingests[0].renditions.get(folder) if self._ingests else None
        if kind is ObjectKind.PART:
            if rendition is not None and rendition.part_target:
                return rendition.part_target
            return self.default_part_duration
        if rendition is not None and rendition.target_duration:
            return rendition.target_duration
        return self.default_duration

    def _target_duration(self, folder: str) -> float | None:
        rendition = self._ingests[0].renditions.get(folder) if self._ingests else None
        return None if rendition is None else rendition.target_duration


class _Supervisor:
    """The publisher's own task group, hosted by a task the publisher starts: its tasks do
    not belong to the caller's task, so any task may close the publisher (a shutdown hook,
    a signal handler's task), and a bug in one of them never cancels the caller."""

    def __init__(self) -> None:
        self._tg: anyio.abc.TaskGroup | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = anyio.Event()
        self.stopped = False

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._host())
        try:
            await self._ready.wait()
        except BaseException:
            await self.stop()
            raise

    async def _host(self) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            self._ready.set()
            await anyio.sleep_forever()

    def start_soon(self, func: Callable[..., Any], *args: Any) -> None:
        assert self._tg is not None
        self._tg.start_soon(func, *args)

    async def stop(self) -> None:
        """Cancel every task and wait until all have ended (shielded: a cancelled caller
        must not leave tasks behind)."""
        self.stopped = True
        task = self._task
        if task is None:
            return
        if self._tg is not None:
            self._tg.cancel_scope.cancel()
        else:
            task.cancel()
        with anyio.CancelScope(shield=True):
            await asyncio.wait({task})
        if not task.cancelled() and task.exception() is not None:
            logger.error("the live publisher's task group ended with an error",
                         exc_info=task.exception())


async def _guarded(
    func: Callable[..., Any], args: tuple[Any, ...], owns: Callable[[], Iterable[_Job]] | None
) -> None:
    # A bug in one task must not end the others, nor pass silently: log it and fail what the
    # task was responsible for, so no wait() is left hanging.
    try:
        await func(*args)
    except Exception as exc:
        logger.exception("live publisher task %s failed", getattr(func, "__name__", func))
        jobs = list(owns()) if owns is not None else []
        jobs += [arg for arg in args if isinstance(arg, _Job)]
        for job in jobs:
            job.settle(Status.FAILED, f"internal error: {exc!r} (logged)", exc)


def _normalize_prefix(prefix: str) -> str:
    prefix = prefix.strip("/")
    if not prefix:
        return ""
    return rules.normalize_object_path(prefix) + "/"
