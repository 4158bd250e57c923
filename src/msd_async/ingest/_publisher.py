"""What the relay and the pusher need from a live publisher: three methods.

:class:`msd_async.live.LivePublisher` is the one they are built for; these protocols keep
the ingest layer independent of its internals (and of anything but its public methods).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterable
from typing import Any, Protocol

__all__ = ["PublicationLike", "PublisherLike"]


class PublicationLike(Protocol):
    """One object handed to the publisher; ``wait()`` returns its outcome once known."""

    async def wait(self) -> Any: ...


class PublisherLike(Protocol):
    """The part of ``LivePublisher``'s API that ingest uses."""

    async def publish(
        self,
        path: str,
        body: bytes | os.PathLike[str] | AsyncIterable[bytes],
        *,
        kind: Any = None,
        duration: float | None = None,
        content_type: str | None = None,
        cache_control: str | None = None,
        wait_for_room: bool = False,
    ) -> PublicationLike: ...

    async def delete(self, path: str) -> Any: ...

    def stats(self) -> Any: ...
