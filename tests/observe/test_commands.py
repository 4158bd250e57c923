"""``--metrics`` and ``--log-format json`` on the commands, as subprocesses: `msd relay` in
front of ffmpeg into `msd serve` (whose request log is the oracle), readiness through an
origin outage, and the commands without the extras installed."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import pytest
from ingest_harness import (
    ACCESS_KEY,
    FFMPEG_H264,
    FFMPEG_INPUT,
    SECRET_KEY,
    Proc,
    aws_env,
    msd,
    origin,
    run_ffmpeg,
)

if TYPE_CHECKING:
    from conftest import Exposition

#: Readiness settings of the relay under test (the defaults are 15 s and 5 s).
WINDOW = 2.0
PROBE = 0.5

#: Runs `msd` with prometheus_client and opentelemetry made unimportable, as on a machine
#: without the extras.
WITHOUT_EXTRAS = """
import sys
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("prometheus_client", "opentelemetry"):
            raise ImportError(f"No module named {name!r} (blocked by the test)")
        return None
sys.meta_path.insert(0, Blocker())
from msd_async.cli import main
sys.exit(main(sys.argv[1:]))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def operation_of(method: str, raw_path: str) -> str:
    if method == "GET":
        return "ListItems" if raw_path.partition("?")[0] == "/" else "GetObject"
    return {"PUT": "PutObject", "HEAD": "DescribeObject", "DELETE": "DeleteObject"}[method]


def server_counts(log: str) -> dict[tuple[str, str], int]:
    """``(operation, status) -> requests`` from `msd serve`'s text access log."""
    counts: dict[tuple[str, str], int] = {}
    for method, path, status in re.findall(r"\d (GET|PUT|HEAD|DELETE) (\S+) (\S+) in=", log):
        key = (operation_of(method, path), status)
        counts[key] = counts.get(key, 0) + 1
    return counts


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.text()


async def wait_for_status(url: str, status: int, within: float) -> float:
    """Seconds until ``url`` answered ``status``; fails after ``within`` seconds."""
    started = time.monotonic()
    last = (0, "")
    while time.monotonic() - started < within:
        last = await get(url)
        if last[0] == status:
            return time.monotonic() - started
        await asyncio.sleep(0.1)
    raise AssertionError(f"{url} still answers {last} after {within} s, not {status}")


@pytest.mark.anyio
@pytest.mark.slow
async def test_relay_metrics_readiness_and_json_logs(
    tmp_path: Path, exposition: type[Exposition]
) -> None:
    port = free_port()
    async with origin(tmp_path, "--port", str(port)) as (endpoint, server):
        relay, metrics = await Proc.start(
            msd("relay", "--endpoint", endpoint, "--listen", "127.0.0.1:0",
                "--metrics", "127.0.0.1:0", "--log-format", "json"),
            tmp_path / "relay.log", "metrics: ",
            env=aws_env(MSD_READY_WINDOW=str(WINDOW), MSD_PROBE_INTERVAL=str(PROBE)),
        )
        try:
            assert relay.process.stdout is not None
            line = (await relay.process.stdout.readline()).decode()
            assert line.startswith("relay: "), line
            url = line.removeprefix("relay: ").strip()
            base = metrics.removesuffix("/metrics")
            assert await get(f"{base}/healthz") == (200, "ok\n")
            await wait_for_status(f"{base}/readyz", 200, 30)

            rc, err = await run_ffmpeg([
                *FFMPEG_INPUT, "-t", "3", *FFMPEG_H264, "-f", "hls", "-hls_time", "1",
                "-hls_list_size", "3", "-method", "PUT", "-http_persistent", "1",
                f"{url}/live/index.m3u8",
            ])
            assert rc == 0, err

            async def settled() -> int:
                return sum('"event": "object"' in x for x in relay.stderr().splitlines())

            # Every PUT ffmpeg made has its outcome logged (one line each).
            uploads = 0
            for _ in range(100):
                uploads = await settled()
                if uploads and uploads == await settled_after(settled, 0.3):
                    break
            assert uploads >= 4, relay.stderr()

            # The origin goes down: /readyz says so within the window.
            await server.stop(signal.SIGTERM)
            down = await wait_for_status(f"{base}/readyz", 503, 4 * WINDOW + 10)
            assert down <= 4 * WINDOW + 10
            status, reason = await get(f"{base}/readyz")
            assert status == 503 and len(reason.strip().splitlines()) == 1

            # Now nothing is in flight to the origin: its log is complete.
            _, text = await get(metrics)
            counted = exposition.samples(text)
            oracle = server_counts(server.stderr())
            client = {
                (dict(labels)["operation"], dict(labels)["status"]): int(value)
                for (name, labels), value in counted.items()
                if name == "msd_requests_total" and dict(labels)["status"] != "error"
            }
            assert client == oracle
            assert oracle[("PutObject", "200")] == uploads
            acknowledged = sum(
                value for (name, labels), value in counted.items()
                if name == "msd_publications_total" and ("outcome", "acknowledged") in labels
            )
            assert acknowledged == uploads
            assert counted["msd_publish_queue_depth", ()] == 0
            assert counted["msd_bytes_sent_total", ()] > 10_000
            # Request durations, per operation, and publish latency, per kind.
            assert exposition.check_histograms(text) >= 3

            # The origin returns on the same address: ready again.
            async with origin(tmp_path, "--port", str(port), name="serve2"):
                await wait_for_status(f"{base}/readyz", 200, 4 * WINDOW + 10)
        finally:
            code = await relay.stop()
    assert code == 0, relay.stderr()

    lines = relay.stderr().splitlines()
    objects = []
    for line in lines:
        entry = json.loads(line)  # every line is one JSON object
        assert {"ts", "level", "event"} <= entry.keys()
        if entry["event"] == "object":
            objects.append(entry)
    assert len(objects) == uploads
    for entry in objects:
        assert entry["outcome"] == "acknowledged"
        assert entry["path"].startswith("live/")
        assert entry["kind"] in ("media", "media-playlist")
        assert entry["attempts"] >= 1 and entry["latency_s"] >= 0
    everything = relay.stderr()
    assert SECRET_KEY not in everything and "Signature" not in everything
    assert ACCESS_KEY not in everything


