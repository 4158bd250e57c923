"""Clients that misbehave on purpose never take the local server down or wedge it.

Scripted raw-socket peers over loopback: a reader that stops reading (with a tiny receive
window, so the server's writes back up at once), against a large stored object and against
a STREAMING object still uploading. Times are relative to the configured limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from open_files import open_files_under, sockets_on
from rawclient import Raw
from serve_process import ServeProcess, start_serve
from server_errors import watching_server_errors
from socket_reads import drained

from msd_async.testing import LocalMediaStore

pytestmark = pytest.mark.anyio

SEND_LIMIT = 0.5
#: The servers' shutdown grace here (``LocalMediaStore.shutdown_grace``; 2 s by default).
GRACE = 0.4
#: More than loopback's socket buffers take for a client that reads nothing.
BIG = 20_000_000


def signed_head(raw: Raw, method: str, path: str, extra: dict[str, str] | None = None) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {raw.host}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in raw.sign(method, path, headers=extra).items())
    return head.encode() + b"\r\n"


@contextlib.asynccontextmanager
async def stopped_reader(raw: Raw, path: str) -> AsyncIterator[socket.socket]:
    """A raw TCP client that sends a signed GET of ``path`` and then never reads."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: tiny window
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", raw.server.port))
        sock.send(signed_head(raw, "GET", path))
        yield sock
    finally:
        sock.close()




class Finished:
    """``on_request``: the (operation, status) of each request as it ends, with the time."""

    def __init__(self) -> None:
        self.done: list[tuple[str, str, float]] = []

    def __call__(self, operation: str, status: str, _seconds: float) -> None:
        self.done.append((operation, status, asyncio.get_running_loop().time()))

    async def wait(self, operation: str, status: str, within: float) -> float:
        """When the first such request ended (waits up to ``within`` seconds)."""
        async with asyncio.timeout(within):
            while True:
                for op, st, at in self.done:
                    if (op, st) == (operation, status):
                        return at
                await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def raw_client_of(serve: ServeProcess) -> AsyncIterator[tuple[Raw, aiohttp.ClientSession]]:
    """A :class:`Raw` client of an ``msd serve`` process (its default keys), which holds
    ``vod/big.mp4`` (``BIG`` bytes) for a reader to stop reading."""
    from msd_async.testing import DEFAULT_CREDENTIALS

    server = LocalMediaStore(credentials=DEFAULT_CREDENTIALS)  # for Raw's signing
    server.endpoint = serve.endpoint
    server.port = int(serve.endpoint.rsplit(":", 1)[1])
    async with aiohttp.ClientSession() as session:
        raw = Raw(server, session)
        assert (await raw.put("vod/big.mp4", io.BytesIO(os.urandom(BIG)))).status == 200
        yield raw, session


@contextlib.contextmanager
def server_warnings() -> Iterator[list[logging.LogRecord]]:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(logging.WARNING)
    logger = logging.getLogger("msd_async.testing.server")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


@pytest.mark.parametrize("store", ["memory", "directory"])
async def test_a_reader_that_stops_reading_a_large_object_is_cut(
    store: str, tmp_path: Path
) -> None:
    """The handler and (directory store) the object's open file are released within the
    send time limit of the write that stalled; the connection is closed, one WARNING line
    says why, nothing is logged as an error."""
    finished = Finished()
    data_dir = tmp_path / "data" if store == "directory" else None
    async with LocalMediaStore(
        send_time_limit=SEND_LIMIT,
        data_dir=None if data_dir is None else str(data_dir),
        fsync=False,
        on_request=finished,
    ) as server, aiohttp.ClientSession() as session:
        raw = Raw(server, session)
        await server.store.put_bytes("vod/big.mp4", os.urandom(BIG))
        loop = asyncio.get_running_loop()
        with watching_server_errors() as errors, server_warnings() as warnings:
            async with stopped_reader(raw, "/vod/big.mp4") as sock:
                asked = loop.time()
                if data_dir is not None:
                    await asyncio.sleep(SEND_LIMIT / 5)
                    assert open_files_under(data_dir), "the GET is not reading the file"
                ended = await finished.wait("GetObject", "aborted", 40 * SEND_LIMIT)
                # No sooner than one stalled write's limit, and not much later.
                assert SEND_LIMIT <= ended - asked < 20 * SEND_LIMIT
                if data_dir is not None:
                    assert open_files_under(data_dir) == []
                received, closed = await drained(sock)
            assert closed, f"the connection stayed open after {received} bytes"
            assert received < BIG
            # The server still answers others.
            assert (await raw.get("vod/big.mp4")).body[:0] == b""
        assert not errors.records
        assert [r.levelname for r in warnings] == ["WARNING"]
        assert "took no data" in warnings[0].getMessage()
        assert "/vod/big.mp4" in warnings[0].getMessage()


