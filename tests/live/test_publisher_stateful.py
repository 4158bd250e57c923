"""The publisher as a state machine (issue 16): random inits, segments, streamed LL-HLS parts
(hinted, then listed), playlists, MPDs, encoder deletes, injected faults, callbacks that
raise, and, to end every run, a close from another task; against the local server. After
every step an independent reader (its own session, plain GETs against the origin, nothing of
the publisher's state) checks what the origin holds:

- no stored manifest names a missing object unless it marks it as a gap (hints excepted:
  a hint promises only an upload that started);
- manifest versions are stored in order (never an older one after a newer one);
- a delete never removes an object a stored manifest still names (a missing object again);
- after a close with a healthy origin every publication is settled, the final playlist and
  MPD are stored, no task or connection is left, every media object stored holds the whole
  body published (never a cut one), and a part whose producer raised is not stored at all
  (docs/live.md: "no half-published state").

CI runs a bounded, derandomized set of examples; ``MSD_LONG_TESTS=1`` runs many more.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import pytest
from hypothesis import strategies as st
from hypothesis.stateful import invariant, precondition, rule
from stateful import LONG, PortalMachine, machine_settings

from msd_async import ObjectNotFoundError, RetryPolicy, Session
from msd_async.live import (
    LivePublisher,
    ManifestError,
    Publication,
    PublisherClosedError,
    PublishEvent,
    parse_manifest,
)
from msd_async.testing import FaultPlan, LocalMediaStore

# The long run is many minutes of stream; CI's bounded run stays well under a minute.
pytestmark = pytest.mark.timeout(3600 if LONG else 120)
PLAYLIST = "h/index.m3u8"
MPD = "d/stream.mpd"
WINDOW = 4
SEGMENT = 1.0  # seconds: deletes come a second or more after an object leaves
PART = 0.25
FAULT_KINDS = ["500", "503", "throttle", "cut-upload", "delay"]
_VERSION = re.compile(rb"(?:## v|<!-- v)(\d+)")


def _hls(segments: list[int], parts: list[tuple[int, int]], hint: tuple[int, int] | None,
         init: bool, version: int, end: bool) -> bytes:
    lines = ["#EXTM3U", "#EXT-X-VERSION:9", "#EXT-X-TARGETDURATION:1",
             f"#EXT-X-PART-INF:PART-TARGET={PART}",
             f"#EXT-X-MEDIA-SEQUENCE:{segments[0] if segments else 0}"]
    if init:
        lines.append('#EXT-X-MAP:URI="init.mp4"')
    for n in segments:
        lines += [f"#EXTINF:{SEGMENT:.3f},", f"seg_{n}.m4s"]
    lines += [f'#EXT-X-PART:DURATION={PART},URI="part_{n}_{k}.m4s"' for n, k in parts]
    if hint is not None:
        lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part_{hint[0]}_{hint[1]}.m4s"')
    if end:
        lines.append("#EXT-X-ENDLIST")
    lines.append(f"## v{version}")
    return ("\n".join(lines) + "\n").encode()


def _mpd(numbers: list[int], init: bool, version: int, end: bool) -> bytes:
    start = numbers[0] if numbers else 1
    timeline = f'<S t="{start - 1}" d="1" r="{len(numbers) - 1}"/>' if numbers else ""
    initialization = ' initialization="init.m4s"' if init else ""
    kind = "static" if end else "dynamic"
    return (
        f'<?xml version="1.0"?><!-- v{version} --><MPD type="{kind}"><Period><AdaptationSet>'
        f'<SegmentTemplate timescale="1" media="chunk_$Number$.m4s" startNumber="{start}"'
        f"{initialization}><SegmentTimeline>{timeline}</SegmentTimeline></SegmentTemplate>"
        '<Representation id="0" bandwidth="1"/></AdaptationSet></Period></MPD>'
    ).encode()


async def _streamed(chunks: int, pause: float, crash: bool = False) -> AsyncIterator[bytes]:
    for n in range(chunks):
        yield bytes([n]) * 500
        await anyio.sleep(pause)
    if crash:
        raise RuntimeError("the encoder crashed mid-part")


def _client_tasks() -> set[asyncio.Task[Any]]:
    return {
        t for t in asyncio.all_tasks()
        if t is not asyncio.current_task()
        and "web_protocol" not in repr(getattr(t.get_coro(), "cr_code", t.get_coro()))
    }


class PublisherMachine(PortalMachine):
    def __init__(self) -> None:
        super().__init__()
        self.publications: list[Publication] = []
        self.raising = False
        self.closed = False
        self.torn_down = False
        self.segments: list[int] = []  # published, in order
        self.parts: list[tuple[int, int]] = []  # of the segment in progress
        self.init = False
        self.dash: list[int] = []
        self.dash_init = False
        self.version = 0
        self.seen_version: dict[str, int] = {}
        self.sizes: dict[str, int] = {}  # media path -> the size of the body published
        self.crashed: set[str] = set()  # parts whose producer raised: never to be stored
        self.portal.call(self._open)

    # -- plumbing (runs on the portal's event loop)
    async def _open(self) -> None:
        self.tasks_before = _client_tasks()
        self.server = LocalMediaStore(faults=FaultPlan(seed=16))
        await self.server.__aenter__()
        self.session = Session(credentials=self.server.credentials, region=self.server.region,
                               retry=RetryPolicy.none())
        self.reader = Session(credentials=self.server.credentials, region=self.server.region,
                              retry=RetryPolicy.none())
        self.store = self.session.container(self.server.endpoint)
        self.origin = self.reader.container(self.server.endpoint)
        self.publisher = LivePublisher(self.store, on_event=self._on_event, close_timeout=20,
                                       reference_wait=2.0)
        await self.publisher.__aenter__()

    def _on_event(self, event: PublishEvent) -> None:
        if self.raising:
            raise RuntimeError(f"the application's callback broke on {event.kind}")

    def _publish(self, path: str, body: Any, **kwargs: Any) -> None:
        async def go() -> None:
            self.publications.append(await self.publisher.publish(path, body, **kwargs))
            await anyio.lowlevel.checkpoint()

        self.portal.call(go)

    def _next_version(self) -> int:
        self.version += 1
        return self.version

    # -- rules
    @rule(dash=st.booleans())
    def publish_init(self, dash: bool) -> None:
        if dash:
            self._publish("d/init.m4s", b"dash init")
            self.sizes["d/init.m4s"] = len(b"dash init")
            self.dash_init = True
        else:
            self._publish("h/init.mp4", b"hls init")
            self.sizes["h/init.mp4"] = len(b"hls init")
            self.init = True

    @rule()
    def publish_segment(self) -> None:
        n = self.segments[-1] + 1 if self.segments else 0
        self._publish(f"h/seg_{n}.m4s", b"s" * 2000, duration=SEGMENT)
        self.sizes[f"h/seg_{n}.m4s"] = 2000
        self.segments.append(n)
        self.parts = []

    @rule(chunks=st.integers(1, 3), pause=st.sampled_from([0.0, 0.02, 0.1]),
          crash=st.booleans())
    def publish_part(self, chunks: int, pause: float, crash: bool) -> None:
        n = self.segments[-1] + 1 if self.segments else 0
        k = self.parts[-1][1] + 1 if self.parts else 0
        self.parts.append((n, k))
        self.sizes[f"h/part_{n}_{k}.m4s"] = chunks * 500
        if crash:
            self.crashed.add(f"h/part_{n}_{k}.m4s")
        self._publish(f"h/part_{n}_{k}.m4s", _streamed(chunks, pause, crash),
                      duration=PART * 4)

    @rule(hint=st.booleans(), publish_hinted_first=st.booleans(), crash=st.booleans())
    def publish_playlist(self, hint: bool, publish_hinted_first: bool, crash: bool) -> None:
        listed, next_part = list(self.parts), None
        if hint:
            n = self.segments[-1] + 1 if self.segments else 0
            k = self.parts[-1][1] + 1 if self.parts else 0
            next_part = (n, k)
            if publish_hinted_first:
                # The packager's way: the part's upload starts, then a playlist hints it;
                # the next version lists it (while it may still be uploading).
                self.publish_part(3, 0.1, crash)
        body = _hls(self.segments[-WINDOW:], listed, next_part, self.init,
                    self._next_version(), end=False)
        self._publish(PLAYLIST, body)

    @rule()
    def publish_dash_segment(self) -> None:
        n = self.dash[-1] + 1 if self.dash else 1
        self._publish(f"d/chunk_{n}.m4s", b"c" * 1000, duration=SEGMENT)
        self.sizes[f"d/chunk_{n}.m4s"] = 1000
        self.dash.append(n)

    @rule()
    def publish_mpd(self) -> None:
        self._publish(MPD, _mpd(self.dash[-WINDOW:], self.dash_init, self._next_version(),
                                end=False))

    @precondition(lambda self: len(self.segments) > WINDOW)
    @rule(data=st.data())
    def encoder_deletes(self, data: st.DataObject) -> None:
        # The encoder deletes what left its window (the stored playlist may still name it).
        n = data.draw(st.sampled_from(self.segments[:-WINDOW]))
        self.portal.call(self.publisher.delete, f"h/seg_{n}.m4s")

    @rule(kind=st.sampled_from(FAULT_KINDS), where=st.sampled_from(["any", "next", "manifest"]),
          times=st.integers(1, 3))
    def fault(self, kind: Any, where: str, times: int) -> None:
        if where == "manifest":
            path: str | None = PLAYLIST
        elif where == "next":
            n = self.segments[-1] + 1 if self.segments else 0
            path = f"h/seg_{n}.m4s"
        else:
            path = None
        self.server.faults.inject(kind, method="PUT", path=path, times=times, delay=0.3)

    @rule()
    def callback_toggles_raising(self) -> None:
        self.raising = not self.raising

    @rule(seconds=st.sampled_from([0.02, 0.1, 0.4]))
    def time_passes(self, seconds: float) -> None:
        self.portal.call(anyio.sleep, seconds)

    # -- the independent reader
    @invariant()
    def origin_is_consistent(self) -> None:
        if not self.torn_down:
            self.portal.call(self._check_origin)

    async def _check_origin(self) -> None:
        for path in (PLAYLIST, MPD):
            try:
                body = await self.origin.get_bytes(path)
            except ObjectNotFoundError:
                continue
            match = _VERSION.search(body)
            assert match is not None, body
            version = int(match.group(1))
            assert version >= self.seen_version.get(path, 0), (
                f"{path}: version {version} stored after {self.seen_version[path]}"
            )
            self.seen_version[path] = version
            try:
                info = parse_manifest(path, body)
            except ManifestError as exc:  # pragma: no cover - a failure message
                raise AssertionError(f"stored {path} does not parse: {exc}") from exc
            for name, ref in info.references.items():
                if ref.gap or ref.role == "hint":
                    continue
                try:
                    await self.origin.describe_object(name)
                except ObjectNotFoundError:
                    raise AssertionError(
                        f"stored {path} v{version} names {name} ({ref.role}), which the "
                        f"origin does not have, without marking it a gap:\n{body.decode()}"
                    ) from None

    # -- close with a healthy origin
    def _close_and_check(self) -> None:
        self.closed = True
        self.server.faults.clear()
        self.raising = False
        final_hls = _hls(self.segments[-WINDOW:], self.parts, None, self.init,
                         self._next_version(), end=True)
        self._publish(PLAYLIST, final_hls)
        final_mpd = _mpd(self.dash[-WINDOW:], self.dash_init, self._next_version(), end=True)
        self._publish(MPD, final_mpd)

        async def close_elsewhere() -> None:
            # Opened on one task, closed from another (a shutdown hook's).
            closing = asyncio.get_running_loop().create_task(self.publisher.aclose())
            with anyio.fail_after(60):
                await asyncio.wait({closing})
            closing.result()
            unsettled = [p for p in self.publications if not p.done(all_destinations=True)]
            assert unsettled == []
            for path, final in ((PLAYLIST, final_hls), (MPD, final_mpd)):
                stored = await self.origin.get_bytes(path)
                match = _VERSION.search(stored)
                assert match is not None and match.group(1) == _VERSION.search(final).group(1), (  # type: ignore[union-attr]
                    f"{path}: the final version was not the last stored"
                )
            # Nothing of the publisher's is left running (the portal's own task aside).
            left = {t for t in _client_tasks() - self.tasks_before
                    if "BlockingPortal" not in repr(t.get_coro())}
            assert left == set(), left
            assert self.store.session.pool.in_use == 0
            # Deletes not due at the close are abandoned, none left scheduled (docs/live.md).
            (dest,) = self.publisher.stats().destinations
            assert (dest.pending, dest.deletes_scheduled) == (0, 0), dest
            # Settled, so no upload is still growing: a stored object is whole or a bug.
            for folder in ("h", "d"):
                async for item in self.origin.list_items(folder):
                    name = f"{folder}/{item.name}"
                    if name in self.crashed:
                        raise AssertionError(f"{name}: its producer raised, yet it is stored")
                    if name in self.sizes:
                        assert item.content_length == self.sizes[name], (
                            f"{name}: {item.content_length} bytes stored, "
                            f"{self.sizes[name]} published"
                        )

        self.portal.call(close_elsewhere)

    def teardown(self) -> None:
        # Every run ends with the close (from another task) and its checks.
        try:
            self._close_and_check()
            self.portal.call(self._check_origin)

            async def refused() -> None:
                with pytest.raises(PublisherClosedError):
                    await self.publisher.publish("h/late.m4s", b"x", duration=1.0)

            self.portal.call(refused)
        finally:
            self.torn_down = True
            self.close_portal(self._shutdown)

    async def _shutdown(self) -> None:
        await self.publisher.aclose(cancel=True)
        await self.session.aclose()
        await self.reader.aclose()
        await self.server.__aexit__(None, None, None)


PublisherMachine.TestCase.settings = machine_settings(
    examples=20, long_examples=150, steps=30, long_steps=60
)
test_publisher_state_machine = PublisherMachine.TestCase
