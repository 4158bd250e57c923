"""Scale-out: split one transfer over ``n`` independent workers by a stable hash of the path.

Every worker runs the same command with its own ``shard=(i, n)``; each takes the paths whose
hash falls in its slot, so the workers together cover every path exactly once with no
coordination. The hash is SHA-256 of the path *relative to the transfer's root* (the same
string on the local and the remote side), so an upload and a later download of the same tree
split it the same way, on any machine and any Python (``hash()`` is salted per process).
"""

from __future__ import annotations

import hashlib

from ..errors import InvalidParameterError

__all__ = ["Shard", "check_shard", "in_shard", "shard_of"]

#: ``(index, count)``: this worker's slot ``index`` of ``count`` slots, ``0 <= index < count``.
Shard = tuple[int, int]


def check_shard(shard: Shard | None) -> Shard:
    """Validate ``shard`` and return it; ``None`` means the whole job, ``(0, 1)``.

    Raises :class:`~msd_async.errors.InvalidParameterError` unless ``0 <= index < count``.
    """
    if shard is None:
        return (0, 1)
    index: object
    count: object
    try:
        index, count = shard
    except (TypeError, ValueError):
        index = count = None
    if (
        not isinstance(index, int)
        or not isinstance(count, int)
        or isinstance(index, bool)
        or isinstance(count, bool)
        or count < 1
        or not 0 <= index < count
    ):
        raise InvalidParameterError(
            f"shard must be (index, count) with 0 <= index < count, not {shard!r}",
            rule="transfer.shard",
        )
    assert isinstance(index, int) and isinstance(count, int)
    return (index, count)


def shard_of(relative_path: str, count: int) -> int:
    """The slot, ``0 <= slot < count``, of a path relative to the transfer's root."""
    digest = hashlib.sha256(relative_path.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % count


def in_shard(relative_path: str, shard: Shard) -> bool:
    """Whether ``relative_path`` belongs to ``shard``."""
    index, count = shard
    return count == 1 or shard_of(relative_path, count) == index
