"""The public surface the core promises: a typed get_object, a readable pool, and a session
whose public attributes reach the clients it already handed out."""

from __future__ import annotations

import inspect
import typing

import pytest

import msd_async
from msd_async import (
    ContainerClient,
    Limits,
    ObjectDownload,
    RequestEvent,
    RetryPolicy,
    ServerError,
    Session,
)
from msd_async import client as client_module
from msd_async.testing import LocalMediaStore

pytestmark = pytest.mark.anyio


def test_get_object_has_a_public_return_type() -> None:
    assert "ObjectDownload" in msd_async.__all__
    hints = typing.get_type_hints(ContainerClient.get_object)
    assert hints["return"] is ObjectDownload
    assert ObjectDownload.__name__ == "ObjectDownload"
    assert ObjectDownload.__doc__


def test_the_client_does_not_reach_into_the_session() -> None:
    source = inspect.getsource(client_module)
    for private in ("_session", "_credentials", "_transport", "_retry_budget"):
        assert f".{private}" not in source, private


async def test_the_pool_has_a_readable_repr(mediastore_server: LocalMediaStore) -> None:
    async with Session(
        credentials=mediastore_server.credentials,
        region=mediastore_server.region,
        limits=Limits(max_connections=3, max_connections_per_host=2),
    ) as session:
        assert repr(session.pool) == (
            "<Pool in_use=0 idle=0 waiting=0 max_connections=3 max_connections_per_host=2>"
        )
        store = session.container(mediastore_server.endpoint)
        await store.put_object("r/a.bin", b"a")
        async with store.get_object("r/a.bin"):
            assert "in_use=1" in repr(session.pool)
        assert "idle=1" in repr(session.pool)


async def test_session_attributes_reach_existing_clients(
    mediastore_server: LocalMediaStore,
) -> None:
    async with Session(
        credentials=mediastore_server.credentials,
        region=mediastore_server.region,
        retry=RetryPolicy(max_attempts=5, backoff_initial=0.001, backoff_max=0.001),
    ) as session:
        store = session.container(mediastore_server.endpoint)
        session.retry = RetryPolicy.none()
        mediastore_server.faults.inject("503", times=None, method="HEAD")
        with pytest.raises(ServerError) as caught:
            await store.describe_object("r/a.bin")
        assert caught.value.attempts == 1
        seen: list[RequestEvent] = []
        session.event_hooks = [seen.append]
        with pytest.raises(ServerError):
            await store.describe_object("r/a.bin")
        assert [e.kind for e in seen] == ["start", "error"]
        session.event_hooks.clear()
        with pytest.raises(ServerError):
            await store.describe_object("r/a.bin")
        assert len(seen) == 2
