"""An exception raised by the caller's own code (the ``progress`` callback, an event hook)
reaches the caller unchanged and is never retried."""

from __future__ import annotations

import logging

import pytest

from msd_async import RequestEvent, Session
from msd_async.testing import LocalMediaStore

pytestmark = pytest.mark.anyio


class CallbackBug(Exception):
    pass


def _session(server: LocalMediaStore) -> Session:
    return Session(credentials=server.credentials, region=server.region)


@pytest.mark.parametrize("fail_at", [1, 3])
async def test_a_progress_callback_error_is_raised_as_is(
    mediastore_server: LocalMediaStore,
    server_requests: list[logging.LogRecord],
    fail_at: int,
) -> None:
    bug = CallbackBug("progress failed")
    calls = []

    def progress(sent: int) -> None:
        calls.append(sent)
        if len(calls) == fail_at:
            raise bug

    async with _session(mediastore_server) as session:
        store = session.container(mediastore_server.endpoint)
        with pytest.raises(CallbackBug) as caught:
            await store.put_object("cb/a.bin", [b"a" * 1000] * 5, progress=progress)
        assert caught.value is bug
        assert len(calls) == fail_at  # not called again by a retry
        puts = [r for r in server_requests if "PUT" in r.getMessage()]
        assert len(puts) <= 1
        assert session.pool.in_use == 0
        assert mediastore_server.store.get("cb/a.bin") is None


@pytest.mark.parametrize("kind", ["start", "response"])
async def test_an_event_hook_error_is_raised_as_is(
    mediastore_server: LocalMediaStore, kind: str
) -> None:
    bug = CallbackBug("hook failed")
    seen: list[RequestEvent] = []

    def hook(event: RequestEvent) -> None:
        seen.append(event)
        if event.kind == kind:
            raise bug

    async with _session(mediastore_server) as session:
        store = session.container(mediastore_server.endpoint)
        await store.put_object("cb/b.bin", b"b")
        session.event_hooks.append(hook)
        for call in (store.describe_object("cb/b.bin"), store.get_bytes("cb/b.bin"),
                     store.list_items_page("cb")):
            seen.clear()
            with pytest.raises(CallbackBug) as caught:
                await call
            assert caught.value is bug
            assert [e.kind for e in seen].count(kind) == 1  # never retried
            assert session.pool.in_use == 0
