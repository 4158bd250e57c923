"""Typed results of the five operations: frozen, slotted dataclasses, and for ListItems'
entries a frozen msgspec struct (a 1,000-item page decodes straight into them)."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Literal

import msgspec

__all__ = ["Item", "ItemType", "ListPage", "ObjectInfo", "PutResult"]

ItemType = Literal["OBJECT", "FOLDER"]


@dataclass(frozen=True, slots=True)
class PutResult:
    """What PutObject returns."""

    #: Lowercase hex SHA-256 of the bytes the service stored.
    content_sha256: str
    #: Opaque version tag; changes on every PUT.
    etag: str
    #: Always ``"TEMPORAL"``.
    storage_class: str
    #: Bytes sent in the request body.
    size: int


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """Metadata of an object (DescribeObject, and the headers of a GetObject response)."""

    content_type: str | None
    #: ``None`` while a STREAMING object is still being uploaded.
    content_length: int | None
    etag: str | None
    last_modified: _dt.datetime | None
    #: Only set if the object was uploaded with a Cache-Control value.
    cache_control: str | None


#: Item's field -> its name in a ListItems response.
_ITEM_WIRE_NAMES = {
    "name": "Name",
    "type": "Type",
    "etag": "ETag",
    "last_modified": "LastModified",
    "content_type": "ContentType",
    "content_length": "ContentLength",
}


class Item(msgspec.Struct, frozen=True, rename=_ITEM_WIRE_NAMES):
    """One entry of a ListItems page: an object or a folder (folders carry only a name).

    A frozen :class:`msgspec.Struct`: compared, hashed and printed like a frozen dataclass
    (``msgspec.structs.replace`` derives a variant).
    """

    #: The leaf name, not the full path.
    name: str
    type: ItemType
    etag: str | None = None
    last_modified: _dt.datetime | None = None
    content_type: str | None = None
    content_length: int | None = None


@dataclass(frozen=True, slots=True)
class ListPage:
    """One page of ListItems. ``next_token`` is ``None`` on the last page; tokens expire
    after 15 minutes."""

    items: tuple[Item, ...]
    next_token: str | None
