"""Bodies of publications: bytes, files and streamed producers, shared by every destination.

A streamed body is read once, by a pump task, into a :class:`ChunkLog` that every upload
attempt and destination replays and then follows (docs/live.md, "Bodies").
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterable, AsyncIterator, Callable
from pathlib import Path
from typing import Any, Final

import anyio

from .._loop import Event, loop_time
from ..body import is_stream_path, read_stream
from ..errors import ClientValidationError, ObjectTooLargeError

__all__ = ["HEAD_SIZE", "BodySource", "ChunkLog", "GivenUp", "Replay"]

#: Bytes of a body looked at to tell its kind (a playlist's first lines).
HEAD_SIZE: Final = 4096



class ChunkLog:
    """A one-shot async iterable read once, replayable by every attempt and destination.

    A pump task pulls the producer's chunks as they come; each upload attempt replays what
    is there and then follows new chunks, so every chunk goes to every socket the moment it
    exists. When every destination has given the object up, the pump stops and closes the
    producer's iterator: the producer sees its upload end.

    A follower that has caught up and waits can be handed each new chunk in the pump's own
    step (:meth:`Replay.follow`): the upload writes it to its socket there, instead of the
    pump waking the upload's task to write it one loop iteration later, behind every other
    rendition's chunk of the same instant (docs/live.md, "Bodies").
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
        #: Followers caught up and waiting for the next chunk: the future that wakes each,
        #: and its sink, if it writes chunks itself (see Replay.follow).
        self._waiting: dict[Replay, tuple[asyncio.Future[None], Sink | None]] = {}

    def _notify(self) -> None:
        changed, self._changed = self._changed, Event()
        changed.set()
        waiting, self._waiting = self._waiting, {}
        for future, _ in waiting.values():
            if not future.done():
                future.set_result(None)

    def _hand_over(self, chunk: bytes) -> None:
        """A new chunk: written by each waiting follower's sink that takes it, which then
        goes on waiting; every other waiter is woken to read it."""
        index = len(self.chunks) - 1
        waiting = self._waiting
        for follower, (future, sink) in list(waiting.items()):
            if sink is not None and follower.position == index and sink(chunk):
                follower.position = index + 1
                continue
            del waiting[follower]
            if not future.done():
                future.set_result(None)
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
                    data = bytes(chunk)
                    self.chunks.append(data)
                    self.last_chunk_at = loop_time()
                    self.offsets.append(self.size)
                    self.arrivals.append(self.last_chunk_at)
                    self._hand_over(data)
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

    def replay(self) -> Replay:
        """Every chunk so far, then each new one, to the end of the body (an upload
        attempt's body)."""
        return Replay(self)

    async def read_all(self) -> bytes:
        while not self.done:
            await self._changed.wait()
        if self.error is not None:
            raise self.error
        return b"".join(self.chunks)


#: Writes a chunk at once if it can (True), or leaves it to the follower's reader (False).
#: Called in the pump's step; never raises.
Sink = Callable[[bytes], bool]


class Replay:
    """One reading of a :class:`ChunkLog`: an async iterator of every chunk so far, then
    of each new one as the producer hands it over."""

    __slots__ = ("_log", "_sink", "position")

    def __init__(self, log: ChunkLog) -> None:
        self._log = log
        self._sink: Sink | None = None
        #: The index of the next chunk to deliver.
        self.position = 0

    def __aiter__(self) -> Replay:
        return self

    def follow(self, sink: Sink) -> None:
        """Hand ``sink`` each chunk that arrives while this replay has caught up and is
        waiting, in the producer's own step; a chunk it takes is not delivered again. The
        order of the body holds: a sink is only offered the next chunk in it."""
        self._sink = sink

    async def __anext__(self) -> bytes:
        log = self._log
        while True:
            position = self.position
            if position < len(log.chunks):
                self.position = position + 1
                return log.chunks[position]
            if log.done:
                if log.error is not None:
                    raise log.error
                raise StopAsyncIteration
            future = asyncio.get_running_loop().create_future()
            log._waiting[self] = (future, self._sink)
            try:
                await future
            finally:
                # Gone already if the pump woke it; still there if it was cancelled.
                entry = log._waiting.get(self)
                if entry is not None and entry[0] is future:
                    del log._waiting[self]

    async def aclose(self) -> None:
        """Stop following (the upload attempt ended)."""
        self._sink = None
        entry = self._log._waiting.pop(self, None)
        if entry is not None and not entry[0].done():
            entry[0].cancel()


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
        self._limit = limit
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

    def stream_if_pipe(self) -> None:
        """A path to a pipe, FIFO or device not read yet becomes a chunk log: a pipe gives
        its bytes once, so it is read once, as it is written, and every destination and
        every retry replays what was read. Opened again per upload, concurrent
        destinations would split its bytes between them."""
        if self.path is not None and self.data is None and is_stream_path(self.path):
            self.log = ChunkLog(read_stream(self.path), self._limit)
            self.path = None

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
            if is_stream_path(self.path):
                # A pipe whose writer stalls would hold a worker thread's read, which a
                # cancellation has to wait for: read it the cancellable way, once.
                self.data = await _read_pipe(self.path, self._limit)
            else:
                self.data = await anyio.Path(self.path).read_bytes()
            return self.data
        assert self.log is not None
        return await self.log.read_all()


async def _read_pipe(path: str, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    stream = read_stream(path)
    try:
        async for chunk in stream:
            size += len(chunk)
            if size > limit:
                raise ObjectTooLargeError(
                    f"{path} gave more than {limit:,} bytes; read whole, it was given up",
                    rule="body.max-size.streaming", limit=limit, size=size,
                )
            chunks.append(chunk)
    finally:
        closer = getattr(stream, "aclose", None)
        if closer is not None:
            await closer()  # the pipe's descriptor, also when given up or cancelled
    return b"".join(chunks)
