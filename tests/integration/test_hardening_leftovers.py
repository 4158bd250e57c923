"""Two leftovers of the core: a failed download never reads as an empty one, and
``list_items`` takes ``deadline=`` like every other call (issue 17, item 20)."""

from __future__ import annotations

import json

import anyio
import pytest
from scripted_server import Connection, response, response_head, scripted_server

from msd_async import (
    ConnectionLostError,
    DeadlineExceeded,
    Session,
    StreamClosedError,
)

pytestmark = pytest.mark.anyio


async def test_a_read_after_a_failed_download_raises_again(session: Session) -> None:
    async def cut_after_four_bytes(conn: Connection) -> None:
        await conn.read_request()
        # No ETag: the stream cannot resume, so the cut is the download's failure.
        await conn.send(response_head(200, {"Content-Length": 10}) + b"abcd")
        conn.abort()

    async with scripted_server(cut_after_four_bytes) as server:
        store = session.container(server.endpoint)
        async with store.get_object("a.bin") as obj:
            with pytest.raises(ConnectionLostError):
                await obj.read()
            # The body was not delivered: another read must not look like its (empty) end.
            for read in (obj.read, obj.receive):
                with pytest.raises((ConnectionLostError, StreamClosedError)):
                    await read()
            with pytest.raises((ConnectionLostError, StreamClosedError)):
                async for _ in obj:
                    pass


async def test_a_read_after_a_complete_download_is_still_the_empty_end(
    session: Session,
) -> None:
    async def whole(conn: Connection) -> None:
        await conn.read_request()
        await conn.send(response(200, b"abcd", headers={"ETag": '"e"'}))

    async with scripted_server(whole) as server:
        store = session.container(server.endpoint)
        async with store.get_object("a.bin") as obj:
            assert await obj.read() == b"abcd"
            assert await obj.read() == b""


async def test_list_items_deadline_bounds_the_whole_listing(session: Session) -> None:
    """Every page comes back well within the deadline, but the listing never ends: the
    deadline covers the whole iteration, as it covers every attempt of other calls."""

    async def endless_pages(conn: Connection) -> None:
        n = 0
        while await conn.read_request() is not None:
            n += 1
            await anyio.sleep(0.05)
            page = {"Items": [{"Name": f"o{n}", "Type": "OBJECT"}], "NextToken": f"t{n}"}
            await conn.send(response(200, json.dumps(page).encode()))

    async with scripted_server(endless_pages) as server:
        store = session.container(server.endpoint)
        seen = 0
        with anyio.fail_after(30), pytest.raises(DeadlineExceeded):
            async for _ in store.list_items("f", deadline=0.5):
                seen += 1
        assert seen >= 1
