"""No pool slot is lost when a response body fails mid-way.

A scripted server answers put/delete/list with headers and part of the body, then stalls or
cuts the connection; the call fails by read timeout, connection cut, or cancellation
(``asyncio.wait_for``, a task group, ``deadline=``). With ``Limits(max_connections=2)`` the
calls after it must still get a connection at once, and ``session.pool.in_use`` is 0.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

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
