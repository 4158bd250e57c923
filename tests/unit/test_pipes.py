"""msd_async._pipes.run_abandonable: a cancelled caller returns at once, and whatever the
call returns is let go of exactly once, however the cancellation and the return interleave
(a descriptor left open here kept a FIFO's writer blocked forever)."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
import time
from pathlib import Path

import pytest

from msd_async._pipes import pipe_chunks, run_abandonable

pytestmark = pytest.mark.anyio


def _pipe_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "msd_async pipe"]


def _wait_until(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.001)


async def test_a_result_is_handed_to_the_caller() -> None:
    released: list[object] = []
    assert await run_abandonable(lambda: 42, abandoned=released.append) == 42
    assert released == []


async def test_an_error_is_raised_to_the_caller() -> None:
    def fail() -> int:
        raise OSError(9, "bad descriptor")

    with pytest.raises(OSError, match="bad descriptor"):
        await run_abandonable(fail)


async def test_a_caller_cancelled_during_the_call_leaves_and_the_thread_lets_go() -> None:
    gate = threading.Event()
    released: list[object] = []

    def blocked() -> int:
        gate.wait(10)
        return 7

    task = asyncio.create_task(run_abandonable(blocked, abandoned=released.append))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task  # at once, while the call is still blocked
    assert released == []
    gate.set()
    for _ in range(1000):
        if released:
            break
        await asyncio.sleep(0.01)
    assert released == [7]


async def test_a_caller_cancelled_as_the_call_returns_lets_go_itself() -> None:
    """The thread has handed its result over, but the caller is cancelled before it
    resumes: the result is the caller's to let go of (the thread thinks it delivered)."""
    gate = threading.Event()
    released: list[object] = []

    def blocked() -> int:
        gate.wait(10)
        return 8

    task = asyncio.create_task(run_abandonable(blocked, abandoned=released.append))
    await asyncio.sleep(0.05)
    gate.set()
    # Block the loop until the thread has queued its result and ended, so the next loop
    # iteration hands the result over (scheduling the caller) and then runs this test,
    # which cancels the caller before it resumes.
    _wait_until(lambda: not _pipe_threads())
    assert not _pipe_threads()
    await asyncio.sleep(0)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert released == [8]


async def test_a_left_call_is_let_go_of_without_the_event_loop() -> None:
    """The thread lets go of what it returns itself: the loop may be blocked by then (a
    test waiting for a FIFO's writer, which waits for this very descriptor to close)."""
    gate = threading.Event()
    released = threading.Event()

    def blocked() -> int:
        gate.wait(10)
        return 9

    task = asyncio.create_task(run_abandonable(blocked, abandoned=lambda _: released.set()))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    gate.set()
    assert released.wait(10), "the result waited for the blocked event loop"


async def test_a_read_that_fails_closes_the_descriptor_it_owns(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY)  # read() of a folder fails: EISDIR
    with pytest.raises(IsADirectoryError):
        async for _ in pipe_chunks(fd, 1024, close=True):
            pass
    with pytest.raises(OSError) as closed:
        os.fstat(fd)
    assert closed.value.errno == errno.EBADF
