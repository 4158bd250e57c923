"""Typed results of the five operations: frozen :class:`msgspec.Struct` classes.

They compare, hash and print like frozen dataclasses (``msgspec.structs.replace`` derives a
variant, ``msgspec.structs.asdict`` gives a dict). Structs rather than dataclasses because
one is made on every request: a frozen dataclass's ``__init__`` costs ~1-2 us of Python per
object, a struct's a tenth of that; and a ListItems page decodes straight into ``Item``s.
They hold only strings, numbers, datetimes and each other, so they cannot form reference
cycles: ``gc=False`` keeps them out of the cyclic garbage collector's bookkeeping (a listing
of 5,000 items no longer triggers collections on its own).
"""

from __future__ import annotations

import datetime as _dt
from typing import Literal

import msgspec

__all__ = ["Item", "ItemType", "ListPage", "ObjectInfo", "PutResult"]

ItemType = Literal["OBJECT", "FOLDER"]


class PutResult(msgspec.Struct, frozen=True, gc=False):
    """What PutObject returns."""

    #: Lowercase hex SHA-256 of the bytes the service stored.
    content_sha256: str
    #: Opaque version tag; changes on every PUT.
    etag: str
    #: Always ``"TEMPORAL"``.
    storage_class: str
    #: Bytes sent in the request body.
    size: int


class ObjectInfo(msgspec.Struct, frozen=True, gc=False):
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


class Item(msgspec.Struct, frozen=True, gc=False, rename=_ITEM_WIRE_NAMES):
    """One entry of a ListItems page: an object or a folder (folders carry only a name)."""

    #: The leaf name, not the full path.
    name: str
    type: ItemType
    etag: str | None = None
    last_modified: _dt.datetime | None = None
    content_type: str | None = None
    content_length: int | None = None


class ListPage(msgspec.Struct, frozen=True, gc=False):
    """One page of ListItems. ``next_token`` is ``None`` on the last page; tokens expire
    after 15 minutes."""

    items: tuple[Item, ...]
    next_token: str | None
