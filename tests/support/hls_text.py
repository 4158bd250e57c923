"""Playlist text for tests of the live publisher."""

from __future__ import annotations


def ll_playlist(parts: list[str], hint: str | None) -> bytes:
    """An LL-HLS media playlist listing ``parts`` (0.5 s each) and, if given, a preload
    hint to the part ``hint``."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:9", "#EXT-X-TARGETDURATION:2",
             "#EXT-X-PART-INF:PART-TARGET=0.5", "#EXT-X-MEDIA-SEQUENCE:0"]
    lines += [f'#EXT-X-PART:DURATION=0.5,URI="{p}"' for p in parts]
    if hint is not None:
        lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{hint}"')
    return ("\n".join(lines) + "\n").encode()
