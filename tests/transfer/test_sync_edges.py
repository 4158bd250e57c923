"""Sync edges in process: an object that vanishes mid-run, downloaded files' mtimes."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import anyio
import pytest

from msd_async.transfer import TransferEvent, download_tree, sync

pytestmark = pytest.mark.anyio


def names_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


async def test_an_object_deleted_after_the_listing_is_skipped_and_reported(
    mediastore_server: Any, mediastore_client: Any, tmp_path: Path
) -> None:
    await mediastore_client.put_object("rot/seg1.ts", b"1" * 100)
    await mediastore_client.put_object("rot/seg2.ts", b"2" * 100)

    def rotate_after_listing(event: TransferEvent) -> None:
        # Between the listing and the downloads, a live window rotates seg1 out (straight
        # in the server's store: no await between the two).
        if event.kind == "plan":
            mediastore_server.store.delete("rot/seg1.ts")

    report = await download_tree(
        mediastore_client, "rot", tmp_path, progress=rotate_after_listing
    )
    assert report.ok, report.failed
    assert report.transferred == ["seg2.ts"]
    assert report.vanished == ["seg1.ts"]
    assert names_in(tmp_path) == ["seg2.ts"]



async def test_a_file_deleted_after_the_scan_is_skipped_and_reported(
    mediastore_client: Any, tmp_path: Path
) -> None:
    """The upload's mirror of the above: a packager rotates old segments out of its local
    window, or an overlapping ``sync --delete`` down removes a file, between the scan and
    its upload. It was a failure (a bare ``FileNotFoundError``, the run not ok, cron's exit
    status an error) for a file there is nothing left to upload of."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "seg1.ts").write_bytes(b"1" * 100)
    (src / "seg2.ts").write_bytes(b"2" * 100)

    def rotate_after_scan(event: TransferEvent) -> None:
        if event.kind == "plan":
            (src / "seg1.ts").unlink()

    report = await sync(mediastore_client, src, "ms:rotup", progress=rotate_after_scan)
    assert report.ok, report.failed
    assert report.transferred == ["seg2.ts"]
    assert report.vanished == ["seg1.ts"]
    assert [i.name async for i in mediastore_client.list_items("rotup")] == ["seg2.ts"]


async def test_a_link_whose_target_goes_after_the_scan_is_still_a_failure(
    mediastore_client: Any, tmp_path: Path
) -> None:
    """Not so a link whose target went missing (a disk unmounted meanwhile): what is
    there is unknown, not gone, as when the scan finds it so."""
    src = tmp_path / "src"
    src.mkdir()
    disk = tmp_path / "disk"
    (disk / "media").mkdir(parents=True)
    (disk / "t.ts").write_bytes(b"t" * 100)
    (disk / "media" / "m.ts").write_bytes(b"m" * 100)
    (src / "link.ts").symlink_to(disk / "t.ts")
    (src / "media").symlink_to(disk / "media")

    def unmount_after_scan(event: TransferEvent) -> None:
        if event.kind == "plan":
            shutil.rmtree(disk)

    report = await sync(mediastore_client, src, "ms:rotlink", progress=unmount_after_scan)
    assert report.vanished == []
    assert sorted(f.path for f in report.failed) == ["link.ts", "media/m.ts"]
    for failure in report.failed:
        assert "symbolic link whose target does not exist" in str(failure.error), (
            failure.message
        )

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


# --- filters and options -----------------------------------------------------------------


def test_filter_rules_first_match_decides_and_includes_narrow() -> None:
    from msd_async.transfer import PathFilter

    f = PathFilter([("exclude", "logs/"), ("include", "*.ts"), ("include", "vod/**/*.m4s")])
    assert not f.selects("logs/a.ts")  # the exclude came first
    assert f.selects("a.ts") and f.selects("x/y/b.ts")
    assert f.selects("vod/1/2/s.m4s") and not f.selects("old/vod/s.m4s")
    assert not f.selects("readme.txt")  # an include was given: only what it matches
    g = PathFilter([("exclude", "bad name.txt")])
    assert not g.selects("bad name.txt") and not g.selects("d/bad name.txt")
    assert g.selects("good.txt")
    assert PathFilter([]).selects("anything/at/all")


@pytest.mark.parametrize(
    "rules",
    [[("exclude", "")], [("exclude", "!x")], [("exclude", "# c")], [("keep", "x")], ["x"]],
)
def test_bad_filter_rules_are_refused(rules: Any) -> None:
    from msd_async import InvalidParameterError
    from msd_async.transfer import TransferOptions

    with pytest.raises(InvalidParameterError) as caught:
        TransferOptions(filters=rules).check()
    assert caught.value.rule == "transfer.filter"


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [("concurrency", 0, "transfer.concurrency"), ("file_attempts", 0, "transfer.file-attempts"),
     ("shard", (2, 2), "transfer.shard")],
)
def test_bad_options_are_refused(field: str, value: object, rule: str) -> None:
    from msd_async import InvalidParameterError
    from msd_async.transfer import TransferOptions

    with pytest.raises(InvalidParameterError) as caught:
        TransferOptions(**{field: value}).check()  # type: ignore[arg-type]
    assert caught.value.rule == rule


def test_the_own_names_predicate() -> None:
    from msd_async.transfer import is_own

    for own in (".a.ts.msdpart", ".a.ts.msdpart.json", ".a.ts.msdpart.json.tmp",
                "notes.msdpart", "d/.x.msdpart", ".msd-sync/k.0-of-1.json"):
        assert is_own(own), own
    for not_own in ("a.ts", "msdpart", "d/.msd-sync/x", "a.msdpart.txt"):
        assert not is_own(not_own), not_own


