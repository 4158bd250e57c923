from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from msd_async import ContainerClient, RetryPolicy, Session
from msd_async.testing import LocalMediaStore


@pytest.fixture
async def store(mediastore_server: LocalMediaStore) -> AsyncIterator[ContainerClient]:
    """A client whose session never retries by itself: the publisher's loop does."""
    async with Session(
        credentials=mediastore_server.credentials,
        region=mediastore_server.region,
        retry=RetryPolicy.none(),
    ) as session:
        yield session.container(mediastore_server.endpoint)
