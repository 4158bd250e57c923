"""The client core (``Session`` + ``ContainerClient``) as a state machine, under injected
faults, against the local server over loopback with real SigV4, on asyncio and uvloop.

Hypothesis runs uploads (bytes, bytearray, memoryviews sliced, cast or strided, async
iterators; STANDARD and STREAMING; ``replay_buffer``, ``verify`` and ``progress``), whole
and ranged reads, streamed downloads read whole, by chunks, in part then abandoned, or
cancelled from another task, reads of a STREAMING upload in progress, DescribeObject,
DeleteObject, ListItems by page and iterated with small pages, calls cancelled while the
server holds them or while they wait to retry, calls whose deadline passes while held,
uploads whose source stalls and are cancelled, and event hooks on and off; each optionally
with a fault injected for its request (500, 503, throttling, a cut upload or download, a
delay). A dict of path -> bytes is the model: what every call returns or raises is checked
against it, as documented:

- a retryable fault that fewer attempts than the policy allows cure is invisible, except
  for an async iterator without ``replay_buffer`` already read from: that ends in
  ``UnreplayableBodyError``; a failed PUT leaves the previous version (or nothing);
- a PUT or DELETE ended before its answer (cancelled, deadline) is carried out whole or
  not at all: the bytes the service already received cannot be called back
  (docs/connections.md); an upload whose source stalled is never stored;
- a range returns exactly its bytes, an invalid one raises ``InvalidRangeError`` before
  sending, one past the end ``RangeNotSatisfiableError`` with the object's size;
- a cancelled call raises ``CancelledError``.

After every step: no connection is held (``session.pool``), no task of the client is left,
every attempt the hooks saw start was seen to end, and an independent reader, botocore's own
``mediastore-data`` client (sync, its own HTTP stack, signer and parser), sees exactly the
model: every ListItems listing, every object's bytes and ETag.

CI runs a bounded, derandomized set of examples; ``MSD_LONG_TESTS=1`` runs many more.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import anyio.from_thread
import botocore.config
import botocore.session
import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, rule
from stateful import LONG, PortalMachine, machine_settings

from msd_async import (
    ClientValidationError,
    ConnectionLostError,
    DeadlineExceeded,
    InvalidRangeError,
    MediaStoreError,
    ObjectNotFoundError,
    RangeNotSatisfiableError,
    RequestEvent,
    RetryPolicy,
    ServiceError,
    Session,
    SessionClosedError,
    StreamClosedError,
    ThrottlingError,
    UnreplayableBodyError,
)
from msd_async.body import CHUNK_SIZE
from msd_async.retry import RetryBudget
from msd_async.testing import LocalMediaStore

pytestmark = pytest.mark.timeout(3600 if LONG else 120)

PATHS = ["a.bin", "top/b.bin", "top/c.bin", "top/sub/d.bin", "top/sub/e.bin"]
FOLDERS = ["", "top", "top/sub"]
ATTEMPTS = 3
#: Retries ride out injected faults in milliseconds.
POLICY = RetryPolicy(max_attempts=ATTEMPTS, backoff_initial=0.001, backoff_max=0.01)
#: A "delay" fault: a slow server. Also what holds a call that is then cancelled, or
#: whose deadline (DEADLINE) passes, while it waits for the answer, however slow the
#: machine: the cancel is requested in the loop iteration after the server picked the
#: fault, before that fault's timer can be due; the deadline's timer was armed before the
#: request left, for an earlier time, and the loop runs due timers in order. What the
#: server then does with a held PUT or DELETE is waited for (_settle).
SLOW = 0.05
DEADLINE = SLOW / 2
RETRIED_FAULTS = ["500", "503", "throttle"]
SIZES = st.one_of(
    st.sampled_from([0, 1, 2, 1000, 70_000]),
    st.integers(3, 5000),
    st.sampled_from([CHUNK_SIZE, CHUNK_SIZE + 17, 2 * CHUNK_SIZE + 12_345]),
)
BODY_KINDS = [
    "bytes", "bytearray", "memoryview", "memoryview-slice", "memoryview-cast",
    "memoryview-strided", "aiter",
]


# --- the independent reader -------------------------------------------------------------------


@functools.cache
def _botocore_session() -> botocore.session.Session:
    # One for every example: a new one loads and validates the service model again
    # (a second or more per example).
    return botocore.session.get_session()


class BotocoreReader:
    """What the origin holds, as botocore's ``mediastore-data`` client sees it: nothing of
    msd_async is involved (its own HTTP stack, signer and parser). Sync: called from the
    rules, on the test's thread, while the server runs on the portal's."""

    def __init__(self, server: LocalMediaStore) -> None:
        creds = server.credentials
        self._client = _botocore_session().create_client(
            "mediastore-data",
            endpoint_url=server.endpoint,
            region_name=server.region,
            aws_access_key_id=creds.access_key_id,
            aws_secret_access_key=creds.secret_access_key,
            # One attempt: a reader that retried could hide what it saw.
            config=botocore.config.Config(retries={"max_attempts": 1, "mode": "standard"}),
        )
        self._bodies: dict[tuple[str, str], bytes] = {}

    def listing(self, folder: str) -> list[dict[str, Any]]:
        """Every item of a folder's ListItems, following NextToken."""
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"Path": folder}
        while True:
            page = self._client.list_items(**kwargs)
            items += page.get("Items", [])
            token = page.get("NextToken")
            if not token:
                return items
            kwargs["NextToken"] = token

    def snapshot(self) -> tuple[dict[str, set[tuple[str, str]]], dict[str, tuple[bytes, str]]]:
        """Every listing reachable from the root, and every listed object's bytes and ETag."""
        listings: dict[str, set[tuple[str, str]]] = {}
        objects: dict[str, tuple[bytes, str]] = {}
        pending = [""]
        while pending:
            folder = pending.pop()
            items = self.listing(folder)
            entries = [(i["Name"], i["Type"]) for i in items]
            assert len(entries) == len(set(entries)), f"ListItems {folder!r} repeats: {entries}"
            listings[folder] = set(entries)
            for item in items:
                path = f"{folder}/{item['Name']}" if folder else item["Name"]
                if item["Type"] == "FOLDER":
                    pending.append(path)
                    continue
                key = (path, item["ETag"])
                if key not in self._bodies:
                    # A version's bytes are read once: the ETag is the server's, new for
                    # every PUT the client under test makes, and a run re-reads every
                    # object after every step (megabytes each).
                    answer = self._client.get_object(Path=path)
                    with answer["Body"] as body:
                        self._bodies[key] = body.read()
                    assert answer["ETag"] == item["ETag"], (path, answer["ETag"], item)
                data = self._bodies[key]
                assert item["ContentLength"] == len(data), (path, item)
                objects[path] = (data, item["ETag"])
        return listings, objects

    def get(self, path: str) -> tuple[bytes, str] | None:
        """One object's bytes and ETag, ``None`` if there is none."""
        try:
            answer = self._client.get_object(Path=path)
        except self._client.exceptions.ObjectNotFoundException:
            return None
        with answer["Body"] as body:
            return body.read(), answer["ETag"]

    def seed(self, path: str, data: bytes) -> str:
        """Store an object the way another program would (the start of each run); its ETag."""
        answer = self._client.put_object(Path=path, Body=data)
        etag: str = answer["ETag"]
        return etag

    def close(self) -> None:
        self._client.close()


