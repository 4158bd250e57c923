"""The event loop's own primitives, for the paths that run for every chunk or every
publication (the live publisher's bodies, jobs and outcomes).

msd_async runs on asyncio only (aiohttp does). anyio's ``Event()`` and ``current_time()``
look up the running async library on every call (sniffio): on Python 3.11, ``anyio.Event()``
cost 1.37 µs against ``asyncio.Event()``'s 0.16 µs and ``anyio.current_time()`` 0.71 µs
against ``loop.time()``'s 0.08 µs, several per chunk (docs/scoreboard.md, "The live egress
tail"). These read the same clock as anyio's, and wake and cancel the same way inside anyio's
cancel scopes, which cancel the task.
"""

from __future__ import annotations

import asyncio
from asyncio import Event

__all__ = ["Event", "loop_time"]


def loop_time() -> float:
    """The running loop's clock (what ``anyio.current_time()`` reads on asyncio)."""
    return asyncio.get_running_loop().time()
