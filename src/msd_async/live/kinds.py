"""Object kinds of a live stream and their default headers.

A packager hands the publisher init segments, media segments, LL-HLS parts, keys, media
playlists, multivariant playlists and DASH MPDs. Each kind has its own ordering, deadline
and headers:

=========================  ======================  =========================================
kind                       deadline                Cache-Control (default)
=========================  ======================  =========================================
``INIT``                   retried until stored    ``max-age=1209600, immutable`` (14 days)
``MEDIA``, ``PART``        its own duration        ``max-age=1209600, immutable``
``KEY``                    retried until stored    ``max-age=1209600``
``MEDIA_PLAYLIST``         retried until stored,   ``max-age=`` half a target duration
                           newest version wins     (at least 1 s); ``max-age=1`` with LL parts
``MULTIVARIANT_PLAYLIST``  as above                ``max-age=`` half a target duration
``MPD``                    as above                ``max-age=`` half a segment duration
``OTHER``                  retried until stored    none
=========================  ======================  =========================================

Content types come from :func:`msd_async.content_type_for` (DASH-IF Live Media Ingest,
Table 6). Cache lifetimes follow the AWS Elemental MediaPackage CDN guidance: playlists half
a segment duration, LL-HLS media playlists 1 s, segments and init 1,209,600 s. Every default
can be overridden per object (``publish(..., content_type=, cache_control=)``).
"""

from __future__ import annotations

import enum
import re
from typing import Final

from ..errors import InvalidParameterError
from ..media_types import content_type_for

__all__ = [
    "HLS_EXTENSIONS",
    "MANIFEST_EXTENSIONS",
    "MANIFEST_KINDS",
    "MEDIA_KINDS",
    "SEGMENT_CACHE_CONTROL",
    "ObjectKind",
    "default_cache_control",
    "default_content_type",
    "infer_kind",
    "parse_kind",
]


class ObjectKind(enum.StrEnum):
    """What a published object is; decides its ordering, deadline and headers."""

    INIT = "init"
    MEDIA = "media"
    PART = "part"
    KEY = "key"
    MEDIA_PLAYLIST = "media-playlist"
    MULTIVARIANT_PLAYLIST = "multivariant-playlist"
    MPD = "mpd"
    OTHER = "other"

    @property
    def is_manifest(self) -> bool:
        """Playlists and MPDs: latest version wins, gated on what they reference."""
        return self in MANIFEST_KINDS

    @property
    def is_media(self) -> bool:
        """Segments and parts: dropped once their duration has passed unacknowledged."""
        return self in MEDIA_KINDS


MANIFEST_KINDS: Final = frozenset(
    {ObjectKind.MEDIA_PLAYLIST, ObjectKind.MULTIVARIANT_PLAYLIST, ObjectKind.MPD}
)
MEDIA_KINDS: Final = frozenset({ObjectKind.MEDIA, ObjectKind.PART})


def parse_kind(value: ObjectKind | str) -> ObjectKind:
    """``value`` as an :class:`ObjectKind`; raises :class:`InvalidParameterError` naming
    the kinds there are (the enum's own ValueError named none, and was no
    ``MediaStoreError``)."""
    try:
        return ObjectKind(value)
    except ValueError:
        names = ", ".join(repr(kind.value) for kind in ObjectKind)
        raise InvalidParameterError(
            f"kind must be an ObjectKind or one of {names}, not {value!r}", rule="live.kind"
        ) from None

#: Segments and init never change under one name: 14 days, as MediaPackage advises for CDNs.
SEGMENT_CACHE_CONTROL: Final = "max-age=1209600, immutable"
_KEY_CACHE_CONTROL: Final = "max-age=1209600"

