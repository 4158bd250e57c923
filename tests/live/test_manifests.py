"""Kinds, headers and what manifests reference (pure functions, no server)."""

from __future__ import annotations

import pytest

from msd_async.live import (
    ManifestError,
    ObjectKind,
    default_cache_control,
    default_content_type,
    infer_kind,
    parse_manifest,
    resolve_uri,
)


@pytest.mark.parametrize(
    ("path", "head", "kind"),
    [
        ("live/720p/init.mp4", None, ObjectKind.INIT),
        ("live/init-stream0.m4s", None, ObjectKind.INIT),
        ("live/720p/v.init", None, ObjectKind.INIT),
        ("live/720p/seg_12.m4s", None, ObjectKind.MEDIA),
        ("live/720p/chunk-stream0-00012.m4s", None, ObjectKind.MEDIA),
        ("live/720p/seg12.ts", None, ObjectKind.MEDIA),
        ("live/720p/seg_12.part3.m4s", None, ObjectKind.PART),
        ("live/720p/filePart272.1.mp4", None, ObjectKind.PART),
        ("live/720p/key.key", None, ObjectKind.KEY),
        ("live/manifest.mpd", None, ObjectKind.MPD),
        ("live/720p/index.m3u8", b"#EXTM3U\n#EXTINF:2,\na.ts\n", ObjectKind.MEDIA_PLAYLIST),
        ("live/master.m3u8", b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\na.m3u8\n",
         ObjectKind.MULTIVARIANT_PLAYLIST),
        ("live/index.m3u8", None, ObjectKind.MEDIA_PLAYLIST),
        ("live/poster.jpg", None, ObjectKind.OTHER),
    ],
)
def test_infer_kind(path: str, head: bytes | None, kind: ObjectKind) -> None:
    assert infer_kind(path, head) is kind


def test_default_headers_by_kind() -> None:
    assert default_content_type("a/seg.m4s", ObjectKind.MEDIA) == "video/iso.segment"
    assert default_content_type("a/seg.cmfv", ObjectKind.MEDIA) == "video/mp4"
    assert default_content_type("a/index.m3u8", ObjectKind.MEDIA_PLAYLIST) == (
        "application/vnd.apple.mpegurl"
    )
    assert default_content_type("a/noext", ObjectKind.INIT) == "video/mp4"
    assert default_cache_control(ObjectKind.MEDIA) == "max-age=1209600, immutable"
    assert default_cache_control(ObjectKind.MEDIA_PLAYLIST, target_duration=6) == "max-age=3"
    assert default_cache_control(ObjectKind.MEDIA_PLAYLIST) == "max-age=1"
    assert default_cache_control(
        ObjectKind.MEDIA_PLAYLIST, target_duration=6, low_latency=True
    ) == "max-age=1"
    assert default_cache_control(ObjectKind.OTHER) is None


def test_resolve_uri() -> None:
    assert resolve_uri("live/720p/index.m3u8", "seg_1.m4s") == "live/720p/seg_1.m4s"
    assert resolve_uri("live/720p/index.m3u8", "../audio/a.m4s?x=1") == "live/audio/a.m4s"
    assert resolve_uri("live/720p/index.m3u8", "/abs/a.ts") == "abs/a.ts"
    assert resolve_uri("live/index.m3u8", "https://cdn.example/a.ts") is None
    assert resolve_uri("live/index.m3u8", "skd://key") is None
    assert resolve_uri("index.m3u8", "../../x.ts") == "x.ts"


LL_PLAYLIST = b"""#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:2
#EXT-X-PART-INF:PART-TARGET=0.5
#EXT-X-MEDIA-SEQUENCE:10
#EXT-X-MAP:URI="init.mp4"
#EXT-X-KEY:METHOD=AES-128,URI="k1.key"
#EXTINF:2.0,
seg_10.m4s
#EXT-X-GAP
#EXTINF:2.0,
seg_11.m4s
#EXT-X-PART:DURATION=0.5,URI="seg_12.part0.m4s",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.5,URI="seg_12.part1.m4s",GAP=YES
#EXT-X-PRELOAD-HINT:TYPE=PART,URI="seg_12.part2.m4s"
#EXT-X-RENDITION-REPORT:URI="../480p/index.m3u8",LAST-MSN=12
"""


def test_parse_ll_hls_media_playlist() -> None:
    info = parse_manifest("live/720p/index.m3u8", LL_PLAYLIST)
    assert info.kind is ObjectKind.MEDIA_PLAYLIST
    assert info.target_duration == 2 and info.part_target == 0.5 and info.low_latency
    refs = info.references
    assert refs["live/720p/init.mp4"].role == "init"
    assert refs["live/720p/k1.key"].role == "key"
    assert refs["live/720p/seg_10.m4s"].duration == 2.0
    assert refs["live/720p/seg_11.m4s"].gap
    assert refs["live/720p/seg_12.part0.m4s"].role == "part"
    assert refs["live/720p/seg_12.part1.m4s"].gap
    assert refs["live/720p/seg_12.part2.m4s"].role == "hint"
    assert "live/480p/index.m3u8" not in refs  # a report, not a dependency
    assert info.duration == 4.0 and not info.ended


