"""A faithful local MediaStore-compatible server, for tests and for users' integrations.

``LocalMediaStore`` is the server (an aiohttp.web application, see :mod:`.server`),
``FaultPlan`` makes requests fail on purpose (:mod:`.faults`), and the pytest plugin
(:mod:`.pytest_plugin`) provides the ``mediastore_server`` and ``mediastore_client`` fixtures.
"""

from __future__ import annotations

from .faults import FAULT_KINDS, Fault, FaultKind, FaultPlan
from .server import DEFAULT_CREDENTIALS, LocalMediaStore
from .store import DirectoryStore, MemoryStore, ObjectVersion, Store

__all__ = [
    "DEFAULT_CREDENTIALS",
    "FAULT_KINDS",
    "DirectoryStore",
    "Fault",
    "FaultKind",
    "FaultPlan",
    "LocalMediaStore",
    "MemoryStore",
    "ObjectVersion",
    "Store",
]
