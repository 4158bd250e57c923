"""A ListItems peer that lies: a NextToken handed back again, names that are not names.

The local server never does either, so a scripted one does. A listing that follows a
repeated token would never end (the same pages over and over). A name such as ``..``,
``a/b`` or ``""`` would make a tree walk build paths outside the folder it walks, or
that it then refused as the caller's own invalid path (InvalidPathError, for a path the
caller never gave).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from scripted_server import Connection, response, scripted_server

from msd_async import Credentials, ProtocolError, RetryPolicy, Session
from msd_async.transfer import download_tree, sync, walk

pytestmark = pytest.mark.anyio

#: Pages served before a test gives up on the client: a listing that has not stopped by
#: then would have looped forever.
MAX_PAGES = 50


def _session() -> Session:
    return Session(
        credentials=Credentials("AKIDEXAMPLE", "secret"),
        region="us-east-1",
        retry=RetryPolicy.none(),
    )


def _item(name: str, kind: str = "OBJECT") -> dict[str, Any]:
    if kind == "FOLDER":
        return {"Name": name, "Type": "FOLDER"}
    return {
        "Name": name,
        "Type": "OBJECT",
        "ContentLength": 1,
        "ContentType": "video/mp2t",
        "ETag": "e" * 64,
        "LastModified": 1_700_000_000,
    }


Pager = Callable[[str, str | None], dict[str, Any]]


def _lister(pages: Pager, served: list[tuple[str, str | None]]):  # type: ignore[no-untyped-def]
    """A ListItems server answering ``pages(path, token)``; GETs of objects get one byte."""

    async def handler(conn: Connection) -> None:
        while (request := await conn.read_request()) is not None:
            url = urlsplit(request.target)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            if url.path != "/":
                conn.write(response(200, b"x", headers={"ETag": "e" * 64}))
                continue
            path, token = query.get("Path", ""), query.get("NextToken")
            served.append((path, token))
            assert len(served) <= MAX_PAGES, "the client never stopped listing"
            body = json.dumps(pages(path, token)).encode()
            conn.write(response(200, body, headers={"Content-Type": "application/json"}))
            await conn.drain()

    return handler


def _same_token_forever(path: str, token: str | None) -> dict[str, Any]:
    return {"Items": [_item("seg1.ts")], "NextToken": "again"}


def _cycle_of_two(path: str, token: str | None) -> dict[str, Any]:
    following = {None: "A", "A": "B", "B": "A"}[token]
    return {"Items": [_item(f"seg-{token}.ts")], "NextToken": following}


@pytest.mark.parametrize("pages", [_same_token_forever, _cycle_of_two], ids=["same", "cycle"])
async def test_list_items_refuses_a_token_it_was_handed_before(pages: Pager) -> None:
    served: list[tuple[str, str | None]] = []
    async with scripted_server(_lister(pages, served)) as server, _session() as session:
        store = session.container(server.endpoint)
        seen: list[str] = []
        with pytest.raises(ProtocolError, match="NextToken") as caught:
            async for item in store.list_items("live"):
                seen.append(item.name)
        assert "live" in str(caught.value)
        # Each page asked for once; the items of the page that repeated a token are not
        # yielded.
        assert len(served) == len(set(served)) == len(seen) + 1
        assert session.pool.in_use == 0


@pytest.mark.parametrize("pages", [_same_token_forever, _cycle_of_two], ids=["same", "cycle"])
async def test_a_walk_refuses_a_token_it_was_handed_before(pages: Pager) -> None:
    served: list[tuple[str, str | None]] = []
    async with scripted_server(_lister(pages, served)) as server, _session() as session:
        store = session.container(server.endpoint)
        with pytest.raises(ProtocolError, match="NextToken"):
            async for _ in walk(store, "live"):
                pass
        assert len(served) <= 4
        assert session.pool.in_use == 0


def _named(*names: tuple[str, str]) -> Pager:
    def pages(path: str, token: str | None) -> dict[str, Any]:
        if path == "live":
            return {"Items": [_item(name, kind) for name, kind in names]}
        return {"Items": [_item("escaped.ts")]}

    return pages


BAD_NAMES = [
    ("..", "FOLDER"),
    ("..", "OBJECT"),
    (".", "FOLDER"),
    ("a/b.ts", "OBJECT"),
    ("/etc", "FOLDER"),
    ("", "OBJECT"),
    ("seg 1.ts", "OBJECT"),
]


def _ids() -> Iterator[str]:
    for name, kind in BAD_NAMES:
        yield f"{kind.lower()}-{name!r}"


@pytest.mark.parametrize(("name", "kind"), BAD_NAMES, ids=list(_ids()))
async def test_a_walk_refuses_a_listed_name_that_is_not_a_name(name: str, kind: str) -> None:
    served: list[tuple[str, str | None]] = []
    pages = _named(("ok.ts", "OBJECT"), (name, kind))
    async with scripted_server(_lister(pages, served)) as server, _session() as session:
        store = session.container(server.endpoint)
        with pytest.raises(ProtocolError, match="name") as caught:
            async for _ in walk(store, "live"):
                pass
        assert repr(name) in str(caught.value)
        # The folder it named was never listed.
        assert [path for path, _ in served] == ["live"]
        assert session.pool.in_use == 0


async def test_a_download_from_a_peer_listing_dotdot_fails_and_writes_nothing(
    tmp_path: Path,
) -> None:
    served: list[tuple[str, str | None]] = []
    pages = _named(("ok.ts", "OBJECT"), ("..", "FOLDER"))
    target = tmp_path / "a" / "b"
    target.mkdir(parents=True)
    async with scripted_server(_lister(pages, served)) as server, _session() as session:
        store = session.container(server.endpoint)
        with pytest.raises(ProtocolError, match=re.escape("'..'")):
            await download_tree(store, "live", target)
        assert session.pool.in_use == 0
    assert _files_under(tmp_path) == []


def _files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


async def test_a_web_page_answered_to_a_listing_is_not_an_empty_folder(tmp_path: Path) -> None:
    """An endpoint that is a web server answering 200 to anything (a CDN in front of the
    container, a captive portal) must not list as an empty folder: a sync would read that
    as "nothing there"."""
    page = b"<!doctype html><title>Welcome</title>"

    async def handler(conn: Connection) -> None:
        while await conn.read_request() is not None:
            conn.write(response(200, page, headers={"Content-Type": "text/html"}))

    async with scripted_server(handler) as server, _session() as session:
        store = session.container(server.endpoint)
        with pytest.raises(ProtocolError, match="not a JSON object") as caught:
            async for _ in store.list_items("www"):
                pass
        assert "Welcome" in str(caught.value)
        (tmp_path / "keep.html").write_text("local")
        with pytest.raises(ProtocolError):
            await sync(store, "ms:www", tmp_path, delete=True)
        assert session.pool.in_use == 0
    assert _files_under(tmp_path) == ["keep.html"]
