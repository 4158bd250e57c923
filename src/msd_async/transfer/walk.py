"""A recursive listing of a container folder that survives failed pages and expired tokens.

ListItems returns one folder's direct children, a page at a time. :func:`walk` expands folders
breadth first, ``concurrency`` folders at a time, and retries each page on its own: a page
that fails after the call's retries is asked again (with backoff) from the same NextToken,
so one bad page costs one page, not the whole listing. A NextToken is good for 15 minutes;
one that is older, or that the service refuses, makes the walk list that folder again from
its start, skipping the names it already returned.
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import anyio

from ..config import is_whole_number
from ..errors import InvalidParameterError, MediaStoreError, ProtocolError, ValidationError
from ..protocol import follow_token
from ..retry import RetryPolicy, check_retry_policy
from ..rules import is_name, normalize_folder_path
from .events import first_error

if TYPE_CHECKING:
    from ..client import ContainerClient

__all__ = ["DEFAULT_WALK_CONCURRENCY", "RemoteObject", "walk"]

#: Folders listed at the same time.
DEFAULT_WALK_CONCURRENCY: Final = 8
#: Times one page is asked for again after its call (with its own retries) failed.
PAGE_ROUNDS: Final = 4
#: Relists of one folder after its NextToken expired or was refused.
MAX_RELISTS: Final = 3
#: A token older than this is not used: the service's tokens last 15 minutes, and a page
#: request that starts at 14:59 must not arrive at 15:01.
TOKEN_MAX_AGE: Final = 14 * 60.0
#: Each page call's own retry policy: more patient than the default, a listing must finish.
PAGE_RETRY: Final = RetryPolicy(max_attempts=6)


@dataclass(frozen=True, slots=True)
class RemoteObject:
    """An object found by :func:`walk`."""

    #: Full path in the container, without a leading "/".
    path: str
    #: Path relative to the walked folder.
    relative_path: str
    size: int | None
    etag: str | None
    last_modified: _dt.datetime | None
    content_type: str | None


async def _page(
    client: ContainerClient,
    folder: str,
    token: str | None,
    followed: set[str],
    page_size: int | None,
    retry: RetryPolicy,
) -> tuple[list[tuple[str, str, RemoteObject | None]], str | None]:
    rounds = 0
    while True:
        try:
            page = await client.list_items_page(
                folder or None, max_results=page_size, next_token=token, retry=retry
            )
            break
        except MediaStoreError as exc:
            rounds += 1
            if rounds >= PAGE_ROUNDS or not retry.is_retryable(exc):
                raise
            await anyio.sleep(retry.backoff(rounds + 1))
    next_token = follow_token(page, followed, folder)
    out: list[tuple[str, str, RemoteObject | None]] = []
    for item in page.items:
        if not is_name(item.name):
            # A name becomes a path below the walked folder (and, downloaded, a file below
            # the local one): "..", "a/b" or "" would lead out of it.
            raise ProtocolError(
                f"ListItems of {folder or 'the container root'!r} listed {item.name!r}, "
                "which cannot name a folder or an object (one path segment of A-Z a-z "
                "0-9 . - ~ _ = :, not '.' or '..'): the walk stops here rather than leave "
                "the folder it walks. The endpoint is not behaving as MediaStore does",
                attempts=1,
            )
        full = f"{folder}/{item.name}" if folder else item.name
        if item.type == "FOLDER":
            out.append((item.name, full, None))
        else:
            out.append(
                (
                    item.name,
                    full,
                    RemoteObject(
                        full, "", item.content_length, item.etag, item.last_modified,
                        item.content_type,
                    ),
                )
            )
    return out, next_token


async def _list_folder(
    client: ContainerClient,
    folder: str,
    page_size: int | None,
    retry: RetryPolicy,
) -> list[tuple[str, RemoteObject | None]]:
    """Every child of ``folder``: ``(full path, object)`` or ``(full path, None)`` for a
    sub-folder."""
    seen: set[str] = set()
    children: list[tuple[str, RemoteObject | None]] = []
    token: str | None = None
    token_time = 0.0
    relists = 0
    #: The tokens this pass over the folder has followed (a relist starts a new pass).
    followed: set[str] = set()
    while True:
        if token is not None and time.monotonic() - token_time > TOKEN_MAX_AGE:
            token = None  # too old to trust: start the folder again
            followed = set()
            relists += 1
        try:
            entries, next_token = await _page(
                client, folder, token, followed, page_size, retry
            )
        except ValidationError:
            # An expired or refused NextToken: list the folder again from its start.
            if token is None or relists >= MAX_RELISTS:
                raise
            token = None
            followed = set()
            relists += 1
            continue
        for name, full, obj in entries:
            if name not in seen:
                seen.add(name)
                children.append((full, obj))
        if next_token is None:
            return children
        token, token_time = next_token, time.monotonic()


async def walk(
    client: ContainerClient,
    prefix: str = "",
    *,
    concurrency: int = DEFAULT_WALK_CONCURRENCY,
    page_size: int | None = None,
    retry: RetryPolicy = PAGE_RETRY,
) -> AsyncIterator[RemoteObject]:
    """Every object under the folder ``prefix`` ("" for the whole container), at any depth.

    Objects come folder by folder, breadth first; each once. ``relative_path`` is the path
    below ``prefix``. ``concurrency`` (default 8) folders are listed at the same time;
    ``page_size`` is ListItems' MaxResults (default: the service's, 1000); ``retry`` is each
    page call's policy (6 attempts), and a page that still fails is asked again up to 4 times.

    A folder that does not exist yields nothing. Raises
    :class:`~msd_async.errors.InvalidPathError` for an invalid ``prefix``, and the last
    error of a page that failed every time (the objects before it were already yielded).
    """
    root = normalize_folder_path(prefix)
    if not is_whole_number(concurrency, 1):
        # Was a bare ValueError, and took nan or 2.5 until a slice failed on it.
        raise InvalidParameterError(
            f"concurrency must be a whole number, at least 1, not {concurrency!r}",
            rule="transfer.walk-concurrency",
        )
    check_retry_policy(retry)
    cut = len(root) + 1 if root else 0
    pending = [root]
    while pending:
        batch, pending = pending[:concurrency], pending[concurrency:]
        results: list[list[tuple[str, RemoteObject | None]]] = [[] for _ in batch]

        async def list_one(
            index: int, folder: str, out: list[list[tuple[str, RemoteObject | None]]]
        ) -> None:
            out[index] = await _list_folder(client, folder, page_size, retry)

        # The listing of a batch runs in a task group and the yields happen outside it: a
        # generator must not yield from inside a task group's scope.
        try:
            async with anyio.create_task_group() as tg:
                for index, folder in enumerate(batch):
                    tg.start_soon(list_one, index, folder, results)
        except ExceptionGroup as group:
            raise first_error(group) from None
        for children in results:
            for full, obj in children:
                if obj is None:
                    pending.append(full)
                else:
                    yield RemoteObject(
                        obj.path, full[cut:], obj.size, obj.etag, obj.last_modified,
                        obj.content_type,
                    )