async def test_an_upload_with_delete_from_an_empty_folder_is_refused(
    mediastore_client: Any, tmp_path: Path
) -> None:
    """A folder that holds no file (an unmounted disk's mount point, a mistyped path that
    exists) is no evidence that the container should be emptied: as a download from a
    container folder with no object, it is refused and nothing is done."""
    from msd_async.errors import InvalidParameterError
    from msd_async.transfer import sync

    await mediastore_client.put_object("www/a.txt", b"a")
    await mediastore_client.put_object("www/sub/b.txt", b"b")
    empty = tmp_path / "mnt"
    (empty / "sub").mkdir(parents=True)  # folders, and no file in any of them
    with pytest.raises(InvalidParameterError, match="holds no file") as caught:
        await sync(mediastore_client, empty, "ms:www", delete=True)
    assert caught.value.rule == "transfer.source-empty"
    assert sorted([i.name async for i in mediastore_client.list_items("www")]) == [
        "a.txt", "sub"
    ]
    # Nor is a folder that holds only what an interrupted download into it left (the
    # tool's own names, never uploaded): the wrong way round, it emptied the container.
    (empty / "sub" / ".b.txt.msdpart").write_bytes(b"half")
    (empty / ".msd-sync").mkdir()
    (empty / ".msd-sync" / "k.0-of-1.json").write_bytes(b"{}")
    with pytest.raises(InvalidParameterError, match="holds no file"):
        await sync(mediastore_client, empty, "ms:www", delete=True)
    assert sorted([i.name async for i in mediastore_client.list_items("www")]) == [
        "a.txt", "sub"
    ]
    # Without delete, or from a folder with any file, it goes on as before.
    report = await sync(mediastore_client, empty, "ms:www")
    assert report.ok and report.deleted == []
    (empty / "sub" / "b.txt").write_bytes(b"b")
    report = await sync(mediastore_client, empty, "ms:www", delete=True)
    assert report.ok and report.deleted == ["a.txt"]


async def test_a_record_folder_inside_the_tree_is_no_file_of_the_tree(
    mediastore_client: Any, tmp_path: Path
) -> None:
    """A record folder chosen inside the local root is the tool's own: never uploaded,
    never deleted by a download's ``delete``, and no evidence that the folder holds files.
    It counted as one for the ``transfer.source-empty`` refusal: a download destination
    holding only its record (its files removed by hand), synced the wrong way round with
    ``delete``, emptied the container folder."""
    from msd_async.errors import InvalidParameterError
    from msd_async.transfer import TransferOptions

    await mediastore_client.put_object("rec/a.txt", b"a")
    await mediastore_client.put_object("rec/sub/b.txt", b"b")
    for root, inside in (
        (tmp_path / "a", tmp_path / "a" / "state" / "records"),  # a folder inside
        (tmp_path / "b", tmp_path / "b"),  # the root itself
    ):
        options = TransferOptions(record_dir=inside)
        report = await sync(mediastore_client, "ms:rec", root, options, delete=True)
        assert report.ok and sorted(report.transferred) == ["a.txt", "sub/b.txt"]
        assert list(inside.glob("*.jsonl")), "the download was recorded"
        # Nothing of the record is uploaded, nor deleted the other way.
        report = await sync(mediastore_client, root, "ms:rec", options, delete=True)
        assert report.ok and report.transferred == [] and report.deleted == [], report
        report = await sync(mediastore_client, "ms:rec", root, options, delete=True)
        assert report.ok and report.deleted == [], report.deleted
        assert list(inside.glob("*.jsonl"))
        # The files gone, the record left: refused, not an emptied container.
        (root / "a.txt").unlink()
        (root / "sub" / "b.txt").unlink()
        with pytest.raises(InvalidParameterError, match="holds no file") as caught:
            await sync(mediastore_client, root, "ms:rec", options, delete=True)
        assert caught.value.rule == "transfer.source-empty"
        assert sorted([i.name async for i in mediastore_client.list_items("rec")]) == [
            "a.txt", "sub"
        ]


async def test_the_record_reached_through_a_link_is_never_uploaded(
    mediastore_client: Any, tmp_path: Path
) -> None:
    """An upload follows links to folders, and the record's folder reached through one
    (``alias`` to the folder holding it inside the tree, ``cache`` to a cache folder
    outside) was uploaded under the link's name: the record's files, endpoint, paths and
    hashes, into the container. Only the record's own files are left out, not what else
    the folder holds."""
    from msd_async.transfer import TransferOptions, walk

    root = tmp_path / "site"
    (root / "state").mkdir(parents=True)
    (root / "alias").symlink_to(root / "state", target_is_directory=True)
    cache = tmp_path / "cache"
    (cache / "msd").mkdir(parents=True)
    (cache / "msd" / "notes.txt").write_bytes(b"mine")
    (root / "cache").symlink_to(cache, target_is_directory=True)
    for records, prefix in ((root / "state" / "records", "in"), (cache / "msd", "out")):
        options = TransferOptions(record_dir=records)
        (root / "a.txt").write_bytes(b"a")
        await sync(mediastore_client, root, f"ms:{prefix}", options)
        assert list(records.glob("*.jsonl")), "the first run was recorded"
        (root / "a.txt").write_bytes(b"b")  # something to record on the second run
        report = await sync(mediastore_client, root, f"ms:{prefix}", options)
        assert report.ok, report.failed
        assert report.transferred == ["a.txt"], report.transferred
        stored = sorted([o.relative_path async for o in walk(mediastore_client, prefix)])
        assert stored == ["a.txt", "cache/msd/notes.txt"], stored
        shutil.rmtree(root / "state" / "records", ignore_errors=True)
