"""A closed Session stays closed: a client obtained before ``aclose()`` raises a clear
typed error instead of opening a new pool that nobody closes."""

from __future__ import annotations

import pytest

from msd_async import MediaStoreError, Session, SessionClosedError
from msd_async.testing import LocalMediaStore

pytestmark = pytest.mark.anyio


async def test_a_client_kept_past_its_session_raises(mediastore_server: LocalMediaStore) -> None:
    session = Session(credentials=mediastore_server.credentials, region=mediastore_server.region)
    store = session.container(mediastore_server.endpoint)
    await store.put_object("closed/a.bin", b"a")
    await session.aclose()
    assert session.closed
    calls = [
        store.put_object("closed/b.bin", b"b"),
        store.get_bytes("closed/a.bin"),
        store.describe_object("closed/a.bin"),
        store.delete_object("closed/a.bin"),
        store.list_items_page("closed"),
        store.presign_get("closed/a.bin"),
    ]
    for call in calls:
        with pytest.raises(SessionClosedError, match="Session is closed") as caught:
            await call
        assert isinstance(caught.value, MediaStoreError)
        assert isinstance(caught.value, RuntimeError)
    with pytest.raises(SessionClosedError):
        session.container(mediastore_server.endpoint)
    # Nothing reopened a pool behind the closed session.
    assert session.pool.in_use == 0 and session.pool.idle == 0
    assert mediastore_server.store.get("closed/b.bin") is None
