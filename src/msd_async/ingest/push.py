"""The folder pusher: publishes what an encoder writes into a folder, as it completes.

Encoders that write files (ffmpeg's ``hls`` and ``dash`` muxers, Shaka Packager, GPAC)
finish a file either by closing it in place or, better, by writing ``NAME.tmp`` and renaming
it to ``NAME`` (ffmpeg ``-hls_flags temp_file``). The pusher watches the folder with
watchfiles (inotify on Linux, FSEvents on macOS, ReadDirectoryChangesW on Windows) and:

- never publishes a temporary file (``*.tmp``, ``*.part``, ``*~``, names starting with ``.``);
- publishes a file that appeared by rename at once, and a file written in place once it has
  had no change for ``settle`` seconds (a file still being written keeps changing);
- publishes media before the playlists that reference them: a batch of changes goes media
  first, and an HLS playlist first flushes any not-yet-published file it names;
- mirrors deletions (the publisher delays them by the sliding-window rules);
- on start, publishes what is already there, oldest first and playlists last, so a restart
  catches up; on stop, scans once more so every file completed before the stop is published.

File bodies are read when they are handed over: an encoder may delete a segment soon after
(``-hls_flags delete_segments``), and a playlist is rewritten every segment.
"""

from __future__ import annotations

import os
import posixpath
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import anyio.to_thread

from .. import rules
from ..errors import ClientValidationError, MediaStoreError
from ._publisher import PublisherLike
from ._report import ObjectRecord, Reporter, logger

__all__ = [
    "DEFAULT_SETTLE",
    "TEMPORARY_SUFFIXES",
    "FolderPusher",
    "is_temporary",
]

#: Suffixes of files that are never published: encoders' and editors' work in progress.
TEMPORARY_SUFFIXES: Final = (".tmp", ".part", ".partial", ".crdownload", "~")
#: Seconds without a change after which a file written in place counts as complete.
DEFAULT_SETTLE: Final = 1.0
_MANIFESTS: Final = (".m3u8", ".m3u", ".mpd")


class _Event(Protocol):
    def is_set(self) -> bool: ...

    async def wait(self) -> Any: ...


def is_temporary(name: str) -> bool:
    """Whether a file name is a temporary file the pusher ignores."""
    base = os.path.basename(name)
    return base.startswith(".") or base.lower().endswith(TEMPORARY_SUFFIXES)


def _is_manifest(name: str) -> bool:
    return name.lower().endswith(_MANIFESTS)


@dataclass(slots=True)
class _Seen:
    """What was last handed over for a path: its size and modification time."""

    size: int
    mtime_ns: int


