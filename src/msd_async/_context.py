"""What a :class:`~msd_async.session.Session` shares with its container clients."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .config import Limits, Timeouts
from .credentials import CredentialsProvider
from .events import EventHook
from .retry import RetryBudget, RetryPolicy

if TYPE_CHECKING:
    from .session import Session
    from .transport import Transport

__all__ = ["ClientContext"]


@dataclass(slots=True, eq=False)
class ClientContext:
    """The session's shared state, handed to every :class:`ContainerClient` it creates.

    One object, so a client never reaches into the session's attributes, and a change
    made through the session (``session.retry = ...``, ``session.event_hooks.append``)
    reaches every client at once. ``closed`` is the transport's: once the session is
    closed, every call raises :class:`~msd_async.errors.SessionClosedError`.
    """

    #: The owner, for ``ContainerClient.session``; clients read nothing else from it.
    session: Session
    credentials: CredentialsProvider
    limits: Limits
    timeouts: Timeouts
    #: One budget for every container: a failing service is not hammered from any side.
    budget: RetryBudget
    retry: RetryPolicy
    event_hooks: list[EventHook]
    _transport: Transport | None = None
    #: The event loop of the first request: the pool's connections belong to it.
    loop: asyncio.AbstractEventLoop | None = None
    #: The thread that runs ``loop``.
    loop_thread: int = 0
    #: Event hook errors that could not reach a caller (logged the first and every 1000th).
    hook_failures: int = 0

    @property
    def transport(self) -> Transport:
        """The connection pool, made on first use: importing aiohttp's client costs more
        than the rest of msd_async, and a session that never sends should not pay it."""
        transport = self._transport
        if transport is None:
            from .transport import Transport

            transport = self._transport = Transport(limits=self.limits, timeouts=self.timeouts)
        return transport

    @property
    def closed(self) -> bool:
        # A transport not made yet has not been closed: closing makes it first.
        return self._transport is not None and self._transport.closed
