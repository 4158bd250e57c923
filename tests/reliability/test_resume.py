"""Downloads cut mid-body resume with a Range from where they stopped, if the object is
unchanged; a replaced object is reported, never spliced."""

from __future__ import annotations

import os

import pytest

from msd_async import (
    ConnectionLostError,
    ContainerClient,
    ObjectChangedError,
    RetryPolicy,
    ServerError,
    Session,
)
from msd_async.testing import LocalMediaStore

pytestmark = pytest.mark.anyio

DATA = os.urandom(300_000)
PATH = "vod/movie.mp4"


@pytest.fixture
async def store(session: Session, mediastore_server: LocalMediaStore) -> ContainerClient:
    store = session.container(mediastore_server.endpoint)
    await store.put_object(PATH, DATA)
    return store


def _gets(server: LocalMediaStore) -> list[str]:
    return [kind for kind, method, _ in server.faults.history if method == "GET"]


@pytest.mark.parametrize("cuts", [1, 2, 3])
async def test_cut_download_continues_where_it_stopped(
    store: ContainerClient, mediastore_server: LocalMediaStore, session: Session, cuts: int
) -> None:
    mediastore_server.faults.inject(
        "cut-download", times=cuts, method="GET", path=PATH, after_bytes=40_000
    )
    received = bytearray()
    async with store.get_object(PATH) as obj:
        etag = obj.etag
        async for chunk in obj:
            received += chunk
        assert obj.resumes == cuts
        assert obj.bytes_received == len(DATA)
        # The caller's view never changed: still the first response's metadata.
        assert obj.status == 200 and obj.etag == etag and obj.content_length == len(DATA)
    assert bytes(received) == DATA
    assert _gets(mediastore_server) == ["cut-download"] * cuts
    assert session.pool.in_use == 0


async def test_resume_survives_a_server_error_on_the_ranged_request(
    store: ContainerClient, mediastore_server: LocalMediaStore
) -> None:
    mediastore_server.faults.inject(
        "cut-download", method="GET", path=PATH, after_bytes=10_000
    )
    mediastore_server.faults.inject("503", times=2, method="GET", path=PATH)
    async with store.get_object(PATH) as obj:
        assert await obj.read() == DATA
        assert obj.resumes == 1
    assert _gets(mediastore_server) == ["cut-download", "503", "503"]


async def test_too_many_cuts_raise_connection_lost_and_release_the_connection(
    store: ContainerClient, mediastore_server: LocalMediaStore, session: Session
) -> None:
    mediastore_server.faults.inject(
        "cut-download", times=None, method="GET", path=PATH, after_bytes=1_000
    )
    async with store.get_object(PATH, max_resumes=2) as obj:
        with pytest.raises(ConnectionLostError) as info:
            await obj.read()
        assert obj.resumes == 2
        # The first request and both resumes were sent (it said 0: "nothing sent").
        assert info.value.attempts == 3
        # A broken stream stays broken: no silent end-of-body afterwards.
        assert obj.bytes_received < len(DATA)
    assert session.pool.in_use == 0


async def test_object_replaced_between_cut_and_resume_raises_object_changed(
    store: ContainerClient, mediastore_server: LocalMediaStore, session: Session
) -> None:
    mediastore_server.faults.inject(
        "cut-download", method="GET", path=PATH, after_bytes=5_000
    )
    new = os.urandom(len(DATA))
    async with store.get_object(PATH) as obj:
        first = await obj.receive()
        assert 0 < len(first) <= 5_000
        replaced = await store.put_object(PATH, new)
        with pytest.raises(ObjectChangedError) as caught:
            async for _ in obj:
                pass
    exc = caught.value
    assert exc.expected_etag == obj.etag
    assert exc.actual_etag == replaced.etag != obj.etag
    assert isinstance(exc.__cause__, ConnectionLostError)
    assert session.pool.in_use == 0
    # The new version is intact; nothing was spliced into it.
    assert await store.get_bytes(PATH) == new


@pytest.mark.parametrize(
    ("byte_range", "expected"),
    [
        ((1_000, 150_000), DATA[1_000:150_001]),
        ((250_000, None), DATA[250_000:]),
        ((None, 120_000), DATA[-120_000:]),
        ((0, 299_999), DATA),
    ],
    ids=["closed", "open-ended", "suffix", "whole"],
)
async def test_range_download_resumes_within_its_range(
    store: ContainerClient,
    mediastore_server: LocalMediaStore,
    byte_range: tuple[int | None, int | None],
    expected: bytes,
) -> None:
    mediastore_server.faults.inject(
        "cut-download", times=2, method="GET", path=PATH, after_bytes=7_000
    )
    async with store.get_object(PATH, range=byte_range) as obj:
        assert obj.status == 206
        content_range = obj.content_range
        got = await obj.read()
        assert obj.resumes == 2
        # The reported range is the one asked for, not the resumed remainder.
        assert obj.content_range == content_range
    assert got == expected


async def test_no_resume_when_disabled(
    store: ContainerClient, mediastore_server: LocalMediaStore
) -> None:
    mediastore_server.faults.inject("cut-download", method="GET", path=PATH, after_bytes=500)
    async with store.get_object(PATH, max_resumes=0) as obj:
        with pytest.raises(ConnectionLostError) as info:
            await obj.read()
        assert obj.resumes == 0
        assert info.value.attempts == 1


async def test_a_stream_error_counts_the_retries_of_its_request_and_its_resumes(
    store: ContainerClient, mediastore_server: LocalMediaStore
) -> None:
    """A body cut for good said ``1 + resumes`` attempts, whatever the request and its
    resumes had retried: here the GET got a 503 first, so three attempts reached the
    server, not two."""
    mediastore_server.faults.inject("503", method="GET", path=PATH)
    mediastore_server.faults.inject(
        "cut-download", times=None, method="GET", path=PATH, after_bytes=1_000
    )
    async with store.get_object(PATH, max_resumes=1) as obj:
        with pytest.raises(ConnectionLostError) as info:
            await obj.read()
        assert obj.resumes == 1
    assert _gets(mediastore_server) == ["503", "cut-download", "cut-download"]
    assert info.value.attempts == 3


async def test_a_failed_resume_counts_what_the_download_made_before_it(
    store: ContainerClient, mediastore_server: LocalMediaStore
) -> None:
    """A resume that gave up after its retries said only its own attempts, as if the
    request whose body was cut had not been sent."""
    mediastore_server.faults.inject(
        "cut-download", method="GET", path=PATH, after_bytes=1_000
    )
    mediastore_server.faults.inject("503", times=None, method="GET", path=PATH)
    twice = RetryPolicy(max_attempts=2, backoff_initial=0)
    async with store.get_object(PATH, retry=twice) as obj:
        with pytest.raises(ServerError) as info:
            await obj.read()
    assert _gets(mediastore_server) == ["cut-download", "503", "503"]
    assert info.value.attempts == 3
