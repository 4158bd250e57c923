"""A real encoded live stream (H.264 in CMAF fMP4, LL-HLS parts) without system ffmpeg.

Needs PyAV (``pip install 'msd-async[video]'``): its wheels bundle FFmpeg's libraries with
libx264, so frames are encoded in-process. :class:`VideoStream` has the shape of
:class:`~msd_async.live.synthetic.SyntheticStream` (same renditions, segments, parts and
playlists, through the same :class:`~msd_async.live.synthetic.RenditionPackager`), but every
chunk is a real ``moof`` + ``mdat`` holding one H.264 frame whose picture shows the
wall-clock time it was made (UTC, to the millisecond) and the rendition. Each segment starts
with an IDR frame and carries ``#EXT-X-PROGRAM-DATE-TIME`` = the wall-clock time of that
frame, so a player's ``playingDate`` is comparable to the clock drawn in the picture.

:func:`video_available` says whether PyAV and its libx264 are there.
"""

from __future__ import annotations

import datetime
import fractions
import math
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.to_thread

from .synthetic import RenditionPackager, RenditionReport, multivariant_playlist, stamp_box

if TYPE_CHECKING:
    from .publisher import LivePublisher

__all__ = ["VIDEO_EXTRA", "VideoStream", "video_available"]

#: What to install for real video.
VIDEO_EXTRA: Final = "msd-async[video]"
#: The CMAF track timescale (90 kHz, the MPEG-TS clock players expect).
_TIMESCALE: Final = 90_000


def video_available() -> bool:
    """Whether PyAV is installed with an H.264 encoder (libx264)."""
    try:
        import av
    except ImportError:
        return False
    return "libx264" in av.codecs_available


# --- the picture -----------------------------------------------------------------------------

_FONT: Final = {
    "0": ("01110", "10001", "10011", "10101", "11001", "10001", "01110"),
    "1": ("00100", "01100", "00100", "00100", "00100", "00100", "01110"),
    "2": ("01110", "10001", "00001", "00010", "00100", "01000", "11111"),
    "3": ("11111", "00010", "00100", "00010", "00001", "10001", "01110"),
    "4": ("00010", "00110", "01010", "10010", "11111", "00010", "00010"),
    "5": ("11111", "10000", "11110", "00001", "00001", "10001", "01110"),
    "6": ("00110", "01000", "10000", "11110", "10001", "10001", "01110"),
    "7": ("11111", "00001", "00010", "00100", "01000", "01000", "01000"),
    "8": ("01110", "10001", "10001", "01110", "10001", "10001", "01110"),
    "9": ("01110", "10001", "10001", "01111", "00001", "00010", "01100"),
    ":": ("00000", "01100", "01100", "00000", "01100", "01100", "00000"),
    ".": ("00000", "00000", "00000", "00000", "00000", "01100", "01100"),
    " ": ("00000",) * 7,
    "-": ("00000", "00000", "00000", "11111", "00000", "00000", "00000"),
    "x": ("00000", "00000", "10001", "01010", "00100", "01010", "10001"),
    "R": ("11110", "10001", "10001", "11110", "10100", "10010", "10001"),
    "U": ("10001", "10001", "10001", "10001", "10001", "10001", "01110"),
    "T": ("11111", "00100", "00100", "00100", "00100", "00100", "00100"),
    "C": ("01110", "10001", "10000", "10000", "10000", "10001", "01110"),
    "F": ("11111", "10000", "10000", "11110", "10000", "10000", "10000"),
    "P": ("11110", "10001", "10001", "11110", "10000", "10000", "10000"),
    "S": ("01111", "10000", "10000", "01110", "00001", "00001", "11110"),
}


