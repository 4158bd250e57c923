"""The sync record: what was last synced between one local tree and one container folder.

MediaStore keeps no user metadata, returns an object's SHA-256 only in the PutObject answer,
and its ETag is not a hash a client can compute. So after every verified transfer the sync
remembers a fact: *the object at this path with this ETag has this SHA-256*. The next sync
skips a path only when the object still has that ETag **and** the local file still hashes to
that SHA-256; an ETag changes on every PUT, so an object changed by someone else is noticed,
and the local file is always hashed, so a change that keeps size and modification time is
noticed too.

Where: outside the tree, in the user's cache folder: ``$XDG_CACHE_HOME/msd/sync/`` (by
default ``~/.cache/msd/sync/``), or the folder given as ``record_dir`` (``--record-dir``).
One file per (local root, endpoint, container folder, shard):
``<key>.<i>-of-<n>.jsonl``, ``key`` = 32 hex digits of SHA-256 of the local root's real
path, the endpoint and the folder. Shards write separate files so that parallel workers never
write the same one; loading reads every shard's file of that key (a re-sharded job keeps its
record). A synced-down tree therefore holds exactly what the container holds, and a
read-only source can be recorded.

How: an append-only journal, one JSON line per verified transfer or deletion, written as the
run goes (one ``write`` each, no buffering), so a process killed at any point loses at most
the lines of the transfers that had not completed; at the end of a run the file is rewritten
compactly (a temporary file, then a rename), under a lock on the record folder, merging
what another run of the same record wrote meanwhile (:meth:`SyncRecord.close`). A line
that does not parse (a torn write, a damaged file) is ignored.

Every entry is a fact about one immutable object version, so an old, partial or damaged
record can only cause a transfer, never a wrong skip. A lost record means a full compare:
uploads send every file again, downloads fetch every object whose local file exists and
compare the bytes (the file is left untouched when they match). A record that cannot be
written costs the same on the next run, and :attr:`SyncRecord.error` says why.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from .shard import Shard, in_shard

__all__ = ["RecordEntry", "SyncRecord", "default_record_dir"]

_VERSION: Final = 2


def default_record_dir() -> Path:
    """``$XDG_CACHE_HOME/msd/sync``, or ``~/.cache/msd/sync`` when the variable is unset or
    not an absolute path (as the XDG Base Directory specification says)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    cache = Path(base) if base and os.path.isabs(base) else Path.home() / ".cache"
    return cache / "msd" / "sync"


@dataclass(frozen=True, slots=True)
class RecordEntry:
    """One synced path: its size and mtime when synced, its SHA-256 and the object's ETag."""

    size: int
    mtime_ns: int
    sha256: str
    etag: str


def _entry(data: Any) -> tuple[str, RecordEntry | None] | None:
    """The ``(path, entry or None for a deletion)`` of one journal line, or None."""
    if not isinstance(data, dict):
        return None
    rel = data.get("p")
    if not isinstance(rel, str):
        return None
    if data.get("x") == 1:
        return rel, None
    size, mtime, sha, etag = data.get("s"), data.get("m"), data.get("h"), data.get("e")
    if (
        isinstance(size, int) and isinstance(mtime, int)
        and isinstance(sha, str) and len(sha) == 64 and isinstance(etag, str) and etag
    ):
        return rel, RecordEntry(size, mtime, sha, etag)
    return None


