"""Live publishing: the object a packager hands its segments, parts and playlists to.

Start with :class:`LivePublisher` (``docs/live.md`` explains the rules it follows)::

    from msd_async.live import LivePublisher

    async with LivePublisher(store, prefix="live/") as publisher:
        await publisher.publish("720p/init.mp4", init_bytes)
        pub = await publisher.publish("720p/seg_1.m4s", encoder_chunks(), duration=2.0)
        await publisher.publish("720p/index.m3u8", playlist_bytes)
        outcome = await pub.wait()
"""

from __future__ import annotations

from .kinds import (
    SEGMENT_CACHE_CONTROL,
    ObjectKind,
    default_cache_control,
    default_content_type,
    infer_kind,
)
from .manifests import ManifestError, ManifestInfo, Reference, parse_manifest, resolve_uri
from .pacing import MEDIASTORE_RATE_LIMITS, Pacer
from .publisher import (
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_LIVE_RETRY,
    DEFAULT_MEDIA_DURATION,
    DEFAULT_PART_DURATION,
    DestinationOutcome,
    LivePublisher,
    Outcome,
    Publication,
    PublisherClosedError,
    Status,
)
from .sources import SourceChangedError, follow_file
from .stats import (
    DestinationStats,
    KindStats,
    PublisherStats,
    PublishEvent,
    PublishEventKind,
    RequestStats,
)

__all__ = [
    "DEFAULT_CLOSE_TIMEOUT",
    "DEFAULT_LIVE_RETRY",
    "DEFAULT_MEDIA_DURATION",
    "DEFAULT_PART_DURATION",
    "MEDIASTORE_RATE_LIMITS",
    "SEGMENT_CACHE_CONTROL",
    "DestinationOutcome",
    "DestinationStats",
    "KindStats",
    "LivePublisher",
    "ManifestError",
    "ManifestInfo",
    "ObjectKind",
    "Outcome",
    "Pacer",
    "Publication",
    "PublishEvent",
    "PublishEventKind",
    "PublisherClosedError",
    "PublisherStats",
    "Reference",
    "RequestStats",
    "SourceChangedError",
    "Status",
    "default_cache_control",
    "default_content_type",
    "follow_file",
    "infer_kind",
    "parse_manifest",
    "resolve_uri",
]
