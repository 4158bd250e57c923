"""Item 6 of issue 16: a manifest that does not parse is stored as given, because the parsers
fail only with ManifestError, whatever the text. Property-tested on arbitrary and on
almost-valid text (the parsers' own vocabulary shuffled), plus the inputs that broke them."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msd_async.live import ManifestError, ManifestInfo, ObjectKind, parse_manifest, resolve_uri

LONG = os.environ.get("MSD_LONG_TESTS") == "1"
PROPERTY = settings(
    max_examples=5000 if LONG else 300,
    derandomize=not LONG,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

HLS_WORDS = [
    "#EXTM3U", "#EXTINF:", "#EXT-X-TARGETDURATION:", "#EXT-X-PART-INF:PART-TARGET=",
    "#EXT-X-PART:", "DURATION=", "URI=", '"', ",", "GAP=YES", "#EXT-X-PRELOAD-HINT:",
    "TYPE=PART", "TYPE=MAP", "#EXT-X-MAP:", "#EXT-X-KEY:METHOD=AES-128,", "#EXT-X-GAP",
    "#EXT-X-ENDLIST", "#EXT-X-STREAM-INF:BANDWIDTH=1", "#EXT-X-MEDIA:", "seg_1.ts", "../",
    "/", "http://x/", "nan", "inf", "-1", "1e999", "0", "2.5", "\n", "\r\n", "\ufeff", " ",
]
MPD_WORDS = [
    "<MPD", "</MPD>", "<Period>", "</Period>", "<AdaptationSet>", "</AdaptationSet>",
    "<Representation", "</Representation>", "/>", ">", " id=", " bandwidth=",
    "<SegmentTemplate", "</SegmentTemplate>", " timescale=", " duration=", " media=",
    " initialization=", " startNumber=", "<SegmentTimeline>", "</SegmentTimeline>", "<S",
    " t=", " d=", " r=", "<SegmentList", "</SegmentList>", "<SegmentURL", "<Initialization",
    " sourceURL=", "<BaseURL>", "</BaseURL>", ' type="dynamic"', " timeShiftBufferDepth=",
    '"0"', '"1"', '"-1"', '"2.5"', '"abc"', '"99999999999999999999"', '"$Number%09999d$"',
    '"$Number$.m4s"', '"$Time$"', '"$RepresentationID$"', '"PT2S"', '"P1Y"', '"x"', " ",
]


def _check(path: str, body: bytes, kind: ObjectKind | None) -> None:
    try:
        info = parse_manifest(path, body, kind)
    except ManifestError:
        return
    assert isinstance(info, ManifestInfo)
    for ref in info.references.values():
        assert ref.duration is None or ref.duration >= 0
    assert info.target_duration is None or info.target_duration > 0


@PROPERTY
@given(st.binary(max_size=400), st.sampled_from(["a/index.m3u8", "a/stream.mpd", "a/x"]))
def test_any_bytes_parse_or_raise_manifest_error(body: bytes, path: str) -> None:
    _check(path, body, None)


@PROPERTY
@given(st.lists(st.sampled_from(HLS_WORDS) | st.text(max_size=5), max_size=40))
def test_almost_playlists_parse_or_raise_manifest_error(words: list[str]) -> None:
    _check("live/index.m3u8", ("#EXTM3U\n" + "".join(words)).encode(), None)


@PROPERTY
@given(st.lists(st.sampled_from(MPD_WORDS) | st.text(max_size=4), max_size=60))
def test_almost_mpds_parse_or_raise_manifest_error(words: list[str]) -> None:
    _check("live/stream.mpd", "".join(words).encode(), ObjectKind.MPD)


VALUES = st.sampled_from(['"0"', '"1"', '"-1"', '"-2"', '"2.5"', '"x"', '""', '"1e3"',
                          '"90000"', '"99999999999999999999"', '"$Number%040d$.m4s"',
                          '"s$Number$.m4s"', '"$Time$"', '"PT2S"', '"P1Y"'])
ATTRIBUTES = ["timescale", "duration", "media", "initialization", "startNumber"]


@st.composite
def structured_mpds(draw: st.DrawFn) -> bytes:
    """MPDs whose shape the parser follows, with any attribute values: the numbers it
    converts are where it broke."""
    def attrs(names: list[str]) -> str:
        chosen = draw(st.lists(st.sampled_from(names), unique=True))
        return "".join(f" {name}={draw(VALUES)}" for name in chosen)

    timeline = "".join(
        f"<S{attrs(['t', 'd', 'r'])}/>" for _ in range(draw(st.integers(0, 3)))
    )
    inner = draw(st.sampled_from([
        f"<SegmentTemplate{attrs(ATTRIBUTES)}><SegmentTimeline>{timeline}</SegmentTimeline>"
        "</SegmentTemplate>",
        f"<SegmentTemplate{attrs(ATTRIBUTES)}/>",
        f"<SegmentList{attrs(['timescale', 'duration'])}><SegmentURL media=\"a.m4s\"/>"
        "</SegmentList>",
    ]))
    return _mpd(inner, depth=attrs(["timeShiftBufferDepth"]))


@PROPERTY
@given(structured_mpds())
def test_mpds_with_any_attribute_values_parse_or_raise_manifest_error(body: bytes) -> None:
    _check("live/stream.mpd", body, None)


def _mpd(template: str, depth: str = "") -> bytes:
    return (
        f'<MPD type="dynamic"{depth}><Period><AdaptationSet><Representation id="0" bandwidth="1">'
        f"{template}</Representation></AdaptationSet></Period></MPD>"
    ).encode()


@pytest.mark.parametrize("body", [
    _mpd('<SegmentTemplate media="s$Number$.m4s" duration="2.5"/>'),
    _mpd('<SegmentTemplate media="s$Number$.m4s" timescale="0" duration="2"/>'),
    _mpd('<SegmentTemplate media="s$Number$.m4s" timescale="0">'
         '<SegmentTimeline><S d="1"/></SegmentTimeline></SegmentTemplate>'),
    _mpd('<SegmentTemplate media="s$Number$.m4s" startNumber="x">'
         '<SegmentTimeline><S d="1"/></SegmentTimeline></SegmentTemplate>'),
    _mpd('<SegmentTemplate media="s$Number$.m4s">'
         '<SegmentTimeline><S d="1" r="100000000"/></SegmentTimeline></SegmentTemplate>'),
    _mpd('<SegmentList timescale="0" duration="2"><SegmentURL media="a.m4s"/></SegmentList>'),
    _mpd('<SegmentTemplate media="s$Number%0999999999d$.m4s">'
         '<SegmentTimeline><S d="1"/></SegmentTimeline></SegmentTemplate>'),
], ids=["float-duration", "timescale-0", "timescale-0-timeline", "bad-start-number",
        "huge-repeat", "list-timescale-0", "huge-width"])
def test_mpds_that_broke_the_parser_raise_manifest_error(body: bytes) -> None:
    with pytest.raises(ManifestError, match=r"stream\.mpd"):
        parse_manifest("live/stream.mpd", body)


def test_non_finite_hls_numbers_are_not_taken() -> None:
    info = parse_manifest(
        "a/index.m3u8",
        b"#EXTM3U\n#EXT-X-TARGETDURATION:nan\n#EXT-X-PART-INF:PART-TARGET=inf\n"
        b"#EXTINF:-3,\nseg_1.ts\n#EXTINF:1e999,\nseg_2.ts\n",
    )
    assert info.target_duration is None and info.part_target is None
    assert [r.duration for r in info.references.values()] == [None, None]
    assert info.duration == 0.0


# --- one answer however a playlist is read -----------------------------------------------

URIS = st.text(alphabet="ab.:/?# %\t", max_size=12)


@PROPERTY
@given(st.text(alphabet="ab./", max_size=10), st.lists(URIS, max_size=6))
def test_the_per_playlist_resolver_answers_as_resolve_uri(
    manifest: str, uris: list[str]
) -> None:
    """One resolver for all of a manifest's URIs (it keeps what it learnt of each folder)."""
    from msd_async.live.manifests import _resolver

    resolve = _resolver(manifest)
    for uri in uris + uris:
        assert resolve(uri) == resolve_uri(manifest, uri), uri


