"""The transport's pool gate: first come first served, and a cancelled waiter never
strands a slot or the waiters behind it."""

from __future__ import annotations

import asyncio

import pytest

from msd_async.transport import _Slots

pytestmark = pytest.mark.anyio


async def test_free_slots_are_taken_without_waiting_then_waiters_queue_in_order() -> None:
    slots = _Slots(2)
    assert slots.try_acquire() and slots.try_acquire()
    assert not slots.try_acquire()
    order: list[int] = []

    async def wait(i: int) -> None:
        await slots.acquire()
        order.append(i)

    tasks = [asyncio.create_task(wait(i)) for i in range(3)]
    await asyncio.sleep(0)
    slots.release()
    slots.release()
    await asyncio.sleep(0)
    assert order == [0, 1]
    slots.release()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2]
    assert not slots.try_acquire()  # all three hold a slot


async def test_a_waiter_cancelled_after_being_handed_a_slot_passes_it_on() -> None:
    slots = _Slots(1)
    assert slots.try_acquire()
    first = asyncio.create_task(slots.acquire())
    second = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    slots.release()  # hands the slot to `first`...
    first.cancel()  # ...which is cancelled before it runs
    await asyncio.wait_for(second, 1)
    assert first.cancelled()
    assert not slots.try_acquire()  # `second` holds the only slot
    slots.release()
    assert slots.try_acquire()


async def test_a_cancelled_waiter_does_not_strand_a_newcomer() -> None:
    slots = _Slots(1)
    assert slots.try_acquire()
    stale = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    stale.cancel()
    slots.release()  # the slot is free; `stale` has not left the queue yet
    newcomer = asyncio.create_task(slots.acquire())
    await asyncio.wait_for(newcomer, 1)
    assert stale.cancelled()
    assert not slots.try_acquire()
    slots.release()
    assert slots.try_acquire()


async def test_timed_out_waiters_leave_the_count_intact() -> None:
    slots = _Slots(1)
    assert slots.try_acquire()
    for _ in range(3):
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01):
                await slots.acquire()
    slots.release()
    assert slots.try_acquire()
    assert not slots.try_acquire()
