"""msd_async's own CPU per request, with aiohttp stubbed out.

Swaps the session's transport for one that answers at once (canned DescribeObject headers,
a canned PutObject body, a 4-byte ranged body), so what is timed is only msd_async's code:
validating and building the request, signing it, the retry driver, parsing the answer and,
for a GET, the ObjectStream. Run warm, best of 7 rounds of 5,000 calls: on a busy machine
the minimum is the steadiest figure, and real requests cost several times this (caches are
cold after each wait on the network). Prints one line per operation; writes nothing.

Run: ``python benchmarks/bench_own_cost.py``. To compare another checkout's code:
``PYTHONPATH=/path/to/other/src python benchmarks/bench_own_cost.py``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from multidict import CIMultiDict, CIMultiDictProxy

from msd_async import Credentials, Session

ROUNDS, CALLS = 7, 5000
SEGMENT = os.urandom(200_000)
_COMMON = {
    "Content-Type": "video/mp4",
    "ETag": '"2a7f16b3d8e8b4c6f0e1d2c3b4a59687"',
    "Last-Modified": "Tue, 05 May 2026 10:00:00 GMT",
    "x-amzn-RequestId": "BENCH",
}
HEAD = CIMultiDictProxy(CIMultiDict({**_COMMON, "Content-Length": "25000000"}))
RANGED = CIMultiDictProxy(
    CIMultiDict({**_COMMON, "Content-Length": "4", "Content-Range": "bytes 0-3/25000000"})
)
PUT_BODY = (
    b'{"ContentSHA256": "' + b"b" * 64 + b'", "ETag": "2a7f16b3d8e8b4c6f0e1d2c3b4a59687", '
    b'"StorageClass": "TEMPORAL"}'
)


class _Answer:
    def __init__(self, method: str) -> None:
        self.status = 206 if method == "GET" else 200
        self.headers = RANGED if method == "GET" else HEAD
        self._left = 4 if method == "GET" else 0

    def release(self) -> None:
        pass

    def close(self) -> None:
        pass

    async def read(self) -> bytes:
        return PUT_BODY

    async def read_some(self, n: int = -1) -> bytes:
        if not self._left:
            return b""
        self._left -= 1
        return b"x"


class _InstantTransport:
    closed = False

    class timeouts:
        read = 30.0

    @staticmethod
    def host_header(base: str, host: str) -> dict[str, str]:
        return {}  # as the real transport answers for an endpoint's own host:port

    async def send(self, method: str, url: str, headers: Any, **kwargs: Any) -> _Answer:
        body, meter = kwargs.get("body"), kwargs.get("meter")
        if body is not None and meter is not None:
            async for chunk in body.chunks():
                meter.check(chunk)
                meter.sent_chunk(chunk)
        return _Answer(method)

    async def aclose(self) -> None:
        pass


async def best_us(op: Callable[[int], Awaitable[object]]) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        t0 = time.process_time()
        for i in range(CALLS):
            await op(i)
        best = min(best, (time.process_time() - t0) / CALLS * 1e6)
    return best


async def main() -> None:
    async with Session(credentials=Credentials("AKID", "SECRET"), region="us-east-1") as s:
        # Replace the transport before its first use, wherever this checkout keeps it (the
        # session's context now; the session itself in older code).
        context = getattr(s, "_context", None)
        if context is not None and isinstance(type(context).transport, property):
            context._transport = _InstantTransport()
        elif context is not None:
            context.transport = _InstantTransport()
        elif isinstance(getattr(type(s), "_transport", None), property):
            s._transport_or_none = _InstantTransport()  # type: ignore[attr-defined]
        else:
            s._transport = _InstantTransport()  # type: ignore[misc]
        store = s.container("http://127.0.0.1:9")

        async def describe(i: int) -> object:
            return await store.describe_object(f"live/720p/seg_{i:05d}.ts")

        async def put(i: int) -> object:
            return await store.put_object(
                f"live/720p/seg_{i:05d}.ts", SEGMENT, content_type="video/mp4"
            )

        async def get(i: int) -> object:
            async with store.get_object("vod/movie.mp4", range=(0, 3)) as obj:
                return await obj.read()

        for name, op in (("DescribeObject", describe), ("PutObject 200 KB", put),
                         ("ranged GetObject + read", get)):  # fmt: skip
            print(f"{name:26s} {await best_us(op):6.1f} us of msd_async's own CPU per call")


if __name__ == "__main__":
    asyncio.run(main())
