"""The Session's edges: an endpoint URL it cannot use, a credentials provider that fails,
answers something else or hangs, and a Session used from a second event loop. Each ends
in a typed error that says what to do, with nothing sent and no pool slot held."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterator

import anyio
import pytest
from serve_process import ServeProcess, start_serve

from msd_async import (
    Credentials,
    CredentialsError,
    InvalidParameterError,
    MediaStoreError,
    Session,
    Timeouts,
    WrongEventLoopError,
)
from msd_async.testing import LocalMediaStore

# --- the endpoint ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_an_endpoint_with_user_info_is_refused_without_echoing_it() -> None:
    """It was accepted and silently dropped, and every request event carried it: a
    tracing span's url.full held the password."""
    async with Session(credentials=Credentials("a", "b"), region="us-east-1") as session:
        with pytest.raises(InvalidParameterError) as info:
            session.container("http://user:s3cr3t@127.0.0.1:9000")
    assert info.value.rule == "endpoint.form"
    assert "user info" in str(info.value) and "credentials" in str(info.value)
    assert "s3cr3t" not in str(info.value) and "***@127.0.0.1:9000" in str(info.value)


@pytest.mark.anyio
async def test_the_region_error_does_not_echo_user_info(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    async with Session(credentials=Credentials("a", "b")) as session:
        with pytest.raises(InvalidParameterError) as info:
            session.container("http://user:s3cr3t@127.0.0.1:9000")
    assert info.value.rule == "region.required"
    assert "s3cr3t" not in str(info.value)


@pytest.mark.anyio
@pytest.mark.parametrize("endpoint", ["http://[::1", "http://h:99999", "http://h:-1"])
async def test_a_malformed_endpoint_is_a_typed_error(endpoint: str) -> None:
    """``http://[::1`` raised urllib's bare ValueError (the CLI printed "run with --debug")."""
    async with Session(credentials=Credentials("a", "b"), region="us-east-1") as session:
        with pytest.raises(InvalidParameterError) as info:
            session.container(endpoint)
    assert info.value.rule == "endpoint.form"
    assert "https://HOST[:PORT]" in str(info.value)


# --- the credentials provider ------------------------------------------------------------


class Failing:
    async def get_credentials(self) -> Credentials:
        raise RuntimeError("vault sealed")


class Wrong:
    async def get_credentials(self) -> Credentials:
        return ("AKID", "secret")  # type: ignore[return-value]


class Hanging:
    async def get_credentials(self) -> Credentials:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")


class OwnTimeout:
    async def get_credentials(self) -> Credentials:
        raise TimeoutError("metadata endpoint timed out")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("provider", "says"),
    [
        (Failing(), "the credentials provider Failing failed (RuntimeError: vault sealed)"),
        (Wrong(), "the credentials provider Wrong returned a tuple, not msd_async.Credentials"),
        (Hanging(), "the credentials provider Hanging did not answer within 0.2 s"),
        (OwnTimeout(), "the credentials provider OwnTimeout failed (TimeoutError: metadata"),
    ],
    ids=["raises", "returns-a-tuple", "hangs", "times-out-itself"],
)
async def test_a_provider_that_fails_is_a_credentials_error(
    mediastore_server: LocalMediaStore,
    server_requests: list[logging.LogRecord],
    provider: object,
    says: str,
) -> None:
    """Before, the provider's RuntimeError (or the signer's TypeError on a tuple) came out
    as it was, not a MediaStoreError, and a provider that hung held every call forever."""
    async with Session(
        credentials=provider,  # type: ignore[arg-type]
        region=mediastore_server.region,
        timeouts=Timeouts(credentials=0.2),
    ) as session:
        store = session.container(mediastore_server.endpoint)
        for call in (store.describe_object("x/a.ts"), store.presign_get("x/a.ts")):
            # Bounded by Timeouts.credentials (0.2 s): fail_after only catches a hang.
            with anyio.fail_after(60), pytest.raises(CredentialsError) as info:
                await call
            assert says in str(info.value), str(info.value)
            assert isinstance(info.value, MediaStoreError)
        assert session.pool.in_use == 0
    assert server_requests == []


def test_the_credentials_timeout_is_validated() -> None:
    with pytest.raises(InvalidParameterError) as info:
        Timeouts(credentials=0)
    assert info.value.rule == "timeouts.credentials"
    assert Timeouts().credentials == 60.0
    assert Timeouts(credentials=None).credentials is None


