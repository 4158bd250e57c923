from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from rawclient import Raw

from msd_async.testing import LocalMediaStore


@pytest.fixture
async def server() -> AsyncIterator[LocalMediaStore]:
    async with LocalMediaStore(standard_limit=1000, streaming_limit=500) as srv:
        yield srv


@pytest.fixture
async def raw(server: LocalMediaStore) -> AsyncIterator[Raw]:
    async with aiohttp.ClientSession() as session:
        yield Raw(server, session)
