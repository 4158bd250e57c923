"""msd_async.transfer against the real local server: walk, upload, download, sync, shards."""

from __future__ import annotations

import json
import logging
import os
import random
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from msd_async import InvalidParameterError, RetryPolicy
from msd_async.transfer import (
    PART_SIZE,
    TransferEvent,
    TransferOptions,
    default_record_dir,
    download_tree,
    in_shard,
    shard_of,
    sync,
    upload_tree,
    walk,
)
from msd_async.transfer.shard import check_shard

pytestmark = pytest.mark.anyio

FAST = RetryPolicy(max_attempts=6, backoff_initial=0.001, backoff_max=0.01)
TWICE = TransferOptions(retry=FAST, file_attempts=2)
DRY = TransferOptions(dry_run=True)


def make_tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = root.joinpath(*rel.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def sparse_file(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size)


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_file())


def exists(path: Path) -> bool:
    return path.exists()


def stat_of(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


def read_tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file()
    }


TREE = {
    "a.txt": b"a",
    "x/b.ts": b"b" * 100,
    "x/y/c.m4s": b"c" * 1000,
    "x/y/z/d=1:2~.m3u8": b"#EXTM3U\n",
    "empty": b"",
}


# --- walk --------------------------------------------------------------------------------


async def test_walk_lists_every_object_once_across_pages(mediastore_client: Any) -> None:
    for i in range(7):
        await mediastore_client.put_object(f"w/f{i}", b"1")
        await mediastore_client.put_object(f"w/sub{i % 3}/g{i}", b"22")
    found = [o async for o in walk(mediastore_client, "w", page_size=2, concurrency=2)]
    paths = [o.relative_path for o in found]
    assert len(paths) == len(set(paths)) == 14
    assert {o.path for o in found} == {f"w/{p}" for p in paths}
    assert {o.size for o in found if o.relative_path.startswith("sub")} == {2}
    assert [o async for o in walk(mediastore_client, "missing")] == []


async def test_walk_survives_failed_pages(mediastore_server: Any, mediastore_client: Any) -> None:
    for i in range(6):
        await mediastore_client.put_object(f"p/q/f{i}", b"1")
    # More failures in a row than one page call retries: the page is asked again on its own.
    mediastore_server.faults.inject("503", method="GET", path="", times=9)
    policy = RetryPolicy(max_attempts=3, backoff_initial=0.001, backoff_max=0.01)
    found = [o.relative_path async for o in walk(mediastore_client, "p", page_size=2, retry=policy)]
    assert sorted(found) == [f"q/f{i}" for i in range(6)]
    assert len(mediastore_server.faults.history) == 9


async def test_walk_relists_a_folder_when_its_token_expired(
    mediastore_server: Any, mediastore_client: Any
) -> None:
    for i in range(5):
        await mediastore_client.put_object(f"t/f{i}", b"1")
    base = time.time()
    calls = 0

    def clock() -> float:
        # The first token is issued now and read 16 minutes later: expired.
        nonlocal calls
        calls += 1
        return base + (16 * 60 if calls >= 2 else 0)

    mediastore_server.token_clock = clock
    found = [o.relative_path async for o in walk(mediastore_client, "t", page_size=2)]
    assert sorted(found) == [f"f{i}" for i in range(5)]
    assert calls >= 4  # the folder was listed again from its start


# --- upload and sync up ------------------------------------------------------------------


async def test_upload_tree_verifies_types_and_reports_bad_names(
    mediastore_client: Any, tmp_path: Path
) -> None:
    make_tree(tmp_path, {**TREE, "bad name.txt": b"x", "caf\u00e9.ts": b"y"})
    events: list[TransferEvent] = []
    report = await upload_tree(mediastore_client, tmp_path, "up", progress=events.append)
    assert sorted(report.transferred) == sorted(TREE)
    assert sorted(f.path for f in report.failed) == ["bad name.txt", "caf\u00e9.ts"]
    assert all(f.error.rule == "path.characters" for f in report.failed)  # type: ignore[attr-defined]
    assert not report.ok
    plan = [e for e in events if e.kind == "plan"]
    assert len(plan) == 1 and plan[0].files == len(TREE)
    assert sorted(e.path for e in events if e.kind == "done") == sorted(TREE)
    info = await mediastore_client.describe_object("up/x/b.ts")
    assert info.content_type == "video/MP2T"
    for rel, data in TREE.items():
        assert await mediastore_client.get_bytes(f"up/{rel}") == data