def test_parse_multivariant_playlist() -> None:
    body = (
        b"#EXTM3U\n"
        b'#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="a",NAME="en",URI="audio/index.m3u8"\n'
        b'#EXT-X-STREAM-INF:BANDWIDTH=800000,AUDIO="a"\n720p/index.m3u8\n'
        b'#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=1,URI="iframes.m3u8"\n'
    )
    info = parse_manifest("live/master.m3u8", body)
    assert info.kind is ObjectKind.MULTIVARIANT_PLAYLIST
    assert set(info.references) == {
        "live/audio/index.m3u8", "live/720p/index.m3u8", "live/iframes.m3u8",
    }
    assert {r.role for r in info.references.values()} == {"playlist"}


MPD_TIMELINE = b"""<?xml version="1.0"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="dynamic" timeShiftBufferDepth="PT30S">
 <Period id="0" start="PT0S">
  <AdaptationSet mimeType="video/mp4">
   <SegmentTemplate timescale="1000" initialization="init-$RepresentationID$.m4s"
       media="chunk-$RepresentationID$-$Number%05d$.m4s" startNumber="7">
    <SegmentTimeline><S t="12000" d="2000" r="2"/><S d="1000"/></SegmentTimeline>
   </SegmentTemplate>
   <Representation id="v0" bandwidth="800000"/>
   <Representation id="v1" bandwidth="400000">
     <BaseURL>low/</BaseURL>
   </Representation>
  </AdaptationSet>
  <AdaptationSet mimeType="audio/mp4">
   <SegmentTemplate timescale="48000" initialization="a/init.m4s" media="a/$Time$.m4s">
    <SegmentTimeline><S t="0" d="96000" r="1"/></SegmentTimeline>
   </SegmentTemplate>
   <Representation id="a0" bandwidth="64000"/>
  </AdaptationSet>
 </Period>
</MPD>"""


def test_parse_mpd_segment_timeline() -> None:
    info = parse_manifest("live/stream.mpd", MPD_TIMELINE)
    assert info.kind is ObjectKind.MPD and not info.ended
    refs = info.references
    assert refs["live/init-v0.m4s"].role == "init"
    assert [p for p in refs if p.startswith("live/chunk-v0")] == [
        f"live/chunk-v0-{n:05d}.m4s" for n in (7, 8, 9, 10)
    ]
    assert "live/low/chunk-v1-00010.m4s" in refs and "live/low/init-v1.m4s" in refs
    assert "live/a/0.m4s" in refs and "live/a/96000.m4s" in refs
    assert refs["live/chunk-v0-00010.m4s"].duration == 1.0
    assert info.target_duration == 2.0 and info.duration == 30.0


def test_parse_mpd_segment_list_and_static() -> None:
    body = b"""<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static"><Period>
      <AdaptationSet><Representation id="r" bandwidth="1">
        <SegmentList timescale="10" duration="40">
          <Initialization sourceURL="r/init.mp4"/>
          <SegmentURL media="r/s1.m4s"/><SegmentURL media="r/s2.m4s"/>
        </SegmentList></Representation></AdaptationSet></Period></MPD>"""
    info = parse_manifest("vod/x.mpd", body)
    assert info.ended
    assert list(info.references) == ["vod/r/init.mp4", "vod/r/s1.m4s", "vod/r/s2.m4s"]
    assert info.references["vod/r/s2.m4s"].duration == 4.0


@pytest.mark.parametrize(
    ("path", "body", "match"),
    [
        ("a.m3u8", b"not a playlist", "EXTM3U"),
        ("a.m3u8", b"\xff\xfe#EXTM3U", "UTF-8"),
        ("a.mpd", b"<MPD><Period>", "well-formed"),
        ("a.mpd", b"<html/>", "not an MPD"),
    ],
)
def test_bad_manifests_raise_typed_errors(path: str, body: bytes, match: str) -> None:
    with pytest.raises(ManifestError, match=match):
        parse_manifest(path, body)


