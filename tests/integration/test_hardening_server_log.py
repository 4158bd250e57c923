"""The local server's log stays readable: a client that gives up while a delay fault holds
its request leaves no traceback, and a malformed request is one WARNING line."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import anyio
import pytest

from msd_async import ContainerClient
from msd_async.testing import LocalMediaStore

pytestmark = pytest.mark.anyio

DELAY = 1.2


def _noisy(records: list[logging.LogRecord]) -> list[str]:
    """Records a reader of the server log would take for a failure."""
    return [
        f"{r.levelname} {r.name}: {r.getMessage()}"
        for r in records
        if r.exc_info or r.levelno >= logging.ERROR
    ]


async def _wait_for_access(records: list[logging.LogRecord], count: int) -> None:
    with anyio.fail_after(DELAY * 20):
        while True:
            if sum(r.name == "msd_async.testing.access" for r in records) >= count:
                return
            await anyio.sleep(0.02)


@pytest.mark.parametrize(
    "operation",
    ["get", "head", "put", "put-streaming", "delete", "list"],
)
async def test_a_client_gone_during_a_delay_fault_leaves_no_traceback(
    mediastore_server: LocalMediaStore,
    mediastore_client: ContainerClient,
    caplog: pytest.LogCaptureFixture,
    operation: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    store = mediastore_client
    await mediastore_server.store.put_bytes("a/obj.ts", b"x" * 3_000_000)

    async def endless() -> object:
        yield b"y" * 1000
        await asyncio.sleep(60)

    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "get": lambda: store.get_bytes("a/obj.ts"),
        "head": lambda: store.describe_object("a/obj.ts"),
        "put": lambda: store.put_object("a/new.ts", b"z" * 100_000),
        "put-streaming": lambda: store.put_object("a/live.ts", endless(), streaming=True),
        "delete": lambda: store.delete_object("a/obj.ts"),
        "list": lambda: store.list_items_page("a"),
    }
    mediastore_server.faults.inject("delay", delay=DELAY)
    # The held request lets go at the server's next look for its client: at the default
    # (1 s), that wait was most of this test's time.
    mediastore_server.client_check_interval = DELAY / 10
    # A third of the delay: the request has long reached the server, even on a busy machine.
    with anyio.move_on_after(DELAY / 3) as scope:
        await calls[operation]()
    assert scope.cancelled_caught  # the client gave up while the server held the request
    await _wait_for_access(caplog.records, 1)
    await anyio.sleep(0.05)
    assert _noisy(caplog.records) == []
    access = [r for r in caplog.records if r.name == "msd_async.testing.access"]
    assert access[0].args[2] in ("aborted", 400)  # type: ignore[index]


@pytest.mark.parametrize(
    "raw",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    ],
    ids=["bad-method", "bad-header", "bad-length", "tls-on-http"],
)
async def test_a_malformed_request_is_one_warning_line(
    mediastore_server: LocalMediaStore, caplog: pytest.LogCaptureFixture, raw: bytes
) -> None:
    caplog.set_level(logging.DEBUG)
    host, port = mediastore_server.endpoint.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(raw)
        await writer.drain()
        answer = await reader.read(100)
    finally:
        writer.close()
        await writer.wait_closed()
    assert answer.startswith(b"HTTP/1.") and b" 400 " in answer
    server_records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert len(server_records) == 1, [r.getMessage() for r in server_records]
    (record,) = server_records
    assert record.levelno == logging.WARNING
    assert record.exc_info is None
    assert "\n" not in record.getMessage()
    assert record.getMessage().startswith("malformed request from 127.0.0.1")
    assert _noisy(caplog.records) == []
