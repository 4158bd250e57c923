"""The sliding window: when an object that left every stored manifest may be deleted.

A pure class with an injected clock: it decides, the publisher carries the deletes out. The
rules (``docs/live.md``, "Sliding window"):

- An object is deleted once no stored manifest names it, after its duration plus the
  duration of the playlist it left (RFC 8216 section 6.2.2), or 3 target durations for an
  LL-HLS part or hint (RFC 8216bis 6.2.2).
- An object several manifests name (HLS and DASH sharing CMAF segments) goes when the last
  one drops it; named again before its delete, it stays.
- A requested delete (an encoder's DELETE) is a hint: never sooner than the rules allow,
  never while a stored manifest names the object.
- Nothing is deleted sooner than ``min_delay`` after it was scheduled.
- Only objects under ``scope`` (the publisher's prefix) are deleted without being asked: a
  manifest may name another stream's objects (``../ch2/seg_1.ts``, ``/ads/ad.ts``), which
  are not the publisher's to remove.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable, Mapping
from typing import Final

from .manifests import Reference

__all__ = ["DeleteWindow"]

#: Roles deleted automatically when they leave (media, not inits, keys or playlists).
AUTO_DELETED: Final = frozenset({"segment", "part", "hint", "media"})
#: When an object left is kept so a later encoder DELETE finds its due time; entries are
#: pruned past this many, older than the horizon.
_LEAVE_DUE_KEEP: Final = 10_000
_LEAVE_DUE_HORIZON: Final = 600.0


class DeleteWindow:
    """Which objects to delete and when, for one destination.

    ``clock()`` returns the current time in seconds (the event loop's in the publisher, a
    counter in tests). ``auto_delete``: delete media that left every manifest without being
    asked, if its path starts with ``scope``. ``min_delay``: never delete sooner than this
    after scheduling.
    """

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        auto_delete: bool = True,
        min_delay: float = 0.0,
        scope: str = "",
    ) -> None:
        self.clock = clock
        self.auto_delete = auto_delete
        self.scope = scope
        self.min_delay = min_delay
        #: Which stored manifests name each object.
        self.holders: dict[str, set[str]] = {}
        #: When each object that left a manifest may go.
        self.leave_due: dict[str, float] = {}
        self.requested: set[str] = set()
        #: Scheduled deletes: path -> due time (the heap may hold stale entries).
        self.due: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        #: Set by clear(): nothing is scheduled any more.
        self.closed = False

    def held(self, path: str) -> bool:
        return path in self.holders

    def stored(
        self,
        manifest: str,
        old: Mapping[str, Reference],
        new: Mapping[str, Reference],
        *,
        target: float,
        playlist_duration: float,
        shared: int = 0,
    ) -> list[str]:
        """A version of ``manifest`` naming ``new`` was stored over one naming ``old``.
        ``target``: its target duration; ``playlist_duration``: the duration of the
        playlist objects leave. ``shared``: the first ``shared`` paths of ``old`` and
        ``new`` are the same, in the same order (a playlist that grew at its end, or whose
        last segments' parts changed), so only what comes after them is visited. Returns
        the objects nothing names any more that will not be deleted (the caller may
        forget what it knows of them)."""
        now = self.clock()
        # What both versions name is held by this manifest already (``old`` is what the
        # last call for it named as ``new``), with no delete pending: only the difference
        # is visited, so storing a long EVENT playlist again costs what it changed.
        if shared:
            added: Iterable[str] = [
                p for p in itertools.islice(new, shared, None) if p not in old
            ]
            leaving: Iterable[tuple[str, Reference]] = [
                (p, ref) for p, ref in itertools.islice(old.items(), shared, None)
                if p not in new
            ]
        else:
            added = new.keys() - old.keys()
            gone = old.keys() - new.keys()
            leaving = [(p, ref) for p, ref in old.items() if p in gone] if gone else ()
        for path in added:
            self.holders.setdefault(path, set()).add(manifest)
            self.due.pop(path, None)  # named again: a pending delete is void
        forget: list[str] = []
        for path, ref in leaving:
            if ref.role in ("part", "hint"):
                delay = 3 * target
            else:
                delay = (ref.duration or target) + playlist_duration
            self.leave_due[path] = max(self.leave_due.get(path, 0.0), now + delay)
            holders = self.holders.get(path)
            if holders is not None:
                holders.discard(manifest)
                if holders:
                    continue
                del self.holders[path]
            if path in self.requested or (
                self.auto_delete and ref.role in AUTO_DELETED and path.startswith(self.scope)
            ):
                self._schedule(path, self.leave_due[path])
            else:
                forget.append(path)
        if len(self.leave_due) > _LEAVE_DUE_KEEP:
            # An encoder's DELETE comes soon after an object leaves; older entries only
            # cost memory (a late DELETE falls back to the caller's delay).
            horizon = now - _LEAVE_DUE_HORIZON
            self.leave_due = {p: t for p, t in self.leave_due.items() if t > horizon}
        return forget

    def request(self, path: str, fallback_delay: float) -> None:
        """An encoder asked for ``path`` to go: once no stored manifest names it, at the
        time it left (or ``fallback_delay`` from now if it never left a manifest)."""
        self.requested.add(path)
        if path in self.holders:
            return  # deleted once it leaves
        due = self.leave_due.get(path)
        if due is None:
            due = self.clock() + fallback_delay
        self._schedule(path, due)

    def _schedule(self, path: str, due: float) -> None:
        if self.closed:
            return  # a manifest stored while closing: nobody is left to carry it out
        due = max(due, self.clock() + self.min_delay)
        self.due[path] = due
        heapq.heappush(self._heap, (due, path))

    def next_due(self) -> float | None:
        """When the earliest scheduled delete comes due (``None``: nothing scheduled)."""
        heap = self._heap
        while heap and self.due.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)  # rescheduled or voided since
        return heap[0][0] if heap else None

    def pop_due(self) -> list[str]:
        """The objects to delete now (taken off the schedule)."""
        now = self.clock()
        out: list[str] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            due, path = heapq.heappop(heap)
            if self.due.get(path) != due:
                continue  # rescheduled since
            del self.due[path]
            if path in self.holders:
                continue  # named again: it goes when it leaves again
            out.append(path)
        return out

    def republished(self, path: str) -> None:
        """``path`` was published again: what its old version earned (a scheduled delete,
        a requested one, its leave time) is void; the new version goes by the rules
        again, once a manifest that names it drops it or a delete is requested."""
        self.due.pop(path, None)
        self.requested.discard(path)
        self.leave_due.pop(path, None)

    def deleted(self, path: str) -> None:
        """``path`` was deleted: nothing more to remember about it."""
        self.requested.discard(path)
        self.leave_due.pop(path, None)

    def clear(self) -> None:
        """Abandon every scheduled delete and schedule no more (closing). What stored
        manifests name is still tracked, so a delete already started can see that it is
        void (:meth:`held`)."""
        self.closed = True
        self.due.clear()
        self._heap.clear()
