"""Bulk transfer: whole trees up and down, sync by content, scale-out by sharding.

=====================  ==================================================================
:func:`walk`           every object under a folder, folders listed concurrently, each page
                       retried on its own, expired NextTokens handled by relisting; takes
                       ``concurrency``, ``page_size`` and ``retry``
:func:`upload_tree`    every local file to a container folder, each verified by SHA-256
:func:`download_tree`  every object to a local folder, written under a temporary name and
                       renamed when complete; large objects in parallel ranged parts
:func:`sync`           only what differs (by content, with the sync record), either way,
                       with ``delete`` and ``max_delete``
=====================  ==================================================================

:func:`upload_tree`, :func:`download_tree` and :func:`sync` take a :class:`TransferOptions`
(concurrency, dry run, shard ``(i, n)``, include/exclude filters, the sync record and its
folder, retries, ``fail_fast``), a ``progress`` hook (:class:`TransferEvent` callbacks) and a
``stop`` event, and return a :class:`TransferReport` with per-file failures: one bad file
never stops the rest. See ``docs/transfer.md``.
"""

from __future__ import annotations

from .engine import download_tree, sync, upload_tree
from .events import Action, EventKind, FileFailure, ProgressHook, TransferEvent, TransferReport
from .filters import FilterRule, PathFilter
from .names import is_own
from .options import DEFAULT_CONCURRENCY, PART_SIZE, TransferOptions
from .plan import REMOTE_SCHEME, parse_location
from .record import RecordEntry, SyncRecord, default_record_dir
from .shard import Shard, in_shard, shard_of
from .walk import RemoteObject, walk

__all__ = [
    "DEFAULT_CONCURRENCY",
    "PART_SIZE",
    "REMOTE_SCHEME",
    "Action",
    "EventKind",
    "FileFailure",
    "FilterRule",
    "PathFilter",
    "ProgressHook",
    "RecordEntry",
    "RemoteObject",
    "Shard",
    "SyncRecord",
    "TransferEvent",
    "TransferOptions",
    "TransferReport",
    "default_record_dir",
    "download_tree",
    "in_shard",
    "is_own",
    "parse_location",
    "shard_of",
    "sync",
    "upload_tree",
    "walk",
]
