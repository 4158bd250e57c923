"""Bulk transfer: whole trees up and down, sync by content, scale-out by sharding.

=====================  ==================================================================
:func:`walk`           every object under a folder, folders listed concurrently, each page
                       retried on its own, expired NextTokens handled by relisting
:func:`upload_tree`    every local file to a container folder, each verified by SHA-256
:func:`download_tree`  every object to a local folder, written under a temporary name and
                       renamed when complete; large objects in parallel ranged parts
:func:`sync`           only what differs (by content, with the sync record), either way,
                       with ``delete`` and ``dry_run``
=====================  ==================================================================

All take ``concurrency``, ``progress`` (:class:`TransferEvent` callbacks), ``fail_fast``
and ``shard=(i, n)``, and return a :class:`TransferReport` with per-file failures: one bad
file never stops the rest. See ``docs/transfer.md``.
"""

from __future__ import annotations

from .engine import (
    DEFAULT_CONCURRENCY,
    PART_SIZE,
    REMOTE_SCHEME,
    download_tree,
    parse_location,
    sync,
    upload_tree,
)
from .events import Action, EventKind, FileFailure, ProgressHook, TransferEvent, TransferReport
from .record import RECORD_DIR, RecordEntry, SyncRecord
from .shard import Shard, in_shard, shard_of
from .walk import RemoteObject, walk

__all__ = [
    "DEFAULT_CONCURRENCY",
    "PART_SIZE",
    "RECORD_DIR",
    "REMOTE_SCHEME",
    "Action",
    "EventKind",
    "FileFailure",
    "ProgressHook",
    "RecordEntry",
    "RemoteObject",
    "Shard",
    "SyncRecord",
    "TransferEvent",
    "TransferReport",
    "download_tree",
    "in_shard",
    "parse_location",
    "shard_of",
    "sync",
    "upload_tree",
    "walk",
]
