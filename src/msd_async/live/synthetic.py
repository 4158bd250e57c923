"""A synthetic low-latency live stream and a reader that follows it, without an encoder.

Used by ``msd demo``, the live benchmark and the tests. :class:`SyntheticStream` plays a
packager: per rendition an init segment, then segments made of CMAF-shaped chunks (one
``moof`` + ``mdat`` each, produced in real time), each segment and each LL-HLS part uploaded
as a STREAMING object while its chunks are produced, and an LL-HLS media playlist after
every part (with a ``#EXT-X-PRELOAD-HINT`` for the next one). Every ``mdat`` carries the
wall-clock time it was produced, so a :class:`PlaylistReader` reading the same objects
measures chunk-to-reader latency.
"""

from __future__ import annotations

import math
import struct
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..errors import MediaStoreError, ObjectNotFoundError
from .manifests import parse_manifest
from .outcomes import Publication, Status
from .publisher import LivePublisher
from .stats import Histogram

if TYPE_CHECKING:
    from ..client import ContainerClient

__all__ = [
    "PathTally",
    "PlaylistReader",
    "PublicationTally",
    "ReaderStats",
    "RenditionPackager",
    "RenditionReport",
    "SyntheticStream",
    "box",
    "chunk_timestamps",
    "cmaf_chunk",
    "cmaf_init",
    "multivariant_playlist",
    "stamp_box",
]

_MAGIC: Final = b"MSDT"
_STAMP: Final = struct.Struct(">4sdI")


def box(kind: bytes, payload: bytes) -> bytes:
    """An ISO BMFF box: 32-bit size, 4-character type, payload."""
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def _full_box(kind: bytes, version: int, flags: int, payload: bytes) -> bytes:
    return box(kind, struct.pack(">I", (version << 24) | flags) + payload)


def cmaf_init(track_id: int = 1) -> bytes:
    """A CMAF-shaped header: ``ftyp`` + ``moov`` (mvhd, trak/tkhd, mvex/trex)."""
    ftyp = box(b"ftyp", b"cmfc" + struct.pack(">I", 0) + b"iso6cmfccmf2")
    mvhd = _full_box(b"mvhd", 0, 0, struct.pack(">IIII", 0, 0, 90000, 0) + bytes(80))
    tkhd = _full_box(b"tkhd", 0, 3, struct.pack(">IIII", 0, 0, track_id, 0) + bytes(64))
    trex = _full_box(b"trex", 0, 0, struct.pack(">IIIII", track_id, 1, 0, 0, 0))
    moov = box(b"moov", mvhd + box(b"trak", tkhd) + box(b"mvex", trex))
    return ftyp + moov


def cmaf_chunk(sequence: int, decode_time: int, size: int, *, track_id: int = 1) -> bytes:
    """One CMAF chunk of about ``size`` bytes: ``moof`` (mfhd, traf/tfhd/tfdt/trun) and an
    ``mdat`` whose payload starts with the wall-clock time of its creation."""
    mfhd = _full_box(b"mfhd", 0, 0, struct.pack(">I", sequence))
    tfhd = _full_box(b"tfhd", 0, 0x020000, struct.pack(">I", track_id))
    tfdt = _full_box(b"tfdt", 1, 0, struct.pack(">Q", decode_time))
    stamp = _STAMP.pack(_MAGIC, time.time(), sequence)
    payload_size = max(len(stamp), size - 108)

    def moof(data_offset: int) -> bytes:
        # trun flags: data-offset-present | sample-size-present; one sample.
        trun = _full_box(b"trun", 0, 0x000201, struct.pack(">IiI", 1, data_offset, payload_size))
        return box(b"moof", mfhd + box(b"traf", tfhd + tfdt + trun))

    header = moof(len(moof(0)) + 8)  # the sample starts right after mdat's header
    return header + box(b"mdat", stamp + bytes(payload_size - len(stamp)))


def stamp_box(sequence: int) -> bytes:
    """A ``free`` box carrying the wall-clock time of its creation: put before a real
    encoder's chunk, it lets :func:`chunk_timestamps` time that chunk (players and decoders
    skip ``free`` boxes, ISO/IEC 14496-12 section 8.1.2)."""
    return box(b"free", _STAMP.pack(_MAGIC, time.time(), sequence))


