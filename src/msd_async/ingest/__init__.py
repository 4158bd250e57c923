"""Ingest for encoders that cannot sign: the relay (an HTTP server encoders PUT to) and the
folder pusher (a watcher over the folder an encoder writes), both in front of a live
publisher. See ``docs/ingest.md``; the ``msd relay`` and ``msd push`` commands wrap them.
"""

from __future__ import annotations

from ._report import ObjectRecord
from .push import DEFAULT_SETTLE, TEMPORARY_SUFFIXES, FolderPusher, is_ignored, is_temporary
from .relay import (
    MANIFEST_EXTENSIONS,
    SECRET_HEADER,
    IncompleteBodyError,
    Relay,
    RelayStats,
    is_loopback,
)

__all__ = [
    "DEFAULT_SETTLE",
    "MANIFEST_EXTENSIONS",
    "SECRET_HEADER",
    "TEMPORARY_SUFFIXES",
    "FolderPusher",
    "IncompleteBodyError",
    "ObjectRecord",
    "Relay",
    "RelayStats",
    "is_ignored",
    "is_loopback",
    "is_temporary",
]
