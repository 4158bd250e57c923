"""Helpers shared by the reliability suite: a fast retry policy, fd counting, bodies."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

from msd_async.retry import RetryPolicy

#: Retries that ride out every injected fault in milliseconds, not seconds.
FAST_RETRY = RetryPolicy(max_attempts=8, backoff_initial=0.001, backoff_max=0.01)


def open_fds() -> int:
    """File descriptors open in this process (Linux)."""
    return len(os.listdir("/proc/self/fd"))


async def chunks_of(data: bytes, size: int = 7000) -> AsyncIterator[bytes]:
    """``data`` as an async iterator of ``size``-byte chunks."""
    for start in range(0, len(data), size):
        yield data[start : start + size]
