"""A FIFO with a writer thread behind it, for uploads of a named pipe (``os.mkfifo``)."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["feeding", "stalling"]


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


@contextmanager
def stalling(fifo: Path, first: bytes) -> Iterator[threading.Event]:
    """Makes ``fifo`` and, once a reader opens it, writes ``first`` and then nothing,
    holding the pipe open (an encoder that stalled) until the block ends; yields the event
    that ends the stall (set on exit, so the writer thread ends)."""
    os.mkfifo(fifo)
    release = threading.Event()

    def write() -> None:
        with open(fifo, "wb") as out:
            out.write(first)
            out.flush()
            release.wait(60)

    writer = threading.Thread(target=write, name=f"stall {fifo.name}", daemon=True)
    writer.start()
    try:
        yield release
    finally:
        release.set()
        if writer.is_alive():
            # A writer still blocked in open() (no reader came): let it through.
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
        writer.join(10)
