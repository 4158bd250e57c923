"""msd_async: an asyncio client for the AWS Elemental MediaStore Data Plane API.

Start with :class:`Session`; its :meth:`Session.container` gives a :class:`ContainerClient`
with the five operations. Every error is a :class:`MediaStoreError`.
"""

from __future__ import annotations

from ._version import __version__
from .client import ContainerClient
from .config import DEFAULT_LIMITS, DEFAULT_TIMEOUTS, Limits, Timeouts
from .credentials import Credentials, CredentialsProvider
from .errors import *  # noqa: F403
from .errors import __all__ as _errors_all
from .results import Item, ItemType, ListPage, ObjectInfo, PutResult
from .rules import STANDARD_OBJECT_LIMIT, STREAMING_OBJECT_LIMIT, Availability, ByteRange
from .session import Session
from .stream import ObjectStream

__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_TIMEOUTS",
    "STANDARD_OBJECT_LIMIT",
    "STREAMING_OBJECT_LIMIT",
    "Availability",
    "ByteRange",
    "ContainerClient",
    "Credentials",
    "CredentialsProvider",
    "Item",
    "ItemType",
    "Limits",
    "ListPage",
    "ObjectInfo",
    "ObjectStream",
    "PutResult",
    "Session",
    "Timeouts",
    "__version__",
    *_errors_all,
]
