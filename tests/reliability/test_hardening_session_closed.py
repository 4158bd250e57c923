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


@pytest.mark.parametrize("per_host", [0, 1])
async def test_a_call_waiting_for_a_pool_slot_when_the_session_closes(
    mediastore_server: LocalMediaStore, per_host: int
) -> None:
    """The waiter hears that the Session closed, at once, not aiohttp's bare
    ``RuntimeError: Session is closed`` once a slot frees up (nor a PoolTimeout later)."""
    import anyio

    from msd_async import Limits, Timeouts

    session = Session(
        credentials=mediastore_server.credentials,
        region=mediastore_server.region,
        limits=Limits(max_connections=1, max_connections_per_host=per_host),
        timeouts=Timeouts(pool=60),
    )
    store = session.container(mediastore_server.endpoint)
    await store.put_object("closed/a.bin", b"a" * 100_000)
    outcome: list[BaseException] = []

    async def waiter() -> None:
        try:
            await store.describe_object("closed/a.bin")
        except Exception as exc:
            outcome.append(exc)

    with anyio.fail_after(30):
        download = store.get_object("closed/a.bin")
        held = await download.__aenter__()  # holds the pool's only slot
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter)
                while session.pool.waiting == 0:  # noqa: ASYNC110 - a counter, no event
                    await anyio.sleep(0.01)
                await session.aclose()
                # The slot frees up after the close: the waiter must not take it.
                await held.aclose()
        finally:
            await download.__aexit__(None, None, None)
    (error,) = outcome
    assert isinstance(error, SessionClosedError), repr(error)
    assert session.pool.in_use == 0 and session.pool.waiting == 0