def test_mark_gaps_marks_given_up_media_and_drops_their_hints() -> None:
    from msd_async.live.manifests import mark_gaps

    body = (b'#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nseg_1.m4s\n#EXTINF:2.0,\nseg_2.m4s\n'
            b'#EXT-X-PART:DURATION=0.5,URI="p_3_0.m4s"\n'
            b'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="p_3_1.m4s"\n')
    info = parse_manifest("v/index.m3u8", body)
    out, marked = mark_gaps("v/index.m3u8", body, info, {"v/seg_1.m4s", "v/p_3_0.m4s"},
                            {"v/p_3_1.m4s"})
    assert marked == {"v/seg_1.m4s", "v/p_3_0.m4s"}
    assert out.decode().splitlines()[2:] == [
        "#EXTINF:2.0,", "#EXT-X-GAP", "seg_1.m4s", "#EXTINF:2.0,", "seg_2.m4s",
        '#EXT-X-PART:DURATION=0.5,URI="p_3_0.m4s",GAP=YES',
    ]
    same, none = mark_gaps("v/index.m3u8", body, info, set())
    assert same is body and none == set()


# What ffmpeg's dashenc writes at the end of an LL-DASH run with -use_timeline 0.
MPD_STATIC_NUMBERED = b"""<?xml version="1.0" encoding="utf-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT9.0S"
    maxSegmentDuration="PT1.0S" minBufferTime="PT1.0S">
 <Period id="0" start="PT0.0S">
  <AdaptationSet id="0" contentType="video">
   <Representation id="0" mimeType="video/mp4" bandwidth="143904">
    <SegmentTemplate timescale="1000000" duration="1000000" availabilityTimeOffset="0.960"
        initialization="init-stream$RepresentationID$.m4s"
        media="chunk-stream$RepresentationID$-$Number%05d$.m4s" startNumber="1">
    </SegmentTemplate>
   </Representation>
  </AdaptationSet>
 </Period>
</MPD>"""


def test_a_static_mpd_names_every_segment_of_its_number_template() -> None:
    """Issue 16 item 14: a static MPD's template without a timeline names the segments
    startNumber .. startNumber + ceil(period duration / segment duration) - 1."""
    info = parse_manifest("dash/manifest.mpd", MPD_STATIC_NUMBERED)
    assert info.ended
    assert list(info.references) == ["dash/init-stream0.m4s"] + [
        f"dash/chunk-stream0-{n:05d}.m4s" for n in range(1, 10)
    ]
    assert info.references["dash/chunk-stream0-00009.m4s"].role == "media"
    assert info.references["dash/chunk-stream0-00009.m4s"].duration == 1.0
    assert info.target_duration == 1.0 and info.duration == 9.0


@pytest.mark.parametrize(
    ("mpd", "period", "template", "names"),
    [
        # a partial last segment is still a segment; startNumber and $Time$ are honoured
        ('mediaPresentationDuration="PT2.5S"', 'start="PT0S"',
         'duration="2" startNumber="5" media="s_$Number$_$Time$.m4s"',
         ["s_5_0.m4s", "s_6_2.m4s"]),
        # Period@duration wins; the timescale divides
        ('mediaPresentationDuration="PT100S"', 'duration="PT4S"',
         'timescale="10" duration="20" media="s$Number$.m4s"', ["s1.m4s", "s2.m4s"]),
        # the last period lasts until the end of the presentation
        ('mediaPresentationDuration="PT10S"', 'start="PT6S"',
         'duration="2" startNumber="0" media="s$Number$.m4s"', ["s0.m4s", "s1.m4s"]),
        # no way to tell how long: nothing is listed (as for a dynamic MPD)
        ("", "", 'duration="2" media="s$Number$.m4s"', []),
    ],
)
def test_static_number_templates_count_from_the_period_duration(
    mpd: str, period: str, template: str, names: list[str]
) -> None:
    body = (f'<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" {mpd}>'
            f'<Period {period}><AdaptationSet><Representation id="v" bandwidth="1">'
            f"<SegmentTemplate {template}/></Representation></AdaptationSet></Period>"
            "</MPD>").encode()
    info = parse_manifest("vod/x.mpd", body)
    assert list(info.references) == [f"vod/{n}" for n in names]


def test_a_dynamic_number_template_names_only_its_initialization() -> None:
    """Which numbers a live template names depends on the reader's clock
    (availabilityStartTime): none is listed, documented in docs/live.md."""
    body = MPD_STATIC_NUMBERED.replace(b'type="static"', b'type="dynamic"')
    info = parse_manifest("dash/manifest.mpd", body)
    assert not info.ended
    assert list(info.references) == ["dash/init-stream0.m4s"]


def test_a_static_number_template_beyond_the_reference_bound_is_refused() -> None:
    body = (b'<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" '
            b'mediaPresentationDuration="P10000D"><Period><AdaptationSet>'
            b'<Representation id="v" bandwidth="1"><SegmentTemplate duration="1" '
            b'media="s$Number$.m4s"/></Representation></AdaptationSet></Period></MPD>')
    with pytest.raises(ManifestError, match="more than"):
        parse_manifest("vod/x.mpd", body)
