"""A response dropped without being released gives its pool slot back.

A web framework may never send a reply it was handed (an exception in a middleware after
the endpoint returned, an ASGI app that drops the response), and a caller may leave an
``ObjectDownload`` entered but never exited. The open upstream response then held one of
the pool's slots for good: with ``Limits(max_connections=N)``, N such drops and every
later call waited for ``Timeouts.pool`` and failed. Dropped, the response now closes its
connection and frees its slot, with a ResourceWarning (Python's usual word for a
resource left to the garbage collector: a bug in the code that dropped it).
"""

from __future__ import annotations

import gc

import pytest

from msd_async import ContainerClient, Limits, Session, Timeouts
from msd_async.testing import LocalMediaStore
from msd_async.web import open_object

pytestmark = pytest.mark.anyio

BODY = b"x" * 300_000


async def _drop_a_reply(store: ContainerClient) -> None:
    reply = await open_object(store, "a.ts")
    assert reply.streamed
    del reply


async def _drop_an_entered_download(store: ContainerClient) -> None:
    download = store.get_object("a.ts")
    stream = await download.__aenter__()
    assert await anext(stream)
    del download, stream


@pytest.mark.parametrize("drop", [_drop_a_reply, _drop_an_entered_download])
async def test_a_dropped_response_frees_its_slot(drop) -> None:  # type: ignore[no-untyped-def]
    async with LocalMediaStore() as server, Session(
        credentials=server.credentials,
        region="us-east-1",
        limits=Limits(max_connections=1),
        timeouts=Timeouts(pool=2.0),
    ) as session:
        store = session.container(server.endpoint)
        await store.put_object("a.ts", BODY)
        for _ in range(3):
            with pytest.warns(ResourceWarning, match="a.ts"):
                await drop(store)
                gc.collect()
            assert session.pool.in_use == 0
            # The single connection slot is free again: this would wait 2 s and fail.
            assert await store.get_bytes("a.ts") == BODY
