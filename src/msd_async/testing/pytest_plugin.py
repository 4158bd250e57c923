"""pytest fixtures for a local MediaStore server (loaded through the ``pytest11`` entry point).

Both fixtures are async and function-scoped; they run under anyio's pytest plugin, so tests
using them are marked ``@pytest.mark.anyio`` with an asyncio ``anyio_backend``:

- ``mediastore_server``: a started in-memory :class:`~msd_async.testing.LocalMediaStore` on
  127.0.0.1 with the default credentials; closed after the test.
- ``mediastore_client``: a ``ContainerClient`` bound to that server, from a
  ``msd_async.Session`` made with the server's credentials and region.

pytest loads this module into every test run of an environment where msd-async is
installed, used or not: it imports nothing heavy at module level (the server and
``aiohttp.web`` are imported inside the fixtures, when a test asks for one).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from msd_async import ContainerClient

    from .server import LocalMediaStore


@pytest.fixture
async def mediastore_server() -> AsyncIterator[LocalMediaStore]:
    from .server import LocalMediaStore

    async with LocalMediaStore() as server:
        yield server


@pytest.fixture
async def mediastore_client(mediastore_server: LocalMediaStore) -> AsyncIterator[ContainerClient]:
    from msd_async import Session

    async with Session(
        credentials=mediastore_server.credentials, region=mediastore_server.region
    ) as session:
        yield session.container(mediastore_server.endpoint)
