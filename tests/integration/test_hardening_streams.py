"""Streams and errors say what they hold: object_size vs content_length, a closed stream
raises, get_bytes never returns more than the range, error bodies that are not MediaStore's
are kept, a 404 to a PUT is not "object not found"."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager

import anyio
import pytest
from scripted_server import Connection, ScriptedServer, response_head, scripted_server

from msd_async import (
    ContainerClient,
    InvalidParameterError,
    MediaStoreError,
    ObjectNotFoundError,
    ProtocolError,
    RangeNotSatisfiableError,
    ServerError,
    ServiceError,
    Session,
    StreamClosedError,
)
from msd_async.rules import ByteRange

pytestmark = pytest.mark.anyio

SIZE = 5000
BODY = random.Random(9).randbytes(SIZE)


@pytest.fixture
async def store(mediastore_client: ContainerClient) -> ContainerClient:
    await mediastore_client.put_object("vod/obj.bin", BODY)
    return mediastore_client


# --- item 9: the object's total size ---------------------------------------------------


@pytest.mark.parametrize(
    ("byte_range", "length"),
    [(None, SIZE), ((10, 19), 10), ((SIZE - 7, None), 7), ((None, 3), 3), ("bytes=0-0", 1)],
)
async def test_object_size_is_the_whole_object_content_length_this_response(
    store: ContainerClient, byte_range: ByteRange | None, length: int
) -> None:
    async with store.get_object("vod/obj.bin", range=byte_range) as obj:
        assert obj.object_size == SIZE
        assert obj.content_length == length
        assert len(await obj.read()) == length
        assert "object_size=5000" in repr(obj)


async def test_object_size_is_unknown_while_a_streaming_upload_is_in_progress(
    store: ContainerClient,
) -> None:
    release = anyio.Event()

    async def encoder() -> AsyncIterator[bytes]:
        yield BODY[:1000]
        await release.wait()
        yield BODY[1000:]

    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: store.put_object("live/seg.ts", encoder(), streaming=True))
        with anyio.fail_after(10):
            while True:
                try:
                    info = await store.describe_object("live/seg.ts")
                    break
                except ObjectNotFoundError:
                    await anyio.sleep(0.01)
        assert info.content_length is None
        async with store.get_object("live/seg.ts") as obj:
            assert obj.status == 200
            assert obj.object_size is None and obj.content_length is None
            release.set()
            assert await obj.read() == BODY


async def test_range_not_satisfiable_carries_the_object_size(store: ContainerClient) -> None:
    with pytest.raises(RangeNotSatisfiableError) as caught:
        async with store.get_object("vod/obj.bin", range=(SIZE + 10, None)):
            pass
    assert caught.value.object_size == SIZE
    assert caught.value.headers["Content-Range"] == f"bytes */{SIZE}"


# --- item 8: a stream used after its block ----------------------------------------------


async def test_a_stream_read_after_its_block_raises(store: ContainerClient) -> None:
    async with store.get_object("vod/obj.bin") as obj:
        first = await obj.receive()
    assert first
    with pytest.raises(StreamClosedError, match="async with"):
        await obj.read()
    with pytest.raises(StreamClosedError):
        async for _ in obj:
            pass
    with pytest.raises(StreamClosedError):
        await obj.receive()
    assert isinstance(StreamClosedError("x"), MediaStoreError)


async def test_a_stream_read_to_the_end_then_after_its_block_raises(
    store: ContainerClient,
) -> None:
    async with store.get_object("vod/obj.bin") as obj:
        assert await obj.read() == BODY
        assert await obj.read() == b""  # inside the block: the end of the body
    with pytest.raises(StreamClosedError):
        await obj.read()


# --- item 12 (part): iter_chunks(0) ------------------------------------------------------


@pytest.mark.parametrize("size", [0, -5, 1.5, True])
async def test_iter_chunks_refuses_a_bad_size_at_once(store: ContainerClient, size: object) -> None:
    async with store.get_object("vod/obj.bin") as obj:
        with pytest.raises(InvalidParameterError) as caught:
            obj.iter_chunks(size)  # type: ignore[arg-type]
        assert caught.value.rule == "chunk-size.range"
        chunks = [c async for c in obj.iter_chunks(1024)]
    assert b"".join(chunks) == BODY and len(chunks[0]) == 1024


# --- item 7: get_bytes never returns more than asked --------------------------------------


def _always(
    status: int, body: bytes, headers: dict[str, str] | None = None
) -> AbstractAsyncContextManager[ScriptedServer]:
    """Answers every request with ``status``, ``body`` (its length declared), an ETag and
    ``headers``."""

    async def handler(conn: Connection) -> None:
        while await conn.read_request() is not None:
            head = response_head(
                status, {"Content-Length": len(body), "ETag": "e" * 32, **(headers or {})}
            )
            await conn.send(head + body)

    return scripted_server(handler)


def _whole_body_server(body: bytes) -> AbstractAsyncContextManager[ScriptedServer]:
    """Answers every GET (ranged or not) with 200 and the whole body, like a proxy without
    range support or the service on an in-progress STREAMING object."""
    return _always(200, body)


@pytest.mark.parametrize(
    ("byte_range", "expected"),
    [
        ((10, 19), BODY[10:20]),
        ((0, 0), BODY[:1]),
        ((SIZE - 5, SIZE + 100), BODY[SIZE - 5 :]),
        ((100, None), BODY[100:]),
        ((None, 7), BODY[-7:]),
        ((None, SIZE + 7), BODY),
        ("bytes=4000-4099", BODY[4000:4100]),
        ("bytes=-1", BODY[-1:]),
    ],
)
async def test_get_bytes_slices_a_whole_body_answer_to_the_range(
    session: Session, byte_range: ByteRange, expected: bytes
) -> None:
    async with _whole_body_server(BODY) as server:
        got = await session.container(server.endpoint).get_bytes("a.ts", range=byte_range)
    assert got == expected
    assert session.pool.in_use == 0


async def test_get_bytes_past_the_end_of_a_whole_body_answer_is_416(session: Session) -> None:
    async with _whole_body_server(BODY) as server:
        with pytest.raises(RangeNotSatisfiableError) as caught:
            await session.container(server.endpoint).get_bytes("a.ts", range=(SIZE, None))
    assert caught.value.object_size == SIZE
    assert session.pool.in_use == 0


async def test_get_bytes_range_on_an_in_progress_streaming_object(
    store: ContainerClient,
) -> None:
    """The local server, like the service, ignores Range on an in-progress STREAMING
    object. An absolute window returns as soon as its bytes are in, before the upload ends;
    a suffix waits for the end."""
    release = anyio.Event()

    async def encoder() -> AsyncIterator[bytes]:
        yield BODY[:1000]
        await release.wait()
        yield BODY[1000:]

    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: store.put_object("live/seg.ts", encoder(), streaming=True))
        with anyio.fail_after(10):
            while True:
                try:
                    await store.describe_object("live/seg.ts")
                    break
                except ObjectNotFoundError:
                    await anyio.sleep(0.01)
            window = await store.get_bytes("live/seg.ts", range=(100, 199))
        assert window == BODY[100:200]
        assert not release.is_set()  # returned while the upload was still going

        suffix: list[bytes] = []

        async def get_suffix() -> None:
            suffix.append(await store.get_bytes("live/seg.ts", range=(None, 50)))

        tg.start_soon(get_suffix)
        await anyio.sleep(0.05)
        release.set()
    assert suffix == [BODY[-50:]]


# --- item 11: error bodies that are not MediaStore's --------------------------------------


HTML_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    + b"<!-- padding -->" * 200
    + b"</body>\r\n</html>\r\n"
)


def _error_server(
    status: int, reason: str, body: bytes, content_type: str
) -> AbstractAsyncContextManager[ScriptedServer]:
    async def handler(conn: Connection) -> None:
        while (request := await conn.read_request()) is not None:
            headers = {"Content-Length": len(body), "Content-Type": content_type,
                       "Server": "nginx"}
            payload = b"" if request.method == "HEAD" else body
            await conn.send(response_head(status, headers, reason=reason) + payload)

    return scripted_server(handler)


async def test_an_html_502_keeps_its_body_and_headers(session: Session) -> None:
    async with _error_server(502, "Bad Gateway", HTML_502, "text/html") as server:
        client = session.container(server.endpoint)
        with pytest.raises(ServerError) as caught:
            await client.get_bytes("a.ts")
    exc = caught.value
    assert exc.status == 502
    assert "502 Bad Gateway" in str(exc) and "nginx" in str(exc)
    assert "text/html" in str(exc)
    assert "\r" not in str(exc) and "\n" not in str(exc)
    assert len(str(exc)) < 1300  # the first ~1 KB, not the whole page
    assert exc.body == HTML_502[:1024]
    assert exc.headers["Server"] == "nginx"
    assert exc.headers["Content-Type"] == "text/html"


async def test_a_404_to_a_put_without_a_code_is_not_object_not_found(session: Session) -> None:
    async with _error_server(404, "Not Found", b"<h1>Not Found</h1>", "text/html") as server:
        client = session.container(server.endpoint)
        with pytest.raises(ServiceError) as caught:
            await client.put_object("a.ts", b"data")
        assert not isinstance(caught.value, ObjectNotFoundError)
        assert caught.value.status == 404
        assert "endpoint" in str(caught.value)
        # A GET of an object answered 404 without a code is still "object not found".
        with pytest.raises(ObjectNotFoundError):
            await client.get_bytes("a.ts")


# --- a whole object answered with a part of it ----------------------------------------------


@pytest.mark.parametrize("content_range", ["bytes 0-9/5000", "bytes 100-109/5000", "bytes 0-9/*"])
async def test_a_whole_object_answered_with_a_part_raises_protocol_error(
    session: Session, content_range: str
) -> None:
    # A cache in between holding only a part may answer so.
    async with _always(206, BODY[:10], {"Content-Range": content_range}) as server:
        client = session.container(server.endpoint)
        with pytest.raises(ProtocolError, match="206") as caught:
            await client.get_bytes("a.ts")
        assert content_range in str(caught.value)
        with pytest.raises(ProtocolError, match="206"):
            async with client.get_object("a.ts"):
                pass
    assert session.pool.in_use == 0


# --- a body the server encoded though identity was asked for --------------------------------


@pytest.mark.parametrize("encoding", ["gzip", "br", "gzip, identity"])
async def test_an_encoded_body_is_not_taken_for_the_object(
    session: Session, encoding: str
) -> None:
    """msd_async asks for identity (it hands bodies over undecoded): a compressed body
    would be stored or served as the object's bytes, silently wrong."""
    import gzip

    # A proxy that compresses what it forwards, whatever the Accept-Encoding.
    async with _always(200, gzip.compress(BODY), {"Content-Encoding": encoding}) as server:
        client = session.container(server.endpoint)
        with pytest.raises(ProtocolError, match="Content-Encoding") as caught:
            await client.get_bytes("a.ts")
        assert encoding in str(caught.value)
    assert session.pool.in_use == 0


async def test_an_identity_encoding_is_the_object(session: Session) -> None:
    async with _always(200, BODY, {"Content-Encoding": "identity"}) as server:
        assert await session.container(server.endpoint).get_bytes("a.ts") == BODY
