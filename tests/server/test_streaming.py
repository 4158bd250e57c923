"""Bodies as they stream: STREAMING read-while-write, limits, cut connections, faults."""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import AsyncIterator

import aiohttp
import pytest
from rawclient import Raw
from server_errors import watching_server_errors

from msd_async.testing import FaultPlan, LocalMediaStore

pytestmark = pytest.mark.anyio


class Feeder:
    """An async body whose chunks the test releases one at a time."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while (chunk := await self.queue.get()) is not None:
            yield chunk


async def wait_for(predicate: object) -> None:
    async with asyncio.timeout(5.0):
        # Polling the server's state from a test is fine; the server itself never polls.
        while not predicate():  # type: ignore[operator]  # noqa: ASYNC110
            await asyncio.sleep(0.005)


async def test_streaming_read_while_write(raw: Raw) -> None:
    feeder = Feeder()
    headers = raw.sign("PUT", "/live/seg.m4s", headers={"x-amz-upload-availability": "STREAMING"})
    put = asyncio.create_task(
        raw.call("PUT", "/live/seg.m4s", sign=False, headers=headers, data=feeder.__aiter__())
    )
    feeder.queue.put_nowait(b"first-chunk|")
    await wait_for(lambda: raw.server.store.in_progress("live/seg.m4s") is not None)
    await wait_for(lambda: raw.server.store.in_progress("live/seg.m4s").size > 0)  # type: ignore[union-attr]
    async with raw.session.get(
        raw.url("/live/seg.m4s"),
        headers=raw.sign("GET", "/live/seg.m4s", headers={"range": "bytes=0-1"}),
    ) as resp:
        assert resp.status == 200  # Range is ignored on an in-progress object
        assert "Content-Length" not in resp.headers
        first = await resp.content.readany()
        assert first == b"first-chunk|"
        assert not put.done()
        feeder.queue.put_nowait(b"second|")
        feeder.queue.put_nowait(b"third")
        feeder.queue.put_nowait(None)
        rest = await resp.read()
    assert first + rest == b"first-chunk|second|third"
    reply = await put
    assert reply.status == 200
    assert reply.json()["ContentSHA256"] == hashlib.sha256(first + rest).hexdigest()
    assert (await raw.get("live/seg.m4s")).body == b"first-chunk|second|third"


async def test_streaming_reader_sees_abrupt_end_when_upload_fails(raw: Raw) -> None:
    await raw.server.store.put_bytes("live/s.m4s", b"old version")
    _reader, writer = await asyncio.open_connection("127.0.0.1", raw.server.port)
    headers = raw.sign("PUT", "/live/s.m4s", headers={"x-amz-upload-availability": "STREAMING"})
    head = f"PUT /live/s.m4s HTTP/1.1\r\nHost: {raw.host}\r\nTransfer-Encoding: chunked\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    writer.write(head.encode() + b"5\r\nhello\r\n")
    await writer.drain()
    await wait_for(lambda: raw.server.store.in_progress("live/s.m4s") is not None)
    async with raw.session.get(
        raw.url("/live/s.m4s"), headers=raw.sign("GET", "/live/s.m4s")
    ) as resp:
        assert await resp.content.readany() == b"hello"
        writer.close()  # the uploader dies before its last chunk
        await writer.wait_closed()
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    await wait_for(lambda: raw.server.store.in_progress("live/s.m4s") is None)
    assert (await raw.get("live/s.m4s")).body == b"old version"


async def test_streaming_upload_stays_visible_when_a_later_one_completes(raw: Raw) -> None:
    """Two STREAMING PUTs of one path: the later one completes while the first still
    uploads. The first is then still in progress, so still readable (docs/contract.md,
    "Semantics": readable while it uploads), not hidden behind the later version until it
    reappears as the current one on completion."""
    feeder = Feeder()
    headers = raw.sign("PUT", "/live/p.m4s", headers={"x-amz-upload-availability": "STREAMING"})
    first = asyncio.create_task(
        raw.call("PUT", "/live/p.m4s", sign=False, headers=headers, data=feeder.__aiter__())
    )
    feeder.queue.put_nowait(b"first|")
    await wait_for(lambda: raw.server.store.in_progress("live/p.m4s") is not None)
    second = await raw.put("live/p.m4s", b"second", x_amz_upload_availability="STREAMING")
    assert second.status == 200
    async with raw.session.get(
        raw.url("/live/p.m4s"), headers=raw.sign("GET", "/live/p.m4s")
    ) as resp:
        assert resp.status == 200 and "Content-Length" not in resp.headers
        assert await resp.content.readany() == b"first|"
        feeder.queue.put_nowait(b"end")
        feeder.queue.put_nowait(None)
        assert await resp.read() == b"end"
    assert (await first).status == 200
    assert (await raw.get("live/p.m4s")).body == b"first|end"


async def test_viewer_that_leaves_a_paused_upload_is_let_go() -> None:
    """A viewer of an in-progress STREAMING upload disconnects while the upload pauses (an
    encoder between chunks, or one that died without closing). aiohttp does not cancel a
    handler whose client left, so the server must notice by itself: the viewer's GET ends
    (logged as aborted) within a few client checks, long before the upload's own time
    limit, with no error logged, while the upload and another viewer go on."""
    statuses: list[tuple[str, str]] = []
    async with LocalMediaStore(
        on_request=lambda op, status, _s: statuses.append((op, status))
    ) as server, aiohttp.ClientSession() as session:
        raw = Raw(server, session)
        bound = 5 * server.client_check_interval
        # Otherwise the upload's own timeout would end the follower and hide a leak.
        assert bound < server.upload_time_limit / 2
        loop = asyncio.get_running_loop()
        feeder = Feeder()
        with watching_server_errors() as errors:
            headers = raw.sign(
                "PUT", "/live/seg.m4s", headers={"x-amz-upload-availability": "STREAMING"}
            )
            put = asyncio.create_task(
                raw.call(
                    "PUT", "/live/seg.m4s", sign=False, headers=headers, data=feeder.__aiter__()
                )
            )
            try:
                feeder.queue.put_nowait(b"first|")
                await wait_for(lambda: server.store.in_progress("live/seg.m4s") is not None)
                await wait_for(lambda: server.store.in_progress("live/seg.m4s").size > 0)  # type: ignore[union-attr]
                async with session.get(
                    raw.url("/live/seg.m4s"), headers=raw.sign("GET", "/live/seg.m4s")
                ) as staying:
                    assert await staying.content.readany() == b"first|"

                    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                    get = f"GET /live/seg.m4s HTTP/1.1\r\nHost: {raw.host}\r\n"
                    get += "".join(
                        f"{k}: {v}\r\n" for k, v in raw.sign("GET", "/live/seg.m4s").items()
                    )
                    writer.write(get.encode() + b"\r\n")
                    head = await reader.readuntil(b"\r\n\r\n")
                    assert head.startswith(b"HTTP/1.1 200 ")
                    assert b"transfer-encoding: chunked" in head.lower()
                    assert await reader.readuntil(b"first|\r\n") == b"6\r\nfirst|\r\n"
                    writer.close()
                    await writer.wait_closed()
                    left = loop.time()

                    async with asyncio.timeout(bound):
                        while ("GetObject", "aborted") not in statuses:  # noqa: ASYNC110
                            await asyncio.sleep(0.01)
                    assert loop.time() - left < bound
                    upload = server.store.in_progress("live/seg.m4s")
                    assert upload is not None and upload.state == "open" and not put.done()

                    feeder.queue.put_nowait(b"end")
                    feeder.queue.put_nowait(None)
                    assert await staying.read() == b"end"
            finally:
                feeder.queue.put_nowait(None)
                reply = await put
            assert reply.status == 200
            assert (await raw.get("live/seg.m4s")).body == b"first|end"
        assert not errors.records
        assert statuses.count(("GetObject", "aborted")) == 1


async def test_chunked_upload_with_odd_boundaries(raw: Raw) -> None:
    payload = bytes(range(256)) * 3
    reader, writer = await asyncio.open_connection("127.0.0.1", raw.server.port)
    headers = raw.sign("PUT", "/odd.bin")
    head = f"PUT /odd.bin HTTP/1.1\r\nHost: {raw.host}\r\nTransfer-Encoding: chunked\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    framed = b""
    pos = 0
    for size in (1, 7, 0x1F, 300, 5, 424):
        piece = payload[pos : pos + size]
        framed += f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        pos += size
    assert pos == len(payload)
    framed += b"0\r\n\r\n"
    wire = head.encode() + framed
    # Split the bytes on the wire across chunk-size lines and CRLFs too.
    for i in range(0, len(wire), 13):
        writer.write(wire[i : i + 13])
        await writer.drain()
    status_line = await reader.readline()
    writer.close()
    await writer.wait_closed()
    assert b" 200 " in status_line
    assert (await raw.get("odd.bin")).body == payload


async def _raw_put(raw: Raw, path: str, head_extra: str, body: bytes, *, close: bool) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", raw.server.port)
    headers = raw.sign("PUT", path)
    head = f"PUT {path} HTTP/1.1\r\nHost: {raw.host}\r\n{head_extra}"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    writer.write(head.encode() + body)
    await writer.drain()
    if close:
        writer.close()
        await writer.wait_closed()
        return b""
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    return data


@pytest.mark.parametrize(
    ("framing", "body"),
    [
        ("Content-Length: 100\r\n", b"x" * 40),
        ("Transfer-Encoding: chunked\r\n", b"28\r\n" + b"x" * 40 + b"\r\n"),
        ("Transfer-Encoding: chunked\r\n", b"28\r\n" + b"x" * 20),
    ],
)
async def test_incomplete_body_is_never_stored(raw: Raw, framing: str, body: bytes) -> None:
    await raw.server.store.put_bytes("inc.ts", b"previous")
    await _raw_put(raw, "/inc.ts", framing, body, close=True)
    await asyncio.sleep(0.05)
    assert (await raw.get("inc.ts")).body == b"previous"
    assert raw.server.store.in_progress("inc.ts") is None


async def test_size_limit_edges(raw: Raw) -> None:
    # The fixture's limits: STANDARD 1000 bytes, STREAMING 500 bytes.
    await raw.put("lim.bin", b"p" * 10)
    assert (await raw.put("lim.bin", b"a" * 1000)).status == 200
    over = await raw.put("lim.bin", b"b" * 1001)
    assert over.status == 400 and over.error == "ValidationException"
    assert (await raw.get("lim.bin")).body == b"a" * 1000
    stream = {"x_amz_upload_availability": "STREAMING"}
    assert (await raw.put("lim.bin", b"c" * 500, **stream)).status == 200
    assert (await raw.put("lim.bin", b"d" * 501, **stream)).error == "ValidationException"
    assert (await raw.get("lim.bin")).body == b"c" * 500


async def test_chunked_body_over_limit_is_cut(raw: Raw) -> None:
    await raw.put("lim.bin", b"keep")

    async def body() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b"z" * 100

    headers = raw.sign("PUT", "/lim.bin")
    async with raw.session.put(raw.url("/lim.bin"), data=body(), headers=headers) as resp:
        assert resp.status == 400
        assert resp.headers["x-amzn-ErrorType"] == "ValidationException"
        assert "limit" in (await resp.json())["Message"]
    assert (await raw.get("lim.bin")).body == b"keep"


async def test_real_streaming_limit_edge() -> None:
    async with LocalMediaStore() as server, aiohttp.ClientSession() as session:
        raw = Raw(server, session)
        stream = {"x_amz_upload_availability": "STREAMING"}
        # BytesIO: aiohttp warns about large raw-bytes bodies.
        ok = await raw.put("edge.bin", io.BytesIO(b"\0" * 10_000_000), **stream)
        assert ok.status == 200
        over = await raw.put("edge.bin", io.BytesIO(b"\1" * 10_000_001), **stream)
        assert over.status == 400 and over.error == "ValidationException"
        version = server.store.get("edge.bin")
        assert version is not None and version.size == 10_000_000


async def test_upload_time_limit() -> None:
    async with LocalMediaStore(upload_time_limit=0.3) as server, aiohttp.ClientSession() as s:
        raw = Raw(server, s)
        await server.store.put_bytes("slow.ts", b"before")

        async def slow() -> AsyncIterator[bytes]:
            yield b"a"
            await asyncio.sleep(1.0)
            yield b"b"

        headers = raw.sign("PUT", "/slow.ts")
        async with s.put(raw.url("/slow.ts"), data=slow(), headers=headers) as resp:
            assert resp.status == 400
            assert "within" in (await resp.json())["Message"]
        assert (await raw.get("slow.ts")).body == b"before"


@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [
        ("500", 500, "InternalServerError"),
        ("503", 503, "ServiceUnavailableException"),
        ("throttle", 400, "ThrottlingException"),
    ],
)
async def test_error_faults(raw: Raw, kind: str, status: int, code: str) -> None:
    raw.server.faults.inject(kind, method="PUT", path="f.ts")  # type: ignore[arg-type]
    reply = await raw.put("f.ts", b"x")
    assert reply.status == status and reply.error == code
    assert raw.server.store.get("f.ts") is None
    assert (await raw.put("f.ts", b"x")).status == 200  # one-shot


async def test_cut_upload_fault(raw: Raw) -> None:
    await raw.server.store.put_bytes("cut.ts", b"previous")
    # times=2: aiohttp's client silently retries an idempotent request once on disconnect.
    raw.server.faults.inject("cut-upload", path="cut.ts", after_bytes=100, times=2)
    with pytest.raises(aiohttp.ClientError):
        await raw.put("cut.ts", b"n" * 900)
    assert (await raw.get("cut.ts")).body == b"previous"
    assert raw.server.faults.history == [("cut-upload", "PUT", "cut.ts")] * 2


async def test_cut_download_fault(raw: Raw) -> None:
    await raw.put("dl.ts", b"d" * 1000)
    raw.server.faults.inject("cut-download", path="dl.ts", after_bytes=300)
    async with raw.session.get(raw.url("/dl.ts"), headers=raw.sign("GET", "/dl.ts")) as resp:
        assert resp.status == 200 and resp.headers["Content-Length"] == "1000"
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    assert (await raw.get("dl.ts")).body == b"d" * 1000


async def test_delay_fault(raw: Raw) -> None:
    raw.server.faults.inject("delay", delay=0.2)
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert (await raw.list()).status == 200
    assert loop.time() - start >= 0.2


async def test_random_faults_never_corrupt_the_store() -> None:
    plan = FaultPlan(rate=0.5, seed=3, delay=0.0)
    async with LocalMediaStore(faults=plan) as server, aiohttp.ClientSession() as session:
        raw = Raw(server, session)
        stored: dict[str, bytes] = {}
        for i in range(60):
            path = f"r/{i % 5}.ts"
            body = bytes([i]) * (50 + i)
            try:
                reply = await raw.put(path, body)
            except aiohttp.ClientError:
                continue
            if reply.status == 200:
                stored[path] = body
        plan.rate = 0.0
        for path, body in stored.items():
            assert (await raw.get(path)).body == body
        assert len(plan.history) > 10
        assert {k for k, _, _ in plan.history} >= {"500", "cut-upload"}


def test_fault_plan_validation() -> None:
    with pytest.raises(ValueError):
        FaultPlan(rate=1.5)
    with pytest.raises(ValueError):
        FaultPlan(kinds={"explode"})
    a = FaultPlan(rate=0.3, seed=1)
    b = FaultPlan(rate=0.3, seed=1)
    picks_a = [a.pick("GET", "x", is_object=True) for _ in range(50)]
    picks_b = [b.pick("GET", "x", is_object=True) for _ in range(50)]
    assert [p and p.kind for p in picks_a] == [p and p.kind for p in picks_b]
    assert all(p is None or p.kind != "cut-upload" for p in picks_a)
