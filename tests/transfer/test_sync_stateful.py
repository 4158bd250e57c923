"""A stateful property test of sync: edit both sides, inject faults, interrupt, lose the record.

Hypothesis drives a local tree and a container folder (the local server) through edits on
either side (create, modify keeping size and mtime, delete, rename), faults, damaged or lost
records and syncs in either direction, with or without ``delete`` and filters, some of them
interrupted at a random event (``stop``, as SIGTERM does, or cancelled outright). Both sides
are read by an independent reader: ``os.walk`` of the tree and the server's own store (not
the client's listing or downloads).

After every sync, completed or not:
* no file under a final name holds anything but the bytes it had or the source's bytes (no
  partial file), and nothing outside the two roots changed;
* a path was deleted only where the source positively lacks it (never an excluded path);
After every completed sync, also: both sides are equal up to filters, unstorable names and
the tool's own names, and the report is ok except for the unstorable names.

A second machine (:class:`OverlapMachine`) also runs two syncs at once on the same tree and
folder, as users overlap them (a cron run outlasting its minute, two shards into one
folder, one sync each way), with or without ``delete``, sharing a record or not. After both
end: every path holds bytes one side had there (no partial or mixed file), a path both
sides had is still on both, nothing outside the roots changed, no temporary file of ours
is left, a failure says why (in use by the other run), and when both ran the same way
(one unchanged source), what each reported transferred, skipped or deleted is so. Run
each way, each side has one writer: what a run reported transferred or skipped is in its
destination, what it deleted is not, and what vanished from its source was deleted by the
other run. The first run is sometimes cancelled outright partway (the second goes on).

CI runs a bounded, derandomized number of examples; ``MSD_LONG_TESTS=1`` runs many more.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from stateful import LONG, machine_settings

import msd_async
from msd_async import InvalidParameterError, RetryPolicy
from msd_async.testing import LocalMediaStore
from msd_async.testing.faults import FaultPlan
from msd_async.transfer import TransferEvent, TransferOptions, TransferReport, is_own, sync
from msd_async.transfer.filters import FilterRule, PathFilter

FAST = RetryPolicy(max_attempts=6, backoff_initial=0.001, backoff_max=0.005)

NAMES = ["a.txt", "b.ts", "d/c.ts", "d/e/f.txt", "g.m4s", "bad name.txt", "x.msdpart"]
UNSTORABLE = {"bad name.txt"}
#: Two contents of each size: a change that keeps the size.
CONTENTS = [b"", b"1", b"2", b"hello", b"world", b"x" * 300, b"y" * 300]
FILTERS: list[tuple[FilterRule, ...]] = [(), (("exclude", "*.ts"),), (("include", "d/"),)]


def read_tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path (os.walk: nothing of the library)."""
    found: dict[str, bytes] = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder, name)
            found[path.relative_to(root).as_posix()] = path.read_bytes()
    return found


