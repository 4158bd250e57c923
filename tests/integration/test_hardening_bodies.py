"""Upload bodies mean what aiohttp, httpx and botocore mean: a str is content (UTF-8), a
path is os.PathLike, and any iterable of bytes (a plain generator) is uploaded."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO

import aiohttp.http_writer
import anyio
import pytest
from scripted_server import Connection, response, scripted_server

from msd_async import ClientValidationError, ContainerClient, Credentials, Session
from msd_async.testing import LocalMediaStore

pytestmark = pytest.mark.anyio

PLAYLIST = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nseg_1.ts\n"


async def test_a_str_body_is_uploaded_as_its_utf8_text(
    mediastore_client: ContainerClient,
) -> None:
    result = await mediastore_client.put_object(
        "live/index.m3u8", PLAYLIST, content_type="application/vnd.apple.mpegurl"
    )
    assert result.size == len(PLAYLIST.encode())
    assert await mediastore_client.get_bytes("live/index.m3u8") == PLAYLIST.encode()


async def test_a_non_ascii_str_body_is_utf8(mediastore_client: ContainerClient) -> None:
    text = "titre: élan — 日本語 ✓"
    result = await mediastore_client.put_object("meta/title.txt", text)
    assert result.size == len(text.encode("utf-8"))
    assert (await mediastore_client.get_bytes("meta/title.txt")).decode("utf-8") == text


async def test_a_str_naming_an_existing_file_is_still_text(
    mediastore_client: ContainerClient, tmp_path: Path
) -> None:
    source = tmp_path / "segment.ts"
    source.write_bytes(b"\x47" * 1880)
    await mediastore_client.put_object("a/b.txt", str(source))
    assert await mediastore_client.get_bytes("a/b.txt") == str(source).encode()


async def test_a_path_body_uploads_the_file(
    mediastore_client: ContainerClient, tmp_path: Path
) -> None:
    source = tmp_path / "segment.ts"
    source.write_bytes(b"\x47" * 1880)
    result = await mediastore_client.put_object("a/seg.ts", source)
    assert result.size == 1880
    assert await mediastore_client.get_bytes("a/seg.ts") == b"\x47" * 1880


async def test_a_missing_path_is_a_typed_error(
    mediastore_client: ContainerClient, tmp_path: Path
) -> None:
    with pytest.raises(ClientValidationError) as caught:
        await mediastore_client.put_object("a/x.ts", tmp_path / "missing.ts")
    assert caught.value.rule == "body.file"


@pytest.mark.parametrize("streaming", [False, True])
async def test_a_plain_generator_of_bytes_is_uploaded(
    mediastore_client: ContainerClient, streaming: bool
) -> None:
    closed: list[bool] = []

    def segments() -> Iterator[bytes]:
        try:
            for i in range(5):
                yield bytes([i]) * 1000
        finally:
            closed.append(True)

    result = await mediastore_client.put_object("gen/seg.ts", segments(), streaming=streaming)
    assert result.size == 5000
    assert await mediastore_client.get_bytes("gen/seg.ts") == b"".join(
        bytes([i]) * 1000 for i in range(5)
    )
    assert closed == [True]


async def test_other_iterables_of_bytes_are_uploaded(mediastore_client: ContainerClient) -> None:
    parts = [b"ab", bytearray(b"cd"), memoryview(b"ef")]
    await mediastore_client.put_object("it/map.bin", map(bytes, parts))
    await mediastore_client.put_object("it/iter.bin", iter(parts))
    assert await mediastore_client.get_bytes("it/map.bin") == b"abcdef"
    assert await mediastore_client.get_bytes("it/iter.bin") == b"abcdef"


async def test_a_generator_of_str_is_a_typed_error(
    mediastore_server: LocalMediaStore, mediastore_client: ContainerClient
) -> None:
    with pytest.raises(ClientValidationError) as caught:
        await mediastore_client.put_object("gen/bad.ts", (s for s in ["a", "b"]))
    assert caught.value.rule == "body.chunk-type"
    assert mediastore_server.store.get("gen/bad.ts") is None


async def test_a_set_is_not_a_body(mediastore_client: ContainerClient) -> None:
    with pytest.raises(ClientValidationError) as caught:
        await mediastore_client.put_object("x.bin", {b"a", b"b"})  # type: ignore[arg-type]
    assert caught.value.rule == "body.type"


# --- a strided memoryview is not one buffer (found by tests/reliability/test_session_stateful.py)


def _strided(data: bytes) -> memoryview:
    """A view whose bytes are ``data`` but not adjacent in memory (every other byte)."""
    backing = bytearray(2 * len(data))
    backing[::2] = data
    return memoryview(backing)[::2]


async def _strided_chunks(data: bytes) -> AsyncIterator[memoryview]:
    yield memoryview(data[:3])
    yield _strided(data[3:])


@pytest.mark.parametrize("size", [1280, 2 * 1024 * 1024 + 7])
@pytest.mark.parametrize(
    ("form", "rule"),
    [
        ("whole", "body.type"),
        ("list", "body.type"),
        ("async-chunk", "body.chunk-type"),
    ],
)
async def test_a_non_contiguous_memoryview_is_refused_before_it_is_sent(
    mediastore_server: LocalMediaStore, mediastore_client: ContainerClient, size: int,
    form: str, rule: str,
) -> None:
    # Its bytes cannot go to the socket as they are: it used to fail inside aiohttp with
    # a ConnectionLostError ("expected a bytes-like object"), retried as a network
    # failure, or sometimes went through. botocore refuses memoryviews outright; a
    # contiguous one is uploaded (tests/integration/test_uploads.py), a strided one is a
    # validation error, as for any other body that is not bytes-like.
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    await mediastore_client.put_object("s/v.bin", b"previous")
    body: object = {
        "whole": lambda: _strided(data),
        "list": lambda: [b"ab", _strided(data)],
        "async-chunk": lambda: _strided_chunks(data),
    }[form]()
    with pytest.raises(ClientValidationError) as caught:
        await mediastore_client.put_object("s/v.bin", body)  # type: ignore[arg-type]
    assert caught.value.rule == rule
    assert "contiguous" in str(caught.value)
    assert caught.value.attempts <= 1  # not retried
    assert await mediastore_client.get_bytes("s/v.bin") == b"previous"


# --- a file that changes size while it is read (issue 17, item 9) ------------------------

MiB = 1024 * 1024


def _change_after_first_chunk(source: Path, change: str) -> object:
    """A progress callback that makes ``source`` grow or shrink once the first 1 MiB
    chunk went out, while the rest is still to be read."""
    done = False

    def progress(sent: int) -> None:
        nonlocal done
        if done:
            return
        done = True
        if change == "grows":
            with source.open("ab") as f:
                f.write(b"late bytes")
        else:
            with source.open("r+b") as f:
                f.truncate(MiB + MiB // 2)

    return progress


@pytest.mark.parametrize("change", ["grows", "shrinks"])
@pytest.mark.parametrize("kind", ["path", "file object"])
async def test_a_file_that_changes_size_during_the_upload_is_an_error_and_nothing_is_stored(
    mediastore_client: ContainerClient,
    mediastore_server: LocalMediaStore,
    tmp_path: Path,
    change: str,
    kind: str,
) -> None:
    source = tmp_path / "growing.ts"
    source.write_bytes(b"\x47" * (3 * MiB))
    progress = _change_after_first_chunk(source, change)
    with source.open("rb") as fileobj:
        body = source if kind == "path" else fileobj
        with pytest.raises(ClientValidationError) as caught:
            await mediastore_client.put_object(
                "vod/growing.ts", body, progress=progress  # type: ignore[arg-type]
            )
    assert caught.value.rule == "body.changed"
    assert ("grew" if change == "grows" else "shrank") in str(caught.value)
    assert "nothing was stored" in str(caught.value)
    # The connection was reset before the last byte the size promised: nothing stored,
    # neither the first 3 MiB of a longer file nor a shorter one.
    assert mediastore_server.store.get("vod/growing.ts") is None
    assert mediastore_client.session.pool.in_use == 0


# --- bodies that cannot be bytes are refused before anything is sent ---------------------


async def test_a_file_opened_in_text_mode_is_refused_before_sending(
    mediastore_client: ContainerClient,
    tmp_path: Path,
    server_requests: list[logging.LogRecord],
) -> None:
    """It was sent with the size of its text, and its first read (a str) failed mid-request
    with "upload chunks must be bytes-like, not str", which did not say to open it "rb"."""
    source = tmp_path / "index.m3u8"
    source.write_text(PLAYLIST)
    with source.open() as text, pytest.raises(ClientValidationError) as caught:
        await mediastore_client.put_object("live/index.m3u8", text)  # type: ignore[arg-type]
    assert caught.value.rule == "body.type"
    assert "'rb'" in str(caught.value)
    assert server_requests == []


@pytest.mark.parametrize("kind", ["file", "BytesIO"])
async def test_a_closed_file_is_refused_before_sending(
    mediastore_client: ContainerClient,
    tmp_path: Path,
    server_requests: list[logging.LogRecord],
    kind: str,
) -> None:
    """A closed file passed for non-seekable, was sent chunked, and its first read raised
    a bare ValueError ("I/O operation on closed file") in the middle of the request."""
    source = tmp_path / "seg.ts"
    source.write_bytes(b"\x47" * 188)
    fileobj: IO[bytes] = source.open("rb") if kind == "file" else io.BytesIO(b"\x47" * 188)
    fileobj.close()
    with pytest.raises(ClientValidationError) as caught:
        await mediastore_client.put_object("a/seg.ts", fileobj)
    assert caught.value.rule == "body.file"
    assert "closed" in str(caught.value)
    assert server_requests == []


@pytest.mark.parametrize(
    "chunks", [["#EXTM3U\n", "seg.ts\n"], [b"ok", 7], list(b"ab")], ids=["str", "int", "ints"]
)
async def test_a_list_of_chunks_that_are_not_bytes_is_a_typed_error(
    mediastore_client: ContainerClient,
    server_requests: list[logging.LogRecord],
    chunks: list[object],
) -> None:
    """A list of str (or of ints: ``list(b"ab")``) raised memoryview's bare TypeError."""
    with pytest.raises(ClientValidationError) as caught:
        await mediastore_client.put_object("a/list.bin", chunks)  # type: ignore[arg-type]
    assert caught.value.rule == "body.type"
    assert "chunk 1" in str(caught.value) or "chunk 0" in str(caught.value)
    assert server_requests == []


