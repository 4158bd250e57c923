"""Edges of the observability layer: what /readyz, the JSON log lines, the metrics and the
spans promise (docs/observability.md) on the paths the main tests do not take."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from msd_async import Credentials, ObjectTooLargeError, Session
from msd_async.cli._observe import Readiness
from msd_async.testing import LocalMediaStore

pytestmark = pytest.mark.anyio

KEYS = Credentials("AKIDOBSERVEEDGE000000", "observe-edge-secret-key-0000000000000000")


@pytest.fixture
async def server() -> AsyncIterator[LocalMediaStore]:
    async with LocalMediaStore(credentials=KEYS) as served:
        yield served


async def test_a_body_the_client_refuses_mid_upload_is_not_the_origin_failing(
    server: LocalMediaStore,
) -> None:
    """A streamed body that passes the object limit is aborted by the client (the origin
    never got to answer): /readyz of a relay whose encoder sent an oversized segment must
    not say the origin failed, as it would for a cut connection or a 5xx."""

    async def oversized() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"x" * 1000

    async with Session(credentials=KEYS, region=server.region) as session:
        store = session.container(server.endpoint, standard_limit=2000)
        readiness = Readiness(store.endpoint)
        session.event_hooks.append(readiness)
        await store.put_object("live/ok.ts", b"1")
        assert readiness.state() == (True, "ok")
        with pytest.raises(ObjectTooLargeError):
            await store.put_object("live/huge.ts", oversized())
        assert readiness.state() == (True, "ok")
        # A real failure of the origin still shows.
        server.faults.inject("503", method="PUT", path="live/next.ts", times=None)
        with pytest.raises(Exception):  # noqa: B017 - the reason is checked below
            await store.put_object("live/next.ts", b"2")
        ready, reason = readiness.state()
        assert not ready and "PutObject" in reason and "503" in reason