async def test_a_follower_that_stops_reading_is_cut_and_the_upload_goes_on() -> None:
    """A stopped reader of a STREAMING object still uploading: once the upload has sent
    more than the socket buffers take, the follower's write stalls and is cut within the
    send time limit. The upload is not held up by it and completes."""
    finished = Finished()
    path = "/live/seg.ts"
    async with LocalMediaStore(
        send_time_limit=SEND_LIMIT, on_request=finished
    ) as server, aiohttp.ClientSession() as session:
        raw = Raw(server, session)
        loop = asyncio.get_running_loop()
        more = asyncio.Event()
        piece = os.urandom(1 << 20)

        async def body() -> AsyncIterator[bytes]:
            yield b"first|"
            await more.wait()
            for _ in range(8):
                yield piece

        with watching_server_errors() as errors, server_warnings() as warnings:
            headers = raw.sign("PUT", path, headers={"x-amz-upload-availability": "STREAMING"})
            put = asyncio.create_task(
                raw.call("PUT", path, sign=False, headers=headers, data=body())
            )
            try:
                async with asyncio.timeout(10):
                    while server.store.in_progress("live/seg.ts") is None:  # noqa: ASYNC110
                        await asyncio.sleep(0.01)
                async with stopped_reader(raw, path) as sock:
                    await asyncio.sleep(SEND_LIMIT / 5)  # the follower is following
                    assert not any(op == "GetObject" for op, _, _ in finished.done)
                    more.set()
                    released = loop.time()
                    ended = await finished.wait("GetObject", "aborted", 40 * SEND_LIMIT)
                    assert SEND_LIMIT <= ended - released < 20 * SEND_LIMIT
                    reply = await put
                    assert reply.status == 200
                    received, closed = await drained(sock)
                assert closed
                assert received < 8 * len(piece)
            finally:
                more.set()
                await put
        assert not errors.records
        assert len(warnings) == 1 and "took no data" in warnings[0].getMessage()


async def test_a_slow_reader_that_keeps_reading_is_never_cut() -> None:
    """The limit is per write, not per response: a client that takes the body slowly, all
    of it in longer than the limit but never pausing that long, gets every byte."""
    size = 3_000_000
    async with LocalMediaStore(send_time_limit=SEND_LIMIT) as server, aiohttp.ClientSession(
    ) as s:
        raw = Raw(server, s)
        data = os.urandom(size)
        await server.store.put_bytes("vod/slow.mp4", data)
        loop = asyncio.get_running_loop()
        received = bytearray()
        async with stopped_reader(raw, "/vod/slow.mp4") as sock:
            started = loop.time()
            paced = 0
            while not received.endswith(data):
                # About 3 MB/s, in 64 KiB steps: 256 KiB (one write) well within the limit.
                if len(received) - paced >= 64 * 1024:
                    paced = len(received)
                    await asyncio.sleep(0.02)
                chunk = await asyncio.wait_for(loop.sock_recv(sock, 64 * 1024), 10 * SEND_LIMIT)
                assert chunk, f"connection closed after {len(received)} bytes"
                received += chunk
            assert loop.time() - started > SEND_LIMIT  # longer than one limit in all
        assert received.startswith(b"HTTP/1.1 200 ")


# --- uploaders that misbehave -------------------------------------------------------------


