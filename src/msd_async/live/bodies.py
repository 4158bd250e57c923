"""Bodies of publications: bytes, files and streamed producers, shared by every destination.

A streamed body is read once, by a pump task, into a :class:`ChunkLog` that every upload
attempt and destination replays and then follows (docs/live.md, "Bodies").
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import Any, Final

import anyio

from .._loop import Event, loop_time
from ..errors import ClientValidationError, ObjectTooLargeError

__all__ = ["HEAD_SIZE", "BodySource", "ChunkLog", "GivenUp"]

#: Bytes of a body looked at to tell its kind (a playlist's first lines).
HEAD_SIZE: Final = 4096



class ChunkLog:
    """A one-shot async iterable read once, replayable by every attempt and destination.

    A pump task pulls the producer's chunks as they come; each upload attempt replays what
    is there and then follows new chunks, so every chunk goes to every socket the moment it
    exists. When every destination has given the object up, the pump stops and closes the
    producer's iterator: the producer sees its upload end.
    """

    def __init__(self, source: AsyncIterable[bytes], limit: int) -> None:
        self._source = source
        self._limit = limit
        self.chunks: list[bytes] = []
        #: Per chunk: the body size after it, and when it arrived (for egress latency).
        self.offsets: list[int] = []
        self.arrivals: list[float] = []
        self.size = 0
        self.done = False
        self.error: BaseException | None = None
        self.started = loop_time()
        self.last_chunk_at = self.started
        self.ended_at: float | None = None
        self._changed = Event()
        self._scope: anyio.CancelScope | None = None
        self.users = 0

    def _notify(self) -> None:
        changed, self._changed = self._changed, Event()
        changed.set()

    async def pump(self) -> None:
        iterator: AsyncIterator[bytes] | None = None
        try:
            with anyio.CancelScope() as self._scope:
                iterator = aiter(self._source)
                if self.users <= 0:
                    self._scope.cancel()
                async for chunk in iterator:
                    if not isinstance(chunk, (bytes, bytearray, memoryview)):
                        raise ClientValidationError(
                            f"body chunks must be bytes, not {type(chunk).__name__}",
                            rule="body.chunk-type",
                        )
                    if not chunk:
                        continue
                    self.size += len(chunk)
                    if self.size > self._limit:
                        raise ObjectTooLargeError(
                            f"the streamed body passed {self._limit:,} bytes, the limit for "
                            "STREAMING objects; it was given up",
                            rule="body.max-size.streaming",
                            limit=self._limit,
                            size=self.size,
                        )
                    self.chunks.append(bytes(chunk))
                    self.last_chunk_at = loop_time()
                    self.offsets.append(self.size)
                    self.arrivals.append(self.last_chunk_at)
                    self._notify()
            if self._scope.cancelled_caught and not self.done:
                self.error = GivenUp("every destination gave this object up")
        except Exception as exc:
            self.error = exc
        finally:
            self.done = True
            self.ended_at = loop_time()
            if self.users <= 0:
                self.forget()  # nobody left to replay them
            closer = None if iterator is None else getattr(iterator, "aclose", None)
            if closer is not None:
                with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                    await closer()
            self._notify()

    def forget(self) -> None:
        self.chunks = []
        self.offsets = []
        self.arrivals = []

    def release(self) -> None:
        self.users -= 1
        if self.users <= 0 and not self.done and self._scope is not None:
            self._scope.cancel()

    async def replay(self) -> AsyncIterator[bytes]:
        i = 0
        while True:
            while i < len(self.chunks):
                yield self.chunks[i]
                i += 1
            if self.done:
                if self.error is not None:
                    raise self.error
                return
            await self._changed.wait()

    async def read_all(self) -> bytes:
        while not self.done:
            await self._changed.wait()
        if self.error is not None:
            raise self.error
        return b"".join(self.chunks)


class GivenUp(Exception):
    pass


class BodySource:
    """The body of one publication, shared by its destinations."""

    def __init__(self, body: object, limit: int) -> None:
        #: Destinations still needing the body; at 0 it is let go (memory stays bounded
        #: however long the stream runs).
        self.users = 0
        self.data: bytes | None = None
        self.path: str | None = None
        self.log: ChunkLog | None = None
        if isinstance(body, (bytes, bytearray, memoryview)):
            self.data = bytes(body)
        elif isinstance(body, os.PathLike):
            self.path = os.fspath(body)
        elif isinstance(body, AsyncIterable):
            self.log = ChunkLog(body, limit)
        elif isinstance(body, str):
            # As in put_object: a str is its UTF-8 text (a playlist), a file is a Path.
            self.data = body.encode()
        else:
            raise ClientValidationError(
                f"cannot publish a {type(body).__name__}: pass bytes, a str (UTF-8 text), an "
                "os.PathLike file path or an async iterable of bytes",
                rule="body.type",
            )

    @property
    def streaming(self) -> bool:
        return self.log is not None

    def release(self) -> None:
        self.users -= 1
        if self.log is not None:
            self.log.release()
        if self.users <= 0:
            self.data = None
            if self.log is not None and self.log.done:
                self.log.forget()

    def head(self) -> bytes | None:
        if self.data is not None:
            return self.data[:HEAD_SIZE]
        return None

    def upload_body(self) -> Any:
        if self.data is not None:
            return self.data
        if self.path is not None:
            return Path(self.path)  # a str would be uploaded as text
        assert self.log is not None
        return self.log.replay

    async def read_all(self) -> bytes:
        if self.data is not None:
            return self.data
        if self.path is not None:
            self.data = await anyio.Path(self.path).read_bytes()
            return self.data
        assert self.log is not None
        return await self.log.read_all()