def chunk_timestamps(buffer: bytearray) -> list[float]:
    """Remove every complete top-level box from the front of ``buffer``; return the
    production times found in its ``mdat`` (synthetic) and ``free`` (:func:`stamp_box`)
    boxes."""
    stamps = []
    while len(buffer) >= 8:
        size, kind = struct.unpack_from(">I4s", buffer)
        if size < 8 or len(buffer) < size:
            break
        if kind in (b"mdat", b"free") and size >= 8 + _STAMP.size:
            magic, produced, _ = _STAMP.unpack_from(buffer, 8)
            if magic == _MAGIC:
                stamps.append(produced)
        del buffer[:size]
    return stamps


# --- the producer --------------------------------------------------------------------------


class PublicationTally:
    """The publications of one kind of one rendition, in constant memory however long the
    stream runs: counts and a histogram of acknowledgement latency. A publication is held
    only until it settles, then folded into the counts. ``len()`` is the number published.
    """

    __slots__ = ("_pending", "acknowledged", "given_up", "latency", "published")

    def __init__(self) -> None:
        self.published = 0
        self.acknowledged = 0
        #: Dropped, superseded or failed.
        self.given_up = 0
        #: Seconds from the body being complete to its acknowledgement (the origin's share).
        self.latency = Histogram()
        self._pending: deque[Publication] = deque()

    def __len__(self) -> int:
        return self.published

    def __repr__(self) -> str:
        self.settle()
        return (
            f"<PublicationTally {self.acknowledged}/{self.published} acknowledged, "
            f"{self.given_up} given up, {len(self._pending)} pending>"
        )

    def add(self, publication: Publication) -> None:
        self.published += 1
        self._pending.append(publication)
        self.settle()

    def settle(self) -> None:
        """Fold the settled publications into the counts (called by every read)."""
        pending = self._pending
        for _ in range(len(pending)):
            publication = pending.popleft()
            outcome = publication.outcome if publication.done(all_destinations=True) else None
            if outcome is None:
                pending.append(publication)  # keeps the order of the unsettled ones
                continue
            if outcome.status is Status.ACKNOWLEDGED:
                self.acknowledged += 1
                latency = outcome.destinations[0].completion_latency
                if latency is not None:
                    self.latency.add(latency)
            else:
                self.given_up += 1

    @property
    def pending(self) -> int:
        self.settle()
        return len(self._pending)

    async def wait(self) -> None:
        """Until every publication added so far has settled."""
        while self._pending:
            await self._pending[0].wait(all_destinations=True)
            self.settle()


@dataclass
class RenditionReport:
    """What one rendition published, for the summary: bounded however long it runs."""

    name: str
    segments: PublicationTally = field(default_factory=PublicationTally)
    parts: PublicationTally = field(default_factory=PublicationTally)
    playlists: PublicationTally = field(default_factory=PublicationTally)
    #: Chunks the producer made.
    chunks: int = 0
    #: Chunks the publisher stopped consuming (its object was given up).
    chunks_refused: int = 0


