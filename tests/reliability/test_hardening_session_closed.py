"""A closed Session stays closed: a client obtained before ``aclose()`` raises a clear
typed error instead of opening a new pool that nobody closes."""

from __future__ import annotations

import pytest

from msd_async import MediaStoreError, ServerError, Session, SessionClosedError
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


# docs/connections.md: "aclose() from another task ends every call of the session at once".
# Two waits were outside the transport's reach: a retry's backoff (up to retry_after_max)
# and a credentials provider that has not answered (up to Timeouts.credentials).
_LONG_WAIT = 30.0  # what the call would wait without the fix; the test allows a tenth


async def _closing_ends_the_call(
    session: Session, call: object, waiting: object
) -> SessionClosedError:
    import time

    import anyio

    outcome: list[BaseException] = []

    async def run() -> None:
        try:
            await call  # type: ignore[misc]
        except Exception as exc:
            outcome.append(exc)

    with anyio.fail_after(_LONG_WAIT * 2):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            while not waiting():  # type: ignore[operator]  # noqa: ASYNC110 - no event
                await anyio.sleep(0.01)
            started = time.monotonic()
            await session.aclose()
        took = time.monotonic() - started
    (error,) = outcome
    assert isinstance(error, SessionClosedError), repr(error)
    assert took < _LONG_WAIT / 10, f"the call ended {took:.1f} s after the Session closed"
    return error


async def test_a_call_in_a_retry_backoff_when_the_session_closes() -> None:
    from scripted_server import Connection, response, scripted_server

    from msd_async import Credentials, RetryPolicy

    async def unavailable(conn: Connection) -> None:
        while await conn.read_request() is not None:
            await conn.send(response(503, headers={"Retry-After": int(_LONG_WAIT)}))

    async with scripted_server(unavailable) as server:
        session = Session(
            credentials=Credentials("AKIDEXAMPLE", "secret"),
            region="us-east-1",
            retry=RetryPolicy(max_attempts=3, retry_after_max=_LONG_WAIT),
        )
        store = session.container(server.endpoint)
        error = await _closing_ends_the_call(
            session, store.describe_object("closed/a.bin"), lambda: len(server.requests) == 1
        )
        assert len(server.requests) == 1  # the retry was not sent either
    # As every error after a retry says: one attempt was made, and why it was retried.
    assert error.attempts == 1
    assert isinstance(error.__cause__, ServerError) and error.__cause__.status == 503


async def test_a_call_waiting_for_its_credentials_when_the_session_closes() -> None:
    import anyio

    from msd_async import Credentials

    asked = anyio.Event()
    given_up = anyio.Event()

    class Slow:
        async def get_credentials(self) -> Credentials:
            asked.set()
            try:
                await anyio.sleep(_LONG_WAIT)
            finally:
                given_up.set()  # a credential_process would be killed here
            return Credentials("AKIDEXAMPLE", "secret")

    session = Session(credentials=Slow(), region="us-east-1")
    store = session.container("http://127.0.0.1:9")
    error = await _closing_ends_the_call(
        session, store.describe_object("closed/a.bin"), asked.is_set
    )
    assert given_up.is_set()
    assert error.attempts == 0  # nothing was sent: counted as a CredentialsError is
