"""What serving objects through msd_async.web's aiohttp helper costs.

Three processes on loopback: the origin (``benchmarks/_sink.py``: a 25 MB object, 206 for a
Range, no SigV4 verification, so the origin is not what is measured), the proxy (an
aiohttp.web app whose handler is ``msd_async.web.aiohttp.serve_object``; started by this
script with ``--proxy``), and this process, the load generator.

Modes, each with ``--clients`` concurrent clients reading ``--requests`` 1 MiB ranges spread
over the object (every response body read and checked for length):

* ``direct-msd``: msd_async ``get_object(range=...)`` straight from the origin: what reading
  the object yourself costs (this process's CPU per request);
* ``direct-aiohttp``: raw aiohttp GETs straight from the origin (the floor of a client);
* ``proxy``: raw aiohttp GETs from the proxy; the proxy's CPU per request is read from
  ``/proc/<pid>/stat``. *Added CPU per request* = proxy CPU/request - direct-msd CPU/request:
  what the helper costs beyond reading the object with msd_async.

Then ``--slow-clients`` clients each GET the whole object through the proxy and read
nothing; once the proxy's RSS is stable, (RSS - RSS before) / clients is the memory per slow
client (back-pressure: the proxy must not buffer the object).

Run: ``python benchmarks/bench_web.py [--clients 50] [--requests 2000] [--repeats 3]
[--slow-clients 20] [--no-write] [--note TEXT]``. Writes ``benchmarks/results/web.json``
and ``web.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
MIB = 1024 * 1024
OBJECT_SIZE = 25_000_000
REGION = "us-east-1"
TICKS = os.sysconf("SC_CLK_TCK")


# --- the proxy process -------------------------------------------------------------------


async def _serve_forever(get: Any) -> None:
    """``GET /objects/{path}`` answered by ``get`` on a free loopback port, announced on
    stdout as ``proxy: URL``, until the process is killed."""
    from aiohttp import web

    app = web.Application()
    app.router.add_get("/objects/{path:.+}", get)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    print(f"proxy: http://127.0.0.1:{runner.addresses[0][1]}", flush=True)
    await asyncio.Event().wait()


async def serve_proxy(endpoint: str) -> None:
    from aiohttp import web

    from msd_async import Credentials, Session
    from msd_async.web.aiohttp import serve_object

    async with Session(credentials=Credentials("AKIDBENCH", "secret"), region=REGION) as s:
        store = s.container(endpoint)

        async def get(request: web.Request) -> web.StreamResponse:
            return await serve_object(request, store, request.match_info["path"])

        await _serve_forever(get)


async def serve_floor_proxy(endpoint: str) -> None:
    """The floor under the proxy's CPU (``--floor``): a bare aiohttp.web handler that GETs
    the range from the origin with an unsigned ``aiohttp.ClientSession`` and streams the
    body back as it arrives; no signing, no validation, no conditional requests."""
    from aiohttp import web

    copied = ("Content-Type", "Content-Length", "Content-Range", "ETag", "Last-Modified")
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=256), auto_decompress=False
    ) as http:

        async def get(request: web.Request) -> web.StreamResponse:
            headers = {"Range": request.headers["Range"]} if "Range" in request.headers else {}
            url = f"{endpoint}/{request.match_info['path']}"
            async with http.get(url, headers=headers) as upstream:
                response = web.StreamResponse(status=upstream.status)
                for name in copied:
                    if name in upstream.headers:
                        response.headers[name] = upstream.headers[name]
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response

        await _serve_forever(get)


# --- measuring -----------------------------------------------------------------------------


def start(args: list[str], prefix: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith(prefix):
        proc.kill()
        raise SystemExit(f"{args[0]} did not start: {line!r}")
    return proc, line.split(" ", 1)[1].strip()


def proc_cpu(pid: int) -> float:
    return sum(proc_cpu_split(pid))


def proc_cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS  # utime, stime


def proc_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def ranges(n: int) -> list[tuple[int, int]]:
    span = OBJECT_SIZE - MIB
    return [((i * 7_919 * 4096) % span, (i * 7_919 * 4096) % span + MIB - 1) for i in range(n)]


async def run_load(
    one: Any, n: int, clients: int, proxy_pid: int | None, sink_pid: int | None = None
) -> dict[str, float]:
    work = iter(ranges(n))

    async def worker() -> None:
        for first, last in work:
            await one(first, last)

    cpu0, wall0 = time.process_time(), time.perf_counter()
    sys0 = os.times().system
    proxy0 = proc_cpu_split(proxy_pid) if proxy_pid else (0.0, 0.0)
    sink0 = proc_cpu(sink_pid) if sink_pid else 0.0
    await asyncio.gather(*(worker() for _ in range(clients)))
    wall = time.perf_counter() - wall0
    result = {
        "mb_per_s": n * MIB / wall / 1e6,
        "requests_per_s": n / wall,
        "client_cpu_us": (time.process_time() - cpu0) / n * 1e6,
        # The kernel's share (socket reads and writes, epoll): no Python change reaches it.
        "client_sys_us": (os.times().system - sys0) / n * 1e6,
    }
    if sink_pid:
        # The origin's share: all three processes share the 2 cores, so throughput follows
        # the CPU every request costs in all of them.
        result["origin_cpu_us"] = (proc_cpu(sink_pid) - sink0) / n * 1e6
    if proxy_pid:
        user, system = proc_cpu_split(proxy_pid)
        result["proxy_cpu_us"] = (user + system - sum(proxy0)) / n * 1e6
        result["proxy_sys_us"] = (system - proxy0[1]) / n * 1e6
    return result


async def measure(
    args: argparse.Namespace, origin: str, proxy: str, proxy_pid: int, sink_pid: int,
    floor: tuple[str, int] | None = None,
) -> dict[str, Any]:
    from msd_async import Credentials, Limits, Session

    limits = Limits(max_connections=max(256, args.clients))
    connector = aiohttp.TCPConnector(limit=args.clients * 2)
    async with (
        Session(credentials=Credentials("AKIDBENCH", "secret"), region=REGION,
                limits=limits) as session,
        aiohttp.ClientSession(connector=connector) as http,
    ):
        store = session.container(origin)

        async def direct_msd(first: int, last: int) -> None:
            async with store.get_object("bench/object.bin", range=(first, last)) as obj:
                assert len(await obj.read()) == last - first + 1

        async def raw(url: str, first: int, last: int) -> None:
            async with http.get(url, headers={"Range": f"bytes={first}-{last}"}) as resp:
                assert resp.status == 206, resp.status
                assert len(await resp.read()) == last - first + 1

        async def direct_aiohttp(first: int, last: int) -> None:
            await raw(f"{origin}/bench/object.bin", first, last)

        async def via_proxy(first: int, last: int) -> None:
            await raw(f"{proxy}/objects/bench/object.bin", first, last)

        modes = {"direct-msd": (direct_msd, None), "direct-aiohttp": (direct_aiohttp, None),
                 "proxy": (via_proxy, proxy_pid)}
        if floor is not None:
            floor_url, floor_pid = floor

            async def via_floor_proxy(first: int, last: int) -> None:
                await raw(f"{floor_url}/objects/bench/object.bin", first, last)

            modes["proxy-floor"] = (via_floor_proxy, floor_pid)
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in modes}
        for one, pid in modes.values():  # warm-up: open the connections
            await run_load(one, args.clients * 2, args.clients, pid)
        order = list(modes)
        for repeat in range(args.repeats):
            for name in order[repeat % len(order):] + order[: repeat % len(order)]:
                one, pid = modes[name]
                runs[name].append(
                    await run_load(one, args.requests, args.clients, pid, sink_pid)
                )
                print(f"  repeat {repeat + 1} {name:15} {runs[name][-1]}", flush=True)
    summary = {name: {key: statistics.median(r[key] for r in rs) for key in rs[0]}
               for name, rs in runs.items()}
    return {"runs": runs, "summary": summary}


async def slow_clients(count: int, proxy: str, proxy_pid: int) -> dict[str, Any]:
    """``count`` clients GET the whole 25 MB object through the proxy and read nothing."""
    host, port = proxy.removeprefix("http://").split(":")
    # One request first, so the first client does not pay for lazily initialised code.
    async with aiohttp.ClientSession() as http, http.get(
        f"{proxy}/objects/bench/object.bin", headers={"Range": "bytes=0-1023"}
    ) as resp:
        await resp.read()
    await asyncio.sleep(0.5)
    before = proc_rss(proxy_pid)
    conns = []
    for _ in range(count):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /objects/bench/object.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        conns.append((reader, writer))
    for reader, _ in conns:
        assert (await reader.readline()).startswith(b"HTTP/1.1 200")
    # Wait until socket buffers are full and the proxy's RSS stops growing.
    samples = [proc_rss(proxy_pid)]
    for _ in range(40):
        await asyncio.sleep(0.25)
        samples.append(proc_rss(proxy_pid))
        if len(samples) > 8 and max(samples[-8:]) - min(samples[-8:]) < 256 * 1024:
            break
    during = max(samples[-8:])
    for _, writer in conns:
        writer.transport.abort()
    return {
        "clients": count,
        "object_bytes": OBJECT_SIZE,
        "proxy_rss_before": before,
        "proxy_rss_during": during,
        "per_client_bytes": (during - before) / count,
    }


def total_cpu(row: dict[str, float]) -> float:
    """CPU per request in the load generator, the origin and (when used) the proxy."""
    return row["client_cpu_us"] + row["origin_cpu_us"] + row.get("proxy_cpu_us", 0.0)


def markdown(result: dict[str, Any]) -> str:
    s = result["summary"]
    msd, raw, proxy = s["direct-msd"], s["direct-aiohttp"], s["proxy"]
    added = proxy["proxy_cpu_us"] - msd["client_cpu_us"]
    slow = result["slow_clients"]
    lines = [
        "# Web helper benchmark (`benchmarks/bench_web.py`)",
        "",
        f"Command: `{result['command']}`  ",
        f"Date: {result['date']}; {result['machine']}; load average at start "
        f"{result['load_average']}.",
        "",
        f"{result['clients']} concurrent clients, {result['requests']} GETs of 1 MiB ranges per "
        f"run, median of {result['repeats']} runs. Origin: `benchmarks/_sink.py` (own process); "
        "proxy: aiohttp.web + `msd_async.web.aiohttp.serve_object` (own process).",
        "",
        "| mode | MB/s | requests/s | client CPU µs/req | of it system | proxy CPU µs/req "
        "| of it system | origin CPU µs/req | all three µs/req |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in s.items():
        proxy_cpu = f"{row['proxy_cpu_us']:.0f}" if "proxy_cpu_us" in row else "-"
        proxy_sys = f"{row['proxy_sys_us']:.0f}" if "proxy_sys_us" in row else "-"
        lines.append(f"| {name} | {row['mb_per_s']:.0f} | {row['requests_per_s']:.0f} | "
                     f"{row['client_cpu_us']:.0f} | {row['client_sys_us']:.0f} | "
                     f"{proxy_cpu} | {proxy_sys} | {row['origin_cpu_us']:.0f} | "
                     f"{total_cpu(row):.0f} |")
    lines += [
        "",
        f"* Throughput through the proxy: **{proxy['mb_per_s'] / msd['mb_per_s']:.2f}x** of "
        f"msd_async reading the origin directly ({proxy['mb_per_s'] / raw['mb_per_s']:.2f}x of "
        "raw aiohttp).",
        f"* Proxy CPU per request: {proxy['proxy_cpu_us']:.0f} µs, against "
        f"{msd['client_cpu_us']:.0f} µs for msd_async reading the same range directly: "
        f"**{added:.0f} µs added per request** "
        f"({proxy['proxy_cpu_us'] / msd['client_cpu_us']:.2f}x): the server side of "
        "the exchange, mostly writing 1 MiB into the client's socket (in a cProfile of the "
        "proxy, `socket.send` was ~30% of its time, aiohttp's client parser ~15%; the "
        "helper's own Python, a few %).",
        f"* Where the throughput goes: the origin, the proxy and the load generator share "
        f"{os.cpu_count()} cores, so requests/s follow the CPU a request costs in all of them: "
        f"{total_cpu(msd):.0f} µs direct, {total_cpu(proxy):.0f} µs through the proxy, a "
        f"ceiling of **{total_cpu(msd) / total_cpu(proxy):.2f}x** for the proxy's throughput "
        "on this machine. Of the proxy's own CPU, "
        f"{proxy['proxy_sys_us']:.0f} µs/request is the kernel's (reading 1 MiB from the "
        f"origin's socket and writing it into the client's), against "
        f"{msd['client_sys_us']:.0f} µs for the direct read.",
        f"* Memory per slow client: {slow['clients']} clients GET the "
        f"{slow['object_bytes']:,}-byte object through a freshly started proxy and read "
        f"nothing: its RSS went {slow['proxy_rss_before'] / MIB:.1f} → "
        f"{slow['proxy_rss_during'] / MIB:.1f} MiB, **{slow['per_client_bytes'] / MIB:.2f} MiB "
        "per slow client**: the chunks in flight, not the object (back-pressure stops "
        "reading the origin while the client's socket is full).",
        "",
        "Caveats: 2 cores shared by the origin, the proxy and the load generator, and right "
        "now by other engineers' test runs (see the load average): wall-clock throughput is "
        "the noisiest number; CPU per request is steadier. Loopback, no TLS. The proxy's CPU "
        "is read from /proc at 10 ms resolution over whole runs.",
    ]
    floor = s.get("proxy-floor")
    if floor is not None:
        lines[-2:-2] = [
            f"* The floor (`--floor`): a bare aiohttp proxy (no signing, no checks: "
            f"`serve_floor_proxy`) costs {floor['proxy_cpu_us']:.0f} µs per request "
            f"({floor['proxy_sys_us']:.0f} of it system), "
            f"**{floor['proxy_cpu_us'] / msd['client_cpu_us']:.2f}x** msd_async's direct "
            f"read, and carries {floor['mb_per_s'] / msd['mb_per_s']:.2f}x its throughput; "
            f"`serve_object` costs {proxy['proxy_cpu_us'] / floor['proxy_cpu_us']:.2f}x the "
            "floor.",
        ]
    if result.get("note"):
        lines += ["", f"Note: {result['note']}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--slow-clients", type=int, default=20)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--note", default="")
    parser.add_argument(
        "--floor", action="store_true",
        help="also run a bare aiohttp proxy (no signing, no checks) as mode proxy-floor; "
        "writes results/web-floor.* instead of web.*",
    )
    parser.add_argument("--proxy", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--floor-proxy", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.proxy:
        asyncio.run(serve_proxy(args.endpoint))
        return
    if args.floor_proxy:
        asyncio.run(serve_floor_proxy(args.endpoint))
        return
    load = os.getloadavg()
    sink, origin = start([str(HERE / "_sink.py"), "--port", "0"], "endpoint: ")
    try:
        # A fresh proxy for the slow clients: after the load runs the heap keeps its peak,
        # and new clients would reuse freed memory, hiding what each one costs.
        proxy_proc, proxy = start([__file__, "--proxy", "--endpoint", origin], "proxy: ")
        try:
            slow = asyncio.run(slow_clients(args.slow_clients, proxy, proxy_proc.pid))
        finally:
            proxy_proc.kill()
            proxy_proc.wait()
        proxy_proc, proxy = start([__file__, "--proxy", "--endpoint", origin], "proxy: ")
        floor_proc = None
        try:
            floor = None
            if args.floor:
                floor_proc, floor_url = start(
                    [__file__, "--floor-proxy", "--endpoint", origin], "proxy: "
                )
                floor = (floor_url, floor_proc.pid)
            result = asyncio.run(
                measure(args, origin, proxy, proxy_proc.pid, sink.pid, floor)
            )
        finally:
            for proc in (proxy_proc, floor_proc):
                if proc is not None:
                    proc.kill()
                    proc.wait()
        result["slow_clients"] = slow
    finally:
        sink.kill()
        sink.wait()
    result.update(
        command=shlex.join(["python", "benchmarks/bench_web.py", *sys.argv[1:]]),
        date=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        machine=f"{os.cpu_count()} CPUs, {platform.python_implementation()} "
                f"{platform.python_version()}, {platform.machine()}",
        load_average=" ".join(f"{x:.2f}" for x in load),
        clients=args.clients, requests=args.requests, repeats=args.repeats, note=args.note,
    )
    text = markdown(result)
    print(text)
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        name = "web-floor" if args.floor else "web"
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        (RESULTS / f"{name}.md").write_text(text)


if __name__ == "__main__":
    main()
