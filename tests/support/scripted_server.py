"""A scripted raw HTTP/1.1 server on 127.0.0.1 for conditions the local MediaStore server
never produces: headers followed by a stalled or cut body, a 200 to a ranged request, a
Content-Range that starts elsewhere, a body longer than declared, a proxy's HTML 502, a
connection dropped after reading a request, an answer sent before the upload was read, a
peer that never reads at all: any raw bytes the test wants.

Each accepted connection runs ``handler(conn)``; the handler reads the raw request with
:meth:`Connection.read_request` and writes whatever bytes it likes::

    async def handler(conn: Connection) -> None:
        request = await conn.read_request()
        await conn.send(response(200, b"half", length=10))
        await asyncio.sleep(60)            # stall mid-body; the client times out

    async with scripted_server(handler) as server:
        store = session.container(server.endpoint)

``server.connections`` lists the accepted connections and ``server.requests`` every request
the handlers read, in arrival order. Leaving the block aborts every connection and cancels
every handler still running; an unexpected exception in a handler (an ``assert`` in the
script included) is re-raised there, so a broken script fails its test. A client going away
(``ConnectionError``, a cut ``IncompleteReadError``) just ends that connection's script.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus

__all__ = [
    "Connection",
    "Handler",
    "RawRequest",
    "ScriptedServer",
    "response",
    "response_head",
    "scripted_server",
]


@dataclass
class RawRequest:
    """One request as it arrived: the request line, headers (lower-cased names), the raw
    head and the body (``b""`` when it was not read or was cut)."""

    method: str
    target: str
    headers: dict[str, str]
    head: bytes
    body: bytes = b""


@dataclass
class Connection:
    """One accepted connection; ``index`` counts connections from 0 in accept order."""

    index: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    server: ScriptedServer

    async def read_request(self, *, body: bool = True) -> RawRequest | None:
        """The next request, or ``None`` if the client closed the connection first. The body
        is read by Content-Length or chunked framing; with ``body=False`` only the head is
        read (the body stays in the socket for the script to read, or not)."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        request = RawRequest(method, target, headers, head)
        if body:
            request.body = await self.read_body(request)
        self.server.requests.append(request)
        return request

    async def read_body(self, request: RawRequest) -> bytes:
        """The request's body by Content-Length or chunked framing (``b""`` if cut)."""
        try:
            if request.headers.get("transfer-encoding", "").lower() == "chunked":
                parts: list[bytes] = []
                while True:
                    size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                    data = await self.reader.readexactly(size + 2)
                    if size == 0:
                        return b"".join(parts)
                    parts.append(data[:-2])
            length = int(request.headers.get("content-length", "0") or 0)
            return await self.reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError):
            return b""

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    async def drain(self) -> None:
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()

    async def send(self, data: bytes) -> None:
        """Write ``data`` and wait until the socket took it (a closed peer is ignored)."""
        self.write(data)
        await self.drain()

    def abort(self) -> None:
        """Drop the connection at once (RST), discarding anything not yet sent."""
        self.writer.transport.abort()


def response_head(
    status: int, headers: Mapping[str, str | int] | None = None, *, reason: str | None = None
) -> bytes:
    """A status line and exactly ``headers`` (nothing added), ending with the blank line;
    ``reason`` defaults to the standard phrase for ``status``."""
    if reason is None:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Status"
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def response(
    status: int = 200,
    body: bytes = b"",
    *,
    headers: Mapping[str, str | int] | None = None,
    length: int | None = None,
) -> bytes:
    """A whole raw HTTP/1.1 response with a Content-Length; ``length`` overrides it (to
    promise more bytes than ``body`` holds, or to answer a HEAD without a body)."""
    all_headers: dict[str, str | int] = {
        "Content-Length": len(body) if length is None else length
    }
    all_headers.update(headers or {})
    return response_head(status, all_headers) + body


Handler = Callable[[Connection], Awaitable[None]]


@dataclass
class ScriptedServer:
    handler: Handler
    endpoint: str = ""
    connections: list[Connection] = field(default_factory=list)
    requests: list[RawRequest] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(len(self.connections), reader, writer, self)
        self.connections.append(conn)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self.handler(conn)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the client went away (or the block ended): the script is over
        except BaseException as exc:  # reported when the server closes
            self.errors.append(exc)
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()


@contextlib.asynccontextmanager
async def scripted_server(
    handler: Handler, *, receive_buffer: int | None = None
) -> AsyncIterator[ScriptedServer]:
    """Serve ``handler`` on a free port of 127.0.0.1 for the duration of the block.

    ``receive_buffer`` sets SO_RCVBUF on the listening socket (accepted sockets inherit
    it), so a peer that stops reading stalls the client's writes after a few KB rather
    than after megabytes. Re-raises the first unexpected exception of a handler on exit.
    """
    state = ScriptedServer(handler)
    server = await asyncio.start_server(state._accept, "127.0.0.1", 0)
    if receive_buffer is not None:
        for sock in server.sockets:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    state.endpoint = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield state
    finally:
        server.close()
        # Abort rather than close: the scripts are over, and a graceful close would wait
        # on bytes a stalled peer never reads.
        for conn in state.connections:
            conn.abort()
        tasks = list(state._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        await server.wait_closed()
    if state.errors:
        raise state.errors[0]
