"""The event loop's own primitives, for the paths that run for every chunk or every
publication (the live publisher's bodies, jobs and outcomes).

msd_async runs on asyncio only (aiohttp does). anyio's ``Event()`` and ``current_time()``
look up the running async library on every call (sniffio): on Python 3.11, ``anyio.Event()``
cost 1.37 µs against ``asyncio.Event()``'s 0.16 µs and ``anyio.current_time()`` 0.71 µs
against ``loop.time()``'s 0.08 µs, several per chunk (docs/scoreboard.md, "The live egress
tail"). asyncio's Event wakes and cancels the same way inside anyio's cancel scopes (they
cancel the task).
"""

from __future__ import annotations

import time
from asyncio import Event
from collections.abc import Callable
from typing import Final

__all__ = ["Event", "loop_time"]

#: The clock asyncio's loop reads (``BaseEventLoop.time`` is ``time.monotonic``; uvloop's
#: reads the same clock, to the millisecond and cached per loop iteration). Not
#: ``asyncio.get_running_loop().time()``: on Python 3.11 finding the running loop is a
#: ``getpid()`` system call (asyncio's fork check), and this runs for every chunk.
loop_time: Final[Callable[[], float]] = time.monotonic
