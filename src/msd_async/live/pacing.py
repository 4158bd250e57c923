"""Requests-per-second limits per operation kind, for origins with per-account quotas.

MediaStore allowed 10 STREAMING PutObject and 5 ListItems requests per second per account
(https://docs.aws.amazon.com/mediastore/latest/ug/quotas.html); above that it answers 429/
``ThrottlingException``, which costs a round trip and a backoff. A :class:`Pacer` spaces
requests out before they are sent instead. Throttling answers that still come back are
retried after their ``Retry-After`` (see :class:`msd_async.RetryPolicy`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

import anyio

from ..errors import InvalidParameterError

__all__ = ["MEDIASTORE_RATE_LIMITS", "OPERATIONS", "Pacer"]

#: The operation kinds a limit can be set for.
OPERATIONS: Final = frozenset(
    {"PutObject", "StreamingPutObject", "DeleteObject", "GetObject", "DescribeObject",
     "ListItems"}
)
#: MediaStore's published per-account quotas.
MEDIASTORE_RATE_LIMITS: Final = MappingProxyType({"StreamingPutObject": 10.0, "ListItems": 5.0})


class _Bucket:
    __slots__ = ("_lock", "_next", "interval")

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self._next = 0.0
        self._lock = anyio.Lock()

    async def acquire(self) -> None:
        # One slot every `interval` seconds, granted in arrival order; a burst after idle
        # time gets no credit, so the origin never sees more than `rate` per second.
        async with self._lock:
            now = time.monotonic()
            wait = self._next - now
            self._next = max(now, self._next) + self.interval
        if wait > 0:
            await anyio.sleep(wait)


class Pacer:
    """At most ``limits[operation]`` requests per second for each operation named.

    ``limits``: operation kind (see :data:`OPERATIONS`) to requests per second; operations
    not named are not paced. Raises :class:`InvalidParameterError` for an unknown kind or a
    rate that is not positive.
    """

    def __init__(self, limits: Mapping[str, float] | None = None) -> None:
        self._buckets: dict[str, _Bucket] = {}
        for operation, rate in (limits or {}).items():
            if operation not in OPERATIONS:
                raise InvalidParameterError(
                    f"cannot pace {operation!r}: choose from {sorted(OPERATIONS)}",
                    rule="live.rate-limits",
                )
            if not rate > 0:
                raise InvalidParameterError(
                    f"the rate for {operation} must be above 0 requests/s, not {rate!r}",
                    rule="live.rate-limits",
                )
            self._buckets[operation] = _Bucket(float(rate))

    async def acquire(self, operation: str) -> None:
        """Wait until one more ``operation`` request may be sent."""
        bucket = self._buckets.get(operation)
        if bucket is not None:
            await bucket.acquire()
