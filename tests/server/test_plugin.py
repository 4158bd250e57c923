"""The pytest plugin's fixtures (loaded through the pytest11 entry point)."""

from __future__ import annotations

import aiohttp
import pytest

from msd_async.testing import LocalMediaStore

pytestmark = pytest.mark.anyio


async def test_mediastore_server_fixture(mediastore_server: LocalMediaStore) -> None:
    assert mediastore_server.endpoint.startswith("http://127.0.0.1:")
    await mediastore_server.store.put_bytes("fixture.ts", b"ok")
    # Unsigned: refused, which proves a real server answers with the service's shape.
    url = f"{mediastore_server.endpoint}/fixture.ts"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 403
        assert resp.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
