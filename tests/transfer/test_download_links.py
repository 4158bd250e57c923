"""A download never writes through a symbolic link it finds in the local tree.

An object ``linkdir/x``, with ``linkdir`` in the destination a link to a folder, was written
wherever the link pointed: out of the destination tree (another disk, another user's
folder, ``/etc`` for a sync run as root). The scan does not follow such a link, so what
lies under it was never compared or deleted either, only overwritten, on every run. rsync
without ``--keep-dirlinks`` does not write through it either (it replaces the link with a
folder); here the link is left alone and the object is reported as failed, naming the link.

A link AT a file's name (``a/x`` a link to a file elsewhere) is replaced by the downloaded
file when its content differs: the rename of the temporary file replaces the link itself,
and the file it pointed to is untouched.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from msd_async.transfer import TransferOptions, download_tree, sync

pytestmark = pytest.mark.anyio

LARGE = os.urandom(9 * 1024 * 1024)  # over PART_SIZE (8 MiB): a ranged download


@pytest.mark.parametrize("where", ["outside", "inside"])
@pytest.mark.parametrize("dry_run", [False, True])
async def test_an_object_under_a_link_to_a_folder_is_not_written_through_it(
    mediastore_client: Any, tmp_path: Path, where: str, dry_run: bool
) -> None:
    await mediastore_client.put_object("d/linkdir/x.ts", b"new")
    await mediastore_client.put_object("d/deep/linkdir2/y.ts", b"new")
    await mediastore_client.put_object("d/plain.ts", b"plain")
    site = tmp_path / "site"
    site.mkdir()
    target = tmp_path / "elsewhere" if where == "outside" else site / "real"
    target.mkdir()
    (target / "x.ts").write_bytes(b"precious")
    os.symlink(target, site / "linkdir")
    (site / "deep").mkdir()
    os.symlink(target, site / "deep" / "linkdir2")
    report = await download_tree(
        mediastore_client, "d", site, options=TransferOptions(dry_run=dry_run)
    )
    failed = {f.path: f.error for f in report.failed}
    assert sorted(failed) == ["deep/linkdir2/y.ts", "linkdir/x.ts"], report.failed
    for rel, link in (("linkdir/x.ts", "linkdir"), ("deep/linkdir2/y.ts", "linkdir2")):
        error = failed[rel]
        assert isinstance(error, OSError)
        assert link in str(error) and "symbolic link" in str(error)
        assert str(target) in str(error)  # where it leads
    assert (report.transferred or report.skipped) and "plain.ts" not in failed
    assert (target / "x.ts").read_bytes() == b"precious"
    assert sorted(p.name for p in target.iterdir()) == ["x.ts"]  # no y.ts, no temporary
    assert (site / "linkdir").is_symlink() and (site / "deep" / "linkdir2").is_symlink()


async def test_a_sync_with_delete_leaves_a_linked_folder_alone(
    mediastore_client: Any, tmp_path: Path
) -> None:
    await mediastore_client.put_object("s/linkdir/x.ts", b"new")
    site = tmp_path / "site"
    site.mkdir()
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "x.ts").write_bytes(b"precious")
    (target / "other.ts").write_bytes(b"kept")
    os.symlink(target, site / "linkdir")
    report = await sync(mediastore_client, "ms:s", site, delete=True)
    assert [f.path for f in report.failed] == ["linkdir/x.ts"]
    assert report.deleted == []
    assert (target / "x.ts").read_bytes() == b"precious"
    assert (target / "other.ts").read_bytes() == b"kept"
    assert (site / "linkdir").is_symlink()


async def test_a_dangling_link_in_the_way_is_named(
    mediastore_client: Any, tmp_path: Path
) -> None:
    """It failed with a bare FileExistsError from mkdir."""
    await mediastore_client.put_object("g/linkdir/x.ts", b"new")
    site = tmp_path / "site"
    site.mkdir()
    os.symlink(tmp_path / "missing", site / "linkdir")
    report = await download_tree(mediastore_client, "g", site)
    [failure] = report.failed
    assert "linkdir" in str(failure.error) and "symbolic link" in str(failure.error)
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize("size", ["small", "large"])
async def test_a_link_at_the_file_name_is_replaced_not_written_through(
    mediastore_client: Any, tmp_path: Path, size: str
) -> None:
    body = b"new" if size == "small" else LARGE
    await mediastore_client.put_object("f/a/x.bin", body)
    site = tmp_path / "site"
    (site / "a").mkdir(parents=True)
    victim = tmp_path / "victim.bin"
    victim.write_bytes(b"precious")
    os.symlink(victim, site / "a" / "x.bin")
    report = await download_tree(mediastore_client, "f", site)
    assert report.ok, report.failed
    assert report.transferred == ["a/x.bin"]
    assert victim.read_bytes() == b"precious"
    assert not (site / "a" / "x.bin").is_symlink()
    assert (site / "a" / "x.bin").read_bytes() == body


async def test_keep_dirlinks_writes_through_compares_and_deletes_only_where_the_source_has_it(
    mediastore_client: Any, tmp_path: Path
) -> None:
    """The opt-in, as rsync's --keep-dirlinks: a linked folder is the source's folder. Its
    files are compared (a second run moves nothing), and a delete there removes what the
    source lacks; but another link, to a folder the source does not have at all, is not
    the source's folder: deleting "what the source lacks" there emptied the disk it
    pointed to."""
    await mediastore_client.put_object("k/media/x.ts", b"new")
    await mediastore_client.put_object("k/top.ts", b"top")
    site = tmp_path / "site"
    site.mkdir()
    media = tmp_path / "big"
    media.mkdir()
    (media / "old.ts").write_bytes(b"gone from the source")
    os.symlink(media, site / "media")
    other = tmp_path / "other-disk"
    other.mkdir()
    (other / "keep.ts").write_bytes(b"not the source's")
    os.symlink(other, site / "other")
    options = TransferOptions(keep_dirlinks=True)
    report = await sync(mediastore_client, "ms:k", site, options, delete=True)
    assert report.ok, report.failed
    assert sorted(report.transferred) == ["media/x.ts", "top.ts"]
    assert report.deleted == ["media/old.ts"]
    assert (media / "x.ts").read_bytes() == b"new"
    assert not (media / "old.ts").exists()
    assert (other / "keep.ts").read_bytes() == b"not the source's"
    assert (site / "media").is_symlink() and (site / "other").is_symlink()
    again = await sync(mediastore_client, "ms:k", site, options, delete=True)
    assert again.ok and again.transferred == [] and again.deleted == []
    assert sorted(again.skipped) == ["media/x.ts", "top.ts"]


async def test_a_link_to_a_folder_at_the_file_name_is_named_and_kept(
    mediastore_client: Any, tmp_path: Path
) -> None:
    """It said only "is a folder", sending the user to look for a folder that is not
    there; the link and the folder it points to stay as they were."""
    await mediastore_client.put_object("n/a.ts", b"new")
    site = tmp_path / "site"
    site.mkdir()
    target = tmp_path / "elsewhere"
    target.mkdir()
    os.symlink(target, site / "a.ts")
    report = await download_tree(mediastore_client, "n", site)
    [failure] = report.failed
    assert isinstance(failure.error, IsADirectoryError)
    assert "symbolic link" in str(failure.error) and str(target) in str(failure.error)
    assert (site / "a.ts").is_symlink() and list(target.iterdir()) == []
