"""Content types by file extension: one table for the live publisher, bulk transfer, the
CLI and web backends.

Streaming types follow DASH-IF Live Media Ingest, Table 6 (section 7.1.2,
https://dashif.org/Ingest/), with ``.m3u8`` as RFC 8216 section 4 registers it
(``application/vnd.apple.mpegurl``) and ``.ts`` as ``video/MP2T`` (RFC 3555). The table is
ours, not the platform's ``mimetypes`` database, so the same file gets the same type on
every machine.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

__all__ = ["CONTENT_TYPES", "content_type_for"]

CONTENT_TYPES: Final = MappingProxyType(
    {
        # HLS and DASH manifests
        ".m3u8": "application/vnd.apple.mpegurl",
        ".m3u": "audio/mpegurl",
        ".mpd": "application/dash+xml",
        # segments (DASH-IF Table 6) and containers
        ".ts": "video/MP2T",
        ".m4s": "video/iso.segment",
        ".cmfv": "video/mp4",
        ".cmfa": "audio/mp4",
        ".cmft": "application/mp4",
        ".cmfm": "application/mp4",
        ".init": "video/mp4",
        ".mp4": "video/mp4",
        ".m4v": "video/mp4",
        ".m4a": "audio/mp4",
        ".mov": "video/quicktime",
        ".webm": "video/webm",
        ".mkv": "video/x-matroska",
        ".aac": "audio/aac",
        ".ac3": "audio/ac3",
        ".ec3": "audio/eac3",
        ".mp3": "audio/mpeg",
        ".key": "application/octet-stream",
        # subtitles and captions
        ".vtt": "text/vtt",
        ".webvtt": "text/vtt",
        ".srt": "application/x-subrip",
        ".ttml": "application/ttml+xml",
        ".dfxp": "application/ttml+xml",
        # what sits beside media on an origin
        ".jpg": "image/jpeg",
        ".jpeg": "image/jpeg",
        ".png": "image/png",
        ".webp": "image/webp",
        ".gif": "image/gif",
        ".json": "application/json",
        ".xml": "application/xml",
        ".html": "text/html",
        ".htm": "text/html",
        ".txt": "text/plain",
        ".css": "text/css",
        ".js": "text/javascript",
    }
)


def content_type_for(path: str, default: str | None = None) -> str | None:
    """The content type for ``path`` by its extension (case-insensitive), else ``default``.

    >>> content_type_for("live/720p/index.m3u8")
    'application/vnd.apple.mpegurl'
    >>> content_type_for("live/720p/seg_42.m4s")
    'video/iso.segment'
    """
    name = path.rpartition("/")[2]
    dot = name.rfind(".")
    if dot <= 0:
        return default
    return CONTENT_TYPES.get(name[dot:].lower(), default)
