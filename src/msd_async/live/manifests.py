"""What a playlist or MPD references: the parsing behind write-after-ack ordering.

A manifest may be stored only after every object it newly references is at the origin
(RFC 8216bis section 6.2.1; DASH-IF Live Media Ingest section 7.3.4). :func:`parse_manifest`
lists those objects, resolved to container paths, with what the publisher also needs: the
target duration, segment durations (for the delete delay of RFC 8216 section 6.2.2) and
whether the stream has ended.

Understood: HLS media playlists (``#EXTINF`` segments, ``#EXT-X-MAP``, ``#EXT-X-KEY``,
LL-HLS ``#EXT-X-PART`` and ``#EXT-X-PRELOAD-HINT``, ``#EXT-X-GAP``, ``#EXT-X-ENDLIST``),
multivariant playlists (``#EXT-X-STREAM-INF``, ``#EXT-X-MEDIA``, ``#EXT-X-I-FRAME-STREAM-INF``)
and DASH MPDs (``SegmentTemplate`` with ``SegmentTimeline`` and ``$Number$``/``$Time$``,
``SegmentList``, ``SegmentBase``, ``BaseURL`` at every level). A ``SegmentTemplate`` without
a timeline (``duration`` and ``$Number$``) names, in a static MPD, every number its Period
covers (``startNumber`` .. ``startNumber + ceil(period duration / duration) - 1``); in a
dynamic MPD the numbers follow the reader's clock, so only its initialization is listed.
Absolute URLs (another host) and ``data:`` / ``skd:`` URIs are not objects of the container
and are left out.
"""

from __future__ import annotations

import itertools
import math
import posixpath
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Collection, Container
from dataclasses import dataclass, field
from typing import Final, Literal
from urllib.parse import unquote

from ..errors import ClientValidationError
from .kinds import ObjectKind

__all__ = [
    "ManifestError",
    "ManifestInfo",
    "Reference",
    "mark_gaps",
    "parse_manifest",
    "resolve_uri",
]

#: How a manifest names an object; ``hint`` needs only the upload to have started.
ReferenceRole = Literal["segment", "part", "hint", "init", "key", "playlist", "media"]


class ManifestError(ClientValidationError):
    """A playlist or MPD that cannot be parsed (not UTF-8, not a playlist, broken XML)."""


@dataclass(frozen=True, slots=True)
class Reference:
    """One object a manifest names: its container path, role, duration (if given) and
    whether the manifest marks it as a gap (then it need not exist)."""

    path: str
    role: ReferenceRole
    duration: float | None = None
    gap: bool = False


@dataclass(slots=True)
class ManifestInfo:
    """What :func:`parse_manifest` found in one manifest version."""

    kind: ObjectKind
    #: Referenced objects by container path, in manifest order.
    references: dict[str, Reference] = field(default_factory=dict)
    #: HLS ``#EXT-X-TARGETDURATION``, or the longest DASH segment, in seconds.
    target_duration: float | None = None
    #: LL-HLS ``PART-TARGET`` in seconds.
    part_target: float | None = None
    #: ``#EXT-X-ENDLIST`` or a ``type="static"`` MPD: no newer version should follow.
    ended: bool = False
    #: Sum of the listed segment durations (the "duration of the playlist" of RFC 8216).
    duration: float = 0.0
    #: Where the next version's parse may start: for a playlist, its state at a line the
    #: next version likely shares everything before; for an MPD, its expanded timelines.
    _resume: _HlsResume | _MpdRuns | None = field(default=None, repr=False, compare=False)
    #: The first ``_inherited`` of these references are ``previous``'s, unchanged and in
    #: the same order, and none is a preload hint: what the publisher need not look at
    #: again (0: no such prefix).
    _inherited: int = field(default=0, repr=False, compare=False)

    @property
    def low_latency(self) -> bool:
        return self.part_target is not None


_ATTR_RE: Final = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')
_SCHEME_RE: Final = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def _attributes(text: str) -> dict[str, str]:
    return {k: v[1:-1] if v.startswith('"') else v for k, v in _ATTR_RE.findall(text)}


