"""``deadline=`` on get_object bounds getting the response, never the body: the body's
silences are bounded by ``Timeouts.read`` alone (a live encoder may pause longer than the
deadline between two chunks)."""

from __future__ import annotations

import asyncio
import time

import pytest
from scripted_server import Connection, response, scripted_server

from msd_async import Credentials, DeadlineExceeded, ReadTimeout, RetryPolicy, Session, Timeouts

pytestmark = pytest.mark.anyio

#: The call's deadline; the pauses below are multiples of it.
DEADLINE = 1.0
HALF = b"a" * 5000


def _session(read: float) -> Session:
    return Session(
        credentials=Credentials("AKIDEXAMPLE", "secret"),
        region="us-east-1",
        retry=RetryPolicy.none(),
        timeouts=Timeouts(read=read),
    )


def _pausing(pause: float, before_headers: float = 0.0):  # type: ignore[no-untyped-def]
    async def handler(conn: Connection) -> None:
        while await conn.read_request() is not None:
            await asyncio.sleep(before_headers)
            conn.write(response(200, HALF, length=2 * len(HALF)))
            await conn.drain()
            await asyncio.sleep(pause)  # the encoder pauses mid-segment
            conn.write(HALF)
            await conn.drain()

    return handler


async def test_a_body_pause_longer_than_the_deadline_is_not_cut() -> None:
    async with scripted_server(_pausing(1.5 * DEADLINE)) as server, _session(
        read=DEADLINE * 30
    ) as session:
        store = session.container(server.endpoint)
        started = time.monotonic()
        data = await store.get_bytes("live/seg.ts", deadline=DEADLINE)
        assert data == HALF * 2
        assert time.monotonic() - started >= 1.5 * DEADLINE
        assert session.pool.in_use == 0


async def test_the_deadline_still_bounds_getting_the_response() -> None:
    async with scripted_server(_pausing(0, before_headers=30 * DEADLINE)) as server, _session(
        read=DEADLINE * 60
    ) as session:
        store = session.container(server.endpoint)
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            async with store.get_object("live/seg.ts", deadline=DEADLINE):
                pass
        # Far below the server's delay and the read timeout: the deadline ended it.
        assert time.monotonic() - started < 10 * DEADLINE
        assert session.pool.in_use == 0


async def test_the_read_timeout_still_bounds_the_body() -> None:
    read = DEADLINE / 2
    async with scripted_server(_pausing(30 * read)) as server, _session(read=read) as session:
        store = session.container(server.endpoint)
        started = time.monotonic()
        with pytest.raises(ReadTimeout):
            await store.get_bytes("live/seg.ts", deadline=60 * read)
        assert time.monotonic() - started < 15 * read
        assert session.pool.in_use == 0
