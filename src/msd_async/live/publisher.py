"""The live publisher: the object a packager hands its segments, parts and playlists to.

One :class:`LivePublisher` publishes one stream (any number of renditions, HLS and/or DASH)
to a primary container and optional backups. The rules it follows, with their sources, are
in ``docs/live.md``; in short:

- **Ordering**: a playlist or MPD is stored only after every object it newly references is
  acknowledged, or was given up after its deadline (then marked ``#EXT-X-GAP`` in an HLS
  playlist). A part named by ``#EXT-X-PRELOAD-HINT`` only needs to be requestable: a
  STREAMING upload started, a STANDARD one stored (RFC 8216bis section 6.2.6). Media of
  a rendition waits for that rendition's init segment. Renditions publish concurrently.
- **Deadlines by kind**: media and parts are retried until their own duration has passed
  (counted from when their body was complete), then dropped and reported. Init, keys and
  manifests are retried until stored; the newest version of a manifest supersedes older
  pending ones, and the last one handed over is always the last one stored.
- **Statuses**: 5xx, 429, throttling, timeouts and connection errors are retried on a new
  connection, honouring ``Retry-After``; a 403 is retried once (credentials are re-read),
  unless it refused the clock; other 4xx fail at once.
- **Window**: an object that leaves every playlist is deleted after its duration plus the
  playlist's (parts: 3 target durations), RFC 8216 section 6.2.2 and 8216bis 6.2.2.
- **Back-pressure**: a bounded queue per rendition; when full, the oldest queued media is
  dropped (never a manifest), or ``publish(..., wait_for_room=True)`` waits for room.
- **Tasks**: the publisher's own, hosted by a task it starts; any task may close it.

The parts live in their own modules: ``bodies`` (body sources and the chunk log),
``outcomes`` (publications and outcomes), ``destination`` (one container's uploads per
rendition, the manifest gate and deletes), ``window`` (the delete rules, a pure class),
``manifests`` (the one parser and the gap rewrite), ``stats`` (events and histograms).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import posixpath
from collections.abc import AsyncIterable, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self

import anyio
import anyio.abc
import anyio.lowlevel

from .. import rules
from ..config import check_plain_callback
from ..retry import RetryPolicy
from .bodies import HEAD_SIZE, BodySource
from .destination import Destination, Job
from .kinds import (
    HLS_EXTENSIONS,
    ObjectKind,
    default_cache_control,
    default_content_type,
    infer_kind,
    parse_kind,
)
from .outcomes import DestinationOutcome, Outcome, Publication, PublisherClosedError, Status
from .pacing import Pacer
from .stats import (
    PublisherStats,
    PublishEvent,
    Recorder,
)

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
        if on_event is not None:
            check_plain_callback(on_event, "on_event", rule="live.on_event")
        if reference_wait is not None and not reference_wait >= 0:
            # nan would reach a manifest's deadline and fail it, though manifests are
            # retried until stored.
            raise InvalidParameterError(
                f"reference_wait must be 0 s or more (or None), not {reference_wait!r}",
                rule="live.reference_wait",
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
        self._ingests: list[Destination] = []
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
        self._ingests = [Destination(self, store) for store in self.stores]
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
        goes last) and carry out the deletes already due (one on the wire included) within
        ``timeout`` seconds (default ``close_timeout``), then cancel the rest: those
        objects end ``FAILED`` ("closed"); deletes not yet due are abandoned.
        ``cancel=True`` skips the wait (and starts no delete). Callable from any task;
        idempotent (a second call waits for the first to finish)."""
        if timeout is not None and timeout != timeout:
            from ..errors import InvalidParameterError

            # Refused before anything closes: nan would reach the grace's deadline only
            # after the close had begun, and cut every pending object.
            raise InvalidParameterError(
                "aclose() timeout must be a number of seconds, not nan",
                rule="live.close_timeout",
            )
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
                ingest.stop_deletes(finish_due=not cancel)
                ingest.changed()  # producers waiting for room learn of the close
            if not cancel:
                limit = self.close_timeout if timeout is None else timeout
                with anyio.move_on_after(limit):
                    for ingest in self._ingests:
                        while ingest.unsettled or ingest.deletes_running:
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
        owns: Callable[[], Iterable[Job]] | None = None,
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
        object, each chunk sent as it comes; given up, its iterator is closed). A path to
        a pipe, FIFO or device is read once, as it is written, like an async iterable
        (a playlist there is read whole first); a folder raises
        :class:`ClientValidationError`.
        ``kind``: an :class:`ObjectKind` or its value (default: from the name, and the
        content for ``.m3u8``); another raises :class:`InvalidParameterError`. ``duration``:
        seconds of media, the deadline of a segment or part (default: from its rendition's
        playlist, else ``default_duration`` / ``default_part_duration``). ``content_type``,
        ``cache_control``: override the kind's defaults. ``rendition``: the ordering group
        (default: the path's folder). ``streaming``: force or forbid a STREAMING upload
        (default: only for iterable bodies and pipes). ``wait_for_room``: for media, when
        the rendition's queue is full at a destination, wait until it has room instead of
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
        # Before the body is taken: a file or stream given with a wrong kind stays unread.
        given_kind = None if kind is None else parse_kind(kind)
        full = rules.normalize_object_path(self.prefix + path.lstrip("/"))
        limit = min(s.streaming_limit for s in self.stores)
        source = BodySource(body, limit)
        if given_kind is None:
            head = source.head()
            if head is None and source.path is not None and full.lower().endswith(HLS_EXTENSIONS):
                head = (await source.read_all())[:HEAD_SIZE]
            object_kind = infer_kind(full, head)
        else:
            object_kind = given_kind
        if object_kind.is_manifest and source.path is not None:
            await source.read_all()  # the file may change before the upload: snapshot it
        source.stream_if_pipe()
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
            job = Job(
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
    func: Callable[..., Any], args: tuple[Any, ...], owns: Callable[[], Iterable[Job]] | None
) -> None:
    # A bug in one task must not end the others, nor pass silently: log it and fail what the
    # task was responsible for, so no wait() is left hanging.
    try:
        await func(*args)
    except Exception as exc:
        logger.exception("live publisher task %s failed", getattr(func, "__name__", func))
        jobs = list(owns()) if owns is not None else []
        jobs += [arg for arg in args if isinstance(arg, Job)]
        for job in jobs:
            job.settle(Status.FAILED, f"internal error: {exc!r} (logged)", exc)


def _normalize_prefix(prefix: str) -> str:
    prefix = prefix.strip("/")
    if not prefix:
        return ""
    return rules.normalize_object_path(prefix) + "/"
