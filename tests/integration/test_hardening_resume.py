"""Downloads never deliver wrong bytes: resumes land only on the same bytes, bodies never
run past what the response declared, ranges are honoured or sliced, closed streams raise.

The peers are scripted raw HTTP servers (tests/support/scripted_server.py): a proxy that
ignores Range, a resumed answer that starts elsewhere or has another total, a body longer
than declared. The local MediaStore never produces these.
"""

from __future__ import annotations

import random
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
from scripted_server import Connection, ScriptedServer, response_head, scripted_server

from msd_async import (
    ContainerClient,
    ObjectChangedError,
    ProtocolError,
    Session,
)

pytestmark = pytest.mark.anyio

SIZE = 200_000
BODY = random.Random(6).randbytes(SIZE)
HALF = SIZE // 2
ETAG = "0123456789abcdef0123456789abcdef"


def _headers(length: int | None, **extra: str | int) -> dict[str, str | int]:
    headers: dict[str, str | int] = {"ETag": ETAG, "Content-Type": "video/mp4"}
    if length is not None:
        headers["Content-Length"] = length
    headers.update({k.replace("_", "-"): v for k, v in extra.items()})
    return headers


async def _cut_first_half(conn: Connection) -> None:
    """The first GET: a 200 with the whole length declared, cut after half the body."""
    await conn.read_request()
    await conn.send(response_head(200, _headers(SIZE)) + BODY[:HALF])
    conn.abort()


def _scripted(resume_answer: bytes) -> AbstractAsyncContextManager[ScriptedServer]:
    """Connection 1 is cut mid-body; every later connection answers ``resume_answer``."""

    async def handler(conn: Connection) -> None:
        if conn.index == 0:
            await _cut_first_half(conn)
            return
        if await conn.read_request() is None:
            return
        await conn.send(resume_answer)

    return scripted_server(handler)


async def _collect(client: ContainerClient) -> tuple[bytes, BaseException | None]:
    """What ``async for`` delivered before the stream raised (and what it raised)."""
    got = bytearray()
    try:
        async with client.get_object("vod/a.mp4", max_resumes=2) as obj:
            async for chunk in obj:
                got += chunk
    except Exception as exc:
        return bytes(got), exc
    return bytes(got), None


