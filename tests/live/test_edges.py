"""The publisher's promises at its edges (issue 16, items 1-5 and 7): close, tasks, callbacks,
the gate, latest wins. Each test reproduces a break seen on the code before its fix."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import anyio
import pytest
from hls_text import ll_playlist

from msd_async import ContainerClient, RetryPolicy, Session
from msd_async.errors import ObjectNotFoundError
from msd_async.live import LivePublisher, ManifestInfo, PublishEvent, Status
from msd_async.testing import LocalMediaStore

pytestmark = pytest.mark.anyio


def media_playlist(
    segments: list[int], *, duration: float = 1.0, end: bool = False, init: bool = False
) -> bytes:
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-TARGETDURATION:1",
             f"#EXT-X-MEDIA-SEQUENCE:{segments[0] if segments else 0}"]
    if init:
        lines.append('#EXT-X-MAP:URI="init.mp4"')
    for n in segments:
        lines += [f"#EXTINF:{duration:.3f},", f"seg_{n}.m4s"]
    if end:
        lines.append("#EXT-X-ENDLIST")
    return ("\n".join(lines) + "\n").encode()


def _tasks() -> set[asyncio.Task[object]]:
    return {
        t for t in asyncio.all_tasks()
        if t is not asyncio.current_task()
        and "web_protocol" not in repr(getattr(t.get_coro(), "cr_code", t.get_coro()))
    }


# --- 1. close settles everything -------------------------------------------------------------


async def test_close_publishes_media_queued_behind_its_init_and_the_final_playlist(
    store: ContainerClient, mediastore_server: LocalMediaStore
) -> None:
    # The quick-start pattern: hand everything over and leave the block at once. The init is
    # slow, so the segment is still queued behind it when close begins.
    mediastore_server.faults.inject("delay", method="PUT", path="q/init.mp4", delay=0.3)
    async with LivePublisher(store, max_in_flight=1) as publisher:
        await publisher.publish("q/init.mp4", b"init")
        segs = [await publisher.publish(f"q/seg_{n}.m4s", b"s", duration=5.0) for n in range(3)]
        final = await publisher.publish("q/index.m3u8",
                                        media_playlist([0, 1, 2], init=True, end=True))
    assert [(await s.wait()).status for s in segs] == [Status.ACKNOWLEDGED] * 3
    assert (await final.wait()).acknowledged
    stored = await store.get_bytes("q/index.m3u8")
    assert b"#EXT-X-ENDLIST" in stored and b"#EXT-X-GAP" not in stored


async def test_a_delete_coming_due_during_close_does_not_break_it(
    store: ContainerClient, mediastore_server: LocalMediaStore
) -> None:
    events: list[PublishEvent] = []
    async with LivePublisher(store, on_event=events.append) as publisher:
        for n in range(3):
            await publisher.publish(f"dd/seg_{n}.m4s", b"s", duration=5.0)
            await (await publisher.publish(
                "dd/index.m3u8", media_playlist([n], duration=0.05))).wait()
        # seg_0 and seg_1 left the window: their deletes come due in about 0.1 s, while
        # close is still waiting for this slow final playlist.
        mediastore_server.faults.inject("delay", method="PUT", path="dd/index.m3u8",
                                        delay=0.6)
        final = await publisher.publish("dd/index.m3u8",
                                        media_playlist([2], duration=0.05, end=True))
        started = anyio.current_time()
        with anyio.fail_after(8):
            await publisher.aclose()
    assert anyio.current_time() - started < 5
    assert (await final.wait()).acknowledged
    assert b"#EXT-X-ENDLIST" in await store.get_bytes("dd/index.m3u8")


@pytest.fixture
async def origin(mediastore_server: LocalMediaStore) -> AsyncIterator[ContainerClient]:
    """A reader of the origin with its own session: it knows nothing the publisher knows."""
    async with Session(credentials=mediastore_server.credentials,
                       region=mediastore_server.region, retry=RetryPolicy.none()) as session:
        yield session.container(mediastore_server.endpoint)


def _delete_events(events: list[PublishEvent]) -> list[tuple[str, str]]:
    return [(e.kind, e.path) for e in events if e.kind in ("deleted", "delete-failed")]


async def _on_the_wire(server: LocalMediaStore, method: str, path: str) -> None:
    """Until the origin holds the request (a delay fault on it was applied)."""
    with anyio.fail_after(5):
        while ("delay", method, path) not in server.faults.history:  # noqa: ASYNC110 - state
            await anyio.sleep(0.01)


async def test_a_delete_already_due_is_carried_out_by_an_immediate_close(
    store: ContainerClient, origin: ContainerClient
) -> None:
    """``msd push`` and ``msd relay`` close right after their last hand-over: a delete due
    then must reach the origin, not be abandoned with those not due yet."""
    await origin.put_object("cd/gone.ts", b"never named")
    events: list[PublishEvent] = []
    publisher = LivePublisher(store, on_event=events.append, unknown_delete_delay=0)
    async with publisher:
        await publisher.delete("cd/gone.ts")  # due at once: no manifest ever named it
        await publisher.aclose()  # no await in between
    with pytest.raises(ObjectNotFoundError):
        await origin.describe_object("cd/gone.ts")
    assert _delete_events(events) == [("deleted", "cd/gone.ts")]
    stats = publisher.stats().destinations[0]
    assert (stats.deletes, stats.deletes_scheduled) == (1, 0)


async def test_a_requested_delete_whose_window_has_passed_is_carried_out_by_close(
    store: ContainerClient, origin: ContainerClient
) -> None:
    """The other way a delete is due when asked for: the object left its playlist longer
    ago than its delay (auto_delete off, so only the encoder's DELETE removes it)."""
    events: list[PublishEvent] = []
    async with LivePublisher(store, on_event=events.append, auto_delete=False) as publisher:
        await publisher.publish("cw/seg_0.m4s", b"s0", duration=5.0)
        await (await publisher.publish("cw/index.m3u8", media_playlist([0], duration=0.05))).wait()
        await publisher.publish("cw/seg_1.m4s", b"s1", duration=5.0)
        await (await publisher.publish("cw/index.m3u8", media_playlist([1], duration=0.05))).wait()
        await anyio.sleep(0.5)  # seg_0 left 0.05 + 0.05 s ago at most: its delay has passed
        assert await origin.describe_object("cw/seg_0.m4s")
        await publisher.delete("cw/seg_0.m4s")
        await publisher.aclose()
    with pytest.raises(ObjectNotFoundError):
        await origin.describe_object("cw/seg_0.m4s")
    assert await origin.describe_object("cw/seg_1.m4s")  # still named: never touched
    assert _delete_events(events) == [("deleted", "cw/seg_0.m4s")]


async def test_a_segment_the_final_playlist_drops_is_not_counted_as_scheduled(
    store: ContainerClient, origin: ContainerClient, mediastore_server: LocalMediaStore
) -> None:
    """The final playlist is stored during the close; what it drops is not deleted (no
    delete is due yet), so the stats must not report a delete scheduled after the close."""
    async with LivePublisher(store) as publisher:
        for n in range(2):
            await publisher.publish(f"cs/seg_{n}.m4s", b"s", duration=5.0)
            await (await publisher.publish("cs/index.m3u8", media_playlist([n]))).wait()
        mediastore_server.faults.inject("delay", method="PUT", path="cs/index.m3u8", delay=0.3)
        await publisher.publish("cs/seg_2.m4s", b"s", duration=5.0)
        final = await publisher.publish("cs/index.m3u8", media_playlist([2], end=True))
        await publisher.aclose()
    assert (await final.wait()).acknowledged
    assert await origin.describe_object("cs/seg_1.m4s")  # dropped during the close: kept
    stats = publisher.stats().destinations[0]
    assert (stats.deletes, stats.deletes_scheduled) == (0, 0)


async def test_a_delete_not_due_when_close_begins_is_abandoned(
    store: ContainerClient, origin: ContainerClient
) -> None:
    await origin.put_object("cn/kept.ts", b"never named")
    events: list[PublishEvent] = []
    publisher = LivePublisher(store, on_event=events.append, unknown_delete_delay=0.3)
    async with publisher:
        await publisher.delete("cn/kept.ts")
        await publisher.aclose()
    await anyio.sleep(0.6)  # past its due time: nothing of the publisher is left to send it
    assert await origin.get_bytes("cn/kept.ts") == b"never named"
    assert _delete_events(events) == []
    stats = publisher.stats().destinations[0]
    assert (stats.deletes, stats.deletes_scheduled) == (0, 0)


async def test_a_delete_on_the_wire_when_close_begins_is_finished(
    store: ContainerClient, origin: ContainerClient, mediastore_server: LocalMediaStore
) -> None:
    await origin.put_object("cf/slow.ts", b"never named")
    # The origin holds the DELETE before acting on it; a client that hangs up meanwhile
    # leaves the object in place.
    mediastore_server.faults.inject("delay", method="DELETE", path="cf/slow.ts", delay=0.5)
    events: list[PublishEvent] = []
    publisher = LivePublisher(store, on_event=events.append, unknown_delete_delay=0)
    async with publisher:
        await publisher.delete("cf/slow.ts")
        await _on_the_wire(mediastore_server, "DELETE", "cf/slow.ts")
        await publisher.aclose()
    with pytest.raises(ObjectNotFoundError):
        await origin.describe_object("cf/slow.ts")
    assert _delete_events(events) == [("deleted", "cf/slow.ts")]
    assert store.session.pool.in_use == 0


async def test_an_emergency_close_cuts_a_delete_on_the_wire(
    store: ContainerClient, origin: ContainerClient, mediastore_server: LocalMediaStore
) -> None:
    """``cancel=True`` (or an exception leaving the block) still waits for nothing."""
    await origin.put_object("ce/slow.ts", b"never named")
    mediastore_server.faults.inject("delay", method="DELETE", path="ce/slow.ts", delay=2.0)
    events: list[PublishEvent] = []
    publisher = LivePublisher(store, on_event=events.append, unknown_delete_delay=0)
    async with publisher:
        await publisher.delete("ce/slow.ts")
        await _on_the_wire(mediastore_server, "DELETE", "ce/slow.ts")
        started = anyio.current_time()
        await publisher.aclose(cancel=True)
    assert anyio.current_time() - started < 1.0
    await anyio.sleep(2.5)  # past the origin's hold: the cut request is not acted on
    assert await origin.get_bytes("ce/slow.ts") == b"never named"
    assert _delete_events(events) == []


# --- 2. aclose from any task -------------------------------------------------------------------


async def test_aclose_from_another_task_settles_and_stops_everything(
    store: ContainerClient, mediastore_server: LocalMediaStore
) -> None:
    before = _tasks()
    mediastore_server.faults.inject("delay", method="PUT", path="at/seg_0.m4s", delay=0.2)
    publisher = LivePublisher(store)
    await publisher.__aenter__()  # an application that opens it in its start-up code...
    seg = await publisher.publish("at/seg_0.m4s", b"s", duration=5.0)
    final = await publisher.publish("at/index.m3u8", media_playlist([0], end=True))

    async def shutdown_hook() -> None:  # ...and closes it from a shutdown hook's task
        await publisher.aclose()

    async with anyio.create_task_group() as tg:
        tg.start_soon(shutdown_hook)
    assert (await seg.wait()).acknowledged and (await final.wait()).acknowledged
    assert b"#EXT-X-ENDLIST" in await store.get_bytes("at/index.m3u8")
    assert _tasks() == before
    assert store.session.pool.in_use == 0
    await publisher.__aexit__(None, None, None)  # idempotent, from the opening task


async def test_a_close_timeout_that_is_no_duration_is_refused_before_anything_closes(
    store: ContainerClient, mediastore_server: LocalMediaStore
) -> None:
    # aclose(timeout=nan) used to close the publisher with no grace at all (the pending
    # object FAILED) and only then raise a bare ValueError from the deadline.
    from msd_async import InvalidParameterError

    mediastore_server.faults.inject("delay", method="PUT", path="nt/init.mp4", delay=0.3)
    async with LivePublisher(store) as publisher:
        init = await publisher.publish("nt/init.mp4", b"i")
        with pytest.raises(InvalidParameterError, match="timeout"):
            await publisher.aclose(timeout=float("nan"))
        await publisher.publish("nt/after.txt", b"a")  # still open
    assert (await init.wait()).acknowledged


async def test_aclose_from_a_task_inside_the_block(store: ContainerClient) -> None:
    async with LivePublisher(store) as publisher, anyio.create_task_group() as tg:
        await publisher.publish("ai/seg_0.m4s", b"s", duration=5.0)
        final = await publisher.publish("ai/index.m3u8", media_playlist([0], end=True))
        tg.start_soon(publisher.aclose)
    assert (await final.wait()).acknowledged


# --- 4. callbacks ------------------------------------------------------------------------------


async def test_a_raising_on_event_is_logged_and_changes_nothing(
    store: ContainerClient, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []

    def on_event(event: PublishEvent) -> None:
        calls.append(event.kind)
        raise RuntimeError("a bug in the application's callback")

    async with LivePublisher(store, on_event=on_event) as publisher:
        seg = await publisher.publish("cb/seg_0.m4s", b"s", duration=5.0)
        pl = await publisher.publish("cb/index.m3u8", media_playlist([0]))
        with anyio.fail_after(5):
            assert (await seg.wait()).acknowledged
            assert (await pl.wait()).acknowledged
        stats = publisher.stats()
    assert stats["media"].acknowledged == 1
    assert "acknowledged" in calls
    assert any("on_event" in r.getMessage() and r.levelno >= logging.ERROR
               for r in caplog.records)


# --- 5. every background task is guarded --------------------------------------------------------


class _BrokenBody:
    """An async iterable whose iterator cannot even be made (an application bug)."""

    def __aiter__(self) -> AsyncIterator[bytes]:
        raise RuntimeError("the body's iterator is broken")


async def test_a_task_that_fails_fails_its_publication_and_wakes_its_waiters(
    store: ContainerClient,
) -> None:
    async with LivePublisher(store, close_timeout=30) as publisher:
        pl = await publisher.publish("g5/index.m3u8", _BrokenBody())  # type: ignore[arg-type]
        seg = await publisher.publish("g5/seg_0.m4s", _BrokenBody(),  # type: ignore[arg-type]
                                      duration=30.0)
        with anyio.fail_after(5):
            out_pl = await pl.wait()
            out_seg = await seg.wait()
        after = await publisher.publish("g5/seg_1.m4s", b"s", duration=5.0)
        assert (await after.wait()).acknowledged
    for outcome in (out_pl, out_seg):
        assert outcome.status is Status.FAILED
        assert "iterator is broken" in (outcome.reason or "")


# --- 3. the gate keys on what was stored -----------------------------------------------------


def _held_part(release: anyio.Event, fail: bool = False) -> Callable[[], AsyncIterator[bytes]]:
    async def body() -> AsyncIterator[bytes]:
        yield b"first chunk"
        await release.wait()
        if fail:
            raise RuntimeError("the encoder crashed mid-part")
        yield b"last chunk"
    return body


async def test_a_hinted_part_listed_next_waits_for_its_upload(store: ContainerClient) -> None:
    release = anyio.Event()
    async with LivePublisher(store) as publisher:
        part = await publisher.publish("ll/part_0.m4s", _held_part(release)(), duration=10.0)
        hinted = await publisher.publish("ll/index.m3u8", ll_playlist([], "part_0.m4s"))
        with anyio.fail_after(5):
            assert (await hinted.wait()).acknowledged  # its upload started: that is enough
        listed = await publisher.publish("ll/index.m3u8", ll_playlist(["part_0.m4s"], None))
        await anyio.sleep(0.4)
        # listed as a part, it must be stored before a playlist says so
        assert not listed.done()
        release.set()
        assert (await part.wait()).acknowledged
        assert (await listed.wait()).acknowledged
    assert await store.get_bytes("ll/part_0.m4s") == b"first chunklast chunk"


async def test_a_hinted_part_that_fails_is_listed_as_a_gap(store: ContainerClient) -> None:
    release = anyio.Event()
    async with LivePublisher(store) as publisher:
        part = await publisher.publish("lg/part_0.m4s", _held_part(release, fail=True)(),
                                       duration=10.0)
        await (await publisher.publish("lg/index.m3u8", ll_playlist([], "part_0.m4s"))).wait()
        listed = await publisher.publish("lg/index.m3u8", ll_playlist(["part_0.m4s"], None))
        await anyio.sleep(0.2)
        release.set()
        assert (await part.wait()).status is Status.FAILED
        assert (await listed.wait()).acknowledged
    stored = (await store.get_bytes("lg/index.m3u8")).decode()
    assert '#EXT-X-PART:DURATION=0.5,URI="part_0.m4s",GAP=YES' in stored


class _Parses:
    """What each manifest the publisher parsed took from the stored version: how many
    references it inherited (0: none may be skipped), and whether it was read on from the
    stored version (its first reference the same object)."""

    def __init__(self) -> None:
        self.inherited: list[int] = []
        self.resumed: list[bool] = []


def _spy_on_parses(monkeypatch: pytest.MonkeyPatch) -> _Parses:
    import msd_async.live.destination as destination

    parses = _Parses()
    parse = destination.parse_manifest

    def spy(*args: object, **kwargs: object) -> ManifestInfo:
        info = parse(*args, **kwargs)  # type: ignore[arg-type]
        parses.inherited.append(info._inherited)
        previous = kwargs.get("previous")
        if isinstance(previous, ManifestInfo) and previous.references:
            first = next(iter(previous.references.values()))
            parses.resumed.append(next(iter(info.references.values()), None) is first)
        return info

    monkeypatch.setattr(destination, "parse_manifest", spy)
    return parses


async def test_a_version_that_only_adds_lines_still_waits_for_what_it_adds(
    store: ContainerClient, mediastore_server: LocalMediaStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An EVENT playlist's next version is read from where the stored one stopped: the
    segment it adds gates it all the same."""
    parses = _spy_on_parses(monkeypatch)
    mediastore_server.faults.inject("delay", method="PUT", path="ev/seg_1.m4s", delay=0.6)
    async with LivePublisher(store) as publisher:
        await publisher.publish("ev/seg_0.m4s", b"s0", duration=5.0)
        assert (await (await publisher.publish("ev/index.m3u8", media_playlist([0]))).wait()
                ).acknowledged
        seg = await publisher.publish("ev/seg_1.m4s", b"s1", duration=5.0)
        grown = await publisher.publish("ev/index.m3u8", media_playlist([0, 1]))
        await anyio.sleep(0.3)
        assert not grown.done()  # seg_1 is still on its way
        assert (await grown.wait()).acknowledged
        assert (await seg.wait()).latency < (await grown.wait()).latency  # type: ignore[operator]
    assert parses.inherited == [0, 1]  # the second version was read from the first's end
    assert await store.get_bytes("ev/index.m3u8") == media_playlist([0, 1])


def _growing_mpd(segments: int) -> bytes:
    return ('<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="dynamic"><Period><AdaptationSet>'
            '<Representation id="0" bandwidth="1"><SegmentTemplate timescale="1" '
            'initialization="init.mp4" media="s$Number$.m4s" startNumber="0"><SegmentTimeline>'
            f'<S t="0" d="1" r="{segments - 1}"/></SegmentTimeline></SegmentTemplate>'
            "</Representation></AdaptationSet></Period></MPD>").encode()


async def test_an_mpd_whose_timeline_grows_still_waits_for_what_it_adds(
    store: ContainerClient, mediastore_server: LocalMediaStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An MPD is read whole each time, but what the stored version named is not looked at
    again: the segment the new version adds gates it all the same."""
    parses = _spy_on_parses(monkeypatch)
    mediastore_server.faults.inject("delay", method="PUT", path="dd/s1.m4s", delay=0.6)
    async with LivePublisher(store) as publisher:
        await publisher.publish("dd/init.mp4", b"i")
        await publisher.publish("dd/s0.m4s", b"s0", duration=5.0)
        assert (await (await publisher.publish("dd/stream.mpd", _growing_mpd(1))).wait()
                ).acknowledged
        seg = await publisher.publish("dd/s1.m4s", b"s1", duration=5.0)
        grown = await publisher.publish("dd/stream.mpd", _growing_mpd(2))
        await anyio.sleep(0.3)
        assert not grown.done()  # s1 is still on its way
        assert (await grown.wait()).acknowledged
        assert (await seg.wait()).latency < (await grown.wait()).latency  # type: ignore[operator]
    assert parses.inherited == [0, 2]  # the init and s0 were the stored version's


async def test_a_hint_in_the_stored_version_is_checked_again_in_one_that_adds_lines(
    store: ContainerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one kind of reference a version waits for again though the stored one named it
    the same way: a hint to a part whose upload has not started stays left out."""
    parses = _spy_on_parses(monkeypatch)
    # Lines ended by CR alone: the playlist is read on from its very end, the hint in
    # what it reads on from (with LF, it would read on from before the hint line).
    first = ll_playlist(["part_8.m4s"], "part_9.m4s").replace(b"\n", b"\r")
    async with LivePublisher(store) as publisher:
        await publisher.publish("lh/part_8.m4s", b"p8", duration=5.0)
        assert (await (await publisher.publish("lh/index.m3u8", first)).wait()).acknowledged
        await publisher.publish("lh/seg_0.m4s", b"s0", duration=5.0)
        grown = first + b"#EXTINF:2.0,\rseg_0.m4s\r"
        assert (await (await publisher.publish("lh/index.m3u8", grown)).wait()).acknowledged
    assert parses.resumed == [True]
    assert parses.inherited == [0, 0]  # read on from the first, but a hint was in it
    stored = await store.get_bytes("lh/index.m3u8")
    assert b"seg_0.m4s" in stored and b"part_9.m4s" not in stored


# --- 7. latest wins, always -------------------------------------------------------------------


class _FixedBackoff(RetryPolicy):
    """Backoff without jitter, so a test knows when the retry comes."""

    __slots__ = ()

    def backoff(self, retry_index: int, rng: Callable[[], float] = lambda: 1.0) -> float:
        return self.backoff_initial


async def test_a_version_in_backoff_is_superseded_by_a_newer_one_at_once(
    store: ContainerClient, mediastore_server: LocalMediaStore
) -> None:
    acked: list[str] = []
    retrying = anyio.Event()

    def on_event(event: PublishEvent) -> None:
        if event.kind == "acknowledged" and event.path == "lw/index.m3u8":
            acked.append("ack")
        if event.kind == "retried":
            retrying.set()

    mediastore_server.faults.inject("503", method="PUT", path="lw/index.m3u8", times=1)
    await store.put_object("lw/seg_0.m4s", b"s")
    retry = _FixedBackoff(backoff_initial=2.0, backoff_max=2.0)
    async with LivePublisher(store, retry=retry, on_event=on_event) as publisher:
        old = await publisher.publish("lw/index.m3u8", media_playlist([0]) + b"# old\n")
        with anyio.fail_after(5):
            await retrying.wait()
        await anyio.sleep(0.1)  # the old version is sleeping in its 2 s backoff now
        new = await publisher.publish("lw/index.m3u8", media_playlist([0], end=True))
        with anyio.fail_after(1.5):  # well before the old version's backoff ends
            assert (await new.wait()).acknowledged
        assert (await old.wait()).status is Status.SUPERSEDED
    assert acked == ["ack"]
    assert b"#EXT-X-ENDLIST" in await store.get_bytes("lw/index.m3u8")


# --- 6. a manifest that does not parse is stored as given -------------------------------------


async def test_an_mpd_the_parser_cannot_read_is_stored_as_given(store: ContainerClient) -> None:
    mpd = (b'<MPD type="dynamic"><Period><AdaptationSet><Representation id="0">'
           b'<SegmentTemplate media="s$Number$.m4s" timescale="0" duration="2"/>'
           b"</Representation></AdaptationSet></Period></MPD>")
    async with LivePublisher(store) as publisher:
        pub = await publisher.publish("bad/stream.mpd", mpd)
        with anyio.fail_after(5):
            assert (await pub.wait()).acknowledged
    assert await store.get_bytes("bad/stream.mpd") == mpd
