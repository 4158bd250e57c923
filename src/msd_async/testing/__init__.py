"""A faithful local MediaStore-compatible server, for tests and for users' integrations.

``LocalMediaStore`` is the server (an aiohttp.web application, see :mod:`.server`),
``FaultPlan`` makes requests fail on purpose (:mod:`.faults`), and the pytest plugin
(:mod:`.pytest_plugin`) provides the ``mediastore_server`` and ``mediastore_client`` fixtures.

Names are imported on first use (PEP 562): the pytest plugin lives in this package, and
importing it must not load the server and ``aiohttp.web`` into every pytest run.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_MODULE_OF = {
    "FAULT_KINDS": "faults",
    "Fault": "faults",
    "FaultKind": "faults",
    "FaultPlan": "faults",
    "DEFAULT_CREDENTIALS": "server",
    "LocalMediaStore": "server",
    "DirectoryStore": "store",
    "MemoryStore": "store",
    "ObjectVersion": "store",
    "Store": "store",
}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