async def test_sync_notices_an_object_changed_by_someone_else(
    mediastore_client: Any, tmp_path: Path
) -> None:
    make_tree(tmp_path, TREE)
    assert sorted((await sync(mediastore_client, tmp_path, "ms:s")).transferred) == sorted(TREE)
    assert (await sync(mediastore_client, tmp_path, "ms:s")).transferred == []
    # Same bytes, new version: the ETag differs from the record, so it is sent again.
    await mediastore_client.put_object("s/a.txt", b"Z")
    report = await sync(mediastore_client, tmp_path, "ms:s")
    assert report.transferred == ["a.txt"]
    assert await mediastore_client.get_bytes("s/a.txt") == b"a"


async def test_sync_up_with_a_lost_record_sends_everything(
    mediastore_client: Any, tmp_path: Path
) -> None:
    make_tree(tmp_path, TREE)
    await sync(mediastore_client, tmp_path, "ms:lost")
    for file in default_record_dir().iterdir():
        file.unlink()
    report = await sync(mediastore_client, tmp_path, "ms:lost")
    assert sorted(report.transferred) == sorted(TREE)  # a full compare, never a wrong skip


async def test_sync_up_with_a_corrupt_record_never_skips_wrongly(
    mediastore_client: Any, tmp_path: Path
) -> None:
    make_tree(tmp_path, TREE)
    await sync(mediastore_client, tmp_path, "ms:c")
    (tmp_path / "a.txt").write_bytes(b"b")  # same size, other bytes
    (record,) = default_record_dir().iterdir()
    record.write_text("{not json")
    report = await sync(mediastore_client, tmp_path, "ms:c")
    assert "a.txt" in report.transferred
    assert await mediastore_client.get_bytes("c/a.txt") == b"b"


async def test_dry_run_and_delete(mediastore_client: Any, tmp_path: Path) -> None:
    make_tree(tmp_path, TREE)
    await sync(mediastore_client, tmp_path, "ms:d")
    (tmp_path / "a.txt").unlink()
    (tmp_path / "new.txt").write_bytes(b"n")
    dry = await sync(mediastore_client, tmp_path, "ms:d", DRY, delete=True)
    assert dry.transferred == ["new.txt"] and dry.deleted == ["a.txt"] and dry.dry_run
    remote = sorted([o.relative_path async for o in walk(mediastore_client, "d")])
    assert remote == sorted(TREE)
    real = await sync(mediastore_client, tmp_path, "ms:d", delete=True)
    assert real.transferred == ["new.txt"] and real.deleted == ["a.txt"]
    remote = sorted([o.relative_path async for o in walk(mediastore_client, "d")])
    assert remote == sorted(read_tree(tmp_path))


async def test_fail_fast_stops_at_the_first_failure(
    mediastore_client: Any, tmp_path: Path
) -> None:
    make_tree(tmp_path, {"bad name": b"1", **{f"f{i}": b"1" for i in range(5)}})
    report = await upload_tree(
        mediastore_client, tmp_path, "ff", TransferOptions(fail_fast=True)
    )
    assert [f.path for f in report.failed] == ["bad name"]
    assert report.transferred == []
    assert [o async for o in walk(mediastore_client, "ff")] == []