async def put_head(
    raw: Raw, path: str, framing: str, extra: dict[str, str] | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw connection that has sent the signed head of a PUT (``framing``: its
    Content-Length or Transfer-Encoding line) and no body yet."""
    reader, writer = await asyncio.open_connection("127.0.0.1", raw.server.port)
    head = signed_head(raw, "PUT", path, extra)
    writer.write(head[:-2] + framing.encode() + b"\r\n")
    await writer.drain()
    return reader, writer


async def wait_until(predicate: object, within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while not predicate():  # type: ignore[operator]  # noqa: ASYNC110
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("availability", ["STANDARD", "STREAMING"])
@pytest.mark.parametrize(
    "framing", ["Content-Length: 100000\r\n", "Transfer-Encoding: chunked\r\n"]
)
async def test_an_uploader_that_disconnects_mid_body_leaves_nothing(
    availability: str, framing: str, tmp_path: Path
) -> None:
    """Nothing half-written is listed or readable, a follower of a STREAMING upload sees a
    body that visibly did not end (no terminating chunk), and the temp file is gone."""
    data_dir = tmp_path / "data"
    async with LocalMediaStore(data_dir=str(data_dir), fsync=False) as server, (
        aiohttp.ClientSession()
    ) as session:
        raw = Raw(server, session)
        await raw.put("live/old.ts", b"old version")
        with watching_server_errors() as errors:
            for path in ("/live/old.ts", "/live/new.ts"):
                _, writer = await put_head(
                    raw, path, framing, {"x-amz-upload-availability": availability}
                )
                piece = b"p" * 5000
                writer.write(piece if "Length" in framing else b"1388\r\n" + piece + b"\r\n")
                await writer.drain()
                name = path[1:]
                await wait_until(lambda: len(os.listdir(data_dir / "@tmp")) == 1)
                follower = None
                if availability == "STREAMING":
                    await wait_until(lambda: server.store.in_progress(name) is not None)  # noqa: B023
                    follower = await session.get(
                        raw.url(path), headers=raw.sign("GET", path)
                    )
                    assert await follower.content.readexactly(len(piece)) == piece
                writer.close()  # the uploader goes away mid-body
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()
                if follower is not None:
                    with pytest.raises(aiohttp.ClientPayloadError):
                        await follower.read()
                    follower.release()
                await wait_until(lambda: server.store.in_progress(name) is None)  # noqa: B023
                await wait_until(lambda: os.listdir(data_dir / "@tmp") == [])
            assert (await raw.get("live/old.ts")).body == b"old version"
            assert (await raw.get("live/new.ts")).status == 404
            listed = [i["Name"] for i in (await raw.list("live")).json()["Items"]]
            assert listed == ["old.ts"]
            assert open_files_under(data_dir) == []
        assert not errors.records
    # Nor after a restart.
    async with LocalMediaStore(data_dir=str(data_dir)) as server:
        assert [v.path for v in server.store.walk()] == ["live/old.ts"]


async def test_a_request_head_that_trickles_in_is_cut() -> None:
    """Slowloris: a head sent a byte at a time never completes; the connection is closed
    within the idle time limit, however steadily the bytes come."""
    limit = 1.0
    async with LocalMediaStore(idle_time_limit=limit) as server, aiohttp.ClientSession() as s:
        raw = Raw(server, s)
        loop = asyncio.get_running_loop()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        head = signed_head(raw, "GET", "/x")[:-2] + b"X-Pad: " + b"a" * 4000
        started = loop.time()
        sent = 0
        with pytest.raises(ConnectionError):
            async with asyncio.timeout(20 * limit):
                while True:
                    if reader.at_eof():
                        raise ConnectionResetError("closed by the server")
                    writer.write(head[sent : sent + 1])
                    await writer.drain()
                    sent += 1
                    await asyncio.sleep(limit / 20)
        assert limit <= loop.time() - started < 10 * limit
        assert await reader.read() == b""  # closed without an answer
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
        assert (await raw.list()).status == 200  # others are served


async def test_the_idle_limit_never_cuts_a_request_in_progress() -> None:
    """It times the wait for a request head only: an upload whose body takes longer, and a
    follower of it, both run to their end."""
    limit = 0.5
    async with LocalMediaStore(idle_time_limit=limit) as server, aiohttp.ClientSession() as s:
        raw = Raw(server, s)

        async def body() -> AsyncIterator[bytes]:
            for _ in range(6):
                yield b"x" * 10
                await asyncio.sleep(limit / 2)

        headers = raw.sign("PUT", "/live/a.ts", headers={"x-amz-upload-availability": "STREAMING"})
        put = asyncio.create_task(
            raw.call("PUT", "/live/a.ts", sign=False, headers=headers, data=body())
        )
        await wait_until(lambda: server.store.in_progress("live/a.ts") is not None)
        followed = await raw.get("live/a.ts")
        assert (await put).status == 200
        assert followed.status == 200 and followed.body == b"x" * 60


@pytest.mark.parametrize("framing", ["Content-Length: 1000\r\n", "Transfer-Encoding: chunked\r\n"])
async def test_a_body_that_trickles_or_stalls_is_cancelled_at_the_upload_time_limit(
    framing: str,
) -> None:
    """The service cancels an upload not complete within 30 s with a 400
    ValidationException (API reference, PutObject): a body that trickles, then stalls
    outright, gets that answer at the limit and nothing is stored."""
    limit = 1.0
    async with LocalMediaStore(upload_time_limit=limit) as server, aiohttp.ClientSession() as s:
        raw = Raw(server, s)
        loop = asyncio.get_running_loop()
        await server.store.put_bytes("slow.ts", b"before")
        reader, writer = await put_head(raw, "/slow.ts", framing)
        started = loop.time()
        chunked = "chunked" in framing
        for _ in range(5):
            writer.write(b"1\r\nb\r\n" if chunked else b"b")
            await writer.drain()
            await asyncio.sleep(limit / 10)
        # ...then nothing more.
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10 * limit)
        assert limit <= loop.time() - started < 5 * limit
        assert head.startswith(b"HTTP/1.1 400 ")
        lines = head.decode().lower().split("\r\n")
        assert "x-amzn-errortype: validationexception" in lines
        assert "connection: close" in lines
        length = next(int(x.split(":")[1]) for x in lines if x.startswith("content-length:"))
        body = await asyncio.wait_for(reader.readexactly(length), 5 * limit)
        assert b"within" in body
        # (aiohttp then reads and drops what still comes for up to its lingering time,
        # 10 s, so that the client gets this answer, and closes.)
        writer.close()
        assert (await raw.get("slow.ts")).body == b"before"
        assert server.store.in_progress("slow.ts") is None


async def test_expect_100_continue_is_answered_then_the_body_read() -> None:
    async with LocalMediaStore() as server, aiohttp.ClientSession() as s:
        raw = Raw(server, s)
        reader, writer = await put_head(
            raw, "/c.ts", "Content-Length: 5\r\n", {"expect": "100-continue"}
        )
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"hello")
        final = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert final.startswith(b"HTTP/1.1 200 ")
        writer.close()
        assert (await raw.get("c.ts")).body == b"hello"


@pytest.mark.parametrize(
    ("extra", "sign", "status"),
    [
        ({"content-length": "1001"}, True, b"400"),  # over the STANDARD limit of 1000
        ({"content-length": "10", "x-amz-upload-availability": "streaming"}, True, b"400"),
        ({"content-length": "10"}, False, b"403"),  # not signed
    ],
)
async def test_expect_100_continue_refused_before_the_body(
    server: LocalMediaStore, raw: Raw, extra: dict[str, str], sign: bool, status: bytes
) -> None:
    """A PUT the server will refuse gets its final answer instead of 100 Continue, so the
    client never sends the body (RFC 9110 section 10.1.1)."""
    headers = {"expect": "100-continue", **extra}
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    if sign:
        head = signed_head(raw, "PUT", "/e.ts", headers)
    else:
        head = f"PUT /e.ts HTTP/1.1\r\nHost: {raw.host}\r\n".encode()
        head += b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items()) + b"\r\n"
    writer.write(head)
    await writer.drain()
    first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert first.startswith(b"HTTP/1.1 " + status + b" "), first
    writer.close()
    assert server.store.get("e.ts") is None


# --- shutdown with all of them connected ----------------------------------------------------


async def assert_let_go(
    follower: aiohttp.ClientResponse, reader_sock: socket.socket, uploader: asyncio.StreamWriter
) -> None:
    """After the server's exit: the follower's body ends incomplete, the stopped reader's
    socket is closed by the server; then the uploader's own socket is closed."""
    with pytest.raises(aiohttp.ClientPayloadError):
        await follower.read()
    follower.release()
    _, closed = await drained(reader_sock)
    assert closed
    uploader.close()
    with contextlib.suppress(ConnectionError):
        await uploader.wait_closed()


async def test_close_with_a_stalled_reader_uploader_and_follower_is_bounded(
    tmp_path: Path,
) -> None:
    """``close()`` while a reader has stopped reading, an uploader has stopped sending and
    a follower follows that upload (no limit of the server would end any of them soon):
    it returns once its shutdown grace is over (the reader's connection is cut then),
    leaves no task running, logs no error,
    the follower sees an incomplete body and nothing is left open or half-written."""
    data_dir = tmp_path / "data"
    baseline = asyncio.all_tasks()
    server = LocalMediaStore(data_dir=str(data_dir), fsync=False)
    server.shutdown_grace = GRACE
    await server.start()
    loop = asyncio.get_running_loop()
    with watching_server_errors() as errors:
        try:
            async with aiohttp.ClientSession() as session:
                raw = Raw(server, session)
                await server.store.put_bytes("vod/big.mp4", os.urandom(BIG))
                async with stopped_reader(raw, "/vod/big.mp4") as reader_sock:
                    _, uploader = await put_head(
                        raw, "/live/seg.ts", "Content-Length: 100000\r\n",
                        {"x-amz-upload-availability": "STREAMING"},
                    )
                    uploader.write(b"u" * 1000)
                    await uploader.drain()
                    await wait_until(lambda: server.store.in_progress("live/seg.ts") is not None)
                    follower = await session.get(
                        raw.url("/live/seg.ts"), headers=raw.sign("GET", "/live/seg.ts")
                    )
                    assert await follower.content.readexactly(1000) == b"u" * 1000
                    await asyncio.sleep(0.2)  # the reader's writes back up
                    started = loop.time()
                    await server.close()
                    assert loop.time() - started < GRACE + 1.0
                    # Nothing of the server runs on, though the reader still reads nothing.
                    await asyncio.sleep(0.1)
                    left = asyncio.all_tasks() - baseline - {asyncio.current_task()}
                    assert left == set(), left
                    await assert_let_go(follower, reader_sock, uploader)
        finally:
            await server.close()
    await asyncio.sleep(0)
    assert asyncio.all_tasks() - baseline - {asyncio.current_task()} == set()
    assert not errors.records
    assert os.listdir(data_dir / "@tmp") == []
    assert open_files_under(data_dir) == []


async def test_sigterm_of_msd_serve_with_them_connected_is_bounded_and_clean(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    log = (tmp_path / "stderr.log").open("w+")
    serve = start_serve("--data-dir", str(data_dir), "--no-fsync", stderr=log)
    try:
        async with raw_client_of(serve) as (raw, session), stopped_reader(
            raw, "/vod/big.mp4"
        ) as reader_sock:
            _, uploader = await put_head(
                raw, "/live/seg.ts", "Content-Length: 100000\r\n",
                {"x-amz-upload-availability": "STREAMING"},
            )
            uploader.write(b"u" * 1000)
            await uploader.drain()
            follower = None
            for _ in range(200):
                follower = await session.get(
                    raw.url("/live/seg.ts"), headers=raw.sign("GET", "/live/seg.ts")
                )
                if follower.status == 200:
                    break
                follower.release()
                await asyncio.sleep(0.02)
            assert follower is not None and follower.status == 200
            assert await follower.content.readexactly(1000) == b"u" * 1000
            await asyncio.sleep(0.2)
            loop = asyncio.get_running_loop()
            started = loop.time()
            code = await asyncio.to_thread(serve.stop, signal.SIGTERM, 30)
            assert code == 0
            assert loop.time() - started < 15
            await assert_let_go(follower, reader_sock, uploader)
    finally:
        serve.stop(signal.SIGKILL)
        log.seek(0)
        stderr = log.read()
        log.close()
    assert "ERROR" not in stderr and "Traceback" not in stderr, stderr
    assert os.listdir(data_dir / "@tmp") == []



async def test_sigint_mid_upload_leaves_no_half_object_after_a_restart(
    tmp_path: Path,
) -> None:
    """``msd serve --data-dir`` stopped by SIGINT while uploads are mid-body (a STREAMING chunked
    one replacing an object, a STANDARD one with a Content-Length short by one byte, a
    chunked STANDARD one lacking only its last chunk): it exits 0 at once, quietly, none
    of them answered, and once restarted the old versions are there and nothing new.
    (SIGTERM takes the same path: the test above.)"""
    data_dir = tmp_path / "data"
    log = (tmp_path / "stderr.log").open("w+")
    serve = start_serve("--data-dir", str(data_dir), "--no-fsync", "--quiet", stderr=log)
    writers: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        async with raw_client_of(serve) as (raw, _):
            assert (await raw.put("live/a.ts", b"old a")).status == 200
            uploads = [
                ("/live/a.ts", "Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n",
                 {"x-amz-upload-availability": "STREAMING"}),
                ("/vod/b.mp4", "Content-Length: 100\r\n", b"b" * 99, None),
                ("/vod/c.mp4", "Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n", None),
            ]
            for path, framing, body, extra in uploads:
                reader, writer = await put_head(raw, path, framing, extra)
                writer.write(body)
                await writer.drain()
                writers.append((reader, writer))
            await asyncio.sleep(0.2)  # the bodies reach the server
            loop = asyncio.get_running_loop()
            started = loop.time()
            assert await asyncio.to_thread(serve.stop, signal.SIGINT, 30) == 0
            assert loop.time() - started < 2.0  # nothing to wait for: no grace taken
            for reader, _ in writers:
                assert await asyncio.wait_for(reader.read(), 10) == b""  # no answer
    finally:
        for _, writer in writers:
            writer.close()
        serve.stop(signal.SIGKILL)
        log.seek(0)
        stderr = log.read()
        log.close()
    assert stderr == "", stderr
    async with LocalMediaStore(data_dir=str(data_dir)) as again:
        assert sorted(v.path for v in again.store.walk()) == ["live/a.ts", "vod/big.mp4"]
        old = again.store.get("live/a.ts")
        assert old is not None and old.size == len(b"old a")
    assert os.listdir(data_dir / "@tmp") == []


async def test_msd_serve_send_time_limit_flag_cuts_a_stopped_reader(tmp_path: Path) -> None:
    log = (tmp_path / "stderr.log").open("w+")
    serve = start_serve("--send-time-limit", str(SEND_LIMIT), "--quiet", stderr=log)
    try:
        async with raw_client_of(serve) as (raw, _):
            async with stopped_reader(raw, "/vod/big.mp4") as sock:
                await asyncio.sleep(6 * SEND_LIMIT)
                received, closed = await drained(sock)
            assert closed and received < BIG
    finally:
        assert serve.stop(signal.SIGTERM, 30) == 0
        log.seek(0)
        stderr = log.read()
        log.close()
    assert f"took no data for {SEND_LIMIT:g} s" in stderr, stderr
    assert "WARNING" in stderr and "Traceback" not in stderr


@pytest.mark.parametrize("client", ["gone", "waiting"])
async def test_a_request_held_by_a_delay_fault_does_not_hold_close(client: str) -> None:
    """A "delay" fault holds its request ``delay`` seconds. aiohttp does not cancel the
    handler of a client that left, and ``close()`` waits its shutdown grace (2 s) for
    handlers still running: every test whose client gave up on a delayed request paid it
    at teardown (users' suites too). The hold now ends when its client leaves, within
    ``client_check_interval``, and at once when the server closes."""
    from msd_async import ReadTimeout, RetryPolicy, Session, Timeouts

    server = LocalMediaStore()
    await server.start()
    loop = asyncio.get_running_loop()
    try:
        server.faults.inject("delay", method="HEAD", delay=60)
        async with Session(
            credentials=server.credentials, region=server.region, retry=RetryPolicy.none(),
            timeouts=Timeouts(read=0.3 if client == "gone" else 30),
        ) as session:
            store = session.container(server.endpoint)
            if client == "gone":
                with pytest.raises(ReadTimeout):
                    await store.describe_object("held.ts")
                # Its handler ends within the check interval, not after the delay.
                await asyncio.sleep(2 * server.client_check_interval)
            else:
                waiting = asyncio.create_task(store.describe_object("held.ts"))
                while server.faults.applied < 1:  # noqa: ASYNC110 - it holds the request
                    await asyncio.sleep(0.01)
            started = loop.time()
            await server.close()
            assert loop.time() - started < 1.0  # aiohttp's shutdown grace: 2 s
            if client == "waiting":
                with pytest.raises(Exception) as caught:
                    await waiting
                assert not isinstance(caught.value, ReadTimeout)
    finally:
        await server.close()


async def test_a_request_held_by_a_delay_fault_is_left_unanswered_when_the_server_closes(
    raw: Raw, server: LocalMediaStore
) -> None:
    """The server closing ends the hold with no answer (faults.py: "the request,
    unanswered"), as a server going away does: the client sees its connection end, which
    it may retry elsewhere. It was answered ``400 Bad Request`` (a client error, never
    retried) with no error type: a test suite read its own teardown as a bad request."""
    from msd_async import RetryPolicy, Session, TransportError

    server.faults.inject("delay", times=2, method="HEAD", delay=60)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(signed_head(raw, "HEAD", "/held.ts"))
    await writer.drain()
    async with Session(
        credentials=server.credentials, region=server.region, retry=RetryPolicy.none()
    ) as session:
        waiting = asyncio.create_task(session.container(server.endpoint).describe_object("x"))
        async with asyncio.timeout(10):
            while server.faults.applied < 2:  # noqa: ASYNC110 - both requests are held
                await asyncio.sleep(0.01)
        await server.close()
        # A lost connection (or, resent, a refused one): a transport error, retryable.
        with pytest.raises(TransportError):
            await waiting
    try:
        assert await asyncio.wait_for(reader.read(), 10) == b""
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


@pytest.mark.parametrize("case", ["still-reading", "answered-early", "gone-after-answer"])
async def test_close_does_not_wait_for_the_rest_of_a_put_body(
    raw: Raw, server: LocalMediaStore, case: str
) -> None:
    """A PUT whose client sent part of its body and stalls: its handler waits for the rest
    (``still-reading``), or, refused before its body was read (over the limit), aiohttp
    reads and drops the rest for up to its lingering time (10 s) so that a client still
    sending gets the answer (``answered-early``). Either way ``close()`` waited its whole
    shutdown grace (2 s) for a body nobody will store. And aiohttp's lingering read is not
    woken when its client leaves (``gone-after-answer``): it ran on for 10 s after
    ``close()`` returned. Now the connection ends at once and no task runs on."""
    baseline = asyncio.all_tasks()
    answered = case != "still-reading"
    length = 5000 if answered else 400  # the fixture's limits: 1000, STREAMING 500
    reader, writer = await put_head(
        raw, "/half.ts", f"Content-Length: {length}\r\n",
        {"x-amz-upload-availability": "STANDARD" if answered else "STREAMING"},
    )
    writer.write(b"h" * 100)
    await writer.drain()
    if answered:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 400 ")
    else:
        await wait_until(lambda: server.store.in_progress("half.ts") is not None)
    if case == "gone-after-answer":
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
        await asyncio.sleep(0.1)  # its end reaches the server
    loop = asyncio.get_running_loop()
    started = loop.time()
    await server.close()
    assert loop.time() - started < 1.0  # aiohttp's shutdown grace: 2 s
    await asyncio.sleep(0.1)
    assert asyncio.all_tasks() - baseline - {asyncio.current_task()} == set()
    try:
        if not answered:
            assert await asyncio.wait_for(reader.read(), 10) == b""  # no answer came
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    assert server.store.get("half.ts") is None


async def test_a_request_cancelled_by_close_is_counted() -> None:
    """A reader that stopped reading holds its handler past the shutdown grace, and
    aiohttp then cancelled it. ``on_request`` (``msd serve --metrics``:
    msd_server_requests_total) never heard of that request: the metrics missed exactly
    the requests a shutdown cut. It is counted now, as ``aborted``."""
    finished = Finished()
    server = LocalMediaStore(on_request=finished)
    server.shutdown_grace = GRACE
    await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            raw = Raw(server, session)
            await server.store.put_bytes("vod/big.mp4", os.urandom(BIG))
            async with stopped_reader(raw, "/vod/big.mp4"):
                await asyncio.sleep(0.2)  # its writes back up
                await server.close()
    finally:
        await server.close()
    assert [(op, status) for op, status, _ in finished.done] == [("GetObject", "aborted")]


# --- close() cancelled, and responses still in flight at its grace --------------------------


async def raw_socket(port: int, sent: bytes = b"") -> socket.socket:
    """A raw TCP client that has sent ``sent`` (maybe nothing) and reads nothing."""
    sock = socket.socket()
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    if sent:
        sock.send(sent)
    return sock


@pytest.mark.parametrize("cancel_after", [1, 3, 8, 0.2])
async def test_a_cancelled_close_still_lets_go_of_every_connection(
    tmp_path: Path, cancel_after: float
) -> None:
    """``close()`` cancelled midway (``asyncio.timeout`` around a test's teardown, a
    cancelled fixture) closed the listening socket and left the rest: the connections of a
    stopped reader, a stalled uploader, an idle client and a client that sent nothing stayed
    open and their handlers ran on. Cancelled after a few loop steps or during the grace,
    it now ends every connection and every task before it re-raises the cancellation."""
    data_dir = tmp_path / "data"
    baseline = asyncio.all_tasks()
    server = LocalMediaStore(data_dir=str(data_dir), fsync=False)
    await server.start()
    socks: list[socket.socket] = []
    try:
        async with aiohttp.ClientSession() as session:
            raw = Raw(server, session)
            await server.store.put_bytes("vod/big.mp4", b"b" * BIG)
            await server.store.put_bytes("vod/small.mp4", b"s")
            assert (await raw.get("vod/small.mp4")).status == 200  # a keep-alive, now idle
            async with stopped_reader(raw, "/vod/big.mp4") as reader_sock:
                put = signed_head(raw, "PUT", "/live/seg.ts",
                                  {"x-amz-upload-availability": "STREAMING"})
                socks.append(await raw_socket(
                    server.port, put[:-2] + b"Content-Length: 100000\r\n\r\n" + b"u" * 1000
                ))
                socks.append(await raw_socket(server.port))  # sends nothing
                socks.append(await raw_socket(server.port, signed_head(raw, "GET", "/")[:-4]))
                await wait_until(lambda: server.store.in_progress("live/seg.ts") is not None)
                await wait_until(lambda: open_files_under(data_dir) != [])  # the GET's file
                await asyncio.sleep(0.2)  # the reader's writes back up
                closing = asyncio.create_task(server.close())
                if isinstance(cancel_after, int):
                    for _ in range(cancel_after):
                        await asyncio.sleep(0)
                else:
                    await asyncio.sleep(cancel_after)
                assert not closing.done()
                closing.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await closing
                # Nothing of the server runs on once the cancelled close() is over.
                left = asyncio.all_tasks() - baseline - {asyncio.current_task()}
                assert left == set(), left
                assert sockets_on(server.port) == []
                assert open_files_under(data_dir) == []
                for sock in [reader_sock, *socks]:
                    _, closed = await drained(sock)
                    assert closed
                # The pooled keep-alive was closed too: a new request cannot reach it.
                with pytest.raises(aiohttp.ClientConnectionError):
                    await raw.get("vod/small.mp4")
    finally:
        for sock in socks:
            sock.close()
        await server.close()  # a no-op now
    assert os.listdir(data_dir / "@tmp") == []
    assert server.store.get("live/seg.ts") is None


async def test_close_cuts_a_response_still_in_flight_at_its_grace() -> None:
    """A client that stopped reading a large object: aiohttp's shutdown waited its grace
    for the handler, then as long again before cancelling it, so every close() with such a
    client took about 4 s, and the access log had no line for the request. Its connection
    is now cut when the grace is over: close() takes the grace, the request is logged and
    counted as ``aborted`` and one WARNING says the shutdown cut it."""
    finished = Finished()
    server = LocalMediaStore(on_request=finished)
    server.shutdown_grace = GRACE
    await server.start()
    loop = asyncio.get_running_loop()
    access: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            access.append(record)

    access_logger = logging.getLogger("msd_async.testing.access")
    keep, level = Keep(), access_logger.level
    access_logger.addHandler(keep)
    access_logger.setLevel(logging.INFO)
    try:
        with server_warnings() as warnings, watching_server_errors() as errors:
            async with aiohttp.ClientSession() as session:
                raw = Raw(server, session)
                await server.store.put_bytes("vod/big.mp4", b"b" * BIG)
                async with stopped_reader(raw, "/vod/big.mp4") as sock:
                    await asyncio.sleep(0.2)  # its writes back up
                    started = loop.time()
                    await server.close()
                    took = loop.time() - started
                    received, closed = await drained(sock)
    finally:
        access_logger.removeHandler(keep)
        access_logger.setLevel(level)
        await server.close()
    assert GRACE <= took < GRACE + 1.0, took  # it was 2 s + 2 s
    assert closed and received < BIG
    assert [(op, status) for op, status, _ in finished.done] == [("GetObject", "aborted")]
    assert [r.getMessage().split()[:3] for r in access] == [["GET", "/vod/big.mp4", "aborted"]]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "shutdown" in warnings[0].getMessage() and "GET /vod/big.mp4" in (
        warnings[0].getMessage()
    )
    assert not errors.records


async def test_close_lets_a_response_finish_within_its_grace() -> None:
    """The grace is kept: a client still taking a response when close() begins gets all
    of it if it takes it within the grace."""
    size = 6_000_000  # more than loopback's buffers take: the response is in flight
    server = LocalMediaStore()
    server.shutdown_grace = 10.0
    await server.start()
    loop = asyncio.get_running_loop()
    try:
        async with aiohttp.ClientSession() as session:
            raw = Raw(server, session)
            await server.store.put_bytes("vod/a.mp4", b"a" * size)
            async with stopped_reader(raw, "/vod/a.mp4") as sock:
                await asyncio.sleep(0.2)
                closing = asyncio.create_task(server.close())
                await asyncio.sleep(0.2)
                assert not closing.done()
                received = 0
                while chunk := await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), 5):
                    received += len(chunk)
                await asyncio.wait_for(closing, 5)
    finally:
        await server.close()
    assert received > size


