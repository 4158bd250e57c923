"""Reading pipes, FIFOs and stdin without holding up a cancelled caller or the exit.

A read of a pipe whose writer stalls, and the open() of a FIFO that has no writer yet,
never return by themselves. In one of anyio's worker threads such a call held on to its
caller: ``to_thread.run_sync`` shields the call, so a cancelled upload waited for the
read; abandoned (``abandon_on_cancel=True``) the worker is not a daemon thread, so the
interpreter waited for it at exit, and Ctrl-C could not end ``msd put`` reading a stalled
stdin. Here each such call runs in a daemon thread of its own: a cancelled caller returns
at once, the thread is left to finish, and what it was given is closed when it does (or
the process ends without waiting for it).

Reads go to the file descriptor (``os.read``), not to a buffered file object: a thread
left blocked inside a ``BufferedReader`` holds its lock, and closing that object (stdin's
at exit) would then wait for it too. A thread per read costs ~50 µs; a pipe read returns
up to 64 KiB (a pipe's capacity), so that is under 1 ms per MB, and only pipes, FIFOs,
devices and stdin come here: regular files cannot stall and keep anyio's pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import threading
from collections.abc import AsyncGenerator, Callable
from typing import TypeVar

__all__ = ["open_pipe", "pipe_chunks", "run_abandonable", "write_all"]

T = TypeVar("T")


async def run_abandonable(
    func: Callable[[], T], *, abandoned: Callable[[T | None], object] | None = None
) -> T:
    """``func()`` in a daemon thread. Cancelled, the caller returns at once; when the
    thread finishes, ``abandoned`` receives what it returned, or ``None`` if it raised (to
    close a descriptor it opened or was reading); the exception is dropped.

    ``abandoned`` runs in the thread itself when the caller left before the call returned:
    not on the event loop, which may by then be blocked (a test waiting on the pipe's
    writer) or closed, while the writer waits for this very descriptor to close."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()
    lock = threading.Lock()
    left = handed = False

    def let_go(result: T | None) -> None:
        if abandoned is not None:
            abandoned(result)

    def settle(result: T | None, error: BaseException | None) -> None:
        if done.cancelled():  # the caller left after the thread handed this over
            let_go(result)
        elif error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        nonlocal handed
        result: T | None = None
        error: BaseException | None = None
        try:
            result = func()
        except BaseException as exc:  # handed to the caller, not lost in the thread
            error = exc
        with lock:
            handed = not left
        if not handed:
            let_go(result)
            return
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # the loop is closed: nobody is left to hand it to
            let_go(result)

    threading.Thread(target=work, name="msd_async pipe", daemon=True).start()
    try:
        return await done
    except asyncio.CancelledError:
        with lock:
            left = True
        if done.done() and not done.cancelled():
            # Finished just as the caller was cancelled, before it resumed: the result
            # was handed over, so letting go of it is ours to do.
            failed = done.exception() is not None
            let_go(None if failed else done.result())
        raise


async def open_pipe(path: str, *, write: bool = False) -> int:
    """A descriptor of ``path`` opened for reading (or ``write``-ing); for a FIFO this
    waits for its writer (or reader), cancellable: a descriptor opened after the caller
    left is closed. Never a terminal's controlling one (``O_NOCTTY``)."""
    def close_if_opened(fd: int | None) -> None:
        if fd is not None:
            os.close(fd)

    flags = (os.O_WRONLY if write else os.O_RDONLY) | os.O_NOCTTY | os.O_CLOEXEC
    return await run_abandonable(lambda: os.open(path, flags), abandoned=close_if_opened)


async def pipe_chunks(fd: int, size: int, *, close: bool) -> AsyncGenerator[bytes, None]:
    """What ``fd`` gives, each read as soon as it returns (at most ``size`` bytes), until
    its end. ``close``: the descriptor is this iterator's to close when it ends; if it ends
    by a cancellation during a read, that read closes it when it returns (see
    :func:`run_abandonable`: the descriptor must stay open while the read may use it)."""

    def close_after_read(_: bytes | None) -> None:
        with contextlib.suppress(OSError):
            os.close(fd)

    left_to_the_read = False
    try:
        while True:
            try:
                chunk = await run_abandonable(
                    functools.partial(os.read, fd, size),
                    abandoned=close_after_read if close else None,
                )
            except asyncio.CancelledError:
                left_to_the_read = True
                raise
            if not chunk:
                return
            yield chunk
    finally:
        if close and not left_to_the_read:
            with contextlib.suppress(OSError):
                os.close(fd)


async def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write all of ``data`` to ``fd`` (a pipe whose reader may stall: ``msd get x - |
    slow``); cancellable while the pipe is full. A reader gone raises BrokenPipeError."""
    view = memoryview(data)
    while view:
        written = await run_abandonable(functools.partial(os.write, fd, view))
        view = view[written:]
