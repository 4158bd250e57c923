"""LL-HLS blocking playlist reload for the local server: an extension MediaStore never had.

RFC 8216bis section 6.2.5.2: a GET of a media playlist with ``_HLS_msn=M`` (and optionally
``_HLS_part=P``) is held until the playlist contains segment ``M`` (or part ``P`` of it), so a
player learns of a new part the moment it is published instead of on its next poll. Off by
default (``LocalMediaStore(ll_hls_blocking=True)``, ``msd serve --ll-hls-blocking``); a
playlist should say ``CAN-BLOCK-RELOAD=YES`` only when its origin does this.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Final

__all__ = ["BlockingRequest", "PlaylistProgress", "playlist_progress"]

_TARGET: Final = re.compile(rb"^#EXT-X-TARGETDURATION:(\d+)", re.MULTILINE)
_SEQUENCE: Final = re.compile(rb"^#EXT-X-MEDIA-SEQUENCE:(\d+)", re.MULTILINE)


@dataclass(frozen=True)
class PlaylistProgress:
    """How far a media playlist has got."""

    #: Media sequence number of the last complete segment (-1: none yet).
    last_segment: int
    #: Parts listed of the segment after it (the one in progress).
    parts_after: int
    target_duration: float
    ended: bool

    def has(self, msn: int, part: int | None) -> bool:
        """Whether segment ``msn`` (part ``part`` of it, when given) is in the playlist."""
        if self.ended or self.last_segment >= msn:
            return True
        return part is not None and msn == self.last_segment + 1 and self.parts_after > part


def playlist_progress(body: bytes) -> PlaylistProgress:
    sequence = _SEQUENCE.search(body)
    first = int(sequence.group(1)) if sequence else 0
    target = _TARGET.search(body)
    segments = 0
    parts_after = 0
    for line in body.splitlines():
        if line.startswith(b"#EXTINF:"):
            segments += 1
            parts_after = 0
        elif line.startswith(b"#EXT-X-PART:"):
            parts_after += 1
    return PlaylistProgress(
        last_segment=first + segments - 1,
        parts_after=parts_after,
        target_duration=float(target.group(1)) if target else 6.0,
        ended=b"#EXT-X-ENDLIST" in body,
    )


@dataclass(frozen=True)
class BlockingRequest:
    """The ``_HLS_msn`` / ``_HLS_part`` of a request."""

    msn: int
    part: int | None

    @classmethod
    def from_query(cls, query: dict[str, str]) -> BlockingRequest | None:
        """``None`` without ``_HLS_msn``; raises ``ValueError`` for values that are not
        non-negative integers, or ``_HLS_part`` without ``_HLS_msn`` (section 6.2.5.2)."""
        msn = query.get("_HLS_msn")
        part = query.get("_HLS_part")
        if msn is None:
            if part is not None:
                raise ValueError("_HLS_part needs _HLS_msn")
            return None
        if not msn.isdigit() or (part is not None and not part.isdigit()):
            raise ValueError("_HLS_msn and _HLS_part must be non-negative integers")
        return cls(int(msn), None if part is None else int(part))

    def too_far(self, progress: PlaylistProgress) -> bool:
        """More than two segments beyond the last one: answered 400 at once (6.2.5.2)."""
        return not progress.ended and self.msn > progress.last_segment + 2

    @staticmethod
    def hold_limit(progress: PlaylistProgress) -> float:
        """How long to hold before answering 503: three target durations (6.2.5.2)."""
        return 3 * max(1.0, math.ceil(progress.target_duration))
