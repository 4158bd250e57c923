"""A session event hook that raises, seen from the live publisher: the client passes the
hook's error on to its caller, the publisher must not blame the body for it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from msd_async import RetryPolicy, Session
from msd_async.events import RequestEvent
from msd_async.live import LivePublisher, Status
from msd_async.testing import LocalMediaStore

pytestmark = pytest.mark.anyio


async def test_a_raising_session_hook_is_not_reported_as_the_body_failing(
    mediastore_server: LocalMediaStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def hook(event: RequestEvent) -> None:
        if event.kind == "response" and event.operation == "PutObject":
            raise RuntimeError("a bug in the application's metrics hook")

    async def chunks() -> AsyncIterator[bytes]:
        yield b"a"
        yield b"b"

    file = tmp_path / "seg_2.m4s"
    file.write_bytes(b"file")
    async with Session(
        credentials=mediastore_server.credentials, region=mediastore_server.region,
        retry=RetryPolicy.none(), event_hooks=[hook],
    ) as session:
        store = session.container(mediastore_server.endpoint)
        async with LivePublisher(store) as publisher:
            pubs = [
                await publisher.publish("hk/seg_0.m4s", b"bytes", duration=5.0),
                await publisher.publish("hk/seg_1.m4s", chunks(), duration=5.0),
                await publisher.publish("hk/seg_2.m4s", file, duration=5.0),
            ]
            with anyio.fail_after(5):
                outcomes = [await p.wait() for p in pubs]
            session.event_hooks.remove(hook)
            after = await publisher.publish("hk/seg_3.m4s", b"s", duration=5.0)
            with anyio.fail_after(5):
                assert (await after.wait()).acknowledged
    for outcome in outcomes:
        assert outcome.status is Status.FAILED
        reason = outcome.reason or ""
        assert "body's source" not in reason, reason
        assert "event hook" in reason and "may have stored it" in reason, reason
    logged = [r for r in caplog.records
              if r.levelno >= logging.ERROR and "outside the upload" in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None  # once, not per object
