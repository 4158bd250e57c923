"""The ``mediastore_client`` fixture hands out a working client bound to the fixture server."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.anyio


async def test_mediastore_client_fixture(mediastore_client: Any) -> None:
    result = await mediastore_client.put_object("a/b.ts", b"hello")
    assert len(result.etag) == 64
    async with mediastore_client.get_object("a/b.ts") as obj:
        assert await obj.read() == b"hello"
    assert [i.name async for i in mediastore_client.list_items("a")] == ["b.ts"]
