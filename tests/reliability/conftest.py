from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from reliability_helpers import FAST_RETRY

from msd_async import Session
from msd_async.testing import LocalMediaStore


@pytest.fixture
async def session(mediastore_server: LocalMediaStore) -> AsyncIterator[Session]:
    """A session on the test's server whose retries ride out injected faults in ms."""
    async with Session(
        credentials=mediastore_server.credentials,
        region=mediastore_server.region,
        retry=FAST_RETRY,
    ) as session:
        yield session
