"""A bare aiohttp relay: the floor under `msd relay`'s CPU per MB (``bench_relay.py --floor``).

It does the least an HTTP relay in Python on aiohttp can do: an ``aiohttp.web`` server takes
each PUT and streams its body, piece by piece as it arrives, to the same path on the origin
with an ``aiohttp.ClientSession`` (chunked, anonymous: no signing, no publisher, no
playlist handling, no retries, no logging), then answers with the origin's status. What
`msd relay` costs above this is its own work; what this costs is the floor of reading
HTTP from one socket and writing it to another with aiohttp at this bitrate.

Run: ``python benchmarks/_raw_relay.py ORIGIN``; prints ``raw relay: http://127.0.0.1:PORT``
when listening, exits on SIGTERM. Listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web


async def main(origin: str) -> None:
    async with aiohttp.ClientSession(auto_decompress=False) as session:

        async def relay(request: web.Request) -> web.Response:
            async def body() -> AsyncIterator[bytes]:
                async for piece in request.content.iter_any():
                    yield piece

            headers = {}
            if "Content-Type" in request.headers:
                headers["Content-Type"] = request.headers["Content-Type"]
            async with session.put(origin + request.rel_url.path, data=body(),
                                   headers=headers) as answer:
                await answer.read()
                return web.Response(status=answer.status)

        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("PUT", "/{path:.*}", relay)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        print(f"raw relay: http://127.0.0.1:{port}", flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
