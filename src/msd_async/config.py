"""Connection pool and timeout settings, with their defaults as module constants."""

from __future__ import annotations

import functools
import inspect
import math
import types
from dataclasses import dataclass
from typing import Final

from .errors import InvalidParameterError

__all__ = ["DEFAULT_LIMITS", "DEFAULT_TIMEOUTS", "Limits", "Timeouts"]


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Named timeouts, in seconds; ``None`` disables one.

    ========  =======  ==============================================================
    field     default  meaning
    ========  =======  ==============================================================
    connect   10       open a TCP (and TLS) connection
    read      30       longest silence while waiting for response bytes; a download
                       that keeps receiving bytes is never cut, however long it runs
    write     30       longest time the server may take to accept the next chunk of
                       an upload (a stalled peer, not a slow producer: time spent
                       waiting for *your* async iterator does not count)
    pool      30       wait for a free connection when ``Limits.max_connections``
                       requests are already in flight
    credentials 60     the credentials provider's answer before each signature (a
                       ``credential_process``, SSO or IMDS refresh that hangs); then
                       :class:`~msd_async.errors.CredentialsError`
    ========  =======  ==============================================================

    There is deliberately no total timeout: it would kill long healthy transfers. Use the
    per-call ``deadline=`` for an upper bound covering all retries (on ``get_object`` it
    bounds getting the response; the body's silences are bounded by ``read`` alone).

    Raises :class:`~msd_async.errors.InvalidParameterError` (rule ``timeouts.<field>``)
    for a value that is not a finite number above 0 (``pool`` may be 0: fail at once when
    no connection is free) or ``None`` (``None``, not infinity, disables a timeout).
    """

    connect: float | None = 10.0
    read: float | None = 30.0
    write: float | None = 30.0
    pool: float | None = 30.0
    credentials: float | None = 60.0

    def __post_init__(self) -> None:
        for name in ("connect", "read", "write", "pool", "credentials"):
            value = getattr(self, name)
            if value is None:
                continue
            # Infinity is refused too: aiohttp rounds a deadline up to a whole second, and
            # a connect timeout of inf failed every request with an OverflowError.
            if not is_seconds(value, zero=name == "pool"):
                minimum = "0 or more" if name == "pool" else "above 0"
                raise InvalidParameterError(
                    f"Timeouts.{name} must be a finite number of seconds {minimum}, or None "
                    f"for no timeout; not {value!r}",
                    rule=f"timeouts.{name}",
                )


@dataclass(frozen=True, slots=True)
class Limits:
    """Connection pool size.

    ``max_connections`` (default 256, at least 1) bounds concurrent requests across all
    containers of a session: a packager pushing many renditions needs many parallel PUTs.
    ``max_connections_per_host`` (default 0 = no extra bound) caps the concurrent requests
    to one endpoint (scheme, host and port), so one busy container cannot take the whole
    pool. Both are enforced by the client's own gate: a call that finds its limit reached
    waits at most ``Timeouts.pool`` for a connection, then raises
    :class:`~msd_async.errors.PoolTimeout` (never retried: the request was not sent).
    ``keepalive_expiry`` (default 12 s) closes idle connections before typical load
    balancers do (they time out idle connections after 15-60 s), so a reused connection is
    rarely found dead.

    Raises :class:`~msd_async.errors.InvalidParameterError` (rule ``limits.<field>``) for
    ``max_connections`` below 1, a negative ``max_connections_per_host`` or
    ``keepalive_expiry``, an infinite ``keepalive_expiry``, or a value of the wrong type.
    """

    max_connections: int = 256
    max_connections_per_host: int = 0
    keepalive_expiry: float = 12.0

    def __post_init__(self) -> None:
        for name, minimum in (("max_connections", 1), ("max_connections_per_host", 0)):
            value = getattr(self, name)
            if not is_whole_number(value, minimum):
                raise InvalidParameterError(
                    f"Limits.{name} must be a whole number of {minimum} or more, "
                    f"not {value!r}",
                    rule=f"limits.{name}",
                )
        value = self.keepalive_expiry
        # inf: aiohttp's rounding of the idle timer raised OverflowError as the first
        # connection was released, which failed that request.
        if not is_seconds(value):
            raise InvalidParameterError(
                f"Limits.keepalive_expiry must be a finite number of seconds, 0 or more, "
                f"not {value!r}",
                rule="limits.keepalive_expiry",
            )


def is_number(value: object) -> bool:
    """Whether ``value`` is a number of seconds or a count: an int or a float, not a bool
    (an int to Python, but ``True`` as a 1 s timeout is a mistake)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_seconds(value: object, *, zero: bool = True, endless: bool = False) -> bool:
    """Whether ``value`` is a number of seconds (not a bool): 0 or more, or above 0 unless
    ``zero``; finite unless ``endless`` (elsewhere ``None`` says "no limit": infinity
    overflowed aiohttp's rounding of a deadline). nan fails every comparison: refused."""
    if not is_number(value):
        return False
    seconds: float = value  # type: ignore[assignment]
    return (seconds >= 0 if zero else seconds > 0) and (endless or seconds < math.inf)


def is_whole_number(value: object, minimum: int = 0) -> bool:
    """Whether ``value`` is an int (not a bool) of at least ``minimum``: a count, a size.
    A float count (2.5, nan, inf) failed later as ``range()``'s TypeError, or meant
    something else silently."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def is_async_callable(value: object) -> bool:
    """Whether calling ``value`` makes a coroutine: an ``async def`` function or method, an
    object whose ``__call__`` is one, or a ``functools.partial`` of either
    (``inspect.iscoroutinefunction`` sees through a partial but not into ``__call__``)."""
    while isinstance(value, functools.partial):
        value = value.func
    if inspect.iscoroutinefunction(value):
        return True
    # A class is called to construct, never awaited, whatever its instances' __call__ is;
    # a plain function's or method's own __call__ is a wrapper, never async (and put_object
    # runs this for each upload given a progress callback: the usual case stops here).
    if isinstance(value, (type, types.FunctionType, types.MethodType)):
        return False
    return inspect.iscoroutinefunction(
        getattr(value, "__call__", None)  # noqa: B004 - is it async, not callable
    )


def check_plain_callback(value: object, name: str, *, rule: str) -> None:
    """Refuse a callback that cannot work where callbacks are called synchronously on the
    event loop and never awaited: something not callable (it failed only at the first
    event, far from its cause), or an async one (each call made a coroutine that nobody
    ran, and the callback silently did nothing). Raises
    :class:`~msd_async.errors.InvalidParameterError` naming ``name``."""
    if not callable(value):
        raise InvalidParameterError(
            f"{name} must be a function (called with what it reports), not {value!r}",
            rule=rule,
        )
    if is_async_callable(value):
        raise InvalidParameterError(
            f"{name} must be a plain function (it is called, never awaited), not an async "
            f"one: {value!r}; hand what it gets to a task through a queue to await",
            rule=rule,
        )


def refuse_awaitable(result: object, name: str, callback: object, *, rule: str) -> None:
    """Raise :class:`~msd_async.errors.InvalidParameterError` if a callback called and
    never awaited returned an awaitable (a lambda around an async function passes
    :func:`check_plain_callback`); a coroutine is closed first, so none is left unawaited.
    Call it only when ``result is not None``: it stays off the hot path."""
    if inspect.isawaitable(result):
        close = getattr(result, "close", None)
        if close is not None:
            close()
        raise InvalidParameterError(
            f"{name} {callback!r} returned {result!r}: it must be a plain function (it is "
            "called, never awaited); hand what it gets to a task through a queue to await",
            rule=rule,
        )


DEFAULT_TIMEOUTS: Final = Timeouts()
DEFAULT_LIMITS: Final = Limits()
