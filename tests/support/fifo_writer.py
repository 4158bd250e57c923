"""A FIFO with a writer thread behind it, for uploads of a named pipe (``os.mkfifo``)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["feeding"]


@contextmanager
def feeding(fifo: Path, data: bytes) -> Iterator[list[BaseException]]:
    """Makes ``fifo`` (``os.mkfifo``) and writes ``data`` into it from a thread once a reader
    opens it; yields the list that receives the writer's ``BrokenPipeError`` if the reader
    closes early. On exit, a writer still waiting for a reader (the test failed before
    opening it) is released, so the test fails instead of hanging."""
    os.mkfifo(fifo)
    errors: list[BaseException] = []

    def write() -> None:
        try:
            with open(fifo, "wb") as out:
                out.write(data)
        except BrokenPipeError as exc:
            errors.append(exc)

    writer = threading.Thread(target=write, name=f"write {fifo.name}", daemon=True)
    writer.start()
    try:
        yield errors
    finally:
        if writer.is_alive():
            # Opening the read end without blocking lets a writer blocked in open() go on;
            # once it is closed, the writer's next write fails (EPIPE) and it ends.
            fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
            os.close(fd)
        writer.join(30)
    assert not writer.is_alive(), "the FIFO's writer is still blocked"
