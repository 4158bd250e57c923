"""The per-host gate in front of the pool: waiting is bounded by Timeouts.pool, and a
call cancelled or timed out while waiting strands no slot, on either gate."""

from __future__ import annotations

import asyncio

import pytest

from msd_async import Limits, PoolTimeout, Timeouts
from msd_async.transport import Transport

pytestmark = pytest.mark.anyio

A, B = "http://a:1", "http://b:1"


def _transport(total: int, per_host: int, pool: float = 5.0) -> Transport:
    return Transport(
        limits=Limits(max_connections=total, max_connections_per_host=per_host),
        timeouts=Timeouts(pool=pool),
    )


async def test_each_host_has_its_own_allowance_within_the_total() -> None:
    transport = _transport(total=3, per_host=2, pool=0.05)
    a1 = await transport._acquire(A)
    await transport._acquire(A)
    with pytest.raises(PoolTimeout, match="per host"):
        await transport._acquire(A)
    b1 = await transport._acquire(B)  # the third of the total
    with pytest.raises(PoolTimeout, match="all 3 are busy"):
        await transport._acquire(B)
    assert transport.stats.waiting == 0
    transport._release_slot(a1)
    assert await transport._acquire(B) is b1  # a freed slot of the total goes to B
    transport._release_slot(b1)
    assert await transport._acquire(A) is a1


async def test_cancelled_waiters_strand_no_slot() -> None:
    transport = _transport(total=2, per_host=1)
    held = await transport._acquire(A)
    waiters = [asyncio.create_task(transport._acquire(A)) for _ in range(3)]
    await asyncio.sleep(0)
    assert transport.stats.waiting == 3
    for task in waiters:
        task.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    assert transport.stats.waiting == 0
    transport._release_slot(held)
    # Both of the total are free again, and A's one slot.
    await transport._acquire(A)
    await transport._acquire(B)
    assert not transport._slots.try_acquire()


async def test_a_waiter_handed_the_host_slot_then_waiting_for_the_total_gives_it_back() -> None:
    transport = _transport(total=1, per_host=1, pool=0.1)
    b = await transport._acquire(B)  # takes the only slot of the total
    with pytest.raises(PoolTimeout, match="all 1 are busy"):
        await transport._acquire(A)  # got A's host slot, then timed out on the total
    transport._release_slot(b)
    assert await transport._acquire(A) is not None  # A's host slot was given back
