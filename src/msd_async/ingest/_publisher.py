"""What the relay and the pusher need from a live publisher: three methods.

:class:`msd_async.live.LivePublisher` is the one they are built for; these protocols keep
the ingest layer independent of its internals (and of anything but its public methods).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterable
from typing import Any, Protocol

from ..config import is_seconds
from ..errors import InvalidParameterError

__all__ = ["PublicationLike", "PublisherLike", "check_seconds"]


def check_seconds(
    name: str, value: float | None, *, zero: bool = False, endless: bool = True
) -> None:
    """Refuse a time setting that is no duration: nan (which every deadline comparison
    treats as neither passed nor pending), a negative one, 0 unless ``zero``, infinity
    unless ``endless``. ``None`` (the default) passes."""
    if value is None:
        return
    if not is_seconds(value, zero=zero, endless=endless):
        bound = "0 s or more" if zero else "above 0 s"
        raise InvalidParameterError(
            f"{name} must be {bound}{'' if endless else ' and finite'}, not {value!r}",
            rule=f"ingest.{name}",
        )


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