def expected_listings(model: dict[str, bytes]) -> dict[str, set[tuple[str, str]]]:
    listings: dict[str, set[tuple[str, str]]] = {"": set()}
    for path in model:
        parts = path.split("/")
        for depth in range(len(parts)):
            folder = "/".join(parts[:depth])
            kind = "OBJECT" if depth == len(parts) - 1 else "FOLDER"
            listings.setdefault(folder, set()).add((parts[depth], kind))
    return listings


def expected_range(data: bytes, first: int | None, last: int | None) -> bytes | None:
    """The bytes of a satisfiable range (RFC 9110), ``None`` for a 416."""
    size = len(data)
    if first is None:
        assert last is not None
        return data[max(0, size - last):] if size else None
    if first >= size:
        return None
    return data[first: size if last is None else min(last + 1, size)]


# --- bodies ------------------------------------------------------------------------------------


class Source:
    """An async iterator body that records whether it was started and whether it was closed
    (the upload must close what it started, on every path)."""

    def __init__(self, data: bytes, chunk: int, pause: bool, stall_after: int | None = None):
        self.data = data
        self.chunk = max(chunk, -(-len(data) // 64))  # at most 64 chunks
        self.pause = pause
        self.stall_after = stall_after
        self.started = self.closed = False
        self.stalled = asyncio.Event()
        #: Set to let a stalled source go on (never set: an encoder that died).
        self.resume = asyncio.Event()

    async def __call__(self) -> AsyncIterator[bytes]:
        self.started = True
        try:
            for n, start in enumerate(range(0, len(self.data), self.chunk)):
                if self.stall_after is not None and n == self.stall_after:
                    self.stalled.set()
                    await self.resume.wait()  # an encoder that stopped producing
                yield self.data[start: start + self.chunk]
                if self.pause:
                    await asyncio.sleep(0.001)
        finally:
            self.closed = True


def make_body(kind: str, data: bytes) -> Any:
    if kind == "bytes":
        return data
    if kind == "bytearray":
        return bytearray(data)
    if kind == "memoryview":
        return memoryview(data)
    if kind == "memoryview-slice":
        return memoryview(b"<<" + data + b">>")[2:-2]
    if kind == "memoryview-cast":
        # Items of 4 bytes: the body is its bytes, not its item count.
        return memoryview(bytearray(data)).cast("I") if len(data) % 4 == 0 else memoryview(data)
    if kind == "memoryview-strided":
        backing = bytearray(2 * len(data))
        backing[::2] = data
        return memoryview(backing)[::2]
    raise AssertionError(kind)


class Attempts:
    """An event hook that keeps count of attempts in flight: each ``start`` must be ended
    by exactly one ``response``, ``error`` or ``cancelled`` (a tracing span left open, or
    closed twice, is a bug of the client)."""

    def __init__(self) -> None:
        self.open = 0
        self.kinds: list[str] = []

    def __call__(self, event: RequestEvent) -> None:
        self.kinds.append(event.kind)
        if event.kind == "start":
            self.open += 1
        elif event.kind in ("response", "error", "cancelled"):
            self.open -= 1


def _client_tasks() -> set[asyncio.Task[Any]]:
    return {
        t for t in asyncio.all_tasks()
        if t is not asyncio.current_task()
        and "web_protocol" not in repr(getattr(t.get_coro(), "cr_code", t.get_coro()))
        and "BlockingPortal" not in repr(t.get_coro())
    }


class SessionMachine(PortalMachine):
    def __init__(self) -> None:
        super().__init__()
        #: The model: what the container must hold (bytes, and the ETag its PUT returned).
        self.model: dict[str, bytes] = {}
        self.etags: dict[str, str] = {}
        self.version = 0
        #: Requests the server finished, with the status it logged ("aborted": client gone).
        self.finished: list[tuple[str, str]] = []
        try:
            self.portal.call(self._open)
            self.reader = BotocoreReader(self.server)
        except BaseException:
            self.close_portal()
            raise

    async def _open(self) -> None:
        self.tasks_before = _client_tasks()
        self.server = LocalMediaStore(on_request=self._on_request)
        await self.server.__aenter__()
        self.session = Session(credentials=self.server.credentials, region=self.server.region,
                               retry=POLICY)
        # Big enough for every fault of a long run: the budget is not what is tested here
        # (tests/unit/test_retry.py is), and a drained one would turn cures into failures.
        self.session._context.budget = RetryBudget(100_000)
        self.store = self.session.container(self.server.endpoint)
        self.attempts = Attempts()

    @initialize(seeds=st.dictionaries(st.sampled_from(PATHS), SIZES, max_size=4))
    def seed(self, seeds: dict[str, int]) -> None:
        for path, size in seeds.items():
            data = self._content(size)
            self.etags[path] = self.reader.seed(path, data)
            self.model[path] = data

    def _on_request(self, operation: str, status: str, seconds: float) -> None:
        self.finished.append((operation, status))

    def _target(self, path: str, pick: int) -> str:
        """Mostly an object the model holds (else most reads would find nothing), sometimes
        the drawn path, which may be missing."""
        if self.model and pick < 80:
            held = sorted(self.model)
            return held[pick % len(held)]
        return path

    def _content(self, size: int) -> bytes:
        self.version += 1
        return random.Random(self.version).randbytes(size)

    def _inject(self, kind: str | None, method: str, path: str, times: int = 1,
                delay: float = SLOW) -> int:
        applied = self.server.faults.applied
        if kind is not None:
            self.server.faults.inject(kind, method=method, path=path, times=times,  # type: ignore[arg-type]
                                      delay=delay)
        return applied

    def _faulted(self, kind: str | None, applied_before: int) -> None:
        """The fault reached the server (else the rule tested nothing); then drop what is
        left of it, so the next call (and the reader) start clean."""
        if kind is not None:
            assert self.server.faults.applied > applied_before, f"fault {kind} never applied"
        self.server.faults.clear()

    def _call(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``fn`` on the portal; its result, or the MediaStoreError it raised."""
        async def go() -> Any:
            try:
                return await fn()
            except MediaStoreError as exc:
                return exc

        return self.portal.call(go)

    # --- uploads ----------------------------------------------------------------------------

    @rule(path=st.sampled_from(PATHS), size=SIZES, kind=st.sampled_from(BODY_KINDS),
          streaming=st.booleans(), replay=st.booleans(),
          chunk=st.sampled_from([1, 1000, 65_536, CHUNK_SIZE]), pause=st.booleans(),
          fault=st.sampled_from([None, None, "500", "503", "throttle", "cut-upload", "delay"]),
          times=st.integers(1, ATTEMPTS), verify=st.booleans())
    def put_object(self, path: str, size: int, kind: str, streaming: bool, replay: bool,
                   chunk: int, pause: bool, fault: str | None, times: int,
                   verify: bool) -> None:
        data = self._content(size)
        source = Source(data, chunk, pause) if kind == "aiter" else None
        body = source() if source is not None else make_body(kind, data)
        # (A strided view of 0 or 1 byte is contiguous, and uploaded.)
        strided = kind == "memoryview-strided" and not body.c_contiguous
        before = self._inject(fault, "PUT", path, times)
        progress: list[int] = []
        outcome = self._call(lambda: self.store.put_object(
            path, body, streaming=streaming, replay_buffer=replay, verify=verify,
            progress=progress.append))
        self._faulted(None if strided else fault, before)
        if strided:
            # Not bytes-like (one buffer): refused before sending, never retried.
            assert isinstance(outcome, ClientValidationError), repr(outcome)
            assert outcome.rule == "body.type" and outcome.attempts <= 1, repr(outcome)
            return
        if source is not None:
            assert source.closed or not source.started, "the upload left its body open"
        replayable = source is None or replay
        cured = fault in (None, "delay") or times < ATTEMPTS
        if isinstance(outcome, MediaStoreError):
            event(f"put: {type(outcome).__name__}")
            if fault in (None, "delay"):
                raise AssertionError(f"PUT without a fault failed: {outcome!r}") from outcome
            if isinstance(outcome, UnreplayableBodyError):
                assert not replayable, f"a replayable body was refused: {outcome!r}"
                assert "replay_buffer" in str(outcome)
            elif cured:
                raise AssertionError(f"{fault} x{times} was not cured: {outcome!r}") from outcome
            else:
                self._check_fault_error(fault, outcome)
            return  # the previous version stays: the invariant checks the model
        event(f"put: ok ({'replayable' if replayable else 'one-shot'}, fault {fault})")
        assert cured, f"{fault} x{times} should have failed the PUT, got {outcome!r}"
        if fault == "cut-upload":
            # The server read part of the body: a one-shot body cannot have been sent again.
            assert replayable, "a one-shot body that was partly sent was sent again"
        assert outcome.size == size
        assert outcome.content_sha256 == hashlib.sha256(data).hexdigest()
        # The last attempt's progress ends at the whole body (each attempt counts from 0).
        assert not progress if size == 0 else progress[-1] == size, progress[-3:]
        self.model[path] = data
        self.etags[path] = outcome.etag

    def _check_fault_error(self, fault: str | None, exc: MediaStoreError) -> None:
        assert exc.attempts == ATTEMPTS, exc.attempts
        if fault == "throttle":
            assert isinstance(exc, ThrottlingError), repr(exc)
        elif fault in ("500", "503"):
            assert isinstance(exc, ServiceError) and exc.status == int(fault), repr(exc)
        elif fault in ("cut-upload", "cut-download"):
            assert isinstance(exc, ConnectionLostError), repr(exc)
        else:
            raise AssertionError(f"{fault}: {exc!r}")

    # --- whole and ranged reads -------------------------------------------------------------

    @rule(path=st.sampled_from(PATHS), pick=st.integers(0, 99), data=st.data(),
          fault=st.sampled_from([None, None, "500", "503", "throttle", "cut-download", "delay"]),
          times=st.integers(1, ATTEMPTS - 1))
    def get_bytes(self, path: str, pick: int, data: st.DataObject, fault: str | None,
                  times: int) -> None:
        path = self._target(path, pick)
        stored = self.model.get(path)
        size = len(stored) if stored is not None else data.draw(st.integers(0, 100), "size")
        form = data.draw(st.sampled_from(
            ["whole", "abs", "open", "suffix", "text", "past-end", "inverted", "suffix-zero",
             "negative", "two-ranges"]), "form")
        first = data.draw(st.integers(0, max(size - 1, 0)), "first")
        last = data.draw(st.integers(first, first + size + 2), "last")
        byte_range: Any = None
        bounds: tuple[int | None, int | None] = (None, None)
        invalid = False
        if form == "abs":
            byte_range = bounds = (first, last)
        elif form == "open":
            byte_range = bounds = (first, None)
        elif form == "suffix":
            byte_range = bounds = (None, last + 1)
        elif form == "text":
            byte_range = f"bytes={first}-{last}"
            bounds = (first, last)
        elif form == "past-end":
            byte_range = bounds = (size, size + last)
        elif form == "inverted":
            byte_range, invalid = (last + 1, first), True
        elif form == "suffix-zero":
            byte_range, invalid = (None, 0), True
        elif form == "negative":
            byte_range, invalid = (-1, last), True
        elif form == "two-ranges":
            byte_range, invalid = f"bytes=0-{first},{last}-", True
        before = self._inject(None if invalid else fault, "GET", path, times)
        outcome = self._call(lambda: self.store.get_bytes(path, range=byte_range))
        self._faulted(None if invalid else fault, before)
        event(f"get_bytes {form}: {type(outcome).__name__}")
        if invalid:
            assert isinstance(outcome, InvalidRangeError), repr(outcome)
            return
        if stored is None:
            assert isinstance(outcome, ObjectNotFoundError), repr(outcome)
            return
        expected = stored if form == "whole" else expected_range(stored, *bounds)
        if expected is None:
            assert isinstance(outcome, RangeNotSatisfiableError), repr(outcome)
            assert outcome.object_size == size
            return
        assert isinstance(outcome, bytes), repr(outcome)
        assert outcome == expected, f"{form} {byte_range}: {len(outcome)} != {len(expected)}"

    # --- streamed downloads -----------------------------------------------------------------

    @rule(path=st.sampled_from(PATHS), pick=st.integers(0, 99),
          mode=st.sampled_from(["read", "iterate", "chunks", "partial", "cancel"]),
          ranged=st.booleans(), n=st.sampled_from([1, 7, 4096, 65_536]),
          fault=st.sampled_from([None, None, "cut-download", "delay", "503"]),
          times=st.integers(1, ATTEMPTS - 1), data=st.data())
    def stream(self, path: str, pick: int, mode: str, ranged: bool, n: int,
               fault: str | None, times: int, data: st.DataObject) -> None:
        path = self._target(path, pick)
        stored = self.model.get(path)
        byte_range = None
        expected = stored
        if stored and ranged:
            first = data.draw(st.integers(0, len(stored) - 1), "first")
            last = data.draw(st.integers(first, len(stored) - 1), "last")
            byte_range, expected = (first, last), stored[first: last + 1]
        before = self._inject(fault, "GET", path, times)
        cuts = times if fault == "cut-download" else 0
        outcome = self._call(lambda: self._stream(path, byte_range, mode, n, expected, cuts))
        self._faulted(fault, before)
        event(f"stream {mode}: {type(outcome).__name__}")
        if stored is None:
            assert isinstance(outcome, ObjectNotFoundError), repr(outcome)
            return
        assert outcome is None, repr(outcome)

    async def _stream(self, path: str, byte_range: tuple[int, int] | None, mode: str, n: int,
                      expected: bytes | None, cuts: int) -> None:
        if mode == "cancel":
            await self._cancel_mid_body(path, byte_range, expected, max(n, 1))
            return
        size = len(self.model.get(path, b""))
        async with self.store.get_object(path, range=byte_range) as obj:
            assert expected is not None
            assert obj.etag == self.etags[path]
            assert obj.object_size == size and obj.content_length == len(expected)
            if byte_range is None:
                assert obj.status == 200
            else:
                assert obj.status == 206 and obj.content_range == (*byte_range, size)
            if mode == "read":
                got = await obj.read()
            elif mode == "iterate":
                got = b"".join([chunk async for chunk in obj])
            elif mode == "chunks":
                parts = [chunk async for chunk in obj.iter_chunks(n)]
                assert all(len(p) == n for p in parts[:-1]) and all(parts), [len(p) for p in parts]
                got = b"".join(parts)
            else:  # partial: some of the body, then the block is left
                got = b""
                while len(got) < n and (chunk := await obj.receive()):
                    got += chunk
                assert expected.startswith(got)
        if mode == "partial":
            with pytest.raises(StreamClosedError):
                await obj.receive()
            return
        assert got == expected, f"{mode}: {len(got)} bytes, expected {len(expected)}"
        assert obj.bytes_received == len(expected)
        if cuts and expected:
            # Every cut (of the first answer, then of each resumed one) was resumed.
            assert obj.resumes == cuts, (obj.resumes, cuts)

    async def _cancel_mid_body(self, path: str, byte_range: tuple[int, int] | None,
                               expected: bytes | None, threshold: int) -> None:
        """A reader cancelled by another task once it has ``threshold`` bytes: inside a
        read that waits for more, between two reads, or holding a finished body."""
        received = bytearray()
        reached = asyncio.Event()

        async def read() -> None:
            async with self.store.get_object(path, range=byte_range) as obj:
                while chunk := await obj.receive():
                    received.extend(chunk)
                    if len(received) >= threshold:
                        reached.set()
                reached.set()
                await asyncio.Event().wait()

        loop = asyncio.get_running_loop()
        reader = loop.create_task(read())
        waiting = loop.create_task(reached.wait())
        await asyncio.wait({reader, waiting}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        reader.cancel()
        await asyncio.wait({reader, waiting})
        if expected is None:
            reader.result()  # ObjectNotFoundError, the rule's outcome
            raise AssertionError("a missing object was read")
        assert reader.cancelled(), f"the cancelled reader ended otherwise: {reader!r}"
        assert expected.startswith(bytes(received))

    # --- metadata, deletes, listings ----------------------------------------------------------

    @rule(path=st.sampled_from(PATHS), pick=st.integers(0, 99),
          fault=st.sampled_from([None, "500", "503", "throttle", "delay"]),
          times=st.integers(1, ATTEMPTS - 1))
    def describe_object(self, path: str, pick: int, fault: str | None, times: int) -> None:
        path = self._target(path, pick)
        before = self._inject(fault, "HEAD", path, times)
        outcome = self._call(lambda: self.store.describe_object(path))
        self._faulted(fault, before)
        if path not in self.model:
            assert isinstance(outcome, ObjectNotFoundError), repr(outcome)
            return
        assert not isinstance(outcome, MediaStoreError), repr(outcome)
        assert outcome.content_length == len(self.model[path])
        assert outcome.etag == self.etags[path]

    @rule(path=st.sampled_from(PATHS), pick=st.integers(0, 99),
          fault=st.sampled_from([None, "500", "503", "throttle", "delay"]),
          times=st.integers(1, ATTEMPTS))
    def delete_object(self, path: str, pick: int, fault: str | None, times: int) -> None:
        path = self._target(path, pick)
        before = self._inject(fault, "DELETE", path, times)
        outcome = self._call(lambda: self.store.delete_object(path))
        self._faulted(fault, before)
        event(f"delete: {type(outcome).__name__}")
        if fault in RETRIED_FAULTS and times >= ATTEMPTS:
            # Every attempt was refused before the server acted: nothing changed.
            self._check_fault_error(fault, outcome)
            return
        if path not in self.model:
            if fault in RETRIED_FAULTS:
                # Documented (delete_object): a 404 on a retry is success, since the attempt
                # whose answer was lost may have deleted it. The object is gone either way.
                assert outcome is None, repr(outcome)
            else:
                assert isinstance(outcome, ObjectNotFoundError), repr(outcome)
            return
        assert outcome is None, repr(outcome)
        del self.model[path], self.etags[path]

    @rule(folder=st.sampled_from(FOLDERS), page_size=st.sampled_from([None, 1, 2, 3]),
          by_page=st.booleans(), fault=st.sampled_from([None, "500", "throttle", "delay"]),
          times=st.integers(1, ATTEMPTS - 1))
    def list_items(self, folder: str, page_size: int | None, by_page: bool, fault: str | None,
                   times: int) -> None:
        async def by_pages() -> list[Any]:
            items: list[Any] = []
            token = None
            while True:
                page = await self.store.list_items_page(folder, max_results=page_size,
                                                        next_token=token)
                assert page_size is None or len(page.items) <= page_size
                items += page.items
                token = page.next_token
                if token is None:
                    return items

        async def iterated() -> list[Any]:
            return [item async for item in self.store.list_items(folder, page_size=page_size)]

        before = self._inject(fault, "GET", "", times)
        outcome = self._call(by_pages if by_page else iterated)
        self._faulted(fault, before)
        assert isinstance(outcome, list), repr(outcome)
        names = [(i.name, i.type) for i in outcome]
        assert len(names) == len(set(names)), f"a listing repeats an item: {names}"
        assert set(names) == expected_listings(self.model).get(folder, set())
        for item in outcome:
            if item.type == "OBJECT":
                path = f"{folder}/{item.name}" if folder else item.name
                assert item.content_length == len(self.model[path])
                assert item.etag == self.etags[path]

    # --- cancellation of a call the server holds ----------------------------------------------

    @rule(op=st.sampled_from(["put", "put-aiter", "get_bytes", "stream", "describe", "delete",
                              "list"]),
          path=st.sampled_from(PATHS), pick=st.integers(0, 99), size=SIZES,
          streaming=st.booleans())
    def cancel_held_call(self, op: str, path: str, pick: int, size: int,
                         streaming: bool) -> None:
        """A "delay" fault holds the request on the server; the caller's task is cancelled
        from another task as soon as the server has it. The call raises CancelledError,
        holds nothing, and a PUT or DELETE is carried out whole or not at all."""
        path = self._target(path, pick)
        data = self._content(size)
        source = Source(data, 65_536, False) if op == "put-aiter" else None
        calls: dict[str, Callable[[], Awaitable[Any]]] = {
            "put": lambda: self.store.put_object(path, data, streaming=streaming),
            "put-aiter": lambda: self.store.put_object(
                path, source() if source else b"", streaming=streaming, replay_buffer=True),
            "get_bytes": lambda: self.store.get_bytes(path),
            "stream": lambda: self._read_all(path),
            "describe": lambda: self.store.describe_object(path),
            "delete": lambda: self.store.delete_object(path),
            "list": lambda: self._list_all(path.rpartition("/")[0]),
        }
        method = {"put": "PUT", "put-aiter": "PUT", "describe": "HEAD", "delete": "DELETE"}.get(
            op, "GET")
        target = "" if op == "list" else path
        writes = method in ("PUT", "DELETE")
        applied = self._inject("delay", method, target, 1, delay=SLOW)
        kinds = len(self.attempts.kinds)
        done = self._done(method)
        outcome = self.portal.call(self._cancel_when_held, calls[op], applied)
        self.server.faults.clear()
        event(f"cancel {op}: {outcome}")
        assert outcome == "cancelled", f"{op}: {outcome}"
        self._saw_cancelled(kinds)
        if source is not None:
            assert source.closed or not source.started, "the cancelled upload left its body open"
        if writes:
            self._settle(method, done, path, data if method == "PUT" else None)

    def _done(self, method: str) -> int:
        """How many requests of ``method`` the server has finished."""
        operation = {"PUT": "PutObject", "DELETE": "DeleteObject"}.get(method)
        return sum(1 for name, _ in self.finished if name == operation)

    def _settle(self, method: str, done: int | None, path: str, new: bytes | None) -> None:
        """A PUT or DELETE that ended before its answer: once the server has finished it
        (``done``: its count of those before; ``None``: it may never have got it), the
        origin holds the old state or the whole new one, and the model follows.

        Not "nothing changed": the bytes the service already received cannot be called
        back, so a PUT ended after its whole body arrived may be stored, complete
        (docs/connections.md), as a DELETE sent may be carried out. Never a part of it."""
        if done is not None:
            async def finished() -> None:
                with anyio.fail_after(30):
                    while self._done(method) == done:  # noqa: ASYNC110 - a counter, no event
                        await asyncio.sleep(0.002)

            self.portal.call(finished)
        found = self.reader.get(path)
        old = self.model.get(path)
        if found is not None and method == "PUT" and found[0] == new:
            event("ended early: carried out")
            assert new is not None
            self.model[path], self.etags[path] = new, found[1]
        elif found is None and method == "DELETE":
            event("ended early: carried out" if old is not None else "ended early: nothing")
            self.model.pop(path, None)
            self.etags.pop(path, None)
        else:
            event("ended early: dropped")
            assert (found is None and old is None) or (
                found is not None and found == (old, self.etags.get(path))
            ), f"{method} {path}: the origin holds {found and len(found[0])} bytes"

    async def _cancel_when_held(self, call: Callable[[], Awaitable[Any]], applied: int) -> str:
        task = asyncio.get_running_loop().create_task(call())  # type: ignore[arg-type]
        with anyio.fail_after(30):
            # Every loop iteration: the cancel comes in the one after the server picked
            # the fault (see SLOW).
            while self.server.faults.applied == applied and not task.done():  # noqa: ASYNC110 - a counter, no event
                await asyncio.sleep(0)
        assert self.server.faults.applied == applied + 1, "cancelled before the server had it"
        task.cancel()
        await asyncio.wait({task})
        if task.cancelled():
            return "cancelled"
        return f"not cancelled: {task.exception() or task.result()!r}"

    @rule(path=st.sampled_from(PATHS), size=st.integers(2, 300_000), data=st.data(),
          form=st.sampled_from(["whole", "abs", "open", "suffix", "past-end"]))
    def read_while_streaming(self, path: str, size: int, data: st.DataObject,
                             form: str) -> None:
        """A STREAMING upload in progress is read (the service follows it and ignores
        ranges: get_bytes cuts the range out); the upload then completes. The reader gets
        exactly the bytes asked for, of the new version."""
        body = self._content(size)
        first = data.draw(st.integers(0, size - 1), "first")
        last = data.draw(st.integers(first, size + 2), "last")
        byte_range: Any = {"whole": None, "abs": (first, last), "open": (first, None),
                           "suffix": (None, last + 1), "past-end": (size, size + last)}[form]
        source = Source(body, max(1, size // 4), False, stall_after=1)

        async def go() -> tuple[Any, Any, bool]:
            following = asyncio.Event()

            def on_response(event: RequestEvent) -> None:
                if event.kind == "response" and event.operation == "GetObject":
                    following.set()

            loop = asyncio.get_running_loop()
            put = loop.create_task(self.store.put_object(path, source(), streaming=True))
            self.session.event_hooks.append(on_response)
            try:
                with anyio.fail_after(30):
                    await source.stalled.wait()
                    # Visible now: the GET is answered from the upload in progress.
                    read = loop.create_task(self.store.get_bytes(path, range=byte_range))
                    await asyncio.wait({read, loop.create_task(following.wait())},
                                       return_when=asyncio.FIRST_COMPLETED)
                    # (Else the read failed at once: a 416 needs no upload.)
                    answered_early = following.is_set()
                    source.resume.set()
                    await asyncio.wait({put, read})
            finally:
                self.session.event_hooks.remove(on_response)
                source.resume.set()
            return (put.exception() or put.result(), read.exception() or read.result(),
                    answered_early)

        put, got, followed = self.portal.call(go)
        event(f"read while streaming: {'followed' if followed else 'not followed'}")
        assert not isinstance(put, BaseException), repr(put)
        self.model[path] = body
        self.etags[path] = put.etag
        expected = body if byte_range is None else expected_range(body, *(
            (first, last) if form == "abs" else (first, None) if form == "open"
            else (None, last + 1) if form == "suffix" else (size, size + last)))
        event(f"read while streaming {form}: {type(got).__name__}")
        if expected is None:
            assert isinstance(got, RangeNotSatisfiableError), repr(got)
            assert got.object_size == size, got.object_size
            return
        assert isinstance(got, bytes), repr(got)
        assert got == expected, f"{form} {byte_range}: {len(got)} bytes != {len(expected)}"

    @rule(op=st.sampled_from(["put", "get_bytes", "stream", "describe", "delete", "list"]),
          path=st.sampled_from(PATHS), pick=st.integers(0, 99), size=SIZES)
    def deadline_on_held_call(self, op: str, path: str, pick: int, size: int) -> None:
        """A call whose deadline passes while the server holds it: DeadlineExceeded,
        nothing held, a PUT or DELETE carried out whole or not at all."""
        path = self._target(path, pick)
        data = self._content(size)
        deadline = DEADLINE
        calls: dict[str, Callable[[], Awaitable[Any]]] = {
            "put": lambda: self.store.put_object(path, data, deadline=deadline),
            "get_bytes": lambda: self.store.get_bytes(path, deadline=deadline),
            "stream": lambda: self._read_all(path, deadline=deadline),
            "describe": lambda: self.store.describe_object(path, deadline=deadline),
            "delete": lambda: self.store.delete_object(path, deadline=deadline),
            "list": lambda: self._list_all(path.rpartition("/")[0], deadline=deadline),
        }
        method = {"put": "PUT", "describe": "HEAD", "delete": "DELETE"}.get(op, "GET")
        before = self._inject("delay", method, "" if op == "list" else path, 1)
        done = self._done(method)
        outcome = self._call(calls[op])
        # Not _faulted(): on a slow machine the deadline may pass before the request is
        # even sent, which is the same outcome.
        self.server.faults.clear()
        held = self.server.faults.applied > before
        event(f"deadline {op}: {'held' if held else 'unsent'}")
        assert isinstance(outcome, DeadlineExceeded), f"{op}: {outcome!r}"
        assert outcome.attempts == 1, outcome.attempts
        if method in ("PUT", "DELETE"):
            self._settle(method, done if held else None, path, data if method == "PUT" else None)

    @rule(op=st.sampled_from(["put", "get_bytes", "describe", "delete", "list"]),
          path=st.sampled_from(PATHS), pick=st.integers(0, 99), size=SIZES)
    def cancel_in_backoff(self, op: str, path: str, pick: int, size: int) -> None:
        """A call cancelled while it waits to retry (no attempt in flight): CancelledError,
        nothing held, and with hooks on the wait is reported as abandoned."""
        path = self._target(path, pick)
        data = self._content(size)
        # Backoff drawn from up to a minute: the cancel comes long before it ends.
        slow = RetryPolicy(max_attempts=2, backoff_initial=60.0, backoff_max=60.0)
        calls: dict[str, Callable[[], Awaitable[Any]]] = {
            "put": lambda: self.store.put_object(path, data, retry=slow),
            "get_bytes": lambda: self.store.get_bytes(path, retry=slow),
            "describe": lambda: self.store.describe_object(path, retry=slow),
            "delete": lambda: self.store.delete_object(path, retry=slow),
            "list": lambda: self._list_all(path.rpartition("/")[0], retry=slow),
        }
        method = {"put": "PUT", "describe": "HEAD", "delete": "DELETE"}.get(op, "GET")
        before = self._inject("503", method, "" if op == "list" else path, 1)
        kinds = len(self.attempts.kinds)

        async def go() -> str:
            retrying = asyncio.Event()

            def on_retry(event: RequestEvent) -> None:
                if event.kind == "retry":
                    retrying.set()

            self.session.event_hooks.append(on_retry)
            try:
                task = asyncio.get_running_loop().create_task(calls[op]())  # type: ignore[arg-type]
                waiting = asyncio.ensure_future(retrying.wait())
                with anyio.fail_after(30):
                    await asyncio.wait({task, waiting}, return_when=asyncio.FIRST_COMPLETED)
                waiting.cancel()
                task.cancel()
                await asyncio.wait({task, waiting})
            finally:
                self.session.event_hooks.remove(on_retry)
            if task.cancelled():
                return "cancelled"
            return f"not cancelled: {task.exception() or task.result()!r}"

        outcome = self.portal.call(go)
        self._faulted("503", before)
        assert outcome == "cancelled", f"{op}: {outcome}"
        if self.attempts in self.session.event_hooks:
            assert self.attempts.kinds[kinds:][-2:] == ["retry", "abandoned"], (
                self.attempts.kinds[kinds:]
            )

    async def _read_all(self, path: str, **options: Any) -> bytes:
        async with self.store.get_object(path, **options) as obj:
            return await obj.read()

    async def _list_all(self, folder: str, **options: Any) -> list[Any]:
        return [item async for item in self.store.list_items(folder, page_size=1, **options)]

    @rule(path=st.sampled_from(PATHS), size=st.integers(2, 300_000), streaming=st.booleans(),
          replay=st.booleans())
    def cancel_stalled_upload(self, path: str, size: int, streaming: bool, replay: bool) -> None:
        """An encoder stops producing mid-upload and the caller gives up (cancels): the
        connection is reset, the server drops the part it got, the previous version stays."""
        source = Source(self._content(size), max(1, size // 4), False, stall_after=1)
        gone = ("PutObject", "aborted")
        aborted = self.finished.count(gone)

        async def go() -> str:
            task = asyncio.get_running_loop().create_task(self.store.put_object(
                path, source(), streaming=streaming, replay_buffer=replay))
            stalled = asyncio.ensure_future(source.stalled.wait())
            with anyio.fail_after(30):
                await asyncio.wait({task, stalled}, return_when=asyncio.FIRST_COMPLETED)
            stalled.cancel()
            task.cancel()
            await asyncio.wait({task, stalled})
            # The server ends the upload on the reset, without a timer: wait for that, so
            # the reader looks at what the server decided. (A held call of an earlier step
            # may end meanwhile too: hence the count, and the in-progress check.)
            with anyio.fail_after(30):
                while (self.finished.count(gone) == aborted  # noqa: ASYNC110 - server state
                       or self.server.store.in_progress(path) is not None):
                    await asyncio.sleep(0.001)
            return "cancelled" if task.cancelled() else f"not cancelled: {task!r}"

        kinds = len(self.attempts.kinds)
        outcome = self.portal.call(go)
        assert outcome == "cancelled", outcome
        assert source.closed, "the cancelled upload left its body open"
        self._saw_cancelled(kinds)

    @rule(on=st.booleans())
    def event_hooks(self, on: bool) -> None:
        # Calls take another path with hooks (_send_reporting): both are run.
        self.session.event_hooks = [self.attempts] if on else []

    def _saw_cancelled(self, kinds_before: int) -> None:
        """With hooks on, the cancelled attempt was reported as such."""
        if self.session.event_hooks:
            assert "cancelled" in self.attempts.kinds[kinds_before:], (
                self.attempts.kinds[kinds_before:]
            )

    # --- after every step -----------------------------------------------------------------------

    @invariant()
    def nothing_held(self) -> None:
        async def check() -> None:
            assert self.session.pool.in_use == 0, self.session.pool
            assert self.session.pool.waiting == 0, self.session.pool
            left = _client_tasks() - self.tasks_before
            assert left == set(), left
            assert self.attempts.open == 0, (self.attempts.open, self.attempts.kinds[-12:])

        self.portal.call(check)

    @invariant()
    def origin_matches_model(self) -> None:
        listings, objects = self.reader.snapshot()
        assert listings == expected_listings(self.model)
        assert objects.keys() == self.model.keys()
        for path, (body, etag) in objects.items():
            assert body == self.model[path], (
                f"{path}: the origin holds {len(body)} bytes, the model {len(self.model[path])}"
            )
            assert etag == self.etags[path], path

    def teardown(self) -> None:
        try:
            async def close() -> None:
                await self.session.aclose()
                assert self.session.pool.in_use == 0
                with pytest.raises(SessionClosedError):
                    await self.store.describe_object(PATHS[0])

            self.portal.call(close)
        finally:
            try:
                self.reader.close()
                self.portal.call(self.server.__aexit__, None, None, None)
            finally:
                self.close_portal()


class UvloopSessionMachine(SessionMachine):
    backend_options = {"use_uvloop": True}


_SETTINGS = machine_settings(examples=20, long_examples=200, steps=30, long_steps=60)
SessionMachine.TestCase.settings = _SETTINGS
test_session_state_machine = SessionMachine.TestCase
# Fewer on uvloop: the rules are the same, only the loop under them differs.
UvloopSessionMachine.TestCase.settings = settings(
    _SETTINGS, max_examples=_SETTINGS.max_examples // 2
)
test_session_state_machine_on_uvloop = UvloopSessionMachine.TestCase
