"""The folder pusher: publishes what an encoder writes into a folder, as it completes.

Encoders that write files (ffmpeg's ``hls`` and ``dash`` muxers, Shaka Packager, GPAC)
finish a file either by closing it in place or, better, by writing ``NAME.tmp`` and renaming
it to ``NAME`` (ffmpeg ``-hls_flags temp_file``). The pusher watches the folder with
watchfiles (inotify on Linux, FSEvents on macOS, ReadDirectoryChangesW on Windows) and:

- never publishes a temporary file (``*.tmp``, ``*.part``, ``*~``) nor anything whose name or
  a folder's on its way starts with ``.`` (:func:`is_ignored`);
- follows a symbolic link only to a file inside the folder (published under the link's
  name); a link out of the folder, or to a folder, is never published, by the start-up
  scan, the watcher or the final scan alike, and neither is a path through a link to a
  folder (the watcher's included: it names a folder by any of its names, and the pusher
  takes the folder's own path);
- publishes a file that appeared by rename at once, and a media file written in place once
  it has had no change for ``settle`` seconds (a file still being written keeps changing;
  judged by its modification time too, as the watcher reports a change a little late);
  a manifest written in place goes once it has been quiet for 0.2 s, and at the latest
  ``settle`` seconds after its first unpublished change, so a playlist rewritten more
  often than ``settle`` is still published as the stream runs (an empty one, caught
  truncated by its rewrite, never);
- publishes media before the manifests that reference them: a batch of changes goes media
  first, and a playlist or MPD first flushes any never-published file it names (one
  already published and being rewritten in place waits for its settle time); what it
  names is read with :func:`msd_async.live.manifests.parse_manifest`, the publisher's own
  parser;
- never publishes a manifest that names a file MediaStore refuses to store (a name with a
  space or a non-ASCII character): that version is refused with one line naming the file;
- mirrors deletions (the publisher delays them by the sliding-window rules);
- on start, publishes what is already there, oldest first and playlists last, so a restart
  catches up (on what was written meanwhile: a file deleted while no pusher ran stays at
  the origin, as the pusher keeps no memory of what it published, and the origin's folder
  may hold what others put there); on stop, scans once more so every file completed
  before the stop is published, waiting up to ``settle`` seconds for files written in
  place to be unchanged for ``settle`` (one still changing then is not published:
  nothing half-written), and every published file deleted before the stop has its
  deletion mirrored, reported by the watcher yet or not.

File bodies are read when they are handed over: an encoder may delete a segment soon after
(``-hls_flags delete_segments``), and a playlist is rewritten every segment.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import anyio
import anyio.to_thread

from .. import rules
from ..errors import ClientValidationError, MediaStoreError
from ..live.manifests import ManifestError, ManifestInfo, parse_manifest
from ._publisher import PublisherLike, check_seconds
from ._report import ObjectRecord, Reporter, cause, logger

__all__ = [
    "DEFAULT_SETTLE",
    "TEMPORARY_SUFFIXES",
    "FolderPusher",
    "is_ignored",
    "is_temporary",
]

#: Suffixes of files that are never published: encoders' and editors' work in progress.
TEMPORARY_SUFFIXES: Final = (".tmp", ".part", ".partial", ".crdownload", "~")
#: Seconds without a change after which a file written in place counts as complete.
DEFAULT_SETTLE: Final = 1.0
#: A manifest written in place goes once quiet this long (writers rewrite one in a single
#: write, and a player waits for every new version), ``settle`` at the latest.
_MANIFEST_QUIET: Final = 0.2
_MANIFESTS: Final = (".m3u8", ".m3u", ".mpd")


class _Event(Protocol):
    def is_set(self) -> bool: ...

    async def wait(self) -> Any: ...


def is_temporary(name: str) -> bool:
    """Whether a file name is a temporary file the pusher ignores."""
    base = os.path.basename(name)
    return base.startswith(".") or base.lower().endswith(TEMPORARY_SUFFIXES)


def is_ignored(rel: str) -> bool:
    """Whether the pusher never publishes ``rel`` (a path relative to its folder, with
    ``/`` separators) by its name: a temporary file, or anything under a folder whose name
    starts with ``.``."""
    parts = rel.split("/")
    return is_temporary(parts[-1]) or any(part.startswith(".") for part in parts[:-1])


def _is_manifest(name: str) -> bool:
    return name.lower().endswith(_MANIFESTS)


@dataclass(slots=True)
class _Seen:
    """What was last handed over for a path: its size and modification time."""

    size: int
    mtime_ns: int


class FolderPusher:
    """Publishes an encoder's output folder through a live publisher.

    ``publisher``: a started :class:`msd_async.live.LivePublisher` (or anything with its
    ``publish``/``delete`` methods); the pusher does not close it. ``directory``: the
    folder; paths are published relative to it (with ``/`` separators). ``settle``: seconds
    a file written in place must stay unchanged before it is published (default 1.0; files
    that appear by rename are published at once). ``on_object`` is called with an
    :class:`~msd_async.ingest.ObjectRecord` once each object has its outcome (also logged
    on the ``msd_async.ingest`` logger).

    :meth:`run` watches until a stop event is set. Raises ``NotADirectoryError`` if
    ``directory`` is not a folder. ``media_deadline``: seconds a segment or part is
    retried before the publisher gives it up (default: its duration).
    """

    def __init__(
        self,
        publisher: PublisherLike,
        directory: str | os.PathLike[str],
        *,
        settle: float = DEFAULT_SETTLE,
        on_object: Callable[[ObjectRecord], object] | None = None,
        drain_timeout: float = 30.0,
        media_deadline: float | None = None,
    ) -> None:
        # An endless settle time would never publish a file written in place, and the
        # stop waits up to it.
        check_seconds("settle", settle, zero=True, endless=False)
        check_seconds("drain_timeout", drain_timeout, zero=True)
        check_seconds("media_deadline", media_deadline)
        self.directory = Path(directory).resolve()
        if not self.directory.is_dir():
            raise NotADirectoryError(
                f"{directory} is not a folder; give the encoder's output folder"
            )
        self._publisher = publisher
        self.settle = settle
        self._drain_timeout = drain_timeout
        self._media_deadline = media_deadline
        # manifest path -> monotonic time of its first change not yet published
        self._first_change: dict[str, float] = {}
        self.reporter = Reporter(on_object)
        self._seen: dict[str, _Seen] = {}
        # path -> monotonic time from which it may be published (reset by each change)
        self._pending: dict[str, float] = {}
        # pending media written in place: published only once their own modification time
        # is settle old (the watcher hears of a change some milliseconds after it happens)
        self._in_place: set[str] = set()
        self._deletions: list[str] = []
        # manifest path -> its last version whose references all passed: the next version
        # is parsed from where it stopped, and what it named is not checked again
        self._flushed: dict[str, ManifestInfo] = {}
        #: Changes to temporary or hidden files (is_ignored) the watcher reported and the
        #: pusher left alone.
        self.skipped_temporary = 0
        self._abandoned = False
        #: The stop's final pass and drain, which abandon() cuts short.
        self._finishing: anyio.CancelScope | None = None

    # --- scanning -----------------------------------------------------------------------
    def _relative(self, path: str | os.PathLike[str]) -> str | None:
        """The watcher's ``path`` as the scans know it: relative to the folder, through
        its real folders. The watcher follows links to folders, and reports what is
        written in a folder under whichever of its names it watched last (``link/x.ts``
        for ``real/x.ts``); None for a path outside the folder."""
        # The folder resolved, not the file: a link to a file is known by its own name;
        # where it points is _admissible's.
        full = os.path.abspath(path)
        try:
            rel = Path(os.path.realpath(os.path.dirname(full)), os.path.basename(full))
            return rel.relative_to(self.directory).as_posix()
        except ValueError:
            return None

    def _admissible(self, rel: str) -> bool:
        """Whether ``rel`` may be published: not ignored by its name (:func:`is_ignored`),
        and a regular file or a link to a regular file inside the folder. The one rule for
        the start-up scan, the watcher, a manifest's references and the final scan (and
        checked again when the file is read)."""
        if is_ignored(rel):
            return False
        full = self.directory / rel
        try:
            if os.path.realpath(full.parent) != str(full.parent):
                # Through a link to a folder: the scans never follow one, so neither does
                # anything else (the file is published under its own path, once).
                return False
            target = full.resolve(strict=True)
            target.relative_to(self.directory)
        except (OSError, ValueError, RuntimeError):
            return False  # gone, a dangling or looping link, or a link out of the folder
        return target.is_file()

    def _handed_over(self, rel: str, size: int, mtime_ns: int) -> bool:
        """Whether ``rel`` was last handed over as it is now (the same size and time)."""
        seen = self._seen.get(rel)
        return seen is not None and (seen.size, seen.mtime_ns) == (size, mtime_ns)

    def _listing(self, under: str = "") -> list[tuple[str, os.stat_result]]:
        """Every non-temporary file under the folder (or its subfolder ``under``) with its
        stat, oldest first and manifests last (so a catch-up publishes media before what
        references it)."""
        found: list[tuple[str, os.stat_result]] = []
        for root, dirs, files in os.walk(self.directory / under):
            # Only spares the walk: _admissible() decides, for the watcher's paths too.
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in files:
                full = os.path.join(root, name)
                rel = Path(full).relative_to(self.directory).as_posix()
                if not self._admissible(rel):
                    continue
                try:
                    found.append((rel, os.stat(full)))
                except FileNotFoundError:
                    continue
        found.sort(key=lambda item: (_is_manifest(item[0]), item[1].st_mtime_ns, item[0]))
        return found

    async def scan(self) -> int:
        """Publish every file that is new or changed since it was last handed over, oldest
        first and manifests last; returns how many were handed over."""
        listing = await anyio.to_thread.run_sync(self._listing)
        count = 0
        for rel, st in listing:
            if self._handed_over(rel, st.st_size, st.st_mtime_ns):
                continue
            self._pending.pop(rel, None)
            count += await self._publish(rel)
        return count

    # --- publishing ---------------------------------------------------------------------
    async def _publish(self, rel: str) -> int:
        """Hand one file over (after what it references, for a manifest); returns 1 if it
        was handed over, 0 if it was gone, not admissible or refused."""
        full = self.directory / rel
        started = time.monotonic()
        self._first_change.pop(rel, None)

        def read() -> tuple[bytes, os.stat_result] | None:
            if not self._admissible(rel):
                return None
            try:
                with open(full, "rb") as f:
                    before = os.fstat(f.fileno())
                    data = f.read()
                    after = os.fstat(f.fileno())
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                return None
            if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
                return data, before  # changed while read: _seen stays stale, read it again
            return data, after

        got = await anyio.to_thread.run_sync(read)
        if got is None:
            return 0
        data, st = got
        if not data and _is_manifest(rel):
            # An empty manifest is one caught truncated by its rewrite (a writer in place
            # truncates first): the write that follows is a change that brings it back.
            return 0
        if len(data) != st.st_size:
            self._pending[rel] = time.monotonic() + _MANIFEST_QUIET  # written as we read
            return 0
        self._seen[rel] = _Seen(st.st_size, st.st_mtime_ns)
        self._in_place.discard(rel)
        if _is_manifest(rel):
            refused = await self._flush_references(rel, data)
            if refused is not None:
                self.reporter.record("PUT", rel, len(data), started, "refused", refused)
                return 0
        try:
            rules.normalize_object_path(rel)
            # Files on disk can wait: back-pressure, never a drop (the relay cannot).
            publication = await self._publisher.publish(
                rel, data, duration=self._media_deadline, wait_for_room=True
            )
        except MediaStoreError as exc:
            self.reporter.record("PUT", rel, len(data), started, "refused", cause(exc))
            return 0
        size = len(data)
        self.reporter.follow("PUT", rel, lambda: size, started, publication)
        return 1

    async def _flush_references(self, manifest: str, data: bytes) -> str | None:
        """Publish what ``manifest`` names that is not published yet; returns why the
        manifest must not be published (it names a file MediaStore refuses), else None.
        A manifest that does not parse names nothing here: the publisher stores it as
        given."""
        previous = self._flushed.get(manifest)
        try:
            info = parse_manifest(manifest, data, previous=previous)
        except ManifestError:
            return None
        checked = {} if previous is None else previous.references
        for ref in info.references.values():
            rel = ref.path
            before = checked.get(rel)
            if before is None or before.gap:
                try:
                    rules.normalize_object_path(rel)
                except ClientValidationError as exc:
                    if ref.gap:
                        continue  # marked as a gap: nobody fetches it
                    return (f"it names {rel!r}, which MediaStore refuses to store ({exc}); "
                            "rename the encoder's output")
            # Only what was never published: a file already at the origin and changing
            # again is being rewritten in place, maybe half-written yet; it goes once it
            # has settled, and meanwhile the origin has its previous version.
            if rel not in self._seen and (rel in self._pending or self._admissible(rel)):
                self._pending.pop(rel, None)
                await self._publish(rel)
        self._flushed[manifest] = info
        return None

    async def _delete(self, rel: str) -> None:
        self._pending.pop(rel, None)
        self._in_place.discard(rel)
        self._first_change.pop(rel, None)
        self._flushed.pop(rel, None)
        if self._seen.pop(rel, None) is None:
            return  # never published: nothing to mirror
        try:
            await self._publisher.delete(rel)
        except MediaStoreError as exc:
            logger.warning("DELETE %s refused: %s", rel, exc)
            return
        self.reporter.record("DELETE", rel, 0, time.monotonic(), "delete scheduled")

    # --- watching -----------------------------------------------------------------------
    def _note_changes(self, changes: Iterable[tuple[Any, str]]) -> list[str]:
        """Sort a batch of watchfiles changes into pending publications and deletions;
        returns the folders it tells of as new, whose files it cannot tell of
        (:meth:`_note_new_folders`)."""
        from watchfiles import Change

        new_folders: list[str] = []

        now = time.monotonic()
        renamed_from = {
            self._relative(p) for change, p in changes if change == Change.deleted
        }
        for change, raw in changes:
            rel = self._relative(raw)
            if rel is None:
                continue
            if is_ignored(rel):
                if change != Change.deleted:
                    self.skipped_temporary += 1
                continue
            if change == Change.deleted:
                if not (self.directory / rel).exists():
                    self._deletions.append(rel)
                continue
            if change == Change.added and (self.directory / rel).is_dir():
                if not (self.directory / rel).is_symlink():  # as the scans: not followed
                    new_folders.append(rel)
                continue
            if not self._admissible(rel):
                continue
            # A file that replaced its temporary twin in this batch was renamed into place:
            # it is complete now. Anything else waits until it stops changing.
            by_rename = any(
                r is not None and is_temporary(r) and r.rsplit(".", 1)[0] == rel
                for r in renamed_from
            )
            if by_rename:
                self._pending[rel] = now
                self._in_place.discard(rel)
            elif _is_manifest(rel):
                first = self._first_change.setdefault(rel, now)
                quiet = min(self.settle, _MANIFEST_QUIET)
                self._pending[rel] = min(now + quiet, first + self.settle)
                self._in_place.add(rel)
            else:
                self._pending[rel] = now + self.settle
                self._in_place.add(rel)
        return new_folders

    async def _note_new_folders(self, folders: list[str]) -> None:
        """The files already in folders that appeared while watching: the watcher watches
        a new folder once it is told of it, and never reports what it held by then (a
        folder moved in whole, or filled at once by its writer). Each is taken as written
        in place: published once it has settled."""
        now = time.monotonic()
        for folder in folders:
            for rel, st in await anyio.to_thread.run_sync(self._listing, folder):
                if rel in self._pending or self._handed_over(rel, st.st_size, st.st_mtime_ns):
                    continue
                self._pending[rel] = now + self.settle
                self._in_place.add(rel)

    async def _drain_due(self) -> None:
        """Publish pending files whose settle time has passed, media before manifests, and
        mirror deletions."""
        now = time.monotonic()
        due = [p for p, t in self._pending.items() if t <= now]
        due.sort(key=lambda p: (_is_manifest(p), self._pending[p]))
        for rel in due:
            if self._pending.pop(rel, None) is None:
                continue
            if rel in self._in_place:
                needed = self._quiet_needed(rel)
                quiet = self._quiet_for(rel)
                if quiet is not None and quiet < needed:
                    # Changed after the last change the watcher told of: not settled yet.
                    self._pending[rel] = time.monotonic() + needed - quiet
                    continue
                self._in_place.discard(rel)
            await self._publish(rel)
        deletions, self._deletions = self._deletions, []
        for rel in deletions:
            await self._delete(rel)

    def _quiet_needed(self, rel: str) -> float:
        """How long ``rel``, written in place, must have been unchanged to be published."""
        if not _is_manifest(rel):
            return self.settle
        first = self._first_change.get(rel)
        if first is not None and time.monotonic() >= first + self.settle:
            return 0.0  # rewritten more often than settle: published as the stream runs
        return min(self.settle, _MANIFEST_QUIET)

    def _quiet_for(self, rel: str) -> float | None:
        """Seconds since ``rel`` last changed, by its modification time (None if gone)."""
        try:
            mtime = os.stat(self.directory / rel).st_mtime_ns
        except OSError:
            return None
        return max(0.0, (time.time_ns() - mtime) / 1e9)

    async def run(self, stop: _Event) -> None:
        """Catch up, then watch until ``stop`` is set, then scan once more: every file
        completed before the stop is handed over (playlists last), temporary files never.
        Waits up to ``drain_timeout`` seconds for the outcomes of what was handed over."""
        from watchfiles import awatch

        await self.scan()
        watcher = awatch(
            self.directory, stop_event=stop, debounce=200, step=20, rust_timeout=100,
            yield_on_timeout=True, recursive=True
        )
        try:
            async for changes in watcher:
                if changes:
                    await self._note_new_folders(self._note_changes(changes))
                # Also reached every rust_timeout ms without changes: files settle on time.
                await self._drain_due()
        finally:
            await watcher.aclose()
        with anyio.CancelScope() as self._finishing:
            if self._abandoned:
                self._finishing.cancel()
            await self._final_pass()
            await self.reporter.drain(self._drain_timeout)
        if self._abandoned:
            # Also the outcomes of what the cut final pass had already handed over.
            await self.reporter.drain(0.0)

    def abandon(self) -> None:
        """End the stop now (the one in progress, or the next): no more files are handed
        over, and the objects whose outcome is not known yet are reported ``unfinished at
        shutdown``. For a second signal: an operator who will not wait."""
        self._abandoned = True
        if self._finishing is not None:
            self._finishing.cancel()
        self.reporter.abandon()

    async def _final_pass(self) -> None:
        """At stop: hand over every file completed before it and nothing half-written. A
        file counts as complete once unchanged for ``settle`` seconds (it is waited for,
        ``settle`` at most); one that changes meanwhile is still being written and is
        left out, with a log line. A published file no longer in the folder has its
        deletion mirrored, whether the watcher reported it or not."""
        await self._drain_due()
        listing = await anyio.to_thread.run_sync(self._listing)
        # The watcher reports a change some milliseconds after it (it gathers a batch
        # first), and a stop drops what it had not reported: a file published, then
        # deleted just before the stop, is known only by its absence. Gone, not merely
        # unlisted, as for the watcher: a published file the listing leaves out but still
        # there (a link now pointing out of the folder) was not deleted.
        listed = {rel for rel, _ in listing}
        unlisted = [rel for rel in self._seen if rel not in listed]
        self._deletions += await anyio.to_thread.run_sync(
            lambda: [rel for rel in unlisted if not (self.directory / rel).exists()]
        )
        candidates: dict[str, tuple[int, int]] = {}
        for rel, st in listing:
            if rel in self._pending or not self._handed_over(rel, st.st_size, st.st_mtime_ns):
                candidates[rel] = (st.st_size, st.st_mtime_ns)
        self._pending.clear()
        self._in_place.clear()
        if candidates:
            youngest = max(mtime for _, mtime in candidates.values())
            wait = min(self.settle, (youngest - time.time_ns()) / 1e9 + self.settle)
            if wait > 0:
                await anyio.sleep(wait)
        for rel, before in candidates.items():  # already oldest first, manifests last
            try:
                st = os.stat(self.directory / rel)
            except OSError:
                continue
            if (st.st_size, st.st_mtime_ns) != before:
                logger.warning("PUT %s not published: still being written at stop", rel)
                continue
            if self._handed_over(rel, *before):
                continue  # handed over meanwhile, by a manifest that names it
            await self._publish(rel)
        deletions, self._deletions = self._deletions, []
        for rel in deletions:
            await self._delete(rel)
