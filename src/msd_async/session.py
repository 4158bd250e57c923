"""The session: one connection pool, one credential source, one retry budget."""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING

from . import rules
from ._context import ClientContext
from .client import ContainerClient, check_event_hook
from .config import DEFAULT_LIMITS, DEFAULT_TIMEOUTS, Limits, Timeouts
from .credentials import Credentials, CredentialsProvider, resolve_region
from .errors import InvalidParameterError, SessionAlreadyEnteredError, SessionClosedError
from .events import EventHook
from .retry import DEFAULT_RETRY_POLICY, RetryBudget, RetryPolicy, check_retry_policy

if TYPE_CHECKING:
    from .transport import PoolStats

__all__ = ["Session"]


def _hook_list(hooks: Iterable[EventHook]) -> list[EventHook]:
    if isinstance(hooks, (str, bytes)) or not isinstance(hooks, Iterable):
        raise InvalidParameterError(
            f"event_hooks must be a list of functions, not {hooks!r}",
            rule="session.event_hooks",
        )
    checked = list(hooks)
    for hook in checked:
        check_event_hook(hook)
    return checked


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
    retry (``session.event_hooks`` is a list: append or remove hooks at any time; they are
    plain functions, an async one is refused with :class:`InvalidParameterError`, as is a
    ``timeouts``, ``limits`` or ``retry`` of the wrong type).
    ``timeouts`` (:class:`Timeouts`) and ``limits`` (:class:`Limits`, including
    ``max_connections_per_host``) configure the pool; a call that finds a limit reached
    waits at most ``Timeouts.pool``, then raises :class:`PoolTimeout`.

    Enter it once: ``async with`` on a session already entered (nested, or from another
    task) raises :class:`SessionAlreadyEnteredError`, since the inner block's exit would
    close it under the outer one.
    After :meth:`aclose`, :meth:`container`, ``async with`` and every call of a client
    obtained before raise :class:`SessionClosedError`; :meth:`aclose` from another task
    ends the calls still running with it. The pool belongs to the event loop of the first
    request: a call from another loop raises :class:`WrongEventLoopError` (open one
    Session per loop).
    ``Timeouts.credentials`` bounds each wait for the credentials provider; a provider
    that fails, hangs or answers something else raises :class:`CredentialsError`.
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
        # Each was first used by a request (or a retry, for ``retry``), far from here, and
        # failed there with an AttributeError; an async hook was called, never awaited.
        for name, value, kind in (("timeouts", timeouts, Timeouts), ("limits", limits, Limits)):
            if not isinstance(value, kind):
                raise InvalidParameterError(
                    f"{name} must be a {kind.__name__}, not {value!r}", rule=f"session.{name}"
                )
        check_retry_policy(retry)
        hooks = _hook_list(event_hooks)
        self.region = region
        if credentials is None or profile is not None:
            from .credentials import resolve_credentials  # the chain imports aiobotocore

            provider: CredentialsProvider = resolve_credentials(credentials, profile=profile)
        else:
            provider = credentials
        self._context = ClientContext(
            session=self,
            credentials=provider,
            # The transport (and aiohttp with it) is made on the first request.
            limits=limits,
            timeouts=timeouts,
            budget=RetryBudget(),
            retry=retry,
            event_hooks=hooks,
        )
        #: Whether ``async with`` has entered it (its exit closes it: once is all there is).
        self._entered = False

    @property
    def retry(self) -> RetryPolicy:
        """The retry policy of every call that passes no ``retry=``; assignable."""
        return self._context.retry

    @retry.setter
    def retry(self, policy: RetryPolicy) -> None:
        check_retry_policy(policy)
        self._context.retry = policy

    @property
    def event_hooks(self) -> list[EventHook]:
        """The hooks called for every attempt; a list to append to or remove from."""
        return self._context.event_hooks

    @event_hooks.setter
    def event_hooks(self, hooks: Iterable[EventHook]) -> None:
        self._context.event_hooks = _hook_list(hooks)

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` has run."""
        return self._context.closed

    @property
    def pool(self) -> PoolStats:
        """Live pool counters: ``in_use`` (requests holding a connection), ``idle`` and
        ``waiting``; its repr shows them with the limits."""
        return self._context.transport.stats

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
        a compatible server that allows more. Raises :class:`SessionClosedError` once the
        session is closed; so does every call of a client obtained before.
        """
        if self.closed:
            raise SessionClosedError("this Session is closed; open a new one")
        return ContainerClient(
            self._context,
            endpoint,
            region=resolve_region(region or self.region, endpoint),
            standard_limit=standard_limit,
            streaming_limit=streaming_limit,
        )

    async def __aenter__(self) -> Session:
        if self.closed:
            raise SessionClosedError(
                "this Session is closed and cannot be entered again; open a new one"
            )
        if self._entered:
            # httpx refuses the same way: the inner block's exit would close the pool
            # under the outer block, whose calls would then fail with SessionClosedError.
            raise SessionAlreadyEnteredError(
                "this Session is already open in an 'async with' block, whose exit closes "
                "it; enter it once, and pass the session (or its containers) to the code "
                "that needs it without 'async with'"
            )
        self._entered = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every pooled connection and the credential provider. Idempotent.

        Calls still running (from other tasks) end at once with :class:`SessionClosedError`:
        those queued for a connection, waiting for an answer, or reading a body."""
        context = self._context
        if context.closed:
            return
        # No await in between: a wait that starts after this sees the transport closed.
        context.interrupt_waits()
        await context.transport.aclose()
        closer = getattr(context.credentials, "aclose", None)
        if closer is not None:
            await closer()
