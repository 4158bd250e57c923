"""Headless Chromium driven over the Chrome DevTools Protocol, with aiohttp's WebSocket client.

Used by the player test and ``benchmarks/bench_player.py``. Media playback needs real time
(``--virtual-time-budget`` does not advance it), so the browser runs for real and the page is
read with ``Runtime.evaluate``. Chromium runs in its own process group, which
:meth:`Chromium.close` kills whole on every exit path: no renderer or GPU process outlives it.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiohttp
import anyio

__all__ = ["Chromium", "Page", "chromium_path"]

#: Flags that play media headless as root; see docs/live.md "Watching the stream".
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--mute-audio",
    "--window-size=1280,900",
    "--remote-debugging-address=127.0.0.1",
    # 0: Chromium picks a free port and writes it to DevToolsActivePort (no race).
    "--remote-debugging-port=0",
)


def chromium_path() -> str | None:
    """The Chromium executable (``MSD_CHROMIUM`` or ``chromium`` on PATH), if any."""
    explicit = os.environ.get("MSD_CHROMIUM")
    if explicit:
        return explicit
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Page:
    """One page target: send commands, evaluate JavaScript, take screenshots."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._ids = itertools.count(1)

    async def send(self, method: str, limit: float = 30.0, **params: Any) -> dict[str, Any]:
        """Send one command and wait for its answer (events that arrive meanwhile are
        dropped: nothing here subscribes to any)."""
        ident = next(self._ids)
        await self.ws.send_json({"id": ident, "method": method, "params": params})
        with anyio.fail_after(limit):
            while True:
                message = await self.ws.receive()
                if message.type != aiohttp.WSMsgType.TEXT:
                    raise ConnectionError(f"DevTools connection ended: {message.type!r}")
                data = json.loads(message.data)
                if data.get("id") != ident:
                    continue
                if "error" in data:
                    raise RuntimeError(f"{method}: {data['error']}")
                result: dict[str, Any] = data.get("result", {})
                return result

    async def evaluate(self, expression: str, limit: float = 30.0) -> Any:
        """The value of a JavaScript expression (promises awaited), or the exception text."""
        result = await self.send(
            "Runtime.evaluate", limit=limit, expression=expression,
            returnByValue=True, awaitPromise=True,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"page exception: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def navigate(self, url: str) -> None:
        await self.send("Page.enable")
        await self.send("Page.navigate", url=url)

    async def screenshot(self) -> bytes:
        result = await self.send("Page.captureScreenshot", format="png")
        return base64.b64decode(result["data"])


class Chromium:
    """``async with Chromium() as browser: page = await browser.page()``."""

    def __init__(self, executable: str | None = None, *, startup_timeout: float = 60.0) -> None:
        found = executable or chromium_path()
        if found is None:
            raise FileNotFoundError(
                "chromium not found: apt-get install chromium (scripts/test.sh does), or set "
                "MSD_CHROMIUM"
            )
        self.executable = found
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self._profile: str | None = None
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self.port = 0
        self.log = b""

    async def __aenter__(self) -> Self:
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _start(self) -> None:
        self._profile = tempfile.mkdtemp(prefix="msd-chromium-")
        self._logfile = Path(self._profile) / "chromium.log"
        # A one-off start-up: blocking for the fork is fine here.
        with open(self._logfile, "wb") as log:  # noqa: ASYNC230
            self.process = subprocess.Popen(  # noqa: ASYNC220
                [self.executable, *CHROMIUM_FLAGS, f"--user-data-dir={self._profile}",
                 "about:blank"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True,  # its own process group, killed whole by close()
            )
        active = Path(self._profile) / "DevToolsActivePort"
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"chromium exited at start: {self._read_log()[-2000:]!r}")
            with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
                self.port = int(active.read_text().splitlines()[0])
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"chromium did not start in {self.startup_timeout:g} s")
            await anyio.sleep(0.1)
        self._http = aiohttp.ClientSession()

    async def page(self) -> Page:
        """The browser's first page target (``about:blank``), connected."""
        assert self._http is not None
        async with self._http.get(f"http://127.0.0.1:{self.port}/json") as resp:
            targets = await resp.json()
        target = next(t for t in targets if t.get("type") == "page")
        self._ws = await self._http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
        return Page(self._ws)

    def _read_log(self) -> str:
        with contextlib.suppress(OSError, AttributeError):
            return self._logfile.read_text(errors="replace")
        return ""

    async def close(self) -> None:
        """Close the DevTools connection and kill Chromium's whole process group."""
        with anyio.CancelScope(shield=True):
            if self._ws is not None:
                await self._ws.close()
                self._ws = None
            if self._http is not None:
                await self._http.close()
                self._http = None
            process, self.process = self.process, None
            if process is not None:
                for sig in (signal.SIGTERM, signal.SIGKILL):
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, sig)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        process.wait(timeout=5)
                        if sig == signal.SIGTERM:
                            # the group's other processes (renderers, zygote) go too
                            with contextlib.suppress(ProcessLookupError):
                                os.killpg(process.pid, signal.SIGKILL)
                            break
            if self._profile is not None:
                shutil.rmtree(self._profile, ignore_errors=True)
                self._profile = None