# --- a producer that refills one buffer ------------------------------------------------------

_PIECE = 64 * 1024
_PIECES = 140  # ~9 MB: more than loopback's socket buffers hold while the peer waits


async def test_a_producer_that_refills_its_buffer_uploads_what_it_yielded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A common producer refills one bytearray and yields it (or a view of it) again. The
    chunk was handed to the transport as it was; what the socket had not taken yet stayed
    queued by reference (asyncio on Python 3.12+, uvloop), so the origin got the refilled
    bytes in place of those yielded. aiohttp takes the transport's writelines path on
    Python 3.12.9+ and 3.13.2+; SKIP_WRITELINES is turned off so every Python takes it."""
    monkeypatch.setattr(aiohttp.http_writer, "SKIP_WRITELINES", False)
    received: list[bytes] = []

    async def slow_origin(conn: Connection) -> None:
        request = await conn.read_request(body=False)
        assert request is not None
        await asyncio.sleep(0.2)  # the client's socket buffers fill, its transport queues
        body = await conn.read_body(request)
        received.append(body)
        answer = {"ContentSHA256": hashlib.sha256(body).hexdigest(), "ETag": "e"}
        await conn.send(response(200, json.dumps(answer).encode()))

    async def producer() -> AsyncIterator[bytes | bytearray | memoryview]:
        buffer = bytearray(_PIECE)
        for n in range(_PIECES):
            buffer[:] = bytes([n % 251]) * _PIECE
            yield memoryview(buffer) if n % 2 else buffer

    async with scripted_server(slow_origin, receive_buffer=4096) as server, Session(
        credentials=Credentials("AKIDEXAMPLE", "secret"), region="us-east-1"
    ) as session:
        with anyio.fail_after(30):
            result = await session.container(server.endpoint).put_object(
                "reuse/seg.ts", producer(), streaming=True, verify=True
            )
    (body,) = received
    wrong = [n for n in range(_PIECES) if body[n * _PIECE : (n + 1) * _PIECE] != bytes(
        [n % 251]) * _PIECE]
    assert len(body) == _PIECE * _PIECES and not wrong, f"pieces sent wrong: {wrong}"
    assert result.content_sha256 == hashlib.sha256(body).hexdigest()
