"""A download never writes through a link planted at one of its temporary names.

A download writes ``.NAME.msdpart`` (and, for a ranged one, ``.NAME.msdpart.json`` by way
of ``.NAME.msdpart.json.tmp``) next to the final file. In a folder others can write to, a
symlink planted there made the download write the object's bytes wherever it pointed,
with the permissions of whoever ran the sync. The temporary names are the download's own:
what is there is replaced, never followed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from msd_async.transfer import download_tree

pytestmark = pytest.mark.anyio

SMALL = b"s" * 1000
LARGE = os.urandom(9 * 1024 * 1024)  # over PART_SIZE (8 MiB): a ranged download


def _plant(folder: Path, name: str, victim: Path) -> None:
    os.symlink(victim, folder / name)


@pytest.mark.parametrize(
    "planted",
    [".small.bin.msdpart", ".large.bin.msdpart", ".large.bin.msdpart.json.tmp"],
)
async def test_a_planted_link_is_replaced_not_followed(
    mediastore_client: Any, tmp_path: Path, planted: str
) -> None:
    await mediastore_client.put_object("d/small.bin", SMALL)
    await mediastore_client.put_object("d/large.bin", LARGE)
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    site = tmp_path / "site"
    site.mkdir()
    _plant(site, planted, victim)
    report = await download_tree(mediastore_client, "d", site)
    assert report.ok, report.failed
    assert victim.read_bytes() == b"precious"
    assert (site / "small.bin").read_bytes() == SMALL
    assert (site / "large.bin").read_bytes() == LARGE
    # A ranged download's resumable parts file has a name known in advance, so a link
    # there is replaced; a small download's temporary name is random (never the planted
    # one), and the link is left alone, pointing where it did.
    links = [p.name for p in site.iterdir() if p.is_symlink()]
    assert links == ([planted] if planted.startswith(".small") else [])


async def test_a_planted_hard_link_is_replaced_not_written_through(
    mediastore_client: Any, tmp_path: Path
) -> None:
    """A hard link at ``.NAME.msdpart`` is a regular file: since downloads claim (open
    and lock) that file instead of creating it afresh, the object's bytes went into
    whatever file it was a second name of, and that file was then renamed into place.
    A file with another name is nobody's download: it is replaced."""
    await mediastore_client.put_object("h/large.bin", LARGE)
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    site = tmp_path / "site"
    site.mkdir()
    os.link(victim, site / ".large.bin.msdpart")
    report = await download_tree(mediastore_client, "h", site)
    assert report.ok, report.failed
    assert victim.read_bytes() == b"precious"
    assert (site / "large.bin").read_bytes() == LARGE
    assert victim.stat().st_nlink == 1


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="gives a file to another user"
)
async def test_a_file_of_another_user_at_the_parts_name_is_replaced(
    mediastore_client: Any, tmp_path: Path
) -> None:
    """A file another user left (or planted, writable by all) at ``.NAME.msdpart``, with
    no part state to resume, was claimed and written in place: that user could change
    it between its hash and its rename, and the file stored under the final name stayed
    theirs. Only a file of the user running the download is resumed or reused."""
    await mediastore_client.put_object("o/large.bin", LARGE)
    site = tmp_path / "site"
    site.mkdir()
    planted = site / ".large.bin.msdpart"
    planted.write_bytes(b"theirs")
    os.chmod(planted, 0o666)
    os.chown(planted, 65534, 65534)
    report = await download_tree(mediastore_client, "o", site)
    assert report.ok, report.failed
    final = site / "large.bin"
    assert final.read_bytes() == LARGE
    assert final.stat().st_uid == os.geteuid()
