"""Raw-HTTP fuzz of the local server: whatever arrives on the socket, it never answers 500,
never logs a crash, and keeps serving signed requests afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server_errors import watching_server_errors

from msd_async import ContainerClient
from msd_async.signing import UNSIGNED_PAYLOAD, SigV4Signer
from msd_async.testing import LocalMediaStore

pytestmark = pytest.mark.anyio

_STATUS = re.compile(rb"HTTP/1\.[01] (\d{3})")


@pytest.fixture
def server_errors() -> Iterator[list[logging.LogRecord]]:
    """ERROR records of the server and of aiohttp's server side (a crashed handler),
    except aiohttp's report of an unparsable request it answered with 400."""
    with watching_server_errors() as handler:
        yield handler.records


@pytest.fixture
def store(mediastore_client: ContainerClient) -> ContainerClient:
    return mediastore_client


async def _exchange(server: LocalMediaStore, data: bytes, *, linger: float = 0.3) -> bytes:
    """Send ``data`` on a fresh connection and return everything the server answers until it
    closes or goes quiet for ``linger`` seconds."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    received = bytearray()
    try:
        try:
            writer.write(data)
            await writer.drain()
        except ConnectionError:
            pass  # the server may hang up before reading everything: that is allowed
        while True:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), linger)
            except (TimeoutError, ConnectionError):
                break
            if not chunk:
                break
            received += chunk
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return bytes(received)


def _statuses(answer: bytes) -> list[int]:
    return [int(m.group(1)) for m in _STATUS.finditer(answer)]


async def _still_serving(store: ContainerClient) -> None:
    await store.put_object("health/check.txt", b"alive")
    assert await store.get_bytes("health/check.txt") == b"alive"


def _signed_head(server: LocalMediaStore, method: str, path: str, **extra: str) -> dict[str, str]:
    host = f"{server.host}:{server.port}"
    headers = {"x-amz-content-sha256": UNSIGNED_PAYLOAD, **{k.lower(): v for k, v in extra.items()}}
    auth = SigV4Signer(server.region).sign(
        server.credentials,
        method=method,
        host=host,
        path=path,
        query=(),
        headers=headers,
        payload_hash=UNSIGNED_PAYLOAD,
    )
    return {"Host": host, **headers, **auth}


def _request(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


H = "Host: 127.0.0.1\r\n"
SIGNED_BAD = "AWS4-HMAC-SHA256 Credential=AKIDLOCALMEDIASTORE/20200101/us-east-1/mediastore/aws4_request, SignedHeaders=host;x-amz-date, Signature="  # noqa: E501
CASES: dict[str, bytes] = {
    "garbage-line": b"GARBAGE\r\n\r\n",
    "method-only": b"GET\r\n\r\n",
    "no-version": b"GET /a\r\n\r\n",
    "http-9.9": b"GET /a HTTP/9.9\r\n" + H.encode() + b"\r\n",
    "binary-junk": bytes(range(256)) * 4,
    "nul-in-line": b"GET /a\x00b HTTP/1.1\r\n" + H.encode() + b"\r\n",
    "lf-only": b"GET /a HTTP/1.1\n" + H.encode().replace(b"\r", b"") + b"\n",
    "huge-request-line": b"GET /" + b"a" * 200_000 + b" HTTP/1.1\r\n\r\n",
    "huge-header": b"GET /a HTTP/1.1\r\n" + H.encode() + b"X-Big: " + b"b" * 200_000 + b"\r\n\r\n",
    "many-headers": b"GET /a HTTP/1.1\r\n" + H.encode()
    + b"".join(b"X-H%d: v\r\n" % i for i in range(5000)) + b"\r\n",
    "header-no-colon": b"GET /a HTTP/1.1\r\n" + H.encode() + b"NoColonHere\r\n\r\n",
    "non-utf8-path-raw": b"GET /\xff\xfe\xfd HTTP/1.1\r\n" + H.encode() + b"\r\n",
    "non-utf8-path-pct": b"GET /%ff%fe/%c3%28 HTTP/1.1\r\n" + H.encode() + b"\r\n",
    "bad-pct": b"GET /%zz/%4 HTTP/1.1\r\n" + H.encode() + b"\r\n",
    "dot-segments": b"GET /a/../../etc/passwd HTTP/1.1\r\n" + H.encode() + b"\r\n",
    "absolute-form": b"GET http://evil.example/a HTTP/1.1\r\n" + H.encode() + b"\r\n",
    "asterisk": b"OPTIONS * HTTP/1.1\r\n" + H.encode() + b"\r\n",
    "connect": b"CONNECT 127.0.0.1:1 HTTP/1.1\r\n" + H.encode() + b"\r\n",
    "unknown-method": b"BREW /pot HTTP/1.1\r\n" + H.encode() + b"\r\n",
    "http-1.0": b"GET /a HTTP/1.0\r\n\r\n",
    "http-1.0-put": b"PUT /a HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc",
    "no-host": b"GET /a HTTP/1.1\r\n\r\n",
    "two-hosts": b"GET /a HTTP/1.1\r\n" + H.encode() + H.encode() + b"\r\n",
    "bad-auth-garbage": b"GET /a HTTP/1.1\r\n" + H.encode() + b"Authorization: garbage\r\n\r\n",
    "bad-auth-empty": b"GET /a HTTP/1.1\r\n" + H.encode() + b"Authorization: \r\n\r\n",
    "bad-auth-truncated": b"GET /a HTTP/1.1\r\n" + H.encode()
    + b"Authorization: AWS4-HMAC-SHA256 Credential=\r\n\r\n",
    "bad-auth-no-sig": b"GET /a HTTP/1.1\r\n" + H.encode()
    + b"X-Amz-Date: 20200101T000000Z\r\nAuthorization: " + SIGNED_BAD.encode() + b"\r\n\r\n",
    "bad-auth-latin1": b"GET /a HTTP/1.1\r\n" + H.encode()
    + b"Authorization: AWS4-HMAC-SHA256 Credential=\xe9\xff/x, SignedHeaders=\xff, "
    b"Signature=zz\r\n\r\n",
    "bad-date": b"GET /a HTTP/1.1\r\n" + H.encode()
    + b"X-Amz-Date: 99999999T999999Z\r\nAuthorization: " + SIGNED_BAD.encode() + b"00\r\n\r\n",
    "bad-date-text": b"GET /a HTTP/1.1\r\n" + H.encode()
    + b"X-Amz-Date: yesterday\r\nDate: not a date\r\nAuthorization: " + SIGNED_BAD.encode()
    + b"00\r\n\r\n",
    "presigned-garbage": b"GET /a?X-Amz-Signature=zz&X-Amz-Credential=%ff&X-Amz-Date=x"
    b"&X-Amz-Expires=-5&X-Amz-SignedHeaders=host&X-Amz-Algorithm=nope HTTP/1.1\r\n"
    + H.encode() + b"\r\n",
    "presigned-huge-expiry": b"GET /a?X-Amz-Signature=00&X-Amz-Credential=A/20200101/us-east-1/"
    b"mediastore/aws4_request&X-Amz-Date=20200101T000000Z&X-Amz-Expires=99999999999999999999"
    b"&X-Amz-SignedHeaders=host&X-Amz-Algorithm=AWS4-HMAC-SHA256 HTTP/1.1\r\n"
    + H.encode() + b"\r\n",
    "listitems-garbage-query": b"GET /?Path=%ff&MaxResults=-1&NextToken=%00%01 HTTP/1.1\r\n"
    + H.encode() + b"\r\n",
    "chunked-bad-hex": b"PUT /a HTTP/1.1\r\n" + H.encode()
    + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "chunked-missing-crlf": b"PUT /a HTTP/1.1\r\n" + H.encode()
    + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabcdef0\r\n\r\n",
    "chunked-truncated": b"PUT /a HTTP/1.1\r\n" + H.encode()
    + b"Transfer-Encoding: chunked\r\n\r\n100\r\nabc",
    "chunked-huge-size": b"PUT /a HTTP/1.1\r\n" + H.encode()
    + b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
    "chunked-negative": b"PUT /a HTTP/1.1\r\n" + H.encode()
    + b"Transfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n",
    "chunked-and-length": b"PUT /a HTTP/1.1\r\n" + H.encode()
    + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "te-unknown": b"PUT /a HTTP/1.1\r\n" + H.encode() + b"Transfer-Encoding: gzip\r\n\r\nabc",
    "length-negative": b"PUT /a HTTP/1.1\r\n" + H.encode() + b"Content-Length: -1\r\n\r\n",
    "length-text": b"PUT /a HTTP/1.1\r\n" + H.encode() + b"Content-Length: abc\r\n\r\n",
    "length-huge": b"PUT /a HTTP/1.1\r\n" + H.encode()
    + b"Content-Length: 999999999999999999999999\r\n\r\nabc",
    "length-short-body": b"PUT /a HTTP/1.1\r\n" + H.encode() + b"Content-Length: 100\r\n\r\nabc",
    "pipelined-garbage": b"GET /a HTTP/1.1\r\n" + H.encode() + b"\r\n"
    + b"\x16\x03\x01garbage\r\n\r\n",
    "tls-hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 100,
    "expect-100-unsigned": b"PUT /a HTTP/1.1\r\n" + H.encode()
    + b"Expect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
    "expect-garbage": b"PUT /a HTTP/1.1\r\n" + H.encode()
    + b"Expect: teapot\r\nContent-Length: 3\r\n\r\nabc",
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_malformed_requests_never_get_a_500(
    case: str,
    mediastore_server: LocalMediaStore,
    store: ContainerClient,
    server_errors: list[logging.LogRecord],
) -> None:
    answer = await _exchange(mediastore_server, CASES[case])
    statuses = _statuses(answer)
    assert all(status < 500 for status in statuses), (statuses, answer[:300])
    assert not server_errors, [r.getMessage() for r in server_errors]
    await _still_serving(store)
    assert mediastore_server.store.get("a") is None  # nothing unsigned was stored


SIGNED_CASES = {
    # name: (method, path, extra headers, body)
    "range-garbage": ("GET", "/health/check.txt", {"Range": "bytes=zz-"}, b""),
    "range-multi": ("GET", "/health/check.txt", {"Range": "bytes=0-1,3-4"}, b""),
    "range-huge": ("GET", "/health/check.txt", {"Range": "bytes=99999999999999999999999-"}, b""),
    "range-reversed": ("GET", "/health/check.txt", {"Range": "bytes=4-1"}, b""),
    "range-units": ("GET", "/health/check.txt", {"Range": "items=0-1"}, b""),
    "content-type-ctl": ("PUT", "/fz/a", {"Content-Type": "text/\x7fplain"}, b"abc"),
    "cache-control-huge": ("PUT", "/fz/a", {"Cache-Control": "x" * 20_000}, b"abc"),
    "storage-class": ("PUT", "/fz/a", {"x-amz-storage-class": "GLACIER"}, b"abc"),
    "availability": ("PUT", "/fz/a", {"x-amz-upload-availability": "SOMETIMES"}, b"abc"),
    "sha-garbage": ("PUT", "/fz/a", {"x-amz-content-sha256": "zz"}, b"abc"),
    "put-on-folder": ("PUT", "/health", {}, b"abc"),
    "put-root": ("PUT", "/", {}, b"abc"),
    "delete-root": ("DELETE", "/", {}, b""),
    "list-bad-token": ("GET", "/?NextToken=eyJ9.AAAA", {}, b""),
    "deep-path": ("GET", "/" + "/".join(["d"] * 50), {}, b""),
    "long-path": ("GET", "/" + "p" * 2000, {}, b""),
}


@pytest.mark.parametrize("case", sorted(SIGNED_CASES))
async def test_signed_but_invalid_requests_never_get_a_500(
    case: str,
    mediastore_server: LocalMediaStore,
    store: ContainerClient,
    server_errors: list[logging.LogRecord],
) -> None:
    await _still_serving(store)
    method, path, extra, body = SIGNED_CASES[case]
    # Signed without any query (the bad NextToken case): a 403 is fine, a crash is not.
    headers = _signed_head(mediastore_server, method, path.partition("?")[0], **extra)
    if body:
        headers["Content-Length"] = str(len(body))
    answer = await _exchange(mediastore_server, _request(method, path, headers, body))
    statuses = _statuses(answer)
    assert statuses, answer[:300]
    assert all(status < 500 for status in statuses), (statuses, answer[:300])
    assert not server_errors, [r.getMessage() for r in server_errors]
    await _still_serving(store)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    method=st.sampled_from([b"GET", b"PUT", b"HEAD", b"DELETE", b"POST", b""]),
    target=st.binary(max_size=200),
    headers=st.lists(
        st.tuples(st.binary(min_size=1, max_size=40), st.binary(max_size=200)), max_size=8
    ),
    body=st.binary(max_size=500),
)
async def test_random_requests_never_get_a_500(
    mediastore_server: LocalMediaStore,
    store: ContainerClient,
    server_errors: list[logging.LogRecord],
    method: bytes,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
) -> None:
    raw = method + b" /" + target + b" HTTP/1.1\r\n" + H.encode()
    raw += b"".join(k + b": " + v + b"\r\n" for k, v in headers)
    raw += b"\r\n" + body
    answer = await _exchange(mediastore_server, raw, linger=0.1)
    statuses = _statuses(answer)
    assert all(status < 500 for status in statuses), (statuses, raw[:300], answer[:300])
    assert not server_errors, [r.getMessage() for r in server_errors]
    await _still_serving(store)