async def test_close_while_a_streaming_upload_commits_lets_it_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """close() aborts the STREAMING uploads in progress, so that their followers see them
    fail. One whose body had all come and was being made durable (fsync runs in a thread)
    was aborted under its commit: its file closed and removed mid-commit, the commit then
    failed, its client got a 500 and the server logged an ERROR traceback, at every
    shutdown that caught an upload there. Its commit now completes: the client gets its
    200 and the object is there, whole, after a restart."""
    import threading

    data_dir = tmp_path / "data"
    real_fsync = os.fsync
    syncing = threading.Event()

    def slow_fsync(fd: int) -> None:  # a slow disk: the window is the fsync's
        syncing.set()
        threading.Event().wait(0.3)
        real_fsync(fd)

    server = LocalMediaStore(data_dir=str(data_dir))
    await server.start()
    try:
        with watching_server_errors() as errors:
            async with aiohttp.ClientSession() as session:
                raw = Raw(server, session)
                monkeypatch.setattr(os, "fsync", slow_fsync)
                put = asyncio.create_task(
                    raw.put("live/seg.ts", b"whole segment", x_amz_upload_availability="STREAMING")
                )
                await wait_until(syncing.is_set)
                await server.close()
                reply = await put
        assert reply.status == 200, reply.body
        assert not errors.records
    finally:
        monkeypatch.undo()
        await server.close()
    async with LocalMediaStore(data_dir=str(data_dir)) as again, aiohttp.ClientSession() as s:
        assert (await Raw(again, s).get("live/seg.ts")).body == b"whole segment"


