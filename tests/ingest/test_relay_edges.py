"""The relay at its edges, over raw sockets against the real publisher and local server: a
callback that raises, slow or hostile HTTP, too many connections, and the shared body budget
when the origin stalls."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator

import pytest

from msd_async import ContainerClient, InvalidParameterError, ObjectNotFoundError, Session
from msd_async.ingest import ObjectRecord, Relay
from msd_async.live import LivePublisher
from msd_async.testing import LocalMediaStore

#: The relay's largest single read during a body (ingest/relay.py, _READ_SIZE).
READ_SIZE = 256 * 1024

pytestmark = pytest.mark.anyio

PLAYLIST = b"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\nseg0.ts\n"


@pytest.fixture
async def store(mediastore_server: LocalMediaStore) -> AsyncIterator[ContainerClient]:
    async with Session(
        credentials=mediastore_server.credentials, region=mediastore_server.region
    ) as session:
        yield session.container(mediastore_server.endpoint)


async def stored(store: ContainerClient, path: str, within: float = 10.0) -> bytes:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            return await store.get_bytes(path)
        except ObjectNotFoundError:
            if asyncio.get_running_loop().time() > deadline:
                raise
        await asyncio.sleep(0.05)


def put(path: str, body: bytes, *extra: str) -> bytes:
    head = [f"PUT {path} HTTP/1.1", "Host: relay", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def answer_of(port: int, data: bytes, *, within: float = 5.0) -> tuple[bytes, bool]:
    """Send ``data``; returns what the relay answered and whether it closed the connection
    (within ``within`` seconds)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        answer = b""
        try:
            async with asyncio.timeout(within):
                while chunk := await reader.read(65536):
                    answer += chunk
            return answer, True
        except TimeoutError:
            return answer, False
    finally:
        writer.close()
        await writer.wait_closed()


