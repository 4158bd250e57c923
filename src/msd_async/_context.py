"""What a :class:`~msd_async.session.Session` shares with its container clients."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .credentials import CredentialsProvider
from .events import EventHook
from .retry import RetryBudget, RetryPolicy
from .transport import Transport

if TYPE_CHECKING:
    from .session import Session

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
    transport: Transport
    #: One budget for every container: a failing service is not hammered from any side.
    budget: RetryBudget
    retry: RetryPolicy
    event_hooks: list[EventHook]

    @property
    def closed(self) -> bool:
        return self.transport.closed
