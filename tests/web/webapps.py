"""Web apps using msd_async.web's helpers, over loopback, with the local server behind them.

The ``app`` fixture runs the same routes in aiohttp.web and in FastAPI under uvicorn (each
test runs against both):

- ``GET``/``HEAD /<store>/<path>``: ``serve_object`` (``?redirect=1``: redirect mode)
- ``PUT /<store>/<path>``: ``accept_upload`` (``?streaming=1``: STREAMING; ``?allow=a/b,c/*``:
  the uploader's Content-Type is used when it is one of these)

``<store>`` picks the container client: ``ok`` (the local server), ``dead`` (a closed
port), ``slow`` (the local server with a short read timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn
from aiohttp import web
from fastapi import FastAPI, Request, Response

from msd_async import ContainerClient, ObjectNotFoundError, RetryPolicy, Session
from msd_async.testing import LocalMediaStore
from msd_async.web.aiohttp import accept_upload as aiohttp_accept
from msd_async.web.aiohttp import expect_handler as aiohttp_expect
from msd_async.web.aiohttp import serve_object as aiohttp_serve
from msd_async.web.asgi import accept_upload as asgi_accept
from msd_async.web.asgi import serve_object as asgi_serve

#: Read timeout of the ``slow`` store; the 504 test delays the origin well past it.
SLOW_READ_TIMEOUT = 0.5
FAST_RETRY = RetryPolicy(max_attempts=2, backoff_initial=0.01, backoff_max=0.02)


@dataclass
class App:
    kind: str
    url: str
    session: Session
    store: ContainerClient
    origin: LocalMediaStore

    def object_url(self, path: str, store: str = "ok") -> str:
        return f"{self.url}/{store}/{path}"


@dataclass
class Calls:
    """Requests the app is handling (``in_flight``) and has finished (``done``), counted
    around the framework's handler (an aiohttp middleware; an ASGI wrapper): a handler
    still running after its client was cut is a task left behind."""

    in_flight: int = 0
    done: int = 0

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            self.done += 1


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _allowed(query: str | None) -> tuple[str, ...]:
    return tuple(query.split(",")) if query else ()


def _aiohttp_app(stores: dict[str, ContainerClient], calls: Calls) -> web.Application:
    async def get(request: web.Request) -> web.StreamResponse:
        store = stores[request.match_info["store"]]
        redirect = request.query.get("redirect") == "1"
        return await aiohttp_serve(request, store, request.match_info["path"], redirect=redirect)

    async def put(request: web.Request) -> web.StreamResponse:
        store = stores[request.match_info["store"]]
        streaming = request.query.get("streaming") == "1"
        return await aiohttp_accept(
            request, store, request.match_info["path"], streaming=streaming,
            allowed_types=_allowed(request.query.get("allow")),
        )

    def limit(request: web.Request) -> int:
        store = stores[request.match_info["store"]]
        streaming = request.query.get("streaming") == "1"
        return store.streaming_limit if streaming else store.standard_limit

    @web.middleware
    async def count(request: web.Request, handler: Any) -> web.StreamResponse:
        with calls.counting():
            return await handler(request)  # type: ignore[no-any-return]

    app = web.Application(middlewares=[count])
    app.router.add_get("/{store}/{path:.+}", get)
    app.router.add_put("/{store}/{path:.+}", put, expect_handler=aiohttp_expect(limit))
    return app


def _asgi_app(stores: dict[str, ContainerClient], calls: Calls, middleware: bool) -> Any:
    app = FastAPI()
    if middleware:
        # FastAPI's @app.middleware("http"), a Starlette BaseHTTPMiddleware: it runs the
        # route in a task of its own and reads its response back from a stream.
        @app.middleware("http")
        async def passthrough(request: Request, call_next: Any) -> Any:
            return await call_next(request)

    @app.api_route("/{store}/{path:path}", methods=["GET", "HEAD"])
    async def get(store: str, path: str, request: Request, redirect: int = 0) -> Response:
        return await asgi_serve(request, stores[store], path, redirect=redirect == 1)

    @app.put("/{store}/{path:path}")
    async def put(
        store: str, path: str, request: Request, streaming: int = 0, allow: str | None = None
    ) -> Response:
        return await asgi_accept(
            request, stores[store], path, streaming=streaming == 1, allowed_types=_allowed(allow)
        )

    async def counted(scope: Any, receive: Any, send: Any) -> None:
        with calls.counting():
            await app(scope, receive, send)

    return counted


@contextlib.asynccontextmanager
async def running_app(
    kind: str,
    stores: dict[str, ContainerClient],
    *,
    send_buffer: int | None = None,
    calls: Calls | None = None,
    middleware: bool = False,
) -> AsyncIterator[str]:
    """Serve the test routes over ``stores`` with ``kind`` (``"aiohttp"`` or ``"asgi"``,
    FastAPI under uvicorn) on 127.0.0.1; yields the base URL. ``send_buffer`` sets the
    listening socket's ``SO_SNDBUF``, which the connections it accepts inherit: the kernel
    then takes only that much of what the app writes to a client that does not read.
    ``calls`` counts the requests being handled. ``middleware`` (ASGI): the routes run
    behind a pass-through ``@app.middleware("http")``."""
    calls = Calls() if calls is None else calls
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if send_buffer is not None:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    listener.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    if kind == "aiohttp":
        runner = web.AppRunner(_aiohttp_app(stores, calls), handle_signals=False)
        await runner.setup()
        try:
            await web.SockSite(runner, listener).start()
            yield url
        finally:
            await runner.cleanup()
            listener.close()
        return
    config = uvicorn.Config(
        _asgi_app(stores, calls, middleware), log_level="warning", lifespan="off", ws="none",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    serving = asyncio.ensure_future(server.serve(sockets=[listener]))
    try:
        # uvicorn has no "started" event to wait on
        while not server.started and not serving.done():
            await asyncio.wait({serving}, timeout=0.02)
        yield url
    finally:
        server.should_exit = True
        await serving
        listener.close()


@contextlib.contextmanager
def captured_logs() -> Iterator[list[logging.LogRecord]]:
    """The records of the app's, aiohttp's and uvicorn's loggers (uvicorn's do not
    propagate to the root, and its Config replaces their handlers: enter this after the
    server has started)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(logging.DEBUG)
    loggers = [logging.getLogger(name) for name in ("msd_async", "aiohttp", "uvicorn")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
    logging.getLogger("msd_async").setLevel(logging.INFO)
    try:
        yield records
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)


async def wait_for(predicate: Any, within: float, what: str) -> None:
    """Poll ``predicate()`` until true, failing after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while not predicate():
        if loop.time() > end:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def paused_upload(store: ContainerClient, path: str, first: bytes) -> AsyncIterator[None]:
    """A STREAMING upload of ``path`` that sends ``first`` then pauses: readable (and
    growing, as far as a viewer knows) inside the block, completed on the way out."""
    pause = asyncio.Event()

    async def produce() -> AsyncIterator[bytes]:
        yield first
        await pause.wait()

    upload = asyncio.ensure_future(store.put_object(path, produce(), streaming=True))
    try:
        for _ in range(500):  # until the upload is readable
            with contextlib.suppress(ObjectNotFoundError):
                await store.describe_object(path)
                break
            await asyncio.sleep(0.02)
        yield
    finally:
        pause.set()
        await upload
