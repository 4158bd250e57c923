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
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..errors import MediaStoreError, ObjectNotFoundError
from .manifests import parse_manifest
from .publisher import LivePublisher, Publication

if TYPE_CHECKING:
    from ..client import ContainerClient

__all__ = [
    "PlaylistReader",
    "ReaderStats",
    "RenditionReport",
    "SyntheticStream",
    "box",
    "chunk_timestamps",
    "cmaf_chunk",
    "cmaf_init",
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


def chunk_timestamps(buffer: bytearray) -> list[float]:
    """Remove every complete top-level box from the front of ``buffer``; return the
    production times found in its ``mdat`` boxes."""
    stamps = []
    while len(buffer) >= 8:
        size, kind = struct.unpack_from(">I4s", buffer)
        if size < 8 or len(buffer) < size:
            break
        if kind == b"mdat" and size >= 8 + _STAMP.size:
            magic, produced, _ = _STAMP.unpack_from(buffer, 8)
            if magic == _MAGIC:
                stamps.append(produced)
        del buffer[:size]
    return stamps


# --- the producer --------------------------------------------------------------------------


@dataclass
class RenditionReport:
    """What one rendition published, for the summary."""

    name: str
    segments: list[Publication] = field(default_factory=list)
    parts: list[Publication] = field(default_factory=list)
    playlists: list[Publication] = field(default_factory=list)
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
    ==================== ========= ==========================================================
    """

    renditions: int = 3
    duration: float = 10.0
    segment_duration: float = 2.0
    part_duration: float | None = 0.5
    chunk_duration: float = 0.1
    bitrate: int = 1_000_000
    window: int = 6

    def names(self) -> list[str]:
        return [f"r{i}" for i in range(self.renditions)]

    def rate(self, index: int) -> int:
        """Bits/s of rendition ``index``: each is 3/4 of the one before."""
        return int(self.bitrate * 0.75**index)

    @property
    def segments(self) -> int:
        return max(1, math.ceil(self.duration / self.segment_duration - 1e-9))

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
        master = ["#EXTM3U", "#EXT-X-VERSION:9", "#EXT-X-INDEPENDENT-SEGMENTS"]
        for i, name in enumerate(self.names()):
            master.append(
                f"#EXT-X-STREAM-INF:BANDWIDTH={self.rate(i)},CODECS=\"avc1.64001f\""
            )
            master.append(f"{name}/index.m3u8")
        start = anyio.current_time() + 0.05
        async with anyio.create_task_group() as tg:
            for i, name in enumerate(self.names()):
                tg.start_soon(self._rendition, publisher, name, i, start, reports[name])
            await publisher.publish("master.m3u8", ("\n".join(master) + "\n").encode())
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
        await publisher.publish(f"{name}/init.mp4", cmaf_init())
        playlist = _Playlist(name, seg_d, part_d, self.window)
        sequence = 0
        for n in range(self.segments):
            segment = _Feed()
            report.segments.append(
                await publisher.publish(f"{name}/seg_{n}.m4s", segment.chunks(), duration=seg_d)
            )
            part: _Feed | None = None
            part_index = 0
            for c in range(chunks_per_segment):
                if chunks_per_part is not None and c % chunks_per_part == 0:
                    part = _Feed()
                    part_name = f"seg_{n}.part{part_index}.m4s"
                    report.parts.append(
                        await publisher.publish(
                            f"{name}/{part_name}", part.chunks(), duration=part_d
                        )
                    )
                    playlist.hint = part_name
                    report.playlists.append(
                        await publisher.publish(f"{name}/index.m3u8", playlist.render())
                    )
                due = start + n * seg_d + (c + 1) * self.chunk_duration
                await anyio.sleep(max(0.0, due - anyio.current_time()))
                sequence += 1
                chunk = cmaf_chunk(sequence, sequence * 9000, chunk_size)
                report.chunks += 1
                if not segment.push(chunk):
                    report.chunks_refused += 1
                if part is not None:
                    part.push(chunk)
                    if (c + 1) % (chunks_per_part or 1) == 0 or c + 1 == chunks_per_segment:
                        part.close()
                        playlist.add_part(n, f"seg_{n}.part{part_index}.m4s",
                                          (c % (chunks_per_part or 1) + 1) * self.chunk_duration)
                        part_index += 1
                        part = None
                        if c + 1 < chunks_per_segment:
                            # the next part is hinted once its upload starts (just above)
                            playlist.hint = None
            segment.close()
            playlist.add_segment(n, f"seg_{n}.m4s", chunks_per_segment * self.chunk_duration)
            playlist.hint = None
            if n + 1 == self.segments:
                playlist.ended = True
            report.playlists.append(
                await publisher.publish(f"{name}/index.m3u8", playlist.render())
            )


class _Playlist:
    """The LL-HLS media playlist of one synthetic rendition."""

    def __init__(self, name: str, target: float, part: float | None, window: int) -> None:
        self.name = name
        self.target = target
        self.part = part
        self.window = window
        self.segments: list[tuple[int, str, float]] = []
        self.parts: dict[int, list[tuple[str, float]]] = {}
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

    def render(self) -> bytes:
        lines = ["#EXTM3U", "#EXT-X-VERSION:9", f"#EXT-X-TARGETDURATION:{math.ceil(self.target)}"]
        if self.part is not None and not self.ended:
            lines.append(f"#EXT-X-PART-INF:PART-TARGET={self.part:g}")
            lines.append(f"#EXT-X-SERVER-CONTROL:PART-HOLD-BACK={3 * self.part:g}")
        first = self.segments[0][0] if self.segments else len(self.segments)
        if not self.segments and self.parts:
            first = min(self.parts)
        lines.append(f"#EXT-X-MEDIA-SEQUENCE:{first}")
        lines.append('#EXT-X-MAP:URI="init.mp4"')
        listed = set()
        for n, uri, duration in self.segments:
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


@dataclass
class ReaderStats:
    """What a :class:`PlaylistReader` saw."""

    playlist_versions: int = 0
    #: Objects a playlist named (not as a gap) that a GET right after could not fetch.
    missing: list[str] = field(default_factory=list)
    #: Hinted parts a GET right after the hint could not fetch. The publisher hints a part
    #: once its upload has started; an origin failing that very upload (injected faults)
    #: makes it vanish until the retry, so under faults a few are expected.
    hint_misses: list[str] = field(default_factory=list)
    #: Objects read completely.
    objects_read: int = 0
    bytes_read: int = 0
    #: Seconds from each chunk's production to its arrival at the reader.
    chunk_latencies: list[float] = field(default_factory=list)
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
                            stats.chunk_latencies.extend(
                                now - t for t in chunk_timestamps(buffer) if t >= connected
                            )
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
