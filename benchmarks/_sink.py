"""A fast MediaStore-shaped HTTP/1.1 peer for the transfer benchmarks (run as its own process).

It exists so the benchmark measures the *client*: it does no SigV4 verification, keeps no
objects and never copies a request body. It reads with ``asyncio.BufferedProtocol`` straight
into one reused 1 MiB buffer, de-chunks ``Transfer-Encoding: chunked`` bodies by skipping
over them, and answers:

* ``PUT``: 200 with a PutObject-shaped JSON body (a fixed ContentSHA256/ETag: hashing 25 MB
  here would make the peer, not the client, the bottleneck);
* ``GET``: the bytes of one in-memory object of ``--object-size`` bytes (25 MB by default),
  206 with ``Content-Range`` for a ``Range: bytes=a-b`` request, each response written as a
  memoryview of that buffer (no copy);
* ``HEAD``: the object's DescribeObject headers; ``DELETE``: 200;
* ``GET /`` (ListItems): pages of a fixed listing of ``--list-items`` objects (5,000 by
  default), ``MaxResults`` per page (1,000 by default), ``NextToken`` the next offset; each
  page's JSON is built once and then served as is.

Run: ``python benchmarks/_sink.py [--port 0]``; prints ``endpoint: http://127.0.0.1:PORT``
when listening. Listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import sys
from urllib.parse import parse_qs

OBJECT_SIZE = 25_000_000
ETAG = "2a7f16b3d8e8b4c6f0e1d2c3b4a59687"
SHA = "b" * 64
LAST_MODIFIED = "Tue, 05 May 2026 10:00:00 GMT"
_RANGE = re.compile(rb"bytes=(\d*)-(\d*)$")
LIST_PAGE_SIZE = 1000


class Listing:
    """The ListItems pages of ``count`` objects, each page's response built once."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._pages: dict[tuple[int, int], bytes] = {}

    def response(self, target: bytes) -> bytes:
        query = parse_qs(target.partition(b"?")[2].decode())
        start = int(query.get("NextToken", ["0"])[0])
        size = int(query.get("MaxResults", [str(LIST_PAGE_SIZE)])[0])
        page = self._pages.get((start, size))
        if page is None:
            end = min(self.count, start + size)
            items = [
                {
                    "Name": f"seg_{i:06d}.m4s",
                    "Type": "OBJECT",
                    "ETag": f"{i:032x}",
                    "LastModified": 1777975200.123 + i,
                    "ContentType": "video/iso.segment",
                    "ContentLength": 200_000 + i,
                }
                for i in range(start, end)
            ]
            data: dict[str, object] = {"Items": items}
            if end < self.count:
                data["NextToken"] = str(end)
            body = json.dumps(data).encode()
            page = self._pages[(start, size)] = (
                b"HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\n"
                b"x-amzn-RequestId: SINK\r\nContent-Length: %d\r\n\r\n" % len(body)
            ) + body
        return page

_HEADERS, _BODY, _CHUNK_LINE, _CHUNK_DATA, _CHUNK_END = range(5)
_PUT_BODY = json.dumps({"ContentSHA256": SHA, "ETag": ETAG, "StorageClass": "TEMPORAL"}).encode()
_PUT_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\n"
    b"x-amzn-RequestId: SINK\r\nContent-Length: %d\r\n\r\n" % len(_PUT_BODY)
) + _PUT_BODY