TEMPLATE_PIECES = st.sampled_from([
    "$Number$", "$Number%05d$", "$Number%0999d$", "$Time$", "$Time%03d$", "$Bandwidth$",
    "$Bandwidth%04d$", "$Bandwidth%040d$", "$RepresentationID$", "$SubNumber$", "$$", "$",
    "%", "d", "seg-", "/", ".m4s",
])


@PROPERTY
@given(
    st.lists(TEMPLATE_PIECES, max_size=8).map("".join),
    st.text(alphabet="v1$", max_size=4) | st.just("$$$$"),
    st.sampled_from(["", "800000", "12x", "007"]),
    st.integers(0, 10**12),
    st.integers(0, 10**12),
)
def test_a_compiled_segment_template_fills_as_the_template_does(
    template: str, rep_id: str, bandwidth: str, number: int, time: int
) -> None:
    from msd_async.live.manifests import _fill, _Template

    def outcome(fill: Callable[[], str]) -> object:
        try:
            return fill()
        except ManifestError as exc:
            return str(exc)

    expected = outcome(lambda: _fill("d/m.mpd", template, rep_id, bandwidth, number, time))
    assert outcome(
        lambda: _Template("d/m.mpd", template, rep_id, bandwidth).fill(number, time)
    ) == expected


def _parsed(path: str, body: bytes, previous: ManifestInfo | None = None) -> object:
    """What parse_manifest answers, comparable: the info with its references in order, or
    the type of the error."""
    try:
        info = parse_manifest(path, body, previous=previous)
    except ManifestError:
        return ManifestError
    return info, list(info.references.items())


