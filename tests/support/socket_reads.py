"""Reading what a server sent to a raw-socket client of a test."""

from __future__ import annotations

import asyncio
import socket


async def drained(sock: socket.socket) -> tuple[int, bool]:
    """Read what the server sent: (bytes, whether the connection ended: closed or reset,
    rather than still open with nothing more coming within a few seconds)."""
    loop = asyncio.get_running_loop()
    total = 0
    try:
        while chunk := await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), 5):
            total += len(chunk)
    except ConnectionError:
        return total, True
    except TimeoutError:
        return total, False
    return total, True
