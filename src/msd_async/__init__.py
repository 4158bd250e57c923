"""msd_async: an asyncio client for the AWS Elemental MediaStore Data Plane API.

Start with :class:`Session`; its :meth:`Session.container` gives a :class:`ContainerClient`
with the five operations. Every error is a :class:`MediaStoreError`.

The client (and aiohttp behind it) is imported on first use of :class:`Session`,
:class:`ContainerClient` or :class:`ObjectStream` (PEP 562), so tools that only need the
rules, the errors or the content types (``msd --help``, the pytest plugin) start fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .config import DEFAULT_LIMITS, DEFAULT_TIMEOUTS, Limits, Timeouts
from .credentials import (
    AwsChainCredentials,
    Credentials,
    CredentialsProvider,
    EnvironmentCredentials,
)
from .errors import *  # noqa: F403
from .errors import __all__ as _errors_all
from .events import EventHook, RequestEvent
from .media_types import content_type_for
from .results import Item, ItemType, ListPage, ObjectInfo, PutResult
from .retry import DEFAULT_RETRY_POLICY, NO_RETRIES, Deadline, RetryBudget, RetryPolicy
from .rules import STANDARD_OBJECT_LIMIT, STREAMING_OBJECT_LIMIT, Availability, ByteRange

if TYPE_CHECKING:
    from .client import ContainerClient, ObjectDownload
    from .session import Session
    from .stream import ObjectStream

#: Public names whose modules import aiohttp: loaded on first access.
_LAZY = {
    "ContainerClient": ".client",
    "ObjectDownload": ".client",
    "Session": ".session",
    "ObjectStream": ".stream",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_RETRY_POLICY",
    "DEFAULT_TIMEOUTS",
    "NO_RETRIES",
    "STANDARD_OBJECT_LIMIT",
    "STREAMING_OBJECT_LIMIT",
    "Availability",
    "AwsChainCredentials",
    "ByteRange",
    "ContainerClient",
    "Credentials",
    "CredentialsProvider",
    "Deadline",
    "EnvironmentCredentials",
    "EventHook",
    "Item",
    "ItemType",
    "Limits",
    "ListPage",
    "ObjectDownload",
    "ObjectInfo",
    "ObjectStream",
    "PutResult",
    "RequestEvent",
    "RetryBudget",
    "RetryPolicy",
    "Session",
    "Timeouts",
    "__version__",
    "content_type_for",
    *_errors_all,
]
