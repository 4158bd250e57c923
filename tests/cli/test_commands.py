"""Each ``msd`` command's behaviour and its one-line errors, through the real entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from serve_process import MSD, one_line_error
from serve_process import ServeProcess as Server


def test_help_does_not_import_the_client() -> None:
    code = (
        "import sys\n"
        "from msd_async.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in ('aiobotocore', 'aiohttp.client', 'botocore') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert "sync" in result.stdout and "serve" in result.stdout
    assert "HEAVY []" in result.stdout


def test_every_command_and_option_has_help() -> None:
    from msd_async.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    for name, sub in subparsers.choices.items():  # type: ignore[union-attr]
        for action in sub._actions:
            if action.option_strings or action.dest not in ("help",):
                assert action.help, f"msd {name} {action.option_strings or action.dest}"


def test_serve_prints_an_environment_ready_to_paste(server: Server, tmp_path: Path) -> None:
    export = next(x for x in server.lines if x.startswith("export "))
    for name in ("MSD_ENDPOINT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
        assert f"{name}=" in export
    # Pasted into a shell, it is all msd needs.
    script = f"{export}\n{MSD} put {tmp_path / 'f.txt'} via/shell.txt && {MSD} ls via\n"
    (tmp_path / "f.txt").write_text("hello")
    env = {k: v for k, v in server.env.items() if not k.startswith(("AWS_A", "AWS_S", "MSD"))}
    result = subprocess.run(
        ["sh", "-c", script], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "shell.txt"


def test_put_get_stat_ls_presign(server: Server, tmp_path: Path) -> None:
    src = tmp_path / "seg.m4s"
    src.write_bytes(b"x" * 1000)
    put = server.run("put", str(src), "live/")  # a folder path keeps the file's name
    assert put.returncode == 0, put.stderr
    stat = server.run("stat", "live/seg.m4s", "--json")
    info = json.loads(stat.stdout)
    assert info["size"] == 1000 and info["content_type"] == "video/iso.segment"
    out = tmp_path / "out"
    out.mkdir()
    got = server.run("get", "live/seg.m4s", str(out) + "/")
    assert got.returncode == 0, got.stderr
    assert (out / "seg.m4s").read_bytes() == b"x" * 1000
    assert [p.name for p in out.iterdir()] == ["seg.m4s"]  # no temporary file left
    listing = server.run("ls", "-l", "live")
    assert listing.returncode == 0 and "1000" in listing.stdout and "seg.m4s" in listing.stdout
    folders = json.loads(server.run("ls", "--json").stdout)
    assert folders == [
        {"path": "live", "type": "FOLDER", "size": None, "etag": None,
         "last_modified": None, "content_type": None}
    ]
    url = server.run("presign", "live/seg.m4s").stdout.strip()
    body = subprocess.run(["curl", "-sf", url], capture_output=True, check=True).stdout
    assert body == b"x" * 1000


def test_put_stdin_streaming_and_standard(server: Server) -> None:
    data = bytes(range(256)) * 300
    streamed = server.run("put", "-", "live/x.ts", "--streaming", input=data)
    assert streamed.returncode == 0, streamed.stderr
    standard = server.run("put", "-", "vod/x.ts", input=data)
    assert standard.returncode == 0, standard.stderr
    for path in ("live/x.ts", "vod/x.ts"):
        out = subprocess.run(
            [MSD, "get", path, "-"], env=server.env, capture_output=True, check=True
        ).stdout
        assert out == data
    assert json.loads(server.run("stat", "live/x.ts", "--json").stdout)["content_type"] == (
        "video/MP2T"
    )


def test_put_a_folder_is_one_line_naming_sync(server: Server, tmp_path: Path) -> None:
    line = one_line_error(server.run("put", str(tmp_path), "x"), "put")
    assert "is a folder" in line and "msd sync" in line


def test_get_into_a_missing_folder_is_one_line(server: Server, tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"1")
    assert server.run("put", str(tmp_path / "f"), "a/f").returncode == 0
    line = one_line_error(server.run("get", "a/f", str(tmp_path / "nope") + "/"), "get")
    assert "no such folder" in line
    line = one_line_error(server.run("get", "a/f", str(tmp_path / "no" / "f")), "get")
    assert "no such folder" in line


def test_missing_endpoint_names_the_flag_and_the_variable(server: Server) -> None:
    line = one_line_error(server.run("ls", env={"MSD_ENDPOINT": ""}), "ls")
    assert "--endpoint" in line and "MSD_ENDPOINT" in line


def test_bad_credentials_are_one_line(server: Server) -> None:
    line = one_line_error(server.run("ls", env={"AWS_SECRET_ACCESS_KEY": "wrong"}), "ls")
    assert "InvalidSignature" in line and "AWS_SECRET_ACCESS_KEY" in line
    line = one_line_error(server.run("ls", env={"AWS_ACCESS_KEY_ID": "AKIDUNKNOWN"}), "ls")
    assert "AWS_ACCESS_KEY_ID" in line


def test_a_path_the_api_refuses_is_one_line(server: Server, tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"1")
    line = one_line_error(server.run("put", str(tmp_path / "f"), "bad name.txt"), "put")
    assert "InvalidPathError" in line and "' '" in line


def test_ls_of_a_missing_folder_or_an_object_says_so(server: Server, tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"1")
    assert server.run("put", str(tmp_path / "f"), "a/f.txt").returncode == 0
    assert "no folder 'nope'" in one_line_error(server.run("ls", "nope"), "ls")
    assert "is an object" in one_line_error(server.run("ls", "a/f.txt"), "ls")
    assert "is an object" in one_line_error(server.run("ls", "-r", "a/f.txt"), "ls")


def test_debug_prints_the_traceback(server: Server, tmp_path: Path) -> None:
    result = server.run("put", str(tmp_path / "missing"), "x", "--debug")
    assert result.returncode == 1
    assert "msd put: " in result.stderr and "Traceback" in result.stderr


def test_rm_of_a_folder_without_r_says_so(server: Server, tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"1")
    assert server.run("put", str(tmp_path / "f"), "dir/f").returncode == 0
    line = one_line_error(server.run("rm", "dir"), "rm")
    assert "msd rm -r dir" in line
    assert server.run("rm", "dir/f").returncode == 0
    assert server.run("ls", "--json").stdout.strip() == "[]"


def test_sync_argument_errors(server: Server, tmp_path: Path) -> None:
    line = one_line_error(server.run("sync", str(tmp_path), str(tmp_path)), "sync")
    assert "ms:PATH" in line
    result = server.run("sync", str(tmp_path), "ms:x", "--shard", "4/4")
    assert result.returncode == 2, result.stderr  # a usage error, like any bad value
    assert result.stderr.strip().splitlines()[-1].endswith("--shard: '4/4': needs 0 <= I < N")
    line = one_line_error(server.run("sync", str(tmp_path / "no"), "ms:x"), "sync")
    assert "not a folder" in line


def test_sync_shards_cover_the_tree_once(server: Server, tmp_path: Path) -> None:
    for i in range(40):
        (tmp_path / f"f{i}.txt").write_text(str(i))
    seen: list[str] = []
    for shard in range(3):
        result = server.run(
            "sync", str(tmp_path), "ms:sharded", "--shard", f"{shard}/3", "--json"
        )
        assert result.returncode == 0, result.stderr
        seen += json.loads(result.stdout)["transferred"]
    assert sorted(seen) == sorted(f"f{i}.txt" for i in range(40))
    rows = json.loads(server.run("ls", "-r", "--json", "sharded").stdout)
    assert len(rows) == 40


def test_progress_bars_on_a_terminal_and_none_in_a_pipe(server: Server, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        (src / f"f{i}.ts").write_bytes(b"x" * 3000)
    piped = server.run("sync", str(src), "ms:bars")
    assert piped.returncode == 0
    assert piped.stdout.splitlines() == [
        "upload 5 files (15,000 bytes), 0 unchanged, delete 0, 0 failed"
    ]
    # On a terminal (a pseudo-terminal made by util-linux's script), rich draws the bars.
    command = f"{MSD} sync {src} ms:bars2"
    tty = subprocess.run(
        ["script", "-qec", command, "/dev/null"],
        env={**server.env, "COLUMNS": "100", "TERM": "xterm"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert tty.returncode == 0, tty.stdout + tty.stderr
    assert "uploading (5 files)" in tty.stdout
    assert "15.0/15.0 kB" in tty.stdout


def test_missing_credentials_are_one_line(server: Server) -> None:
    env = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}
    result = server.run("ls", env=env)
    line = one_line_error(result, "ls")
    assert "CredentialsError" in line and "AWS_ACCESS_KEY_ID" in line
    assert "credentials=" not in line and "profile=" not in line  # flags, not kwargs


def test_presign_expiry_names_the_flag(server: Server) -> None:
    result = server.run("presign", "a.ts", "--expires-in", "0")
    assert result.returncode == 2, result.stderr  # a usage error (test_option_values.py)
    assert "--expires-in: must be 1..604800, not 0" in result.stderr.strip().splitlines()[-1]
