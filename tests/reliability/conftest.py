from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from reliability_helpers import FAST_RETRY

from msd_async import Session
from msd_async.testing import LocalMediaStore

#: This folder runs on both event loops msd_async supports: asyncio's own, and uvloop
#: (the ``msd-async[uvloop]`` extra). The other folders keep plain asyncio.
EVENT_LOOPS = [
    pytest.param("asyncio", id="asyncio"),
    pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
]


@pytest.fixture(params=EVENT_LOOPS)
def anyio_backend(request: pytest.FixtureRequest) -> object:
    return request.param


@pytest.fixture
async def session(mediastore_server: LocalMediaStore) -> AsyncIterator[Session]:
    """A session on the test's server whose retries ride out injected faults in ms."""
    async with Session(
        credentials=mediastore_server.credentials,
        region=mediastore_server.region,
        retry=FAST_RETRY,
    ) as session:
        yield session
