"""End-to-end harness for the ingest tests: `msd serve`, `msd relay`, `msd push` and ffmpeg
as real processes, and an independent reader that polls the origin like a player."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ACCESS_KEY = "AKIDINGESTTEST0000000"
SECRET_KEY = "ingest-test-secret-key-0000000000000000"
REGION = "us-east-1"
FFMPEG_INPUT = ["-re", "-f", "lavfi", "-i", "testsrc=size=192x108:rate=25"]
FFMPEG_H264 = [
    "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-pix_fmt", "yuv420p",
    "-g", "25", "-keyint_min", "25", "-sc_threshold", "0",
]


def aws_env(**extra: str) -> dict[str, str]:
    """The environment of a relay/push process: credentials from the standard chain's
    environment variables, and nothing from this machine's AWS files or metadata."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MSD_"))}
    env.update(
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        AWS_REGION=REGION,
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
    )
    env.update(extra)
    return env


class Proc:
    """A child process whose stderr goes to a file and whose stdout is read for one line."""

    def __init__(self, process: asyncio.subprocess.Process, log: Path) -> None:
        self.process = process
        self.log = log

    @classmethod
    async def start(
        cls, args: Sequence[str], log: Path, ready: str, *, env: dict[str, str] | None = None,
        within: float = 30.0,
    ) -> tuple[Proc, str]:
        """Start ``args``; returns it and the rest of the first stdout line starting with
        ``ready`` (the process's address)."""
        stderr = log.open("wb")
        try:
            process = await asyncio.create_subprocess_exec(
                *args, stdout=asyncio.subprocess.PIPE, stderr=stderr, env=env
            )
        finally:
            stderr.close()
        proc = cls(process, log)
        try:
            async with asyncio.timeout(within):
                assert process.stdout is not None
                while True:
                    line = (await process.stdout.readline()).decode()
                    if not line:
                        raise AssertionError(f"{args[:4]} exited early:\n{proc.stderr()}")
                    if line.startswith(ready):
                        return proc, line[len(ready) :].strip()
        except BaseException:
            await proc.stop(signal.SIGKILL)
            raise

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    async def stop(self, sig: int = signal.SIGTERM, within: float = 40.0) -> int:
        """Send ``sig`` (if still running) and wait; SIGKILL after ``within`` seconds."""
        process = self.process
        if process.returncode is None:
            process.send_signal(sig)
            try:
                async with asyncio.timeout(within):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        if process.stdout is not None:
            await process.stdout.read()
        return process.returncode if process.returncode is not None else -1


def msd(*args: str) -> list[str]:
    return [sys.executable, "-m", "msd_async.cli", *args]


@contextlib.asynccontextmanager
async def origin(
    tmp_path: Path, *extra: str, name: str = "serve", data_dir: Path | None = None
) -> AsyncIterator[tuple[str, Proc]]:
    """`msd serve` with credentials, WITHOUT anonymous write, with anonymous read (for the
    checker and ffprobe); its access log (one line per request) in ``tmp_path/NAME.log``."""
    args = msd(
        "serve", "--access-key-id", ACCESS_KEY, "--secret-access-key", SECRET_KEY,
        "--allow-anonymous", "read", "--no-fsync", *extra,
    )
    if data_dir is not None:
        args += ["--data-dir", str(data_dir)]
    proc, endpoint = await Proc.start(args, tmp_path / f"{name}.log", "endpoint: ")
    try:
        yield endpoint, proc
    finally:
        await proc.stop()


async def run_ffmpeg(args: Sequence[str], within: float = 60.0) -> tuple[int, str]:
    """Run ffmpeg to its end; returns its exit status and stderr."""
    process = await asyncio.create_subprocess_exec(
        "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", *args,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(within):
            _, err = await process.communicate()
    except BaseException:
        process.kill()
        await process.wait()
        raise
    return process.returncode or 0, err.decode(errors="replace")


async def ffprobe_frames(url: str) -> int:
    """Video frames ffprobe decodes from ``url`` (read anonymously from the origin)."""
    process = await asyncio.create_subprocess_exec(
        "ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
        "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return int(out.decode().strip().splitlines()[0].strip(","))


_URI_ATTR = re.compile(r'URI="([^"]+)"')


def hls_names(text: str) -> list[str]:
    """Segment and init names an HLS media playlist references."""
    names: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            names += _URI_ATTR.findall(line)
        else:
            names.append(line)
    return names


async def fetch(
    http: aiohttp.ClientSession, url: str, *, attempts: int = 6
) -> tuple[int, bytes]:
    """GET ``url``; a 5xx, throttling or a cut connection (injected faults) is retried, a
    404 is returned as it is."""
    status, body = 0, b""
    for attempt in range(attempts):
        try:
            async with http.get(url) as response:
                status, body = response.status, await response.read()
        except (TimeoutError, aiohttp.ClientError):
            status, body = 0, b""
        if status == 200 or status == 404:
            return status, body
        if status == 400 and b"Throttling" not in body:
            return status, body
        await asyncio.sleep(0.05 * (attempt + 1))
    return status, body


@dataclass
class PlaylistReader:
    """Polls a media playlist like a player and checks the publishing rules on every new
    version: each named segment is fetchable at that moment, and a segment that just left
    the playlist is still fetchable (RFC 8216 section 6.2.2 keeps it available)."""

    url: str
    interval: float = 0.1
    versions: int = 0
    final: str = ""
    named: set[str] = field(default_factory=set)
    missing: list[tuple[int, str, int]] = field(default_factory=list)
    gone_early: list[tuple[int, str, int]] = field(default_factory=list)
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, stop: asyncio.Event) -> None:
        base = self.url.rsplit("/", 1)[0]
        previous: list[str] = []
        text = ""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            while not stop.is_set():
                status, body = await fetch(http, self.url)
                if status == 200 and body.decode() != text:
                    text = body.decode()
                    self.versions += 1
                    names = hls_names(text)
                    self.named.update(names)
                    for name in names:
                        got, _ = await fetch(http, f"{base}/{name}")
                        if got != 200:
                            self.missing.append((self.versions, name, got))
                    for name in set(previous) - set(names):
                        got, _ = await fetch(http, f"{base}/{name}")
                        if got != 200:
                            self.gone_early.append((self.versions, name, got))
                    previous = names
                    if "#EXT-X-ENDLIST" in text:
                        self.final = text
                        self.ended.set()
                        return
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.interval):
                        await stop.wait()


async def wait_until(predicate: Any, within: float, interval: float = 0.2) -> bool:
    """Poll an async predicate until it is true or ``within`` seconds pass."""
    deadline = time.monotonic() + within
    while True:
        if await predicate():
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(interval)


async def status_of(url: str) -> int:
    async with aiohttp.ClientSession() as http:
        status, _ = await fetch(http, url)
        return status
