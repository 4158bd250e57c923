"""Helpers shared by the reliability suite: a fast retry policy, fd counting, bodies."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

from msd_async.retry import RetryPolicy

#: Retries that ride out every injected fault in milliseconds, not seconds.
FAST_RETRY = RetryPolicy(max_attempts=8, backoff_initial=0.001, backoff_max=0.01)


def open_fds() -> int:
    """Sockets and files open in this process (Linux).

    Event-loop plumbing is not counted: uvloop (like libuv) lazily opens its own eventfd,
    epoll and signal pipe descriptors, and a spare ``/dev/null`` it keeps for running out
    of descriptors; they are the loop's, not leaks of ours.
    """
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue  # closed while listing (the listing's own descriptor, among others)
        if target.startswith(("socket:", "/")) and not target.startswith("/dev/"):
            count += 1
    return count


async def chunks_of(data: bytes, size: int = 7000) -> AsyncIterator[bytes]:
    """``data`` as an async iterator of ``size``-byte chunks."""
    for start in range(0, len(data), size):
        yield data[start : start + size]
