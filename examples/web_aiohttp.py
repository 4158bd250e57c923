"""A small video server over a MediaStore container, with aiohttp.web and msd_async.web.

    python examples/web_aiohttp.py --endpoint http://127.0.0.1:9000 --listen 127.0.0.1:8080

``GET /?path=folder`` lists a folder (videos play in the page, with seeking);
``GET``/``HEAD /objects/<path>`` serves an object (ranges, conditional requests;
``?redirect=1`` answers 302 to a presigned URL); ``PUT /objects/<path>`` uploads the request
body as it arrives (``?streaming=1`` for STREAMING). Credentials and region come from
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (AWS_SESSION_TOKEN) and AWS_REGION. SIGTERM or
Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import signal
import sys

from aiohttp import web

import msd_async
from msd_async.web.aiohttp import accept_upload, expect_handler, serve_object

STORE = web.AppKey("store", msd_async.ContainerClient)


async def listing(request: web.Request) -> web.Response:
    folder = request.query.get("path", "").strip("/")
    rows = []
    try:
        items = [item async for item in request.app[STORE].list_items(folder or None)]
    except msd_async.InvalidPathError as exc:  # a name MediaStore cannot have ("a//b")
        raise web.HTTPBadRequest(text=exc.message) from None
    for item in items:
        path = f"{folder}/{item.name}" if folder else item.name
        name = html.escape(item.name)
        if item.type == "FOLDER":
            rows.append(f'<li><a href="/?path={html.escape(path)}">{name}/</a></li>')
        elif (item.content_type or "").startswith("video/"):
            rows.append(f'<li>{name}<br><video controls width="480" '
                        f'src="/objects/{html.escape(path)}"></video></li>')
        else:
            rows.append(f'<li><a href="/objects/{html.escape(path)}">{name}</a> '
                        f"({item.content_length:,} bytes)</li>")
    page = f"<h1>/{html.escape(folder)}</h1><ul>{''.join(rows) or '<li>(empty)</li>'}</ul>"
    return web.Response(text=page, content_type="text/html")


async def get_object(request: web.Request) -> web.StreamResponse:
    redirect = request.query.get("redirect") == "1"
    return await serve_object(request, request.app[STORE], request.match_info["path"],
                              redirect=redirect)


async def put_object(request: web.Request) -> web.StreamResponse:
    streaming = request.query.get("streaming") == "1"
    return await accept_upload(request, request.app[STORE], request.match_info["path"],
                               streaming=streaming)


async def main(endpoint: str, listen: tuple[str, int]) -> None:
    host, port = listen
    async with msd_async.Session(credentials=msd_async.EnvironmentCredentials()) as session:
        app = web.Application()
        app[STORE] = session.container(endpoint)
        app.router.add_get("/", listing)
        app.router.add_get("/objects/{path:.+}", get_object)  # GET and HEAD
        # 413 before "100 Continue" for a Content-Length over the limit
        store = app[STORE]
        app.router.add_put("/objects/{path:.+}", put_object, expect_handler=expect_handler(
            lambda r: store.streaming_limit if r.query.get("streaming") == "1"
            else store.standard_limit))
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
            print(f"web: http://{host}:{runner.addresses[0][1]}", flush=True)
            stop = asyncio.Event()
            for signum in (signal.SIGTERM, signal.SIGINT):
                asyncio.get_running_loop().add_signal_handler(signum, stop.set)
            await stop.wait()
        finally:
            await runner.cleanup()


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
    try:
        asyncio.run(main(args.endpoint, args.listen))
    except (msd_async.MediaStoreError, OSError, ValueError) as exc:
        sys.exit(f"web_aiohttp: {exc}")