class _Canvas:
    """Draws a rendition's frames as YUV 4:2:0 planes (numpy): a moving bar and text."""

    def __init__(self, width: int, height: int, index: int, label: str, fps: int) -> None:
        import numpy as np

        self.np = np
        self.width, self.height, self.fps = width, height, fps
        self.label = label
        ramp = np.linspace(40, 120, width, dtype=np.float32)
        self.base = np.repeat(ramp[None, :], height, axis=0).astype(np.uint8)
        # A hue per rendition, so a switch shows at a glance.
        hues = ((90, 160), (160, 90), (110, 110), (170, 150), (80, 100))
        u, v = hues[index % len(hues)]
        quarter = (height // 2) * (width // 2)
        self.chroma = np.concatenate(
            [np.full(quarter, u, dtype=np.uint8), np.full(quarter, v, dtype=np.uint8)]
        )
        # The clock line (16 characters of 6 columns) takes most of the width.
        self.scale = max(1, int(width * 0.85 / (16 * 6)))
        self._glyphs: dict[tuple[str, int], Any] = {}

    def _glyph(self, char: str, scale: int) -> Any:
        key = (char, scale)
        glyph = self._glyphs.get(key)
        if glyph is None:
            np = self.np
            rows = _FONT.get(char, _FONT[" "])
            bits = np.array([[c == "1" for c in row] + [False] for row in rows], dtype=bool)
            glyph = np.kron(bits, np.ones((scale, scale), dtype=bool))
            self._glyphs[key] = glyph
        return glyph

    def _text(self, y_plane: Any, text: str, x: int, y: int, scale: int) -> None:
        mask = self.np.hstack([self._glyph(c, scale) for c in text])
        h = min(mask.shape[0], self.height - y)
        w = min(mask.shape[1], self.width - x)
        if h <= 0 or w <= 0:
            return
        region = y_plane[y - scale : y + h + scale, max(0, x - scale) : x + w + scale]
        region[...] = 16  # a dark box under the text keeps it readable on any background
        y_plane[y : y + h, x : x + w][mask[:h, :w]] = 235

    def frame(self, index: int, wall: float) -> Any:
        """The planes of frame ``index`` made at ``wall`` (seconds since the epoch)."""
        np = self.np
        y_plane = self.base.copy()
        bar = max(4, self.width // 40)
        x = int(index * self.width / (2 * self.fps)) % max(1, self.width - bar)
        y_plane[:, x : x + bar] = 200
        moment = datetime.datetime.fromtimestamp(wall, datetime.UTC)
        clock = moment.strftime("%H:%M:%S.") + f"{moment.microsecond // 1000:03d} UTC"
        big = self.scale
        self._text(y_plane, clock, self.width // 16, self.height // 3, big)
        self._text(
            y_plane, f"{self.label}  {self.width}x{self.height}  {self.fps} FPS",
            self.width // 16, self.height // 3 + 11 * big, max(1, big // 2),
        )
        # PyAV takes yuv420p as one (height * 3/2, width) array: Y, then U, then V.
        planes = np.concatenate([y_plane.ravel(), self.chroma])
        return planes.reshape(self.height * 3 // 2, self.width)


# --- the encoder -----------------------------------------------------------------------------


class _Sink:
    """The file-like object PyAV's muxer writes the fMP4 bytes to."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.written = 0

    def write(self, data: bytes) -> int:
        self.buffer += data
        self.written += len(data)
        return len(data)

    def tell(self) -> int:
        return self.written

    def seekable(self) -> bool:
        return False


def _boxes(buffer: bytearray) -> list[tuple[bytes, bytes]]:
    """Remove the complete top-level boxes from the front of ``buffer``."""
    out = []
    while len(buffer) >= 8:
        size, kind = struct.unpack_from(">I4s", buffer)
        if size < 8 or len(buffer) < size:
            break
        out.append((bytes(kind), bytes(buffer[:size])))
        del buffer[:size]
    return out


def _sample_count(moof: bytes) -> int:
    """Samples in a ``moof`` (the ``trun`` sample counts of its ``traf``)."""
    count = 0
    at = 8
    while at + 8 <= len(moof):
        size, kind = struct.unpack_from(">I4s", moof, at)
        if kind == b"traf":
            inner = at + 8
            while inner + 8 <= at + size:
                isize, ikind = struct.unpack_from(">I4s", moof, inner)
                if ikind == b"trun":
                    count += struct.unpack_from(">I", moof, inner + 12)[0]
                inner += max(8, isize)
        at += max(8, size)
    return count


def _codec_string(init: bytes) -> str:
    """``avc1.PPCCLL`` from the ``avcC`` box of an init segment (RFC 6381)."""
    at = init.find(b"avcC")
    if at < 0 or at + 8 > len(init):
        return "avc1.64001f"
    profile, compat, level = init[at + 5], init[at + 6], init[at + 7]
    return f"avc1.{profile:02x}{compat:02x}{level:02x}"


class _Encoder:
    """One rendition's libx264 encoder and fragmented-MP4 muxer (one fragment per frame).

    Not thread-safe: one call at a time (the rendition's task awaits each)."""

    def __init__(
        self, width: int, height: int, bitrate: int, fps: int, gop: int, index: int, label: str
    ) -> None:
        import av

        self.sink = _Sink()
        self.canvas = _Canvas(width, height, index, label, fps)
        self.container: Any = av.open(
            self.sink,
            mode="w",
            format="mp4",
            options={
                # CMAF: the moov first and empty, then one moof+mdat per frame, offsets
                # relative to each moof.
                "movflags": "empty_moov+default_base_moof+frag_every_frame+cmaf",
                "video_track_timescale": str(_TIMESCALE),
            },
        )
        kbps = bitrate // 1000
        stream = self.container.add_stream(
            "libx264",
            rate=fps,
            options={
                "preset": "ultrafast",
                # No lookahead and no B-frames: each frame leaves the encoder at once.
                "tune": "zerolatency",
                # An IDR at every segment start and nowhere else: segments and first parts
                # are independent, as the playlist says.
                "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:"
                f"vbv-maxrate={kbps}:vbv-bufsize={kbps}",
            },
        )
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.bit_rate = bitrate
        stream.time_base = fractions.Fraction(1, fps)
        self.stream = stream
        self.time_base = fractions.Fraction(1, fps)
        self.init: bytes | None = None
        self._moof: bytes | None = None

    def encode(self, index: int, wall: float) -> list[tuple[int, bytes]]:
        """Encode frame ``index``; returns the chunks (``moof`` + ``mdat``, with their
        sample counts) the muxer completed."""
        import av

        frame = av.VideoFrame.from_ndarray(self.canvas.frame(index, wall), format="yuv420p")
        frame.pts = index
        frame.time_base = self.time_base
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        return self._collect()

    def finish(self) -> list[tuple[int, bytes]]:
        """Flush the encoder and the muxer; returns the last chunks."""
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        self.close()
        return self._collect()

    def close(self) -> None:
        container, self.container = self.container, None
        if container is not None:
            container.close()

    def _collect(self) -> list[tuple[int, bytes]]:
        chunks = []
        for kind, data in _boxes(self.sink.buffer):
            if kind in (b"ftyp", b"moov"):
                self.init = (self.init or b"") + data
            elif kind == b"moof":
                self._moof = data
            elif kind == b"mdat" and self._moof is not None:
                chunks.append((_sample_count(self._moof), self._moof + data))
                self._moof = None
            # anything else (styp, sidx, the trailer's mfra) is not media for a player
        return chunks


# --- the stream ------------------------------------------------------------------------------


@dataclass
class VideoStream:
    """A live H.264 stream: ``renditions`` renditions of ``duration`` seconds (0: until
    cancelled), published in real time like :class:`SyntheticStream`.

    ==================== ========= ==========================================================
    field                default   meaning
    ==================== ========= ==========================================================
    ``renditions``       3         ``r0`` (640x360, 800 kb/s), each next 3/4 the size
    ``duration``         10.0      seconds (rounded up to whole segments); 0: no end
    ``segment_duration`` 2.0       seconds per segment, one GOP (a whole number of frames)
    ``part_duration``    0.5       LL-HLS part duration (whole frames); ``None``: no parts
    ``fps``              30        frames per second; one CMAF chunk per frame
    ``window``           6         segments in the playlist (a sliding window)
    ``can_block_reload`` False     advertise ``CAN-BLOCK-RELOAD=YES`` (only for an origin
                                   that implements LL-HLS blocking playlist reload)
    ==================== ========= ==========================================================
    """

    renditions: int = 3
    duration: float = 10.0
    segment_duration: float = 2.0
    part_duration: float | None = 0.5
    fps: int = 30
    window: int = 6
    can_block_reload: bool = False
    width: int = 640
    height: int = 360
    bitrate: int = 800_000

    def names(self) -> list[str]:
        return [f"r{i}" for i in range(self.renditions)]

    def resolution(self, index: int) -> tuple[int, int]:
        scale = 0.75**index
        # even sizes: 4:2:0 chroma planes are half the picture in each direction
        return (
            max(64, 2 * round(self.width * scale / 2)),
            max(36, 2 * round(self.height * scale / 2)),
        )

    def rate(self, index: int) -> int:
        return int(self.bitrate * 0.6**index)

    @property
    def frames_per_segment(self) -> int:
        return max(1, round(self.segment_duration * self.fps))

    @property
    def frames_per_part(self) -> int | None:
        if self.part_duration is None:
            return None
        return max(1, min(self.frames_per_segment, round(self.part_duration * self.fps)))

    @property
    def segments(self) -> int | None:
        """Segments per rendition; ``None`` for ``duration=0`` (until cancelled)."""
        if self.duration == 0:
            return None
        return max(1, math.ceil(self.duration / self.segment_duration - 1e-9))

    async def run(
        self,
        publisher: LivePublisher,
        *,
        reports: dict[str, RenditionReport] | None = None,
    ) -> dict[str, RenditionReport]:
        """Publish the stream (all renditions concurrently) and ``master.m3u8`` once every
        rendition's init segment says its codec; returns what each rendition published."""
        if reports is None:
            reports = {}
        for name in self.names():
            reports.setdefault(name, RenditionReport(name))
        codecs: dict[str, str] = {}
        all_known = anyio.Event()
        # One clock for every rendition: frame k of each is drawn at the same instant.
        start = anyio.current_time() + 0.1
        wall_start = time.time() + (start - anyio.current_time())

        def known(name: str, codec: str) -> None:
            codecs[name] = codec
            if len(codecs) == self.renditions:
                all_known.set()

        async with anyio.create_task_group() as tg:
            for i, name in enumerate(self.names()):
                tg.start_soon(
                    self._rendition, publisher, name, i, start, wall_start, reports[name], known
                )
            await all_known.wait()
            variants = [
                (name, self.rate(i), codecs[name], self.resolution(i))
                for i, name in enumerate(self.names())
            ]
            await publisher.publish("master.m3u8", multivariant_playlist(variants))
        return reports

    async def _rendition(
        self,
        publisher: LivePublisher,
        name: str,
        index: int,
        start: float,
        wall_start: float,
        report: RenditionReport,
        known: Callable[[str, str], None],
    ) -> None:
        width, height = self.resolution(index)
        fps = self.fps
        per_segment = self.frames_per_segment
        per_part = self.frames_per_part
        encoder = _Encoder(width, height, self.rate(index), fps, per_segment, index, name.upper())
        packager = RenditionPackager(
            publisher, name, report, target=per_segment / fps,
            part_target=None if per_part is None else per_part / fps,
            window=self.window, can_block_reload=self.can_block_reload,
        )
        total = None if self.segments is None else self.segments * per_segment
        run = _Run(packager, encoder, per_segment, per_part, fps, wall_start, total)
        try:
            await packager.start_segment(0, wall_start)
            if per_part is not None:
                await packager.start_part()
            frame = 0
            while total is None or frame < total:
                due = start + frame / fps
                await anyio.sleep(max(0.0, due - anyio.current_time()))
                # libx264 and the muxer run in a worker thread: the event loop (the
                # uploads, and in `msd demo` the server itself) never waits for them.
                chunks = await anyio.to_thread.run_sync(
                    encoder.encode, frame, wall_start + frame / fps
                )
                for samples, data in chunks:
                    await run.hand_over(samples, data, lambda codec: known(name, codec))
                frame += 1
            for samples, data in await anyio.to_thread.run_sync(encoder.finish):
                await run.hand_over(samples, data, lambda codec: known(name, codec))
        finally:
            packager.abort()
            encoder.close()


@dataclass
class _Run:
    """Where one rendition is: frames handed to the packager so far."""

    packager: RenditionPackager
    encoder: _Encoder
    per_segment: int
    per_part: int | None
    fps: int
    wall_start: float
    total: int | None
    made: int = 0

    async def hand_over(self, samples: int, data: bytes, known: Callable[[str], None]) -> None:
        """Give one chunk to the packager; close its part and segment at their last frame
        and open the next ones at once, so the next part is hinted before it has bytes."""
        packager = self.packager
        if self.made == 0:
            init = self.encoder.init
            assert init is not None  # the muxer writes the header with the first frame
            await packager.init(init)
            known(_codec_string(init))
        # The stamp lets a reader of the part (msd demo's) time the chunk's way to it.
        packager.push(stamp_box(self.made) + data)
        self.made += max(1, samples)
        per_segment, per_part, fps = self.per_segment, self.per_part, self.fps
        in_segment = (self.made - 1) % per_segment + 1
        end_of_segment = in_segment == per_segment
        if per_part is not None and (in_segment % per_part == 0 or end_of_segment):
            frames = (in_segment - 1) % per_part + 1
            packager.end_part(frames / fps, last_of_segment=end_of_segment)
            if not end_of_segment:
                await packager.start_part()
        if end_of_segment:
            last = self.total is not None and self.made >= self.total
            await packager.end_segment(per_segment / fps, last=last)
            if not last:
                n = self.made // per_segment
                await packager.start_segment(n, self.wall_start + n * per_segment / fps)
                if per_part is not None:
                    await packager.start_part()