class SinkProtocol(asyncio.BufferedProtocol):
    def __init__(self, blob: memoryview, listing: Listing) -> None:
        self._blob = blob
        self._listing = listing
        self._target = b""
        self._buf = bytearray(1024 * 1024)
        self._view = memoryview(self._buf)
        self._state = _HEADERS
        self._head = bytearray()
        self._line = bytearray()
        self._remaining = 0
        self._method = b""
        self._headers: dict[bytes, bytes] = {}
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        buf = self._buf
        pos = 0
        while pos < nbytes:
            state = self._state
            if state == _HEADERS:
                if not self._head:
                    end = buf.find(b"\r\n\r\n", pos, nbytes)
                    if end >= 0:
                        head = bytes(buf[pos:end])
                        pos = end + 4
                        self._start_request(head)
                        continue
                start = len(self._head)
                self._head += self._view[pos:nbytes]
                end = self._head.find(b"\r\n\r\n", max(0, start - 3))
                if end < 0:
                    return
                consumed = end + 4 - start
                pos += consumed
                self._start_request(bytes(self._head[:end]))
                self._head.clear()
            elif state == _BODY:
                take = min(self._remaining, nbytes - pos)
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._finish_request()
            elif state in (_CHUNK_DATA, _CHUNK_END):
                take = min(self._remaining, nbytes - pos)
                pos += take
                self._remaining -= take
                if not self._remaining:
                    if state == _CHUNK_END:
                        self._finish_request()
                    else:
                        self._state = _CHUNK_LINE
            else:  # _CHUNK_LINE
                if self._line:
                    start = len(self._line)
                    self._line += self._view[pos : min(nbytes, pos + 64)]
                    idx = self._line.find(b"\r\n")
                    if idx < 0:
                        pos = min(nbytes, pos + 64)
                        continue
                    pos += idx + 2 - start
                    line = bytes(self._line[:idx])
                    self._line.clear()
                else:
                    idx = buf.find(b"\r\n", pos, nbytes)
                    if idx < 0:
                        self._line += self._view[pos:nbytes]
                        return
                    line = bytes(buf[pos:idx])
                    pos = idx + 2
                size = int(line.split(b";", 1)[0], 16)
                if size:
                    self._state = _CHUNK_DATA
                    self._remaining = size + 2  # the data and its CRLF
                else:
                    self._state = _CHUNK_END  # no trailers: just the final CRLF
                    self._remaining = 2

    def _start_request(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        self._method, self._target = lines[0].split(b" ", 2)[:2]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        self._headers = headers
        if headers.get(b"expect", b"").lower() == b"100-continue":
            assert self._transport is not None
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            self._state = _CHUNK_LINE
        else:
            self._remaining = int(headers.get(b"content-length", b"0"))
            self._state = _BODY
            if not self._remaining:
                self._finish_request()

    def _finish_request(self) -> None:
        self._state = _HEADERS
        transport = self._transport
        assert transport is not None
        method = self._method
        if method == b"PUT":
            transport.write(_PUT_RESPONSE)
        elif method == b"GET" and (self._target == b"/" or self._target.startswith(b"/?")):
            transport.write(self._listing.response(self._target))
        elif method in (b"GET", b"HEAD"):
            self._object_response(transport, method == b"HEAD")
        else:
            transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    def _object_response(self, transport: asyncio.Transport, head_only: bool) -> None:
        size = len(self._blob)
        first, last = 0, size - 1
        status = b"200 OK"
        extra = b""
        match = _RANGE.match(self._headers.get(b"range", b""))
        if match and (match[1] or match[2]):
            if match[1]:
                first = int(match[1])
                last = min(int(match[2]), size - 1) if match[2] else size - 1
            else:
                first = max(0, size - int(match[2]))
            status = b"206 Partial Content"
            extra = b"Content-Range: bytes %d-%d/%d\r\n" % (first, last, size)
        length = last - first + 1
        transport.write(
            b"HTTP/1.1 %s\r\nContent-Type: video/mp4\r\nContent-Length: %d\r\n"
            b'ETag: "%s"\r\nLast-Modified: %s\r\nAccept-Ranges: bytes\r\n%s'
            b"x-amzn-RequestId: SINK\r\n\r\n"
            % (status, length, ETAG.encode(), LAST_MODIFIED.encode(), extra)
        )
        if not head_only:
            transport.write(self._blob[first : last + 1])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--object-size", type=int, default=OBJECT_SIZE)
    parser.add_argument("--list-items", type=int, default=5000)
    args = parser.parse_args()
    blob = memoryview(bytes(range(256)) * (args.object_size // 256 + 1))[: args.object_size]
    listing = Listing(args.list_items)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SinkProtocol(blob, listing), "127.0.0.1", args.port, backlog=256
    )
    port = server.sockets[0].getsockname()[1]
    print(f"endpoint: http://127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
