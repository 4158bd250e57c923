"""The session: one connection pool, one credential source, one retry budget."""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING

from . import rules
from .client import ContainerClient
from .config import DEFAULT_LIMITS, DEFAULT_TIMEOUTS, Limits, Timeouts
from .credentials import Credentials, CredentialsProvider, resolve_region
from .events import EventHook
from .retry import DEFAULT_RETRY_POLICY, RetryBudget, RetryPolicy

if TYPE_CHECKING:
    from .transport import PoolStats, Transport

__all__ = ["Session"]


class Session:
    """Owns the connection pool, the credentials and SigV4 signing for any number of
    containers. Use it as an async context manager; it closes every connection on exit::

        async with msd_async.Session(region="us-east-1") as session:
            store = session.container("https://abc.data.mediastore.us-east-1.amazonaws.com")
            await store.put_object("live/seg_1.ts", data, content_type="video/MP2T")

    ``credentials``: a :class:`Credentials`, any provider, or ``None`` for the standard AWS
    chain (environment, shared files and ``profile``, SSO, assume-role, container, IMDS —
    through aiobotocore, imported only then). ``region``: optional when every endpoint is a
    ``*.data.mediastore.<region>.amazonaws.com`` host; else required (or AWS_REGION).
    ``retry``: the :class:`~msd_async.retry.RetryPolicy` of every call (4 attempts with
    jittered backoff by default); ``RetryPolicy.none()`` disables retries; each operation
    also takes ``retry=`` for one call. ``event_hooks``: functions called with a
    :class:`~msd_async.events.RequestEvent` for every attempt's start, response, error and
    retry (``session.event_hooks`` is a list: append or remove hooks at any time).
    """

    def __init__(
        self,
        *,
        region: str | None = None,
        credentials: Credentials | CredentialsProvider | None = None,
        profile: str | None = None,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        limits: Limits = DEFAULT_LIMITS,
        retry: RetryPolicy = DEFAULT_RETRY_POLICY,
        event_hooks: Iterable[EventHook] = (),
    ) -> None:
        self.region = region
        self.retry = retry
        self.event_hooks: list[EventHook] = list(event_hooks)
        # One budget for every container: a failing service is not hammered from any side.
        self._retry_budget = RetryBudget()
        if credentials is None or profile is not None:
            from .credentials import resolve_credentials  # the chain imports aiobotocore

            self._credentials: CredentialsProvider = resolve_credentials(
                credentials, profile=profile
            )
        else:
            self._credentials = credentials
        self._limits = limits
        self._timeouts = timeouts
        self._transport_or_none: Transport | None = None
        self._closed = False

    @property
    def _transport(self) -> Transport:
        """The connection pool, made on first use: importing aiohttp's client costs more
        than the rest of msd_async, and a session that never sends should not pay it."""
        transport = self._transport_or_none
        if transport is None:
            from .transport import Transport

            transport = self._transport_or_none = Transport(
                limits=self._limits, timeouts=self._timeouts
            )
        return transport

    @property
    def pool(self) -> PoolStats:
        """Live pool counters: ``in_use`` (requests holding a connection) and ``idle``."""
        return self._transport.stats

    def container(
        self,
        endpoint: str,
        *,
        region: str | None = None,
        standard_limit: int = rules.STANDARD_OBJECT_LIMIT,
        streaming_limit: int = rules.STREAMING_OBJECT_LIMIT,
    ) -> ContainerClient:
        """A client for the container at ``endpoint`` (its data endpoint URL).

        The object size limits default to the service's 25 MB / 10 MB; raise them only for
        a compatible server that allows more.
        """
        if self._closed:
            raise RuntimeError("this Session is closed; open a new one")
        return ContainerClient(
            self,
            endpoint,
            region=resolve_region(region or self.region, endpoint),
            standard_limit=standard_limit,
            streaming_limit=streaming_limit,
        )

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every pooled connection and the credential provider. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._transport_or_none is not None:
            await self._transport_or_none.aclose()
        closer = getattr(self._credentials, "aclose", None)
        if closer is not None:
            await closer()
