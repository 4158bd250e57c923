"""msd_async: an asyncio client for the AWS Elemental MediaStore Data Plane API.

Start with :class:`Session`; its :meth:`Session.container` gives a :class:`ContainerClient`
with the five operations. Every error is a :class:`MediaStoreError`.

Names are imported on first use (PEP 562), so ``import msd_async`` and the ``msd`` command's
``--help`` stay cheap; aiohttp itself is imported only when a session first sends. The
errors are imported eagerly: they are small and ``except msd_async.MediaStoreError`` should
not pull in the client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import *  # noqa: F403
from .errors import __all__ as _errors_all

if TYPE_CHECKING:
    from .client import ContainerClient, ObjectDownload
    from .config import DEFAULT_LIMITS, DEFAULT_TIMEOUTS, Limits, Timeouts
    from .credentials import (
        AwsChainCredentials,
        Credentials,
        CredentialsProvider,
        EnvironmentCredentials,
    )
    from .events import EventHook, RequestEvent
    from .media_types import content_type_for
    from .results import Item, ItemType, ListPage, ObjectInfo, PutResult
    from .retry import DEFAULT_RETRY_POLICY, NO_RETRIES, Deadline, RetryBudget, RetryPolicy
    from .rules import STANDARD_OBJECT_LIMIT, STREAMING_OBJECT_LIMIT, Availability, ByteRange
    from .session import Session
    from .stream import ObjectStream

#: Exported name -> the submodule that defines it.
_LAZY: dict[str, str] = {
    "ContainerClient": "client",
    "ObjectDownload": "client",
    "DEFAULT_LIMITS": "config",
    "DEFAULT_TIMEOUTS": "config",
    "Limits": "config",
    "Timeouts": "config",
    "AwsChainCredentials": "credentials",
    "Credentials": "credentials",
    "CredentialsProvider": "credentials",
    "EnvironmentCredentials": "credentials",
    "EventHook": "events",
    "RequestEvent": "events",
    "content_type_for": "media_types",
    "Item": "results",
    "ItemType": "results",
    "ListPage": "results",
    "ObjectInfo": "results",
    "PutResult": "results",
    "DEFAULT_RETRY_POLICY": "retry",
    "NO_RETRIES": "retry",
    "Deadline": "retry",
    "RetryBudget": "retry",
    "RetryPolicy": "retry",
    "STANDARD_OBJECT_LIMIT": "rules",
    "STREAMING_OBJECT_LIMIT": "rules",
    "Availability": "rules",
    "ByteRange": "rules",
    "Session": "session",
    "ObjectStream": "stream",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


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