async def test_a_second_close_waits_for_the_first() -> None:
    """close() from two tasks at once (a test's own close and its fixture's teardown):
    the second returned at once, while the first still waited its grace for a stopped
    reader, so its caller went on with the server's connections and handlers still there.
    It now returns when the server is closed."""
    baseline = asyncio.all_tasks()
    server = LocalMediaStore()
    server.shutdown_grace = GRACE
    await server.start()
    async with aiohttp.ClientSession() as session:
        raw = Raw(server, session)
        await server.store.put_bytes("vod/big.mp4", b"b" * BIG)
        async with stopped_reader(raw, "/vod/big.mp4") as sock:
            await asyncio.sleep(0.2)  # its writes back up
            first = asyncio.create_task(server.close())
            await asyncio.sleep(0)
            await server.close()
            assert first.done()
            left = asyncio.all_tasks() - baseline - {asyncio.current_task()}
            assert left == set(), left
            _, closed = await drained(sock)
            assert closed


@pytest.mark.parametrize(
    "client", ["sends-nothing", "half-a-head", "put-head-only", "chunked-head-only", "pipelined"]
)
async def test_close_waits_for_no_client_that_sends_nothing_more(
    raw: Raw, server: LocalMediaStore, client: str
) -> None:
    """A connection that never sent a byte, a head that stopped halfway (slowloris), a
    PUT's head whose body never comes (Content-Length or chunked), a GET pipelined behind
    an upload whose body stalled: close() waits for none of them (not its grace), ends
    each connection unanswered and leaves no task and nothing stored."""
    baseline = asyncio.all_tasks()
    put = signed_head(raw, "PUT", "/p.ts")[:-2]
    sent = {
        "sends-nothing": b"",
        "half-a-head": signed_head(raw, "GET", "/")[:-20],
        "put-head-only": put + b"Content-Length: 10\r\n\r\n",
        "chunked-head-only": put + b"Transfer-Encoding: chunked\r\n\r\n",
        # The GET's bytes are the rest of the upload's body to the server: it waits on.
        "pipelined": put + b"Content-Length: 900\r\n\r\n" + signed_head(raw, "GET", "/p.ts"),
    }[client]
    sock = await raw_socket(server.port, sent)
    try:
        await asyncio.sleep(0.1)  # what was sent reaches the server
        loop = asyncio.get_running_loop()
        started = loop.time()
        await server.close()
        assert loop.time() - started < server.shutdown_grace / 2
        assert asyncio.all_tasks() - baseline - {asyncio.current_task()} == set()
        received, closed = await drained(sock)
        assert closed and received == 0
    finally:
        sock.close()
    assert server.store.get("p.ts") is None


