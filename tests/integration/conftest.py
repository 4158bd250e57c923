from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from msd_async import Credentials, RetryPolicy, Session

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
async def session() -> AsyncIterator[Session]:
    """A session for a scripted peer (tests/support/scripted_server.py): it signs with
    throw-away keys and never retries, so each scripted answer is seen once."""
    async with Session(
        credentials=Credentials("AKIDEXAMPLE", "secret"),
        region="us-east-1",
        retry=RetryPolicy.none(),
    ) as session:
        yield session
