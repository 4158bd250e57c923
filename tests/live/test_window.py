"""The delete window as a pure class, on a clock the test turns."""

from __future__ import annotations

from msd_async.live.manifests import Reference
from msd_async.live.window import DeleteWindow


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def refs(*names: str, role: str = "segment", duration: float | None = 2.0) -> dict[str, Reference]:
    return {n: Reference(n, role, duration) for n in names}  # type: ignore[arg-type]


def test_a_segment_goes_its_duration_plus_the_playlists_after_it_left() -> None:
    clock = Clock()
    window = DeleteWindow(clock)
    assert window.stored("p.m3u8", {}, refs("s1", "s2"), target=2, playlist_duration=4) == []
    window.stored("p.m3u8", refs("s1", "s2"), refs("s2", "s3"), target=2, playlist_duration=4)
    assert window.next_due() == 106.0  # 2 s of segment + 4 s of playlist
    clock.now = 105.9
    assert window.pop_due() == []
    clock.now = 106.0
    assert window.pop_due() == ["s1"]
    assert window.next_due() is None


def test_parts_go_after_three_target_durations_and_others_are_kept() -> None:
    clock = Clock()
    window = DeleteWindow(clock)
    old = refs("p1", role="part", duration=0.5) | refs("init.mp4", role="init")
    window.stored("p.m3u8", {}, old, target=2, playlist_duration=6)
    forget = window.stored("p.m3u8", old, {}, target=2, playlist_duration=6)
    assert forget == ["init.mp4"]  # never deleted automatically
    assert window.next_due() == 106.0


def test_named_again_before_its_delete_it_stays() -> None:
    clock = Clock()
    window = DeleteWindow(clock)
    window.stored("p.m3u8", {}, refs("s1"), target=2, playlist_duration=2)
    window.stored("p.m3u8", refs("s1"), {}, target=2, playlist_duration=2)
    window.stored("p.m3u8", {}, refs("s1"), target=2, playlist_duration=2)
    clock.now = 1000
    assert window.pop_due() == []
    assert window.held("s1")


def test_shared_objects_go_when_the_last_manifest_drops_them() -> None:
    clock = Clock()
    window = DeleteWindow(clock)
    window.stored("a.m3u8", {}, refs("c1"), target=2, playlist_duration=2)
    window.stored("b.mpd", {}, refs("c1", role="media"), target=2, playlist_duration=2)
    window.stored("a.m3u8", refs("c1"), {}, target=2, playlist_duration=2)
    clock.now = 1000
    assert window.pop_due() == []
    window.stored("b.mpd", refs("c1", role="media"), {}, target=2, playlist_duration=2)
    assert window.next_due() == 1004.0  # the delay counts from the last manifest it left
    clock.now = 1004.0
    assert window.pop_due() == ["c1"]


def test_a_requested_delete_is_a_hint_never_sooner_than_the_rules() -> None:
    clock = Clock()
    window = DeleteWindow(clock, auto_delete=False, min_delay=1.0)
    window.stored("p.m3u8", {}, refs("s1"), target=2, playlist_duration=2)
    window.request("s1", fallback_delay=30)
    assert window.next_due() is None  # still named: deleted once it leaves
    window.stored("p.m3u8", refs("s1"), {}, target=2, playlist_duration=2)
    assert window.next_due() == 104.0
    window.request("never-named", fallback_delay=30)
    window.request("soon", fallback_delay=0)
    clock.now = 101.0
    assert window.pop_due() == ["soon"]  # min_delay, not at once
    clock.now = 200.0
    assert sorted(window.pop_due()) == ["never-named", "s1"]
    window.deleted("s1")
    assert "s1" not in window.leave_due and "s1" not in window.requested


def test_closing_abandons_what_is_scheduled() -> None:
    clock = Clock()
    window = DeleteWindow(clock)
    window.request("x", fallback_delay=1)
    window.clear()
    clock.now = 1000
    assert window.pop_due() == [] and window.next_due() is None


def test_a_version_sharing_its_first_paths_is_stored_as_if_walked_whole() -> None:
    """``shared`` (how many first paths a new version has in common with the stored one)
    leaves the window as the walk over both versions does, with other manifests holding
    and requesting objects."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    steps = st.lists(
        st.tuples(st.sampled_from(["append", "tail", "replace", "other", "request", "tick"]),
                  st.lists(st.integers(0, 9), max_size=4)),
        max_size=25,
    )

    def state(w: DeleteWindow) -> object:
        return (w.holders, w.leave_due, w.requested, w.due, w.next_due())

    @settings(max_examples=200, derandomize=True, deadline=None)
    @given(steps)
    def check(script: list[tuple[str, list[int]]]) -> None:
        clocks = Clock(), Clock()
        windows = [DeleteWindow(c) for c in clocks]
        current: dict[str, Reference] = {}
        other: dict[str, Reference] = {}
        for what, numbers in script:
            names = [f"s{n}" for n in numbers]
            if what in ("append", "tail", "replace"):
                shared = 0
                if what == "append":
                    new = {**current, **refs(*[n for n in names if n not in current])}
                    shared = len(current)
                elif what == "tail":  # the first paths kept, the rest replaced
                    shared = len(current) // 2
                    head = dict(list(current.items())[:shared])
                    new = {**head, **refs(*[n for n in names if n not in head],
                                          role="part")}
                else:
                    new = refs(*names)
                forgets = [
                    w.stored("p.m3u8", current, new, target=2, playlist_duration=4,
                             shared=shared if i else 0)
                    for i, w in enumerate(windows)
                ]
                assert sorted(forgets[0]) == sorted(forgets[1])
                current = new
            elif what == "other":
                new = refs(*names)
                for w in windows:
                    w.stored("q.m3u8", other, new, target=2, playlist_duration=4)
                other = new
            elif what == "request":
                for w in windows:
                    for n in names:
                        w.request(n, 3.0)
            else:
                for c in clocks:
                    c.now += 1.5
                assert windows[0].pop_due() == windows[1].pop_due()
            assert state(windows[0]) == state(windows[1])

    check()