@PROPERTY
@given(
    st.lists(st.sampled_from(HLS_WORDS) | st.text(max_size=5), max_size=40),
    st.lists(st.sampled_from(HLS_WORDS) | st.text(max_size=5), max_size=20),
    st.sampled_from(["\n", "\r\n", "\r", ""]),
)
def test_a_playlist_with_lines_added_parses_as_when_read_whole(
    words: list[str], added: list[str], line_end: str
) -> None:
    path = "live/index.m3u8"
    first = ("#EXTM3U\n" + "".join(words) + line_end).encode()
    second = first + "".join(added).encode()
    try:
        previous = parse_manifest(path, first)
    except ManifestError:
        return
    assert _parsed(path, second, previous) == _parsed(path, second)
    # And the next version after that, from the second's state.
    third = second + b"\n#EXTINF:2,\nlast.ts\n"
    try:
        middle = parse_manifest(path, second, previous=previous)
    except ManifestError:
        return
    assert _parsed(path, third, middle) == _parsed(path, third)


def test_an_event_playlist_is_read_from_where_the_last_version_stopped() -> None:
    """The added lines only: a spy on the references the parser makes counts what it reads."""
    import msd_async.live.manifests as manifests

    def playlist(n: int) -> bytes:
        return ("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:EVENT\n" + "".join(
            f"#EXTINF:2,\nsub/seg{i}.ts\n" for i in range(n))).encode()

    info = parse_manifest("live/a.m3u8", playlist(1000))
    read: list[str] = []
    original = manifests.Reference

    def spy(path: str, *args: Any) -> Any:
        read.append(path)
        return original(path, *args)

    manifests.Reference = spy  # type: ignore[assignment,misc]
    try:
        info = parse_manifest("live/a.m3u8", playlist(1002), previous=info)
        assert read == ["live/sub/seg1000.ts", "live/sub/seg1001.ts"]
        read.clear()
        # Another playlist's previous version, or a body that is not an extension, is read
        # whole.
        parse_manifest("live/b.m3u8", playlist(1002) + b"#EXTINF:2,\nsub/x.ts\n", previous=info)
        assert len(read) == 1003
        read.clear()
        window = playlist(1002).replace(b"sub/seg0.ts\n", b"")
        parse_manifest("live/a.m3u8", window, previous=info)
        assert len(read) == 1001
    finally:
        manifests.Reference = original  # type: ignore[misc]
    assert len(info.references) == 1002 and info.duration == 2004.0
    assert list(info.references)[-1] == "live/sub/seg1001.ts"