class SyncMachine(RuleBasedStateMachine):
    portal: BlockingPortal
    server: LocalMediaStore
    client: Any
    base: Path
    counter = 0

    def __init__(self) -> None:
        super().__init__()
        SyncMachine.counter += 1
        n = SyncMachine.counter
        self.root = self.base / f"ex{n}" / "root"
        self.records = self.base / f"ex{n}" / "records"
        self.outside = self.base / f"ex{n}" / "outside.txt"
        self.prefix = f"ex{n}/data"
        self.root.mkdir(parents=True)
        self.outside.write_bytes(b"not ours")
        self.portal.call(self._put, f"ex{n}/outside.txt", b"not ours either")

    # --- the two sides, read independently ------------------------------------------------

    def local(self) -> dict[str, bytes]:
        return read_tree(self.root)

    def remote(self) -> dict[str, bytes]:
        cut = len(self.prefix) + 1
        return {
            v.path[cut:]: v.data or b""
            for v in self.server.store.walk()
            if v.path.startswith(self.prefix + "/")
        }

    def outside_remote(self) -> dict[str, bytes]:
        return {
            v.path: v.data or b""
            for v in self.server.store.walk()
            if not v.path.startswith(self.prefix + "/")
        }

    # The test's own edits go to the store directly: faults are for the sync's requests.
    async def _put(self, path: str, data: bytes) -> None:
        await self.server.store.put_bytes(path, data)

    async def _delete(self, path: str) -> None:
        self.server.store.delete(path)

    @initialize()
    def start(self) -> None:
        self.outside_before = self.outside_remote()

    # --- edits ------------------------------------------------------------------------------

    @rule(name=st.sampled_from(NAMES), data=st.sampled_from(CONTENTS))
    def write_local(self, name: str, data: bytes) -> None:
        path = self.root / name
        if any((self.root / p).is_file() for p in _parents(name)):
            return  # a file where a folder would go: not a case for this test
        if path.is_dir():
            return
        old = path.stat() if path.exists() else None
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if old is not None and old.st_size == len(data):
            os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))  # same size, same mtime

    @rule(name=st.sampled_from(NAMES))
    def delete_local(self, name: str) -> None:
        path = self.root / name
        if path.is_file():
            path.unlink()

    @rule(a=st.sampled_from(NAMES), b=st.sampled_from(NAMES))
    def rename_local(self, a: str, b: str) -> None:
        src, dst = self.root / a, self.root / b
        if a == b or not src.is_file() or dst.is_dir():
            return
        if any((self.root / p).is_file() for p in _parents(b)):
            return
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)

    @rule(name=st.sampled_from([n for n in NAMES if n not in UNSTORABLE]),
          data=st.sampled_from(CONTENTS))
    def write_remote(self, name: str, data: bytes) -> None:
        if any(p in self.remote() for p in _parents(name)):
            return
        if any(k.startswith(name + "/") for k in self.remote()):
            return
        self.portal.call(self._put, f"{self.prefix}/{name}", data)

    @rule(name=st.sampled_from(NAMES))
    def delete_remote(self, name: str) -> None:
        if name in self.remote():
            self.portal.call(self._delete, f"{self.prefix}/{name}")

    @rule(a=st.sampled_from(NAMES), b=st.sampled_from([n for n in NAMES if n not in UNSTORABLE]))
    def rename_remote(self, a: str, b: str) -> None:
        remote = self.remote()
        if a == b or a not in remote or any(k.startswith(b + "/") for k in remote):
            return
        if any(p in remote for p in _parents(b)):
            return
        self.portal.call(self._put, f"{self.prefix}/{b}", remote[a])
        self.portal.call(self._delete, f"{self.prefix}/{a}")

    @rule(kind=st.sampled_from(["500", "503", "cut-upload", "cut-download", "throttle"]),
          method=st.sampled_from(["GET", "PUT", "DELETE", None]),
          times=st.integers(1, 2))
    def inject_fault(self, kind: Any, method: str | None, times: int) -> None:
        self.server.faults.inject(kind, method=method, times=times)

    @rule(how=st.sampled_from(["lose", "truncate", "garbage"]))
    def damage_record(self, how: str) -> None:
        for file in self.records.glob("*.jsonl") if self.records.is_dir() else []:
            if how == "lose":
                file.unlink()
            elif how == "truncate":
                data = file.read_bytes()
                file.write_bytes(data[: len(data) // 2])
            else:
                with open(file, "ab") as f:
                    f.write(b'{"p":"a.txt","s":1,"m":0,"h":"zz","e":"nope"}\n\x00garbage\n')

    # --- syncs ------------------------------------------------------------------------------

    @rule(
        upload=st.booleans(),
        delete=st.booleans(),
        concurrency=st.sampled_from([1, 3]),
        filters=st.sampled_from(FILTERS),
        interrupt=st.one_of(
            st.none(), st.tuples(st.sampled_from(["stop", "cancel"]), st.integers(0, 12))
        ),
    )
    def run_sync(
        self, upload: bool, delete: bool, concurrency: int, filters: tuple[FilterRule, ...],
        interrupt: tuple[str, int] | None,
    ) -> None:
        before_local, before_remote = self.local(), self.remote()
        options = TransferOptions(
            concurrency=concurrency, filters=filters, record_dir=self.records, retry=FAST,
        )
        source, dest = (str(self.root), f"ms:{self.prefix}")
        if not upload:
            source, dest = dest, source
        if not upload and delete and not before_remote:
            # An empty listing is how a mistyped folder looks: never evidence for deleting.
            with pytest.raises(InvalidParameterError, match="holds no object"):
                self.portal.call(self._sync, source, dest, options, delete, interrupt)
            assert self.local() == before_local
            return
        selected = PathFilter(filters)
        if upload and delete and all(is_own(rel) for rel in before_local) and any(
            selected.selects(rel) and not is_own(rel) for rel in before_remote
        ):
            # Nor is an empty local folder (an unmounted disk), or one holding only what an
            # interrupted download left, when there is something to delete.
            with pytest.raises(InvalidParameterError, match="holds no file"):
                self.portal.call(self._sync, source, dest, options, delete, interrupt)
            assert self.remote() == before_remote
            return
        report = self.portal.call(self._sync, source, dest, options, delete, interrupt)
        after_local, after_remote = self.local(), self.remote()
        src_before = before_local if upload else before_remote
        dst_before, dst_after = (
            (before_remote, after_remote) if upload else (before_local, after_local)
        )
        select = PathFilter(filters)

        def taking_part(rel: str) -> bool:
            return select.selects(rel) and not is_own(rel)

        # Nothing outside the two roots changed.
        assert self.outside.read_bytes() == b"not ours"
        assert self.outside_remote() == self.outside_before
        # The source side is never changed by a sync.
        assert (after_local if upload else after_remote) == src_before
        # No partial file: each destination path holds what it had or the source's bytes.
        for rel, data in dst_after.items():
            assert data in (dst_before.get(rel), src_before.get(rel)), rel
        # Deleted only where the source positively lacks it, never an excluded path.
        for rel in set(dst_before) - set(dst_after):
            assert delete and taking_part(rel) and rel not in src_before, rel
        if report is None or report.interrupted:
            return
        # Completed: equal up to filters, unstorable names and the tool's own names.
        failed = {f.path for f in report.failed}
        assert failed <= UNSTORABLE, report.failed
        wanted = {r: d for r, d in src_before.items() if taking_part(r) and r not in UNSTORABLE}
        for rel, data in wanted.items():
            assert dst_after.get(rel) == data, rel
        if delete:
            extra = {r for r in dst_after if taking_part(r) and r not in wanted}
            assert extra <= UNSTORABLE, extra
        for rel in dst_before:
            if not taking_part(rel):
                assert dst_after.get(rel) == dst_before[rel], rel  # left alone

    async def _sync(
        self, source: str, dest: str, options: TransferOptions, delete: bool,
        interrupt: tuple[str, int] | None,
    ) -> TransferReport | None:
        stop = anyio.Event()
        seen = 0
        with anyio.CancelScope() as scope:

            def hook(event: TransferEvent) -> None:
                nonlocal seen
                seen += 1
                if interrupt is not None and seen > interrupt[1]:
                    if interrupt[0] == "stop":
                        stop.set()
                    else:
                        scope.cancel()

            return await sync(
                self.client, source, dest, options, delete=delete, progress=hook, stop=stop
            )
        return None  # cancelled: a hard stop

    def teardown(self) -> None:
        self.server.faults.clear()

    @invariant()
    def never_a_temporary_name_without_its_state(self) -> None:
        # Small objects are written through one temporary name each, renamed or removed in
        # the same step: none may be left behind once a sync returned.
        left = [r for r in self.local() if r.endswith(".msdpart") and r != "x.msdpart"]
        assert left == [], left


#: One run of an overlapping pair: upload (else download), delete, shard, own record
#: folder, concurrency (one file at a time: a longer run for the other to overlap).
RUN = st.tuples(
    st.booleans(), st.booleans(), st.sampled_from([None, (0, 2), (1, 2)]), st.booleans(),
    st.sampled_from([1, 3]),
)
Run = tuple[bool, bool, tuple[int, int] | None, bool, int]


class OverlapMachine(SyncMachine):
    """The same edits, faults and single syncs, plus two syncs at once on one tree and one
    folder: a cron run that outlasts its minute, two shards into one folder, a sync each
    way. Checked after both end (each run saw the other's writes, or not: either is
    right, a mix never is)."""

    @rule(
        remote=st.booleans(),
        files=st.dictionaries(
            st.sampled_from(NAMES[:5]), st.sampled_from(CONTENTS), min_size=2, max_size=5
        ),
    )
    def write_many(self, remote: bool, files: dict[str, bytes]) -> None:
        # One step of many edits: the pairs of syncs have something to overlap on.
        for name, data in files.items():
            if remote:
                self.write_remote(name, data)
            else:
                self.write_local(name, data)

    # lag: the second run starts once the first emitted this many events; -1: both at
    # once, mostly (each one's scan and listing before the other's transfers: the runs on
    # loopback take milliseconds, and a later start rarely lands inside the first).
    @rule(
        first=RUN, second=RUN, lag=st.sampled_from([-1, -1, -1, 0, 2, 5]),
        cancel=st.one_of(st.none(), st.integers(0, 6)),
    )
    def run_two(self, first: Run, second: Run, lag: int, cancel: int | None) -> None:
        before_local, before_remote = self.local(), self.remote()
        runs = [first, second]
        outcomes = self.portal.call(self._two, runs, lag, cancel)
        after_local, after_remote = self.local(), self.remote()
        assert self.outside.read_bytes() == b"not ours"
        assert self.outside_remote() == self.outside_before
        # No partial or mixed file: each path holds what either side had there.
        for side in (after_local, after_remote):
            for rel, data in side.items():
                if is_own(rel):
                    continue  # the user's x.msdpart, untouched; ours are checked below
                assert data in (before_local.get(rel), before_remote.get(rel)), rel
        # A run deletes only what its source lacks, and neither side lacked a path both
        # had: the first deletion of it would have to come after another.
        for rel in set(before_local) & set(before_remote):
            assert rel in after_local and rel in after_remote, rel
        # No temporary file of ours is left once both ended.
        left = [r for r in after_local if is_own(r) and r != "x.msdpart"]
        assert left == [], left
        one_way = first[0] == second[0]
        for i, ((upload, *_), outcome) in enumerate(zip(runs, outcomes, strict=True)):
            if isinstance(outcome, InvalidParameterError):
                assert "holds no" in str(outcome), outcome
                continue
            if outcome is None:
                continue  # cancelled outright (a hard stop)
            report = outcome
            # Why a path failed is said so that a user can act on it.
            for f in report.failed:
                assert f.path in UNSTORABLE or "another download" in str(f.error), f.message
            if not one_way:
                # Each run's destination is the other's source, so which bytes end where
                # depends on the order of their reads and writes (either may win, the two
                # sides may even end swapped: that each holds bytes one side had is checked
                # above). But each side has one writer, the run whose destination it is: a
                # path it transferred or skipped is there, one it deleted is not.
                dst = after_remote if upload else after_local
                for rel in [*report.transferred, *report.skipped]:
                    assert rel in dst, rel
                for rel in report.deleted:
                    assert rel not in dst, rel
                # And nothing but the other run's deletions can vanish from its source (the
                # edits wait for both to end); a cancelled run reports none.
                other = outcomes[1 - i]
                if isinstance(other, TransferReport):
                    assert set(report.vanished) <= set(other.deleted), report.vanished
                continue
            src, dst = (
                (before_local, after_remote) if upload else (before_remote, after_local)
            )
            # Both runs read one unchanged source: what a run reports is what is there.
            for rel in [*report.transferred, *report.skipped]:
                assert dst.get(rel) == src[rel], rel
            for rel in report.deleted:
                assert rel not in dst, rel
            assert report.vanished == []  # nothing of the source went

    async def _two(
        self, runs: list[Run], lag: int, cancel: int | None
    ) -> list[TransferReport | InvalidParameterError | None]:
        outcomes: list[TransferReport | InvalidParameterError | None] = [None, None]
        lagging = anyio.Event()
        seen = 0
        first = anyio.CancelScope()

        def hook(event: TransferEvent) -> None:
            nonlocal seen
            seen += 1
            if seen > lag:
                lagging.set()
            if cancel is not None and seen > cancel:
                first.cancel()  # the first run is killed, the second goes on

        async def one(i: int, hook: Any) -> None:
            upload, delete, shard, own_record, concurrency = runs[i]
            options = TransferOptions(
                concurrency=concurrency, shard=shard, retry=FAST,
                record_dir=self.records / f"own{i}" if own_record else self.records,
            )
            source, dest = str(self.root), f"ms:{self.prefix}"
            if not upload:
                source, dest = dest, source
            try:
                with first if i == 0 else anyio.CancelScope():
                    outcomes[i] = await sync(
                        self.client, source, dest, options, delete=delete, progress=hook
                    )
            except InvalidParameterError as exc:
                outcomes[i] = exc
            finally:
                lagging.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(one, 0, hook)
            if lag >= 0:
                await lagging.wait()  # the second starts once the first is this far
            tg.start_soon(one, 1, None)
        return outcomes


def _parents(name: str) -> Iterator[str]:
    parts = name.split("/")
    for i in range(1, len(parts)):
        yield "/".join(parts[:i])


# Where a sync is interrupted depends on the timing of its concurrent requests, so a
# failing sequence does not always fail again: no shrinking in the long runs.
@pytest.mark.timeout(600 if LONG else 180)
@pytest.mark.parametrize(
    ("machine", "seed", "examples", "long_examples", "steps"),
    [(SyncMachine, 1, 40, 300, 40), (OverlapMachine, 2, 50, 400, 30)],
    ids=["one-at-a-time", "two-at-once"],
)
def test_sync_state_machine(
    tmp_path: Path, machine: type[SyncMachine], seed: int, examples: int,
    long_examples: int, steps: int,
) -> None:
    from hypothesis.stateful import run_state_machine_as_test

    with start_blocking_portal("asyncio") as portal:
        server = portal.wrap_async_context_manager(LocalMediaStore(faults=FaultPlan(seed=seed)))
        with server as running:
            session_cm = portal.wrap_async_context_manager(
                msd_async.Session(credentials=running.credentials, region=running.region)
            )
            with session_cm as session:
                SyncMachine.portal = portal
                SyncMachine.server = running
                SyncMachine.client = session.container(running.endpoint)
                SyncMachine.base = tmp_path
                run = machine_settings(
                    examples=examples, long_examples=long_examples, steps=steps,
                    shrink_long=False,
                )
                run_state_machine_as_test(machine, settings=run)
