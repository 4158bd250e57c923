from __future__ import annotations

import pytest

#: This folder runs on both event loops msd_async supports: asyncio's own, and uvloop
#: (the ``msd-async[uvloop]`` extra). The other folders keep plain asyncio.
EVENT_LOOPS = [
    pytest.param("asyncio", id="asyncio"),
    pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
]


@pytest.fixture(params=EVENT_LOOPS)
def anyio_backend(request: pytest.FixtureRequest) -> object:
    return request.param

