"""The tree scenario: a 300-file tree up, again, changed, pruned, down, listed, removed."""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Callable
from pathlib import Path

from serve_process import ServeProcess as Server

PREFIX = "tree"
#: Names the API cannot store; each must be reported by name, never renamed.
UNSTORABLE = ["with space.txt", "caf\u00e9.txt", "semi;colon.txt"]
OVERSIZE = "huge.bin"


def build_tree(root: Path) -> dict[str, bytes | None]:
    """300 files; returns relative path -> content (None for the sparse oversize file)."""
    rng = random.Random(11)
    files: dict[str, bytes | None] = {}

    def add(rel: str, data: bytes | None) -> None:
        files[rel] = data

    # Nested to the limit: with the "tree" prefix, 9 local folders make 10 remote ones.
    deep = "/".join(f"d{i}" for i in range(1, 10))
    add(f"{deep}/deepest.txt", b"ten folders deep")
    too_deep = "/".join(f"d{i}" for i in range(1, 11))
    add(f"{too_deep}/too_deep.txt", b"eleven folders deep")
    add("names/k=v.txt", b"equals")
    add("names/a:b.ts", b"colon")
    add("names/~tilde.m4s", b"tilde")
    add("names/x=1:2~3.m3u8", b"#EXTM3U\n")
    add("empty.txt", b"")
    add("big/part.bin", rng.randbytes(9 * 1024 * 1024))  # over 8 MiB: ranged download parts
    add(OVERSIZE, None)
    for name in UNSTORABLE:
        add(f"odd/{name}", name.encode())
    folders = ["live/720p", "live/1080p", "vod/a", "vod/b/c", "img", ""]
    i = 0
    while len(files) < 300:
        folder = folders[i % len(folders)]
        size = rng.choice([0, 1, 100, 1000, 4096, 20_000]) if i % 25 else 150_000
        ext = [".ts", ".m4s", ".txt", ".json", ".bin"][i % 5]
        rel = f"{folder}/f{i:03d}{ext}" if folder else f"f{i:03d}{ext}"
        add(rel, rng.randbytes(size))
        i += 1
    for rel, data in files.items():
        path = root.joinpath(*rel.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        if data is None:
            with open(path, "wb") as f:
                f.truncate(25_000_001)  # sparse: refused by size before anything is read
        else:
            path.write_bytes(data)
    return files


def storable(files: dict[str, bytes | None]) -> dict[str, bytes]:
    return {
        rel: data
        for rel, data in files.items()
        if data is not None and not rel.startswith(("odd/", "d1/d2/d3/d4/d5/d6/d7/d8/d9/d10/"))
    }


def listing(server: Server, prefix: str = PREFIX) -> list[dict[str, object]]:
    result = server.run("ls", "-r", "--json", prefix)
    assert result.returncode == 0, result.stderr
    rows: list[dict[str, object]] = json.loads(result.stdout)
    return rows


def sync_json(server: Server, *args: str) -> tuple[int, dict[str, object], str]:
    result = server.run("sync", *args, "--json")
    return result.returncode, json.loads(result.stdout), result.stderr


def test_tree_up_again_changed_deleted_down_listed_removed(
    server: Server, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    files = build_tree(src)
    assert len(files) == 300
    expected = storable(files)

    # 1. Up: everything storable is stored; the oversize file and each bad name are named.
    code, report, stderr = sync_json(server, str(src), f"ms:{PREFIX}")
    assert code == 1
    failed = {f["path"]: f for f in report["failed"]}  # type: ignore[union-attr]
    too_deep = "/".join(f"d{i}" for i in range(1, 11)) + "/too_deep.txt"
    bad = {f"odd/{n}" for n in UNSTORABLE} | {OVERSIZE, too_deep}
    assert set(failed) == bad
    assert failed[OVERSIZE]["error"] == "ObjectTooLargeError"
    for name in bad:
        assert f"failed: {name}:" in stderr
    assert sorted(report["transferred"]) == sorted(expected)  # type: ignore[arg-type]
    rows = listing(server)
    paths = [r["path"] for r in rows]
    assert len(paths) == len(set(paths))  # each object once
    assert set(paths) == {f"{PREFIX}/{rel}" for rel in expected}  # none renamed, none extra
    sizes = {r["path"]: r["size"] for r in rows}
    assert all(sizes[f"{PREFIX}/{rel}"] == len(data) for rel, data in expected.items())
    assert {r["path"]: r["content_type"] for r in rows}[f"{PREFIX}/names/a:b.ts"] == "video/MP2T"

    # 2. Again: nothing is uploaded.
    code, report, _ = sync_json(server, str(src), f"ms:{PREFIX}")
    assert code == 1  # the same unstorable files fail again
    assert report["transferred"] == []
    assert report["skipped"] == len(expected)

    # 3. Same size, same mtime, other bytes; plus one new file: exactly those two go up.
    changed = src / "vod" / "a" / sorted(p.name for p in (src / "vod" / "a").iterdir())[1]
    rel_changed = f"vod/a/{changed.name}"
    before = changed.stat()
    old = changed.read_bytes()
    new = bytes(b ^ 0xFF for b in old) if old else b""
    assert len(old) > 0 and new != old
    changed.write_bytes(new)
    os.utime(changed, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert changed.stat().st_size == before.st_size
    assert changed.stat().st_mtime_ns == before.st_mtime_ns
    (src / "added.txt").write_bytes(b"new file")
    code, report, _ = sync_json(server, str(src), f"ms:{PREFIX}")
    assert sorted(report["transferred"]) == sorted([rel_changed, "added.txt"])  # type: ignore[arg-type]
    expected[rel_changed] = new
    expected["added.txt"] = b"new file"

    # 4. --delete with --dry-run lists and changes nothing; then --delete deletes.
    gone = ["img/" + sorted(p.name for p in (src / "img").iterdir())[0], "names/k=v.txt"]
    for rel in gone:
        src.joinpath(*rel.split("/")).unlink()
    code, report, _ = sync_json(server, str(src), f"ms:{PREFIX}", "--delete", "--dry-run")
    assert sorted(report["deleted"]) == sorted(gone)  # type: ignore[arg-type]
    assert report["transferred"] == [] and report["dry_run"] is True
    assert len(listing(server)) == len(expected)
    dry = server.run("sync", str(src), f"ms:{PREFIX}", "--delete", "--dry-run")
    assert all(f"would delete: {rel}" in dry.stdout for rel in gone)
    code, report, _ = sync_json(server, str(src), f"ms:{PREFIX}", "--delete")
    assert sorted(report["deleted"]) == sorted(gone)  # type: ignore[arg-type]
    for rel in gone:
        del expected[rel]
    assert {r["path"] for r in listing(server)} == {f"{PREFIX}/{rel}" for rel in expected}

    # 5. Down: byte for byte; again: nothing transferred.
    dst = tmp_path / "dst"
    code, report, stderr = sync_json(server, f"ms:{PREFIX}", str(dst))
    assert code == 0, stderr
    assert sorted(report["transferred"]) == sorted(expected)  # type: ignore[arg-type]
    # Exactly the container: the sync record lives in the cache, not in the tree.
    got = {p.relative_to(dst).as_posix(): p.read_bytes() for p in dst.rglob("*") if p.is_file()}
    assert got.keys() == expected.keys()
    for rel, data in expected.items():
        assert hashlib.sha256(got[rel]).digest() == hashlib.sha256(data).digest(), rel
    code, report, _ = sync_json(server, f"ms:{PREFIX}", str(dst))
    assert code == 0
    assert report["transferred"] == [] and report["bytes_transferred"] == 0
    assert report["skipped"] == len(expected)

    # 6. rm -r removes the tree.
    result = server.run("rm", "-r", PREFIX)
    assert result.returncode == 0, result.stderr
    assert f"deleted {len(expected)} objects" in result.stdout
    empty = server.run("ls", "-r", "--json")
    assert json.loads(empty.stdout) == []


def test_sync_under_injected_faults_verifies_every_object(
    serve: Callable[..., Server], tmp_path: Path
) -> None:
    log = tmp_path / "server.log"
    server = serve("--fault-rate", "0.2", "--fault-seed", "5", "--fault-delay", "0.05", log=log)
    rng = random.Random(3)
    src = tmp_path / "src"
    files = {
        f"s{i % 4}/f{i:02d}.ts": rng.randbytes(rng.choice([10, 5000, 70_000])) for i in range(60)
    }
    for rel, data in files.items():
        path = src / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    code, report, stderr = sync_json(server, str(src), "ms:faulty", "--concurrency", "8")
    assert code == 0, stderr
    assert sorted(report["transferred"]) == sorted(files)  # type: ignore[arg-type]
    # Every object stored is the file's bytes: fetched back (through the same faults) and
    # compared; the download verifies lengths and resumes only onto the same ETag.
    dst = tmp_path / "dst"
    code, report, stderr = sync_json(server, "ms:faulty", str(dst), "--concurrency", "8")
    assert code == 0, stderr
    for rel, data in files.items():
        assert (dst / rel).read_bytes() == data, rel
    # And the listing survived faulted pages: each object once.
    rows = listing(server, "faulty")
    assert sorted(r["path"] for r in rows) == sorted(f"faulty/{rel}" for rel in files)
    # The faults really happened: errors answered, uploads and downloads cut.
    requests = [line for line in log.read_text().splitlines() if " in=" in line]
    failed = [line for line in requests if any(f" {s} in=" in line for s in ("500", "503",
              "400", "aborted"))]
    assert len(requests) > 120 and len(failed) >= 10, (len(requests), len(failed))