def _hls_references(text: str) -> list[str]:
    """Relative URIs an HLS playlist names: its non-comment lines and ``URI="..."``
    attributes (EXT-X-MAP, EXT-X-PART, EXT-X-KEY; RFC 8216 section 4.3)."""
    found: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if not line.startswith("#"):
            found.append(line)
            continue
        start = line.find('URI="')
        while start != -1:
            end = line.find('"', start + 5)
            if end == -1:
                break
            found.append(line[start + 5 : end])
            start = line.find('URI="', end)
    return [uri for uri in found if "://" not in uri and not uri.startswith("/")]


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
    ``directory`` is not a folder.
    """

    def __init__(
        self,
        publisher: PublisherLike,
        directory: str | os.PathLike[str],
        *,
        settle: float = DEFAULT_SETTLE,
        on_object: Callable[[ObjectRecord], object] | None = None,
        drain_timeout: float = 30.0,
    ) -> None:
        self.directory = Path(directory).resolve()
        if not self.directory.is_dir():
            raise NotADirectoryError(
                f"{directory} is not a folder; give the encoder's output folder"
            )
        self._publisher = publisher
        self.settle = settle
        self._drain_timeout = drain_timeout
        self.reporter = Reporter(on_object)
        self._seen: dict[str, _Seen] = {}
        # path -> monotonic time from which it may be published (reset by each change)
        self._pending: dict[str, float] = {}
        self._deletions: list[str] = []
        self.skipped_temporary = 0

    # --- scanning -----------------------------------------------------------------------
    def _relative(self, path: str | os.PathLike[str]) -> str | None:
        try:
            rel = Path(path).resolve().relative_to(self.directory)
        except ValueError:
            return None
        return rel.as_posix()

    def _listing(self) -> list[tuple[str, os.stat_result]]:
        """Every non-temporary file under the folder with its stat, oldest first and
        manifests last (so a catch-up publishes media before what references it)."""
        found: list[tuple[str, os.stat_result]] = []
        for root, dirs, files in os.walk(self.directory):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in files:
                full = os.path.join(root, name)
                rel = Path(full).relative_to(self.directory).as_posix()
                if is_temporary(name):
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
            seen = self._seen.get(rel)
            if seen is not None and (seen.size, seen.mtime_ns) == (st.st_size, st.st_mtime_ns):
                continue
            self._pending.pop(rel, None)
            count += await self._publish(rel)
        return count

    # --- publishing ---------------------------------------------------------------------
    async def _publish(self, rel: str) -> int:
        """Hand one file over (after what it references, for an HLS playlist); returns 1
        if it was handed over, 0 if it was gone or refused."""
        full = self.directory / rel
        started = time.monotonic()

        def read() -> tuple[bytes, os.stat_result] | None:
            try:
                with open(full, "rb") as f:
                    st = os.fstat(f.fileno())
                    return f.read(), st
            except (FileNotFoundError, IsADirectoryError):
                return None

        got = await anyio.to_thread.run_sync(read)
        if got is None:
            return 0
        data, st = got
        if rel.lower().endswith(".m3u8"):
            await self._flush_references(rel, data)
        self._seen[rel] = _Seen(st.st_size, st.st_mtime_ns)
        try:
            rules.normalize_object_path(rel)
            # Files on disk can wait: back-pressure, never a drop (the relay cannot).
            publication = await self._publisher.publish(rel, data, wait_for_room=True)
        except ClientValidationError as exc:
            self.reporter.record("PUT", rel, len(data), started, "refused", str(exc))
            return 0
        except MediaStoreError as exc:
            self.reporter.record("PUT", rel, len(data), started, "refused", str(exc))
            return 0
        size = len(data)
        self.reporter.follow("PUT", rel, lambda: size, started, publication)
        return 1

    async def _flush_references(self, playlist: str, data: bytes) -> None:
        base = posixpath.dirname(playlist)
        for uri in _hls_references(data.decode("utf-8", "replace")):
            rel = posixpath.normpath(posixpath.join(base, uri.split("?")[0]))
            if rel in self._pending or (rel not in self._seen and not is_temporary(rel)
                                        and (self.directory / rel).is_file()):
                self._pending.pop(rel, None)
                await self._publish(rel)

    async def _delete(self, rel: str) -> None:
        self._pending.pop(rel, None)
        if self._seen.pop(rel, None) is None:
            return  # never published: nothing to mirror
        try:
            await self._publisher.delete(rel)
        except MediaStoreError as exc:
            logger.warning("DELETE %s refused: %s", rel, exc)
            return
        self.reporter.record("DELETE", rel, 0, time.monotonic(), "delete scheduled")

    # --- watching -----------------------------------------------------------------------
    def _note_changes(self, changes: Iterable[tuple[Any, str]]) -> None:
        """Sort a batch of watchfiles changes into pending publications and deletions."""
        from watchfiles import Change

        now = time.monotonic()
        renamed_from = {
            self._relative(p) for change, p in changes if change == Change.deleted
        }
        for change, raw in changes:
            rel = self._relative(raw)
            if rel is None:
                continue
            if is_temporary(rel):
                if change != Change.deleted:
                    self.skipped_temporary += 1
                continue
            if change == Change.deleted:
                if not (self.directory / rel).exists():
                    self._deletions.append(rel)
                continue
            if (self.directory / rel).is_dir():
                continue
            # A file that replaced its temporary twin in this batch was renamed into place:
            # it is complete now. Anything else waits until it stops changing.
            by_rename = any(
                r is not None and is_temporary(r) and r.rsplit(".", 1)[0] == rel
                for r in renamed_from
            )
            self._pending[rel] = now if by_rename else now + self.settle

    async def _drain_due(self, *, force: bool = False) -> None:
        """Publish pending files whose settle time has passed, media before manifests, and
        mirror deletions."""
        now = time.monotonic()
        due = [p for p, t in self._pending.items() if force or t <= now]
        due.sort(key=lambda p: (_is_manifest(p), self._pending[p]))
        for rel in due:
            if self._pending.pop(rel, None) is not None:
                await self._publish(rel)
        deletions, self._deletions = self._deletions, []
        for rel in deletions:
            await self._delete(rel)

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
                    self._note_changes(changes)
                # Also reached every rust_timeout ms without changes: files settle on time.
                await self._drain_due()
        finally:
            await watcher.aclose()
        await self._drain_due(force=True)
        await self.scan()
        await self.reporter.drain(self._drain_timeout)
