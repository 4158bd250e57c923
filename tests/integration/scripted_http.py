"""A scripted raw HTTP/1.1 server for conditions the local MediaStore never produces.

Each accepted connection runs ``handler(conn)``, a coroutine that reads requests and writes
whatever raw bytes the test wants: a 200 to a ranged request, a Content-Range that starts
elsewhere, a body longer than declared, an HTML 502, a stall or a cut. Listens on 127.0.0.1
only; every connection task is cancelled and every socket closed on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType

__all__ = ["Connection", "RawRequest", "ScriptedServer", "response_head"]


@dataclass
class RawRequest:
    method: str
    target: str
    #: Lower-case header names.
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    server: ScriptedServer
    requests: list[RawRequest] = field(default_factory=list)

    async def read_request(self) -> RawRequest | None:
        """The next request (its body read by Content-Length), or ``None`` at EOF."""
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
        body = b""
        length = int(headers.get("content-length", "0") or 0)
        if length:
            body = await self.reader.readexactly(length)
        request = RawRequest(method, target, headers, body)
        self.requests.append(request)
        self.server.requests.append(request)
        return request

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def abort(self) -> None:
        """Drop the connection at once (an RST-like cut)."""
        self.writer.transport.abort()


Handler = Callable[[Connection], Awaitable[None]]


def response_head(status: int, reason: str, headers: Mapping[str, str | int]) -> bytes:
    """A status line and headers, ending with the blank line."""
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class ScriptedServer:
    """``async with ScriptedServer(handler) as server``: ``server.endpoint`` is its URL;
    ``server.requests`` every request the handlers read, in order; ``server.connections``
    how many connections were accepted."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self.requests: list[RawRequest] = []
        self.connections = 0
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._handler(Connection(reader, writer, self))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away: the script is over
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def __aenter__(self) -> ScriptedServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()
