"""The relay as a state machine, driven the way encoders drive it: raw sockets sending
segments and LL-HLS parts (Content-Length or chunked, pipelined on persistent connections),
growing HLS playlists and DASH MPDs, DELETEs of old segments, and misbehaviour: bodies cut
mid-way, bodies that pause past the idle timeout, request heads trickled byte by byte,
oversized bodies, names MediaStore refuses, several encoders writing one rendition, and an
origin that fails some uploads (503, cut uploads, delays). The relay, its LivePublisher and
the local server (real SigV4) run on an anyio blocking portal; the encoders and the reader
run on the test's own thread.

After every step an independent reader (botocore's own ``mediastore-data`` client, nothing
of the relay's or the publisher's state) checks the origin:

- a stored playlist or MPD names no missing object unless it marks it as a gap (hints
  excepted), and is, gap marks and hints aside, a version an encoder finished sending;
- versions of a manifest are stored in the order the relay received them (never one after a
  version the encoder sent after it on the same connection, or after it had read its answer);
- every stored media object is exactly a body an encoder finished (a cut or paused body is
  never stored, the previous version stays);
- the relay answers 2xx only to a request whose body it received whole, the answer an
  encoder reads is the documented one (204; 400 for a refused name, 413 over the limit),
  and a paused body or a trickled head gets its connection closed within a few idle
  timeouts.

At the end of every run the encoders close, the relay's body budget returns to zero with no
connection task left, the final ENDLIST playlist and static MPD go out on a connection
closed without reading its answers, and the library's documented shutdown (``Relay.aclose``
then ``LivePublisher.aclose``) stores them with a healthy origin; every media PUT answered
(or completed) is then found stored in the origin's own access log.

CI runs a bounded, derandomized set of examples; ``MSD_LONG_TESTS=1`` runs many more.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
import zlib
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.from_thread
import botocore.config
import botocore.exceptions
import botocore.session
import pytest
from hypothesis import strategies as st
from hypothesis.stateful import invariant, precondition, rule
from stateful import LONG, PortalMachine, machine_settings

from msd_async import Session
from msd_async.ingest import Relay
from msd_async.live import LivePublisher
from msd_async.testing import FaultPlan, LocalMediaStore

pytestmark = pytest.mark.timeout(3600 if LONG else 150)

#: Short, so pauses and trickles cost little; every check of it waits several times as long.
IDLE = 1.0
#: A paused body or a trickled head must have its connection closed by then.
CLOSE_BY = 4 * IDLE
PLAYLIST = "h/index.m3u8"
MPD = "d/stream.mpd"
WINDOW = 4
STREAMING_LIMIT = 64_000
MANIFEST_LIMIT = 16_000
SLOTS = 3  # persistent encoder connections
SOCKET_TIMEOUT = 20.0  # a relay that stops answering fails the run, it does not hang it
_VERSION = re.compile(rb"(?:## v|<!-- v)(\d+)")
_URI = re.compile(r'URI="([^"]+)"')


def media_body(path: str, generation: str = "") -> bytes:
    """What an encoder sends for ``path``: the same bytes from every encoder (redundant
    encoders produce identical segments); a ``generation`` marks a body that will not be
    finished, whose full length is another than any finished body's."""
    size = 1500 + zlib.crc32(path.encode()) % 6000 + (777 if generation else 0)
    seed = f"{path}|{generation}|".encode()
    return (seed * (size // len(seed) + 1))[:size]


def head(method: str, path: str, *, length: int | None = None, chunked: bool = False,
         extra: tuple[str, ...] = ()) -> bytes:
    lines = [f"{method} /{path} HTTP/1.1", "Host: relay", "User-Agent: Lavf/61.7.100"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    lines += extra
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def pieces(body: bytes, n: int) -> list[bytes]:
    step = max(1, -(-len(body) // n))
    return [body[i : i + step] for i in range(0, len(body), step)]


@dataclass(eq=False)
class Req:
    """A request an encoder sent (or began)."""

    method: str
    path: str
    kind: str  # "media", "manifest", "delete", "refused", "oversize"
    sent: float
    expect: int | None  # the answer it must get; None: unfinished, no 2xx allowed
    version: int | None = None
    status: int | None = None


class Encoder:
    """One encoder connection, blocking, on the test's thread."""

    def __init__(self, port: int, tick: Callable[[], None] | None = None) -> None:
        #: Called while waiting for the relay, so other encoders keep their bodies flowing.
        self.tick = tick
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT)
        self.buffer = b""
        self.unanswered: deque[Req] = deque()
        self.versions: list[int] = []  # manifest versions sent on this connection, in order
        self.open: OpenPart | None = None
        self.last_sent = time.monotonic()
        self.eof = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)
        self.last_sent = time.monotonic()

    def _fill(self, deadline: float) -> bool:
        """Read more; False at EOF (or a reset). Raises TimeoutError at ``deadline``."""
        while True:
            if self.tick is not None:
                self.tick()
            self.sock.settimeout(min(IDLE / 5, max(0.01, deadline - time.monotonic())))
            try:
                data = self.sock.recv(65536)
                break
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise
            except (ConnectionResetError, BrokenPipeError):
                data = b""
                break
            finally:
                self.sock.settimeout(SOCKET_TIMEOUT)
        if not data:
            self.eof = True
            return False
        self.buffer += data
        return True

    def answer(self, within: float = SOCKET_TIMEOUT) -> int | None:
        """The status of the next answer (100 Continue skipped); None if the connection
        closed first. Raises TimeoutError if nothing comes ``within`` seconds."""
        deadline = time.monotonic() + within
        while True:
            while b"\r\n\r\n" not in self.buffer:
                if self.eof or not self._fill(deadline):
                    return None
            head_bytes, _, rest = self.buffer.partition(b"\r\n\r\n")
            lines = head_bytes.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            while len(rest) < length:
                if self.eof or not self._fill(deadline):
                    return None
                rest = self.buffer.partition(b"\r\n\r\n")[2]
            self.buffer = rest[length:]
            if status != 100:
                return status

    def closed_within(self, within: float) -> tuple[bool, list[int]]:
        """Whether the peer closed within ``within`` seconds, and the statuses it sent."""
        deadline = time.monotonic() + within
        statuses = []
        while True:
            try:
                status = self.answer(max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                return False, statuses
            if status is None:
                return True, statuses
            statuses.append(status)

    def close(self) -> None:
        with suppress(OSError):
            self.sock.close()


@dataclass(eq=False)
class OpenPart:
    """An LL-HLS part whose chunked body is still being sent."""

    uri: str
    req: Req
    left: list[bytes] = field(default_factory=list)


class RelayMachine(PortalMachine):
    def __init__(self) -> None:
        super().__init__()
        self.access: list[tuple[str, str, str, float]] = []  # method, path, status, when
        self.portal.call(self._open)
        s3 = botocore.session.get_session()
        self.reader = s3.create_client(
            "mediastore-data", endpoint_url=self.server.endpoint,
            region_name=self.server.region,
            aws_access_key_id=self.server.credentials.access_key_id,
            aws_secret_access_key=self.server.credentials.secret_access_key,
            config=botocore.config.Config(retries={"max_attempts": 1}),
        )
        self.slots: list[Encoder | None] = [None] * SLOTS
        self.requests: list[Req] = []
        self.segments: list[str] = []  # URIs in h/, in order (refused names included)
        self.next_segment = 0
        self.parts: list[str] = []  # parts of the segment in progress, listed
        self.part_number = 0
        self.hls_init = False
        self.dash: list[int] = []
        self.dash_init = False
        self.version = 0
        self.sent_manifest: dict[int, bytes] = {}  # finished versions
        self.unfinished_versions: set[int] = set()
        self.before: dict[int, set[int]] = {}  # version -> versions the relay got before it
        self.answered: set[int] = set()  # versions whose answer was read (and theirs)
        self.seen: dict[str, list[int]] = {PLAYLIST: [], MPD: []}
        self.expected: dict[str, bytes] = {}  # media path -> the body finished for it
        self.verified: dict[str, str] = {}  # media path -> ETag whose content was checked
        self.abandoned: list[tuple[Encoder, Req, float]] = []  # paused bodies, by when
        self.trickling: list[tuple[Encoder, float]] = []  # slowloris heads, since when
        self.connections: list[Encoder] = []
        self.oddities = 0
        self.torn_down = False

    # -- plumbing on the portal's loop -----------------------------------------------------
    async def _open(self) -> None:
        machine = self

        class Access(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                args = record.args
                assert isinstance(args, tuple)
                machine.access.append((str(args[0]), str(args[1]).lstrip("/"), str(args[2]),
                                       time.monotonic()))

        self.access_logger = logging.getLogger(f"relay-stateful-access-{id(self)}")
        self.access_logger.propagate = False
        self.access_logger.setLevel(logging.INFO)
        self.access_logger.addHandler(Access())
        self.tasks_before = set(asyncio.all_tasks())
        self.server = LocalMediaStore(faults=FaultPlan(seed=22), access_logger=self.access_logger)
        await self.server.__aenter__()
        self.session = Session(credentials=self.server.credentials, region=self.server.region)
        self.publisher = LivePublisher(self.session.container(self.server.endpoint),
                                       close_timeout=20, reference_wait=1.0)
        await self.publisher.__aenter__()
        self.relay = Relay(self.publisher, idle_timeout=IDLE, drain_timeout=20,
                           # A budget the run never fills: the idle timeout does not
                           # run while a read waits for room (docs/ingest.md), and the
                           # machine checks it strictly. test_relay_edges.py covers the
                           # budget itself.
                           max_connections=32, max_buffer=4_000_000,
                           streaming_limit=STREAMING_LIMIT, manifest_limit=MANIFEST_LIMIT,
                           media_deadline=8.0)
        await self.relay.start()

    def _connection_tasks(self) -> int:
        async def count() -> int:
            return sum(1 for t in asyncio.all_tasks()
                       if "Relay._serve" in repr(t.get_coro()))

        return self.portal.call(count)

    # -- encoders ---------------------------------------------------------------------------
    def _connect(self) -> Encoder:
        enc = Encoder(self.relay.port, self._tick)
        self.connections.append(enc)  # closed at the end, whatever failed
        return enc

    def _encoder(self, slot: int) -> tuple[int, Encoder]:
        """A persistent connection able to send a request now (not mid-body)."""
        for k in range(SLOTS):
            i = (slot + k) % SLOTS
            enc = self.slots[i]
            if enc is not None and enc.eof:
                self._settle(enc)
                self.slots[i] = enc = None
            if enc is None:
                enc = self.slots[i] = self._connect()
            if enc.open is None:
                return i, enc
        raise AssertionError("unreachable: at most one body is left open")

    def _request(self, enc: Encoder, req: Req, data: bytes) -> None:
        self.requests.append(req)
        if req.version is not None:
            # The relay hands one connection's requests over in order, and a version whose
            # answer was read was handed over before anything sent after.
            self.before[req.version] = set(self.answered).union(
                *({v} | self.before.get(v, set()) for v in enc.versions)
            )
            enc.versions.append(req.version)
        enc.unanswered.append(req)
        enc.send(data)

    def _read_answers(self, enc: Encoder) -> None:
        while enc.unanswered:
            req = enc.unanswered[0]
            if req.expect is None:  # an unfinished body: whatever comes is no answer to it
                return
            status = enc.answer()
            enc.unanswered.popleft()
            self._check_answer(req, status)
            if status is None:
                self._settle(enc)
                return

    def _check_answer(self, req: Req, status: int | None) -> None:
        req.status = status
        if status is None:
            # The relay closed the connection: only for the answers it documents closing
            # after (400, 413), never for a request it must answer.
            raise AssertionError(f"{req.method} {req.path}: the relay closed the connection "
                                 f"instead of answering {req.expect}")
        assert status == req.expect, (
            f"{req.method} {req.path} ({req.kind}) answered {status}, expected {req.expect}")
        if req.version is not None and 200 <= status < 300:
            self.answered |= {req.version} | self.before.get(req.version, set())

    def _settle(self, enc: Encoder) -> None:
        enc.unanswered.clear()
        enc.close()

    def _tick(self) -> None:
        """A live encoder keeps its part's body flowing: no body meant to finish pauses
        for as long as a third of the idle timeout. A slowloris sends its next byte."""
        for enc, _ in self.trickling:
            if not enc.eof and time.monotonic() - enc.last_sent > IDLE / 5:
                try:
                    enc.send(b"a")
                except OSError:
                    enc.eof = True  # closed by the relay
        for enc in self.slots:
            if enc is not None and enc.open is not None \
                    and time.monotonic() - enc.last_sent > IDLE / 3:
                part = enc.open
                if len(part.left) > 1:
                    enc.send(chunk(part.left.pop(0)))
                else:
                    self._finish_part(enc)

    def _finish_part(self, enc: Encoder) -> None:
        part = enc.open
        assert part is not None
        enc.send(b"".join(chunk(p) for p in part.left) + b"0\r\n\r\n")
        part.req.expect = 204
        self.expected[part.req.path] = media_body(part.req.path)
        enc.open = None
        self.parts.append(part.uri)

    # -- manifests --------------------------------------------------------------------------
    def _next_version(self) -> int:
        self.version += 1
        return self.version

    def _playlist(self, version: int, *, end: bool = False) -> bytes:
        lines = ["#EXTM3U", "#EXT-X-VERSION:9", "#EXT-X-TARGETDURATION:1",
                 "#EXT-X-PART-INF:PART-TARGET=0.25"]
        window = self.segments[-WINDOW:]
        lines.append(f"#EXT-X-MEDIA-SEQUENCE:{len(self.segments) - len(window)}")
        if self.hls_init:
            lines.append('#EXT-X-MAP:URI="init.mp4"')
        for uri in window:
            lines += ["#EXTINF:1.000,", uri]
        if not end:
            lines += [f'#EXT-X-PART:DURATION=0.25,URI="{uri}"' for uri in self.parts]
            hinted = [enc.open.uri for enc in self.slots if enc is not None and enc.open]
            lines += [f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{uri}"' for uri in hinted]
        else:
            lines.append("#EXT-X-ENDLIST")
        lines.append(f"## v{version}")
        return ("\n".join(lines) + "\n").encode()

    def _mpd(self, version: int, *, end: bool = False) -> bytes:
        numbers = self.dash[-WINDOW:]
        start = numbers[0] if numbers else 1
        timeline = f'<S t="{start - 1}" d="1" r="{len(numbers) - 1}"/>' if numbers else ""
        init = ' initialization="init.m4s"' if self.dash_init else ""
        kind = "static" if end else "dynamic"
        return (
            f'<?xml version="1.0"?><!-- v{version} --><MPD type="{kind}"><Period>'
            f'<AdaptationSet><SegmentTemplate timescale="1" media="chunk_$Number$.m4s" '
            f'startNumber="{start}"{init}><SegmentTimeline>{timeline}</SegmentTimeline>'
            '</SegmentTemplate><Representation id="0" bandwidth="1"/></AdaptationSet>'
            "</Period></MPD>"
        ).encode()

    def _send_manifest(self, enc: Encoder, path: str, body: bytes, chunked: bool) -> None:
        version = int(_VERSION.search(body).group(1))  # type: ignore[union-attr]
        req = Req("PUT", path, "manifest", time.monotonic(), 204, version)
        framing = (head("PUT", path, chunked=True) + b"".join(chunk(p) for p in pieces(body, 3))
                   + b"0\r\n\r\n") if chunked else head("PUT", path, length=len(body)) + body
        self.sent_manifest[version] = body
        self._request(enc, req, framing)

    def _send_media(self, enc: Encoder, path: str, chunked: bool) -> None:
        body = media_body(path)
        req = Req("PUT", path, "media", time.monotonic(), 204)
        framing = (head("PUT", path, chunked=True) + b"".join(chunk(p) for p in pieces(body, 4))
                   + b"0\r\n\r\n") if chunked else head("PUT", path, length=len(body)) + body
        self._request(enc, req, framing)
        self.expected[path] = body

    # -- rules: what encoders send ---------------------------------------------------------
    @rule(slot=st.integers(0, SLOTS - 1), dash=st.booleans())
    def put_init(self, slot: int, dash: bool) -> None:
        self._tick()
        _, enc = self._encoder(slot)
        self._send_media(enc, "d/init.m4s" if dash else "h/init.mp4", chunked=False)
        if dash:
            self.dash_init = True
        else:
            self.hls_init = True

    @precondition(lambda self: not any(e is not None and e.open for e in self.slots))
    @rule(slot=st.integers(0, SLOTS - 1), chunked=st.booleans())
    def put_segment(self, slot: int, chunked: bool) -> None:
        self._tick()
        _, enc = self._encoder(slot)
        n = self.next_segment
        self.next_segment += 1
        self._send_media(enc, f"h/seg_{n}.m4s", chunked)
        self.segments.append(f"seg_{n}.m4s")
        self.parts, self.part_number = [], 0

    @rule(slot=st.integers(0, SLOTS - 1), chunked=st.booleans())
    def put_dash_chunk(self, slot: int, chunked: bool) -> None:
        self._tick()
        _, enc = self._encoder(slot)
        n = self.dash[-1] + 1 if self.dash else 1
        self._send_media(enc, f"d/chunk_{n}.m4s", chunked)
        self.dash.append(n)

    @precondition(lambda self: not any(e is not None and e.open for e in self.slots))
    @rule(slot=st.integers(0, SLOTS - 1), first=st.integers(1, 3))
    def start_part(self, slot: int, first: int) -> None:
        # LL-HLS: a part's upload starts before the playlist that hints it, and its body
        # comes as the encoder produces it.
        self._tick()
        _, enc = self._encoder(slot)
        uri = f"part_{self.next_segment}_{self.part_number}.m4s"
        self.part_number += 1
        path = f"h/{uri}"
        bits = pieces(media_body(path), 8)
        req = Req("PUT", path, "media", time.monotonic(), None)
        self._request(enc, req, head("PUT", path, chunked=True)
                      + b"".join(chunk(p) for p in bits[:first]))
        enc.open = OpenPart(uri, req, bits[first:])

    @precondition(lambda self: any(e is not None and e.open for e in self.slots))
    @rule()
    def finish_part(self) -> None:
        for enc in self.slots:
            if enc is not None and enc.open is not None:
                self._finish_part(enc)

    @rule(slot=st.integers(0, SLOTS - 1), chunked=st.booleans())
    def put_playlist(self, slot: int, chunked: bool) -> None:
        self._tick()
        _, enc = self._encoder(slot)
        self._send_manifest(enc, PLAYLIST, self._playlist(self._next_version()), chunked)

    @rule(slot=st.integers(0, SLOTS - 1), chunked=st.booleans())
    def put_mpd(self, slot: int, chunked: bool) -> None:
        self._tick()
        _, enc = self._encoder(slot)
        self._send_manifest(enc, MPD, self._mpd(self._next_version()), chunked)

    @precondition(lambda self: any("%" not in uri for uri in self.segments[:-WINDOW]))
    @rule(slot=st.integers(0, SLOTS - 1), data=st.data())
    def delete_old_segment(self, slot: int, data: st.DataObject) -> None:
        # ffmpeg's delete_segments: it deletes what left its window, on its own schedule.
        self._tick()
        uri = data.draw(st.sampled_from([u for u in self.segments[:-WINDOW] if "%" not in u]))
        _, enc = self._encoder(slot)
        path = f"h/{uri}"
        self._request(enc, Req("DELETE", path, "delete", time.monotonic(), 204),
                      head("DELETE", path))

    @precondition(lambda self: any("%" not in uri for uri in self.segments))
    @rule(slot=st.integers(0, SLOTS - 1), data=st.data())
    def second_encoder_repeats_a_segment(self, slot: int, data: st.DataObject) -> None:
        # A redundant encoder pushes the same rendition: the same names, the same bytes.
        self._tick()
        uri = data.draw(st.sampled_from([u for u in self.segments if "%" not in u]))
        _, enc = self._encoder(slot)
        self._send_media(enc, f"h/{uri}", chunked=data.draw(st.booleans()))

    @precondition(lambda self: not any(e is not None and e.open for e in self.slots))
    @rule(slot=st.integers(0, SLOTS - 1), deletes=st.integers(0, 8), chunked=st.booleans())
    def burst_and_leave(self, slot: int, deletes: int, chunked: bool) -> None:
        """ffmpeg -http_persistent 1 ending: a segment, DELETEs of old ones and the playlist
        pipelined in one write, then the socket closed at once, unread answers and all (a
        close with unread data is a TCP reset)."""
        self._tick()
        i, enc = self._encoder(slot)
        n = self.next_segment
        self.next_segment += 1
        path = f"h/seg_{n}.m4s"
        body = media_body(path)
        data = head("PUT", path, length=len(body)) + body
        self.requests.append(Req("PUT", path, "media", time.monotonic(), 204))
        self.segments.append(f"seg_{n}.m4s")
        self.parts, self.part_number = [], 0
        old = [u for u in self.segments[:-WINDOW] if "%" not in u][-deletes:] if deletes else []
        for uri in old:
            self.requests.append(Req("DELETE", f"h/{uri}", "delete", time.monotonic(), 204))
            data += head("DELETE", f"h/{uri}")
        version = self._next_version()
        playlist = self._playlist(version)
        self.sent_manifest[version] = playlist
        self.before[version] = set(self.answered).union(
            *({v} | self.before.get(v, set()) for v in enc.versions))
        self.requests.append(Req("PUT", PLAYLIST, "manifest", time.monotonic(), 204, version))
        data += head("PUT", PLAYLIST, length=len(playlist)) + playlist
        enc.send(data)
        self.expected[path] = body
        enc.close()
        self.slots[i] = None

    @rule(slot=st.integers(0, SLOTS - 1))
    def read_answers(self, slot: int) -> None:
        self._tick()
        enc = self.slots[slot]
        if enc is not None:
            self._read_answers(enc)

    @rule(slot=st.integers(0, SLOTS - 1), read=st.booleans())
    def close_encoder(self, slot: int, read: bool) -> None:
        # read=False is ffmpeg -http_persistent 1 at its end: the last requests sent and
        # the socket closed without reading a single answer.
        self._tick()
        enc = self.slots[slot]
        if enc is None or enc.open is not None:
            return
        if read:
            self._read_answers(enc)
        enc.close()
        enc.unanswered.clear()
        self.slots[slot] = None

    @rule(seconds=st.sampled_from([0.05, 0.15, 0.3]))
    def time_passes(self, seconds: float) -> None:
        self._tick()
        time.sleep(seconds)
        self._tick()

    @rule(kind=st.sampled_from(["503", "cut-upload", "delay"]),
          where=st.sampled_from(["next-segment", "playlist", "mpd", "any"]),
          times=st.integers(1, 3))
    def origin_fault(self, kind: Any, where: str, times: int) -> None:
        path = {"next-segment": f"h/seg_{self.next_segment}.m4s", "playlist": PLAYLIST,
                "mpd": MPD, "any": None}[where]
        self.server.faults.inject(kind, method="PUT", path=path, times=times, delay=0.3)

    # -- rules: misbehaving encoders --------------------------------------------------------
    @rule(what=st.sampled_from(["new-segment", "old-segment", "playlist"]),
          how=st.sampled_from(["length", "chunked-mid", "chunked-no-end"]),
          fraction=st.floats(0.05, 0.95), at_once=st.booleans())
    def body_cut(self, what: str, how: str, fraction: float, at_once: bool) -> None:
        """The encoder dies mid-body: its connection closes."""
        self._tick()
        if what == "old-segment" and not self.expected:
            what = "new-segment"
        if what == "old-segment":
            path = sorted(self.expected)[int(fraction * len(self.expected))]
            version, body = None, media_body(path, "cut")
        else:
            path, body, version = self._unfinished(what, "cut")
        enc = self._connect()
        cut = max(1, int(len(body) * fraction))
        if how == "length":
            data = head("PUT", path, length=len(body)) + body[:cut]
        elif how == "chunked-mid":
            data = head("PUT", path, chunked=True) + chunk(body[:cut])[:-3]
        else:  # every byte of the body, only the last chunk missing
            data = head("PUT", path, chunked=True) + b"".join(chunk(p) for p in pieces(body, 3))
        req = Req("PUT", path, "media" if version is None else "manifest", time.monotonic(),
                  None, version)
        self.requests.append(req)
        enc.send(data)
        if not at_once:
            # No answer may come to an unfinished request before the encoder goes.
            _, statuses = enc.closed_within(0.05)
            assert not any(200 <= s < 300 for s in statuses), (path, statuses)
        # at_once: the head, the piece of body and the end reach the relay together, so
        # the cut may come before the relay's turn to hand the object over.
        enc.close()

    @rule(what=st.sampled_from(["new-segment", "playlist"]))
    def body_pauses(self, what: str) -> None:
        """The encoder stalls mid-body and never goes on: the relay must cut it after the
        idle timeout; checked later, while other encoders carry on."""
        self._tick()
        path, body, version = self._unfinished(what, "paused")
        enc = self._connect()
        req = Req("PUT", path, "media" if version is None else "manifest", time.monotonic(),
                  None, version)
        self.requests.append(req)
        enc.send(head("PUT", path, length=len(body)) + body[: len(body) // 2])
        self.abandoned.append((enc, req, time.monotonic()))

    def _unfinished(self, what: str, how: str) -> tuple[str, bytes, int | None]:
        """Path, body and manifest version (None for media) of a new playlist version or a
        new segment that its encoder will not finish."""
        if what == "playlist":
            version = self._next_version()
            self.unfinished_versions.add(version)
            return PLAYLIST, self._playlist(version), version
        path = f"h/seg_{self.next_segment}.m4s"
        self.next_segment += 1
        self.segments.append(path[2:])
        return path, media_body(path, how), None

    @rule()
    def head_trickles(self) -> None:
        """A slowloris: a header byte every fifth of the idle timeout (sent by ``_tick``
        while other encoders carry on); its connection must be closed within a few idle
        timeouts."""
        enc = self._connect()
        enc.send(b"PUT /h/slow.m4s HTTP/1.1\r\nHost: relay\r\nX-Slow: ")
        self.trickling.append((enc, time.monotonic()))

    @rule(manifest=st.booleans(), declared=st.booleans())
    def body_too_large(self, manifest: bool, declared: bool) -> None:
        self._tick()
        if manifest:
            version = self._next_version()
            self.unfinished_versions.add(version)
            body = self._playlist(version)
            body += b"#" * (MANIFEST_LIMIT + 1000 - len(body)) + b"\n"
            path = PLAYLIST
        else:
            version = None
            path = f"h/big_{len(self.requests)}.m4s"
            body = b"x" * (STREAMING_LIMIT + 1000)
        enc = self._connect()
        req = Req("PUT", path, "oversize", time.monotonic(), 413, version)
        self.requests.append(req)
        try:
            if declared:
                enc.send(head("PUT", path, length=len(body)))
            else:
                enc.send(head("PUT", path, chunked=True)
                         + b"".join(chunk(p) for p in pieces(body, 8)) + b"0\r\n\r\n")
            # Done sending: the relay, lingering to read what follows its final answer,
            # sees the end at once.
            enc.sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the relay may have answered and closed already
        closed, statuses = enc.closed_within(CLOSE_BY)
        enc.close()
        assert statuses == [413] and closed, (path, declared, statuses, closed)

    @rule()
    def refused_name(self) -> None:
        # A name MediaStore refuses (a space): 400 from the relay; the next playlists name
        # it all the same, and the publisher must mark it as a gap.
        self._tick()
        n = self.next_segment
        self.next_segment += 1
        enc = self._connect()
        body = media_body(f"h/seg {n}.m4s")
        self.requests.append(Req("PUT", f"h/seg {n}.m4s", "refused", time.monotonic(), 400))
        enc.send(head("PUT", f"h/seg%20{n}.m4s", length=len(body)) + body)
        enc.sock.shutdown(socket.SHUT_WR)
        closed, statuses = enc.closed_within(CLOSE_BY)
        enc.close()
        assert statuses == [400] and closed, statuses
        self.segments.append(f"seg%20{n}.m4s")

    @rule()
    def quiesce(self) -> None:
        """Every encoder finishes and closes, reading its answers: the relay then holds no
        body, no connection and no task."""
        self._close_all(read=True)
        self._wait_idle()

    def _close_all(self, *, read: bool) -> None:
        for i, enc in enumerate(self.slots):
            if enc is None:
                continue
            if enc.open is not None:
                self._finish_part(enc)
            if read:
                self._read_answers(enc)
            enc.close()
            self.slots[i] = None
        self._check_abandoned(wait=True)

    def _wait_idle(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            stats = self.relay.stats
            tasks = self._connection_tasks()
            if stats.buffered == 0 and stats.in_flight == 0 and tasks == 0:
                return
            assert time.monotonic() < deadline, (
                f"30 s after the encoders closed the relay still holds {stats.buffered} B, "
                f"{stats.in_flight} bodies and {tasks} connection tasks: {stats!r}")
            time.sleep(0.05)

    def _check_abandoned(self, *, wait: bool) -> None:
        keep = []
        abandoned, self.abandoned = self.abandoned, []  # each is checked once
        for enc, req, since in abandoned:
            due = since + CLOSE_BY
            if not wait and time.monotonic() < due:
                keep.append((enc, req, since))
                continue
            closed, statuses = enc.closed_within(max(0.0, due - time.monotonic()))
            enc.close()
            assert not any(200 <= s < 300 for s in statuses), (req, statuses)
            assert closed, f"{req.path}: a body paused for {CLOSE_BY} s kept its connection"
        self.abandoned = keep
        trickling = []
        for enc, since in list(self.trickling):
            due = since + CLOSE_BY
            if not wait and time.monotonic() < due and not enc.eof:
                trickling.append((enc, since))
                continue
            closed, statuses = (True, []) if enc.eof else enc.closed_within(
                max(0.0, due - time.monotonic()))
            enc.close()
            self.trickling.remove((enc, since))
            assert not any(200 <= s < 300 for s in statuses), statuses
            assert closed, f"a request head trickling for {CLOSE_BY} s kept its connection"
        self.trickling = trickling

    # -- the independent reader ----------------------------------------------------------
    @invariant()
    def origin_is_consistent(self) -> None:
        if self.torn_down:
            return
        self._tick()
        self._check_abandoned(wait=False)
        self._check_origin()
        self._tick()

    def _listing(self, folder: str) -> dict[str, tuple[int, str]]:
        items: dict[str, tuple[int, str]] = {}
        kwargs: dict[str, Any] = {"Path": folder, "MaxResults": 1000}
        while True:
            page = self.reader.list_items(**kwargs)
            for item in page.get("Items", []):
                if item["Type"] == "OBJECT":
                    items[f"{folder}/{item['Name']}"] = (item["ContentLength"], item["ETag"])
            if not page.get("NextToken"):
                return items
            kwargs["NextToken"] = page["NextToken"]

    def _get(self, path: str) -> bytes | None:
        """The object's bytes; ``None`` when it is missing, or when a STREAMING upload of
        it is still running (answered chunked, without Content-Length): its body comes
        from this thread's own encoders, so reading it here would wait on ourselves until
        the relay's idle timeout cut the upload. Checked at a later step."""
        self._tick()  # a reader's round of many GETs must not starve an open part
        try:
            response = self.reader.get_object(Path=path)
        except self.reader.exceptions.ObjectNotFoundException:
            return None
        if "ContentLength" not in response:
            response["Body"].close()
            return None
        return bytes(response["Body"].read())

    def _check_origin(self) -> None:
        manifests = {path: self._get(path) for path in (PLAYLIST, MPD)}
        stored = {**self._listing("h"), **self._listing("d")}
        for path, body in manifests.items():
            if body is not None:
                self._check_manifest(path, body, stored)
        for path, (size, etag) in stored.items():
            if path in (PLAYLIST, MPD) or self.verified.get(path) == etag:
                continue
            assert path in self.expected, (
                f"{path} ({size} B) is stored, but no encoder finished a body for it")
            content = self._get(path)
            if content is None:
                continue  # deleted since the listing
            assert content == self.expected[path], (
                f"{path}: stored {len(content)} B that no encoder finished "
                f"(expected {len(self.expected[path])} B)")
            self.verified[path] = etag

    def _check_manifest(self, path: str, body: bytes, stored: dict[str, Any]) -> None:
        match = _VERSION.search(body)
        assert match is not None, body
        version = int(match.group(1))
        assert version not in self.unfinished_versions, (
            f"{path} v{version} is stored, but its encoder never finished sending it")
        assert version in self.sent_manifest, f"{path}: stored v{version} was never sent"
        assert _plain(body) == _plain(self.sent_manifest[version]), (
            f"{path} v{version} stored as\n{body.decode()}\nsent as\n"
            f"{self.sent_manifest[version].decode()}")
        seen = self.seen[path]
        if not seen or seen[-1] != version:
            for earlier in seen:
                assert version not in self.before.get(earlier, set()), (
                    f"{path}: v{version} stored after v{earlier}, which the relay received "
                    f"after it (stored in order: {[*seen, version]})")
            seen.append(version)
        folder = path.split("/")[0]
        for name in _named(body):
            target = f"{folder}/{name}"
            if target in stored:
                continue
            self._tick()
            try:
                self.reader.describe_object(Path=target)
            except (botocore.exceptions.ClientError, botocore.exceptions.ParamValidationError):
                raise AssertionError(
                    f"stored {path} v{version} names {target}, which the origin does not "
                    f"have, without marking it a gap:\n{body.decode()}") from None

    # -- the end: the documented shutdown, with a healthy origin ----------------------------
    def teardown(self) -> None:
        try:
            if not self.torn_down:
                self._end_of_stream()
        finally:
            self.torn_down = True
            try:
                self.close_portal(self._shutdown)
            finally:
                self.reader.close()
                for enc in self.connections:
                    enc.close()

    def _end_of_stream(self) -> None:
        self.server.faults.clear()
        self._close_all(read=True)
        self._wait_idle()
        # ffmpeg's last act: the ENDLIST playlist and the static MPD, pipelined, and the
        # socket closed without reading an answer.
        enc = self._connect()
        final_hls, final_mpd = self._next_version(), self._next_version()
        self._send_manifest(enc, PLAYLIST, self._playlist(final_hls, end=True), False)
        self._send_manifest(enc, MPD, self._mpd(final_mpd, end=True), True)
        enc.close()
        # The shutdown begins at once: the connection may still be in the listen backlog,
        # accepted but not yet served, or served (test_relay_edges.py,
        # test_requests_on_connections_not_yet_accepted_at_close_are_published and
        # test_requests_sent_before_the_relay_closes_are_published); its requests are
        # published in every case.
        async def shutdown() -> None:
            with anyio.fail_after(60):
                await self.relay.aclose()
                await self.publisher.aclose()
            # "No task, connection or file is left behind" (docs/live.md, Shutdown); deletes
            # not due at the close are abandoned, none left scheduled.
            assert self.session.pool.in_use == 0, self.session.pool
            (dest,) = self.publisher.stats().destinations
            assert (dest.pending, dest.deletes_scheduled) == (0, 0), dest

        self.portal.call(shutdown)
        self.torn_down = True
        for path, version in ((PLAYLIST, final_hls), (MPD, final_mpd)):
            body = self._get(path)
            assert body is not None and _VERSION.search(body).group(1) == b"%d" % version, (  # type: ignore[union-attr]
                f"{path}: the final version v{version} was not stored last")
        self._check_origin()
        stats = self.relay.stats
        assert stats.buffered == 0 and stats.in_flight == 0, stats
        assert self._connection_tasks() == 0
        # A complete media PUT is published (the promise of its 204, and of a request
        # whose connection closed before its answer): the origin logged a 200 PUT for it.
        finished = [r for r in self.requests if r.kind == "media" and r.expect == 204]
        for req in finished:
            assert any(m == "PUT" and p == req.path and s == "200" and t >= req.sent
                       for m, p, s, t in self.access), f"{req.path} was never stored"
        # (An oversized playlist's version is checked never to be stored by the reader.)
        never = {r.path for r in self.requests
                 if r.kind in ("oversize", "refused") and r.version is None}
        puts = {p for m, p, s, _ in self.access if m == "PUT" and s == "200"}
        assert not (never & puts), never & puts

    async def _shutdown(self) -> None:
        await self.relay.aclose()
        await self.publisher.aclose(cancel=True)
        await self.session.aclose()
        await self.server.__aexit__(None, None, None)
        left = {t for t in asyncio.all_tasks() - self.tasks_before
                if t is not asyncio.current_task()
                # The local server's own handlers (aiohttp ends them after its close).
                and "web_protocol" not in repr(getattr(t.get_coro(), "cr_code", None))
                and "BlockingPortal" not in repr(t.get_coro())}
        assert left == set(), left


def _plain(manifest: bytes) -> list[str]:
    """A manifest without what the publisher may add or drop (gap marks, hints)."""
    return [line.replace(",GAP=YES", "") for line in manifest.decode().splitlines()
            if line != "#EXT-X-GAP" and not line.startswith("#EXT-X-PRELOAD-HINT")]


def _named(manifest: bytes) -> list[str]:
    """The objects a manifest names that must exist (not gaps, not hints), by this test's
    own reading of the formats it writes."""
    text = manifest.decode()
    names: list[str] = []
    if text.startswith("<?xml"):
        init = re.search(r'initialization="([^"]+)"', text)
        if init:
            names.append(init.group(1))
        start = int(re.search(r'startNumber="(\d+)"', text).group(1))  # type: ignore[union-attr]
        run = re.search(r'<S t="\d+" d="1" r="(\d+)"/>', text)
        if run:
            names += [f"chunk_{start + i}.m4s" for i in range(int(run.group(1)) + 1)]
        return names
    gap = False
    for line in text.splitlines():
        if line == "#EXT-X-GAP":
            gap = True
        elif line.startswith(("#EXT-X-MAP:", "#EXT-X-PART:")):
            if "GAP=YES" not in line:
                names += _URI.findall(line)
        elif line and not line.startswith("#"):
            if not gap:
                names.append(line.replace("%20", " "))
            gap = False
    return names


RelayMachine.TestCase.settings = machine_settings(
    examples=10, long_examples=100, steps=30, long_steps=60
)
test_relay_state_machine = RelayMachine.TestCase
