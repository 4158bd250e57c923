"""The directory store: durable, atomic, survives kill -9, never escapes its directory."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

import aiohttp
import pytest
from rawclient import Raw
from serve_process import start_serve

from msd_async.testing import DirectoryStore, LocalMediaStore

pytestmark = pytest.mark.anyio


async def test_survives_restart_and_folders_follow(tmp_path: Path) -> None:
    async with LocalMediaStore(data_dir=str(tmp_path)) as server, aiohttp.ClientSession() as s:
        raw = Raw(server, s)
        put = (
            await raw.put("a/b/c.ts", b"one", content_type="video/MP2T", cache_control="max-age=5")
        ).json()
        await raw.put("a/d.ts", b"two")
        await raw.put("gone/x.ts", b"x")
        await raw.call("DELETE", "/gone/x.ts")
        assert not (tmp_path / "gone").exists()
    assert (tmp_path / "a" / "b" / "c.ts").read_bytes().startswith(b"one")
    async with LocalMediaStore(data_dir=str(tmp_path)) as server, aiohttp.ClientSession() as s:
        raw = Raw(server, s)
        got = await raw.get("a/b/c.ts")
        assert got.body == b"one" and got.headers["ETag"] == put["ETag"]
        assert got.headers["Cache-Control"] == "max-age=5"
        assert got.headers["Content-Type"] == "video/MP2T"
        assert (await raw.get("a/b/c.ts", range="bytes=1-")).body == b"ne"
        assert [i["Name"] for i in (await raw.list("a")).json()["Items"]] == ["b", "d.ts"]
        await raw.call("DELETE", "/a/b/c.ts")
        assert not (tmp_path / "a" / "b").exists()


async def test_failed_upload_leaves_previous_version(tmp_path: Path) -> None:
    async with (
        LocalMediaStore(data_dir=str(tmp_path), standard_limit=100) as server,
        aiohttp.ClientSession() as s,
    ):
        raw = Raw(server, s)
        await raw.put("v.ts", b"v1")
        assert (await raw.put("v.ts", b"z" * 101)).status == 400
        assert (await raw.get("v.ts")).body == b"v1"
        assert os.listdir(tmp_path / "@tmp") == []


def test_store_refuses_escaping_paths(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "data")
    for bad in ("../evil", "a/../../evil", "./x", "a/@tmp"):
        with pytest.raises(ValueError):
            store._file(bad)


async def test_streaming_upload_on_directory_store(tmp_path: Path) -> None:
    async with LocalMediaStore(data_dir=str(tmp_path)) as server, aiohttp.ClientSession() as s:
        raw = Raw(server, s)
        reply = await raw.put("s.m4s", b"streamed", x_amz_upload_availability="STREAMING")
        assert reply.status == 200
        assert (await raw.get("s.m4s")).body == b"streamed"


async def test_kill_9_mid_upload_keeps_previous_version(tmp_path: Path) -> None:
    from msd_async.testing import DEFAULT_CREDENTIALS

    serve = start_serve("--data-dir", str(tmp_path), "--quiet")
    endpoint = serve.endpoint
    try:
        server = LocalMediaStore(credentials=DEFAULT_CREDENTIALS)
        server.endpoint = endpoint
        async with aiohttp.ClientSession() as s:
            raw = Raw(server, s)
            assert (await raw.put("live/seg.ts", b"complete version")).status == 200
            port = int(endpoint.rsplit(":", 1)[1])
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            headers = raw.sign("PUT", "/live/seg.ts")
            head = f"PUT /live/seg.ts HTTP/1.1\r\nHost: {raw.host}\r\nContent-Length: 100000\r\n"
            head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
            writer.write(head.encode() + b"p" * 50_000)
            await writer.drain()
            await asyncio.sleep(0.3)
            serve.process.send_signal(signal.SIGKILL)
            serve.process.wait(10)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
    finally:
        serve.stop(signal.SIGKILL)
    # The partial upload sits in @tmp until the next start removes it.
    async with LocalMediaStore(data_dir=str(tmp_path)) as server, aiohttp.ClientSession() as s:
        raw = Raw(server, s)
        assert (await raw.get("live/seg.ts")).body == b"complete version"
        assert [i["Name"] for i in (await raw.list("live")).json()["Items"]] == ["seg.ts"]
        assert os.listdir(tmp_path / "@tmp") == []


async def test_delete_during_the_folder_fsync_does_not_fail_the_put(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PUT is committed (renamed into place, listed) before its folder is fsynced; a DELETE
    of it in that moment prunes the folder. The PUT still succeeded: it must answer 200, not
    500 (the stateful machine of tests/server/test_store_stateful.py found the 500)."""
    import threading

    from msd_async.testing import store as store_module

    gate = threading.Event()
    fsync_dir = store_module._fsync_dir

    def held(path: str) -> None:
        gate.wait(10)
        fsync_dir(path)

    monkeypatch.setattr(store_module, "_fsync_dir", held)
    async with LocalMediaStore(data_dir=str(tmp_path)) as server, aiohttp.ClientSession() as s:
        raw = Raw(server, s)
        put = asyncio.create_task(raw.put("a/x.ts", b"1"))
        async with asyncio.timeout(10):
            while server.store.get("a/x.ts") is None:  # noqa: ASYNC110 - the server's state
                await asyncio.sleep(0.005)
        assert (await raw.call("DELETE", "/a/x.ts")).status == 200
        assert not (tmp_path / "a").exists()
        gate.set()
        reply = await put
        assert reply.status == 200, reply.body
        assert (await raw.list()).json() == {"Items": []}
