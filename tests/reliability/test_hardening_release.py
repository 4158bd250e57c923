"""No pool slot is lost when a response body fails mid-way.

A scripted server answers put/delete/list with headers and part of the body, then stalls or
cuts the connection; the call fails by read timeout, connection cut, or cancellation
(``asyncio.wait_for``, a task group, ``deadline=``). With ``Limits(max_connections=2)`` the
calls after it must still get a connection at once, and ``session.pool.in_use`` is 0.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import anyio
import pytest
from scripted_server import Connection, response, scripted_server

from msd_async import (
    ConnectionLostError,
    ContainerClient,
    Credentials,
    DeadlineExceeded,
    Limits,
    ReadTimeout,
    RetryPolicy,
    Session,
    Timeouts,
)

pytestmark = pytest.mark.anyio

#: The read timeout of the failing calls; every other bound is a multiple of it.
READ = 0.3

PUT_OK = b'{"ContentSHA256": "ab", "ETag": "e1", "StorageClass": "TEMPORAL"}'
OK_BODIES = {"PUT": PUT_OK, "DELETE": b"{}", "GET": b'{"Items": []}'}

Op = Callable[[ContainerClient, float | None], Awaitable[object]]
OPERATIONS: dict[str, Op] = {
    "put": lambda store, dl: store.put_object("a/b.bin", b"x" * 100, deadline=dl),
    "delete": lambda store, dl: store.delete_object("a/b.bin", deadline=dl),
    "list": lambda store, dl: store.list_items_page("a", deadline=dl),
}


def _mode_server(mode: dict[str, str]) -> Callable[[Connection], Awaitable[None]]:
    async def handler(conn: Connection) -> None:
        while (request := await conn.read_request()) is not None:
            if mode["now"] == "ok":
                conn.write(response(200, OK_BODIES[request.method]))
                await conn.drain()
                continue
            # Headers and a prefix of the promised body, then silence or a cut.
            conn.write(response(200, b'{"Items', length=500))
            await conn.drain()
            if mode["now"] == "cut":
                conn.abort()
                return
            await asyncio.sleep(3600)

    return handler


async def _cancel_with_wait_for(call: Awaitable[object]) -> None:
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(call, READ)


async def _cancel_task_group(call: Awaitable[object]) -> None:
    started = asyncio.Event()

    async def run() -> None:
        started.set()
        await call

    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(run())
        await started.wait()
        await asyncio.sleep(READ)
        task.cancel()
    assert task.cancelled()


CAUSES = ["read-timeout", "cut", "wait_for", "task-group", "deadline"]


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
@pytest.mark.parametrize("cause", CAUSES)
async def test_a_failed_body_read_releases_its_slot(operation: str, cause: str) -> None:
    mode = {"now": "cut" if cause == "cut" else "stall"}
    op = OPERATIONS[operation]
    # The read timeout fires only for the cause under test; cancellations come first.
    read = READ if cause == "read-timeout" else READ * 20
    async with scripted_server(_mode_server(mode)) as server, Session(
        credentials=Credentials("AKIDEXAMPLE", "secret"),
        region="us-east-1",
        retry=RetryPolicy.none(),
        limits=Limits(max_connections=2),
        timeouts=Timeouts(read=read, pool=READ * 10),
    ) as session:
        store = session.container(server.endpoint)
        for _ in range(3):  # more failures than connections
            if cause == "read-timeout":
                with pytest.raises(ReadTimeout):
                    await op(store, None)
            elif cause == "cut":
                with pytest.raises(ConnectionLostError):
                    await op(store, None)
            elif cause == "wait_for":
                await _cancel_with_wait_for(op(store, None))
            elif cause == "task-group":
                await _cancel_task_group(op(store, None))
            else:
                with pytest.raises((DeadlineExceeded, ReadTimeout)):
                    await op(store, READ)
            assert session.pool.in_use == 0
        mode["now"] = "ok"
        for _ in range(3):  # would raise PoolTimeout if a slot had been lost
            await op(store, None)
        assert session.pool.in_use == 0


# --- bytes nobody asked for, on an idle connection ----------------------------------------


@pytest.mark.parametrize("second", ["GET", "HEAD", "PUT"])
async def test_bytes_sent_after_a_body_are_never_taken_for_the_next_answer(second: str) -> None:
    """A server sent, after the body it declared, a whole answer of its own while the
    connection sat idle in the pool. aiohttp queued it, and the next request on that
    connection was handed it as its own answer: another object's bytes (or ETag)
    delivered as the one asked for. The connection is dropped before it is used, and
    the request goes out on a new one."""
    from msd_async import protocol

    served = 0
    strayed = asyncio.Event()

    async def smuggler(conn: Connection) -> None:
        nonlocal served
        while (request := await conn.read_request()) is not None:
            served += 1
            if served == 1:
                await conn.send(response(200, b"0123", headers={"ETag": '"good"'}))
                await asyncio.sleep(0.05)  # released to the pool by now: then the stray answer
                await conn.send(response(200, b"EVIL!", headers={"ETag": '"evil"'}))
                strayed.set()
                continue
            body = PUT_OK if request.method == "PUT" else b"good:" + str(conn.index).encode()
            length = len(b"good:1") if request.method == "HEAD" else None
            await conn.send(response(200, b"" if request.method == "HEAD" else body,
                                     headers={"ETag": '"good"'}, length=length))

    async with scripted_server(smuggler) as server, Session(
        credentials=Credentials("AKIDEXAMPLE", "secret"), region="us-east-1",
        retry=RetryPolicy(max_attempts=2, backoff_initial=0),
    ) as session:
        store = session.container(server.endpoint)
        with anyio.fail_after(10):
            assert await store.get_bytes("a/b.bin") == b"0123"
            await strayed.wait()
            await asyncio.sleep(0.05)  # the loop has read it on the idle connection
            if second == "GET":
                assert await store.get_bytes("a/b.bin") == b"good:1"
            elif second == "HEAD":
                assert (await store.describe_object("a/b.bin")).etag == "good"
            else:
                result = await store.put_object("a/b.bin", b"x")
                assert result == protocol.parse_put_result(PUT_OK, 1)
        assert session.pool.in_use == 0
    assert len(server.connections) == 2 and served == 2