#: A URI that is one path segment, resolved by putting the manifest's folder before it: no
#: "/", query, fragment, scheme, percent-escape or whitespace, and not "." or "..". (What
#: resolve_uri does with it, without its per-call normalising;
#: tests/live/test_manifest_properties.py holds the two to the same answers.)
_PLAIN_NAME: Final = re.compile(r"(?!\.\.?\Z)[^/?#:%\s]+").fullmatch


#: A folder part of a URI that resolve_uri reads as a path: no query, fragment,
#: percent-escape or whitespace (it would cut, decode or strip there).
_PLAIN_FOLDER: Final = re.compile(r"[^?#%\s]*").fullmatch


def _resolver(manifest_path: str) -> Callable[[str], str | None]:
    """:func:`resolve_uri` for the manifest at ``manifest_path``, normalising each folder
    once, not for every line of a long playlist: ``folder/name`` with a plain ``name`` is
    what resolve_uri makes of ``folder/x``, with ``name`` for ``x``."""
    folder = posixpath.normpath(posixpath.join("/", posixpath.dirname(manifest_path)))
    prefix = folder.strip("/") + "/" if folder.strip("/") else ""
    folders: dict[str, str | None] = {}

    def folder_prefix(part: str) -> str | None:
        if (not _PLAIN_FOLDER(part) or _SCHEME_RE.match(part + "/")
                or (part + "/").startswith("//")):
            return None
        sample = resolve_uri(manifest_path, part + "/x")
        return None if sample is None else sample[:-1]

    def resolve(uri: str) -> str | None:
        if _PLAIN_NAME(uri):
            return prefix + uri
        part, slash, name = uri.rpartition("/")
        if slash and _PLAIN_NAME(name):
            if part in folders:
                known = folders[part]
            else:
                known = folders[part] = folder_prefix(part)
            if known is not None:
                return known + name
        return resolve_uri(manifest_path, uri)

    return resolve


def resolve_uri(manifest_path: str, uri: str) -> str | None:
    """The container path ``uri`` names, relative to the manifest at ``manifest_path``.

    ``None`` for URIs that are not objects of this container: absolute URLs, ``data:``,
    ``skd:``. A URI that climbs above the container root stops there, as a player's
    resolution does (RFC 3986 section 5.2.4). Percent-escapes are decoded: the origin
    decodes the path a player requests (and the relay the paths an encoder PUTs), so
    ``seg%3D1.ts`` names the object ``seg=1.ts``.
    """
    uri = uri.strip().split("#", 1)[0].split("?", 1)[0]
    if not uri or _SCHEME_RE.match(uri) or uri.startswith("//"):
        return None
    if "%" in uri:
        uri = unquote(uri)
    base = "" if uri.startswith("/") else posixpath.dirname(manifest_path)
    joined = posixpath.normpath(posixpath.join("/", base, uri.lstrip("/")))
    return joined.lstrip("/") or None


def parse_manifest(
    path: str,
    body: bytes,
    kind: ObjectKind | None = None,
    *,
    previous: ManifestInfo | None = None,
) -> ManifestInfo:
    """Parse the manifest ``body`` stored at ``path``. ``kind`` defaults to what the name and
    content say. Raises :class:`ManifestError` for a body that is not a manifest.

    ``previous``: what this returned for an earlier version of the same manifest; the
    answer is the same as without it, only cheaper. An HLS playlist whose text starts as
    that version's did up to its end, or up to its first LL-HLS part or preload hint, is
    read on from there; in an MPD, a timeline run that starts where it did there is not
    expanded again. An EVENT playlist or a DASH timeline that keeps every segment names
    everything since the start, and reading it all again for each new segment made a long
    event cost more every second."""
    from .kinds import infer_kind

    if kind is None or not kind.is_manifest:
        kind = infer_kind(path, body[:4096])
    try:
        if kind is ObjectKind.MPD:
            return _parse_mpd(path, body, previous)
        if kind in (ObjectKind.MEDIA_PLAYLIST, ObjectKind.MULTIVARIANT_PLAYLIST):
            return _parse_hls(path, body, previous)
    except ManifestError:
        raise
    except (Exception, RecursionError) as exc:
        # Whatever the text, the caller gets one error type: it stores such a manifest as
        # given, and a bug here must not become a stalled stream.
        raise ManifestError(
            f"{path!r} could not be parsed ({type(exc).__name__}: {exc}); it is not a "
            "manifest the publisher understands",
            rule="live.manifest",
        ) from exc
    raise ManifestError(f"{path!r} is not a playlist or MPD", rule="live.manifest")


