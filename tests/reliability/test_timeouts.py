"""Named timeouts and per-call deadlines, against real sockets on 127.0.0.1.

Every time bound is a multiple of the timeout it checks, with margins that hold on a busy
2-core machine: a bound says "the timeout ended it, not the server's much longer delay"
(or "it did not hang"), never "it took about this long".
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from reliability_helpers import FAST_RETRY
from scripted_server import Connection, scripted_server

from msd_async import (
    ConnectError,
    ConnectTimeout,
    DeadlineExceeded,
    Limits,
    PoolTimeout,
    ReadTimeout,
    ServerError,
    Session,
    Timeouts,
    WriteTimeout,
)
from msd_async.retry import RetryPolicy
from msd_async.testing import LocalMediaStore

pytestmark = pytest.mark.anyio


def _session(server: LocalMediaStore, **kwargs: object) -> Session:
    kwargs.setdefault("retry", FAST_RETRY)
    return Session(credentials=server.credentials, region=server.region, **kwargs)  # type: ignore[arg-type]


# --- read timeout --------------------------------------------------------------------------


async def test_read_timeout_is_retried_then_succeeds(
    mediastore_server: LocalMediaStore,
) -> None:
    read = 0.15
    delay = read * 10
    async with _session(mediastore_server, timeouts=Timeouts(read=read)) as session:
        store = session.container(mediastore_server.endpoint)
        await store.put_object("slow/a.bin", b"payload")
        mediastore_server.faults.inject("delay", times=2, method="GET", delay=delay)
        started = time.monotonic()
        assert await store.get_bytes("slow/a.bin") == b"payload"
        # Two read timeouts (~2 * read) and a retry; waiting out both delays would take
        # 2 * delay = 20 * read.
        assert time.monotonic() - started < 2 * delay
        assert [k for k, m, _ in mediastore_server.faults.history if m == "GET"] == [
            "delay",
            "delay",
        ]


async def test_read_timeout_on_every_attempt_fails_with_attempts(
    mediastore_server: LocalMediaStore,
) -> None:
    policy = RetryPolicy(max_attempts=3, backoff_initial=0.001, backoff_max=0.001)
    async with _session(
        mediastore_server, timeouts=Timeouts(read=0.1), retry=policy
    ) as session:
        store = session.container(mediastore_server.endpoint)
        mediastore_server.faults.inject("delay", times=None, method="HEAD", delay=0.3)
        with pytest.raises(ReadTimeout) as caught:
            await store.describe_object("slow/missing.bin")
        assert caught.value.attempts == 3
        assert isinstance(caught.value, TimeoutError)  # also the builtin
        assert caught.value.__cause__ is not None
        assert session.pool.in_use == 0


# --- write timeout -------------------------------------------------------------------------


async def _deaf(conn: Connection) -> None:
    """Accepts the connection and never reads from it."""
    await asyncio.Event().wait()


async def test_write_timeout_when_the_server_stops_reading() -> None:
    policy = RetryPolicy(max_attempts=2, backoff_initial=0.001, backoff_max=0.001)
    body = os.urandom(24_000_000)
    # Small receive buffers so the client's writes stall after a few hundred KB.
    async with scripted_server(_deaf, receive_buffer=4096) as deaf, Session(
        credentials=LocalMediaStore().credentials,
        region="us-east-1",
        timeouts=Timeouts(write=0.2, read=5.0),
        retry=policy,
    ) as session:
        store = session.container(deaf.endpoint)
        started = time.monotonic()
        with pytest.raises(WriteTimeout) as caught:
            await store.put_object("stalled.bin", body)
        # Two attempts of ~0.2 s each once the socket buffers are full: it did not hang.
        assert time.monotonic() - started < 0.2 * 2 * 20
        assert caught.value.attempts == 2
        assert len(deaf.connections) == 2  # retried on a new connection
        assert session.pool.in_use == 0


# --- connect errors and timeouts ------------------------------------------------------------


@pytest.fixture
def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    sock.close()
    return port


async def test_connect_error_on_a_closed_port_is_retried_then_raised(closed_port: int) -> None:
    policy = RetryPolicy(max_attempts=3, backoff_initial=0.001, backoff_max=0.001)
    async with Session(
        credentials=LocalMediaStore().credentials, region="us-east-1", retry=policy
    ) as session:
        store = session.container(f"http://127.0.0.1:{closed_port}")
        with pytest.raises(ConnectError) as caught:
            await store.put_object("a.bin", b"x")
        assert caught.value.attempts == 3
        assert isinstance(caught.value.__cause__, OSError)
        assert session.pool.in_use == 0


@pytest.fixture
def full_backlog() -> Iterator[int]:
    """A listening port whose accept queue is full: new connections hang in SYN."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = int(listener.getsockname()[1])
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    try:
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


