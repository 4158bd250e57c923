"""``Limits.max_connections_per_host`` is enforced by our own gate, bounded by
``Timeouts.pool``: a call waiting for a busy host gets PoolTimeout, and a call to another
host does not wait behind it."""

from __future__ import annotations

import time

import pytest
from scripted_server import Connection, response, scripted_server

from msd_async import Limits, PoolTimeout, Session, Timeouts
from msd_async.testing import LocalMediaStore

pytestmark = pytest.mark.anyio

POOL = 0.3


async def _other_host(conn: Connection) -> None:
    while (request := await conn.read_request()) is not None:
        assert request.method == "HEAD"
        conn.write(response(200, headers={"ETag": '"e"', "Content-Type": "text/plain"}))
        await conn.drain()


async def test_the_per_host_limit_waits_at_most_the_pool_timeout(
    mediastore_server: LocalMediaStore,
) -> None:
    async with scripted_server(_other_host) as other, Session(
        credentials=mediastore_server.credentials,
        region=mediastore_server.region,
        limits=Limits(max_connections=10, max_connections_per_host=1),
        timeouts=Timeouts(pool=POOL),
    ) as session:
        store = session.container(mediastore_server.endpoint)
        elsewhere = session.container(other.endpoint)
        await store.put_object("host/a.bin", b"a" * 100_000)
        async with store.get_object("host/a.bin") as held:
            started = time.monotonic()
            with pytest.raises(PoolTimeout, match="per host") as caught:
                await store.describe_object("host/a.bin")
            elapsed = time.monotonic() - started
            assert POOL * 0.9 <= elapsed < POOL + 5.0
            assert caught.value.attempts == 0  # it took no connection
            # Another host has its own allowance.
            info = await elsewhere.describe_object("x.txt")
            assert info.etag == "e"
            assert session.pool.in_use == 1
            assert len(await held.read()) == 100_000
        assert session.pool.in_use == 0
        assert session.pool.waiting == 0
        assert (await store.describe_object("host/a.bin")).content_length == 100_000
