"""The relay in process, between real HTTP clients (aiohttp, raw sockets) and the local
server, through the real LivePublisher."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from msd_async import ContainerClient, ObjectNotFoundError, Session
from msd_async.ingest import ObjectRecord, Relay
from msd_async.live import LivePublisher
from msd_async.testing import LocalMediaStore

pytestmark = pytest.mark.anyio

PLAYLIST = b"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\nseg0.ts\n"


@pytest.fixture
async def session(mediastore_server: LocalMediaStore) -> AsyncIterator[Session]:
    async with Session(
        credentials=mediastore_server.credentials, region=mediastore_server.region
    ) as session:
        yield session


@pytest.fixture
async def store(mediastore_server: LocalMediaStore, session: Session) -> ContainerClient:
    return session.container(mediastore_server.endpoint)


@pytest.fixture
async def relay(store: ContainerClient) -> AsyncIterator[Relay]:
    records: list[ObjectRecord] = []
    async with (
        LivePublisher(store, close_timeout=5) as publisher,
        Relay(publisher, on_object=records.append, drain_timeout=10) as relay,
    ):
        relay.records = records  # type: ignore[attr-defined]
        yield relay


async def raw_exchange(relay: Relay, data: bytes, *, read: bool = True) -> bytes:
    """Send raw bytes to the relay; with ``read``, return everything it answers until it
    closes or goes quiet."""
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    try:
        writer.write(data)
        await writer.drain()
        if not read:
            return b""
        answer = b""
        while True:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), 2.0)
            except TimeoutError:
                return answer
            if not chunk:
                return answer
            answer += chunk
    finally:
        writer.close()
        await writer.wait_closed()


async def eventually(check: object, within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            await check()  # type: ignore[operator]
            return
        except (AssertionError, ObjectNotFoundError):
            if asyncio.get_running_loop().time() > deadline:
                raise
        await asyncio.sleep(0.05)


async def test_chunked_media_streams_through_before_the_body_ends(
    relay: Relay, store: ContainerClient
) -> None:
    first_seen = asyncio.Event()
    release = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b"A" * 1000
        await release.wait()
        yield b"B" * 1000

    async def watch() -> None:
        # A reader of the in-progress STREAMING object gets the first chunk while the
        # encoder still holds the rest back.
        while True:
            try:
                async with store.get_object("live/seg0.ts") as obj:
                    async for chunk in obj:
                        if chunk:
                            first_seen.set()
                            return
            except ObjectNotFoundError:
                await asyncio.sleep(0.02)

    watcher = asyncio.create_task(watch())
    async with aiohttp.ClientSession() as http:
        put = asyncio.create_task(http.put(f"{relay.url}/live/seg0.ts", data=body()))
        await asyncio.wait_for(first_seen.wait(), 10)
        assert not put.done()
        release.set()
        response = await put
        assert response.status == 204
        response.release()
    await watcher
    await eventually(lambda: _assert_body(store, "live/seg0.ts", b"A" * 1000 + b"B" * 1000))


async def _assert_body(store: ContainerClient, path: str, expected: bytes) -> None:
    assert await store.get_bytes(path) == expected


async def test_put_post_delete_and_manifest_types(relay: Relay, store: ContainerClient) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{relay.url}/a/seg0.ts", data=b"x" * 100) as r:
            assert r.status == 204
        async with http.put(f"{relay.url}/a/index.m3u8", data=PLAYLIST) as r:
            assert r.status == 204
    await eventually(lambda: _assert_body(store, "a/index.m3u8", PLAYLIST))
    info = await store.describe_object("a/index.m3u8")
    assert info.content_type == "application/vnd.apple.mpegurl"
    assert (await store.describe_object("a/seg0.ts")).content_type == "video/MP2T"
    async with aiohttp.ClientSession() as http, http.delete(f"{relay.url}/a/old.ts") as r:
        assert r.status == 204
    outcomes = {(r.method, r.path, r.outcome) for r in relay.records}  # type: ignore[attr-defined]
    assert ("POST", "a/seg0.ts", "acknowledged") in outcomes
    assert ("PUT", "a/index.m3u8", "acknowledged") in outcomes
    assert ("DELETE", "a/old.ts", "delete scheduled") in outcomes


@pytest.mark.parametrize(
    ("request_line", "status", "reason"),
    [
        ("PUT /a/b%20c.ts", 400, "names may use only"),
        ("PUT /a//b.ts", 400, "empty segment"),
        ("GET /a/b.ts", 405, "use PUT, POST or DELETE"),
    ],
)
async def test_bad_requests_get_a_4xx_with_the_reason(
    relay: Relay, request_line: str, status: int, reason: str
) -> None:
    answer = await raw_exchange(
        relay, f"{request_line} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode()
    )
    assert answer.startswith(f"HTTP/1.1 {status}".encode()), answer
    assert reason.encode() in answer


async def test_too_large_and_unsized_bodies_are_refused(
    store: ContainerClient,
) -> None:
    async with LivePublisher(store) as publisher, Relay(publisher, streaming_limit=1000) as relay:
        answer = await raw_exchange(
            relay, b"PUT /a/big.ts HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n"
        )
        assert answer.startswith(b"HTTP/1.1 413"), answer
        assert b"the limit is 1,000" in answer
        async with aiohttp.ClientSession() as http:

            async def chunks() -> AsyncIterator[bytes]:
                for _ in range(5):
                    yield b"z" * 400

            async with http.put(f"{relay.url}/a/big2.ts", data=chunks()) as r:
                assert r.status == 413
                assert "passed the limit" in await r.text()
    with pytest.raises(ObjectNotFoundError):
        await store.describe_object("a/big2.ts")
    with pytest.raises(ObjectNotFoundError):
        await store.describe_object("a/big.ts")


async def test_secret_and_basic_auth(store: ContainerClient) -> None:
    async with (
        LivePublisher(store) as publisher,
        Relay(publisher, secret="s3cret", basic_auth=("enc", "pw")) as relay,
        aiohttp.ClientSession() as http,
    ):
        async with http.put(f"{relay.url}/a/x.ts", data=b"1") as r:
            assert r.status == 401
            assert "X-Relay-Secret" in await r.text()
            assert r.headers["WWW-Authenticate"].startswith("Basic")
        async with http.put(
            f"{relay.url}/a/x.ts", data=b"1", headers={"X-Relay-Secret": "wrong"}
        ) as r:
            assert r.status == 401
        async with http.put(
            f"{relay.url}/a/x.ts", data=b"1", headers={"X-Relay-Secret": "s3cret"}
        ) as r:
            assert r.status == 204
        async with http.put(
            f"{relay.url}/a/y.ts",
            data=b"2",
            headers={"Authorization": "basic " + base64.b64encode(b"enc:pw").decode()},
        ) as r:
            assert r.status == 204
    assert await store.get_bytes("a/x.ts") == b"1"
    assert await store.get_bytes("a/y.ts") == b"2"


async def test_remote_bind_needs_an_explicit_flag(store: ContainerClient) -> None:
    async with LivePublisher(store) as publisher:
        with pytest.raises(ValueError, match="allow_remote"):
            Relay(publisher, host="0.0.0.0")


async def test_cut_body_is_not_published_and_the_old_version_stays(
    relay: Relay, store: ContainerClient
) -> None:
    await store.put_object("a/seg.ts", b"old")
    head = b"PUT /a/seg.ts HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    await raw_exchange(relay, head + b"400\r\n" + b"n" * 1024 + b"\r\n200\r\n" + b"n" * 10,
                       read=False)
    head = b"PUT /a/man.m3u8 HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n"
    await raw_exchange(relay, head + b"#EXTM3U\n", read=False)

    async def cut_recorded() -> None:
        assert relay.stats.cut == 2

    await eventually(cut_recorded)
    await eventually(
        lambda: _assert_outcome(relay, "a/seg.ts", "failed"), within=10
    )
    assert await store.get_bytes("a/seg.ts") == b"old"
    with pytest.raises(ObjectNotFoundError):
        await store.describe_object("a/man.m3u8")


async def _assert_outcome(relay: Relay, path: str, outcome: str) -> None:
    records = [r for r in relay.records if r.path == path]  # type: ignore[attr-defined]
    assert records and records[-1].outcome == outcome, records


async def test_pipelined_requests_are_published_after_the_encoder_left(
    relay: Relay, store: ContainerClient
) -> None:
    """ffmpeg -http_persistent 1 sends its PUTs back to back and exits right after the
    final playlist, without reading the answers."""
    final = PLAYLIST + b"#EXT-X-ENDLIST\n"
    requests = (
        b"PUT /p/seg0.ts HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n"
        b"PUT /p/index.m3u8 HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
        % (len(PLAYLIST), PLAYLIST)
        + b"PUT /p/index.m3u8 HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
        % (len(final), final)
    )
    await raw_exchange(relay, requests, read=False)
    await eventually(lambda: _assert_body(store, "p/index.m3u8", final))
    assert await store.get_bytes("p/seg0.ts") == b"hello"


async def test_an_object_the_publisher_gives_up_is_read_to_its_end_and_answered_202(
    mediastore_server: LocalMediaStore, session: Session
) -> None:
    # The origin's STREAMING limit is below the relay's: the publisher gives the object up
    # mid-body; the encoder still gets an answer and its connection stays usable.
    small = session.container(mediastore_server.endpoint, streaming_limit=1000)
    async with (
        LivePublisher(small) as publisher,
        Relay(publisher) as relay,
        aiohttp.ClientSession() as http,
    ):

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield b"q" * 500
                await asyncio.sleep(0.05)

        async with http.put(f"{relay.url}/g/seg.ts", data=chunks()) as r:
            assert r.status == 202
            assert "gave this object up" in await r.text()
        async with http.put(f"{relay.url}/g/next.ts", data=b"ok") as r:
            assert r.status == 204
        assert relay.stats.bytes_in >= 1000
    with pytest.raises(ObjectNotFoundError):
        await small.describe_object("g/seg.ts")
    assert await small.get_bytes("g/next.ts") == b"ok"


async def test_basic_header_is_compared_exactly(store: ContainerClient) -> None:
    async with (
        LivePublisher(store) as publisher,
        Relay(publisher, basic_auth=("u", "p")) as relay,
        aiohttp.ClientSession() as http,
    ):
        wrong = "Basic " + base64.b64encode(b"u:q").decode()
        async with http.delete(f"{relay.url}/a/x.ts", headers={"Authorization": wrong}) as r:
            assert r.status == 401
        assert relay.stats.rejected == 1


async def test_a_stalled_body_is_cut_after_the_idle_timeout(store: ContainerClient) -> None:
    async with LivePublisher(store) as publisher, Relay(publisher, idle_timeout=0.5) as relay:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        try:
            writer.write(
                b"PUT /s/stall.ts HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"4\r\nabcd\r\n"
            )
            await writer.drain()
            # The relay closes the connection: the read ends without an answer.
            assert await asyncio.wait_for(reader.read(), 10) == b""
        finally:
            writer.close()
            await writer.wait_closed()
        assert relay.stats.cut == 1
    with pytest.raises(ObjectNotFoundError):
        await store.describe_object("s/stall.ts")


@pytest.mark.parametrize("chunked", [False, True])
async def test_curl_upload_with_expect_100_continue(
    relay: Relay, store: ContainerClient, tmp_path: Path, chunked: bool
) -> None:
    """curl sends ``Expect: 100-continue`` for large bodies and waits for the interim
    answer; it gets it, and its PUT is published."""
    source = tmp_path / "seg.ts"
    data = bytes(range(256)) * 8192  # 2 MiB
    source.write_bytes(data)
    extra = ["-H", "Transfer-Encoding: chunked"] if chunked else []
    process = await asyncio.create_subprocess_exec(
        "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--expect100-timeout", "10",
        "-H", "Expect: 100-continue", *extra, "-T", str(source),
        f"{relay.url}/c/seg{int(chunked)}.ts",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    started = asyncio.get_running_loop().time()
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err
    assert out == b"204"
    # Without the interim 100 curl would wait its whole 10 s expect timeout first.
    assert asyncio.get_running_loop().time() - started < 8
    await eventually(lambda: _assert_body(store, f"c/seg{int(chunked)}.ts", data))


class _Tap:
    """A publisher that records the chunks the relay hands over, then passes them on."""

    def __init__(self, inner: LivePublisher) -> None:
        self.inner = inner
        self.chunks: list[bytes] = []

    async def publish(self, path: str, body: object, **options: object) -> object:
        if isinstance(body, (bytes, bytearray)):
            return await self.inner.publish(path, body, **options)  # type: ignore[arg-type]

        async def tap() -> AsyncIterator[bytes]:
            async for chunk in body:  # type: ignore[attr-defined]
                self.chunks.append(chunk)
                yield chunk

        return await self.inner.publish(path, tap(), **options)  # type: ignore[arg-type]

    async def delete(self, path: str) -> None:
        await self.inner.delete(path)


async def test_pieces_that_arrive_together_are_handed_over_as_one_chunk(
    store: ContainerClient,
) -> None:
    # ffmpeg sends a segment as 32 KiB chunked-encoding pieces; each chunk handed to the
    # publisher costs it an upload write, so what one read brought is handed over joined.
    pieces = [bytes([65 + i]) * 1000 for i in range(20)]
    request = b"PUT /j/seg0.ts HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    request += b"".join(b"3e8\r\n" + piece + b"\r\n" for piece in pieces) + b"0\r\n\r\n"
    async with LivePublisher(store, close_timeout=5) as publisher:
        tap = _Tap(publisher)
        async with Relay(tap, drain_timeout=10) as relay:  # type: ignore[arg-type]
            answer = await raw_exchange(relay, request)
            assert answer.startswith(b"HTTP/1.1 204"), answer
            await eventually(lambda: _assert_body(store, "j/seg0.ts", b"".join(pieces)))
    assert b"".join(tap.chunks) == b"".join(pieces)
    assert all(type(chunk) is bytes for chunk in tap.chunks)
    assert len(tap.chunks) < len(pieces), [len(c) for c in tap.chunks]
