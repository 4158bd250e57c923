"""examples/web_aiohttp.py and examples/web_fastapi.py as users run them: subprocesses in
front of the local server, driven over HTTP, stopped with SIGTERM."""

from __future__ import annotations

import ast
import asyncio
import importlib.metadata
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from msd_async.testing import LocalMediaStore

pytestmark = pytest.mark.anyio

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
START_TIMEOUT = 60  # importing FastAPI on a busy 2-core machine takes a while


@pytest.fixture(params=["web_aiohttp.py", "web_fastapi.py"])
async def example(
    request: pytest.FixtureRequest, mediastore_server: LocalMediaStore
) -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    creds = mediastore_server.credentials
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": creds.access_key_id,
        "AWS_SECRET_ACCESS_KEY": creds.secret_access_key,
        "AWS_REGION": mediastore_server.region,
    }
    env.pop("AWS_SESSION_TOKEN", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLES / request.param),
        "--endpoint", mediastore_server.endpoint, "--listen", "127.0.0.1:0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT)
        assert line.startswith(b"web: http://127.0.0.1:"), line
        yield line.decode().split()[1], proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_example_serves_uploads_lists_and_stops_on_sigterm(
    example: tuple[str, asyncio.subprocess.Process], mediastore_server: LocalMediaStore
) -> None:
    url, proc = example
    data = os.urandom(500_000)
    async with aiohttp.ClientSession() as http:
        async with http.put(f"{url}/objects/vod/film.mp4", data=data,
                            headers={"Content-Type": "video/mp4"}) as resp:
            assert resp.status == 201
        async with http.put(f"{url}/objects/live/s.m4s?streaming=1", data=b"s" * 1000) as resp:
            assert resp.status == 201
        async with http.get(f"{url}/objects/vod/film.mp4",
                            headers={"Range": "bytes=1000-1999"}) as resp:
            assert resp.status == 206
            assert await resp.read() == data[1000:2000]
        async with http.head(f"{url}/objects/vod/film.mp4") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Length"] == str(len(data))
            etag = resp.headers["ETag"]
        async with http.get(f"{url}/objects/vod/film.mp4",
                            headers={"If-None-Match": etag}) as resp:
            assert resp.status == 304
        async with http.get(f"{url}/objects/vod/none.mp4") as resp:
            assert resp.status == 404
        async with http.get(f"{url}/objects/vod/film.mp4?redirect=1",
                            allow_redirects=False) as resp:
            assert resp.status == 302
            assert resp.headers["Location"].startswith(mediastore_server.endpoint)
        async with http.get(f"{url}/?path=vod") as resp:
            assert resp.status == 200
            page = await resp.text()
            assert '<video controls width="480" src="/objects/vod/film.mp4">' in page
        async with http.get(f"{url}/") as resp:
            assert 'href="/?path=live"' in await resp.text()
        # A folder MediaStore cannot name is the client's mistake: 400, not a 500.
        async with http.get(f"{url}/?path=a//b") as resp:
            assert resp.status == 400
            assert "empty segment" in await resp.text()
    assert mediastore_server.store.get("vod/film.mp4") is not None
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 30) == 0
    assert proc.stderr is not None
    errors = await proc.stderr.read()
    assert b"Traceback" not in errors, errors.decode()


@pytest.mark.parametrize("name", ["web_aiohttp.py", "web_fastapi.py"])
async def test_example_refuses_a_bad_endpoint_in_one_line(name: str) -> None:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b",
           "AWS_REGION": "us-east-1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLES / name), "--endpoint", "not-a-url",
        "--listen", "127.0.0.1:0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), START_TIMEOUT)
    assert proc.returncode == 1
    assert out == b""
    assert err.decode().strip().count("\n") == 0, err.decode()
    assert "endpoint must be a URL" in err.decode()


def test_the_web_extra_brings_what_the_fastapi_example_imports() -> None:
    """``pip install 'msd-async[web]'`` (the documented install) must be enough to run
    examples/web_fastapi.py: every third-party module it imports comes from a distribution
    that the package requires, or that its ``web`` extra does."""
    source = (EXAMPLES / "web_fastapi.py").read_text()
    modules = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules.add(node.module.split(".")[0])
    provided = importlib.metadata.packages_distributions()
    wanted: set[str] = set()
    for requirement in importlib.metadata.requires("msd-async") or []:
        name, _, marker = requirement.partition(";")
        if not marker.strip() or re.search(r"extra\s*==\s*['\"]web['\"]", marker):
            wanted.add(re.split(r"[<>=!~\[ ]", name.strip(), maxsplit=1)[0].lower())
    wanted.add("msd-async")
    missing = {
        module: provided[module]
        for module in modules
        if module in provided and not {d.lower() for d in provided[module]} & wanted
    }
    assert not missing, f"the web extra lacks what examples/web_fastapi.py imports: {missing}"