async def settled_after(count: object, seconds: float) -> int:
    await asyncio.sleep(seconds)
    return await count()  # type: ignore[operator, no-any-return]


def run_without_extras(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_EXTRAS, *args], capture_output=True, text=True,
        timeout=timeout, env=aws_env(), check=False,
    )


@pytest.mark.parametrize(
    "command",
    [
        ["relay", "--endpoint", "http://127.0.0.1:9"],
        ["push", "--endpoint", "http://127.0.0.1:9", "."],
        ["serve"],
        ["demo"],
    ],
    ids=lambda c: c[0],
)
def test_metrics_without_the_extra_says_which_to_install(command: list[str]) -> None:
    result = run_without_extras(*command, "--metrics", "127.0.0.1:0")
    assert result.returncode == 2, result
    assert result.stdout == ""
    assert result.stderr.strip() == (
        f"msd {command[0]}: --metrics needs the metrics extra: pip install "
        "'msd-async[metrics]'"
    )


def test_commands_without_metrics_work_without_the_extras(tmp_path: Path) -> None:
    serve = subprocess.Popen(
        [sys.executable, "-c", WITHOUT_EXTRAS, "serve", "--log-format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert serve.stdout is not None
        lines = [serve.stdout.readline() for _ in range(5)]
        export = next(x for x in lines if x.startswith("export "))
        env = dict(item.split("=", 1) for item in export.split()[1:])
        site = tmp_path / "site"
        site.mkdir()
        (site / "a.txt").write_text("hello")
        result = subprocess.run(
            [sys.executable, "-c", WITHOUT_EXTRAS, "sync", str(site), "ms:www",
             "--log-format", "json"],
            capture_output=True, text=True, timeout=60, env={**aws_env(), **env}, check=False,
        )
        assert result.returncode == 0, result
        summary = json.loads(result.stdout)
        assert summary["event"] == "summary" and summary["transferred"] == 1
        demo = run_without_extras(
            "demo", "--duration", "1", "--segment-duration", "0.5", "--part-duration",
            "0.25", "--renditions", "1", "--fault-rate", "0", "--log-format", "json",
        )
        assert demo.returncode == 0, demo
        assert json.loads(demo.stdout.splitlines()[-1])["event"] == "summary"
    finally:
        serve.send_signal(signal.SIGINT)
        _, err = serve.communicate(timeout=30)
    assert serve.returncode == 0, err
    # The request log: one JSON object per request, the sync's PUT among them.
    requests = [json.loads(x) for x in err.splitlines()]
    assert any(r["method"] == "PUT" and r["path"] == "/www/a.txt" for r in requests)


def test_serve_metrics_count_requests_and_json_log_keeps_no_signature(
    tmp_path: Path, exposition: type[Exposition]
) -> None:
    port = free_port()
    serve = subprocess.Popen(
        msd("serve", "--metrics", f"127.0.0.1:{port}", "--log-format", "json",
            "--access-key-id", ACCESS_KEY, "--secret-access-key", SECRET_KEY),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert serve.stdout is not None
        lines = [serve.stdout.readline().strip() for _ in range(5)]
        assert f"metrics: http://127.0.0.1:{port}/metrics" in lines
        endpoint = next(x for x in lines if x.startswith("endpoint: ")).split()[1]
        env = aws_env(MSD_ENDPOINT=endpoint)
        put = subprocess.run(
            msd("put", "-", "v/a.ts"), input="x" * 100, capture_output=True, text=True,
            env=env, timeout=60, check=False,
        )
        assert put.returncode == 0, put
        presigned = subprocess.run(
            msd("presign", "v/a.ts"), capture_output=True, text=True, env=env, timeout=60,
            check=True,
        ).stdout.strip()
        signature = re.search(r"X-Amz-Signature=([0-9a-f]+)", presigned)
        assert signature is not None
        for url in (presigned, f"{endpoint}/v/missing.ts"):
            subprocess.run(["curl", "-s", "-o", os.devnull, url], check=True, timeout=30)
        text = asyncio.run(get(f"http://127.0.0.1:{port}/metrics"))[1]
        got = exposition.samples(text)
        assert got["msd_server_requests_total", (("operation", "PutObject"),
                                                 ("status", "200"))] == 1
        assert got["msd_server_requests_total", (("operation", "GetObject"),
                                                 ("status", "200"))] == 1
        # Unsigned: the server refuses it (403) before looking for the object.
        assert got["msd_server_requests_total", (("operation", "GetObject"),
                                                 ("status", "403"))] == 1
        assert exposition.check_histograms(text) == 2
        assert asyncio.run(get(f"http://127.0.0.1:{port}/readyz"))[0] == 200

        # A second server cannot take the same metrics port: one line, non-zero exit.
        clash = subprocess.run(
            msd("serve", "--metrics", f"127.0.0.1:{port}"), capture_output=True, text=True,
            timeout=60, check=False,
        )
        assert clash.returncode == 1
        assert clash.stderr.count("\n") == 1 and f"127.0.0.1:{port}" in clash.stderr
    finally:
        serve.send_signal(signal.SIGINT)
        _, err = serve.communicate(timeout=30)
    entries = [json.loads(x) for x in err.splitlines()]
    assert [e["status"] for e in entries if e.get("event") == "request"] == [200, 200, 403]
    assert signature.group(1) not in err and "X-Amz-Signature" not in err
    assert SECRET_KEY not in err


def test_relay_refuses_a_metrics_port_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            msd("relay", "--endpoint", "http://127.0.0.1:9", "--listen", "127.0.0.1:0",
                "--metrics", f"127.0.0.1:{port}"),
            capture_output=True, text=True, timeout=60, env=aws_env(), check=False,
        )
    assert result.returncode == 1, result
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith(f"msd relay: --metrics 127.0.0.1:{port}: cannot listen")


def test_import_never_loads_the_extras() -> None:
    code = (
        "import json, sys\n"
        "import msd_async, msd_async.live, msd_async.ingest, msd_async.testing\n"
        "from msd_async.cli import build_parser\n"
        "build_parser()\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('prometheus_client', 'opentelemetry'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(out.stdout) == []


@pytest.mark.anyio
async def test_push_metrics_and_json_lines(tmp_path: Path, exposition: type[Exposition]) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    for n in range(3):
        (folder / f"seg{n}.ts").write_bytes(b"t" * 1000)
    (folder / "index.m3u8").write_text(
        "#EXTM3U\n#EXT-X-TARGETDURATION:1\n"
        + "".join(f"#EXTINF:1.0,\nseg{n}.ts\n" for n in range(3))
    )
    async with origin(tmp_path) as (endpoint, _):
        push, metrics = await Proc.start(
            msd("push", str(folder), "--endpoint", endpoint, "--settle", "0.2",
                "--metrics", "127.0.0.1:0", "--log-format", "json"),
            tmp_path / "push.log", "metrics: ", env=aws_env(),
        )
        try:
            base = metrics.removesuffix("/metrics")
            await wait_for_status(f"{base}/readyz", 200, 30)

            async def acknowledged() -> float:
                got = exposition.samples((await get(metrics))[1])
                return sum(
                    v for (name, labels), v in got.items()
                    if name == "msd_publications_total" and ("outcome", "acknowledged") in labels
                )

            for _ in range(100):
                if await acknowledged() == 4:
                    break
                await asyncio.sleep(0.1)
            got = exposition.samples((await get(metrics))[1])
        finally:
            code = await push.stop()
    assert code == 0, push.stderr()
    assert got["msd_publications_total", (("kind", "segment"), ("outcome", "acknowledged"))] == 3
    assert got["msd_publications_total", (("kind", "playlist"), ("outcome", "acknowledged"))] == 1
    assert got["msd_requests_total", (("operation", "PutObject"), ("status", "200"))] == 4
    assert got["msd_bytes_sent_total", ()] >= 3000
    entries = [json.loads(x) for x in push.stderr().splitlines()]
    objects = sorted(e["path"] for e in entries if e["event"] == "object")
    assert objects == ["index.m3u8", "seg0.ts", "seg1.ts", "seg2.ts"]
    assert SECRET_KEY not in push.stderr()


def test_other_loggers_write_json_lines_too() -> None:
    code = (
        "import argparse, logging\n"
        "from msd_async.cli import _observe\n"
        "_observe.configure_logging(argparse.Namespace(log_format='json'))\n"
        "logging.getLogger('aiohttp.server').warning('slow %s', 'client')\n"
        "try:\n"
        "    1 / 0\n"
        "except ZeroDivisionError:\n"
        "    logging.getLogger('msd_async.web').exception('request failed')\n"
        "logging.getLogger('msd_async.retry').info('not shown: below WARNING')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    first, second = (json.loads(x) for x in out.stderr.splitlines())
    assert first["level"] == "warning" and first["event"] == "log"
    assert first["logger"] == "aiohttp.server" and first["message"] == "slow client"
    assert second["level"] == "error" and second["logger"] == "msd_async.web"
    assert second["message"].startswith("request failed Traceback")
    assert "ZeroDivisionError" in second["message"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("operations", "publishes"),
    [("PutObject,DeleteObject", True), ("ListItems,GetObject", False)],
    ids=["write-only", "read-only"],
)
async def test_readiness_follows_what_the_keys_may_do(
    tmp_path: Path, operations: str, publishes: bool
) -> None:
    """An encoder's key is often allowed to write only. The relay's preflight and its idle
    probe list the container: their AccessDenied means the keys were accepted, so the
    relay starts and stays ready. A PutObject refused the same way is publishing failing:
    not ready."""
    async with origin(
        tmp_path, "--key-operations", f"{ACCESS_KEY}={operations}"
    ) as (endpoint, server):
        relay, metrics = await Proc.start(
            msd("relay", "--endpoint", endpoint, "--listen", "127.0.0.1:0",
                "--metrics", "127.0.0.1:0"),
            tmp_path / "relay.log", "metrics: ",
            env=aws_env(MSD_READY_WINDOW=str(WINDOW), MSD_PROBE_INTERVAL=str(PROBE)),
        )
        try:
            assert relay.process.stdout is not None
            line = (await relay.process.stdout.readline()).decode()
            assert line.startswith("relay: "), relay.stderr()
            url = line.removeprefix("relay: ").strip()
            base = metrics.removesuffix("/metrics")
            await wait_for_status(f"{base}/readyz", 200, 30)
            # Idle for twice the window: only the probes (each refused) keep it ready.
            await asyncio.sleep(2 * WINDOW)
            assert await get(f"{base}/readyz") == (200, "ok\n"), relay.stderr()
            refused = server_counts(server.stderr()).get(("ListItems", "403"), 0)
            assert refused >= (3 if publishes else 0)

            async with aiohttp.ClientSession() as http:
                async with http.put(f"{url}/live/seg1.ts", data=b"media") as reply:
                    assert reply.status < 300
                if publishes:
                    for _ in range(100):
                        async with http.get(f"{endpoint}/live/seg1.ts") as stored:
                            if stored.status == 200:
                                assert await stored.read() == b"media"
                                break
                        await asyncio.sleep(0.1)
                    else:
                        raise AssertionError(f"never stored: {relay.stderr()}")
                    assert await get(f"{base}/readyz") == (200, "ok\n")
                else:
                    await wait_for_status(f"{base}/readyz", 503, 4 * WINDOW + 10)
                    _, reason = await get(f"{base}/readyz")
                    assert "PutObject" in reason and "403" in reason, reason
        finally:
            await relay.stop()
