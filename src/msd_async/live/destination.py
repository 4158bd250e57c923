"""One destination container: its queues per rendition, uploads, manifest gate and deletes.

The publisher keeps one :class:`Destination` per container (primary and backups), each with
its own queues and health, so a failing origin never slows another.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import posixpath
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

from .. import rules
from .._loop import Event, loop_time
from ..errors import (
    ClientValidationError,
    ClockSkewError,
    DeadlineExceeded,
    MediaStoreError,
    ObjectNotFoundError,
)
from ..retry import NO_RETRIES
from .bodies import BodySource, GivenUp
from .kinds import ObjectKind, default_cache_control, infer_kind
from .manifests import ManifestError, ManifestInfo, Reference, mark_gaps, parse_manifest
from .outcomes import DestinationOutcome, Publication, Status
from .stats import DestinationStats, PublishEvent, PublishEventKind, RequestRecorder
from .window import DeleteWindow

if TYPE_CHECKING:
    from ..client import ContainerClient
    from .publisher import LivePublisher

__all__ = ["Destination", "Job"]

logger = logging.getLogger("msd_async.live")


class Job:
    """One publication at one destination."""

    def __init__(
        self,
        publication: Publication,
        ingest: Destination,
        source: BodySource,
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
        self.created = loop_time()
        self.status: Status | None = None
        self.reason: str | None = None
        self.error: BaseException | None = None
        self.attempts = 0
        self.latency: float | None = None
        self.completion_latency: float | None = None
        self.size: int | None = None
        self.settled = Event()
        self.started = Event()
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
                now = loop_time()
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
        now = loop_time()
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


class Rendition:
    __slots__ = ("active", "init_job", "name", "part_target", "playlist_duration", "queue",
                 "target_duration")

    def __init__(self, name: str) -> None:
        self.name = name
        self.queue: deque[Job] = deque()
        self.active = 0
        self.init_job: Job | None = None
        self.target_duration: float | None = None
        self.part_target: float | None = None
        self.playlist_duration: float | None = None


class ManifestSlot:
    __slots__ = ("current", "info", "pending", "refs", "running")

    def __init__(self) -> None:
        self.pending: Job | None = None
        self.current: Job | None = None
        self.running = False
        #: What the last stored version referenced.
        self.refs: dict[str, Reference] = {}
        self.info: ManifestInfo | None = None


# --- one destination -----------------------------------------------------------------------


class Destination:
    """Everything the publisher keeps for one destination container: independent queues,
    manifest slots, what is stored, the delete schedule and the request counters."""

    def __init__(self, publisher: LivePublisher, store: ContainerClient) -> None:
        self.publisher = publisher
        self.store = store
        self.endpoint = store.endpoint
        self.renditions: dict[str, Rendition] = {}
        self.manifests: dict[str, ManifestSlot] = {}
        self.jobs: dict[str, Job] = {}
        self.unsettled: set[Job] = set()
        self.stored: set[str] = set()
        #: Objects given up here (dropped or failed), with their kind.
        self.gaps: dict[str, ObjectKind] = {}
        self._gap_reported: set[str] = set()
        self._changed = Event()
        self.window = DeleteWindow(loop_time, auto_delete=publisher.auto_delete,
                                   min_delay=publisher.min_delete_delay,
                                   scope=publisher.prefix)
        self._delete_wake = Event()
        #: Deletes taken off the window and not sent yet: False once the path is published
        #: again (the delete is void). Then, while one is on the wire, what its end sets.
        self._deletes_due: dict[str, bool] = {}
        self._deletes_sending: dict[str, Event] = {}
        self.deletes_stopped = False
        #: Deletes taken off the window whose task has not ended: aclose() waits for them
        #: with the unsettled uploads.
        self.deletes_running = 0
        self.deletes = 0
        self.requests = RequestRecorder(store.endpoint)
        self.counts = {"acknowledged": 0, "dropped": 0, "failed": 0, "retried": 0}
        #: Uploads that raised neither the origin's error nor the body's (event hooks).
        self.outside_errors = 0

    # -- plumbing
    def changed(self) -> None:
        changed, self._changed = self._changed, Event()
        changed.set()

    async def wait_changed(self, at_most: float | None = None) -> None:
        event = self._changed
        if at_most is None:
            await event.wait()
        else:
            with anyio.move_on_after(at_most):
                await event.wait()

    def emit(self, kind: PublishEventKind, job: Job, **fields: Any) -> None:
        if kind in self.counts:
            self.counts[kind] += 1
        self.publisher._recorder.emit(
            PublishEvent(kind, job.path, job.kind, self.endpoint, loop_time(),
                         attempt=job.attempts, **fields)
        )

    def rendition(self, name: str) -> Rendition:
        rendition = self.renditions.get(name)
        if rendition is None:
            rendition = self.renditions[name] = Rendition(name)
        return rendition

    # -- intake
    def submit(self, job: Job) -> None:
        if not job.kind.is_manifest:
            # A delete its old version earned must not undo this one (a restarted packager
            # reusing its names within the window).
            self.window.republished(job.path)
            if job.path in self._deletes_due:
                self._deletes_due[job.path] = False
        self.jobs[job.path] = job
        self.unsettled.add(job)
        kind = job.kind
        start = self.publisher._start
        if kind.is_manifest:
            slot = self.manifests.get(job.path)
            if slot is None:
                slot = self.manifests[job.path] = ManifestSlot()
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

    def pump(self, rendition: Rendition) -> None:
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
    async def _run_media(self, job: Job, rendition: Rendition) -> None:
        try:
            if loop_time() >= job.deadline_at():
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
    async def _watchdog(job: Job, scope: anyio.CancelScope) -> None:
        """Cancel ``scope`` once the job's deadline has passed for good."""
        while True:
            wait = job.deadline_at() - loop_time()
            if wait > 0:
                await anyio.sleep(wait)
                continue
            # If this process was starved (a busy machine), the chunks that arrived in the
            # meantime are still queued behind this timer: let them in before judging, or
            # our own stall would count as the producer's.
            for _ in range(3):
                await anyio.lowlevel.checkpoint()
            if loop_time() >= job.deadline_at():
                scope.cancel()
                return

    @staticmethod
    def _late_reason(job: Job) -> str:
        return (
            f"deadline: not acknowledged within its duration ({job.duration:g} s) after its "
            f"body was complete ({job.attempts} attempt(s))"
        )

    async def _run_until_stored(self, job: Job) -> None:
        try:
            await self._upload(job)
        finally:
            if job.kind is ObjectKind.INIT:
                self.pump(self.rendition(job.rendition))

    async def _upload(self, job: Job) -> None:
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
        timeout = publisher.manifest_attempt_timeout
        attempt_deadline = (
            # The publisher takes infinity, which put_object's deadline refuses: None there.
            (None if timeout == math.inf else timeout)
            if job.kind.is_manifest or (job.source.log is None and not job.kind.is_media)
            else None
        )
        operation = "StreamingPutObject" if job.streaming else "PutObject"
        forbidden_retried = False
        deleting = self._deletes_sending.get(job.path)
        if deleting is not None and not job.kind.is_manifest:
            await deleting.wait()  # the old version's delete, already on the wire
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
            except (MediaStoreError, GivenUp) as exc:
                if isinstance(exc, GivenUp):
                    job.settle(Status.DROPPED, str(exc))
                    return
                log = job.source.log
                if log is not None and log.error is exc:
                    # The producer's own error (a file that changed under it): nothing the
                    # origin did, nothing a retry would mend.
                    job.settle(Status.FAILED, f"the body's source failed: {exc}", exc)
                    return
                status = getattr(exc, "status", None)
                if status == 403 and not forbidden_retried and not isinstance(
                    exc, ClockSkewError
                ):
                    # Credentials may have rotated: the next attempt signs with freshly
                    # resolved ones. Once only: a second 403 is a real refusal. A refused
                    # clock is not in the credentials: no attempt mends it.
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
                    job.started = Event()
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
                log = job.source.log
                if (log is not None and log.error is exc) or (
                    job.source.path is not None and isinstance(exc, OSError)
                ):
                    # The producer's own iterator failed (an encoder crashed), or the file
                    # went: not the origin's fault, and nothing to retry.
                    job.settle(Status.FAILED, f"the body's source failed: {exc!r}", exc)
                    return
                # Neither the origin nor the body: a session event hook that raised (the
                # client passes a hook's error on to its caller) or a bug. The request may
                # have reached the origin; retrying would meet the same error.
                self.outside_errors += 1
                if self.outside_errors == 1 or self.outside_errors % 1000 == 0:
                    # A hook that always raises would log a traceback per object.
                    logger.error("uploading %s raised %r outside the upload (%d so far); a "
                                 "session event hook?", job.path, exc, self.outside_errors,
                                 exc_info=exc if self.outside_errors == 1 else None)
                job.settle(
                    Status.FAILED,
                    f"{exc!r} was raised outside the upload, by neither the origin nor the "
                    "body (a session event hook that raises makes the call raise; it is "
                    "logged); the origin may have stored it",
                    exc,
                )
                return
            job.size = result.size
            self.stored.add(job.path)
            self.gaps.pop(job.path, None)
            job.settle(Status.ACKNOWLEDGED)
            return

    # -- manifests
    async def _run_manifests(self, slot: ManifestSlot) -> None:
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

    async def _publish_manifest(self, job: Job, slot: ManifestSlot) -> None:
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
                # Read on from what it shares with the stored version (docs/live.md).
                info = parse_manifest(job.path, data, job.kind, previous=slot.info)
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
        self, job: Job, info: ManifestInfo, slot: ManifestSlot
    ) -> set[str]:
        """Wait until what ``info`` newly names is stored or given up; return the hinted
        parts whose upload did not start in time (their hints are left out)."""
        publisher = self.publisher
        unknown_wait = publisher.reference_wait
        if unknown_wait is None:
            unknown_wait = min(10.0, max(1.0, info.target_duration or 2.0))
        now = loop_time()
        give_up_at = now + unknown_wait
        # A hint may only be published once its part is requestable (RFC 8216bis 6.2.6);
        # the part's upload shows at the origin with its first chunk. Waiting longer than
        # a part would hold back the parts already done, so the hint waits for the next
        # version instead.
        hint_until = now + (info.part_target or publisher.default_part_duration)
        unstarted: set[str] = set()
        never: list[str] = []
        refused: list[str] = []
        references: Iterable[tuple[str, Reference]] = info.references.items()
        if info._inherited:
            # The stored version's references come first, unchanged, and none is a hint
            # (the one kind waited for again): only those after them can be new.
            references = itertools.islice(references, info._inherited, None)
        for path, ref in references:
            if ref.gap:
                continue
            stored = slot.refs.get(path)
            if (stored is not None and stored.role == ref.role and ref.role != "hint"
                    and not stored.gap):
                continue  # the stored version already names it so: it was waited for then
            if not _storable(path):
                # It can never be at the origin: waiting for it would only hold the stream
                # back. Given up at once, it is marked as a gap where HLS can say so.
                self.gaps[path] = infer_kind(path)
                refused.append(path)
                continue
            hint = ref.role == "hint"
            # An older segment at the origin is not what is named when a newer one is on
            # its way (a restarted packager reusing its names): wait for that one. Not so
            # for a playlist a multivariant names: stored once is enough, and a newer
            # version is always on its way in a live stream.
            while path not in self.stored or (
                not hint and (newer := self.jobs.get(path)) is not None
                and newer is not job and newer.status is None
                and not newer.kind.is_manifest
            ):
                target = self.jobs.get(path)
                if target is None and path in self.gaps:
                    break  # given up: marked as a gap
                # A STREAMING upload shows at the origin with its first chunk; a STANDARD one
                # (a part sent whole) only once stored, so its start does not make a hint
                # true.
                if hint and target is not None and (
                    (target.streaming and target.started.is_set()) or target.status is not None
                ):
                    break
                if not hint and target is not None and target is not job:
                    await self.wait_changed()
                    continue
                remaining = (hint_until if hint else give_up_at) - loop_time()
                if remaining <= 0:
                    if hint:
                        unstarted.add(path)
                    else:
                        never.append(path)
                    break
                await self.wait_changed(remaining)
        if refused:
            logger.warning(
                "%s names %d object%s MediaStore refuses to store (%s%s); not waiting for "
                "%s, marked as a gap in an HLS media playlist; rename the packager's output",
                job.path, len(refused), "" if len(refused) == 1 else "s",
                ", ".join(repr(p) for p in refused[:3]), ", ..." if len(refused) > 3 else "",
                "it" if len(refused) == 1 else "them",
            )
        if never:
            # One line per manifest: ffmpeg's final LL-DASH MPD names every chunk since the
            # first, thousands its window deleted long ago.
            logger.warning(
                "%s names %d object%s never published to %s (%s%s); storing it anyway",
                job.path, len(never), "" if len(never) == 1 else "s", self.endpoint,
                ", ".join(never[:3]), ", ..." if len(never) > 3 else "",
            )
        return unstarted

    def _rewrite(
        self, job: Job, data: bytes, info: ManifestInfo | None, unstarted: set[str]
    ) -> bytes:
        if info is None:
            return data
        body, marked = mark_gaps(job.path, data, info, self.gaps, unstarted)
        for path in marked - self._gap_reported:
            self._gap_reported.add(path)
            subject = EventSubject(path, self.gaps[path])
            self.emit("gap", subject, reason=f"marked as a gap in {job.path}")  # type: ignore[arg-type]
        return body

    def _manifest_stored(self, job: Job, slot: ManifestSlot, info: ManifestInfo) -> None:
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
        # The inherited references are the stored version's first ones (``old``).
        shared = info._inherited if info._inherited <= len(old) else 0
        for path in self.window.stored(job.path, old, info.references, target=target,
                                       playlist_duration=playlist_duration, shared=shared):
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
        wake, self._delete_wake = self._delete_wake, Event()
        wake.set()

    def stop_deletes(self, *, finish_due: bool = True) -> None:
        """Closing: the deletes already due are started (unless ``finish_due`` is false:
        an emergency stop) and the close waits for them as for uploads; those not due yet
        are abandoned (the window only matters while the stream runs)."""
        self.deletes_stopped = True
        if finish_due:
            # A producer that deletes and closes with no await in between (msd push and
            # relay at the end of a stream) would otherwise lose a delete due already.
            self._start_due()
        self.window.clear()
        self._wake_deletes()

    def _start_due(self) -> None:
        for path in self.window.pop_due():
            self._deletes_due[path] = True
            self.publisher._start(self._delete_one, path)
            self.deletes_running += 1

    async def delete_loop(self) -> None:
        while not self.deletes_stopped:
            self._start_due()
            due = self.window.next_due()
            if due is None:
                await self._delete_wake.wait()
            else:
                with anyio.move_on_after(due - loop_time()):
                    await self._delete_wake.wait()

    async def _delete_one(self, path: str) -> None:
        try:
            await self._send_delete(path)
        finally:
            self.deletes_running -= 1
            self.changed()  # a close waiting for it

    async def _send_delete(self, path: str) -> None:
        if not _storable(path):
            # Named by a manifest, never stored (refused name): nothing to delete.
            self._deletes_due.pop(path, None)
            self._forget(path)
            self.window.deleted(path)
            return
        try:
            job = self.jobs.get(path)
            if job is not None and job.status is None and self._deletes_due.get(path):
                await job.settled.wait()  # never race the upload it would undo
            await self.publisher._pacer.acquire("DeleteObject")
            if self.window.held(path):
                return  # a manifest stored meanwhile names it again: the delete is void
            if not self._deletes_due.get(path):
                return  # published again meanwhile: this delete was for the old version
        finally:
            self._deletes_due.pop(path, None)
        kind = job.kind if job is not None else infer_kind(path)
        probe = job or EventSubject(path, kind)
        # An upload of the path handed over from now on waits for this delete to end, so
        # the origin never applies it after the new version.
        sending = self._deletes_sending[path] = Event()
        try:
            await self.store.delete_object(path, retry=self.publisher.retry)
        except ObjectNotFoundError:
            pass
        except MediaStoreError as exc:
            self.emit("delete-failed", probe, reason=str(exc), error=exc)  # type: ignore[arg-type]
            return
        finally:
            if self._deletes_sending.get(path) is sending:
                del self._deletes_sending[path]
            sending.set()
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


def _storable(path: str) -> bool:
    """Whether MediaStore takes ``path`` as an object name."""
    try:
        rules.normalize_object_path(path)
    except ClientValidationError:
        return False
    return True


@dataclass(slots=True)
class EventSubject:
    path: str
    kind: ObjectKind
    attempts: int = 0
