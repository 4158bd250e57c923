"""The settings a tree transfer takes, in one object: :class:`TransferOptions`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from .. import rules
from ..config import is_whole_number
from ..errors import InvalidParameterError
from ..retry import RetryPolicy, check_retry_policy
from .filters import FilterRule, PathFilter
from .shard import Shard, check_shard

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_FILE_ATTEMPTS",
    "INLINE_LIMIT",
    "PART_CONCURRENCY",
    "PART_SIZE",
    "SMALL_FILE",
    "TRANSFER_RETRY",
    "TransferOptions",
]

#: Files transferred at the same time.
DEFAULT_CONCURRENCY: Final = 16
#: Tries of one file (each request inside also retries under ``retry``).
DEFAULT_FILE_ATTEMPTS: Final = 4
#: Each request's retry policy in a transfer: more patient than a single call's default,
#: since a tree transfer should ride out a bad minute rather than report it.
TRANSFER_RETRY: Final = RetryPolicy(max_attempts=6)
#: Files up to this size are read (and hashed) in one go and sent from memory: one thread
#: hop per file instead of one per MiB. Larger ones are hashed, then sent from the path.
INLINE_LIMIT: Final = 8 * 1024 * 1024
#: Files up to this size are read, hashed and written on the event loop itself: a
#: page-cached read or write of 256 KiB takes less time than handing it to a worker thread
#: costs (about 0.3 ms of CPU per file at 200 KB, measured in benchmarks/bench_tree.py).
SMALL_FILE: Final = 256 * 1024
#: Objects larger than this download in ranged parts of this size, in parallel.
PART_SIZE: Final = 8 * 1024 * 1024
#: Ranged GETs of one object at the same time (within the file's worker).
PART_CONCURRENCY: Final = 4


@dataclass(frozen=True, slots=True)
class TransferOptions:
    """How :func:`~msd_async.transfer.upload_tree`, :func:`~msd_async.transfer.download_tree`
    and :func:`~msd_async.transfer.sync` run; every field has a default.

    ``filters`` is a sequence of ``("include" | "exclude", pattern)`` rules (see
    :mod:`msd_async.transfer.filters`). ``record_dir`` is where sync records are kept
    (default: ``$XDG_CACHE_HOME/msd/sync``, see :mod:`msd_async.transfer.record`).
    ``content_type`` and ``cache_control`` apply to uploads only, ``keep_dirlinks`` to
    downloads only.
    """

    #: Files transferred at the same time.
    concurrency: int = DEFAULT_CONCURRENCY
    #: Stop at the first failed file (the files in flight finish).
    fail_fast: bool = False
    #: Report what would be done; change nothing.
    dry_run: bool = False
    #: Only this worker's share of the paths, ``(index, count)``; ``None`` for all.
    shard: Shard | None = None
    #: Include/exclude rules, tried in order; see :mod:`msd_async.transfer.filters`.
    filters: Sequence[FilterRule] = field(default_factory=tuple)
    #: Read and write the sync record (False: a full compare, nothing remembered).
    record: bool = True
    #: Folder of the sync records (``None``: the user's cache folder).
    record_dir: str | os.PathLike[str] | None = None
    #: Each request's retry policy.
    retry: RetryPolicy = TRANSFER_RETRY
    #: Tries of one file as a whole, after its requests' own retries.
    file_attempts: int = DEFAULT_FILE_ATTEMPTS
    #: Content-Type of every upload (default: from each name).
    content_type: str | None = None
    #: Cache-Control stored with every upload.
    cache_control: str | None = None
    #: Downloading, write through (and compare under) a symbolic link to a folder found in
    #: the local tree, as rsync's ``--keep-dirlinks``; off, an object under one fails.
    keep_dirlinks: bool = False

    def check(self) -> tuple[Shard, PathFilter]:
        """Validate every field; returns the checked shard and the compiled filter.

        Raises :class:`~msd_async.errors.InvalidParameterError` (or
        :class:`~msd_async.errors.ClientValidationError` for a bad header value)."""
        # A float or bool count was taken (True: one file at a time; 2.5 or nan failed
        # later in range() with a TypeError), a str raised a bare TypeError.
        for name, rule in (("concurrency", "transfer.concurrency"),
                           ("file_attempts", "transfer.file-attempts")):
            value = getattr(self, name)
            if not is_whole_number(value, 1):
                raise InvalidParameterError(
                    f"{name} must be a whole number, at least 1, not {value!r}", rule=rule
                )
        # Used only when a request failed (an AttributeError), or when the record opened.
        check_retry_policy(self.retry, "TransferOptions.retry")
        if self.record_dir is not None and not isinstance(self.record_dir, (str, os.PathLike)):
            raise InvalidParameterError(
                f"record_dir must be a folder path (str or os.PathLike) or None, not "
                f"{self.record_dir!r}",
                rule="transfer.record-dir",
            )
        if not isinstance(self.keep_dirlinks, bool):
            # A string ("no", "false" from a config file) is true: it opted in to writing
            # through every link to a folder in the tree.
            raise InvalidParameterError(
                f"keep_dirlinks must be True or False, not {self.keep_dirlinks!r}",
                rule="transfer.keep-dirlinks",
            )
        if self.content_type is not None:
            rules.check_content_type(self.content_type)
        if self.cache_control is not None:
            rules.check_cache_control(self.cache_control)
        return check_shard(self.shard), PathFilter(self.filters)