class _Membership:
    """A Container that is not a Collection: mark_gaps can only ask it about each line."""

    def __init__(self, items: set[str]) -> None:
        self._items = items

    def __contains__(self, item: object) -> bool:
        return item in self._items


@PROPERTY
@given(
    st.lists(st.sampled_from(["seg", "part", "hint", "gap"]), max_size=12),
    st.sets(st.integers(0, 14)),
    st.sets(st.integers(0, 14)),
)
def test_mark_gaps_answers_the_same_whichever_side_it_walks(
    lines: list[str], gapped: set[int], left_out: set[int]
) -> None:
    """Walking the few given-up paths or every reference of the playlist: one answer."""
    from msd_async.live.manifests import mark_gaps

    text = ["#EXTM3U", "#EXT-X-TARGETDURATION:2", "#EXT-X-PART-INF:PART-TARGET=0.5"]
    for i, what in enumerate(lines):
        if what == "part":
            text.append(f'#EXT-X-PART:DURATION=0.5,URI="o{i}.m4s"')
        elif what == "hint":
            text.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="o{i}.m4s"')
        else:
            text += ["#EXT-X-GAP"] if what == "gap" else []
            text += ["#EXTINF:2,", f"o{i}.m4s"]
    body = ("\n".join(text) + "\n").encode()
    info = parse_manifest("v/index.m3u8", body)
    gaps = {f"v/o{i}.m4s" for i in gapped}
    leave = {f"v/o{i}.m4s" for i in left_out}
    assert mark_gaps("v/index.m3u8", body, info, gaps, leave) == mark_gaps(
        "v/index.m3u8", body, info, _Membership(gaps), _Membership(leave)
    )


