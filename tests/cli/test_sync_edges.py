"""``msd sync`` at its edges, as a user meets them: refusals that keep data, the tool's own
names, leftovers, filters, where the record lives, signals and the progress display."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from msd_process import msd
from serve_process import MSD
from serve_process import ServeProcess as Server

from msd_async.testing import LocalMediaStore


def make_tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = root.joinpath(*rel.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def tree_of(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()
    }


def remote_paths(server: Server, prefix: str) -> list[str]:
    result = server.run("ls", "-r", "--json", prefix)
    if result.returncode == 1 and "no folder" in result.stderr:
        return []  # nothing stored yet
    assert result.returncode == 0, result.stderr
    return sorted(str(row["path"]) for row in json.loads(result.stdout))


def sync_json(server: Server, *args: str) -> tuple[int, dict[str, object], str]:
    result = server.run("sync", *args, "--json")
    report = json.loads(result.stdout) if result.stdout.strip() else {}
    return result.returncode, report, result.stderr


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("msd sync: ")
    return lines[0]


# --- item 1: --delete never empties a tree by a typo; --max-delete ------------------------


def test_download_delete_from_a_missing_folder_is_refused(server: Server, tmp_path: Path) -> None:
    files = {"a.txt": b"a", "x/b.txt": b"b"}
    make_tree(tmp_path, files)
    assert server.run("put", str(tmp_path / "a.txt"), "real/a.txt").returncode == 0
    line = one_error_line(server.run("sync", "ms:reel", str(tmp_path), "--delete"))
    assert "ms:reel" in line and "--delete" in line
    assert tree_of(tmp_path) == files  # nothing deleted


def test_max_delete_refuses_before_changing_anything(server: Server, tmp_path: Path) -> None:
    make_tree(tmp_path, {f"f{i}.txt": b"x" for i in range(5)})
    assert server.run("sync", str(tmp_path), "ms:md").returncode == 0
    for i in range(3):
        (tmp_path / f"f{i}.txt").unlink()
    (tmp_path / "new.txt").write_bytes(b"n")
    line = one_error_line(
        server.run("sync", str(tmp_path), "ms:md", "--delete", "--max-delete", "2")
    )
    assert "--max-delete 2" in line and "3" in line
    assert remote_paths(server, "md") == [f"md/f{i}.txt" for i in range(5)]  # nothing sent
    code, report, stderr = sync_json(
        server, str(tmp_path), "ms:md", "--delete", "--max-delete", "3"
    )
    assert code == 0, stderr
    assert report["deleted"] == ["f0.txt", "f1.txt", "f2.txt"]
    assert remote_paths(server, "md") == ["md/f3.txt", "md/f4.txt", "md/new.txt"]


# --- item 2 and 3: the tool's own names on both sides; leftovers cleaned ----------------


def test_the_tools_own_names_are_never_transferred_or_deleted(
    server: Server, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    make_tree(src, {"keep.txt": b"k", ".x.ts.msdpart.json.tmp": b"{}", "y.msdpart": b"p"})
    for name in ("own/notes.msdpart", "own/.msd-sync/0.json", "own/.z.msdpart.json"):
        assert server.run("put", str(src / "keep.txt"), name).returncode == 0
    code, report, stderr = sync_json(server, str(src), "ms:own", "--delete")
    assert code == 0, stderr
    assert report["transferred"] == ["keep.txt"] and report["deleted"] == []
    assert remote_paths(server, "own") == [
        "own/.msd-sync/0.json", "own/.z.msdpart.json", "own/keep.txt", "own/notes.msdpart"
    ]
    dst = tmp_path / "dst"
    code, report, stderr = sync_json(server, "ms:own", str(dst))
    assert code == 0, stderr
    assert tree_of(dst) == {"keep.txt": b"k"}


def test_a_delete_run_removes_leftover_partial_downloads(server: Server, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, {"a.txt": b"a"})
    assert server.run("sync", str(src), "ms:left").returncode == 0
    dst = tmp_path / "dst"
    make_tree(dst, {".gone.bin.msdpart": b"\0" * 20_000, ".gone.bin.msdpart.json": b"{}",
                    "d/.x.ts.msdpart.json.tmp": b"{", "mine.msdpart": b"not a download"})
    code, _, stderr = sync_json(server, "ms:left", str(dst), "--delete")
    assert code == 0, stderr
    # The user's own file with the suffix is never transferred, and not ours to delete.
    assert tree_of(dst) == {"a.txt": b"a", "mine.msdpart": b"not a download"}


# --- item 6: the record lives in the cache, not in the tree -----------------------------


def test_the_record_lives_in_the_cache_and_a_download_equals_the_container(
    server: Server, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    env = {"XDG_CACHE_HOME": str(cache)}
    src = tmp_path / "src"
    files = {"a.txt": b"a", "x/b.ts": b"b" * 100}
    make_tree(src, files)
    up = server.run("sync", str(src), "ms:rec", "--json", env=env)
    assert up.returncode == 0, up.stderr
    assert tree_of(src) == files  # nothing written into the source
    again = server.run("sync", str(src), "ms:rec", "--json", env=env)
    assert json.loads(again.stdout)["transferred"] == []
    dst = tmp_path / "dst"
    down = server.run("sync", "ms:rec", str(dst), "--json", env=env)
    assert down.returncode == 0, down.stderr
    assert tree_of(dst) == files  # exactly the container: no record folder inside
    assert list((cache / "msd").rglob("*.jsonl"))
    mine = tmp_path / "records"
    chosen = server.run("sync", str(src), "ms:rec", "--record-dir", str(mine), env=env)
    assert chosen.returncode == 0, chosen.stderr
    assert list(mine.rglob("*.jsonl"))


def test_a_record_that_cannot_be_written_is_one_warning(server: Server, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, {f"f{i}.txt": b"x" for i in range(20)})
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    result = server.run("sync", str(src), "ms:unrec", "--record-dir", str(blocker / "sub"))
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("msd sync: warning: "), result.stderr
    assert "record" in lines[0]


# --- item 7: filters ---------------------------------------------------------------------


def test_filters_select_on_both_sides_and_for_delete(server: Server, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(
        src,
        {"bad name.txt": b"1", "a.ts": b"2", "v/b.ts": b"3", "v/c.m3u8": b"4", "logs/l.txt": b"5"},
    )
    code, report, stderr = sync_json(
        server, str(src), "ms:flt", "--exclude", "bad name.txt", "--exclude", "logs/"
    )
    assert code == 0, stderr
    assert report["transferred"] == ["a.ts", "v/b.ts", "v/c.m3u8"]
    # An object the filters exclude is neither downloaded nor deleted.
    assert server.run("put", str(src / "a.ts"), "flt/logs/remote.txt").returncode == 0
    dst = tmp_path / "dst"
    code, report, stderr = sync_json(
        server, "ms:flt", str(dst), "--include", "*.ts", "--delete"
    )
    assert code == 0, stderr
    assert tree_of(dst) == {"a.ts": b"2", "v/b.ts": b"3"}
    (src / "a.ts").unlink()
    code, report, stderr = sync_json(
        server, str(src), "ms:flt", "--delete", "--exclude", "logs/", "--exclude", "bad*"
    )
    assert code == 0, stderr
    assert report["deleted"] == ["a.ts"]
    assert "flt/logs/remote.txt" in remote_paths(server, "flt")


# --- item 5: SIGTERM and SIGINT are a normal stop; the record is written as the run goes --


def _slow_server(serve: Callable[..., Server]) -> Server:
    # Every request waits 0.2 s: a 60-file sync at concurrency 2 takes about 6 s.
    return serve("--fault-rate", "1", "--fault-kinds", "delay", "--fault-delay", "0.2")


def _start_sync(server: Server, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [MSD, "sync", *args, "--concurrency", "2", "--json"],
        env=server.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_objects(server: Server, prefix: str, at_least: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len(remote_paths(server, prefix)) < at_least:
        assert time.monotonic() < deadline, "the sync made no progress"
        time.sleep(0.2)


def test_sigterm_and_sigint_stop_save_and_report(
    serve: Callable[..., Server], tmp_path: Path
) -> None:
    server = _slow_server(serve)
    src = tmp_path / "src"
    make_tree(src, {f"f{i:02d}.txt": str(i).encode() for i in range(60)})
    for sig, code, prefix in ((signal.SIGTERM, 143, "term"), (signal.SIGINT, 130, "int")):
        process = _start_sync(server, str(src), f"ms:{prefix}")
        _wait_for_objects(server, prefix, 4)
        process.send_signal(sig)
        out, err = process.communicate(timeout=60)
        assert process.returncode == code, (out, err)
        first = json.loads(out)
        assert first["interrupted"] is True
        done = first["transferred"]
        assert 4 <= len(done) < 60
        assert "Traceback" not in err
        again = server.run("sync", str(src), f"ms:{prefix}", "--json")
        assert again.returncode == 0, again.stderr
        report = json.loads(again.stdout)
        assert sorted(report["transferred"]) == sorted(set(src_names(src)) - set(done))


def src_names(src: Path) -> list[str]:
    return [p.name for p in src.iterdir()]


def test_sigkill_loses_at_most_the_files_in_flight(
    serve: Callable[..., Server], tmp_path: Path
) -> None:
    server = _slow_server(serve)
    src = tmp_path / "src"
    make_tree(src, {f"f{i:02d}.txt": str(i).encode() for i in range(60)})
    process = _start_sync(server, str(src), "ms:kill")
    _wait_for_objects(server, "kill", 6)
    process.kill()
    process.communicate(timeout=30)
    stored = len(remote_paths(server, "kill"))
    again = server.run("sync", str(src), "ms:kill", "--json")
    assert again.returncode == 0, again.stderr
    resent = len(json.loads(again.stdout)["transferred"])
    # Stored before the kill and recorded: not sent again; at most the two in flight were
    # stored but not yet recorded.
    assert resent <= 60 - stored + 2, (resent, stored)


# --- item 10: the progress display costs a bounded number of frames ---------------------


def test_progress_redraws_at_its_own_pace_not_per_file(server: Server, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, {f"d{i % 5}/f{i:03d}.ts": b"x" * 2000 for i in range(300)})
    command = f"{MSD} sync {src} ms:frames"
    start = time.monotonic()
    tty = subprocess.run(
        ["script", "-qec", command, "/dev/null"],
        env={**server.env, "COLUMNS": "100", "TERM": "xterm"},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    wall = time.monotonic() - start
    assert tty.returncode == 0, tty.stdout + tty.stderr
    assert "uploading (300 files)" in tty.stdout
    assert "600.0/600.0 kB" in tty.stdout
    frames = tty.stdout.count("uploading (300 files)")
    # At most the display's refresh rate (4 per second) plus the first and last frames,
    # however many files there are; a frame per file would be over 300.
    assert frames <= 4 * wall + 3, (frames, wall)
    shown = {name for name in (f"f{i:03d}.ts" for i in range(300)) if name in tty.stdout}
    assert len(shown) <= frames * 3 + 3


# --- what vanished between the plan and its transfer ------------------------------------


@pytest.mark.anyio
async def test_what_vanished_mid_run_is_reported_gone_not_failed(
    mediastore_server: LocalMediaStore, tmp_path: Path
) -> None:
    """A file deleted between the scan and its upload (a packager's window rotating), and
    an object deleted between the listing and its download, are counted "gone before",
    and the run exits 0. The server's listing of the folder is the seam: an upload lists
    after its scan, so a local file removed then is one the scan saw; a download's object
    removed right after the listing answered is one the listing named."""
    store = mediastore_server.store
    listed = store.list
    src = tmp_path / "src"
    make_tree(src, {"seg1.ts": b"1" * 100, "seg2.ts": b"2" * 100})

    def rotate(folder: str, **kwargs: Any) -> Any:
        answer = listed(folder, **kwargs)
        if folder == "vz":
            if (src / "seg1.ts").exists():
                (src / "seg1.ts").unlink()
            else:
                store.delete("vz/seg2.ts")
        return answer

    store.list = rotate  # type: ignore[method-assign]
    code, out, err = await msd(mediastore_server, "sync", str(src), "ms:vz")
    assert code == 0, err
    assert err == ""
    assert out.decode().strip() == (
        "upload 1 files (100 bytes), 0 unchanged, delete 0, 0 failed, 1 gone before upload"
    ), out
    assert [v.path for v in store.walk()] == ["vz/seg2.ts"]
    # Downloading: seg2.ts is listed, then deleted before its GET.
    await store.put_bytes("vz/seg3.ts", b"3" * 100)
    dst = tmp_path / "dst"
    code, out, err = await msd(mediastore_server, "sync", "ms:vz", str(dst))
    assert code == 0, err
    assert out.decode().strip() == (
        "download 1 files (100 bytes), 0 unchanged, delete 0, 0 failed, 1 gone before "
        "download"
    ), out
    assert tree_of(dst) == {"seg3.ts": b"3" * 100}


def test_a_download_writes_through_a_folder_link_only_with_keep_dirlinks(
    server: Server, tmp_path: Path
) -> None:
    """docs/cli.md: without --keep-dirlinks the object under the link fails, naming the
    link, and its target is untouched; with it, the object lands in the link's target."""
    make_tree(tmp_path / "src", {"x.ts": b"new"})
    assert server.run("put", str(tmp_path / "src" / "x.ts"), "kd/media/x.ts").returncode == 0
    site, target = tmp_path / "site", tmp_path / "big"
    make_tree(target, {"x.ts": b"precious"})
    site.mkdir()
    (site / "media").symlink_to(target)
    line = one_error_line(server.run("sync", "ms:kd", str(site)))
    assert "media/x.ts" in line and "symbolic link" in line and "--keep-dirlinks" in line
    assert (target / "x.ts").read_bytes() == b"precious"
    result = server.run("sync", "ms:kd", str(site), "--keep-dirlinks")
    assert result.returncode == 0, result.stderr
    assert (target / "x.ts").read_bytes() == b"new" and (site / "media").is_symlink()