#: More objects than any live manifest names: a SegmentTimeline repeat beyond it is an
#: error in the MPD, not a reason to build a list of a billion paths.
MAX_REFERENCES: Final = 100_000
#: Widest ``%0Nd`` a DASH template may ask for.
_MAX_WIDTH: Final = 32


def _seconds(value: str) -> float | None:
    """A duration attribute: a finite number of seconds, at least 0, else not known."""
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _positive(value: str) -> float | None:
    number = _seconds(value)
    return number if number else None


def _integer(value: str | None, name: str, path: str, *, default: int, minimum: int) -> int:
    if value is None or value.strip() == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ManifestError(
            f"MPD {path!r}: {name}={value!r} is not an integer", rule="live.manifest"
        ) from None
    if number < minimum:
        raise ManifestError(
            f"MPD {path!r}: {name}={value!r} must be at least {minimum}", rule="live.manifest"
        )
    return number


@dataclass(frozen=True, slots=True)
class _HlsResume:
    """The HLS parser's state after ``prefix``, the text of a playlist up to a line start:
    a later version that starts with the same text is read from there."""

    path: str
    prefix: str
    #: References found in ``prefix`` (the first ones of the whole playlist's).
    count: int
    #: Whether one of them is a preload hint.
    hints: bool
    kind: ObjectKind
    target_duration: float | None
    part_target: float | None
    ended: bool
    duration: float
    pending_duration: float | None
    pending_gap: bool
    next_is_playlist: bool


