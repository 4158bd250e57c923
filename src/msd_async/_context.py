"""What a :class:`~msd_async.session.Session` shares with its container clients."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from .config import Limits, Timeouts
from .credentials import CredentialsProvider
from .events import EventHook
from .retry import RetryBudget, RetryPolicy

if TYPE_CHECKING:
    from .session import Session
    from .transport import Transport

__all__ = ["ClientContext"]

_T = TypeVar("_T")


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
    #: Tasks in a wait no connection of the transport is part of (a retry's backoff, a
    #: credentials provider that has not answered), each with a flag set once
    #: :meth:`interrupt_waits` cancelled it: closing the pool would not wake them.
    _waits: dict[asyncio.Task[object], list[bool]] = field(default_factory=dict)

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

    async def unless_closed(self, awaitable: Awaitable[_T]) -> _T:
        """``await awaitable``, unless the session closes meanwhile: then it is cancelled
        (a provider's ``credential_process`` is killed on cancellation) and
        :class:`~msd_async.errors.SessionClosedError` raised, at once rather than when a
        backoff of up to ``retry_after_max`` or a provider's ``Timeouts.credentials`` ends."""
        from .errors import SESSION_CLOSED_MESSAGE, SessionClosedError

        task = asyncio.current_task()
        # Already closed: the callers check before they start a wait, and a wait started
        # anyway runs as before rather than be left unawaited. Nested: the outer one ends.
        if task is None or task in self._waits or self.closed:
            return await awaitable
        interrupted = [False]
        self._waits[task] = interrupted
        # As asyncio.timeout counts: a cancellation beyond those already requested and
        # ours is someone else's, and stays a cancellation.
        cancelling = task.cancelling()
        try:
            result = await awaitable
        except asyncio.CancelledError:
            if interrupted[0] and task.uncancel() <= cancelling:
                raise SessionClosedError(SESSION_CLOSED_MESSAGE, unsent=True) from None
            raise
        finally:
            del self._waits[task]
        if interrupted[0]:  # the wait swallowed the cancellation: the session is closed
            task.uncancel()
            raise SessionClosedError(SESSION_CLOSED_MESSAGE, unsent=True)
        return result

    def interrupt_waits(self) -> None:
        """End every :meth:`unless_closed` wait (the session is closing)."""
        for task, interrupted in self._waits.items():
            if not interrupted[0]:
                interrupted[0] = True
                task.cancel()

