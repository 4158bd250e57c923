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

import contextlib
import os
import re
from pathlib import Path
from typing import Final

__all__ = [
    "LEGACY_RECORD_DIR",
    "PART_SUFFIX",
    "OwnNames",
    "is_own",
    "is_record_file",
    "is_temporary",
    "temporary_owners",
]

#: Suffix of a download in progress.
PART_SUFFIX: Final = ".msdpart"
#: The folder, at a tree's root, where versions before the cache folder kept sync records.
LEGACY_RECORD_DIR: Final = ".msd-sync"
_TEMPORARY = re.compile(r"\.msdpart(\.json(\.tmp)?)?\Z")


def is_temporary(name: str) -> bool:
    """Whether a file name is a download in progress or its part state."""
    return _TEMPORARY.search(name) is not None


_OWNED = re.compile(r"\.(?P<name>.+)\.msdpart(?:\.json(?:\.tmp)?)?\Z", re.DOTALL)
_TAG = re.compile(r"\.[0-9a-f]{8}\Z")
#: A NAME whose ``.NAME.msdpart.json.tmp`` exceeds NAME_MAX (255 bytes) is shortened to
#: at most this many bytes in its resumable download's name, and tagged with its hash.
SHORTENED_BYTES: Final = 200
#: A NAME over :data:`SHORTENED_BYTES` keeps this many characters in a small download's
#: own temporary name (``.NAME.XXXXXXXX.msdpart``, random).
CUT_CHARACTERS: Final = 50


def temporary_owners(name: str) -> tuple[tuple[str, ...], bool]:
    """Who may have written the temporary download file ``name``: ``(readings, cut)``.

    ``.NAME.msdpart`` (and its part state) is NAME's; but when NAME itself ends in ``.``
    and 8 hex digits, the name is also that of a small download of the stem (its own
    ``.STEM.XXXXXXXX.msdpart``), so both are readings. ``cut``: the stem may be the start
    of a longer NAME (a long NAME's temporary names are shortened), which the name does
    not tell. ``((), False)`` for any other name: a user's ``notes.msdpart`` is no
    download of ours."""
    match = _OWNED.match(name)
    if match is None:
        return (), False
    whole = match.group("name")
    tag = _TAG.search(whole)
    if tag is None or tag.start() == 0:
        return (whole,), False
    stem = whole[: tag.start()]
    size = len(os.fsencode(stem))
    # Shortened a character at a time, to at most SHORTENED_BYTES (a character is 4 at most).
    cut = SHORTENED_BYTES - 3 <= size <= SHORTENED_BYTES or len(stem) == CUT_CHARACTERS
    return (whole, stem), cut


def is_own(relative_path: str) -> bool:
    """Whether a path relative to a tree's root is one of the tool's own names."""
    first, _, _ = relative_path.partition("/")
    return first == LEGACY_RECORD_DIR or is_temporary(relative_path.rpartition("/")[2])


#: A sync record's file (``<key>.<i>-of-<n>.jsonl``) and its compaction's temporary file
#: (``.<key>.<i>-of-<n>.jsonl.<pid>.tmp``), as :mod:`~msd_async.transfer.record` names them.
_RECORD_FILE = re.compile(r"\.?[0-9a-f]{32}\.[0-9]+-of-[0-9]+\.jsonl(?:\.[0-9]+\.tmp)?\Z")


def is_record_file(name: str) -> bool:
    """Whether a file name is one a sync record folder holds (a record, its compaction's
    temporary file)."""
    return _RECORD_FILE.match(name) is not None


class OwnNames:
    """:func:`is_own`, plus the record folder when it lies inside the local root (or, when
    it is the root itself, the record's files there)."""

    __slots__ = ("_inside",)

    def __init__(self, root: Path, record_dir: Path | None) -> None:
        self._inside: str | None = None
        if record_dir is not None:
            with contextlib.suppress(ValueError, OSError):  # else outside the tree
                self._inside = record_dir.resolve().relative_to(root.resolve()).as_posix()

    def __call__(self, relative_path: str) -> bool:
        inside = self._inside
        if inside == ".":
            # The root itself is no folder to hide (that would hide the whole tree), but
            # the record's files in it are the tool's: else an upload sends them as
            # objects, and a download with delete deletes them, to be written again.
            if "/" not in relative_path and is_record_file(relative_path):
                return True
        elif inside is not None and (
            relative_path == inside or relative_path.startswith(inside + "/")
        ):
            return True
        return is_own(relative_path)
