"""Fixtures: the web apps of :mod:`webapps` (aiohttp and ASGI) and an HTTP client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from webapps import FAST_RETRY, SLOW_READ_TIMEOUT, App, closed_port, running_app

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
        async with running_app(request.param, stores) as url:
            yield App(request.param, url, session, store, origin)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain HTTP client (no auto-decompression, no redirects followed by default)."""
    async with aiohttp.ClientSession(auto_decompress=False) as client:
        yield client