async def test_an_on_request_callback_that_raises_is_logged_and_ignored() -> None:
    """``on_request`` is the application's (a metrics hook). Raising, it reached aiohttp
    as the handler's failure: an "Error handling request" traceback per request and the
    connection closed after each answer, a request pipelined behind it dropped. It is now
    logged (once, then every thousandth time) and the server carries on."""
    calls: list[str] = []

    def broken(operation: str, status: str, seconds: float) -> None:
        calls.append(status)
        raise RuntimeError("metrics backend down")

    async with LocalMediaStore(on_request=broken) as server, aiohttp.ClientSession() as s:
        raw = Raw(server, s)
        await server.store.put_bytes("a.ts", b"hello")
        with watching_server_errors() as errors:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            try:
                writer.write(signed_head(raw, "GET", "/a.ts") + signed_head(raw, "HEAD", "/a.ts"))
                await writer.drain()
                # Both answered, on the one connection.
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                assert head.startswith(b"HTTP/1.1 200 ")
                assert await asyncio.wait_for(reader.readexactly(5), 10) == b"hello"
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                assert head.startswith(b"HTTP/1.1 200 ")
            finally:
                writer.close()
        assert calls == ["200", "200"]
        assert [r.name for r in errors.records] == ["msd_async.testing.server"]
        assert "on_request" in errors.records[0].getMessage()