@pytest.mark.parametrize(
    ("why", "answer", "error"),
    [
        (
            "proxy ignores Range: 200 and the whole body",
            response_head(200, _headers(SIZE)) + BODY,
            ProtocolError,
        ),
        (
            "206 starting at 0 instead of the offset",
            response_head(206, _headers(
                SIZE, Content_Range=f"bytes 0-{SIZE - 1}/{SIZE}")) + BODY,
            ProtocolError,
        ),
        (
            "206 starting past the offset",
            response_head(206, _headers(
                SIZE - HALF - 10, Content_Range=f"bytes {HALF + 10}-{SIZE - 1}/{SIZE}"))
            + BODY[HALF + 10:],
            ProtocolError,
        ),
        (
            "206 without Content-Range",
            response_head(206, _headers(SIZE - HALF)) + BODY[HALF:],
            ProtocolError,
        ),
        (
            "206 at the offset but another total length",
            response_head(206, _headers(
                SIZE - HALF, Content_Range=f"bytes {HALF}-{SIZE - 1}/{SIZE + 5}"))
            + BODY[HALF:],
            ObjectChangedError,
        ),
        (
            "206 whose Content-Length disagrees with its Content-Range",
            response_head(206, _headers(
                SIZE, Content_Range=f"bytes {HALF}-{SIZE - 1}/{SIZE}")) + BODY,
            ProtocolError,
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
async def test_a_resume_onto_other_bytes_raises_before_delivering_them(
    session: Session, why: str, answer: bytes, error: type[Exception]
) -> None:
    async with _scripted(answer) as server:
        got, exc = await _collect(session.container(server.endpoint))
    assert isinstance(exc, error), (why, exc)
    # Not one duplicated or shifted byte: what was delivered is a prefix of the object.
    assert got == BODY[: len(got)]
    assert len(got) <= HALF
    assert server.requests[1].headers["range"] == f"bytes={HALF}-{SIZE - 1}"
    assert session.pool.in_use == 0


async def test_write_to_never_writes_duplicated_bytes(session: Session, tmp_path: Path) -> None:
    answer = response_head(200, _headers(SIZE)) + BODY
    target = tmp_path / "out.mp4"
    async with _scripted(answer) as server:
        client = session.container(server.endpoint)
        with pytest.raises(ProtocolError, match="Range"):
            async with client.get_object("vod/a.mp4") as obj:
                await obj.write_to(target)
    written = target.read_bytes()
    assert written == BODY[: len(written)] and len(written) <= HALF
    assert session.pool.in_use == 0


async def test_a_resume_at_the_offset_with_the_same_total_completes(session: Session) -> None:
    answer = response_head(206, _headers(
        SIZE - HALF, Content_Range=f"bytes {HALF}-{SIZE - 1}/{SIZE}")) + BODY[HALF:]
    async with _scripted(answer) as server:
        got, exc = await _collect(session.container(server.endpoint))
    assert exc is None
    assert got == BODY


async def test_a_resume_with_another_etag_is_object_changed(session: Session) -> None:
    headers = _headers(SIZE - HALF, Content_Range=f"bytes {HALF}-{SIZE - 1}/{SIZE}")
    headers["ETag"] = "f" * 32
    answer = response_head(206, headers) + BODY[HALF:]
    async with _scripted(answer) as server:
        got, exc = await _collect(session.container(server.endpoint))
    assert isinstance(exc, ObjectChangedError)
    assert exc.actual_etag == "f" * 32
    assert got == BODY[: len(got)]


def _chunked(data: bytes, size: int = 4096) -> bytes:
    out = bytearray()
    for i in range(0, len(data), size):
        part = data[i : i + size]
        out += f"{len(part):x}\r\n".encode() + part + b"\r\n"
    return bytes(out + b"0\r\n\r\n")


async def test_a_body_longer_than_its_content_range_raises_at_once(session: Session) -> None:
    """A chunked 206 declares bytes 0-9999 but sends twice that: the stream raises as soon
    as the extra bytes arrive and never delivers them."""
    declared = 10_000

    async def handler(conn: Connection) -> None:
        await conn.read_request()
        head = response_head(206, _headers(
            None, Content_Range=f"bytes 0-{declared - 1}/{SIZE}", Transfer_Encoding="chunked"))
        await conn.send(head + _chunked(BODY[: 2 * declared]))

    async with scripted_server(handler) as server:
        client = session.container(server.endpoint)
        got = bytearray()
        with pytest.raises(ProtocolError, match="more"):
            async with client.get_object("vod/a.mp4", range=(0, declared - 1)) as obj:
                async for chunk in obj:
                    got += chunk
    assert len(got) <= declared
    assert bytes(got) == BODY[: len(got)]
    assert session.pool.in_use == 0


async def test_a_chunked_200_without_a_length_delivers_every_byte(
    session: Session,
) -> None:
    """Positive control for the length check: with no length declared at all (what an
    in-progress STREAMING object looks like) every byte is delivered."""
    declared = 10_000

    async def handler(conn: Connection) -> None:
        await conn.read_request()
        head = response_head(200, {"ETag": ETAG, "Transfer-Encoding": "chunked",
                                         "X-Declared-Length": declared})
        await conn.send(head + _chunked(BODY[: 2 * declared]))

    async with scripted_server(handler) as server:
        client = session.container(server.endpoint)
        async with client.get_object("vod/a.mp4") as obj:
            assert obj.content_length is None and obj.object_size is None
            data = await obj.read()
    assert data == BODY[: 2 * declared]


async def test_a_first_answer_whose_lengths_disagree_is_refused(session: Session) -> None:
    async def handler(conn: Connection) -> None:
        await conn.read_request()
        head = response_head(206, _headers(
            20, Content_Range=f"bytes 0-9/{SIZE}"))
        await conn.send(head + BODY[:20])

    async with scripted_server(handler) as server:
        client = session.container(server.endpoint)
        with pytest.raises(ProtocolError, match="Content-Length"):
            async with client.get_object("vod/a.mp4", range=(0, 9)):
                pass
    assert session.pool.in_use == 0


@pytest.mark.parametrize(
    ("asked", "content_range"),
    [
        ((100, 199), "bytes 0-99/{SIZE}"),  # starts elsewhere
        ((100, 199), "bytes 100-149/{SIZE}"),  # ends before the end asked (not clamped)
        ((None, 50), "bytes 0-49/{SIZE}"),  # a suffix answered with the head
        ((SIZE - 10, None), "bytes 0-9/{SIZE}"),  # open-ended answered with the head
        ((100, 199), None),  # a 206 without Content-Range
    ],
)
async def test_a_first_206_with_other_bytes_than_asked_is_refused(
    session: Session, asked: tuple[int | None, int | None], content_range: str | None
) -> None:
    async def handler(conn: Connection) -> None:
        await conn.read_request()
        extra = {} if content_range is None else {
            "Content_Range": content_range.format(SIZE=SIZE)}
        first, last = (0, 99) if content_range is None else map(
            int, content_range.split(" ")[1].split("/")[0].split("-"))
        head = response_head(206, _headers(last - first + 1, **extra))
        await conn.send(head + BODY[first : last + 1])

    async with scripted_server(handler) as server:
        client = session.container(server.endpoint)
        got = bytearray()
        with pytest.raises(ProtocolError, match="other bytes than asked"):
            async with client.get_object("vod/a.mp4", range=asked) as obj:
                async for chunk in obj:
                    got += chunk
    assert got == b""
    assert session.pool.in_use == 0


@pytest.mark.parametrize(
    ("asked", "content_range"),
    [
        ((100, 199), "bytes 100-199/{SIZE}"),
        ((SIZE - 10, SIZE + 500), "bytes {SIZE_10}-{SIZE_1}/{SIZE}"),  # clamped to the end
        ((None, 10), "bytes {SIZE_10}-{SIZE_1}/{SIZE}"),
        ((SIZE - 10, None), "bytes {SIZE_10}-{SIZE_1}/{SIZE}"),
        ((100, 199), "bytes 100-199/*"),
    ],
)
async def test_a_first_206_with_the_bytes_asked_is_accepted(
    session: Session, asked: tuple[int | None, int | None], content_range: str
) -> None:
    value = content_range.format(SIZE=SIZE, SIZE_10=SIZE - 10, SIZE_1=SIZE - 1)
    first, last = map(int, value.split(" ")[1].split("/")[0].split("-"))

    async def handler(conn: Connection) -> None:
        await conn.read_request()
        head = response_head(206, _headers(
            last - first + 1, Content_Range=value))
        await conn.send(head + BODY[first : last + 1])

    async with scripted_server(handler) as server:
        client = session.container(server.endpoint)
        async with client.get_object("vod/a.mp4", range=asked) as obj:
            assert await obj.read() == BODY[first : last + 1]
