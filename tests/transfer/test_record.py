"""The sync record when two runs of the same tree, endpoint and folder overlap: each run
compacts the journal at its close, and neither may lose what the other recorded (it would
only cost transfers, but a record exists to save them)."""

from __future__ import annotations

from pathlib import Path

from msd_async.transfer.record import RecordEntry, SyncRecord

ENDPOINT = "http://127.0.0.1:9"


def entry(n: int) -> RecordEntry:
    return RecordEntry(size=n, mtime_ns=n, sha256=f"{n:064x}", etag=f"etag-{n}")


def record(root: Path, records: Path) -> SyncRecord:
    run = SyncRecord(root, ENDPOINT, "live", directory=records)
    run.load()
    return run


def test_overlapping_runs_keep_what_each_recorded(tmp_path: Path) -> None:
    root, records = tmp_path / "tree", tmp_path / "records"
    root.mkdir()
    first = record(root, records)
    first.set("kept.ts", entry(1))
    first.close()

    a, b = record(root, records), record(root, records)
    a.set("a.ts", entry(2))
    b.set("b.ts", entry(3))
    a.close()  # replaces the file b has open for appending
    b.set("c.ts", entry(4))  # appended to the file a replaced
    b.set("a.ts", entry(5))  # both recorded a.ts: the run closing last keeps its fact
    b.close()

    after = record(root, records)
    assert {p: after.get(p) for p in ("kept.ts", "a.ts", "b.ts", "c.ts")} == {
        "kept.ts": entry(1), "a.ts": entry(5), "b.ts": entry(3), "c.ts": entry(4),
    }
    assert after.error is None and a.error is None and b.error is None


def test_a_path_one_run_forgot_stays_forgotten_when_the_other_closes_after(
    tmp_path: Path,
) -> None:
    root, records = tmp_path / "tree", tmp_path / "records"
    root.mkdir()
    first = record(root, records)
    first.set("gone.ts", entry(1))
    first.set("other.ts", entry(2))
    first.close()

    a, b = record(root, records), record(root, records)
    b.forget("gone.ts")
    a.set("new.ts", entry(3))
    b.close()
    a.close()

    after = record(root, records)
    assert after.get("new.ts") == entry(3) and after.get("other.ts") == entry(2)
    # b's deletion is in the file b left; a (which loaded gone.ts) closes after it.
    assert after.get("gone.ts") is None
