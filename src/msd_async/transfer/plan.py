"""Planning a tree transfer: both sides' paths, selected, and the guards on deleting.

Both sides are read the same way: the local scan and the remote walk each give the paths
relative to the root, then one selection applies to both: this shard's paths, minus the
tool's own names (:mod:`msd_async.transfer.names`), minus what the filters exclude
(:mod:`msd_async.transfer.filters`). What ``delete`` removes is the destination's selected
paths that the source's selected paths lack, so an excluded path is never deleted.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import anyio.to_thread

from .. import rules
from ..errors import InvalidParameterError
from ..retry import RetryPolicy
from . import _local
from ._local import LocalFile, Unscanned
from .filters import PathFilter
from .pool import connection_limit
from .shard import Shard, in_shard
from .walk import DEFAULT_WALK_CONCURRENCY, RemoteObject, walk

if TYPE_CHECKING:
    from ..client import ContainerClient

__all__ = [
    "REMOTE_SCHEME",
    "Location",
    "Selection",
    "check_deletions",
    "local_index",
    "outside",
    "parse_location",
    "remote_index",
]

#: How a container location is written in :func:`~msd_async.transfer.sync` and on the
#: command line.
REMOTE_SCHEME = "ms:"

Location = tuple[Literal["local"], Path] | tuple[Literal["remote"], str]


def parse_location(location: str | os.PathLike[str]) -> Location:
    """``("remote", folder)`` for ``"ms:FOLDER"`` (``"ms:"`` is the container's root),
    else ``("local", Path)``. A local folder whose name starts with ``ms:`` is written
    ``./ms:...``. Raises :class:`~msd_async.errors.InvalidPathError` for an invalid folder."""
    if isinstance(location, str) and location.startswith(REMOTE_SCHEME):
        return ("remote", rules.normalize_folder_path(location[len(REMOTE_SCHEME) :]))
    return ("local", Path(location))


class Selection:
    """Which relative paths take part: this shard's, not the tool's own, not filtered out."""

    __slots__ = ("_filter", "_own", "_shard")

    def __init__(self, shard: Shard, path_filter: PathFilter, own: Callable[[str], bool]) -> None:
        self._shard = shard
        self._filter = path_filter
        self._own = own

    def __call__(self, relative_path: str) -> bool:
        return (
            in_shard(relative_path, self._shard)
            and not self._own(relative_path)
            and self._filter.selects(relative_path)
        )

    def is_own(self, relative_path: str) -> bool:
        """Whether a path is one of the tool's own (a record folder inside the tree too)."""
        return self._own(relative_path)

    @property
    def takes_everything(self) -> bool:
        """Whether every path but the tool's own takes part (one shard, no filter)."""
        return self._shard[1] == 1 and not self._filter

    def may_hold(self, relative_path: str) -> bool:
        """Whether a path whose content is unknown (a file or a folder) takes part: in this
        shard, not the tool's own, not excluded by a rule."""
        return (
            in_shard(relative_path, self._shard)
            and not self._own(relative_path)
            and not self._filter.excludes_folder(relative_path)
        )


async def remote_index(
    client: ContainerClient, prefix: str, select: Selection, retry: RetryPolicy
) -> tuple[dict[str, RemoteObject], bool]:
    """The selected objects under ``prefix``, and whether the folder held any object at all
    (selected or not): an empty listing is how a folder that does not exist looks."""
    found: dict[str, RemoteObject] = {}
    any_object = False
    # No more folders at once than the session has connections: the others would wait
    # in its gate and fail with PoolTimeout.
    concurrency = min(DEFAULT_WALK_CONCURRENCY, connection_limit(client))
    async for obj in walk(client, prefix, concurrency=concurrency, retry=retry):
        any_object = True
        if select(obj.relative_path):
            found[obj.relative_path] = obj
    return found, any_object


async def local_index(
    root: Path,
    select: Selection,
    *,
    follow_links: bool = False,
    unscanned: list[Unscanned] | None = None,
    record_folder: Path | None = None,
) -> dict[str, LocalFile]:
    """The selected regular files under ``root`` (a missing root is empty); see
    :func:`~msd_async.transfer._local.scan` for ``follow_links``, ``unscanned`` and
    ``record_folder`` (here its path)."""

    def scan() -> list[LocalFile]:
        ident = _local.folder_identity(record_folder) if record_folder is not None else None
        return _local.scan(
            root, follow_links=follow_links, unscanned=unscanned, record_folder=ident
        )

    files = await anyio.to_thread.run_sync(scan)
    return {f.relative_path: f for f in files if select(f.relative_path)}


def outside(paths: Iterable[str], unseen: Iterable[str]) -> list[str]:
    """``paths`` minus those at or under one of ``unseen`` (paths whose content a scan
    could not see: deleting there would act on what is unknown, not on what is absent)."""
    blocked = set(unseen)
    prefixes = tuple(f"{u}/" for u in blocked)
    return [p for p in paths if p not in blocked and not p.startswith(prefixes)]


def check_deletions(
    stale: Iterable[str], *, max_delete: int | None, what: str
) -> list[str]:
    """The sorted paths to delete; raises :class:`~msd_async.errors.InvalidParameterError`
    (rule ``transfer.max-delete``) when they are more than ``max_delete``: then nothing at
    all is done, as rclone's ``--max-delete`` guards a sync."""
    paths = sorted(stale)
    if max_delete is not None and len(paths) > max_delete:
        raise InvalidParameterError(
            f"the sync would delete {len(paths):,} {what}, more than max_delete={max_delete}; "
            "nothing was changed (check the source, or raise the limit)",
            rule="transfer.max-delete",
        )
    return paths
