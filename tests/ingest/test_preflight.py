"""The start-up check of `msd relay` and `msd push` (msd_async.ingest.preflight) against an
origin that accepts and never answers."""

from __future__ import annotations

import asyncio

import pytest
from scripted_server import Connection, scripted_server

from msd_async import DeadlineExceeded, Session
from msd_async.ingest.preflight import preflight

pytestmark = pytest.mark.anyio


async def test_an_origin_that_never_answers_is_named_with_what_to_do(
    scripted_session: Session,
) -> None:
    """It said the library's "allow more time with deadline=", which an operator of msd
    relay cannot do anything with."""

    async def handler(conn: Connection) -> None:
        await conn.read_request()
        await asyncio.sleep(60)

    async with scripted_server(handler) as server:
        store = scripted_session.container(server.endpoint)
        with pytest.raises(DeadlineExceeded) as caught:
            await preflight(store, "live", within=0.5)
    message = str(caught.value)
    assert server.endpoint in message and "within 0.5 s" in message
    assert "--no-preflight" in message and "deadline=" not in message
    assert isinstance(caught.value.__cause__, DeadlineExceeded)
