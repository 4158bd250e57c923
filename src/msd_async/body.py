"""Upload bodies: what ``put_object`` accepts, how each is read, sized and replayed.

=========================================  ==========  ==========  =============================
body                                       size known  replayable  how it is read
=========================================  ==========  ==========  =============================
``bytes`` / ``bytearray`` / ``memoryview``  yes         yes         1 MiB memoryview slices, no copy
``str`` (text content, sent as UTF-8)      yes         yes         encoded once, then as bytes
``os.PathLike`` (``pathlib.Path``)         yes         yes         1 MiB reads in a worker thread
path of a pipe, FIFO or device [3]         no          no [1]      what each read returns
seekable binary file object                yes         yes         same; rewound to where it was
non-seekable binary file object            no          no [1]      same
list or tuple of bytes-like chunks         yes         yes         each chunk as it is
any other iterable of bytes (generator)    no          no [1]      each chunk sent as yielded [2]
async iterable of bytes                    no          no [1]      each chunk sent as yielded
callable returning an async iterable       no          yes         called again for each attempt
=========================================  ==========  ==========  =============================

A chunk an iterator yields is the caller's again once the next one is asked for: a
``bytearray`` or a memoryview of a mutable buffer is copied when it is yielded (``_owned``),
so a producer may refill one buffer. A body given whole (bytes-like, a list or tuple of
chunks) is sent without a copy: leave it unchanged until ``put_object`` returns.

[1] unless ``replay_buffer=True``: the client then keeps what it sent (bounded by the object
limit) so a retry can send it again.
[2] ``next()`` runs on the event loop: a source that blocks (reads a pipe, a socket) belongs
in an async iterable instead.
[3] anything at the path that is not a regular file (``os.mkfifo``, ``/dev/fd/N`` from a
shell's ``<(command)``, ``/dev/stdin`` of a pipe or terminal): its size on disk (0) says
nothing about what it gives, so it is sent chunked as it is read, once, like a non-seekable
file object; the size limit cuts it when it gives more. A cancelled upload ends at once
even while the pipe has no writer yet or its writer stalls (``_pipes``).

A ``str`` is content, as in aiohttp, httpx and botocore (a playlist passed as text is
uploaded as that text); a file path must be an ``os.PathLike`` such as ``pathlib.Path``.

Every chunk passes a :class:`Meter` that enforces the size limit *before* the chunk that would
cross it is written, so the service never receives more than the limit and the upload is cut
instead of completed short.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import io
import os
import stat
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from typing import IO, Any, Final, Protocol, TypeAlias, cast

import anyio.to_thread

from ._pipes import open_pipe, pipe_chunks
from .config import is_async_callable, refuse_awaitable
from .errors import (
    ClientValidationError,
    ObjectTooLargeError,
    UnreplayableBodyError,
)

__all__ = [
    "CHUNK_SIZE",
    "Body",
    "Meter",
    "UploadBody",
    "prepare_body",
]

#: Large bodies go out in slices of this size: big enough that per-write overhead vanishes,
#: small enough that the socket buffer, not a copy of the body, bounds memory.
CHUNK_SIZE: Final = 1024 * 1024

Buffer: TypeAlias = bytes | bytearray | memoryview
Body: TypeAlias = (
    bytes
    | bytearray
    | memoryview
    | str
    | os.PathLike[str]
    | IO[bytes]
    | Iterable[Buffer]
    | AsyncIterable[Buffer]
    | Callable[[], AsyncIterable[Buffer]]
)
ProgressCallback: TypeAlias = Callable[[int], object]


Sink: TypeAlias = Callable[[bytes], bool]


class FollowableChunks(Protocol):
    """Chunks an upload can *follow*: besides iterating them, it may give a sink that the
    source calls with each new chunk in the producer's own step while the upload waits for
    it (the live publisher's replays, ``live.bodies.Replay``). The sink writes the chunk to
    the connection at once and returns True, or returns False to leave it to the iterator;
    it never raises."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    def __anext__(self) -> Awaitable[bytes]: ...

    def follow(self, sink: Sink) -> None: ...

    async def aclose(self) -> None: ...


def followable(chunks: object) -> FollowableChunks | None:
    """``chunks`` as :class:`FollowableChunks` if it offers ``follow``, else ``None``. By
    attribute, not ``isinstance`` of a runtime-checkable protocol: that cost 4-10 µs per
    upload, twice for a live one."""
    if callable(getattr(chunks, "follow", None)):
        return cast(FollowableChunks, chunks)
    return None


class UploadBody:
    """A body ready to send: ``size`` if known, and a fresh chunk iterator per attempt."""

    size: int | None = None
    replayable: bool = True
    description: str = "body"

    def chunks(self) -> AsyncIterator[Buffer]:  # pragma: no cover - abstract
        raise NotImplementedError

    def can_replay(self) -> bool:
        """Whether another attempt can send the whole body again (a one-shot source that
        was never read from still can)."""
        return self.replayable

    def whole(self) -> Buffer | None:
        """The whole body as one buffer when it is one in memory of at most
        :data:`CHUNK_SIZE` bytes (sent in one write, without an iterator), else ``None``."""
        return None

    async def aclose(self) -> None:
        """Release what the body holds (nothing for most)."""


class _MemoryBody(UploadBody):
    description = "bytes"

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._view = _byte_view(data, "the body")
        self.size = self._view.nbytes

    def whole(self) -> Buffer | None:
        return self._view if self._view.nbytes <= CHUNK_SIZE else None

    async def chunks(self) -> AsyncIterator[Buffer]:
        view = self._view
        size = view.nbytes
        if size <= CHUNK_SIZE:
            yield view
            return
        for start in range(0, size, CHUNK_SIZE):
            yield view[start : start + CHUNK_SIZE]


def _byte_view(data: Buffer, what: str) -> memoryview:
    """``data`` as a flat view of its bytes. A non-contiguous memoryview (a strided slice
    such as ``view[::2]``) is refused: it is not bytes-like (one buffer), its bytes cannot
    go to the socket as they are, and aiohttp failed on it mid-request with an error that
    looked like a lost connection and was retried."""
    try:
        view = memoryview(data)
    except TypeError:
        # A list of str (or of ints, list(b"ab")) gave memoryview's bare TypeError.
        hint = " (encode text with .encode())" if isinstance(data, str) else ""
        raise ClientValidationError(
            f"{what} is of type {type(data).__name__}, not bytes-like{hint}; every chunk must be "
            "bytes, bytearray or memoryview",
            rule="body.type",
        ) from None
    if not view.c_contiguous:
        raise _not_contiguous(what, "body.type")
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def _not_contiguous(what: str, rule: str) -> ClientValidationError:
    return ClientValidationError(
        f"{what} is a non-contiguous memoryview (a strided slice such as view[::2]), not "
        "one buffer of bytes; pass bytes(view), or a contiguous view",
        rule=rule,
    )


class _FileObjectBody(UploadBody):
    description = "file"

    def __init__(self, fileobj: IO[bytes]) -> None:
        self._file = fileobj
        self._start: int | None = None
        seekable = False
        try:
            seekable = fileobj.seekable()
        except (AttributeError, OSError, ValueError):
            seekable = False
        if seekable:
            self._start = fileobj.tell()
            end = fileobj.seek(0, os.SEEK_END)
            fileobj.seek(self._start)
            self.size = end - self._start
        self.replayable = seekable
        self._started = False

    def can_replay(self) -> bool:
        return self.replayable or not self._started

    async def chunks(self) -> AsyncIterator[Buffer]:
        if self._start is not None:
            self._file.seek(self._start)
        elif self._started:
            raise UnreplayableBodyError(
                "a non-seekable file body was already partly sent and cannot be sent again; "
                "pass a seekable file, a path, or replay_buffer=True"
            )
        self._started = True
        read = self._file.read
        if self.size is not None:
            async for chunk in _read_sized(read, self.size, "the file"):
                yield chunk
            return
        while chunk := await anyio.to_thread.run_sync(read, CHUNK_SIZE):
            yield chunk


def _path_body(path: os.PathLike[str], *, replay_buffer: bool) -> UploadBody:
    """A regular file, sized by ``stat`` and read again for each attempt; anything else
    there (a pipe, a FIFO, a device) is a stream that can be read once (footnote [3])."""
    name = os.fspath(path)
    try:
        info = os.stat(name)
    except OSError as exc:
        raise ClientValidationError(
            f"cannot read upload body {name!r}: {exc.strerror}", rule="body.file"
        ) from exc
    if stat.S_ISREG(info.st_mode):
        return _PathBody(name, info.st_size)
    if stat.S_ISDIR(info.st_mode):
        raise _folder_error(name)
    return _IteratorBody(read_stream(name), replay_buffer=replay_buffer)


def _folder_error(name: str) -> ClientValidationError:
    return ClientValidationError(
        f"upload body {name!r} is a folder; put_object uploads one file (upload a "
        "folder with msd_async.transfer.sync)",
        rule="body.file",
    )


def is_stream_path(name: str) -> bool:
    """Whether ``name`` is a pipe, FIFO or device: a stream that gives its bytes once
    (footnote [3]), not a regular file that can be read again. A folder raises
    :class:`ClientValidationError`; a missing path is not a stream (its upload reports it)."""
    try:
        mode = os.stat(name).st_mode
    except OSError:
        return False
    if stat.S_ISDIR(mode):
        raise _folder_error(name)
    return not stat.S_ISREG(mode)


async def read_stream(path: str) -> AsyncIterator[bytes]:
    """What a pipe or device at ``path`` gives, each chunk as soon as it is there (a live
    producer's bytes go out without waiting for a full buffer). Opened only when the upload
    starts: opening a FIFO waits for its writer. Cancellable while it waits for the writer
    or for bytes (``_pipes``)."""
    fd = await open_pipe(path)
    async with contextlib.aclosing(pipe_chunks(fd, CHUNK_SIZE, close=True)) as chunks:
        async for chunk in chunks:
            yield chunk


class _PathBody(UploadBody):
    description = "file"

    def __init__(self, path: str, size: int) -> None:
        self._path = path
        self.size = size
        self.replayable = True

    async def chunks(self) -> AsyncIterator[Buffer]:
        fileobj = await open_in_thread(self._path, "rb")
        try:
            assert self.size is not None
            async for chunk in _read_sized(fileobj.read, self.size, repr(self._path)):
                yield chunk
        finally:
            fileobj.close()


async def _read_sized(
    read: Callable[[int], bytes], size: int, name: str
) -> AsyncIterator[bytes]:
    """Exactly ``size`` bytes of a file, the size it had when the upload started, in
    :data:`CHUNK_SIZE` reads in a worker thread.

    A file that changed size raises ``body.changed`` *before* its last chunk is yielded: the
    request is then one chunk short of its Content-Length when the writer resets the
    connection, so the service stores nothing rather than a truncated (or other) object.
    """
    remaining = size
    while True:
        # The last read asks for one byte more than is left: a file that grew says so
        # here, while the body is still short of its Content-Length.
        want = remaining + 1 if remaining <= CHUNK_SIZE else CHUNK_SIZE
        chunk = await anyio.to_thread.run_sync(read, want)
        if len(chunk) > remaining:
            raise ClientValidationError(
                f"{name} grew during the upload: it holds more than the {size:,} bytes it "
                "had when the upload started; the upload was cut and nothing was stored. "
                "Do not change a file while uploading it (upload a finished copy)",
                rule="body.changed",
            )
        if not chunk:
            if remaining:
                raise ClientValidationError(
                    f"{name} shrank during the upload: it ended {remaining:,} bytes before "
                    f"the {size:,} it had when the upload started; the upload was cut and "
                    "nothing was stored. Do not change a file while uploading it",
                    rule="body.changed",
                )
            return
        remaining -= len(chunk)
        yield chunk
        if remaining == 0 and len(chunk) < want:
            return  # a short read of a file is its end: no further read needed


class _IteratorBody(UploadBody):
    """A one-shot async iterable, optionally with a replay buffer."""

    description = "async iterator"

    def __init__(self, source: AsyncIterable[Buffer], *, replay_buffer: bool) -> None:
        self._source = source
        self._iterator: AsyncIterator[Buffer] | None = None
        self._buffer: list[bytes] | None = [] if replay_buffer else None
        self._exhausted = False
        self._pending: asyncio.Future[Buffer | None] | None = None
        self.replayable = replay_buffer

    def can_replay(self) -> bool:
        return self.replayable or self._iterator is None

    async def chunks(self) -> AsyncIterator[Buffer]:
        buffer = self._buffer
        if self._iterator is not None:
            if buffer is None:
                raise UnreplayableBodyError(
                    "the async iterator body was already partly sent and cannot be sent "
                    "again; pass a callable that returns a fresh iterator, or "
                    "replay_buffer=True"
                )
            for kept in list(buffer):
                yield kept
        else:
            self._iterator = aiter(self._source)
        if self._exhausted:
            return
        if buffer is None:
            async for chunk in self._iterator:
                yield _owned(chunk)
            self._exhausted = True
            return
        while (pulled := await self._pull()) is not None:
            # Copy: the producer may reuse its buffer once we ask for the next chunk.
            kept = bytes(pulled)
            buffer.append(kept)
            yield kept
        self._exhausted = True

    async def _pull(self) -> Buffer | None:
        """The source's next chunk, or ``None`` at its end.

        The pull runs in its own task and survives the cancellation of the attempt waiting
        for it: aiohttp cancels the body writer when the server answers early (a 500 before
        reading the body), and a cancellation thrown into the source would finish it, so
        the retry would find it ended and upload the buffered prefix as the whole object.
        """
        pending = self._pending
        if pending is None:
            assert self._iterator is not None
            pending = self._pending = asyncio.ensure_future(anext(self._iterator, None))
        # Cleared only once the chunk is ours: if this wait is cancelled just as the pull
        # completes, the next attempt takes the chunk from the finished future.
        chunk = await asyncio.shield(pending)
        self._pending = None
        return chunk

    async def aclose(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None and not pending.done():
            pending.cancel()
            # Wait for the source to settle: closing a generator that is running fails.
            await asyncio.wait([pending])
        if pending is not None and pending.done() and not pending.cancelled():
            pending.exception()  # retrieved: the call already failed for another reason
        closer = getattr(self._iterator, "aclose", None)
        if closer is not None:
            await closer()


class _ReopenableBody(UploadBody):
    description = "re-openable source"

    def __init__(self, factory: Callable[[], AsyncIterable[Buffer]]) -> None:
        self._factory = factory

    def chunks(self) -> AsyncIterator[Buffer]:
        source = self._factory()
        follow = followable(source)
        if follow is not None:
            # Handed to the upload as it is, so the upload can follow it (see
            # FollowableChunks); the upload closes it.
            return follow
        return self._chunks(source)

    async def _chunks(self, source: object) -> AsyncIterator[Buffer]:
        if not isinstance(source, AsyncIterable):
            close = getattr(source, "close", None)
            if inspect.isawaitable(source) and close is not None:
                close()  # a lambda around an async function: never run, so no warning
            raise ClientValidationError(
                f"the body callable returned {type(source).__name__}, not an async iterable "
                "of bytes",
                rule="body.type",
            )
        iterator = aiter(source)
        try:
            async for chunk in iterator:
                yield _owned(chunk)
        finally:
            closer = getattr(iterator, "aclose", None)
            if closer is not None:
                await closer()


def _owned(chunk: Buffer) -> Buffer:
    """``chunk`` as bytes nobody else can change: a copy of a ``bytearray`` or of a
    memoryview over something mutable, the chunk itself otherwise.

    A producer commonly refills one buffer and yields it (or views of it) again once it is
    asked for the next chunk. The transport may still hold the chunk then: aiohttp hands
    it to ``transport.writelines`` (its path on Python 3.12.9+ and 3.13.2+), and asyncio's
    (3.12+) and uvloop's transports queue what the socket did not take by reference, not
    by copy; the refilled buffer went out in place of the bytes yielded. A copy costs a
    memcpy per chunk; bytes, and what is not bytes-like at all (refused by the Meter with
    its own error), pass as they are."""
    if type(chunk) is bytearray:
        return bytes(chunk)
    if type(chunk) is memoryview and chunk.c_contiguous and type(chunk.obj) is not bytes:
        return chunk.tobytes()
    return chunk


class _SequenceBody(UploadBody):
    description = "sequence of chunks"

    def __init__(self, parts: Iterable[Buffer]) -> None:
        self._parts = [_byte_view(p, f"chunk {n} of the body") for n, p in enumerate(parts)]
        self.size = sum(p.nbytes for p in self._parts)

    async def chunks(self) -> AsyncIterator[Buffer]:
        for part in self._parts:
            yield part


def prepare_body(
    body: Body | Iterable[Buffer] | None, *, replay_buffer: bool = False
) -> UploadBody:
    """Classify an upload body (see the table above). Raises :class:`ClientValidationError`
    (rule ``body.type``) for anything else, ``body.file`` for a path that cannot be read."""
    if body is None:
        return _MemoryBody(b"")
    if isinstance(body, (bytes, bytearray, memoryview)):
        return _MemoryBody(body)
    if isinstance(body, str):
        return _MemoryBody(body.encode("utf-8"))
    if isinstance(body, os.PathLike):
        return _path_body(body, replay_buffer=replay_buffer)
    if isinstance(body, AsyncIterable):
        return _IteratorBody(body, replay_buffer=replay_buffer)
    if hasattr(body, "read"):
        fileobj: IO[bytes] = body  # type: ignore[assignment]
        _check_file_object(fileobj)
        if replay_buffer and not _is_seekable(fileobj):
            return _IteratorBody(_read_file(fileobj), replay_buffer=True)
        return _FileObjectBody(fileobj)
    if callable(body):
        if is_async_callable(body):
            # Its coroutine is no async iterable: found only once the upload began, and
            # dropped unawaited (a RuntimeWarning on top of the error).
            raise ClientValidationError(
                f"the body callable {body!r} is an async function: it must return an async "
                "iterable of bytes (make it an async generator, with yield)",
                rule="body.type",
            )
        return _ReopenableBody(body)
    if isinstance(body, (list, tuple)):
        return _SequenceBody(body)
    if isinstance(body, Iterable) and not isinstance(body, (dict, set, frozenset)):
        return _IteratorBody(_iterate(body), replay_buffer=replay_buffer)
    raise ClientValidationError(
        f"cannot upload a {type(body).__name__}: pass bytes, text (str, sent as UTF-8), a "
        "file path (pathlib.Path), a binary file, an iterable or async iterable of bytes, or "
        "a callable returning an async iterable",
        rule="body.type",
    )


async def _iterate(source: Iterable[Buffer]) -> AsyncIterator[Buffer]:
    """A sync iterable (a plain generator) as an async one; closed with it."""
    iterator = iter(source)
    try:
        for chunk in iterator:
            yield chunk
    finally:
        closer = getattr(iterator, "close", None)
        if closer is not None:
            closer()


async def open_in_thread(
    path: str | os.PathLike[str],
    mode: str,
    *,
    opener: Callable[[str, int], int] | None = None,
) -> IO[bytes]:
    """``open(path, mode, opener=opener)`` in a worker thread, without leaking the file on
    cancellation.

    Cancelled while the thread is still opening it, the caller would never receive the
    file object and its descriptor would stay open; the file is then closed as soon as the
    thread is done.
    """
    opening = asyncio.ensure_future(anyio.to_thread.run_sync(_open, path, mode, opener))
    try:
        return await asyncio.shield(opening)
    except BaseException:
        opening.add_done_callback(_close_opened)
        raise


def _open(
    path: str | os.PathLike[str], mode: str, opener: Callable[[str, int], int] | None
) -> IO[bytes]:
    opened: IO[bytes] = open(path, mode, opener=opener)  # noqa: SIM115 - the caller closes it
    return opened


def _close_opened(opening: asyncio.Future[Any]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        opening.result().close()


def _check_file_object(fileobj: IO[bytes]) -> None:
    """Refuse, before anything is sent, a file whose reads cannot give the body: one open
    in text mode (its reads are str) or a closed one. Both failed only mid-request, the
    closed one with a bare ValueError."""
    name = getattr(fileobj, "name", None)
    what = "the file" if not isinstance(name, str) else f"the file {name!r}"
    if isinstance(fileobj, io.TextIOBase):
        raise ClientValidationError(
            f"{what} is open in text mode, so its reads give str, not bytes; open it with "
            "'rb' (or pass its path as pathlib.Path, or its text as a str)",
            rule="body.type",
        )
    if getattr(fileobj, "closed", False) is True:
        raise ClientValidationError(
            f"{what} is closed; pass it open (inside its 'with' block), or pass its path "
            "as pathlib.Path",
            rule="body.file",
        )


def _is_seekable(fileobj: Any) -> bool:
    try:
        return bool(fileobj.seekable())
    except (AttributeError, OSError, ValueError):
        return False


async def _read_file(fileobj: IO[bytes]) -> AsyncIterator[bytes]:
    while chunk := await anyio.to_thread.run_sync(fileobj.read, CHUNK_SIZE):
        yield chunk


class Meter:
    """Counts (and optionally hashes) the bytes of one upload attempt; enforces the limit.

    ``check`` runs before a chunk is written: the chunk that would pass the limit is never
    sent, so the service sees an incomplete body and stores nothing.
    """

    __slots__ = ("_hasher", "_progress", "limit", "limit_rule", "sent")

    def __init__(
        self,
        *,
        limit: int,
        limit_rule: str,
        hash_sha256: bool = False,
        progress: ProgressCallback | None = None,
    ) -> None:
        self.limit = limit
        self.limit_rule = limit_rule
        self.sent = 0
        self._hasher = hashlib.sha256() if hash_sha256 else None
        self._progress = progress

    def check(self, chunk: Buffer) -> Buffer:
        if isinstance(chunk, memoryview):
            if not chunk.c_contiguous:
                raise _not_contiguous("an upload chunk", "body.chunk-type")
            size = chunk.nbytes
        elif isinstance(chunk, (bytes, bytearray)):
            size = len(chunk)
        else:
            hint = " (encode text with .encode())" if isinstance(chunk, str) else ""
            raise ClientValidationError(
                f"upload chunks must be bytes-like, not {type(chunk).__name__}{hint}; the "
                "upload was cut and nothing was stored",
                rule="body.chunk-type",
            )
        total = self.sent + size
        if total > self.limit:
            raise ObjectTooLargeError(
                f"upload aborted: the body passed {self.limit:,} bytes, the limit for "
                f"{self.limit_rule.split('.')[-1].upper()} objects (the connection was cut, "
                "nothing was stored)",
                rule=self.limit_rule,
                limit=self.limit,
                size=total,
            )
        return chunk

    def sent_chunk(self, chunk: Buffer) -> None:
        self.sent += len(chunk) if not isinstance(chunk, memoryview) else chunk.nbytes
        if self._hasher is not None:
            self._hasher.update(chunk)
        if self._progress is not None:
            result = self._progress(self.sent)
            if result is not None:
                # A lambda around an async function, which put_object's check cannot see:
                # a coroutine per chunk that nobody ran, and no progress.
                refuse_awaitable(result, "progress", self._progress, rule="put.progress")

    @property
    def sha256(self) -> str | None:
        return None if self._hasher is None else self._hasher.hexdigest()
