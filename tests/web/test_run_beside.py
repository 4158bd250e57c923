"""``run_beside``: work with a watcher beside it. Whichever of the two fails, its error
comes out as it is (never an ExceptionGroup, which an adapter's ``except MediaStoreError``
or a server's handling of ``OSError`` would not catch), and work's own error is never
hidden behind the watcher's."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from msd_async.web import core

pytestmark = pytest.mark.anyio


async def test_a_watcher_that_raises_comes_out_plain_and_work_is_cancelled() -> None:
    cancelled = []

    async def watcher(cancel: Callable[[], object]) -> None:
        await asyncio.sleep(0)
        raise ConnectionResetError("the watcher's receive failed")

    async def work() -> int:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return 1

    with pytest.raises(ConnectionResetError, match="the watcher's receive failed"):
        await asyncio.wait_for(core.run_beside(watcher, work()), 5)
    assert cancelled == [True]


async def test_works_own_error_wins_over_the_watchers() -> None:
    async def watcher(cancel: Callable[[], object]) -> None:
        await asyncio.sleep(0)
        raise ConnectionResetError("the watcher")

    async def work() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise LookupError("work's own, in its cleanup") from None

    with pytest.raises(LookupError, match="work's own") as caught:
        await asyncio.wait_for(core.run_beside(watcher, work()), 5)
    assert any("the watcher" in note for note in getattr(caught.value, "__notes__", ()))


async def test_an_error_of_work_comes_out_plain() -> None:
    async def watcher(cancel: Callable[[], object]) -> None:
        await asyncio.Event().wait()

    async def work() -> None:
        raise LookupError("work")

    with pytest.raises(LookupError, match="work"):
        await core.run_beside(watcher, work())


async def test_cancel_from_the_watcher_gives_none() -> None:
    async def watcher(cancel: Callable[[], object]) -> None:
        cancel()

    async def work() -> int:
        await asyncio.Event().wait()
        return 1

    assert await asyncio.wait_for(core.run_beside(watcher, work()), 5) is None


async def test_a_result_that_completed_before_the_watchers_error_is_not_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The result may hold an origin connection (a Reply): dropping it for the watcher's
    error would leave that connection to the garbage collector."""
    finished = asyncio.Event()

    async def watcher(cancel: Callable[[], object]) -> None:
        await finished.wait()
        raise ConnectionResetError("the watcher, late")

    async def work() -> str:
        await asyncio.sleep(0)
        finished.set()
        return "reply"  # no await after the watcher's error is possible: completed

    assert await asyncio.wait_for(core.run_beside(watcher, work()), 5) == "reply"
    assert any("the watcher, late" in r.getMessage() for r in caplog.records)
