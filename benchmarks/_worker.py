"""One benchmark run in a fresh process: one client, one case, one concurrency.

Started by ``benchmarks/run.py`` and ``benchmarks/scoreboard.py``; prints one JSON line with
wall time, CPU time, per-request latency percentiles and peak RSS over the baseline. The
baseline is the RSS after the imports, the client's creation and the body's allocation (the
body is the caller's memory, not the client's); so the delta is what the client itself adds
while uploading or downloading.

``python benchmarks/_worker.py CLIENT CASE --endpoint URL --concurrency C --requests N
[--file PATH] [--size BYTES] [--loop asyncio|uvloop]`` with CLIENT in ``msd aiohttp
aiobotocore boto3 capo`` and CASE in ``stream put-bytes put-file get-range put-small describe
list``. ``put-small`` uploads ``--size`` bytes (STANDARD); ``describe`` is DescribeObject;
``list`` is one whole ListItems listing of the sink's objects (5,000 in pages of 1,000), so
one "request" there is five HTTP requests.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import resource
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REGION = "us-east-1"
AKID, SECRET = "AKIDLOCALMEDIASTORE", "local-mediastore-secret-key"
STREAM_SIZE = 10_000_000
STREAM_CHUNK = 64 * 1024
STANDARD_SIZE = 25_000_000
RANGE_SIZE = 1024 * 1024
OBJECT_SIZE = 25_000_000
CONTENT_TYPE = "video/mp4"
#: Warm-up requests (index < 0) move this many bytes: they open the connections and touch
#: lazily-initialised code before the baseline, without allocating anything body-sized.
WARM_SIZE = 1024
WARM = b"w" * WARM_SIZE
#: Objects the sink lists (its --list-items default), in pages of 1,000.
LIST_ITEMS = 5000
CLIENTS = ["msd", "aiohttp", "aiobotocore", "boto3", "capo"]
CASES = ["stream", "put-bytes", "put-file", "get-range", "put-small", "describe", "list"]
#: Latency of each measured request, in seconds (index >= 0 only).
LATENCIES: list[float] = []


def timed(one: Callable[[int], Awaitable[int]]) -> Callable[[int], Awaitable[int]]:
    """``one`` recording each measured request's latency in LATENCIES."""
    clock = time.perf_counter

    async def run(i: int) -> int:
        if i < 0:
            return await one(i)
        t0 = clock()
        done = await one(i)
        LATENCIES.append(clock() - t0)
        return done

    return run


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank ``q`` percentile (0 < q <= 100) of ``values``."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> int:
    """Start a new peak-RSS window; return the current RSS in KiB (the baseline).

    On Linux, writing 5 to clear_refs resets VmHWM (and ru_maxrss) to the current RSS, so
    transient allocations made before the baseline (imports, building the body) cannot hide
    what the client allocates later. Elsewhere the baseline is ru_maxrss so far.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    current = _status_kib("VmRSS")
    return current if current is not None else peak_rss()


def peak_rss() -> int:
    """Peak RSS in KiB since the last reset."""
    hwm = _status_kib("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def range_for(i: int) -> tuple[int, int]:
    if i < 0:
        return 0, WARM_SIZE - 1
    # Spread over the object, the same sequence for every client.
    start = (i * 7 * RANGE_SIZE + i * 4099) % (OBJECT_SIZE - RANGE_SIZE)
    return start, start + RANGE_SIZE - 1


def stream_chunks(source: bytes) -> Iterator[bytes]:
    # Each chunk is a fresh bytes object, as a live encoder would hand over.
    for start in range(0, len(source), STREAM_CHUNK):
        yield source[start : start + STREAM_CHUNK]


async def astream(source: bytes) -> AsyncIterator[bytes]:
    for chunk in stream_chunks(source):
        yield chunk


async def warm_up(concurrency: int, one: Callable[[int], Awaitable[int]]) -> None:
    await asyncio.gather(*(one(-1 - i) for i in range(concurrency)))


async def run_async(n: int, concurrency: int, one: Callable[[int], Awaitable[int]]) -> int:
    one = timed(one)
    counter = iter(range(n))
    total = 0

    async def worker() -> None:
        nonlocal total
        for i in counter:
            done = await one(i)  # not `total += await ...`: that reads total before awaiting
            total += done

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total


async def bench_msd(args: argparse.Namespace, source: bytes, measure: Callable[..., Any]) -> Any:
    from msd_async import Credentials, Session

    async with Session(credentials=Credentials(AKID, SECRET), region=REGION) as session:
        store = session.container(args.endpoint)
        case = args.case

        async def one(i: int) -> int:
            path = f"bench/obj{i % 64}.mp4"
            src = source if i >= 0 else WARM
            if case == "describe":
                info = await store.describe_object(path)
                assert info.content_length == OBJECT_SIZE, info
                return 0
            if case == "list":
                n = 0
                async for _ in store.list_items():
                    n += 1
                assert n == LIST_ITEMS, n
                return n
            if case == "get-range":
                async with store.get_object(path, range=range_for(i)) as obj:
                    data = await obj.read()
                assert len(data) == (RANGE_SIZE if i >= 0 else WARM_SIZE), len(data)
                return len(data)
            if case == "stream":
                r = await store.put_object(
                    path, astream(src), content_type=CONTENT_TYPE, streaming=True
                )
            elif case == "put-file" and i >= 0:
                # A Path: a str body would be uploaded as its text.
                r = await store.put_object(path, Path(args.file), content_type=CONTENT_TYPE)
            else:
                r = await store.put_object(path, src, content_type=CONTENT_TYPE)
            assert r.size == len(src), r
            return len(src)

        return await measure(one)


async def bench_aiohttp(
    args: argparse.Namespace, source: bytes, measure: Callable[..., Any]
) -> Any:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=max(100, args.concurrency))
    async with aiohttp.ClientSession(connector=connector) as session:
        case = args.case
        base = args.endpoint

        async def one(i: int) -> int:
            url = f"{base}/bench/obj{i % 64}.mp4"
            src = source if i >= 0 else WARM
            if case == "describe":
                async with session.head(url) as resp:
                    await resp.read()
                assert resp.status == 200 and resp.content_length == OBJECT_SIZE
                return 0
            if case == "list":
                n, token = 0, None
                while True:
                    params = {} if token is None else {"NextToken": token}
                    async with session.get(f"{base}/", params=params) as resp:
                        page = json.loads(await resp.read())
                    n += len(page["Items"])
                    token = page.get("NextToken")
                    if not token:
                        break
                assert n == LIST_ITEMS, n
                return n
            if case == "get-range":
                first, last = range_for(i)
                async with session.get(url, headers={"Range": f"bytes={first}-{last}"}) as resp:
                    data = await resp.read()
                assert resp.status == 206 and len(data) == (RANGE_SIZE if i >= 0 else WARM_SIZE)
                return len(data)
            headers = {"Content-Type": CONTENT_TYPE}
            if case == "stream":
                headers["x-amz-upload-availability"] = "STREAMING"
                async with session.put(url, data=astream(src), headers=headers) as resp:
                    await resp.read()
            elif case == "put-file" and i >= 0:
                with open(args.file, "rb") as f:  # noqa: ASYNC230 - the default path under test
                    async with session.put(url, data=f, headers=headers) as resp:
                        await resp.read()
            else:
                async with session.put(url, data=src, headers=headers) as resp:
                    await resp.read()
            assert resp.status == 200, resp.status
            return len(src)

        return await measure(one)


async def bench_aiobotocore(
    args: argparse.Namespace, source: bytes, measure: Callable[..., Any]
) -> Any:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    config = AioConfig(max_pool_connections=max(10, args.concurrency))
    async with get_session().create_client(
        "mediastore-data",
        endpoint_url=args.endpoint,
        region_name=REGION,
        aws_access_key_id=AKID,
        aws_secret_access_key=SECRET,
        config=config,
    ) as client:
        case = args.case

        async def one(i: int) -> int:
            path = f"bench/obj{i % 64}.mp4"
            src = source if i >= 0 else WARM
            if case == "describe":
                head = await client.describe_object(Path=path)
                assert head["ContentLength"] == OBJECT_SIZE, head
                return 0
            if case == "list":
                n, kwargs = 0, {}
                while True:
                    page = await client.list_items(**kwargs)
                    n += len(page["Items"])
                    if not page.get("NextToken"):
                        break
                    kwargs = {"NextToken": page["NextToken"]}
                assert n == LIST_ITEMS, n
                return n
            if case == "get-range":
                first, last = range_for(i)
                resp = await client.get_object(Path=path, Range=f"bytes={first}-{last}")
                async with resp["Body"] as body:
                    data = await body.read()
                assert len(data) == (RANGE_SIZE if i >= 0 else WARM_SIZE)
                return len(data)
            if case == "stream":
                # aiobotocore cannot send an async iterator: gather it into bytes first.
                body = b"".join([c async for c in astream(src)])
                await client.put_object(
                    Path=path, Body=body, ContentType=CONTENT_TYPE, UploadAvailability="STREAMING"
                )
            elif case == "put-file" and i >= 0:
                with open(args.file, "rb") as f:  # noqa: ASYNC230 - the default path under test
                    await client.put_object(Path=path, Body=f, ContentType=CONTENT_TYPE)
            else:
                await client.put_object(Path=path, Body=src, ContentType=CONTENT_TYPE)
            return len(src)

        return await measure(one)


async def bench_capo(args: argparse.Namespace, source: bytes, measure: Callable[..., Any]) -> Any:
    from capo_mediastore_data import AsyncMediaStoreDataClient

    async with AsyncMediaStoreDataClient(
        endpoint=args.endpoint,
        region=REGION,
        credentials={"access_key": AKID, "secret_key": SECRET},
    ) as client:
        case = args.case

        async def one(i: int) -> int:
            path = f"bench/obj{i % 64}.mp4"
            src = source if i >= 0 else WARM
            if case == "describe":
                head = await client.describe_object(path)
                assert head["content_length"] == OBJECT_SIZE, head
                return 0
            if case == "list":
                n, token = 0, None
                while True:
                    page = await client.list_items(next_token=token)
                    n += len(page["items"])
                    token = page.get("next_token")
                    if not token:
                        break
                assert n == LIST_ITEMS, n
                return n
            if case == "get-range":
                first, last = range_for(i)
                async with client.get_object(path, range=f"bytes={first}-{last}") as resp:
                    data = b"".join([chunk async for chunk in resp["body"]])
                assert len(data) == (RANGE_SIZE if i >= 0 else WARM_SIZE)
                return len(data)
            if case == "stream":
                # It sends an async iterator only with a Content-Length known up front (not
                # chunked): a live stream's length is not known, so gather it, as for boto.
                body = b"".join([c async for c in astream(src)])
                await client.put_object(
                    body, path, content_type=CONTENT_TYPE, upload_availability="STREAMING"
                )
            elif case == "put-file":
                raise SystemExit("capo: the put-file case is not implemented")
            else:
                await client.put_object(src, path, content_type=CONTENT_TYPE)
            return len(src)

        return await measure(one)


def bench_boto3(args: argparse.Namespace, source: bytes) -> tuple[int, float, float]:
    import boto3
    from botocore.config import Config

    client = boto3.session.Session().client(
        "mediastore-data",
        endpoint_url=args.endpoint,
        region_name=REGION,
        aws_access_key_id=AKID,
        aws_secret_access_key=SECRET,
        config=Config(max_pool_connections=max(10, args.concurrency)),
    )
    case = args.case

    def one(i: int) -> int:
        path = f"bench/obj{i % 64}.mp4"
        src = source if i >= 0 else WARM
        if case == "describe":
            head = client.describe_object(Path=path)
            assert head["ContentLength"] == OBJECT_SIZE, head
            return 0
        if case == "list":
            n, kwargs = 0, {}
            while True:
                page = client.list_items(**kwargs)
                n += len(page["Items"])
                if not page.get("NextToken"):
                    break
                kwargs = {"NextToken": page["NextToken"]}
            assert n == LIST_ITEMS, n
            return n
        if case == "get-range":
            first, last = range_for(i)
            resp = client.get_object(Path=path, Range=f"bytes={first}-{last}")
            data = resp["Body"].read()
            assert len(data) == (RANGE_SIZE if i >= 0 else WARM_SIZE)
            return len(data)
        if case == "stream":
            # botocore cannot send an iterator either: gather it into bytes first.
            client.put_object(
                Path=path,
                Body=b"".join(stream_chunks(src)),
                ContentType=CONTENT_TYPE,
                UploadAvailability="STREAMING",
            )
        elif case == "put-file" and i >= 0:
            with open(args.file, "rb") as f:
                client.put_object(Path=path, Body=f, ContentType=CONTENT_TYPE)
        else:
            client.put_object(Path=path, Body=src, ContentType=CONTENT_TYPE)
        return len(src)

    def one_timed(i: int) -> int:
        t0 = time.perf_counter()
        done = one(i)
        LATENCIES.append(time.perf_counter() - t0)  # list.append is atomic
        return done

    with ThreadPoolExecutor(args.concurrency) as pool:
        list(pool.map(one, range(-1, -1 - args.concurrency, -1)))  # warm-up, see WARM_SIZE
        gc.collect()
        base_rss = reset_peak_rss()
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        total = sum(pool.map(one_timed, range(args.requests)))
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    client.close()
    return total, wall, cpu, base_rss  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("client", choices=CLIENTS)
    parser.add_argument("case", choices=CASES)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--file")
    parser.add_argument("--size", type=int, default=200_000, help="put-small body bytes")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = parser.parse_args()

    # os.urandom builds the bytes object in place: no transient second copy.
    if args.case == "stream":
        source = os.urandom(STREAM_SIZE)
    elif args.case in ("put-bytes", "put-file"):
        source = os.urandom(STANDARD_SIZE)
    elif args.case == "put-small":
        source = os.urandom(args.size)
    else:
        source = b""

    if args.client == "boto3":
        total, wall, cpu, base_rss = bench_boto3(args, source)
    else:
        result: dict[str, Any] = {}

        async def measure(one: Callable[[int], Awaitable[int]]) -> None:
            await warm_up(args.concurrency, one)
            gc.collect()
            result["base_rss"] = reset_peak_rss()
            cpu0, t0 = cpu_seconds(), time.perf_counter()
            result["total"] = await run_async(args.requests, args.concurrency, one)
            result["wall"] = time.perf_counter() - t0
            result["cpu"] = cpu_seconds() - cpu0

        bench = {
            "msd": bench_msd,
            "aiohttp": bench_aiohttp,
            "aiobotocore": bench_aiobotocore,
            "capo": bench_capo,
        }
        coro = bench[args.client](args, source, measure)
        if args.loop == "uvloop":
            import uvloop

            uvloop.run(coro)
        else:
            asyncio.run(coro)
        total, wall, cpu, base_rss = (
            result["total"],
            result["wall"],
            result["cpu"],
            result["base_rss"],
        )
    peak = peak_rss()
    print(
        json.dumps(
            {
                "client": args.client,
                "case": args.case,
                "concurrency": args.concurrency,
                "requests": args.requests,
                "bytes": total,
                "wall_s": wall,
                "cpu_s": cpu,
                "mb_per_s": total / wall / 1e6,
                "cpu_ms_per_request": cpu / args.requests * 1e3,
                "requests_per_s": args.requests / wall,
                "p50_ms": percentile(LATENCIES, 50) * 1e3,
                "p99_ms": percentile(LATENCIES, 99) * 1e3,
                "loop": "threads" if args.client == "boto3" else args.loop,
                "base_rss_mb": base_rss / 1024,
                "peak_rss_mb": peak / 1024,
                "peak_rss_over_base_mb": (peak - base_rss) / 1024,
            }
        )
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
