"""Downloads from an origin that contradicts itself (a scripted raw HTTP server, see
tests/support/scripted_server.py): a GET whose body is shorter or longer than the listing
said for the same ETag is a failure, never a file recorded as complete."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from scripted_server import Connection, response, scripted_server

from msd_async import ProtocolError, RetryPolicy, Session
from msd_async.transfer import PART_SIZE, TransferOptions, download_tree, sync

pytestmark = pytest.mark.anyio

ETAG = "0123456789abcdef0123456789abcdef"
ONE = TransferOptions(retry=RetryPolicy.none(), file_attempts=1)




def names_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def listing(items: dict[str, int]) -> bytes:
    return response(200, json.dumps({"Items": [
        {"Name": name, "Type": "OBJECT", "ETag": ETAG, "ContentLength": size,
         "LastModified": 1764590000}
        for name, size in items.items()
    ]}).encode(), headers={"Content-Type": "application/json"})


def origin(listed: dict[str, int], bodies: dict[str, bytes]):  # type: ignore[no-untyped-def]
    """Lists ``listed`` (name: size, all with one ETag) and answers each GET of a name with
    ``bodies[name]`` (Content-Length its real length), the same ETag."""

    async def handler(conn: Connection) -> None:
        while (request := await conn.read_request()) is not None:
            name = request.target.partition("?")[0].rpartition("/")[2]
            if request.method == "GET" and name in bodies:
                await conn.send(response(200, bodies[name], headers={"ETag": ETAG}))
            else:
                await conn.send(listing(listed))

    return scripted_server(handler)


@pytest.mark.parametrize("size", [60, 150], ids=["shorter", "longer"])
async def test_a_body_of_another_length_than_listed_is_a_failure(
    session: Session, tmp_path: Path, size: int
) -> None:
    body = random.Random(size).randbytes(size)
    async with origin({"a.bin": 100, "ok.bin": 2}, {"a.bin": body, "ok.bin": b"ok"}) as server:
        client = session.container(server.endpoint)
        report = await download_tree(client, "", tmp_path, ONE)
        assert report.transferred == ["ok.bin"]
        (failure,) = report.failed
        assert failure.path == "a.bin"
        assert isinstance(failure.error, ProtocolError)
        assert "100" in str(failure.error) and str(size) in str(failure.error)
        assert names_in(tmp_path) == ["ok.bin"]
        # Nothing was recorded either: the next sync does not skip a wrong file.
        again = await sync(client, "ms:", tmp_path, ONE)
        assert [f.path for f in again.failed] == ["a.bin"]


LARGE = random.Random(7).randbytes(PART_SIZE + 1000)  # two ranged parts


def large_origin(answer_get):  # type: ignore[no-untyped-def]
    """Lists and describes big.bin as LARGE; ``answer_get(range header)`` answers each GET."""

    async def handler(conn: Connection) -> None:
        while (request := await conn.read_request()) is not None:
            head = {"ETag": ETAG, "Last-Modified": "Mon, 01 Dec 2025 12:00:00 GMT"}
            if request.method == "HEAD":
                await conn.send(response(200, headers=head, length=len(LARGE)))
            elif request.target.startswith("/big.bin"):
                await conn.send(answer_get(request.headers.get("range")))
            else:
                await conn.send(listing({"big.bin": len(LARGE)}))

    return scripted_server(handler)


def _range(header: str) -> tuple[int, int]:
    first, _, last = header.removeprefix("bytes=").partition("-")
    return int(first), int(last)


async def test_a_large_download_completes_when_the_origin_ignores_range(
    session: Session, tmp_path: Path
) -> None:
    def whole_body(_: str | None) -> bytes:  # a proxy that does not support ranges
        return response(200, LARGE, headers={"ETag": ETAG})

    async with large_origin(whole_body) as server:
        client = session.container(server.endpoint)
        report = await download_tree(client, "", tmp_path, ONE)
    assert report.ok, report.failed
    assert (tmp_path / "big.bin").read_bytes() == LARGE
    assert names_in(tmp_path) == ["big.bin"]


async def test_a_part_of_an_object_longer_than_described_is_a_failure(
    session: Session, tmp_path: Path
) -> None:
    def other_total(header: str | None) -> bytes:
        assert header is not None
        first, last = _range(header)
        total = len(LARGE) + 10  # same ETag, another length than DescribeObject gave
        return response(206, LARGE[first:last + 1], headers={
            "ETag": ETAG, "Content-Range": f"bytes {first}-{last}/{total}",
        })

    async with large_origin(other_total) as server:
        client = session.container(server.endpoint)
        report = await download_tree(client, "", tmp_path, ONE)
    (failure,) = report.failed
    assert isinstance(failure.error, ProtocolError), failure.error
    assert not (tmp_path / "big.bin").exists()
