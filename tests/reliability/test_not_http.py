"""An endpoint that does not speak HTTP/1.1 (a TLS port reached with http://, an SSH or
HTTP/2-only server) or sends a head aiohttp's parser refuses: one line that says so and
what to check, not aiohttp's multi-line "400, message=..." that reads as the server's
own 400."""

from __future__ import annotations

import asyncio

import pytest
from scripted_server import Connection, scripted_server

from msd_async import ConnectionLostError, Credentials, RetryPolicy, ServiceError, Session

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    "answer",
    [
        b"\x15\x03\x01\x00\x02\x02\x50",  # a TLS alert: http:// to an HTTPS port
        b"SSH-2.0-OpenSSH_9.0\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n",
    ],
    ids=["tls", "ssh", "bad-length"],
)
async def test_an_answer_that_is_not_http_says_so_in_one_line(answer: bytes) -> None:
    async def handler(conn: Connection) -> None:
        while await conn.read_request() is not None:
            await conn.send(answer)
            await asyncio.sleep(30)

    async with scripted_server(handler) as server, Session(
        credentials=Credentials("AKIDEXAMPLE", "secret"),
        region="us-east-1",
        retry=RetryPolicy.none(),
    ) as session:
        store = session.container(server.endpoint)
        with pytest.raises(ConnectionLostError) as caught:
            await store.describe_object("a.ts")
        assert not isinstance(caught.value, ServiceError)
        message = str(caught.value)
        assert "not valid HTTP/1.1" in message and "http:// to an HTTPS port" in message
        assert "\n" not in message
        assert "400, message=" not in message  # aiohttp's own verdict, not a status sent
        assert session.pool.in_use == 0
