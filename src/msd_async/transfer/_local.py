"""The local side of a tree transfer: scanning, hashing, writing without half files.

Every function here blocks; the engine runs them in worker threads.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from .names import PART_SUFFIX

__all__ = ["LocalFile", "hash_file", "read_and_hash", "scan"]

_READ_SIZE: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class LocalFile:
    #: Path relative to the root, with "/" separators.
    relative_path: str
    path: Path
    size: int
    mtime_ns: int


def scan(root: Path) -> list[LocalFile]:
    """Every regular file under ``root`` (symlinks to files followed, to folders not),
    the tool's own names included (the caller selects). A missing root is empty."""
    found: list[LocalFile] = []
    if not root.is_dir():
        return found
    stack = [(root, "")]
    while stack:
        folder, rel = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            name = entry.name
            child_rel = f"{rel}{name}"
            if entry.is_dir(follow_symlinks=False):
                stack.append((Path(entry.path), child_rel + "/"))
                continue
            try:
                st = entry.stat()
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                found.append(LocalFile(child_rel, Path(entry.path), st.st_size, st.st_mtime_ns))
    found.sort(key=lambda f: f.relative_path)
    return found


def hash_file(path: Path) -> str:
    """The file's SHA-256, lowercase hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_READ_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def read_and_hash(path: Path, inline_limit: int) -> tuple[str, bytes | None, int]:
    """``(sha256, content or None, size)``: the content is returned when the file is at most
    ``inline_limit`` bytes (one read, sent from memory), else only hashed."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size <= inline_limit:
            data = f.read()
            return hashlib.sha256(data).hexdigest(), data, len(data)
        digest = hashlib.sha256()
        total = 0
        while chunk := f.read(_READ_SIZE):
            digest.update(chunk)
            total += len(chunk)
        return digest.hexdigest(), None, total


def temporary_path(final: Path) -> Path:
    return final.with_name(f".{final.name}{PART_SUFFIX}")


def write_atomically(final: Path, data: bytes, mtime: float | None = None) -> int:
    """Write ``data`` under a temporary name in the same folder, then rename it to ``final``:
    no reader ever sees a half file under the final name. ``mtime`` (seconds since the
    epoch) is set as its modification time. Returns the file's mtime (ns)."""
    tmp = temporary_path(final)
    try:
        try:
            f = open(tmp, "wb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            final.parent.mkdir(parents=True, exist_ok=True)
            f = open(tmp, "wb")  # noqa: SIM115
        with f:
            f.write(data)
            f.flush()  # the write must come before the mtime is set
            if mtime is not None:
                os.utime(f.fileno(), (mtime, mtime))
            mtime_ns = os.fstat(f.fileno()).st_mtime_ns
        os.replace(tmp, final)
        return mtime_ns
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def remove_empty_parents(path: Path, root: Path) -> None:
    """Remove the now-empty folders between ``path``'s parent and ``root`` (exclusive)."""
    parent = path.parent
    while parent != root and root in parent.parents:
        try:
            parent.rmdir()
        except OSError:
            return
        parent = parent.parent
