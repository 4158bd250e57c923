"""A small video server over a MediaStore container, with FastAPI, uvicorn and msd_async.web.

    python examples/web_fastapi.py --endpoint http://127.0.0.1:9000 --listen 127.0.0.1:8080

The same routes as ``web_aiohttp.py``: ``GET /?path=folder`` lists a folder (videos play in
the page, with seeking); ``GET``/``HEAD /objects/<path>`` serves an object (``?redirect=1``:
302 to a presigned URL); ``PUT /objects/<path>`` uploads the body as it arrives
(``?streaming=1`` for STREAMING). Credentials and region come from AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY (AWS_SESSION_TOKEN) and AWS_REGION. SIGTERM or Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import signal
import sys

import uvicorn
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import HTMLResponse

import msd_async
from msd_async.web.asgi import accept_upload, serve_object


def make_app(store: msd_async.ContainerClient) -> FastAPI:
    app = FastAPI()
    app.state.store = store

    @app.get("/", response_class=HTMLResponse)
    async def listing(request: Request, path: str = "") -> str:
        folder, rows = path.strip("/"), []
        try:
            items = [item async for item in request.app.state.store.list_items(folder or None)]
        except msd_async.InvalidPathError as exc:  # a name MediaStore cannot have ("a//b")
            raise HTTPException(400, exc.message) from None
        for item in items:
            full = html.escape(f"{folder}/{item.name}" if folder else item.name)
            name = html.escape(item.name)
            if item.type == "FOLDER":
                rows.append(f'<li><a href="/?path={full}">{name}/</a></li>')
            elif (item.content_type or "").startswith("video/"):
                rows.append(f'<li>{name}<br><video controls width="480" '
                            f'src="/objects/{full}"></video></li>')
            else:
                rows.append(f'<li><a href="/objects/{full}">{name}</a> '
                            f"({item.content_length:,} bytes)</li>")
        return f"<h1>/{html.escape(folder)}</h1><ul>{''.join(rows) or '<li>(empty)</li>'}</ul>"

    @app.api_route("/objects/{path:path}", methods=["GET", "HEAD"])
    async def get_object(path: str, request: Request, redirect: int = 0) -> Response:
        return await serve_object(request, request.app.state.store, path, redirect=redirect == 1)

    @app.put("/objects/{path:path}")
    async def put_object(path: str, request: Request, streaming: int = 0) -> Response:
        return await accept_upload(request, request.app.state.store, path,
                                   streaming=streaming == 1)

    return app


async def main(endpoint: str, listen: tuple[str, int]) -> None:
    host, port = listen
    async with msd_async.Session(credentials=msd_async.EnvironmentCredentials()) as session:
        app = make_app(session.container(endpoint))
        server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        serving = asyncio.create_task(server.serve())
        # uvicorn has no "started" event: look until it is bound (or has failed to bind).
        while not server.started and not serving.done():
            await asyncio.wait({serving}, timeout=0.02)
        if server.started:
            bound = server.servers[0].sockets[0].getsockname()[1]
            print(f"web: http://{host}:{bound}", flush=True)
        await serving  # uvicorn stops on SIGTERM/SIGINT, then re-raises the signal to us


def listen_address(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST:PORT (PORT 0-65535)")
    return host, int(port)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--endpoint", required=True, help="the container's data endpoint URL")
    parser.add_argument("--listen", default="127.0.0.1:8080", type=listen_address,
                        help="HOST:PORT (PORT may be 0)")
    args = parser.parse_args()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)  # after uvicorn's graceful stop: exit 0
    try:
        asyncio.run(main(args.endpoint, args.listen))
    except (msd_async.MediaStoreError, OSError, ValueError) as exc:
        sys.exit(f"web_fastapi: {exc}")
