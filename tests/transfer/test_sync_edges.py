"""Sync edges in process: an object that vanishes mid-run, downloaded files' mtimes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from msd_async.transfer import TransferEvent, download_tree

pytestmark = pytest.mark.anyio


def names_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


async def test_an_object_deleted_after_the_listing_is_skipped_and_reported(
    mediastore_server: Any, mediastore_client: Any, tmp_path: Path
) -> None:
    await mediastore_client.put_object("rot/seg1.ts", b"1" * 100)
    await mediastore_client.put_object("rot/seg2.ts", b"2" * 100)
    # seg1's GET waits; meanwhile a live window rotates it out.
    mediastore_server.faults.inject("delay", method="GET", path="rot/seg1.ts", delay=1.0)
    planned = anyio.Event()

    def hook(event: TransferEvent) -> None:
        if event.kind == "plan":
            planned.set()

    async def rotate() -> None:
        await planned.wait()
        await mediastore_client.delete_object("rot/seg1.ts")

    async with anyio.create_task_group() as tg:
        tg.start_soon(rotate)
        report = await download_tree(mediastore_client, "rot", tmp_path, progress=hook)
    assert report.ok, report.failed
    assert report.transferred == ["seg2.ts"]
    assert report.vanished == ["seg1.ts"]
    assert names_in(tmp_path) == ["seg2.ts"]


async def test_downloaded_files_get_the_objects_last_modified(
    mediastore_client: Any, tmp_path: Path
) -> None:
    await mediastore_client.put_object("mt/a.txt", b"a")
    await mediastore_client.put_object("mt/big.bin", b"b" * (9 * 1024 * 1024))  # ranged parts
    await anyio.sleep(1.1)  # LastModified has whole seconds; the files are written later
    report = await download_tree(mediastore_client, "mt", tmp_path)
    assert report.ok, report.failed
    for name in ("a.txt", "big.bin"):
        info = await mediastore_client.describe_object(f"mt/{name}")
        assert (tmp_path / name).stat().st_mtime == info.last_modified.timestamp(), name
