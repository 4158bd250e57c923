"""``msd ls|stat|get|put|rm`` as a user runs them: a subprocess against the local server."""

from __future__ import annotations

from pathlib import Path

import pytest
from msd_process import msd

from msd_async.testing import LocalMediaStore

pytestmark = pytest.mark.anyio


async def test_put_ls_stat_get_rm(mediastore_server: LocalMediaStore, tmp_path: Path) -> None:
    source = tmp_path / "seg.ts"
    source.write_bytes(b"\x47" * 188 * 100)
    code, out, err = await msd(
        mediastore_server, "put", str(source), "live/seg.ts", "--content-type", "video/MP2T"
    )
    assert code == 0, err
    assert out.startswith(b"live/seg.ts  18800 bytes")

    code, out, _ = await msd(mediastore_server, "put", "-", "live/pipe.bin", "--streaming",
                             stdin=b"from stdin")  # fmt: skip
    assert code == 0

    code, out, _ = await msd(mediastore_server, "ls", "live")
    lines = out.decode().splitlines()
    assert [line.split()[-1] for line in lines] == ["pipe.bin", "seg.ts"]
    code, out, _ = await msd(mediastore_server, "ls")
    assert out.decode().split()[-1] == "live/"

    code, out, _ = await msd(mediastore_server, "stat", "live/seg.ts")
    assert "size: 18800" in out.decode()
    assert "content_type: video/MP2T" in out.decode()

    code, out, _ = await msd(mediastore_server, "get", "live/pipe.bin")
    assert (code, out) == (0, b"from stdin")
    code, out, _ = await msd(mediastore_server, "get", "live/seg.ts", "--range", "bytes=0-9")
    assert out == b"\x47" * 10
    target = tmp_path / "copy.ts"
    code, _, _ = await msd(mediastore_server, "get", "live/seg.ts", str(target))
    assert target.read_bytes() == source.read_bytes()

    code, _, _ = await msd(mediastore_server, "rm", "live/seg.ts")
    assert code == 0
    assert mediastore_server.store.get("live/seg.ts") is None


async def test_errors_are_one_line_and_exit_1(mediastore_server: LocalMediaStore) -> None:
    code, _, err = await msd(mediastore_server, "stat", "missing.ts")
    assert code == 1
    assert err.strip() == "msd stat: no object at 'missing.ts' in the container"
    assert "Traceback" not in err

    code, _, err = await msd(mediastore_server, "put", "-", "bad//path", stdin=b"x")
    assert code == 1 and "InvalidPathError" in err and "empty segment" in err
