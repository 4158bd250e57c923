"""What becomes of a published object: its :class:`Publication` and :class:`Outcome`."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._loop import Event
from ..errors import MediaStoreError
from .kinds import ObjectKind

if TYPE_CHECKING:
    from .destination import Job

__all__ = ["DestinationOutcome", "Outcome", "Publication", "PublisherClosedError", "Status"]


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



class Publication:
    """One object handed to :meth:`LivePublisher.publish`: await :meth:`wait` for its end."""

    __slots__ = ("_changed", "_final", "_jobs", "duration", "kind", "path")

    def __init__(self, path: str, kind: ObjectKind, duration: float | None) -> None:
        #: The container path (prefix included).
        self.path = path
        self.kind = kind
        #: The media duration used for its deadline (``None`` for other kinds).
        self.duration = duration
        self._jobs: list[Job] = []
        #: Set once every destination has finished; the jobs are let go then, so a caller
        #: keeping its publications (to report outcomes) keeps only these.
        self._final: Outcome | None = None
        self._changed: Event | None = Event()

    def __repr__(self) -> str:
        return f"<Publication {self.path} {self.kind} {self.outcome_now()}>"

    def _settled(self) -> None:
        changed = self._changed
        if self._final is None and all(job.status is not None for job in self._jobs):
            self._final = self._outcome()
            self._jobs = []
            self._changed = None  # done for good: nothing will wait again
        else:
            self._changed = Event()
        if changed is not None:
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
            assert self._changed is not None  # not done, so not final
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