async def test_close_cuts_the_unsent_end_of_an_answered_response_at_its_grace() -> None:
    """A response its handler is done with can still have its end in the server's write
    buffer, unsent, when the client stopped reading (here the server's socket buffer is
    made small, so a 40 kB object leaves one). aiohttp closes such a connection gracefully,
    waiting to send that end first: for a client that stopped reading, forever, and
    close() returned with the connection still open. It is cut when the grace is over."""
    finished = Finished()
    server = LocalMediaStore(on_request=finished)
    server.shutdown_grace = GRACE
    await server.start()
    loop = asyncio.get_running_loop()
    try:
        [listener] = sockets_on(server.port)
        with socket.socket(fileno=os.dup(listener)) as dup:  # accepted sockets inherit it
            dup.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        with server_warnings() as warnings:
            async with aiohttp.ClientSession() as session:
                raw = Raw(server, session)
                await server.store.put_bytes("a.ts", b"a" * 40_000)
                async with stopped_reader(raw, "/a.ts") as sock:
                    await finished.wait("GetObject", "200", 10)  # its handler is done
                    started = loop.time()
                    await server.close()
                    took = loop.time() - started
                    assert sockets_on(server.port) == []
                    received, closed = await drained(sock)
    finally:
        await server.close()
    assert closed and received < 40_000
    assert took < GRACE + 1.0
    assert len(warnings) == 1 and "not taken" in warnings[0].getMessage(), warnings