class _Feed:
    """A streamed body the producer pushes chunks into."""

    def __init__(self) -> None:
        send, receive = anyio.create_memory_object_stream[bytes](math.inf)
        self.send: MemoryObjectSendStream[bytes] = send
        self._receive: MemoryObjectReceiveStream[bytes] = receive
        self.refused = False

    async def chunks(self) -> AsyncIterator[bytes]:
        async with self._receive:
            async for chunk in self._receive:
                yield chunk

    def push(self, chunk: bytes) -> bool:
        try:
            self.send.send_nowait(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            self.refused = True  # the publisher gave this object up and closed it
            return False
        return True

    def close(self) -> None:
        self.send.close()


@dataclass
class SyntheticStream:
    """A synthetic LL-HLS stream: ``renditions`` renditions of ``duration`` seconds.

    ==================== ========= ==========================================================
    field                default   meaning
    ==================== ========= ==========================================================
    ``renditions``       3         renditions ``r0``, ``r1``..., each its own folder
    ``duration``         10.0      seconds of stream (rounded up to whole segments)
    ``segment_duration`` 2.0       seconds per segment (the target duration)
    ``part_duration``    0.5       LL-HLS part duration; ``None``: no parts
    ``chunk_duration``   0.1       one CMAF chunk (moof + mdat) every this many seconds
    ``bitrate``          1_000_000 bits/s of ``r0``; each next one has 3/4 of it
    ``window``           6         segments in the playlist (a sliding window)
    ``can_block_reload`` False     advertise ``CAN-BLOCK-RELOAD=YES`` (only for an origin
                                   that implements LL-HLS blocking playlist reload)
    ==================== ========= ==========================================================
    """

    renditions: int = 3
    duration: float = 10.0
    segment_duration: float = 2.0
    part_duration: float | None = 0.5
    chunk_duration: float = 0.1
    bitrate: int = 1_000_000
    window: int = 6
    can_block_reload: bool = False

    def names(self) -> list[str]:
        return [f"r{i}" for i in range(self.renditions)]

    def rate(self, index: int) -> int:
        """Bits/s of rendition ``index``: each is 3/4 of the one before."""
        return int(self.bitrate * 0.75**index)

    @property
    def segments(self) -> int | None:
        """Segments per rendition; ``None`` for ``duration=0`` (until cancelled)."""
        if self.duration == 0:
            return None
        return max(1, math.ceil(self.duration / self.segment_duration - 1e-9))

    def master_playlist(self, codecs: str = "avc1.64001f") -> bytes:
        """The multivariant playlist naming every rendition's ``index.m3u8``."""
        return multivariant_playlist(
            [(name, self.rate(i), codecs, None) for i, name in enumerate(self.names())]
        )

    async def run(
        self,
        publisher: LivePublisher,
        *,
        reports: dict[str, RenditionReport] | None = None,
    ) -> dict[str, RenditionReport]:
        """Publish the whole stream in real time (all renditions concurrently) and the
        multivariant playlist ``master.m3u8``; returns what each rendition published.
        ``reports``: a dict to fill as it goes (to watch progress), else a new one."""
        if reports is None:
            reports = {}
        for name in self.names():
            reports.setdefault(name, RenditionReport(name))
        start = anyio.current_time() + 0.05
        async with anyio.create_task_group() as tg:
            for i, name in enumerate(self.names()):
                tg.start_soon(self._rendition, publisher, name, i, start, reports[name])
            await publisher.publish("master.m3u8", self.master_playlist())
        return reports

    async def _rendition(
        self,
        publisher: LivePublisher,
        name: str,
        index: int,
        start: float,
        report: RenditionReport,
    ) -> None:
        seg_d = self.segment_duration
        part_d = self.part_duration
        chunks_per_segment = max(1, round(seg_d / self.chunk_duration))
        chunks_per_part = (
            max(1, round(part_d / self.chunk_duration)) if part_d is not None else None
        )
        chunk_size = max(200, int(self.rate(index) / 8 * self.chunk_duration))
        packager = RenditionPackager(
            publisher, name, report, target=seg_d, part_target=part_d, window=self.window,
            can_block_reload=self.can_block_reload,
        )
        await packager.init(cmaf_init())
        sequence = 0
        wall_offset = time.time() - anyio.current_time()
        n = 0
        while self.segments is None or n < self.segments:
            last = self.segments is not None and n + 1 == self.segments
            await packager.start_segment(n, wall_offset + start + n * seg_d)
            for c in range(chunks_per_segment):
                if chunks_per_part is not None and c % chunks_per_part == 0:
                    await packager.start_part()
                due = start + n * seg_d + (c + 1) * self.chunk_duration
                await anyio.sleep(max(0.0, due - anyio.current_time()))
                sequence += 1
                packager.push(cmaf_chunk(sequence, sequence * 9000, chunk_size))
                if chunks_per_part is not None and (
                    (c + 1) % chunks_per_part == 0 or c + 1 == chunks_per_segment
                ):
                    packager.end_part(
                        (c % chunks_per_part + 1) * self.chunk_duration,
                        last_of_segment=c + 1 == chunks_per_segment,
                    )
                    # Let this tick's chunks reach their sockets before the next part's
                    # upload and the playlist are started: started at once, every
                    # rendition's request set-up ran between the chunks' arrival and their
                    # writes (~8 ms on a CPU at the p99 with 10 renditions; issue 20,
                    # benchmarks/results/live.md, "the egress tail").
                    await anyio.sleep(_BOUNDARY_SETTLE)
            await packager.end_segment(chunks_per_segment * self.chunk_duration, last=last)
            n += 1


#: How long a producer waits after a part's last chunk before its boundary work; small
#: against a chunk (0.1 s), so the next part is still hinted well before its first chunk.
_BOUNDARY_SETTLE: Final = 0.002


def multivariant_playlist(
    variants: Sequence[tuple[str, int, str, tuple[int, int] | None]],
) -> bytes:
    """A multivariant playlist: one ``#EXT-X-STREAM-INF`` per ``(folder, bandwidth, codecs,
    resolution)``, naming ``folder/index.m3u8``."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:9", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for name, bandwidth, codecs, resolution in variants:
        size = f",RESOLUTION={resolution[0]}x{resolution[1]}" if resolution else ""
        lines.append(f'#EXT-X-STREAM-INF:BANDWIDTH={bandwidth},CODECS="{codecs}"{size}')
        lines.append(f"{name}/index.m3u8")
    return ("\n".join(lines) + "\n").encode()


class RenditionPackager:
    """Publishes one rendition the way an LL-HLS packager does, from its chunks.

    The producer calls :meth:`init` once, then per segment :meth:`start_segment`, per part
    :meth:`start_part` (its STREAMING upload starts and the playlist hints it before any of
    its bytes exist), :meth:`push` for every CMAF chunk (to the segment and the open part),
    :meth:`end_part`, and :meth:`end_segment`. Every segment carries its
    ``#EXT-X-PROGRAM-DATE-TIME`` (the wall-clock time of its first frame), which players
    measure latency against. Shared by the synthetic and the encoded (:mod:`.video`) streams.
    """

    def __init__(
        self,
        publisher: LivePublisher,
        name: str,
        report: RenditionReport,
        *,
        target: float,
        part_target: float | None,
        window: int = 6,
        can_block_reload: bool = False,
    ) -> None:
        self.publisher = publisher
        self.name = name
        self.report = report
        self.part_target = part_target
        self.playlist = _Playlist(name, target, part_target, window, can_block_reload)
        self._segment: _Feed | None = None
        self._part: _Feed | None = None
        self._n = 0
        self._part_index = 0

    async def init(self, data: bytes) -> None:
        await self.publisher.publish(f"{self.name}/init.mp4", data)

    async def start_segment(self, n: int, program_date_time: float) -> None:
        self._n = n
        self._part_index = 0
        self.playlist.dates[n] = program_date_time
        self._segment = _Feed()
        self.report.segments.add(
            await self.publisher.publish(
                f"{self.name}/seg_{n}.m4s", self._segment.chunks(),
                duration=self.playlist.target,
            )
        )

    async def start_part(self) -> None:
        part_name = f"seg_{self._n}.part{self._part_index}.m4s"
        self._part = _Feed()
        # A part is worth retrying as long as a player holding PART-HOLD-BACK (three part
        # targets) behind the live edge can still use it; given up sooner, it becomes a GAP
        # and a hole in the player's buffer (measured: benchmarks/results/player.md).
        deadline = None if self.part_target is None else 3 * self.part_target
        self.report.parts.add(
            await self.publisher.publish(
                f"{self.name}/{part_name}", self._part.chunks(), duration=deadline
            )
        )
        self.playlist.hint = part_name
        await self.publish_playlist()

    def push(self, chunk: bytes) -> None:
        self.report.chunks += 1
        if self._segment is not None and not self._segment.push(chunk):
            self.report.chunks_refused += 1
        if self._part is not None:
            self._part.push(chunk)

    def end_part(self, duration: float, *, last_of_segment: bool = False) -> None:
        if self._part is None:
            return
        self._part.close()
        self._part = None
        self.playlist.add_part(self._n, f"seg_{self._n}.part{self._part_index}.m4s", duration)
        self._part_index += 1
        if not last_of_segment:
            # the next part is hinted once its upload starts (start_part)
            self.playlist.hint = None

    async def end_segment(self, duration: float, *, last: bool = False) -> None:
        if self._segment is not None:
            self._segment.close()
            self._segment = None
        self.playlist.add_segment(self._n, f"seg_{self._n}.m4s", duration)
        self.playlist.hint = None
        self.playlist.ended = last
        await self.publish_playlist()

    async def publish_playlist(self) -> None:
        self.report.playlists.add(
            await self.publisher.publish(f"{self.name}/index.m3u8", self.playlist.render())
        )

    def abort(self) -> None:
        """Close the open feeds (the producer stopped mid-segment)."""
        for feed in (self._part, self._segment):
            if feed is not None:
                feed.close()
        self._part = self._segment = None


def _date(ts: float) -> str:
    import datetime

    moment = datetime.datetime.fromtimestamp(ts, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Playlist:
    """The LL-HLS media playlist of one rendition."""

    def __init__(
        self, name: str, target: float, part: float | None, window: int,
        can_block_reload: bool = False,
    ) -> None:
        self.name = name
        self.target = target
        self.part = part
        self.window = window
        self.can_block_reload = can_block_reload
        self.segments: list[tuple[int, str, float]] = []
        self.parts: dict[int, list[tuple[str, float]]] = {}
        #: Wall-clock time of each segment's first frame (EXT-X-PROGRAM-DATE-TIME).
        self.dates: dict[int, float] = {}
        self.hint: str | None = None
        self.ended = False

    def add_part(self, n: int, uri: str, duration: float) -> None:
        self.parts.setdefault(n, []).append((uri, duration))

    def add_segment(self, n: int, uri: str, duration: float) -> None:
        self.segments.append((n, uri, duration))
        del self.segments[: -self.window]
        # RFC 8216bis 6.2.2: parts older than 3 target durations leave the playlist.
        for old in [k for k in self.parts if k < n - 1]:
            del self.parts[old]
        first = self.segments[0][0]
        for old in [k for k in self.dates if k < first]:
            del self.dates[old]

    def _date_line(self, lines: list[str], n: int) -> None:
        if n in self.dates:
            lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{_date(self.dates[n])}")

    def render(self) -> bytes:
        lines = ["#EXTM3U", "#EXT-X-VERSION:9", f"#EXT-X-TARGETDURATION:{math.ceil(self.target)}"]
        if self.part is not None and not self.ended:
            lines.append(f"#EXT-X-PART-INF:PART-TARGET={self.part:g}")
            block = "CAN-BLOCK-RELOAD=YES," if self.can_block_reload else ""
            lines.append(f"#EXT-X-SERVER-CONTROL:{block}PART-HOLD-BACK={3 * self.part:g}")
        first = self.segments[0][0] if self.segments else len(self.segments)
        if not self.segments and self.parts:
            first = min(self.parts)
        lines.append(f"#EXT-X-MEDIA-SEQUENCE:{first}")
        lines.append('#EXT-X-MAP:URI="init.mp4"')
        listed = set()
        for n, uri, duration in self.segments:
            self._date_line(lines, n)
            if not self.ended:
                for i, (part_uri, part_d) in enumerate(self.parts.get(n, [])):
                    independent = ",INDEPENDENT=YES" if i == 0 else ""
                    lines.append(
                        f'#EXT-X-PART:DURATION={part_d:.3f},URI="{part_uri}"{independent}'
                    )
            lines.append(f"#EXTINF:{duration:.3f},")
            lines.append(uri)
            listed.add(n)
        if not self.ended:
            for n in sorted(k for k in self.parts if k not in listed):
                self._date_line(lines, n)
                for i, (part_uri, part_d) in enumerate(self.parts[n]):
                    independent = ",INDEPENDENT=YES" if i == 0 else ""
                    lines.append(
                        f'#EXT-X-PART:DURATION={part_d:.3f},URI="{part_uri}"{independent}'
                    )
            if self.hint is not None:
                lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{self.hint}"')
        else:
            lines.append("#EXT-X-ENDLIST")
        return ("\n".join(lines) + "\n").encode()


# --- the reader ----------------------------------------------------------------------------


class PathTally:
    """How many paths were recorded, keeping only the ``keep`` most recent: ``len()`` is
    the count of all, iterating gives the kept ones."""

    __slots__ = ("_count", "_recent")

    def __init__(self, keep: int = 100) -> None:
        self._count = 0
        self._recent: deque[str] = deque(maxlen=keep)

    def append(self, path: str) -> None:
        self._count += 1
        self._recent.append(path)

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[str]:
        return iter(self._recent)

    def __repr__(self) -> str:
        return f"<PathTally {self._count} (last: {list(self._recent)[-3:]})>"


@dataclass
class ReaderStats:
    """What a :class:`PlaylistReader` saw, in constant memory however long it reads."""

    playlist_versions: int = 0
    #: Objects a playlist named (not as a gap) that a GET right after could not fetch.
    missing: PathTally = field(default_factory=PathTally)
    #: Hinted parts a GET right after the hint could not fetch. The publisher hints a part
    #: once its upload has started; an origin failing that very upload (injected faults)
    #: makes it vanish until the retry, so under faults a few are expected.
    hint_misses: PathTally = field(default_factory=PathTally)
    #: Objects read completely.
    objects_read: int = 0
    bytes_read: int = 0
    #: Seconds from each chunk's production to its arrival at the reader.
    chunk_latency: Histogram = field(default_factory=Histogram)
    #: Hinted parts read while their upload was still in progress.
    read_while_uploading: int = 0
    ended: bool = False


class PlaylistReader:
    """Follows one media playlist like a low-latency player, and checks the origin.

    Every ``interval`` seconds it fetches the playlist; every object a new version names
    (init, segments, parts; not those marked as gaps) is fetched at once, and a 404 is
    recorded in ``stats.missing``; a hinted part is read while it uploads, each chunk's
    latency recorded. Stops at ``#EXT-X-ENDLIST`` or when cancelled.
    """

    def __init__(
        self,
        store: ContainerClient,
        playlist: str,
        *,
        interval: float = 0.1,
        verify_named: bool = True,
    ) -> None:
        self.store = store
        self.playlist = playlist
        self.interval = interval
        self.verify_named = verify_named
        self.stats = ReaderStats()
        self._seen: set[str] = set()

    async def run(self) -> ReaderStats:
        async with anyio.create_task_group() as tg:
            while not self.stats.ended:
                try:
                    body = await self.store.get_bytes(self.playlist)
                except ObjectNotFoundError:
                    body = None
                except MediaStoreError:
                    body = None  # a fault on the playlist itself: poll again
                if body is not None:
                    self.stats.playlist_versions += 1
                    info = parse_manifest(self.playlist, body)
                    self.stats.ended = info.ended
                    # A path that left the playlist does not come back: forget it, so the
                    # set holds one playlist's worth however long the stream runs.
                    self._seen.intersection_update(info.references)
                    for path, ref in info.references.items():
                        if ref.gap or path in self._seen:
                            continue
                        self._seen.add(path)
                        if ref.role == "hint":
                            tg.start_soon(self._read, path, True)
                        elif self.verify_named:
                            tg.start_soon(self._read, path, False)
                if not self.stats.ended:
                    await anyio.sleep(self.interval)
        return self.stats

    async def _read(self, path: str, hinted: bool) -> None:
        stats = self.stats
        for attempt in range(20):
            buffer = bytearray()
            try:
                async with self.store.get_object(path) as obj:
                    # Chunks produced before the reader connected were waiting at the
                    # origin: their age says how late the playlist came, not how fast the
                    # origin streams. Only chunks produced after count.
                    connected = time.time()
                    in_progress = obj.content_length is None
                    async for chunk in obj:
                        now = time.time()
                        stats.bytes_read += len(chunk)
                        if hinted:
                            buffer += chunk
                            for produced in chunk_timestamps(buffer):
                                if produced >= connected:
                                    stats.chunk_latency.add(now - produced)
                    stats.objects_read += 1
                    if hinted and in_progress:
                        stats.read_while_uploading += 1
                return
            except ObjectNotFoundError:
                if attempt == 0:
                    # Named (RFC 8216 6.2.1) or hinted (RFC 8216bis 6.2.6), so it must be
                    # there.
                    (stats.hint_misses if hinted else stats.missing).append(path)
                    return
                # A fault cut the upload this reader was following: the publisher uploads
                # it again shortly.
                await anyio.sleep(0.05)
            except MediaStoreError:
                await anyio.sleep(0.05)
