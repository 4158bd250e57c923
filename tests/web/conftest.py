"""Fixtures: the web apps of :mod:`webapps` (aiohttp and ASGI) and an HTTP client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from webapps import FAST_RETRY, SLOW_READ_TIMEOUT, App, _aiohttp_app, _asgi_app, closed_port

from msd_async import RetryPolicy, Session, Timeouts
from msd_async.testing import LocalMediaStore


@pytest.fixture(params=["aiohttp", "asgi"])
async def app(
    request: pytest.FixtureRequest, mediastore_server: LocalMediaStore
) -> AsyncIterator[App]:
    origin = mediastore_server
    creds, region = origin.credentials, origin.region
    async with (
        Session(credentials=creds, region=region, retry=FAST_RETRY) as session,
        Session(
            credentials=creds,
            region=region,
            retry=RetryPolicy.none(),
            timeouts=Timeouts(read=SLOW_READ_TIMEOUT),
        ) as slow_session,
    ):
        store = session.container(origin.endpoint)
        stores = {
            "ok": store,
            "dead": session.container(f"http://127.0.0.1:{closed_port()}"),
            "slow": slow_session.container(origin.endpoint),
        }
        if request.param == "aiohttp":
            runner = web.AppRunner(_aiohttp_app(stores), handle_signals=False)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            port = runner.addresses[0][1]
            try:
                yield App("aiohttp", f"http://127.0.0.1:{port}", session, store, origin)
            finally:
                await runner.cleanup()
        else:
            import uvicorn

            config = uvicorn.Config(
                _asgi_app(stores), host="127.0.0.1", port=0, log_level="warning",
                lifespan="off", ws="none", timeout_graceful_shutdown=2,
            )
            server = uvicorn.Server(config)
            serving = asyncio.ensure_future(server.serve())
            while not server.started and not serving.done():
                await asyncio.wait({serving}, timeout=0.02)
            port = server.servers[0].sockets[0].getsockname()[1]
            try:
                yield App("asgi", f"http://127.0.0.1:{port}", session, store, origin)
            finally:
                server.should_exit = True
                await serving


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain HTTP client (no auto-decompression, no redirects followed by default)."""
    async with aiohttp.ClientSession(auto_decompress=False) as client:
        yield client