# --- a second event loop -------------------------------------------------------------------


@pytest.fixture(scope="module")
def serve() -> Iterator[ServeProcess]:
    """``msd serve`` in its own process: the test drives event loops of its own."""
    server = start_serve("--no-fsync", "--quiet")
    yield server
    server.stop()


def test_a_session_used_from_a_second_event_loop_says_so(serve: ServeProcess) -> None:
    """The second ``asyncio.run`` failed deep in aiohttp ("Event loop is closed", or a
    hang on the first loop's connection); now it is refused before anything is sent, and
    the session goes on working on its own loop."""
    session = Session(
        credentials=Credentials(
            serve.exports["AWS_ACCESS_KEY_ID"], serve.exports["AWS_SECRET_ACCESS_KEY"]
        ),
        region=serve.exports["AWS_REGION"],
    )
    store = session.container(serve.endpoint)
    first = asyncio.new_event_loop()
    try:
        first.run_until_complete(store.put_object("loops/a.txt", b"a"))

        async def from_another_loop() -> bytes:
            return await asyncio.wait_for(store.get_bytes("loops/a.txt"), 60)

        with pytest.raises(WrongEventLoopError, match="one Session per event loop") as info:
            asyncio.run(from_another_loop())
        assert isinstance(info.value, RuntimeError)
        assert info.value.attempts == 0  # refused before anything was sent
        assert first.run_until_complete(store.get_bytes("loops/a.txt")) == b"a"
        assert session.pool.in_use == 0
    finally:
        first.run_until_complete(session.aclose())
        first.close()


class Refreshing:
    """Answers at once while its keys are fresh; every third call waits for a refresh
    (cleaning up if it is cancelled meanwhile)."""

    def __init__(self, keys: Credentials, wait: float) -> None:
        self.keys, self.wait = keys, wait
        self.calls = self.refreshes = self.cleaned = 0

    async def get_credentials(self) -> Credentials:
        self.calls += 1
        if self.calls % 3 == 1:
            try:
                await anyio.sleep(self.wait)
            finally:
                self.cleaned += 1
            self.refreshes += 1
        return self.keys


@pytest.mark.anyio
async def test_a_provider_that_waits_to_refresh_is_awaited_and_bounded(
    mediastore_server: LocalMediaStore,
) -> None:
    """A provider that answers at once is taken without a timer; one that waits is awaited
    to its end under Timeouts.credentials: a refresh within the bound signs as usual, one
    past it is a CredentialsError, and the provider's own cleanup runs when it is cut."""
    quick = Refreshing(mediastore_server.credentials, wait=0.05)
    async with Session(
        credentials=quick, region=mediastore_server.region, timeouts=Timeouts(credentials=30)
    ) as session:
        store = session.container(mediastore_server.endpoint)
        await store.put_object("x/a.ts", b"a")
        for _ in range(5):
            assert (await store.describe_object("x/a.ts")).content_length == 1
    assert (quick.calls, quick.refreshes, quick.cleaned) == (6, 2, 2)

    slow = Refreshing(mediastore_server.credentials, wait=60)
    async with Session(
        credentials=slow, region=mediastore_server.region, timeouts=Timeouts(credentials=0.2)
    ) as session:
        store = session.container(mediastore_server.endpoint)
        with anyio.fail_after(30), pytest.raises(CredentialsError, match=r"within 0\.2 s"):
            await store.describe_object("x/a.ts")
        assert slow.cleaned == 1 and slow.refreshes == 0
        assert session.pool.in_use == 0


class FutureProvider:
    """``get_credentials()`` returns an awaitable that is not a coroutine (a future)."""

    def __init__(self, keys: Credentials) -> None:
        self.keys = keys

    def get_credentials(self) -> Awaitable[Credentials]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Credentials] = loop.create_future()
        loop.call_later(0.01, future.set_result, self.keys)
        return future


@pytest.mark.anyio
async def test_a_provider_returning_another_awaitable_is_awaited(
    mediastore_server: LocalMediaStore,
) -> None:
    async with Session(
        credentials=FutureProvider(mediastore_server.credentials),  # type: ignore[arg-type]
        region=mediastore_server.region,
    ) as session:
        store = session.container(mediastore_server.endpoint)
        await store.put_object("x/f.ts", b"f")
        assert (await store.describe_object("x/f.ts")).content_length == 1
