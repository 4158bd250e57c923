"""Drive the installed ``msd`` entry point as a subprocess against ``msd serve``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from serve_process import ServeProcess as Server
from serve_process import start_serve

__all__ = ["Server", "serve", "server"]


def start_server(*extra: str, log: Path | None = None) -> Server:
    """``msd serve``; with ``log``, its request log goes to that file (else it is quiet)."""
    if log is None:
        return start_serve("--no-fsync", "--quiet", *extra)
    with open(log, "w") as log_file:  # the child keeps its own descriptor
        return start_serve("--no-fsync", *extra, stderr=log_file)


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    """A factory: ``serve("--fault-rate", "0.2")`` starts a server, stopped after the test."""
    started: list[Server] = []

    def factory(*extra: str, log: Path | None = None) -> Server:
        server = start_server(*extra, log=log)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture
def server(serve: Callable[..., Server]) -> Server:
    return serve()
