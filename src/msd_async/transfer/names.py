"""The names a transfer keeps for itself, on both sides of a sync.

A download is written under ``.NAME.XXXXXXXX.msdpart`` (a random name of its own, so two
writers of one NAME never share it); one in ranged parts under ``.NAME.msdpart``, which a
later run resumes (the parts keep their state in ``.NAME.msdpart.json``, saved through
``.NAME.msdpart.json.tmp``), and older versions kept
the sync record in a ``.msd-sync`` folder at the tree's root. These names are never uploaded,
downloaded or deleted as part of a tree, whether they are found in the local folder or in the
container: :func:`is_own` is the one predicate both sides apply. The sync record now lives
outside the tree (see :mod:`msd_async.transfer.record`); when the chosen record folder is
inside the tree anyway, it is the tool's too.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

__all__ = [
    "LEGACY_RECORD_DIR",
    "PART_SUFFIX",
    "OwnNames",
    "is_own",
    "is_temporary",
    "temporary_owner",
]

#: Suffix of a download in progress.
PART_SUFFIX: Final = ".msdpart"
#: The folder, at a tree's root, where versions before the cache folder kept sync records.
LEGACY_RECORD_DIR: Final = ".msd-sync"
_TEMPORARY = re.compile(r"\.msdpart(\.json(\.tmp)?)?\Z")


def is_temporary(name: str) -> bool:
    """Whether a file name is a download in progress or its part state."""
    return _TEMPORARY.search(name) is not None


_OWNED = re.compile(r"\.(?P<name>.+?)(?:\.[0-9a-f]{8})?\.msdpart(?:\.json(?:\.tmp)?)?\Z")


def temporary_owner(name: str) -> str | None:
    """The NAME a temporary download file is written for (``.NAME.msdpart``,
    ``.NAME.XXXXXXXX.msdpart``, ``.NAME.msdpart.json``...), else ``None``: a user's own
    ``notes.msdpart`` is not a download of ours. A NAME that itself ends in ``.`` and 8
    hex digits reads as its stem: its resumable parts may be taken for a leftover, and
    the download then starts over (nothing else is lost)."""
    match = _OWNED.match(name)
    return None if match is None else match.group("name")


def is_own(relative_path: str) -> bool:
    """Whether a path relative to a tree's root is one of the tool's own names."""
    first, _, _ = relative_path.partition("/")
    return first == LEGACY_RECORD_DIR or is_temporary(relative_path.rpartition("/")[2])


class OwnNames:
    """:func:`is_own`, plus the record folder when it lies inside the local root."""

    __slots__ = ("_inside",)

    def __init__(self, root: Path, record_dir: Path | None) -> None:
        self._inside: str | None = None
        if record_dir is not None:
            try:
                inside = record_dir.resolve().relative_to(root.resolve()).as_posix()
            except (ValueError, OSError):
                inside = "."
            # The root itself is no folder to hide: its record files would be everything.
            self._inside = None if inside == "." else inside

    def __call__(self, relative_path: str) -> bool:
        inside = self._inside
        if inside is not None and (
            relative_path == inside or relative_path.startswith(inside + "/")
        ):
            return True
        return is_own(relative_path)
