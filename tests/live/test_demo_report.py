"""Issue 16 item 20: what ``msd demo`` keeps for its summary stays bounded on a long run.

The demo reports through :class:`RenditionReport` (filled by the packager),
:class:`PlaylistReader` (its ``ReaderStats``) and the server's :class:`FaultPlan`; each used
to keep one entry per publication, chunk or fault for the whole run.
"""

from __future__ import annotations

import gc
import time
import tracemalloc

import anyio
import pytest

from msd_async import ContainerClient
from msd_async.live import LivePublisher
from msd_async.live.synthetic import (
    PathTally,
    PlaylistReader,
    RenditionPackager,
    RenditionReport,
    cmaf_chunk,
    cmaf_init,
)
from msd_async.testing import FaultPlan

pytestmark = pytest.mark.anyio


@pytest.mark.timeout(180)
async def test_the_demo_report_and_reader_keep_no_entry_per_publication(
    store: ContainerClient,
) -> None:
    report = RenditionReport("r0")
    reader = PlaylistReader(store, "rep/r0/index.m3u8", interval=0.02)
    sequence = 0

    async def segment(packager: RenditionPackager, n: int, *, last: bool = False) -> None:
        nonlocal sequence
        await packager.start_segment(n, time.time())
        for part in range(2):
            await packager.start_part()
            sequence += 1
            packager.push(cmaf_chunk(sequence, sequence * 9000, 300))
            packager.end_part(0.1, last_of_segment=part == 1)
        await packager.end_segment(0.2, last=last)
        # As the demo's producer does in real time: the next segment after this one settled.
        for tally in (report.segments, report.parts, report.playlists):
            await tally.wait()

    warm, steps = 60, 200
    # The publisher's window holds what it will delete until it is due (parts 3 part
    # targets after they leave, segments their duration plus the playlist's): bounded, but
    # more or less of it at a snapshot depending on timing. Both snapshots wait it out.
    window_catch_up = 2 * (0.2 + 3 * 0.2)
    tracemalloc.start()
    try:
        async with LivePublisher(store, prefix="rep") as publisher:
            packager = RenditionPackager(publisher, "r0", report, target=0.2,
                                         part_target=0.1, window=3)
            await packager.init(cmaf_init())
            async with anyio.create_task_group() as tg:
                tg.start_soon(reader.run)
                for n in range(warm):
                    await segment(packager, n)
                await anyio.sleep(window_catch_up)
                gc.collect()
                before = tracemalloc.take_snapshot()
                for n in range(warm, warm + steps):
                    await segment(packager, n, last=n == warm + steps - 1)
                tg.cancel_scope.deadline = anyio.current_time() + 30
            # The reader ended at ENDLIST, its last reads done.
            assert reader.stats.ended
            await anyio.sleep(window_catch_up)
            gc.collect()
            after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()

    published = 6 * steps  # a segment, two parts, three playlist versions per step
    # What the demo's report and reader keep, and the publications they would hold. The
    # publisher's own window and upload state (bounded, sized by timing at a snapshot) are
    # held flat by test_heap_stays_flat_per_publication_after_warm_up.
    own = [tracemalloc.Filter(True, "*/msd_async/*"),
           tracemalloc.Filter(False, "*/msd_async/testing/*"),
           tracemalloc.Filter(False, "*/msd_async/live/window.py"),
           tracemalloc.Filter(False, "*/msd_async/live/destination.py")]
    growth = after.filter_traces(own).compare_to(before.filter_traces(own), "lineno")
    per_publication = sum(d.size_diff for d in growth) / published
    top = "\n".join(str(d) for d in growth[:5])
    print(f"demo report heap growth per publication: {per_publication:.1f} B")
    # Measured: about 0 B; 370 B with a tally keeping its publications, 65 B with the
    # reader remembering every path it read.
    assert per_publication <= 32, f"{per_publication:.0f} B per publication:\n{top}"
    # ...and the summary still adds up.
    assert len(report.segments) == warm + steps
    assert report.segments.acknowledged + report.segments.given_up == warm + steps
    assert report.parts.published == 2 * (warm + steps)
    assert report.segments.latency.count == report.segments.acknowledged
    assert len(reader.stats.missing) == 0
    assert reader.stats.objects_read >= warm + steps


def test_path_tally_counts_all_and_keeps_the_last() -> None:
    tally = PathTally(keep=3)
    for n in range(1000):
        tally.append(f"seg_{n}.m4s")
    assert len(tally) == 1000
    assert list(tally) == ["seg_997.m4s", "seg_998.m4s", "seg_999.m4s"]


def test_fault_history_keeps_the_most_recent_and_counts_all() -> None:
    plan = FaultPlan(rate=1.0, kinds={"503"}, seed=1, history_limit=100)
    for n in range(10_000):
        assert plan.pick("PUT", f"seg_{n}.ts", is_object=True) is not None
    assert plan.applied == 10_000
    assert 90 <= len(plan.history) <= 100
    assert plan.history[-1] == ("503", "PUT", "seg_9999.ts")
    with pytest.raises(ValueError, match="history_limit"):
        FaultPlan(history_limit=0)