async def test_oversize_file_is_reported_before_sending(
    mediastore_server: Any, mediastore_client: Any, tmp_path: Path, server_requests: Any
) -> None:
    sparse_file(tmp_path / "huge.bin", mediastore_client.standard_limit + 1)
    (tmp_path / "ok.bin").write_bytes(b"ok")
    report = await upload_tree(mediastore_client, tmp_path, "big")
    assert report.transferred == ["ok.bin"]
    assert [(f.path, type(f.error).__name__) for f in report.failed] == [
        ("huge.bin", "ObjectTooLargeError")
    ]
    assert not any("huge.bin" in r.getMessage() for r in server_requests)


# --- download ----------------------------------------------------------------------------


async def test_download_sync_compares_without_a_record_and_keeps_identical_files(
    mediastore_client: Any, tmp_path: Path
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src, TREE)
    await upload_tree(mediastore_client, src, "dl", TransferOptions(record=False))
    make_tree(dst, TREE)
    (dst / "a.txt").write_bytes(b"q")  # same size, other bytes
    before = {rel: stat_of(dst / rel) for rel in TREE}
    report = await sync(mediastore_client, "ms:dl", dst)
    assert report.transferred == ["a.txt"]
    assert report.compared == len(TREE) - 1
    assert read_tree(dst) == TREE
    for rel in TREE:
        if rel != "a.txt":  # identical files were left untouched
            assert stat_of(dst / rel) == before[rel]
    again = await sync(mediastore_client, "ms:dl", dst)
    assert again.transferred == [] and again.bytes_transferred == 0 and again.compared == 0


async def test_a_failed_download_leaves_no_file_under_its_name(
    mediastore_server: Any, mediastore_client: Any, tmp_path: Path
) -> None:
    await mediastore_client.put_object("cut/a.bin", os.urandom(50_000))
    await mediastore_client.put_object("cut/b.bin", b"fine")
    mediastore_server.faults.inject("cut-download", method="GET", path="cut/a.bin", times=None)
    report = await download_tree(
        mediastore_client, "cut", tmp_path, TWICE
    )
    assert report.transferred == ["b.bin"]
    assert [f.path for f in report.failed] == ["a.bin"]
    assert files_in(tmp_path) == ["b.bin"]


async def test_large_download_in_parts_resumes_after_an_interruption(
    mediastore_server: Any,
    mediastore_client: Any,
    tmp_path: Path,
    server_requests: list[logging.LogRecord],
) -> None:
    data = random.Random(1).randbytes(2 * PART_SIZE + 12345)  # three parts
    await mediastore_client.put_object("lg/movie.mp4", data)
    # Two of the three ranged GETs hang; the interruption comes when the third is written.
    mediastore_server.faults.inject("delay", method="GET", path="lg/movie.mp4", times=2, delay=60)
    state_file = tmp_path / ".movie.mp4.msdpart.json"

    async def stop_when_a_part_is_saved(scope: anyio.CancelScope) -> None:
        for _ in range(6000):  # up to a minute: the part is written in a worker thread
            if exists(state_file):
                break
            await anyio.sleep(0.01)
        scope.cancel()

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(stop_when_a_part_is_saved, scope)
            await download_tree(mediastore_client, "lg", tmp_path)
    assert scope.cancelled_caught
    assert not (tmp_path / "movie.mp4").exists()
    state = json.loads((tmp_path / ".movie.mp4.msdpart.json").read_text())
    done = len(state["parts"])
    assert done == 1
    server_requests.clear()
    report = await download_tree(mediastore_client, "lg", tmp_path)
    assert report.transferred == ["movie.mp4"], report.failed
    assert (tmp_path / "movie.mp4").read_bytes() == data
    ranged = [r for r in server_requests if r.getMessage().startswith("GET /lg/movie.mp4 206")]
    assert len(ranged) == 3 - done  # only the missing parts were fetched
    assert files_in(tmp_path) == ["movie.mp4"]


# --- shards ------------------------------------------------------------------------------