async def test_connect_timeout(full_backlog: int) -> None:
    connect = 0.2
    policy = RetryPolicy(max_attempts=2, backoff_initial=0.001, backoff_max=0.001)
    async with Session(
        credentials=LocalMediaStore().credentials,
        region="us-east-1",
        timeouts=Timeouts(connect=connect),
        retry=policy,
    ) as session:
        store = session.container(f"http://127.0.0.1:{full_backlog}")
        started = time.monotonic()
        with pytest.raises(ConnectTimeout) as caught:
            await store.describe_object("a.bin")
        # Both attempts waited their full connect timeout, and nothing hung.
        assert 2 * connect * 0.9 <= time.monotonic() - started < 2 * connect * 20
        assert caught.value.attempts == 2
        assert session.pool.in_use == 0


# --- pool ----------------------------------------------------------------------------------


async def test_pool_timeout_while_the_only_connection_is_held(
    mediastore_server: LocalMediaStore,
) -> None:
    pool = 0.1
    async with _session(
        mediastore_server,
        limits=Limits(max_connections=1),
        timeouts=Timeouts(pool=pool),
    ) as session:
        store = session.container(mediastore_server.endpoint)
        await store.put_object("pool/a.bin", b"a" * 100_000)
        async with store.get_object("pool/a.bin") as held:
            assert session.pool.in_use == 1
            started = time.monotonic()
            with pytest.raises(PoolTimeout) as caught:
                await store.describe_object("pool/a.bin")
            # Not retried: the request never left; retrying would only queue more. Nor
            # counted: it took no connection.
            assert caught.value.attempts == 0
            assert pool * 0.9 <= time.monotonic() - started < pool * 30
            assert len(await held.read()) == 100_000
        assert session.pool.in_use == 0
        info = await store.describe_object("pool/a.bin")
        assert info.content_length == 100_000


# --- deadlines -----------------------------------------------------------------------------


async def test_deadline_covers_all_retries_and_chains_the_last_error(
    mediastore_server: LocalMediaStore,
) -> None:
    deadline, backoff = 0.3, 0.05
    policy = RetryPolicy(max_attempts=1000, backoff_initial=backoff, backoff_max=backoff)
    async with _session(mediastore_server, retry=policy) as session:
        store = session.container(mediastore_server.endpoint)
        mediastore_server.faults.inject("503", times=None, method="PUT")
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded) as caught:
            await store.put_object("dl/a.bin", b"x" * 1000, deadline=deadline)
        elapsed = time.monotonic() - started
        # It gives up once the next backoff would cross the deadline, and never much later.
        assert deadline - backoff <= elapsed < deadline * 10
        exc = caught.value
        assert exc.attempts >= 2
        assert isinstance(exc.__cause__, ServerError) and exc.__cause__.status == 503
        assert session.pool.in_use == 0
        assert mediastore_server.store.get("dl/a.bin") is None


async def test_deadline_cuts_a_silent_attempt(mediastore_server: LocalMediaStore) -> None:
    deadline = 0.2
    delay = deadline * 10
    async with _session(mediastore_server, timeouts=Timeouts(read=30.0)) as session:
        store = session.container(mediastore_server.endpoint)
        await store.put_object("dl/b.bin", b"b")
        mediastore_server.faults.inject("delay", times=None, method="GET", delay=delay)
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded) as caught:
            await store.get_bytes("dl/b.bin", deadline=deadline)
        # The deadline ended it, not the server's delay (or the 30 s read timeout).
        assert deadline * 0.9 <= time.monotonic() - started < delay * 0.75
        assert caught.value.attempts >= 1
        assert session.pool.in_use == 0


# --- a long healthy download is never cut ---------------------------------------------------


@pytest.mark.parametrize("deadline", [None, 0.8])
async def test_slow_healthy_download_outlives_the_read_timeout(
    mediastore_server: LocalMediaStore, deadline: float | None
) -> None:
    """The server trickles the body (a STREAMING upload followed live) for at least 2 s,
    four times the read timeout (and more than the deadline, which bounds only getting
    the response), with each gap a tenth of it."""
    read = 0.5
    gap, pieces = read / 10, 40
    piece = os.urandom(1000)
    async with _session(mediastore_server, timeouts=Timeouts(read=read)) as session:
        store = session.container(mediastore_server.endpoint)
        begun = asyncio.Event()

        async def trickle() -> AsyncIterator[bytes]:
            for _ in range(pieces):
                yield piece
                begun.set()
                await asyncio.sleep(gap)

        async with asyncio.TaskGroup() as tg:
            upload = tg.create_task(
                store.put_object("live/slow.ts", trickle(), streaming=True)
            )
            await begun.wait()
            started = time.monotonic()
            received = 0
            async with store.get_object("live/slow.ts", deadline=deadline) as obj:
                assert obj.content_length is None  # still uploading
                async for chunk in obj:
                    received += len(chunk)
            elapsed = time.monotonic() - started
        assert upload.result().size == pieces * len(piece)
        assert received == pieces * len(piece)
        assert elapsed > read * 3