@pytest.mark.parametrize("grace", [-1.0, float("nan"), float("inf"), True, "2"])
async def test_a_shutdown_grace_that_is_no_number_of_seconds_is_refused_by_start(
    grace: object,
) -> None:
    server = LocalMediaStore()
    server.shutdown_grace = grace  # type: ignore[assignment]
    with pytest.raises(ValueError, match="shutdown_grace"):
        await server.start()
    await server.close()  # never started: nothing to do


async def test_a_close_in_a_cancelled_anyio_scope_still_ends_every_handler() -> None:
    """``async with LocalMediaStore()`` left by the cancellation of an anyio scope
    (``move_on_after`` around a test's body): anyio cancels every await of close() in that
    scope, not only the first, so the wait for the handlers it had cut was itself cut and
    they ran on after it. It is waited for now (it is short: everything is cut)."""
    import anyio

    baseline = asyncio.all_tasks()
    server = LocalMediaStore()
    socks: list[socket.socket] = []
    try:
        with anyio.CancelScope() as scope:
            async with server, aiohttp.ClientSession() as session:
                raw = Raw(server, session)
                await server.store.put_bytes("vod/big.mp4", b"b" * BIG)
                reader = socket.socket()
                reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                reader.setblocking(False)
                socks.append(reader)
                await asyncio.get_running_loop().sock_connect(reader, ("127.0.0.1", server.port))
                reader.send(signed_head(raw, "GET", "/vod/big.mp4"))  # and never reads
                put = signed_head(raw, "PUT", "/live/seg.ts",
                                  {"x-amz-upload-availability": "STREAMING"})
                socks.append(await raw_socket(
                    server.port, put[:-2] + b"Content-Length: 1000\r\n\r\n" + b"u" * 10
                ))
                await wait_until(lambda: server.store.in_progress("live/seg.ts") is not None)
                await asyncio.sleep(0.2)  # the reader's writes back up
                scope.cancel()
                await asyncio.sleep(10)  # cancelled at once
        assert scope.cancelled_caught
        left = asyncio.all_tasks() - baseline - {asyncio.current_task()}
        assert left == set(), left
        assert sockets_on(server.port) == []
    finally:
        for sock in socks:
            sock.close()
