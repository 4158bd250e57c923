"""A DELETE whose answer was lost is retried, and a 404 on the retry means success: the
lost attempt deleted it. aiohttp's own silent resend of a DELETE on a dead pooled
connection would hide that first attempt, so it never happens: our retry policy resends
and counts the attempt."""

from __future__ import annotations

import pytest
from scripted_server import Connection, response, scripted_server

from msd_async import (
    ConnectionLostError,
    Credentials,
    ObjectNotFoundError,
    RequestEvent,
    RetryPolicy,
    Session,
)
from msd_async.testing import LocalMediaStore

pytestmark = pytest.mark.anyio

NOT_FOUND = response(
    404,
    b'{"__type": "ObjectNotFoundException", "Message": "no such object"}',
    headers={"Content-Type": "application/x-amz-json-1.1"},
)
FAST = RetryPolicy(max_attempts=3, backoff_initial=0.001, backoff_max=0.001)


def _session(retry: RetryPolicy, hooks: list[RequestEvent]) -> Session:
    return Session(
        credentials=Credentials("AKIDEXAMPLE", "secret"),
        region="us-east-1",
        retry=retry,
        event_hooks=[hooks.append],
    )


async def _lost_then_gone(conn: Connection) -> None:
    """The first DELETE is carried out but its answer is lost; later ones find nothing.
    A HEAD is answered on the same connection first, so the DELETE rides a pooled one."""
    while (request := await conn.read_request()) is not None:
        if request.method == "HEAD":
            conn.write(response(200, headers={"ETag": '"e"'}))
            await conn.drain()
        elif sum(r.method == "DELETE" for r in conn.server.requests) == 1:
            conn.abort()
            return
        else:
            conn.write(NOT_FOUND)
            await conn.drain()


async def test_a_404_on_a_retried_delete_is_success() -> None:
    events: list[RequestEvent] = []
    async with scripted_server(_lost_then_gone) as server, _session(FAST, events) as session:
        store = session.container(server.endpoint)
        await store.describe_object("seg.ts")  # leaves a pooled connection
        assert await store.delete_object("seg.ts") is None
        deletes = [r for r in server.requests if r.method == "DELETE"]
        assert len(deletes) == 2
        # On the wire, a DELETE as aiohttp sends it without a body.
        assert deletes[0].headers.get("content-length") == "0"
        assert "content-type" not in deletes[0].headers
        assert "transfer-encoding" not in deletes[0].headers
        retries = [e for e in events if e.kind == "retry" and e.operation == "DeleteObject"]
        assert len(retries) == 1  # the resend was ours, and counted
        assert session.pool.in_use == 0


async def test_aiohttp_does_not_resend_a_delete_by_itself() -> None:
    events: list[RequestEvent] = []
    async with scripted_server(_lost_then_gone) as server, _session(
        RetryPolicy.none(), events
    ) as session:
        store = session.container(server.endpoint)
        await store.describe_object("seg.ts")
        with pytest.raises(ConnectionLostError) as caught:
            await store.delete_object("seg.ts")
        assert caught.value.attempts == 1
        assert [r.method for r in server.requests].count("DELETE") == 1
        assert session.pool.in_use == 0


async def test_a_404_on_the_first_attempt_is_still_not_found(
    mediastore_server: LocalMediaStore,
) -> None:
    async with Session(
        credentials=mediastore_server.credentials, region=mediastore_server.region
    ) as session:
        store = session.container(mediastore_server.endpoint)
        with pytest.raises(ObjectNotFoundError):
            await store.delete_object("never/there.ts")