#: What ends a line for str.splitlines.
_LINE_BREAK: Final = re.compile("\r\n|[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def _resume_point(text: str) -> int:
    """Where the next version of this playlist likely stops being the same text: the first
    LL-HLS part or preload hint (the parts of the last segments change with every version),
    else the end (an EVENT playlist only adds lines), at the start of a line. Any line
    start is correct; this one is where most of the playlist is before it."""
    cut = len(text)
    for tag in ("\n#EXT-X-PART:", "\n#EXT-X-PRELOAD-HINT:"):
        at = text.find(tag)
        if at != -1:
            cut = min(cut, at + 1)
    if cut == len(text) and not text.endswith(("\n", "\r")):
        cut = text.rfind("\n") + 1  # not the unfinished last line
    return cut


def _parse_hls(path: str, body: bytes, previous: ManifestInfo | None = None) -> ManifestInfo:
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ManifestError(
            f"playlist {path!r} is not UTF-8 ({exc}); RFC 8216 playlists must be",
            rule="live.manifest",
        ) from None
    resume = None if previous is None else previous._resume
    if (
        isinstance(resume, _HlsResume)
        and resume.path == path
        and text.startswith(resume.prefix)
    ):
        assert previous is not None
        info = ManifestInfo(
            resume.kind,
            dict(itertools.islice(previous.references.items(), resume.count)),
            resume.target_duration, resume.part_target, resume.ended, resume.duration,
            _inherited=0 if resume.hints else resume.count,
        )
        parser = _HlsParser(path, info, resume)
        done = len(resume.prefix)
    else:
        # The first line (as str.splitlines ends it) must be #EXTM3U, and is not parsed.
        first_break = _LINE_BREAK.search(text)
        done = len(text) if first_break is None else first_break.end()
        if not text[:done].strip().startswith("#EXTM3U"):
            raise ManifestError(
                f"playlist {path!r} does not start with #EXTM3U; is it a playlist?",
                rule="live.manifest",
            )
        parser = _HlsParser(path, ManifestInfo(ObjectKind.MEDIA_PLAYLIST), None)
    cut = max(_resume_point(text), done)
    parser.feed(text[done:cut].splitlines())
    if cut > 0:
        parser.info._resume = parser.checkpoint(text[:cut])
    parser.feed(text[cut:].splitlines())
    return parser.info


class _HlsParser:
    """Reads an HLS playlist's lines into a :class:`ManifestInfo`, one after the other; a
    later version that starts with the same text goes on from the state it had there."""

    __slots__ = ("hints", "info", "next_is_playlist", "path", "pending_duration",
                 "pending_gap", "resolve")

    def __init__(self, path: str, info: ManifestInfo, resume: _HlsResume | None) -> None:
        self.path = path
        self.info = info
        self.resolve = _resolver(path)
        self.pending_duration = None if resume is None else resume.pending_duration
        self.pending_gap = False if resume is None else resume.pending_gap
        self.next_is_playlist = False if resume is None else resume.next_is_playlist
        self.hints = False if resume is None else resume.hints

    def checkpoint(self, prefix: str) -> _HlsResume:
        """The state now, ``prefix`` being the text read so far."""
        info = self.info
        return _HlsResume(
            self.path, prefix, len(info.references), self.hints, info.kind,
            info.target_duration, info.part_target, info.ended, info.duration,
            self.pending_duration, self.pending_gap, self.next_is_playlist,
        )

    def add(
        self, uri: str, role: ReferenceRole, duration: float | None = None, gap: bool = False
    ) -> None:
        resolved = self.resolve(uri)
        refs = self.info.references
        if resolved is not None and resolved not in refs:
            refs[resolved] = Reference(resolved, role, duration, gap)
            if role == "hint":
                self.hints = True

    def feed(self, lines: list[str]) -> None:
        info = self.info
        refs = info.references
        resolve = self.resolve
        add = self.add
        pending_duration = self.pending_duration
        pending_gap = self.pending_gap
        next_is_playlist = self.next_is_playlist
        for raw in lines:
            line = raw.strip()
            if not line:
                continue
            if not line.startswith("#"):
                if next_is_playlist:
                    add(line, "playlist")
                    next_is_playlist = False
                else:
                    # add(), inlined: the one line of most of a long playlist.
                    resolved = resolve(line)
                    if resolved is not None and resolved not in refs:
                        refs[resolved] = Reference(
                            resolved, "segment", pending_duration, pending_gap
                        )
                    if pending_duration is not None:
                        info.duration += pending_duration
                pending_duration = None
                pending_gap = False
                continue
            tag, _, value = line.partition(":")
            if tag == "#EXTINF":
                pending_duration = _seconds(value.split(",", 1)[0])
            elif tag == "#EXT-X-GAP":
                pending_gap = True
            elif tag == "#EXT-X-TARGETDURATION":
                info.target_duration = _positive(value)
            elif tag == "#EXT-X-PART-INF":
                part_target = _attributes(value).get("PART-TARGET")
                if part_target:
                    info.part_target = _positive(part_target)
            elif tag == "#EXT-X-ENDLIST":
                info.ended = True
            elif tag == "#EXT-X-MAP":
                uri = _attributes(value).get("URI")
                if uri:
                    add(uri, "init")
            elif tag == "#EXT-X-KEY":
                attrs = _attributes(value)
                if attrs.get("METHOD", "NONE") != "NONE" and attrs.get("URI"):
                    add(attrs["URI"], "key")
            elif tag == "#EXT-X-PART":
                attrs = _attributes(value)
                if attrs.get("URI"):
                    duration = _seconds(attrs.get("DURATION", ""))
                    add(attrs["URI"], "part", duration, attrs.get("GAP") == "YES")
            elif tag == "#EXT-X-PRELOAD-HINT":
                attrs = _attributes(value)
                if attrs.get("TYPE") in ("PART", "MAP") and attrs.get("URI"):
                    add(attrs["URI"], "hint")
            elif tag == "#EXT-X-STREAM-INF":
                info.kind = ObjectKind.MULTIVARIANT_PLAYLIST
                next_is_playlist = True
            elif tag in ("#EXT-X-MEDIA", "#EXT-X-I-FRAME-STREAM-INF"):
                info.kind = ObjectKind.MULTIVARIANT_PLAYLIST
                uri = _attributes(value).get("URI")
                if uri:
                    add(uri, "playlist")
        self.pending_duration = pending_duration
        self.pending_gap = pending_gap
        self.next_is_playlist = next_is_playlist


def _named_among(
    refs: dict[str, Reference], paths: Container[str], keep: Callable[[Reference], bool]
) -> set[str]:
    """The paths in ``paths`` that ``refs`` names with a reference ``keep`` accepts,
    walking ``paths`` when it is the smaller (usually: a few given-up objects, not every
    line of a long playlist)."""
    if isinstance(paths, Collection) and len(paths) < len(refs):
        return {p for p in paths if (ref := refs.get(p)) is not None and keep(ref)}
    return {p for p, ref in refs.items() if p in paths and keep(ref)}


def mark_gaps(
    path: str,
    body: bytes,
    info: ManifestInfo,
    gaps: Container[str],
    leave_out: Container[str] = (),
) -> tuple[bytes, set[str]]:
    """Rewrite the HLS media playlist ``body`` stored at ``path`` (``info`` is what
    :func:`parse_manifest` found in it) so it names no given-up object as present: a
    segment in ``gaps`` gets ``#EXT-X-GAP`` before it, a part ``GAP=YES`` (RFC 8216bis
    4.4.4.7 and 4.4.4.9); a hint to a part in ``gaps`` or ``leave_out`` is removed.

    Returns the body (the same object if nothing changed) and the paths marked as gaps.
    Other manifests are returned as given: DASH has no gap mark."""
    if info.kind is not ObjectKind.MEDIA_PLAYLIST:
        return body, set()
    refs = info.references
    missing = _named_among(
        refs, gaps, lambda ref: not ref.gap and ref.role in ("segment", "part", "hint")
    )
    hints_out = _named_among(refs, leave_out, lambda ref: ref.role == "hint")
    if not missing and not hints_out:
        return body, set()
    out: list[str] = []
    resolve = _resolver(path)
    for line in body.decode("utf-8-sig").splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            if resolve(stripped) in missing and (
                not out or out[-1].strip() != "#EXT-X-GAP"
            ):
                out.append("#EXT-X-GAP")
        elif stripped.startswith(("#EXT-X-PART:", "#EXT-X-PRELOAD-HINT:")):
            uri = resolve(stripped.split('URI="', 1)[-1].split('"', 1)[0])
            if stripped.startswith("#EXT-X-PRELOAD-HINT:"):
                if uri in missing or uri in hints_out:
                    continue
            elif uri in missing and "GAP=YES" not in stripped:
                line = stripped + ",GAP=YES"
        out.append(line)
    return ("\n".join(out) + "\n").encode(), missing


# --- DASH ----------------------------------------------------------------------------------

_TEMPLATE_RE: Final = re.compile(
    r"\$(RepresentationID|Number|Time|Bandwidth|SubNumber)(%0?\d+d)?\$"
)
_DURATION_RE: Final = re.compile(
    r"^P(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _child(element: ET.Element, name: str) -> ET.Element | None:
    for child in element:
        if _local(child.tag) == name:
            return child
    return None


def _children(element: ET.Element, name: str) -> list[ET.Element]:
    return [child for child in element if _local(child.tag) == name]


def _iso_duration(value: str | None) -> float | None:
    if not value:
        return None
    match = _DURATION_RE.match(value.strip())
    if match is None:
        return None
    parts = {k: float(v) for k, v in match.groupdict().items() if v}
    return (
        parts.get("d", 0) * 86400 + parts.get("h", 0) * 3600 + parts.get("m", 0) * 60
        + parts.get("s", 0)
    )


def _fill(
    path: str, template: str, rep_id: str, bandwidth: str, number: int | None, time: int | None
) -> str:
    return _substitute(path, template, rep_id, bandwidth, number, time).replace("$$", "$")


def _substitute(
    path: str, template: str, rep_id: str, bandwidth: str, number: int | None, time: int | None
) -> str:
    """The template's identifiers replaced (its ``$$`` not yet turned into ``$``)."""
    def sub(match: re.Match[str]) -> str:
        name, fmt = match.group(1), match.group(2)
        value: object
        if name == "RepresentationID":
            return rep_id
        if name == "Bandwidth":
            value = int(bandwidth) if bandwidth.isdigit() else bandwidth
        elif name == "Number":
            value = number
        elif name == "Time":
            value = time
        else:
            value = 0
        if value is None:
            return match.group(0)
        if fmt and isinstance(value, int):
            if int(fmt[1:-1] or 0) > _MAX_WIDTH:
                raise _too_wide(path, template)
            return ("%" + fmt[1:]) % value
        return str(value)

    return _TEMPLATE_RE.sub(sub, template)


def _too_wide(path: str, template: str) -> ManifestError:
    return ManifestError(
        f"MPD {path!r}: the template {template!r} asks for a width above {_MAX_WIDTH}",
        rule="live.manifest",
    )


class _Template:
    """A ``SegmentTemplate@media`` read once for one Representation, then filled for each
    segment of its timeline: what :func:`_fill` answers (a property test holds the two to
    the same answers), with one ``%`` format per segment instead of a regular expression
    and a callback per identifier."""

    __slots__ = ("_error", "_format")

    def __init__(self, path: str, template: str, rep_id: str, bandwidth: str) -> None:
        self._error: ManifestError | None = None
        pieces: list[str] = []
        at = 0
        for match in _TEMPLATE_RE.finditer(template):
            pieces.append(template[at:match.start()].replace("%", "%%"))
            name, fmt = match.group(1), match.group(2) or ""
            if name in ("Number", "Time"):
                if fmt and int(fmt[1:-1] or 0) > _MAX_WIDTH:
                    self._error = _too_wide(path, template)
                key = "(n)" if name == "Number" else "(t)"
                pieces.append("%" + key + (fmt[1:] if fmt else "d"))
            else:  # the same for every segment
                try:
                    constant = _substitute(path, match.group(0), rep_id, bandwidth, None, None)
                except ManifestError:
                    raise _too_wide(path, template) from None
                pieces.append(constant.replace("%", "%%"))
            at = match.end()
        pieces.append(template[at:].replace("%", "%%"))
        self._format = "".join(pieces)

    def fill(self, number: int, time: int) -> str:
        if self._error is not None:
            raise self._error
        return (self._format % {"n": number, "t": time}).replace("$$", "$")


def _join_base(base: str, element: ET.Element) -> str:
    url = _child(element, "BaseURL")
    if url is None or not (url.text or "").strip():
        return base
    text = (url.text or "").strip()
    if _SCHEME_RE.match(text) or text.startswith("/"):
        return text
    return posixpath.join(base, text) if base else text


def _period_lengths(root: ET.Element) -> dict[int, float]:
    """Seconds each Period lasts (by ``id()`` of its element), where the MPD says: its
    ``duration``, else up to the next Period's ``start``, else (the last) up to the
    ``mediaPresentationDuration`` (ISO/IEC 23009-1 5.3.2.1)."""
    periods = _children(root, "Period")
    starts: list[float | None] = []
    previous_end: float | None = 0.0
    for period in periods:
        start = _iso_duration(period.get("start"))
        if start is None:
            start = previous_end
        starts.append(start)
        own = _iso_duration(period.get("duration"))
        previous_end = start + own if start is not None and own is not None else None
    total = _iso_duration(root.get("mediaPresentationDuration"))
    lengths: dict[int, float] = {}
    for i, period in enumerate(periods):
        length = _iso_duration(period.get("duration"))
        start = starts[i]
        if length is None and start is not None:
            end = starts[i + 1] if i + 1 < len(periods) else total
            if end is not None and end >= start:
                length = end - start
        if length is not None:
            lengths[id(period)] = length
    return lengths


#: One ``<S>`` run of a SegmentTimeline: its BaseURL, ``@media``, Representation id and
#: bandwidth, first number and time, ``@d`` and the timescale.
_RunKey = tuple[str, str, str, str, int, int, int, int]


@dataclass(frozen=True, slots=True)
class _MpdRuns:
    """What each ``<S>`` run of an MPD named, by run, with how many segments it counted:
    the next version's run with the same start names the same first segments (only its
    repeat count grew), so they are not expanded again."""

    path: str
    runs: dict[_RunKey, tuple[int, dict[str, Reference]]]


def _shared_prefix(info: ManifestInfo, previous: ManifestInfo | None) -> int:
    """How many of ``info``'s first references are ``previous``'s, in the same order (0 if
    they are not all there): what the publisher need not look at again."""
    if previous is None:
        return 0
    old = previous.references
    count = len(old)
    refs = info.references
    if not count or count > len(refs):
        return 0
    # List comparisons in C: identity first, so the objects a cached run shares are cheap.
    if list(itertools.islice(refs, count)) != list(old):
        return 0
    if list(itertools.islice(refs.values(), count)) != list(old.values()):
        return 0
    return count


def _parse_mpd(path: str, body: bytes, previous: ManifestInfo | None = None) -> ManifestInfo:
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise ManifestError(
            f"MPD {path!r} is not well-formed XML ({exc})", rule="live.manifest"
        ) from None
    if _local(root.tag) != "MPD":
        raise ManifestError(
            f"{path!r} is not an MPD (its root element is {_local(root.tag)!r})",
            rule="live.manifest",
        )
    info = ManifestInfo(ObjectKind.MPD, ended=root.get("type", "static") == "static")
    earlier = None if previous is None else previous._resume
    cached_runs = earlier.runs if isinstance(earlier, _MpdRuns) and earlier.path == path else {}
    runs: dict[_RunKey, tuple[int, dict[str, Reference]]] = {}
    durations: dict[str, float] = {}
    longest = 0.0
    mpd_base = _join_base("", root)

    resolve = _resolver(path)

    def add(
        relative: str, base: str, role: ReferenceRole, duration: float | None = None
    ) -> None:
        resolved = resolve(_joined(relative, base))
        if resolved is not None and resolved not in info.references:
            info.references[resolved] = Reference(resolved, role, duration)

    period_lengths = _period_lengths(root)
    for period in _children(root, "Period"):
        period_base = _join_base(mpd_base, period)
        period_template = _child(period, "SegmentTemplate")
        for adaptation in _children(period, "AdaptationSet"):
            set_base = _join_base(period_base, adaptation)
            set_template = _child(adaptation, "SegmentTemplate")
            set_list = _child(adaptation, "SegmentList")
            for rep in _children(adaptation, "Representation"):
                rep_id = rep.get("id", "")
                bandwidth = rep.get("bandwidth", "")
                base = _join_base(set_base, rep)
                templates = [
                    t for t in (period_template, set_template, _child(rep, "SegmentTemplate"))
                    if t is not None
                ]
                seg_list = _child(rep, "SegmentList")
                if seg_list is None:
                    seg_list = set_list
                if templates:
                    # Attributes inherit from the outer levels, the innermost wins.
                    attrs: dict[str, str] = {}
                    timeline = None
                    for template in templates:
                        attrs.update(template.attrib)
                        inner = _child(template, "SegmentTimeline")
                        if inner is not None:
                            timeline = inner
                    timescale = _integer(attrs.get("timescale"), "timescale", path,
                                         default=1, minimum=1)
                    if "initialization" in attrs:
                        add(_fill(path, attrs["initialization"], rep_id, bandwidth, None, None),
                            base, "init")
                    media = attrs.get("media")
                    if media and timeline is not None:
                        number = _integer(attrs.get("startNumber"), "startNumber", path,
                                          default=1, minimum=0)
                        t = 0
                        template_of: _Template | None = None
                        for s in _children(timeline, "S"):
                            t = _integer(s.get("t"), "S@t", path, default=t, minimum=0)
                            d = _integer(s.get("d"), "S@d", path, default=0, minimum=0)
                            # r=-1 repeats "until the next S": not a count of objects.
                            repeat = max(0, _integer(s.get("r"), "S@r", path, default=0,
                                                     minimum=-1))
                            if len(info.references) + repeat >= MAX_REFERENCES:
                                raise ManifestError(
                                    f"MPD {path!r} names more than {MAX_REFERENCES:,} "
                                    "segments", rule="live.manifest",
                                )
                            if template_of is None:
                                template_of = _Template(path, media, rep_id, bandwidth)
                            seconds = d / timescale
                            longest = max(longest, seconds)
                            count = repeat + 1
                            key = (base, media, rep_id, bandwidth, number, t, d, timescale)
                            done, run = cached_runs.get(key, (0, {}))
                            if done > count:
                                done, run = 0, {}
                            run = dict(run)
                            for k in range(done, count):
                                resolved = resolve(_joined(
                                    template_of.fill(number + k, t + k * d), base
                                ))
                                if resolved is not None and resolved not in run:
                                    run[resolved] = Reference(resolved, "media", seconds)
                            runs[key] = (count, run)
                            refs = info.references
                            if refs.keys().isdisjoint(run):
                                refs.update(run)
                            else:  # the first to name a path names it, as add() does
                                for resolved, reference in run.items():
                                    refs.setdefault(resolved, reference)
                            total = durations.get(rep_id, 0.0)
                            for _ in range(count):  # one add at a time, as always
                                total += seconds
                            durations[rep_id] = total
                            number += count
                            t += count * d
                    elif media and attrs.get("duration"):
                        duration = _integer(attrs["duration"], "duration", path, default=0,
                                            minimum=0)
                        seconds = duration / timescale
                        longest = max(longest, seconds)
                        # A static presentation names every number its period covers
                        # (ISO/IEC 23009-1 5.3.9.5.3). A dynamic one names numbers by the
                        # reader's clock (availabilityStartTime): not listed.
                        length = period_lengths.get(id(period))
                        if info.ended and duration and length is not None:
                            number = _integer(attrs.get("startNumber"), "startNumber", path,
                                              default=1, minimum=0)
                            offset = _integer(attrs.get("presentationTimeOffset"),
                                              "presentationTimeOffset", path, default=0,
                                              minimum=0)
                            count = math.ceil(length / seconds - 1e-9)
                            if len(info.references) + count > MAX_REFERENCES:
                                raise ManifestError(
                                    f"MPD {path!r} names more than {MAX_REFERENCES:,} "
                                    "segments", rule="live.manifest",
                                )
                            for k in range(count):
                                add(_fill(path, media, rep_id, bandwidth, number + k,
                                          offset + k * duration), base, "media", seconds)
                                durations[rep_id] = durations.get(rep_id, 0.0) + seconds
                elif seg_list is not None:
                    timescale = _integer(seg_list.get("timescale"), "timescale", path,
                                         default=1, minimum=1)
                    list_seconds: float | None = (
                        _integer(seg_list.get("duration"), "duration", path, default=0,
                                 minimum=0) / timescale
                        if seg_list.get("duration") else None
                    )
                    init = _child(seg_list, "Initialization")
                    if init is not None and init.get("sourceURL"):
                        add(init.get("sourceURL", ""), base, "init")
                    for segment_url in _children(seg_list, "SegmentURL"):
                        if segment_url.get("media"):
                            add(segment_url.get("media", ""), base, "media", list_seconds)
                            if list_seconds:
                                longest = max(longest, list_seconds)
                                durations[rep_id] = durations.get(rep_id, 0.0) + list_seconds
                elif base and base != set_base:
                    add(base, "", "media")
    info.target_duration = longest or None
    depth: float | None = _iso_duration(root.get("timeShiftBufferDepth"))
    info.duration = depth if depth is not None else max(durations.values(), default=0.0)
    info._resume = _MpdRuns(path, runs)
    info._inherited = _shared_prefix(info, previous)
    return info


def _joined(relative: str, base: str) -> str:
    """``relative`` under an MPD's ``BaseURL`` (``posixpath.join``, for what it gets here)."""
    if not base or relative.startswith("/") or _SCHEME_RE.match(relative):
        return relative
    return base + relative if base.endswith("/") else base + "/" + relative
