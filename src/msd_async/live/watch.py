"""The player page of ``msd demo --watch``: hls.js playing the stream in a browser.

:class:`PlayerPage` serves ``player/index.html`` (package data) from its own port on
127.0.0.1, so the page reads the stream cross-origin, through the local server's CORS policy
and anonymous reads, as a page on a CDN-fronted site read a MediaStore container.
:func:`player_cors_policy` is the policy that lets it. hls.js comes either from a local
``hls.min.js`` the page server serves itself, or from a public CDN, pinned to one version with
a Subresource Integrity hash so a changed file is refused by the browser.
"""

from __future__ import annotations

import html
import importlib.resources
import json
import os
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from .._listen import listen, serve_sockets, url_host
from ..errors import InvalidParameterError

__all__ = [
    "HLSJS_CDN_URL",
    "HLSJS_SRI",
    "HLSJS_VERSION",
    "PlayerPage",
    "player_cors_policy",
]

#: The hls.js release the page loads by default (tests/player/js/package.json pins the same).
HLSJS_VERSION: Final = "1.7.4"
#: jsDelivr serves npm packages byte for byte: this is the npm tarball's dist/hls.min.js.
HLSJS_CDN_URL: Final = f"https://cdn.jsdelivr.net/npm/hls.js@{HLSJS_VERSION}/dist/hls.min.js"
#: SHA-384 of that file (``openssl dgst -sha384 -binary hls.min.js | openssl base64 -A``).
HLSJS_SRI: Final = "sha384-p9vgU/7IYJWd3I4STrtqxqR/2cAQlhIX7D/HrTnIMEjjcUox165b7se7sxmm3zDg"


def player_cors_policy(origin: str) -> list[dict[str, Any]]:
    """A CORS policy letting pages of ``origin`` read (GET/HEAD) a container, as the
    MediaStore user guide's "read access for a specific domain" example does."""
    return [
        {
            "AllowedOrigins": [origin],
            "AllowedMethods": ["GET", "HEAD"],
            "AllowedHeaders": ["*"],
            "MaxAgeSeconds": 3000,
        }
    ]


def _page_template() -> str:
    return (importlib.resources.files("msd_async.live") / "player" / "index.html").read_text(
        encoding="utf-8"
    )


class PlayerPage:
    """Serves the player page on ``host`` (127.0.0.1) and a free port.

    ``hlsjs``: a local ``hls.min.js`` to serve at ``/hls.min.js`` (no integrity pin: it is
    the file you chose), or ``None`` for the pinned CDN copy. Set :attr:`source` (the
    multivariant playlist URL) before a browser asks for the page. Use ``async with``.
    """

    def __init__(
        self,
        *,
        hlsjs: str | os.PathLike[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        hls_config: dict[str, Any] | None = None,
    ) -> None:
        self.hlsjs = Path(hlsjs) if hlsjs is not None else None
        if self.hlsjs is not None and not self.hlsjs.is_file():
            raise InvalidParameterError(
                f"--hlsjs {os.fspath(self.hlsjs)!r} is not a file; give the path of an "
                "hls.min.js (npm's hls.js/dist/hls.min.js)",
                rule="player.hlsjs",
            )
        self.host = host
        self.port = port
        self.hls_config = hls_config or {}
        self.source = ""
        self._template = _page_template()
        self._runner: Any = None

    @property
    def origin(self) -> str:
        return f"http://{url_host(self.host)}:{self.port}"

    @property
    def url(self) -> str:
        return self.origin + "/"

    def render(self) -> str:
        """The page, with its configuration and the hls.js script tag filled in."""
        config = json.dumps({"src": self.source, "hlsConfig": self.hls_config})
        if self.hlsjs is not None:
            script = '<script src="/hls.min.js"></script>'
        else:
            script = (
                f'<script src="{html.escape(HLSJS_CDN_URL)}" integrity="{HLSJS_SRI}" '
                'crossorigin="anonymous"></script>'
            )
        # '</' inside a script element would end it early.
        return self._template.replace("{{CONFIG}}", config.replace("</", "<\\/")).replace(
            "{{HLSJS_SCRIPT}}", script
        )

    async def start(self) -> None:
        from aiohttp import web

        async def page(_request: web.Request) -> web.StreamResponse:
            return web.Response(
                text=self.render(), content_type="text/html", headers={"Cache-Control": "no-store"}
            )

        app = web.Application()
        app.router.add_get("/", page)
        if self.hlsjs is not None:
            hlsjs = self.hlsjs

            async def script(_request: web.Request) -> web.StreamResponse:
                return web.FileResponse(hlsjs, headers={"Content-Type": "text/javascript"})

            app.router.add_get("/hls.min.js", script)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        try:
            # Every address of a name on the one port the origin names (msd_async._listen).
            sockets = await listen(self.host, self.port)
            await serve_sockets(runner, sockets)
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(sockets[0].getsockname()[1])

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
