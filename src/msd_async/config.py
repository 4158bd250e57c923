"""Connection pool and timeout settings, with their defaults as module constants."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

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
    ========  =======  ==============================================================

    There is deliberately no total timeout: it would kill long healthy transfers. Use the
    per-call ``deadline=`` for an upper bound covering all retries.
    """

    connect: float | None = 10.0
    read: float | None = 30.0
    write: float | None = 30.0
    pool: float | None = 30.0


@dataclass(frozen=True, slots=True)
class Limits:
    """Connection pool size.

    ``max_connections`` bounds concurrent requests across all containers of a session
    (default 256: a packager pushing many renditions needs many parallel PUTs).
    ``max_connections_per_host`` (default 0 = no extra bound) caps one endpoint.
    ``keepalive_expiry`` (default 12 s) closes idle connections before typical load
    balancers do (they time out idle connections after 15-60 s), so a reused connection is
    rarely found dead.
    """

    max_connections: int = 256
    max_connections_per_host: int = 0
    keepalive_expiry: float = 12.0


DEFAULT_TIMEOUTS: Final = Timeouts()
DEFAULT_LIMITS: Final = Limits()
