"""A minimal stand-in for ``msd_async.live.LivePublisher``, used only while that is not
importable: media goes up at once as STREAMING uploads (retried from the relay's kept
chunks), a manifest waits for every object handed over before it and the newest pending
version of a path wins, deletes wait a fixed delay. No deadlines by kind, no window
computed from the playlist, no back-pressure: the live publisher owns those.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterable
from dataclasses import dataclass
from typing import Any

import anyio

from ..client import ContainerClient
from ..errors import MediaStoreError, ObjectNotFoundError
from ..media_types import content_type_for
from ..retry import RetryPolicy

__all__ = ["DirectPublisher"]

logger = logging.getLogger("msd_async.ingest")

_MANIFESTS = (".m3u8", ".m3u", ".mpd")
_MEDIA_RETRY = RetryPolicy(max_attempts=6, backoff_initial=0.05, backoff_max=0.5)
_MANIFEST_RETRY = RetryPolicy(max_attempts=1_000_000, backoff_initial=0.05, backoff_max=1.0)


@dataclass(slots=True)
class _Outcome:
    status: str
    error: BaseException | None = None


class _Publication:
    def __init__(self, path: str) -> None:
        self.path = path
        self._outcome: asyncio.Future[_Outcome] = asyncio.get_running_loop().create_future()

    def done(self) -> bool:
        return self._outcome.done()

    def _settle(self, outcome: _Outcome) -> None:
        if not self._outcome.done():
            self._outcome.set_result(outcome)

    async def wait(self) -> _Outcome:
        return await asyncio.shield(self._outcome)


class DirectPublisher:
    """See the module docstring. ``delete_delay``: seconds between a delete being asked
    for and sent."""

    def __init__(
        self, store: ContainerClient, *, prefix: str = "", delete_delay: float = 6.0
    ) -> None:
        self._store = store
        self._prefix = prefix.strip("/")
        self._delete_delay = delete_delay
        self._tasks: set[asyncio.Task[None]] = set()
        self._media: list[asyncio.Task[None]] = []
        self._manifests: dict[str, tuple[bytes, _Publication, list[asyncio.Task[None]]]] = {}
        self._manifest_tasks: dict[str, asyncio.Task[None]] = {}
        self._deletes: set[asyncio.Task[None]] = set()
        self.counts: dict[str, int] = {}

    def _key(self, path: str) -> str:
        return f"{self._prefix}/{path}" if self._prefix else path

    def _spawn(self, coro: Any, bucket: set[asyncio.Task[None]]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        bucket.add(task)
        task.add_done_callback(bucket.discard)
        return task

    async def __aenter__(self) -> DirectPublisher:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def publish(
        self,
        path: str,
        body: bytes | os.PathLike[str] | AsyncIterable[bytes],
        *,
        kind: Any = None,
        duration: float | None = None,
        content_type: str | None = None,
        cache_control: str | None = None,
    ) -> _Publication:
        publication = _Publication(path)
        if path.lower().endswith(_MANIFESTS):
            data = body if isinstance(body, bytes) else await _read_all(body)
            previous = self._manifests.get(path)
            if previous is not None:
                previous[1]._settle(_Outcome("superseded"))
            self._manifests[path] = (data, publication, list(self._media))
            if path not in self._manifest_tasks or self._manifest_tasks[path].done():
                self._manifest_tasks[path] = self._spawn(self._put_manifest(path), self._tasks)
            return publication
        task = self._spawn(
            self._put_media(path, body, publication, content_type, cache_control), self._tasks
        )
        self._media.append(task)
        self._media = [t for t in self._media if not t.done()]
        return publication

    async def _put_media(
        self,
        path: str,
        body: bytes | os.PathLike[str] | AsyncIterable[bytes],
        publication: _Publication,
        content_type: str | None,
        cache_control: str | None,
    ) -> None:
        source: Any = body
        if isinstance(body, AsyncIterable):
            # The relay's body can be iterated again from the start: retries resend it.
            def source() -> AsyncIterable[bytes]:
                return body

        try:
            await self._store.put_object(
                self._key(path),
                source,
                content_type=content_type or content_type_for(path, "application/octet-stream"),
                cache_control=cache_control or "max-age=1209600, immutable",
                streaming=True,
                retry=_MEDIA_RETRY,
            )
        except MediaStoreError as exc:
            self._count("failed")
            publication._settle(_Outcome("failed", exc))
        else:
            self._count("acknowledged")
            publication._settle(_Outcome("acknowledged"))

    async def _put_manifest(self, path: str) -> None:
        while path in self._manifests:
            data, publication, before = self._manifests.pop(path)
            if before:
                await asyncio.wait(before)
            if publication.done():
                continue
            try:
                await self._store.put_object(
                    self._key(path),
                    data,
                    content_type=content_type_for(path, "application/octet-stream"),
                    cache_control="max-age=1",
                    retry=_MANIFEST_RETRY,
                )
            except MediaStoreError as exc:
                self._count("failed")
                publication._settle(_Outcome("failed", exc))
            else:
                self._count("acknowledged")
                publication._settle(_Outcome("acknowledged"))

    async def delete(self, path: str) -> None:
        self._spawn(self._delete_later(path), self._deletes)

    async def _delete_later(self, path: str) -> None:
        await asyncio.sleep(self._delete_delay)
        with contextlib.suppress(ObjectNotFoundError):
            try:
                await self._store.delete_object(self._key(path), retry=_MEDIA_RETRY)
            except ObjectNotFoundError:
                raise
            except MediaStoreError as exc:
                logger.warning("delete %s failed: %s", path, exc)
                return
        self._count("deleted")

    def _count(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1

    def stats(self) -> dict[str, int]:
        return dict(self.counts)

    async def aclose(self) -> None:
        """Publish what is pending; deletes not yet due are dropped (the objects stay)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))
        for task in list(self._deletes):
            task.cancel()
        if self._deletes:
            await asyncio.wait(set(self._deletes))


async def _read_all(body: os.PathLike[str] | AsyncIterable[bytes]) -> bytes:
    if isinstance(body, AsyncIterable):
        return b"".join([bytes(chunk) async for chunk in body])
    return await anyio.Path(body).read_bytes()