@st.composite
def growing_mpds(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """Two versions of a dynamic MPD: the second's timelines count on (a run's repeat
    grows, runs are added), or are changed anywhere."""
    templates = ["s$Number$.m4s", "$RepresentationID$/t$Time$.m4s", "fixed.m4s",
                 "../up$Number%03d$.m4s", "s$Number$.m4s?x=1", "http://cdn/s$Number$.m4s"]
    reps = draw(st.lists(st.tuples(st.sampled_from(["0", "1", "a b"]),
                                   st.sampled_from(templates),
                                   st.sampled_from(["", "sub/", "/abs/", "x"])),
                         min_size=1, max_size=3))

    def runs() -> list[tuple[int | None, int, int]]:
        return draw(st.lists(st.tuples(st.none() | st.integers(0, 5), st.integers(0, 3),
                                       st.integers(-1, 6)), max_size=3))

    first = [runs() for _ in reps]
    second = []
    for rep_runs in first:
        change = draw(st.sampled_from(["grow", "add", "other", "same"]))
        if change == "grow" and rep_runs:
            *head, (t, d, r) = rep_runs
            second.append([*head, (t, d, r + draw(st.integers(1, 4)))])
        elif change == "add":
            second.append(rep_runs + runs())
        elif change == "other":
            second.append(runs())
        else:
            second.append(rep_runs)

    def mpd(timelines: list[list[tuple[int | None, int, int]]]) -> bytes:
        body = []
        for (rep_id, media, base), timeline in zip(reps, timelines, strict=True):
            ss = "".join(
                f'<S{"" if t is None else f" t={chr(34)}{t}{chr(34)}"} d="{d}" r="{r}"/>'
                for t, d, r in timeline
            )
            body.append(
                f'<Representation id="{rep_id}" bandwidth="1">'
                + (f"<BaseURL>{base}</BaseURL>" if base else "")
                + f'<SegmentTemplate timescale="2" media="{media}" startNumber="3">'
                f"<SegmentTimeline>{ss}</SegmentTimeline></SegmentTemplate></Representation>"
            )
        return ('<MPD type="dynamic"><Period><AdaptationSet>' + "".join(body)
                + "</AdaptationSet></Period></MPD>").encode()

    return mpd(first), mpd(second)


@PROPERTY
@given(growing_mpds())
def test_an_mpd_read_after_its_previous_version_reads_as_when_read_alone(
    versions: tuple[bytes, bytes]
) -> None:
    first, second = versions
    path = "live/stream.mpd"
    try:
        previous = parse_manifest(path, first)
    except ManifestError:
        return
    assert _parsed(path, second, previous) == _parsed(path, second)
    assert _parsed(path, first, previous) == _parsed(path, first)
    assert _parsed("other/stream.mpd", second, previous) == _parsed("other/stream.mpd", second)


def test_a_growing_timeline_inherits_the_previous_versions_references() -> None:
    def mpd(n: int) -> bytes:
        return ('<MPD type="dynamic"><Period><AdaptationSet><Representation id="0" '
                'bandwidth="1"><SegmentTemplate initialization="init.mp4" media="s$Number$.m4s">'
                f'<SegmentTimeline><S t="0" d="2" r="{n - 1}"/></SegmentTimeline>'
                "</SegmentTemplate></Representation></AdaptationSet></Period></MPD>").encode()

    first = parse_manifest("d/m.mpd", mpd(500))
    second = parse_manifest("d/m.mpd", mpd(502), previous=first)
    assert second._inherited == 501  # the init and the 500 segments
    # The segments' references are the same objects: the run was not expanded again.
    assert all(second.references[p] is r for p, r in first.references.items()
               if r.role == "media")
    assert list(second.references)[-2:] == ["d/s501.m4s", "d/s502.m4s"]
    # A window that moved on inherits nothing: its first references are not the old ones.
    moved = mpd(502).replace(b't="0" d="2" r="501"', b't="2" d="2" r="500"')
    assert parse_manifest("d/m.mpd", moved, previous=second)._inherited == 0


@PROPERTY
@given(
    st.lists(st.sampled_from(HLS_WORDS) | st.text(max_size=5), max_size=40),
    st.lists(st.sampled_from(HLS_WORDS) | st.text(max_size=5), max_size=20),
    st.integers(0, 400),
)
def test_a_playlist_that_shares_any_beginning_with_the_last_parses_as_when_read_whole(
    words: list[str], tail: list[str], keep: int
) -> None:
    """LL-HLS: the parts of the last segments change with every version, everything before
    them stays; any version read after any other gives the whole parse's answer."""
    path = "live/index.m3u8"
    first = ("#EXTM3U\n" + "".join(words)).encode()
    second = first[:keep] + "".join(tail).encode()
    try:
        previous = parse_manifest(path, first)
    except ManifestError:
        return
    assert _parsed(path, second, previous) == _parsed(path, second)


def test_an_ll_hls_playlist_is_read_on_from_before_its_parts() -> None:
    def version(segments: int, parts: int) -> bytes:
        lines = ["#EXTM3U", "#EXT-X-TARGETDURATION:2", "#EXT-X-PART-INF:PART-TARGET=0.5",
                 "#EXT-X-PLAYLIST-TYPE:EVENT"]
        for n in range(segments):
            if n >= segments - 2:  # the parts of the last two segments are listed
                lines += [f'#EXT-X-PART:DURATION=0.5,URI="s{n}.p{k}.m4s"' for k in range(4)]
            lines += ["#EXTINF:2,", f"s{n}.m4s"]
        lines += [f'#EXT-X-PART:DURATION=0.5,URI="s{segments}.p{k}.m4s"' for k in range(parts)]
        lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="s{segments}.p{parts}.m4s"')
        return ("\n".join(lines) + "\n").encode()

    info = parse_manifest("ll/index.m3u8", version(1000, 1))
    for segments, parts in ((1000, 2), (1000, 3), (1001, 0), (1001, 1)):
        body = version(segments, parts)
        before = info
        info = parse_manifest("ll/index.m3u8", body, previous=before)
        assert _parsed("ll/index.m3u8", body, before) == _parsed("ll/index.m3u8", body)
        # The segments before the two with parts were not read again.
        assert info._inherited >= 997
        assert all(info.references[p] is r
                   for p, r in itertools.islice(before.references.items(), 997))