_MEDIA_EXTENSIONS: Final = frozenset(
    {
        ".ts", ".m4s", ".cmfv", ".cmfa", ".cmft", ".cmfm", ".mp4", ".m4v", ".m4a", ".aac",
        ".ac3", ".ec3", ".mp3", ".vtt", ".webvtt", ".webm", ".m2ts", ".mkv",
    }
)
# "seg_12.part3.m4s", "filePart272.1.mp4", "seg12.3.m4s": the part naming schemes of the
# common LL-HLS packagers (Apple's segmenter, ffmpeg-based ones).
_PART_RE: Final = re.compile(r"part|\d\.\d+\.[a-z0-9]+$", re.IGNORECASE)
_INIT_RE: Final = re.compile(r"(?:^|[^a-z])init|header", re.IGNORECASE)
#: The one list of manifest file extensions (the publisher's, and any ingest that needs
#: to tell manifests from media by name).
HLS_EXTENSIONS: Final = (".m3u8", ".m3u")
MANIFEST_EXTENSIONS: Final = (*HLS_EXTENSIONS, ".mpd")
_MULTIVARIANT_TAGS: Final = (b"#EXT-X-STREAM-INF", b"#EXT-X-MEDIA:", b"#EXT-X-I-FRAME-STREAM-INF")


def infer_kind(path: str, head: bytes | None = None) -> ObjectKind:
    """The kind of the object at ``path``, from its name and (for ``.m3u8``) its content.

    ``head``: the start of the body if known. A ``.m3u8`` with ``#EXT-X-STREAM-INF``,
    ``#EXT-X-MEDIA`` or ``#EXT-X-I-FRAME-STREAM-INF`` is a multivariant playlist, any
    other (or one whose body is not known yet) a media playlist. Never raises.

    >>> infer_kind("live/720p/init.mp4"), infer_kind("live/720p/seg_12.part3.m4s")
    (<ObjectKind.INIT: 'init'>, <ObjectKind.PART: 'part'>)
    """
    name = path.rpartition("/")[2]
    dot = name.rfind(".")
    ext = name[dot:].lower() if dot > 0 else ""
    if ext in HLS_EXTENSIONS:
        if head is not None and any(tag in head for tag in _MULTIVARIANT_TAGS):
            return ObjectKind.MULTIVARIANT_PLAYLIST
        return ObjectKind.MEDIA_PLAYLIST
    if ext == ".mpd":
        return ObjectKind.MPD
    if ext == ".key":
        return ObjectKind.KEY
    if ext == ".init":
        return ObjectKind.INIT
    if ext in _MEDIA_EXTENSIONS:
        stem = name[:dot]
        if _INIT_RE.search(stem):
            return ObjectKind.INIT
        if _PART_RE.search(name):
            return ObjectKind.PART
        return ObjectKind.MEDIA
    return ObjectKind.OTHER


def default_content_type(path: str, kind: ObjectKind) -> str | None:
    """The Content-Type for ``path``: the shared table first, then one by kind."""
    found = content_type_for(path)
    if found is not None:
        return found
    if kind in (ObjectKind.MEDIA_PLAYLIST, ObjectKind.MULTIVARIANT_PLAYLIST):
        return "application/vnd.apple.mpegurl"
    if kind is ObjectKind.MPD:
        return "application/dash+xml"
    if kind in (ObjectKind.INIT, ObjectKind.MEDIA, ObjectKind.PART):
        return "video/mp4"
    if kind is ObjectKind.KEY:
        return "application/octet-stream"
    return None


def default_cache_control(
    kind: ObjectKind, *, target_duration: float | None = None, low_latency: bool = False
) -> str | None:
    """The Cache-Control for an object of ``kind``.

    ``target_duration``: the rendition's (HLS) target or (DASH) segment duration in
    seconds, if known; playlists then live half of it (at least 1 s), else 1 s.
    ``low_latency``: an LL-HLS media playlist (it has parts) lives 1 s.
    """
    if kind in (ObjectKind.INIT, ObjectKind.MEDIA, ObjectKind.PART):
        return SEGMENT_CACHE_CONTROL
    if kind is ObjectKind.KEY:
        return _KEY_CACHE_CONTROL
    if kind in MANIFEST_KINDS:
        if low_latency and kind is ObjectKind.MEDIA_PLAYLIST:
            return "max-age=1"
        half = int((target_duration or 0) / 2)
        return f"max-age={max(1, half)}"
    return None