def test_shards_partition_paths_stably() -> None:
    paths = [f"d{i % 7}/f{i}.ts" for i in range(500)]
    for n in (1, 2, 5):
        owners = [[i for i in range(n) if in_shard(p, (i, n))] for p in paths]
        assert all(len(o) == 1 for o in owners)
    # Stable across processes and machines: a fixed value, not Python's salted hash().
    assert shard_of("d0/f0.ts", 1000) == int.from_bytes(
        __import__("hashlib").sha256(b"d0/f0.ts").digest()[:8], "big"
    ) % 1000
    counts = [sum(in_shard(p, (i, 5)) for p in paths) for i in range(5)]
    assert min(counts) > 60  # roughly even


@pytest.mark.parametrize("bad", [(1, 1), (-1, 2), (0, 0), (True, 2), "0/2", (0, 1, 2)])
def test_bad_shards_are_refused(bad: Any) -> None:
    with pytest.raises(InvalidParameterError, match="shard"):
        check_shard(bad)


async def test_sharded_workers_share_one_record_directory(
    mediastore_client: Any, tmp_path: Path
) -> None:
    make_tree(tmp_path, {f"f{i}": str(i).encode() for i in range(20)})
    done: list[str] = []
    for i in range(3):
        options = TransferOptions(shard=(i, 3))
        done += (await sync(mediastore_client, tmp_path, "ms:sh", options)).transferred
    assert sorted(done) == sorted(f"f{i}" for i in range(20))
    assert len(list(default_record_dir().iterdir())) == 3
    # Re-sharded (or unsharded), the shards' records still say everything is in sync.
    assert (await sync(mediastore_client, tmp_path, "ms:sh")).transferred == []


async def test_sync_needs_exactly_one_remote_side(mediastore_client: Any, tmp_path: Path) -> None:
    with pytest.raises(InvalidParameterError, match="ms:FOLDER"):
        await sync(mediastore_client, tmp_path, tmp_path)
    with pytest.raises(InvalidParameterError, match="ms:FOLDER"):
        await sync(mediastore_client, "ms:a", "ms:b")


async def test_a_failing_part_of_a_large_download_is_a_reported_failure(
    mediastore_server: Any, mediastore_client: Any, tmp_path: Path
) -> None:
    data = random.Random(2).randbytes(PART_SIZE + 100)  # two parts
    await mediastore_client.put_object("lf/big.bin", data)
    await mediastore_client.put_object("lf/small.bin", b"ok")
    mediastore_server.faults.inject("500", method="GET", path="lf/big.bin", times=None)
    report = await download_tree(
        mediastore_client, "lf", tmp_path, TWICE
    )
    assert report.transferred == ["small.bin"]
    (failure,) = report.failed
    assert failure.path == "big.bin" and type(failure.error).__name__ == "ServerError"
    # No file under the final name; the parts done wait, hidden, for the next attempt.
    assert files_in(tmp_path) == [".big.bin.msdpart", "small.bin"]
    mediastore_server.faults.clear()
    again = await download_tree(mediastore_client, "lf", tmp_path)
    assert sorted(again.transferred) == ["big.bin", "small.bin"]
    assert (tmp_path / "big.bin").read_bytes() == data
    assert files_in(tmp_path) == ["big.bin", "small.bin"]


async def test_a_progress_hook_error_reaches_the_caller_unchanged(
    mediastore_client: Any, tmp_path: Path
) -> None:
    make_tree(tmp_path, TREE)

    def hook(event: TransferEvent) -> None:
        if event.kind == "done":
            raise KeyError("from the hook")

    with pytest.raises(KeyError, match="from the hook"):
        await upload_tree(mediastore_client, tmp_path, "hook", progress=hook)


async def test_a_listing_that_keeps_failing_raises_its_error(
    mediastore_server: Any, mediastore_client: Any, tmp_path: Path
) -> None:
    from msd_async import ServerError

    await mediastore_client.put_object("lx/a", b"1")
    mediastore_server.faults.inject("500", method="GET", path="", times=None)
    with pytest.raises(ServerError):
        await sync(mediastore_client, "ms:lx", tmp_path, TransferOptions(retry=FAST))
