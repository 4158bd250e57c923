"""A scripted raw HTTP/1.1 server on 127.0.0.1 for conditions the local server never
produces: headers followed by a stalled or cut body, a connection dropped after reading a
request, an answer sent before the upload was read, any raw bytes at all.

Each accepted connection runs ``handler(conn)``; the handler reads the raw request with
:meth:`Connection.read_request` and writes whatever bytes it likes::

    async def handler(conn: Connection) -> None:
        request = await conn.read_request()
        conn.write(b"HTTP/1.1 200 OK\\r\\nContent-Length: 10\\r\\n\\r\\nhalf")
        await conn.drain()
        await asyncio.sleep(60)            # stall mid-body; the client times out

    async with scripted_server(handler) as server:
        store = session.container(server.endpoint)

Leaving the block closes every connection and cancels every handler still running; an
unexpected exception in a handler is re-raised there, so a broken script fails its test.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

__all__ = ["Connection", "RawRequest", "ScriptedServer", "response", "scripted_server"]


@dataclass
class RawRequest:
    """One request as it arrived: the request line, headers (lower-cased names) and body."""

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
        """The next request, or ``None`` if the client closed the connection first. With
        ``body=False`` only the head is read (the body stays in the socket)."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {}
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
                parts = []
                while True:
                    size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                    data = await self.reader.readexactly(size + 2)
                    if size == 0:
                        return b"".join(parts)
                    parts.append(data[:-2])
            length = int(request.headers.get("content-length", "0"))
            return await self.reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError):
            return b""

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    async def drain(self) -> None:
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()

    def abort(self) -> None:
        """Drop the connection at once (RST), discarding anything not yet sent."""
        transport = self.writer.transport
        transport.abort()  # type: ignore[attr-defined]


def response(
    status: int = 200,
    body: bytes = b"",
    *,
    headers: dict[str, str] | None = None,
    length: int | None = None,
) -> bytes:
    """A raw HTTP/1.1 response; ``length`` overrides Content-Length (to promise more bytes
    than ``body`` holds)."""
    reason = {200: "OK", 206: "Partial Content", 404: "Not Found", 500: "Internal Server Error"}
    lines = [f"HTTP/1.1 {status} {reason.get(status, 'Status')}"]
    all_headers = {"Content-Length": str(len(body) if length is None else length)}
    all_headers.update(headers or {})
    lines += [f"{name}: {value}" for name, value in all_headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


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
        except (ConnectionError, asyncio.CancelledError):
            pass
        except BaseException as exc:  # reported when the server closes
            self.errors.append(exc)
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()


@contextlib.asynccontextmanager
async def scripted_server(handler: Handler) -> AsyncIterator[ScriptedServer]:
    """Serve ``handler`` on a free port of 127.0.0.1 for the duration of the block."""
    state = ScriptedServer(handler)
    server = await asyncio.start_server(state._accept, "127.0.0.1", 0)
    state.endpoint = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield state
    finally:
        server.close()
        for task in list(state._tasks):
            task.cancel()
        for conn in state.connections:
            conn.writer.close()
        if state._tasks:
            await asyncio.wait(list(state._tasks), timeout=5)
        await server.wait_closed()
    if state.errors:
        raise state.errors[0]