# --- item 4: user callbacks ---------------------------------------------------------------
async def test_a_raising_on_object_is_logged_and_the_relay_carries_on(
    store: ContainerClient, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[ObjectRecord] = []

    def broken(record: ObjectRecord) -> None:
        calls.append(record)
        raise RuntimeError("bug in the user's callback")

    caplog.set_level(logging.INFO, "msd_async.ingest")
    async with (
        LivePublisher(store, close_timeout=5) as publisher,
        Relay(publisher, on_object=broken, drain_timeout=10) as relay,
    ):
        # A DELETE is recorded by the submit loop itself: its callback raising used to end
        # the loop, and every later request was answered 204 and never published.
        answer, _ = await answer_of(
            relay.port, b"DELETE /a/old.ts HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n"
        )
        assert answer.startswith(b"HTTP/1.1 204")
        for path, body in (("/a/seg0.ts", b"media"), ("/a/index.m3u8", PLAYLIST)):
            answer, _ = await answer_of(relay.port, put(path, body, "Connection: close"))
            assert answer.startswith(b"HTTP/1.1 204"), answer
        assert await stored(store, "a/index.m3u8") == PLAYLIST
        assert await stored(store, "a/seg0.ts") == b"media"
    assert len(calls) >= 3
    assert "bug in the user's callback" in caplog.text


# --- item 16: HTTP facing the network -----------------------------------------------------
async def test_a_request_head_must_arrive_within_the_idle_timeout(
    store: ContainerClient,
) -> None:
    async with (
        LivePublisher(store, close_timeout=5) as publisher,
        Relay(publisher, idle_timeout=1.0, drain_timeout=5) as relay,
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        loop = asyncio.get_running_loop()
        started = loop.time()
        closed_after = None
        try:
            writer.write(b"PUT /a/seg0.ts HTTP/1.1\r\n")
            # A slowloris: a byte of header every 0.2 s keeps a per-read timer from firing.
            for _ in range(40):
                try:
                    writer.write(b"X")
                    await writer.drain()
                except ConnectionError:
                    closed_after = loop.time() - started
                    break
                try:
                    got = await asyncio.wait_for(reader.read(1024), 0.2)
                except TimeoutError:
                    continue
                except ConnectionError:
                    got = b""
                closed_after = loop.time() - started
                assert got == b"" or got.startswith(b"HTTP/1.1 408"), got
                break
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        assert closed_after is not None, "the relay kept a dribbling request head open for 8 s"
        assert closed_after < 4.0


async def test_connections_beyond_the_cap_get_503(store: ContainerClient) -> None:
    async with (
        LivePublisher(store, close_timeout=5) as publisher,
        Relay(publisher, max_connections=2, drain_timeout=5) as relay,
    ):
        held = [await asyncio.open_connection("127.0.0.1", relay.port) for _ in range(2)]
        try:
            await asyncio.sleep(0.2)
            answer, closed = await answer_of(relay.port, put("/a/seg0.ts", b"x"))
            assert answer.startswith(b"HTTP/1.1 503"), answer
            assert closed
            assert relay.stats.refused_connections == 1
        finally:
            for _, writer in held:
                writer.close()
                await writer.wait_closed()
        await asyncio.sleep(0.2)
        answer, _ = await answer_of(relay.port, put("/a/seg0.ts", b"x", "Connection: close"))
        assert answer.startswith(b"HTTP/1.1 204"), answer


async def test_the_secret_is_checked_before_any_body_is_read(store: ContainerClient) -> None:
    async with (
        LivePublisher(store, close_timeout=5) as publisher,
        Relay(publisher, secret="s3cret", drain_timeout=5) as relay,
    ):
        head = (b"PUT /a/seg0.ts HTTP/1.1\r\nHost: r\r\nContent-Length: 5000000\r\n"
                b"Expect: 100-continue\r\n\r\n")
        answer, closed = await answer_of(relay.port, head)
        assert answer.startswith(b"HTTP/1.1 401"), answer
        assert b"100 Continue" not in answer
        assert closed
        assert relay.stats.bytes_in == 0


async def test_content_length_with_chunked_is_refused_and_closed(
    store: ContainerClient,
) -> None:
    async with (
        LivePublisher(store, close_timeout=5) as publisher,
        Relay(publisher, drain_timeout=5) as relay,
    ):
        smuggle = (b"PUT /a/seg0.ts HTTP/1.1\r\nHost: r\r\nContent-Length: 5\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                   b"PUT /a/seg1.ts HTTP/1.1\r\nHost: r\r\nContent-Length: 1\r\n\r\nx")
        answer, closed = await answer_of(relay.port, smuggle)
        assert answer.startswith(b"HTTP/1.1 400"), answer
        assert answer.count(b"HTTP/1.1") == 1
        assert closed
        await asyncio.sleep(0.5)
        for path in ("a/seg0.ts", "a/seg1.ts"):
            with pytest.raises(ObjectNotFoundError):
                await store.get_bytes(path)


async def test_a_malformed_chunk_gets_400(store: ContainerClient) -> None:
    async with (
        LivePublisher(store, close_timeout=5) as publisher,
        Relay(publisher, drain_timeout=5) as relay,
    ):
        bad = (b"PUT /a/seg0.ts HTTP/1.1\r\nHost: r\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"zz\r\nhello\r\n0\r\n\r\n")
        answer, closed = await answer_of(relay.port, bad)
        assert answer.startswith(b"HTTP/1.1 400"), answer
        assert closed
        await asyncio.sleep(0.5)
        with pytest.raises(ObjectNotFoundError):
            await store.get_bytes("a/seg0.ts")


async def test_a_double_slash_target_is_a_path_not_a_host(store: ContainerClient) -> None:
    async with (
        LivePublisher(store, close_timeout=5) as publisher,
        Relay(publisher, drain_timeout=5) as relay,
    ):
        answer, _ = await answer_of(relay.port, put("//live/seg_1.ts", b"media",
                                                    "Connection: close"))
        assert answer.startswith(b"HTTP/1.1 204"), answer
        assert await stored(store, "live/seg_1.ts") == b"media"


async def test_a_body_cut_before_its_hand_over_is_marked_as_a_gap(
    store: ContainerClient,
) -> None:
    # The relay hands objects to the publisher one at a time, in arrival order: a body cut
    # while an earlier object's hand-over is still under way used to be dropped unseen, and
    # the publisher, never told of it, stored the next playlist naming an object that does
    # not exist (after reference_wait) instead of marking it as a gap, as it does for a body
    # cut after its hand-over. Found by tests/ingest/test_relay_stateful.py.
    first_handed_over = asyncio.Event()

    class SlowToTake:
        """The publisher, slow to take the first object (publish() may wait)."""

        def __init__(self, publisher: LivePublisher) -> None:
            self.publisher = publisher

        async def publish(self, path: str, body: object, **kwargs: object) -> object:
            if path == "a/seg0.ts":
                await first_handed_over.wait()
            return await self.publisher.publish(path, body, **kwargs)  # type: ignore[arg-type]

        async def delete(self, path: str) -> object:
            return await self.publisher.delete(path)

        def stats(self) -> object:
            return self.publisher.stats()

    async with (
        LivePublisher(store, close_timeout=5, reference_wait=0.5) as publisher,
        Relay(SlowToTake(publisher), drain_timeout=10) as relay,  # type: ignore[arg-type]
    ):
        answer, _ = await answer_of(relay.port, put("/a/seg0.ts", b"zero", "Connection: close"))
        assert answer.startswith(b"HTTP/1.1 204"), answer
        _, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        writer.write(put("/a/seg1.ts", b"one" * 100)[:-100])  # the encoder dies mid-body
        writer.close()
        await writer.wait_closed()
        async with asyncio.timeout(10):
            while True:  # the relay has seen the cut (no event to wait on)
                if relay.stats.cut:
                    break
                await asyncio.sleep(0.02)
        first_handed_over.set()
        playlist = PLAYLIST + b"#EXTINF:1.0,\nseg1.ts\n"
        answer, _ = await answer_of(relay.port, put("/a/index.m3u8", playlist,
                                                    "Connection: close"))
        assert answer.startswith(b"HTTP/1.1 204"), answer
        lines = (await stored(store, "a/index.m3u8")).decode().splitlines()
    with pytest.raises(ObjectNotFoundError):
        await store.get_bytes("a/seg1.ts")
    assert "seg1.ts" in lines
    assert lines[lines.index("seg1.ts") - 1] == "#EXT-X-GAP", lines


async def test_requests_pipelined_before_a_reset_are_published(store: ContainerClient) -> None:
    # An encoder that closes its socket with an answer still unread makes its kernel reset
    # the connection. asyncio then failed every later read of it, even of bytes already
    # received, so the complete requests pipelined before the close (ffmpeg's last DELETEs
    # and its final playlist) were dropped. Found by tests/ingest/test_relay_stateful.py.
    async with (
        LivePublisher(store, close_timeout=5) as publisher,
        Relay(publisher, drain_timeout=10) as relay,
    ):
        for trial in range(5):
            reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
            writer.write(b"DELETE /a/gone.ts HTTP/1.1\r\nHost: r\r\n\r\n")
            await reader.readuntil(b"\r\n\r\n")  # its answer arrived
            writer.write(b"DELETE /a/gone.ts HTTP/1.1\r\nHost: r\r\n\r\n")
            await asyncio.sleep(0.2)  # and this one's is left unread
            playlist = PLAYLIST.replace(b"seg0.ts", b"seg%d.ts" % trial)
            writer.write(b"".join(b"DELETE /a/old%d.ts HTTP/1.1\r\nHost: r\r\n\r\n" % k
                                  for k in range(40))
                         + put("/a/index.m3u8", playlist) + put(f"/a/seg{trial}.ts", b"media"))
            await writer.drain()
            writer.transport.abort()  # closed with the answers unread: a reset
            assert await stored(store, f"a/seg{trial}.ts") == b"media"
            assert await stored(store, "a/index.m3u8") == playlist


@pytest.mark.parametrize("segment_size", [5, 3 * READ_SIZE])
async def test_requests_sent_before_the_relay_closes_are_published(
    store: ContainerClient, segment_size: int
) -> None:
    # ``ffmpeg ...; kill $relay``: the encoder's last segment and its final playlist were
    # sent, on a connection idle since its previous request, just before the shutdown
    # began. They were received but not yet read, the connection counted as idle, and it
    # was closed with them: the final playlist was lost. Also when the segment is read
    # over several reads, and the playlist after it is still buffered when its request
    # ends. Found by tests/ingest/test_relay_stateful.py.
    segment = bytes(range(256)) * (segment_size // 256) + b"x" * (segment_size % 256)
    playlist = PLAYLIST + b"#EXT-X-ENDLIST\n"
    async with LivePublisher(store, close_timeout=5) as publisher:
        relay = Relay(publisher, drain_timeout=10)
        await relay.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
            writer.write(b"DELETE /a/gone.ts HTTP/1.1\r\nHost: r\r\n\r\n")
            await reader.readuntil(b"\r\n\r\n")  # answered: the connection is idle again
            writer.write(put("/a/seg0.ts", segment) + put("/a/index.m3u8", playlist))
            await writer.drain()
        finally:
            await relay.aclose()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    assert await stored(store, "a/seg0.ts", within=0) == segment
    assert await stored(store, "a/index.m3u8", within=0) == playlist


def _answer_of_blocking(sock: socket.socket, within: float) -> bytes:
    """Everything the peer sends on ``sock`` until it closes (in a thread: the relay's loop
    must keep running meanwhile); a reset ends it like a close."""
    sock.settimeout(within)
    answer = b""
    with contextlib.suppress(ConnectionError, TimeoutError):
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize(
    "anyio_backend",
    [pytest.param("asyncio", id="asyncio"),
     pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop")],
)
@pytest.mark.parametrize("steps", [0, 1, 2, 3])
async def test_requests_on_connections_not_yet_accepted_at_close_are_published(
    store: ContainerClient, steps: int
) -> None:
    # ffmpeg without -http_persistent opens a new connection for each request: its final
    # segment and playlist can be complete in the kernel's listen backlog, not yet accepted
    # by the loop, when the shutdown begins. Closing the listener reset those connections
    # and the requests were lost, though the encoder had sent them whole. Connected and
    # sent with blocking sockets, so with no await before aclose() (steps=0) the loop cannot
    # accept them first. A few loop steps later they are accepted but their handlers have
    # not started yet (asyncio makes the transport in a task of its own): a connection
    # that started after the shutdown began was closed unread, and its requests lost too.
    playlist = PLAYLIST + b"#EXT-X-ENDLIST\n"
    idle_timeout = 20.0
    async with LivePublisher(store, close_timeout=5) as publisher:
        relay = Relay(publisher, idle_timeout=idle_timeout, drain_timeout=idle_timeout)
        await relay.start()
        encoders: list[socket.socket] = []
        try:
            for request in (put("/a/seg0.ts", b"media"), put("/a/index.m3u8", playlist), b""):
                # The last one sends nothing: it must not hold the shutdown for idle_timeout.
                sock = socket.create_connection(("127.0.0.1", relay.port), timeout=5)
                encoders.append(sock)
                sock.sendall(request)
            for _ in range(steps):
                await asyncio.sleep(0)
            answers = [asyncio.create_task(asyncio.to_thread(_answer_of_blocking, sock, 10))
                       for sock in encoders]
            loop = asyncio.get_running_loop()
            started = loop.time()
            await relay.aclose()
            closed_after = loop.time() - started
            segment_answer, playlist_answer, silent_answer = await asyncio.gather(*answers)
        finally:
            await relay.aclose()
            for sock in encoders:
                sock.close()
    assert segment_answer.startswith(b"HTTP/1.1 204"), segment_answer
    assert playlist_answer.startswith(b"HTTP/1.1 204"), playlist_answer
    assert silent_answer == b""
    assert closed_after < idle_timeout / 2
    assert relay.stats.requests == 2
    assert await stored(store, "a/seg0.ts", within=0) == b"media"
    assert await stored(store, "a/index.m3u8", within=0) == playlist
    # Once closed, an encoder is refused outright: nothing it sends is taken and lost.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", relay.port), timeout=5).close()


# --- item 17: the shared body budget ----------------------------------------------------
async def test_bodies_share_a_budget_and_encoders_wait_behind_a_stalled_origin(
    mediastore_server: LocalMediaStore, store: ContainerClient
) -> None:
    budget = 1_000_000
    encoders, size, piece = 16, 200_000, 20_000
    stall = 3.0
    mediastore_server.faults.inject("delay", times=None, method="PUT", delay=stall)
    peak = 0
    async with (
        LivePublisher(store, close_timeout=5, default_duration=30) as publisher,
        Relay(publisher, max_buffer=budget, drain_timeout=30) as relay,
    ):
        answered: list[float] = []

        async def encoder(n: int) -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
            try:
                writer.write(f"PUT /a/seg{n}.ts HTTP/1.1\r\nHost: r\r\n"
                             f"Content-Length: {size}\r\nConnection: close\r\n\r\n".encode())
                for _ in range(size // piece):
                    writer.write(bytes([n]) * piece)
                    await writer.drain()
                answer = await reader.read()
                answered.append(asyncio.get_running_loop().time())
                return answer
            finally:
                writer.close()
                await writer.wait_closed()

        async def sample() -> None:
            nonlocal peak
            while True:
                peak = max(peak, relay.stats.buffered)
                await asyncio.sleep(0.01)

        sampler = asyncio.create_task(sample())
        started = asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(60):
                answers = await asyncio.gather(*(encoder(n) for n in range(encoders)))
        finally:
            sampler.cancel()
        mediastore_server.faults.clear()
        assert all(a.startswith(b"HTTP/1.1 204") for a in answers), answers
        # The encoders felt it: the relay read (and answered) at most a budget's worth of
        # bodies before the origin's first answer; the rest waited in TCP buffers.
        assert max(answered) - started > stall * 0.8
        assert relay.stats.paused > 0
        for n in range(encoders):
            assert await stored(store, f"a/seg{n}.ts", within=30) == bytes([n]) * size
        # The oldest body in progress may read past the budget (so bodies keep completing):
        # by at most one body and one read.
        assert relay.stats.buffered_peak <= budget + size + READ_SIZE
        assert peak <= budget + size + READ_SIZE
        assert relay.stats.buffered_peak > budget // 2  # the budget was what held them
        assert relay.stats.buffered == 0


async def test_partial_bodies_that_fill_the_budget_do_not_deadlock(
    mediastore_server: LocalMediaStore, store: ContainerClient
) -> None:
    # Every encoder's body is larger than its share of the budget: once their first pieces
    # fill it, none could finish (a body is held until its outcome, which needs all of it).
    # One reader at a time may read past the budget so that bodies keep completing.
    budget = 1_000_000
    encoders, size, piece = 16, 400_000, 20_000
    async with (
        LivePublisher(store, close_timeout=5, default_duration=30) as publisher,
        Relay(publisher, max_buffer=budget, drain_timeout=30) as relay,
    ):

        async def encoder(n: int) -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
            try:
                writer.write(f"PUT /d/seg{n}.ts HTTP/1.1\r\nHost: r\r\n"
                             f"Content-Length: {size}\r\nConnection: close\r\n\r\n".encode())
                for _ in range(size // piece):
                    writer.write(bytes([n]) * piece)
                    await writer.drain()
                return await reader.read()
            finally:
                writer.close()
                await writer.wait_closed()

        async with asyncio.timeout(45):
            answers = await asyncio.gather(*(encoder(n) for n in range(encoders)))
        assert all(a.startswith(b"HTTP/1.1 204") for a in answers), answers
        for n in range(encoders):
            assert await stored(store, f"d/seg{n}.ts", within=30) == bytes([n]) * size
        # Past the budget by at most one body and one read.
        assert relay.stats.buffered_peak <= budget + size + READ_SIZE
        assert relay.stats.buffered == 0


# --- item 19 ----------------------------------------------------------------------------
async def test_media_deadline_bounds_how_long_media_is_retried(
    mediastore_server: LocalMediaStore, store: ContainerClient
) -> None:
    records: list[ObjectRecord] = []
    outcome = asyncio.Event()

    def record(rec: ObjectRecord) -> None:
        records.append(rec)
        outcome.set()

    mediastore_server.faults.inject("503", times=None, method="PUT", path="a/seg0.ts")
    async with (
        LivePublisher(store, close_timeout=5, default_duration=30) as publisher,
        Relay(publisher, media_deadline=1.0, on_object=record, drain_timeout=10) as relay,
    ):
        loop = asyncio.get_running_loop()
        started = loop.time()
        answer, _ = await answer_of(relay.port, put("/a/seg0.ts", b"media", "Connection: close"))
        assert answer.startswith(b"HTTP/1.1 204"), answer
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(outcome.wait(), 20)
        elapsed = loop.time() - started
    mediastore_server.faults.clear()
    [record] = records
    assert record.outcome in ("dropped", "failed"), record
    # Given up at the 1 s deadline, not at the 30 s default duration.
    assert elapsed < 10, elapsed


def test_relay_stats_repr_is_one_short_line() -> None:
    from msd_async.ingest import RelayStats

    text = repr(RelayStats(requests=12, handed_over=10, bytes_in=5_000_000, buffered=1234))
    assert "\n" not in text and len(text) < 160, text
    assert "12 requests" in text


@pytest.mark.parametrize(
    ("setting", "value"),
    [("idle_timeout", float("nan")), ("idle_timeout", 0.0), ("drain_timeout", float("nan")),
     ("drain_timeout", -1.0), ("media_deadline", float("nan")), ("media_deadline", 0.0)],
)
def test_a_timing_setting_that_is_no_duration_is_refused(setting: str, value: float) -> None:
    # media_deadline=nan was taken, and then every media object was refused by the
    # publisher while the encoder was answered 204: a stream silently lost.
    with pytest.raises(ValueError, match=setting):
        Relay(object(), port=0, **{setting: value})  # type: ignore[arg-type]


def test_an_async_on_object_is_refused(tmp_path: object) -> None:
    # It was taken, and never called: each object made a coroutine nobody awaited.
    from msd_async.ingest import FolderPusher

    async def on_object(record: ObjectRecord) -> None:
        pass

    with pytest.raises(InvalidParameterError, match="plain function"):
        Relay(object(), port=0, on_object=on_object)  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match="plain function"):
        FolderPusher(object(), str(tmp_path), on_object=on_object)  # type: ignore[arg-type]
