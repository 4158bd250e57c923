"""The sync record: what was last synced between one local tree and one container folder.

MediaStore keeps no user metadata, returns an object's SHA-256 only in the PutObject answer,
and its ETag is not a hash a client can compute. So after every verified transfer the sync
remembers a fact: *the object at this path with this ETag has this SHA-256*. The next sync
skips a path only when the object still has that ETag **and** the local file still hashes to
that SHA-256; an ETag changes on every PUT, so an object changed by someone else is noticed,
and the local file is always hashed, so a change that keeps size and modification time is
noticed too.

Where: ``<local root>/.msd-sync/<key>.<i>-of-<n>.json``, ``key`` = 16 hex digits of
SHA-256(endpoint, folder), one file per shard so that parallel workers never write the same
file. Loading reads every shard's file of that key (a re-sharded job keeps its record). The
directory is never uploaded, deleted or listed as part of the tree.

Every entry is a fact about one immutable object version, so an old or partial record can
only cause a transfer, never a wrong skip. A lost record means a full compare: uploads send
every file again (as cheap as fetching it to compare), downloads fetch every object whose
local file exists and compare the bytes (the file is left untouched when they match).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from .shard import Shard, in_shard

__all__ = ["RECORD_DIR", "RecordEntry", "SyncRecord"]

#: The record's directory name inside the local root; excluded from every transfer.
RECORD_DIR: Final = ".msd-sync"
_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class RecordEntry:
    """One synced path: its size and mtime when synced, its SHA-256 and the object's ETag."""

    size: int
    mtime_ns: int
    sha256: str
    etag: str


class SyncRecord:
    """The record of one (endpoint, folder, local root), for one shard. Not thread-safe;
    used from one event loop."""

    def __init__(self, root: Path, endpoint: str, prefix: str, shard: Shard = (0, 1)) -> None:
        self.root = root
        self.endpoint = endpoint
        self.prefix = prefix
        self.shard = shard
        key = hashlib.sha256(f"{endpoint}\0{prefix}".encode()).hexdigest()[:16]
        self._key = key
        self.directory = root / RECORD_DIR
        self.path = self.directory / f"{key}.{shard[0]}-of-{shard[1]}.json"
        self._entries: dict[str, RecordEntry] = {}
        self.dirty = False

    def __len__(self) -> int:
        return len(self._entries)

    def load(self) -> None:
        """Read every shard's file of this key; unreadable files are ignored (a lost
        record only costs a full compare)."""
        try:
            files = sorted(
                self.directory.glob(f"{self._key}.*.json"), key=lambda p: p.stat().st_mtime_ns
            )
        except OSError:
            return
        for file in files:  # oldest first: newer files win on a conflict
            try:
                data = json.loads(file.read_text("utf-8"))
                if data.get("version") != _VERSION:
                    continue
                for rel, e in data["entries"].items():
                    self._entries[rel] = RecordEntry(
                        int(e["size"]), int(e["mtime_ns"]), str(e["sha256"]), str(e["etag"])
                    )
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                continue

    def get(self, relative_path: str) -> RecordEntry | None:
        return self._entries.get(relative_path)

    def set(self, relative_path: str, entry: RecordEntry) -> None:
        self._entries[relative_path] = entry
        self.dirty = True

    def forget(self, relative_path: str) -> None:
        if self._entries.pop(relative_path, None) is not None:
            self.dirty = True

    def save(self) -> None:
        """Write this shard's entries atomically (a temporary file, then a rename)."""
        entries: dict[str, Any] = {
            rel: {"size": e.size, "mtime_ns": e.mtime_ns, "sha256": e.sha256, "etag": e.etag}
            for rel, e in sorted(self._entries.items())
            if in_shard(rel, self.shard)
        }
        data = {
            "version": _VERSION,
            "endpoint": self.endpoint,
            "prefix": self.prefix,
            "shard": list(self.shard),
            "entries": entries,
        }
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(data, separators=(",", ":")), "utf-8")
            os.replace(tmp, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        self.dirty = False
