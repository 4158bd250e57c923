"""Session event hooks, the per-call retry policy, and the shared content-type table."""

from __future__ import annotations

import pytest

import msd_async
from msd_async import RequestEvent, RetryPolicy, ServerError, Session, content_type_for
from msd_async.testing import LocalMediaStore

pytestmark = pytest.mark.anyio

FAST = RetryPolicy(max_attempts=3, backoff_initial=0.001, backoff_max=0.002)


async def test_hooks_see_start_response_error_and_retry_with_attempt_numbers(
    mediastore_server: LocalMediaStore,
) -> None:
    events: list[RequestEvent] = []
    async with Session(
        credentials=mediastore_server.credentials,
        region=mediastore_server.region,
        retry=FAST,
        event_hooks=[events.append],
    ) as session:
        store = session.container(mediastore_server.endpoint)
        mediastore_server.faults.inject("503", method="PUT", path="live/a.ts")
        await store.put_object("live/a.ts", b"x" * 100)
        await store.describe_object("live/a.ts")
        [item] = [i async for i in store.list_items("live")]
        assert item.name == "a.ts"
        await store.delete_object("live/a.ts")

    kinds = [(e.operation, e.kind, e.attempt, e.status) for e in events]
    assert kinds == [
        ("PutObject", "start", 1, None),
        ("PutObject", "error", 1, 503),
        ("PutObject", "retry", 1, 503),
        ("PutObject", "start", 2, None),
        ("PutObject", "response", 2, 200),
        ("DescribeObject", "start", 1, None),
        ("DescribeObject", "response", 1, 200),
        ("ListItems", "start", 1, None),
        ("ListItems", "response", 1, 200),
        ("DeleteObject", "start", 1, None),
        ("DeleteObject", "response", 1, 200),
    ]
    assert {e.path for e in events if e.operation != "ListItems"} == {"live/a.ts"}
    assert [e.path for e in events if e.operation == "ListItems"] == ["live", "live"]
    assert all(e.endpoint == mediastore_server.endpoint for e in events)
    error = events[1]
    assert isinstance(error.error, ServerError)
    retry = events[2]
    assert retry.delay is not None and 0 <= retry.delay <= FAST.backoff_max
    assert all(e.elapsed >= 0 for e in events)


async def test_a_failing_hook_reaches_the_caller_unchanged_and_is_not_retried(
    mediastore_server: LocalMediaStore,
) -> None:
    calls = 0

    class HookFailed(Exception):
        pass

    def hook(event: RequestEvent) -> None:
        nonlocal calls
        calls += 1
        raise HookFailed

    async with Session(
        credentials=mediastore_server.credentials,
        region=mediastore_server.region,
        retry=FAST,
        event_hooks=[hook],
    ) as session:
        store = session.container(mediastore_server.endpoint)
        with pytest.raises(HookFailed):
            await store.describe_object("nothing/here")
        assert calls == 1
        assert session.pool.in_use == 0
        session.event_hooks.remove(hook)
        with pytest.raises(msd_async.ObjectNotFoundError):
            await store.describe_object("nothing/here")


async def test_per_call_retry_policy_overrides_the_sessions(
    mediastore_server: LocalMediaStore,
) -> None:
    async with Session(
        credentials=mediastore_server.credentials,
        region=mediastore_server.region,
        retry=FAST,
    ) as session:
        store = session.container(mediastore_server.endpoint)
        mediastore_server.faults.inject("500", method="PUT", path="a.ts", times=1)
        with pytest.raises(ServerError) as raised:
            await store.put_object("a.ts", b"1", retry=RetryPolicy.none())
        assert raised.value.attempts == 1
        mediastore_server.faults.inject("500", method="HEAD", path="a.ts", times=2)
        with pytest.raises(msd_async.ObjectNotFoundError) as missing:
            await store.describe_object("a.ts", retry=FAST)
        assert missing.value.attempts == 3
        mediastore_server.faults.inject("500", method="PUT", path="a.ts", times=2)
        await store.put_object("a.ts", b"1")  # the session's policy: 3 attempts
        mediastore_server.faults.inject("503", method="GET", path="a.ts", times=1)
        with pytest.raises(ServerError):
            await store.get_bytes("a.ts", retry=RetryPolicy.none())
        assert await store.get_bytes("a.ts", retry=FAST) == b"1"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("live/720p/index.m3u8", "application/vnd.apple.mpegurl"),
        ("LIVE/INDEX.M3U8", "application/vnd.apple.mpegurl"),
        ("dash/manifest.mpd", "application/dash+xml"),
        ("a/seg_1.ts", "video/MP2T"),
        ("a/seg_1.m4s", "video/iso.segment"),
        ("a/video.cmfv", "video/mp4"),
        ("a/audio.cmfa", "audio/mp4"),
        ("a/init.init", "video/mp4"),
        ("a/subs.vtt", "text/vtt"),
        ("a/k.key", "application/octet-stream"),
        ("a/noext", None),
        ("a/.hidden", None),
        ("a.dir/noext", None),
        ("a/file.unknownext", None),
    ],
)
def test_content_type_for(path: str, expected: str | None) -> None:
    assert content_type_for(path) == expected
    assert content_type_for(path, "application/octet-stream") == (
        expected or "application/octet-stream"
    )
