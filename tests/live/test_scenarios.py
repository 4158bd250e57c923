"""The issue's scenarios (a)-(g) against the local server with injected faults and delays."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import anyio
import pytest

from msd_async import ContainerClient, ObjectNotFoundError, RetryPolicy, Session
from msd_async.live import (
    LivePublisher,
    Publication,
    PublishEvent,
    Status,
    parse_manifest,
)
from msd_async.testing import LocalMediaStore

pytestmark = pytest.mark.anyio


def media_playlist(
    segments: list[int], *, duration: float = 0.5, end: bool = False, target: int = 1
) -> bytes:
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", f"#EXT-X-TARGETDURATION:{target}",
             f"#EXT-X-MEDIA-SEQUENCE:{segments[0] if segments else 0}"]
    for n in segments:
        lines += [f"#EXTINF:{duration:.3f},", f"seg_{n}.ts"]
    if end:
        lines.append("#EXT-X-ENDLIST")
    return ("\n".join(lines) + "\n").encode()


async def client_for(server: LocalMediaStore) -> tuple[Session, ContainerClient]:
    session = Session(
        credentials=server.credentials, region=server.region, retry=RetryPolicy.none()
    )
    return session, session.container(server.endpoint)


async def until(predicate: object, within: float) -> None:
    """Poll ``predicate()`` (state another task owns) until true, within ``within`` s."""
    assert callable(predicate)
    with anyio.fail_after(within):
        while not predicate():  # noqa: ASYNC110 - nothing to wait on but the state
            await anyio.sleep(0.02)


class Checker:
    """An independent reader: polls the playlist and GETs every object it names at once."""

    def __init__(self, store: ContainerClient, playlist: str) -> None:
        self.store = store
        self.playlist = playlist
        self.versions = 0
        self.checked = 0
        self.missing: list[str] = []
        self.ended = False

    async def run(self) -> None:
        while not self.ended:
            try:
                body = await self.store.get_bytes(self.playlist)
            except ObjectNotFoundError:
                await anyio.sleep(0.01)
                continue
            self.versions += 1
            info = parse_manifest(self.playlist, body)
            for path, ref in info.references.items():
                if ref.gap:
                    continue
                try:
                    await self.store.describe_object(path)
                    self.checked += 1
                except ObjectNotFoundError:
                    self.missing.append(path)
            self.ended = info.ended
            await anyio.sleep(0.01)


# (a) ---------------------------------------------------------------------------------------


async def test_a_no_playlist_names_a_missing_segment(
    store: ContainerClient, mediastore_server: LocalMediaStore
) -> None:
    faults = mediastore_server.faults
    faults.inject("delay", method="PUT", path="a/seg_2.ts", delay=0.3)
    faults.inject("503", method="PUT", path="a/seg_3.ts", times=2)
    faults.inject("cut-upload", method="PUT", path="a/seg_4.ts", after_bytes=100)
    faults.inject("500", method="PUT", path="a/seg_5.ts")  # then, on the retry:
    faults.inject("delay", method="PUT", path="a/seg_5.ts", delay=0.2)
    faults.inject("throttle", method="PUT", path="a/seg_6.ts")
    reader_session, reader_store = await client_for(mediastore_server)
    checker = Checker(reader_store, "a/index.m3u8")
    async with reader_session, anyio.create_task_group() as tg:
        tg.start_soon(checker.run)
        async with LivePublisher(store, auto_delete=False) as publisher:
            pubs: list[Publication] = []
            for n in range(10):
                pubs.append(await publisher.publish(f"a/seg_{n}.ts", b"s" * 5000, duration=2.0))
                window = list(range(max(0, n - 3), n + 1))
                await publisher.publish("a/index.m3u8", media_playlist(window, end=n == 9))
                await anyio.sleep(0.1)
        await until(lambda: checker.ended, 10)
    assert {kind for kind, _, _ in faults.history} >= {"delay", "503", "cut-upload", "500"}
    assert [(await p.wait()).status for p in pubs] == [Status.ACKNOWLEDGED] * 10
    assert checker.missing == []
    assert checker.versions >= 5 and checker.checked >= 20


# (b) ---------------------------------------------------------------------------------------


async def test_b_latest_manifest_wins_under_a_burst_with_failures(
    store: ContainerClient, mediastore_server: LocalMediaStore
) -> None:
    faults = mediastore_server.faults
    faults.inject("503", method="PUT", path="b/index.m3u8", times=4)
    faults.inject("delay", method="PUT", path="b/index.m3u8", delay=0.2, times=2)
    faults.inject("cut-upload", method="PUT", path="b/index.m3u8", times=1)
    acked: list[bytes] = []
    versions: dict[int, bytes] = {}

    async with LivePublisher(store) as publisher:
        await (await publisher.publish("b/seg_0.ts", b"0", duration=5.0)).wait()
        pubs = []
        for v in range(30):
            body = media_playlist([0], end=v == 29) + f"# version {v}\n".encode()
            versions[v] = body
            pubs.append(await publisher.publish("b/index.m3u8", body))
            if v % 5 == 0:
                await anyio.sleep(0.05)
        outcomes = [await p.wait() for p in pubs]
    for v, outcome in enumerate(outcomes):
        assert outcome.status in (Status.ACKNOWLEDGED, Status.SUPERSEDED), (v, outcome)
        if outcome.acknowledged:
            acked.append(versions[v])
    assert outcomes[-1].acknowledged
    assert Status.SUPERSEDED in {o.status for o in outcomes}
    stored = await store.get_bytes("b/index.m3u8")
    assert stored == versions[29] and b"#EXT-X-ENDLIST" in stored
    # Acknowledgements came in version order: never an older one after a newer one.
    order = [v for v, o in enumerate(outcomes) if o.acknowledged]
    ack_latency = [outcomes[v].destinations[0].latency for v in order]
    assert all(a is not None for a in ack_latency)
    assert order == sorted(order)


# (c) ---------------------------------------------------------------------------------------


async def test_c_media_past_its_deadline_is_dropped_and_the_stream_goes_on(
    store: ContainerClient, mediastore_server: LocalMediaStore
) -> None:
    mediastore_server.faults.inject("delay", method="PUT", path="c/seg_1.ts", delay=3.0,
                                    times=None)
    events: list[PublishEvent] = []
    async with LivePublisher(store, on_event=events.append, auto_delete=False) as publisher:
        seg0 = await publisher.publish("c/seg_0.ts", b"0" * 100, duration=0.4)
        seg1 = await publisher.publish("c/seg_1.ts", b"1" * 100, duration=0.4)
        seg2 = await publisher.publish("c/seg_2.ts", b"2" * 100, duration=0.4)
        playlist = await publisher.publish("c/index.m3u8", media_playlist([0, 1, 2]))
        with anyio.fail_after(5):
            out1 = await seg1.wait()
            out_pl = await playlist.wait()
        later = await publisher.publish("c/seg_3.ts", b"3", duration=0.4)
        await publisher.publish("c/index.m3u8", media_playlist([1, 2, 3]))
        assert (await later.wait()).acknowledged
    assert (await seg0.wait()).acknowledged and (await seg2.wait()).acknowledged
    assert out1.status is Status.DROPPED and "deadline" in (out1.reason or "")
    assert out_pl.acknowledged
    # the playlist went out once seg_1 was given up (0.4 s), not after the origin's 3 s
    assert out_pl.latency is not None and out_pl.latency < 2.0
    stored = (await store.get_bytes("c/index.m3u8")).decode()
    assert "#EXTINF:0.500,\n#EXT-X-GAP\nseg_1.ts\n" in stored
    assert stored.count("#EXT-X-GAP") == 1
    kinds = [(e.kind, e.path) for e in events]
    assert ("dropped", "c/seg_1.ts") in kinds and ("gap", "c/seg_1.ts") in kinds
    assert publisher.stats()["media"].dropped == 1


# (d) ---------------------------------------------------------------------------------------


async def test_d_deletes_wait_for_the_rfc_delay(
    store: ContainerClient, mediastore_server: LocalMediaStore
) -> None:
    events: list[PublishEvent] = []
    seg_d = 0.3
    async with LivePublisher(store, on_event=events.append) as publisher:
        for n in range(6):
            await publisher.publish(f"d/seg_{n}.ts", b"x", duration=1.0)
            window = list(range(max(0, n - 1), n + 1))
            await (await publisher.publish(
                "d/index.m3u8", media_playlist(window, duration=seg_d)
            )).wait()
            await anyio.sleep(0.05)
        # seg_0..seg_3 have left the 2-segment window; wait for their deletes.
        await until(lambda: sum(1 for e in events if e.kind == "deleted") >= 4, 10)
        assert await store.describe_object("d/seg_5.ts")  # still in the playlist
    acks = [e for e in events if e.kind == "acknowledged" and e.path == "d/index.m3u8"]
    deleted = {e.path: e.time for e in events if e.kind == "deleted"}
    assert set(deleted) >= {f"d/seg_{n}.ts" for n in range(4)}
    for n in range(4):
        # seg_n left with the playlist version that starts at n + 1 (ack n + 1 in order)
        left = acks[n + 1].time
        # RFC 8216 6.2.2: its duration plus the playlist's (two segments) at the least
        assert deleted[f"d/seg_{n}.ts"] - left >= seg_d + 2 * seg_d - 0.01
    for n in range(4):
        with pytest.raises(ObjectNotFoundError):
            await store.describe_object(f"d/seg_{n}.ts")


async def test_d_an_encoder_delete_is_only_a_hint(
    store: ContainerClient, mediastore_server: LocalMediaStore
) -> None:
    events: list[PublishEvent] = []
    async with LivePublisher(store, on_event=events.append, auto_delete=False) as publisher:
        await publisher.publish("e/seg_0.ts", b"x", duration=1.0)
        await publisher.publish("e/seg_1.ts", b"x", duration=1.0)
        await (await publisher.publish("e/index.m3u8", media_playlist([0, 1]))).wait()
        await publisher.delete("e/seg_0.ts")  # still named: must stay
        await publisher.publish("e/seg_2.ts", b"x", duration=1.0)
        await anyio.sleep(0.3)
        assert await store.describe_object("e/seg_0.ts")
        left = anyio.current_time()
        await (await publisher.publish("e/index.m3u8", media_playlist([1, 2]))).wait()
        await anyio.sleep(0.5)  # < 0.5 + 1.0 s: still there
        assert await store.describe_object("e/seg_0.ts")
        await until(lambda: any(e.kind == "deleted" for e in events), 5)
        gone_at = next(e.time for e in events if e.kind == "deleted")
    assert gone_at - left >= 0.5 + 1.0 - 0.01
    assert [e.path for e in events if e.kind == "deleted"] == ["e/seg_0.ts"]
    assert await store.describe_object("e/seg_1.ts")  # never asked for, auto_delete off


# (e) ---------------------------------------------------------------------------------------


async def test_e_reader_gets_first_chunk_before_the_last_is_produced(
    store: ContainerClient, mediastore_server: LocalMediaStore
) -> None:
    first_read = anyio.Event()
    produced_last = False

    async def encoder() -> AsyncIterator[bytes]:
        nonlocal produced_last
        yield b"moof-mdat-1" * 100
        with anyio.fail_after(5):
            await first_read.wait()  # only possible if chunk 1 already reached a reader
        yield b"moof-mdat-2" * 100
        produced_last = True

    async with LivePublisher(store) as publisher:
        seg = await publisher.publish("ll/seg_0.m4s", encoder(), duration=2.0)
        with anyio.fail_after(5):
            while True:
                try:
                    async with store.get_object("ll/seg_0.m4s") as obj:
                        async for chunk in obj:
                            assert chunk
                            assert not produced_last
                            first_read.set()
                            break
                    break
                except ObjectNotFoundError:
                    await anyio.sleep(0.01)
        assert (await seg.wait()).acknowledged
    assert produced_last
    assert await store.get_bytes("ll/seg_0.m4s") == b"moof-mdat-1" * 100 + b"moof-mdat-2" * 100


async def test_e_hinted_part_is_fetchable_when_the_playlist_hinting_it_appears(
    store: ContainerClient, mediastore_server: LocalMediaStore
) -> None:
    release = anyio.Event()

    async def part() -> AsyncIterator[bytes]:
        await anyio.sleep(0.2)  # the playlist is handed over before the first chunk exists
        yield b"c1" * 500
        await release.wait()
        yield b"c2" * 500

    body = (
        b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PART-INF:PART-TARGET=1.0\n"
        b"#EXT-X-MEDIA-SEQUENCE:0\n"
        b'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="seg_0.part0.m4s"\n'
    )
    async with LivePublisher(store) as publisher:
        hinted = await publisher.publish("h/seg_0.part0.m4s", part(), duration=1.0)
        playlist = await publisher.publish("h/index.m3u8", body)
        assert (await playlist.wait()).acknowledged
        assert b"PRELOAD-HINT" in await store.get_bytes("h/index.m3u8")
        info = await store.describe_object("h/seg_0.part0.m4s")  # right away: it is there
        assert info.content_length is None  # still uploading
        release.set()
        assert (await hinted.wait()).acknowledged

        # A hint whose part does not start within a part target is left out, not waited for.
        never = anyio.Event()

        async def stuck() -> AsyncIterator[bytes]:
            await never.wait()
            yield b""

        await publisher.publish("h/seg_0.part1.m4s", stuck(), duration=1.0)
        late = await publisher.publish(
            "h/index.m3u8", body.replace(b"part0", b"part1")
        )
        out = await late.wait()
        assert out.acknowledged and out.latency is not None and out.latency < 1.0 + 1.0
        assert b"PRELOAD-HINT" not in await store.get_bytes("h/index.m3u8")
        await publisher.aclose(cancel=True)


# (f) ---------------------------------------------------------------------------------------


async def test_f_one_origin_down_the_other_stays_on_time(
    store: ContainerClient, mediastore_server: LocalMediaStore
) -> None:
    async with LocalMediaStore() as backup_server:
        backup_session, backup = await client_for(backup_server)
        # The primary hangs on every PUT: its uploads pile up until their deadlines.
        mediastore_server.faults.inject("delay", method="PUT", delay=2.5, times=None)
        async with backup_session:
            async with LivePublisher(store, backups=[backup], close_timeout=0.5) as publisher:
                segments = []
                playlists = []
                for n in range(8):
                    segments.append(
                        await publisher.publish(f"f/seg_{n}.ts", b"x" * 2000, duration=1.0)
                    )
                    window = list(range(max(0, n - 3), n + 1))
                    playlists.append(await publisher.publish("f/index.m3u8",
                                                             media_playlist(window)))
                    await anyio.sleep(0.1)
                outcomes = [await s.wait(all_destinations=True) for s in segments]
                final = await playlists[-1].wait()
                health = publisher.stats().destinations
            for outcome in outcomes:
                primary, second = outcome.destinations
                assert outcome.acknowledged
                assert second.status is Status.ACKNOWLEDGED
                # on time: acknowledged within its duration, whatever the primary does
                assert second.latency is not None and second.latency < 1.0
                assert primary.status in (Status.DROPPED, Status.FAILED)
            assert final.acknowledged and final.destinations[1].status is Status.ACKNOWLEDGED
            assert await backup.get_bytes("f/index.m3u8") == media_playlist([4, 5, 6, 7])
            assert health[0].dropped >= 7 and health[1].dropped == 0


# (g) ---------------------------------------------------------------------------------------


def _tasks() -> set[asyncio.Task[object]]:
    """The client side's tasks (the local server's connection handlers run on this loop
    too, and finish on their own schedule)."""
    return {
        t for t in asyncio.all_tasks()
        if t is not asyncio.current_task()
        and "web_protocol" not in getattr(t.get_coro(), "cr_code", t.get_coro()).__repr__()
    }


async def test_g_close_publishes_pending_work_final_playlist_last(
    store: ContainerClient, mediastore_server: LocalMediaStore
) -> None:
    mediastore_server.faults.inject("delay", method="PUT", path="g/seg_1.ts", delay=0.3)
    before = _tasks()
    hooks = list(store.session.event_hooks)
    async with LivePublisher(store) as publisher:
        await publisher.publish("g/seg_0.ts", b"0", duration=2.0)
        await publisher.publish("g/index.m3u8", media_playlist([0]))
        seg = await publisher.publish("g/seg_1.ts", b"1", duration=2.0)
        final = await publisher.publish("g/index.m3u8", media_playlist([0, 1], end=True))
    assert (await seg.wait()).acknowledged and (await final.wait()).acknowledged
    assert (await final.wait()).latency > (await seg.wait()).latency  # type: ignore[operator]
    assert b"#EXT-X-ENDLIST" in await store.get_bytes("g/index.m3u8")
    assert _tasks() == before
    assert store.session.pool.in_use == 0
    assert store.session.event_hooks == hooks


async def test_g_close_timeout_leaves_the_previous_playlist(
    store: ContainerClient, mediastore_server: LocalMediaStore
) -> None:
    before = _tasks()
    async with LivePublisher(store, close_timeout=0.5) as publisher:
        await publisher.publish("g2/seg_0.ts", b"0", duration=2.0)
        assert (await (await publisher.publish("g2/index.m3u8", media_playlist([0]))).wait()
                ).acknowledged
        mediastore_server.faults.inject("503", method="PUT", path="g2/index.m3u8", times=None)
        stuck = await publisher.publish("g2/index.m3u8", media_playlist([0], end=True))
        started = anyio.current_time()
    assert anyio.current_time() - started < 0.5 + 2.0
    outcome = await stuck.wait()
    assert outcome.status is Status.FAILED and "closed" in (outcome.reason or "")
    mediastore_server.faults.clear()
    assert await store.get_bytes("g2/index.m3u8") == media_playlist([0])
    assert _tasks() == before
    assert store.session.pool.in_use == 0


async def test_g_cancellation_leaves_no_task_connection_or_half_playlist(
    store: ContainerClient, mediastore_server: LocalMediaStore
) -> None:
    before = _tasks()
    closed = anyio.Event()
    uploading = anyio.Event()

    async def encoder() -> AsyncIterator[bytes]:
        try:
            yield b"c" * 1000
            uploading.set()
            await anyio.sleep(30)
            yield b"never"
        finally:
            closed.set()  # the producer learns the upload is over

    old = media_playlist([0])
    new = media_playlist([0, 1, 2], end=True) + b"#" + b"x" * 200_000 + b"\n"
    async with anyio.create_task_group() as tg:

        async def stream() -> None:
            async with LivePublisher(store) as publisher:
                await publisher.publish("g3/seg_0.ts", b"0", duration=2.0)
                await (await publisher.publish("g3/index.m3u8", old)).wait()
                await publisher.publish("g3/seg_1.ts", encoder(), duration=30.0)
                await publisher.publish("g3/seg_2.ts", b"2", duration=30.0)
                await publisher.publish("g3/index.m3u8", new)
                await anyio.sleep(30)

        tg.start_soon(stream)
        with anyio.fail_after(5):
            await uploading.wait()
        await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    with anyio.fail_after(2):
        await closed.wait()
    assert _tasks() == before
    assert store.session.pool.in_use == 0
    assert await store.get_bytes("g3/index.m3u8") == old
    with pytest.raises(ObjectNotFoundError):
        await store.describe_object("g3/seg_1.ts")  # the cut STREAMING upload was aborted


async def test_an_encoder_delete_waits_for_a_static_mpd_naming_it_by_template(
    store: ContainerClient, mediastore_server: LocalMediaStore
) -> None:
    """Issue 16 item 14: ffmpeg's LL-DASH ends with a static MPD naming its chunks by a
    number template, then DELETEs the oldest one: the MPD still names it, so it stays."""
    mpd = (b'<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" '
           b'mediaPresentationDuration="PT0.3S"><Period start="PT0S"><AdaptationSet>'
           b'<Representation id="0" bandwidth="1"><SegmentTemplate timescale="10" '
           b'duration="1" initialization="init.m4s" media="c-$Number$.m4s" startNumber="1"/>'
           b"</Representation></AdaptationSet></Period></MPD>")
    events: list[PublishEvent] = []
    async with LivePublisher(store, on_event=events.append, unknown_delete_delay=0.2) as pub:
        await pub.publish("x/init.m4s", b"init")
        for n in range(1, 5):
            await pub.publish(f"x/c-{n}.m4s", b"c", duration=0.1)
        await (await pub.publish("x/manifest.mpd", mpd)).wait()
        await pub.delete("x/c-1.m4s")  # named: must stay
        await pub.delete("x/c-4.m4s")  # beyond the 3 segments of 0.1 s: goes
        await until(lambda: any(e.kind == "deleted" for e in events), 5)
        # the delay of a named object would be 0.1 + 0.3 s: well past it, still there
        await anyio.sleep(1.0)
        assert await store.describe_object("x/c-1.m4s")
    assert [e.path for e in events if e.kind == "deleted"] == ["x/c-4.m4s"]


async def test_a_manifest_naming_many_unpublished_objects_warns_once(
    store: ContainerClient, caplog: pytest.LogCaptureFixture
) -> None:
    """ffmpeg's final LL-DASH MPD names every chunk from startNumber 1, also the ones its
    window deleted long ago: one warning line for the MPD, not one per chunk."""
    mpd = (b'<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" '
           b'mediaPresentationDuration="PT50S"><Period start="PT0S"><AdaptationSet>'
           b'<Representation id="0" bandwidth="1"><SegmentTemplate duration="1" '
           b'initialization="init.m4s" media="c-$Number$.m4s" startNumber="1"/>'
           b"</Representation></AdaptationSet></Period></MPD>")
    caplog.set_level("WARNING", logger="msd_async.live")
    async with LivePublisher(store, reference_wait=0.2) as pub:
        await pub.publish("w/init.m4s", b"init")
        assert (await (await pub.publish("w/manifest.mpd", mpd)).wait()).acknowledged
    lines = [r.getMessage() for r in caplog.records if "never published" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "50 objects" in lines[0] and "w/c-1.m4s" in lines[0], lines
