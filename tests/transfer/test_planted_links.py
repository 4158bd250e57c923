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