class SyncRecord:
    """The record of one (local root, endpoint, folder), for one shard. Not thread-safe;
    used from one event loop. ``directory`` defaults to :func:`default_record_dir`."""

    def __init__(
        self,
        root: Path,
        endpoint: str,
        prefix: str,
        shard: Shard = (0, 1),
        directory: str | os.PathLike[str] | None = None,
    ) -> None:
        self.root = Path(os.path.realpath(root))
        self.endpoint = endpoint
        self.prefix = prefix
        self.shard = shard
        self.directory = Path(directory) if directory is not None else default_record_dir()
        self._key = hashlib.sha256(
            f"{self.root}\0{endpoint}\0{prefix}".encode("utf-8", "surrogateescape")
        ).hexdigest()[:32]
        self.path = self.directory / f"{self._key}.{shard[0]}-of-{shard[1]}.jsonl"
        self._entries: dict[str, RecordEntry] = {}
        #: What this run recorded (``None``: forgotten): it wins over the file at close.
        self._changed: dict[str, RecordEntry | None] = {}
        #: The paths this shard's own file held when loaded: one missing from it at close
        #: was forgotten by another run, not to be brought back from this run's memory.
        self._own_at_load: set[str] = set()
        self._fd: int | None = None
        self._lines = 0
        #: Why the record could not be written (the first failure), or None.
        self.error: OSError | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def load(self) -> None:
        """Read every shard's file of this key; what cannot be read is ignored (a lost
        record only costs a full compare)."""
        try:
            files = sorted(
                self.directory.glob(f"{self._key}.*.jsonl"), key=lambda p: p.stat().st_mtime_ns
            )
        except OSError:
            return
        for file in files:  # oldest first: newer files win on a conflict
            _read_into(file, self._entries)
        own: dict[str, RecordEntry] = {}
        _read_into(self.path, own)
        self._own_at_load = set(own)

    def get(self, relative_path: str) -> RecordEntry | None:
        return self._entries.get(relative_path)

    def set(self, relative_path: str, entry: RecordEntry) -> None:
        self._entries[relative_path] = entry
        self._changed[relative_path] = entry
        self._append(
            {"p": relative_path, "s": entry.size, "m": entry.mtime_ns, "h": entry.sha256,
             "e": entry.etag}
        )

    def forget(self, relative_path: str) -> None:
        if self._entries.pop(relative_path, None) is not None:
            self._changed[relative_path] = None
            self._append({"p": relative_path, "x": 1})

    def _append(self, data: dict[str, Any]) -> None:
        if self.error is not None:
            return
        line = (json.dumps(data, separators=(",", ":")) + "\n").encode()
        try:
            if self._fd is None:
                self.directory.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            # One write of one whole line: a kill between two lines loses nothing written.
            os.write(self._fd, line)
            self._lines += 1
        except OSError as exc:
            self.error = exc

    def close(self) -> None:
        """Rewrite this shard's file compactly (only when this run wrote to it).

        Another run of the same tree, endpoint and folder may have written the file since
        this one loaded it, or replaced it (its own close), after which this run's appends
        went to the file it replaced. So the rewrite is, under a lock: what the file holds
        now, what this run loaded from elsewhere (another shard layout's files), then what
        this run recorded; nothing either run recorded or forgot is lost (on a conflict the
        run closing last keeps its fact, and either fact is true)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        os.close(fd)
        if self.error is not None:
            return
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            with _locked(self.directory):
                entries: dict[str, RecordEntry] = {}
                _read_into(self.path, entries)
                for rel, e in self._entries.items():
                    if (
                        rel not in entries and rel not in self._own_at_load
                        and in_shard(rel, self.shard)
                    ):
                        entries[rel] = e
                for rel, changed in self._changed.items():
                    if changed is None:
                        entries.pop(rel, None)
                    elif in_shard(rel, self.shard):
                        entries[rel] = changed
                header = {"v": _VERSION, "root": str(self.root), "endpoint": self.endpoint,
                          "prefix": self.prefix, "shard": list(self.shard)}
                lines = [json.dumps(header, separators=(",", ":"))]
                for rel, e in sorted(entries.items()):
                    lines.append(json.dumps(
                        {"p": rel, "s": e.size, "m": e.mtime_ns, "h": e.sha256, "e": e.etag},
                        separators=(",", ":"),
                    ))
                tmp.write_text("\n".join(lines) + "\n", "utf-8")
                os.replace(tmp, self.path)
        except OSError as exc:
            self.error = exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def _read_into(file: Path, entries: dict[str, RecordEntry]) -> None:
    """Apply a journal file's lines to ``entries`` in order; what cannot be read is
    ignored (a lost record only costs a full compare)."""
    try:
        text = file.read_bytes().decode("utf-8", "replace")
    except OSError:
        return
    for line in text.splitlines():
        try:
            found = _entry(json.loads(line))
        except ValueError:
            continue
        if found is None:
            continue
        rel, entry = found
        if entry is None:
            entries.pop(rel, None)
        else:
            entries[rel] = entry


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """An exclusive ``flock`` on the record folder while the block runs: two runs compact
    one after the other (the folder, not the file, which a compaction replaces; no lock
    file left beside the records). Without ``fcntl`` (Windows), no lock."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
