"""Where msd_async's client CPU per request goes, layer by layer, against raw aiohttp.

The scoreboard compares whole clients in separate processes; this takes the gap apart. One
process, one peer (``benchmarks/_sink.py``), one scenario, and a ladder of variants that
each add one layer of what ``msd_async`` does on top of the one before, run in alternating
rounds (the order rotates every round) so they share the machine's load:

================  ========================================================================
variant           what one request does
================  ========================================================================
``aiohttp``       the scoreboard's raw aiohttp client: default ``ClientSession``
                  (``TCPConnector(limit=100)``, ``ClientTimeout(total=300,
                  sock_connect=30)``), ``async with session.head/put/get(...)`` + ``read()``
``settings-read``  the same request on a session built as msd_async's transport built it
                  before it had its own watchdog (``limit=0``, ``ClientTimeout(total=None,
                  sock_connect=30, sock_read=30)``, ``auto_decompress=False``, default
                  headers), sent as the transport sends it (``URL(encoded=True)``,
                  ``allow_redirects=False``)
``settings``      the same without ``sock_read``, as the transport builds it now: the
                  difference is what aiohttp's timer re-armed on every read costs
``headers``       + the headers msd_async adds (``X-Amz-Date``,
                  ``Authorization``; signed once and reused): what they cost aiohttp
``signed``        + building the request and signing it, per request
``parsed``        + parsing the answer (``parse_object_info`` / ``parse_put_result``)
``transport``     ``signed`` through ``msd_async.transport.Transport.send`` (the gate, the
                  upload payload, the error translation, ``Response``)
``msd``           the public call (``describe_object``, ``put_object``, ``get_object`` +
                  ``read``): adds the retry driver, credentials, the client's plumbing
================  ========================================================================

Not on the ladder, only when named in ``--variants``: ``below-request``, the ``settings``
request driven below ``ClientSession.request`` (an ``aiohttp.ClientRequest`` sent on a
connection from the connector, as ``ClientSession._request`` does once it has merged its
options: no tracing, cookies, redirects, middlewares or netrc/proxy lookups). What a
client of aiohttp could save by not going through ``request()`` at all: the floor under
the scoreboard's raw aiohttp client.

Reported: the median, over rounds, of process CPU (user+sys) per request, and each
variant's difference from the one above it.

Run: ``python benchmarks/bench_decompose.py --scenario describe@32 [--loop uvloop]
[--rounds 9] [--requests 2000] [--variants ...]``. Prints a table; writes nothing unless
``--json FILE``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from msd_async import Credentials, Session, protocol  # noqa: E402
from msd_async.signing import SigV4Signer  # noqa: E402
from msd_async.transport import USER_AGENT  # noqa: E402
from run import PINNED_MALLOC, start_sink  # noqa: E402

REGION = "us-east-1"
AKID, SECRET = "AKIDLOCALMEDIASTORE", "local-mediastore-secret-key"
OBJECT_SIZE = 25_000_000
RANGE_SIZE = 1024 * 1024
SCENARIOS = {
    # key: (operation, concurrency, body size)
    "describe@32": ("describe", 32, 0),
    "put-64k@32": ("put", 32, 65536),
    "put-64k@1": ("put", 1, 65536),
    "put-200k@16": ("put", 16, 200_000),
    "get-1m@16": ("get", 16, 0),
}
VARIANTS = [
    "aiohttp",
    "settings-read",
    "settings",
    "headers",
    "signed",
    "parsed",
    "transport",
    "msd",
]
#: Opt-in variants, off the ladder (see the module's docstring).
EXTRA_VARIANTS = ["below-request"]
One = Callable[[int], Awaitable[None]]


def range_for(i: int) -> tuple[int, int]:
    start = (i * 7 * RANGE_SIZE + i * 4099) % (OBJECT_SIZE - RANGE_SIZE)
    return start, start + RANGE_SIZE - 1


async def cpu_per_request(one: One, n: int, concurrency: int) -> float:
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            await one(i)

    gc.collect()
    c0 = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.process_time() - c0) / n * 1e6


def msd_session_kwargs(sock_read: float | None) -> dict[str, Any]:
    return {
        "connector": aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=5.0),
        "timeout": aiohttp.ClientTimeout(
            total=None, connect=None, sock_connect=30.0, sock_read=sock_read
        ),
        "auto_decompress": False,
        "headers": {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
    }


async def run(args: argparse.Namespace, endpoint: str) -> dict[str, list[float]]:
    op, concurrency, size = SCENARIOS[args.scenario]
    body = os.urandom(size) if size else b""
    host = endpoint.split("://", 1)[1]
    signer = SigV4Signer(REGION)
    creds = Credentials(AKID, SECRET)
    content_type = "video/mp4"
    sessions: list[aiohttp.ClientSession] = []

    def path_of(i: int) -> str:
        return f"bench/obj{i % 64}.mp4"

    def signed_headers(request: protocol.Request) -> dict[str, str]:
        """The headers the client sends: the request's and its signature's (aiohttp writes
        the signed Host itself, as for the client: ``Transport.host_header``)."""
        auth = signer.sign(
            creds,
            method=request.method,
            host=host,
            path=request.path,
            query=request.query,
            headers=request.headers,
            payload_hash=request.payload_hash,
        )
        return {**request.headers, **auth}

    def request_of(i: int) -> protocol.Request:
        if op == "describe":
            return protocol.describe_object(path_of(i))
        if op == "put":
            return protocol.put_object(path_of(i), content_type=content_type)
        return protocol.get_object(path_of(i), byte_range=range_for(i))

    def check(status: int, data: bytes) -> None:
        assert status < 300, status
        if op == "get":
            assert len(data) == RANGE_SIZE, len(data)

    def raw_one(session: aiohttp.ClientSession) -> One:
        async def one(i: int) -> None:
            url = f"{endpoint}/{path_of(i)}"
            if op == "describe":
                async with session.head(url) as resp:
                    data = await resp.read()
            elif op == "put":
                async with session.put(
                    url, data=body, headers={"Content-Type": content_type}
                ) as resp:
                    data = await resp.read()
            else:
                first, last = range_for(i)
                async with session.get(url, headers={"Range": f"bytes={first}-{last}"}) as resp:
                    data = await resp.read()
            check(resp.status, data)

        return one

    static: dict[str, dict[str, str]] = {}

    def settings_one(session: aiohttp.ClientSession, level: int) -> One:
        """level 0: the bare request; 1: with the headers msd_async adds (X-Amz-Date,
        Authorization; signed once, reused); 2: signed per request; 3: and parsed."""

        async def one(i: int) -> None:
            request = request_of(i)
            if level >= 2:
                headers = signed_headers(request)
            elif level == 1:
                headers = static.get(request.method)
                if headers is None:
                    headers = static[request.method] = signed_headers(request)
            else:
                headers = dict(request.headers)
            kwargs: dict[str, Any] = {}
            if op == "put":
                kwargs["data"] = body
            resp = await session.request(
                request.method,
                URL(endpoint + request.target, encoded=True),
                headers=headers,
                allow_redirects=False,
                **kwargs,
            )
            if op == "describe":
                resp.release()
                data = b""
                if level >= 3:
                    protocol.parse_object_info(resp.headers)
            else:
                data = await resp.read()
                resp.release()
                if level >= 3 and op == "put":
                    protocol.parse_put_result(data, len(body))
            check(resp.status, data)

        return one

    def below_request_one(session: aiohttp.ClientSession) -> One:
        from aiohttp.client_reqrep import ClientRequest
        from aiohttp.helpers import TimerNoop

        connector = session.connector
        assert connector is not None
        loop = asyncio.get_running_loop()
        timer = TimerNoop()
        timeout = session.timeout
        default_headers = session.headers

        async def one(i: int) -> None:
            request = request_of(i)
            headers = default_headers.copy()
            headers.update(request.headers)
            req = ClientRequest(
                request.method, URL(endpoint + request.target, encoded=True),
                headers=headers, data=body if op == "put" else None, loop=loop,
                response_class=aiohttp.ClientResponse, session=session, timer=timer,
                ssl=True, traces=[],
            )
            conn = await connector.connect(req, traces=[], timeout=timeout)
            assert conn.protocol is not None
            conn.protocol.set_response_params(
                timer=timer, skip_payload=op == "describe", read_until_eof=True,
                auto_decompress=False, read_timeout=None, read_bufsize=2**16,
                timeout_ceil_threshold=5, max_line_size=8190, max_field_size=8190,
                max_headers=128,
            )
            try:
                resp = await req.send(conn)
                try:
                    await resp.start(conn)
                except BaseException:
                    resp.close()
                    raise
            except BaseException:
                conn.close()
                raise
            data = b"" if op == "describe" else await resp.read()
            resp.release()
            check(resp.status, data)

        return one

    async with Session(credentials=creds, region=REGION) as msd:
        store = msd.container(endpoint)
        transport = msd._context.transport

        async def transport_one(i: int) -> None:
            from msd_async.body import Meter, prepare_body

            request = request_of(i)
            headers = signed_headers(request)
            kwargs: dict[str, Any] = {}
            if op == "put":
                kwargs["body"] = prepare_body(body)
                kwargs["meter"] = Meter(limit=25_000_000, limit_rule="body.max-size.standard")
            response = await transport.send(
                request.method, endpoint + request.target, headers, origin=endpoint, **kwargs
            )
            if op == "describe":
                response.release()
                protocol.parse_object_info(response.headers)
                data = b""
            elif op == "put":
                data = await response.read()
                protocol.parse_put_result(data, len(body))
            else:
                data = await response.read()
            check(response.status, data)

        async def msd_one(i: int) -> None:
            if op == "describe":
                info = await store.describe_object(path_of(i))
                assert info.content_length == OBJECT_SIZE
            elif op == "put":
                await store.put_object(path_of(i), body, content_type=content_type)
            else:
                async with store.get_object(path_of(i), range=range_for(i)) as obj:
                    data = await obj.read()
                check(obj.status, data)

        makers: dict[str, Callable[[], One]] = {}

        def session_for(**kwargs: Any) -> aiohttp.ClientSession:
            s = aiohttp.ClientSession(**kwargs)
            sessions.append(s)
            return s

        makers["aiohttp"] = lambda: raw_one(
            session_for(connector=aiohttp.TCPConnector(limit=max(100, concurrency)))
        )
        makers["settings-read"] = lambda: settings_one(session_for(**msd_session_kwargs(30.0)), 0)
        makers["settings"] = lambda: settings_one(session_for(**msd_session_kwargs(None)), 0)
        makers["headers"] = lambda: settings_one(session_for(**msd_session_kwargs(None)), 1)
        makers["signed"] = lambda: settings_one(session_for(**msd_session_kwargs(None)), 2)
        makers["parsed"] = lambda: settings_one(session_for(**msd_session_kwargs(None)), 3)
        makers["transport"] = lambda: transport_one
        makers["msd"] = lambda: msd_one
        makers["below-request"] = lambda: below_request_one(
            session_for(**msd_session_kwargs(None))
        )
        try:
            ones = {name: makers[name]() for name in args.variants}
            for one in ones.values():  # warm-up: connections, lazy imports
                await cpu_per_request(one, args.warmup or max(200, concurrency * 4), concurrency)
            samples: dict[str, list[float]] = {name: [] for name in ones}
            names = list(ones)
            for r in range(args.rounds):
                order = names[r % len(names) :] + names[: r % len(names)]
                for name in order:
                    samples[name].append(
                        await cpu_per_request(ones[name], args.requests, concurrency)
                    )
        finally:
            for s in sessions:
                await s.close()
    return samples


def instructions(args: argparse.Namespace) -> None:
    """Instructions per request of each variant, counted by callgrind (steady under load,
    unlike CPU time): each variant runs in its own process under ``valgrind
    --tool=callgrind`` twice, with ``--requests`` and three times as many after the same
    warm-up, and the difference of the totals is divided by the difference of the counts
    (start-up, imports and warm-up cancel out). Under valgrind the client is ~50x slower
    than the peer, so every wake-up finds the most responses ready: the counts are a
    lower bound of the batching, the same for every variant."""
    import re
    import subprocess
    import tempfile

    counts = (args.requests, 3 * args.requests)
    print(
        f"{args.scenario} on {args.loop}: instructions per request (callgrind, "
        f"{counts[1]} - {counts[0]} requests after {args.warmup or 200} of warm-up)"
    )
    previous = None
    results = {}
    for name in args.variants:
        totals = []
        for n in counts:
            with tempfile.TemporaryDirectory() as tmp:
                out = subprocess.run(
                    [
                        "valgrind",
                        "--tool=callgrind",
                        f"--callgrind-out-file={tmp}/cg.out",
                        sys.executable,
                        __file__,
                        "--scenario",
                        args.scenario,
                        "--loop",
                        args.loop,
                        "--variants",
                        name,
                        "--rounds",
                        "1",
                        "--requests",
                        str(n),
                        "--warmup",
                        str(args.warmup or 200),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
            match = re.search(r"Collected : (\d+)", out.stderr)
            assert match is not None, out.stderr[-2000:]
            totals.append(int(match.group(1)))
        per = (totals[1] - totals[0]) / (counts[1] - counts[0])
        results[name] = per
        step = "" if previous is None else f"{(per - previous) / 1e3:+8.1f}k"
        print(f"  {name:16s} {per / 1e3:8.1f}k {step}", flush=True)
        previous = per
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "scenario": args.scenario,
                    "loop": args.loop,
                    "counts": counts,
                    "command": " ".join(["python", *sys.argv]),
                    "instructions_per_request": results,
                },
                indent=2,
            )
            + "\n"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=list(SCENARIOS), default="describe@32")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument(
        "--variants", nargs="+", choices=VARIANTS + EXTRA_VARIANTS, default=VARIANTS
    )
    parser.add_argument("--json", type=Path, help="also write the samples here")
    parser.add_argument("--warmup", type=int, default=0, help="warm-up requests per variant")
    parser.add_argument(
        "--instructions", action="store_true", help="count instructions under callgrind"
    )
    args = parser.parse_args()
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:
        # The scoreboard's pinned allocator (benchmarks/README.md, "Allocator").
        os.environ.update(PINNED_MALLOC)
        os.execv(sys.executable, [sys.executable, *sys.argv])
    if args.instructions:
        instructions(args)
        return
    load0 = os.getloadavg()
    sink, endpoint = start_sink()
    try:
        if args.loop == "uvloop":
            import uvloop

            samples = uvloop.run(run(args, endpoint))
        else:
            samples = asyncio.run(run(args, endpoint))
    finally:
        sink.terminate()
        sink.wait(10)
    load1 = os.getloadavg()
    print(
        f"{args.scenario} on {args.loop}: CPU µs per request, median of {args.rounds} "
        f"alternating rounds of {args.requests} (load {load0[0]:.2f} -> {load1[0]:.2f})"
    )
    previous = None
    for name, values in samples.items():
        median = statistics.median(values)
        step = "" if previous is None else f"{median - previous:+7.1f}"
        spread = f"[{min(values):6.1f}-{max(values):6.1f}]"
        print(f"  {name:16s} {median:7.1f} {spread} {step}")
        previous = median
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "scenario": args.scenario,
                    "loop": args.loop,
                    "rounds": args.rounds,
                    "requests": args.requests,
                    "loadavg": [load0, load1],
                    "command": " ".join(["python", *sys.argv]),
                    "samples": samples,
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
