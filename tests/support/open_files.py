"""What this process holds open, from /proc/self/fd (Linux), for tests that check that
every exit path lets go of its files and connections."""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path


def open_files_under(root: Path) -> list[str]:
    """The files under ``root`` this process holds open, removed ones included (their
    link reads ``... (deleted)``)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(str(root)):
                found.append(target)
    return found


def sockets_on(port: int) -> list[int]:
    """The descriptors of this process's TCP sockets whose own port is ``port``: a
    server's listening socket and the connections it accepted (not its clients' ends)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                continue
            with socket.socket(fileno=os.dup(int(fd))) as sock:  # a duplicate, to ask
                name = sock.getsockname()
                if sock.type == socket.SOCK_STREAM and isinstance(name, tuple) and (
                    name[1] == port
                ):
                    found.append(int(fd))
    return found
