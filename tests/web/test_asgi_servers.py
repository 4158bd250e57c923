"""The ASGI adapter under ASGI servers of each spec version, driven by a hand-written
server loop (scope, receive, send) over the real local server behind it.

Before spec 2.4 a server tells an app that its client left only through ``receive()``
(``http.disconnect``), and drops the sends that follow; from 2.4 a send on a closed
connection may raise ``OSError`` instead, and Starlette's ``StreamingResponse`` stops
listening to ``receive()`` then. Either way a viewer that leaves must be noticed: in the
middle of a stored object's body, and while a growing STREAMING body pauses (no send to
fail). Each test checks that the app returns, without an exception, and that the origin
connection is back in the pool."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

import pytest
from starlette.requests import Request
from webapps import captured_logs, paused_upload, wait_for

from msd_async import Session, Timeouts
from msd_async.testing import LocalMediaStore
from msd_async.web.asgi import serve_object

pytestmark = pytest.mark.anyio

DATA = os.urandom(1_000_000)
PATH = "vod/clip.mp4"
#: Generous: each app below returns within milliseconds of its viewer leaving.
WITHIN = 5.0


class HandWrittenServer:
    """One GET, as an ASGI server of ``spec_version`` runs it: the request, then
    ``http.disconnect`` once the viewer has left (:meth:`leave`); sends after that are
    dropped (before 2.4) or raise ``OSError`` (2.4, which allows a server to)."""

    def __init__(self, spec_version: str, path: str) -> None:
        self.scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": spec_version},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": f"/{path}",
            "raw_path": f"/{path}".encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"x")],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }
        self.raises = tuple(map(int, spec_version.split("."))) >= (2, 4)
        self.body = bytearray()
        self.started = asyncio.Event()
        self.gone = asyncio.Event()
        self.receives = 0
        self._requested = False

    def leave(self) -> None:
        self.gone.set()

    async def receive(self) -> dict[str, Any]:
        self.receives += 1
        if not self._requested:
            self._requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        if self.gone.is_set():
            if self.raises:
                raise OSError("the client is gone")
            return
        if message["type"] == "http.response.start":
            assert message["status"] == 200, message
            self.started.set()
        else:
            self.body += message.get("body", b"")
        await asyncio.sleep(0)  # a real server yields on each send


async def app(store: Any, server: HandWrittenServer) -> None:
    request = Request(server.scope, server.receive)
    response = await serve_object(request, store, PATH)
    await response(server.scope, server.receive, server.send)


@pytest.mark.parametrize("spec_version", ["2.3", "2.4"])
@pytest.mark.parametrize("growing", [False, True], ids=["stored", "growing"])
async def test_a_viewer_that_leaves_mid_body_is_noticed(
    spec_version: str, growing: bool, mediastore_server: LocalMediaStore
) -> None:
    origin = mediastore_server
    async with (
        # The upload's connection is not the app's: another Session.
        Session(credentials=origin.credentials, region=origin.region) as setup,
        Session(
            credentials=origin.credentials, region=origin.region, timeouts=Timeouts(write=60)
        ) as session,
    ):
        store = session.container(origin.endpoint)
        uploader = setup.container(origin.endpoint)
        server = HandWrittenServer(spec_version, PATH)
        async with contextlib.AsyncExitStack() as uploads:
            if growing:
                await uploads.enter_async_context(paused_upload(uploader, PATH, DATA[:200_000]))
            else:
                await uploader.put_object(PATH, DATA)
            with captured_logs() as records:
                serving = asyncio.ensure_future(app(store, server))
                await asyncio.wait_for(server.started.wait(), WITHIN)
                await wait_for(lambda: len(server.body) > 0, WITHIN, "the first bytes")
                server.leave()
                done, _ = await asyncio.wait({serving}, timeout=WITHIN)
                if not done:
                    serving.cancel()
                assert done, "the app went on serving a viewer that had left"
                serving.result()  # no exception out of the app
                await wait_for(lambda: session.pool.in_use == 0, WITHIN, "the slot")
            assert len(server.body) < len(DATA)
            assert [r.getMessage() for r in records if r.levelno >= logging.WARNING] == []


@pytest.mark.parametrize("spec_version", ["2.3", "2.4"])
async def test_a_viewer_that_stays_gets_the_whole_body(
    spec_version: str, mediastore_server: LocalMediaStore
) -> None:
    origin = mediastore_server
    async with Session(credentials=origin.credentials, region=origin.region) as session:
        store = session.container(origin.endpoint)
        await store.put_object(PATH, DATA)
        server = HandWrittenServer(spec_version, PATH)
        await asyncio.wait_for(app(store, server), WITHIN)
        assert bytes(server.body) == DATA
        assert session.pool.in_use == 0
