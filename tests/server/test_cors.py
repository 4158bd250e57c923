"""CORS policies on the local server, as MediaStore containers had them (docs/contract.md)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from serve_process import MSD, start_serve

from msd_async import MediaStoreError, Session
from msd_async.testing import LocalMediaStore
from msd_async.testing.cors import CorsPolicy, CorsPolicyError

pytestmark = pytest.mark.anyio

PAGE = "http://127.0.0.1:8080"
POLICY: list[dict[str, Any]] = [
    {
        "AllowedOrigins": [PAGE],
        "AllowedMethods": ["GET", "HEAD"],
        "AllowedHeaders": ["range", "x-amz-*"],
        "MaxAgeSeconds": 3000,
        "ExposeHeaders": ["ETag", "Content-Length"],
    },
    {
        "AllowedOrigins": ["http://*.example.com"],
        "AllowedMethods": ["GET"],
        "AllowedHeaders": ["*"],
    },
]


@pytest.fixture
async def cors_server() -> AsyncIterator[LocalMediaStore]:
    async with LocalMediaStore(allow_anonymous=["read"], cors_policy=POLICY) as server:
        async with Session(credentials=server.credentials, region=server.region) as s:
            await s.container(server.endpoint).put_object("live/index.m3u8", b"#EXTM3U\n")
        yield server


@dataclass
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes


async def preflight(
    server: LocalMediaStore, origin: str, method: str, headers: str | None = None
) -> Answer:
    """An unsigned OPTIONS, as a browser sends it before a non-simple request."""
    request_headers = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers is not None:
        request_headers["Access-Control-Request-Headers"] = headers
    async with aiohttp.ClientSession() as http, http.options(
        f"{server.endpoint}/live/index.m3u8", headers=request_headers
    ) as resp:
        return Answer(resp.status, resp.headers, await resp.read())


async def test_preflight_allowed_answers_with_the_rule() -> None:
    async with LocalMediaStore(cors_policy=POLICY) as server:
        resp = await preflight(server, PAGE, "GET", "Range, X-Amz-Date")
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == PAGE
    assert resp.headers["Access-Control-Allow-Methods"] == "GET, HEAD"
    # only the headers that were requested are sent back
    assert resp.headers["Access-Control-Allow-Headers"] == "range, x-amz-date"
    assert resp.headers["Access-Control-Max-Age"] == "3000"
    assert "Origin" in resp.headers["Vary"]


@pytest.mark.parametrize(
    ("origin", "method", "headers"),
    [
        ("http://127.0.0.1:9999", "GET", None),  # another origin
        (PAGE, "PUT", None),  # a method no rule allows
        (PAGE, "GET", "authorization"),  # a header the first rule does not allow
        ("http://example.com", "GET", None),  # the wildcard needs a subdomain
    ],
)
async def test_preflight_no_rule_applies_is_refused(
    origin: str, method: str, headers: str | None
) -> None:
    async with LocalMediaStore(cors_policy=POLICY) as server:
        resp = await preflight(server, origin, method, headers)
    assert resp.status == 403
    assert resp.headers["x-amzn-ErrorType"] == "AccessDeniedException"
    assert "Access-Control-Allow-Origin" not in resp.headers


async def test_wildcard_origin_rule_and_first_rule_wins() -> None:
    async with LocalMediaStore(cors_policy=POLICY) as server:
        sub = await preflight(server, "http://cdn.example.com", "GET", "authorization")
    assert sub.status == 200  # rule 2 allows every header
    assert sub.headers["Access-Control-Allow-Origin"] == "http://cdn.example.com"
    assert "Access-Control-Max-Age" not in sub.headers  # rule 2 has none


async def test_preflight_without_a_policy_is_refused() -> None:
    async with LocalMediaStore() as server:
        resp = await preflight(server, PAGE, "GET")
    assert resp.status == 403 and b"CORS is not enabled" in resp.body


async def test_get_with_origin_gets_cors_headers(cors_server: LocalMediaStore) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(
            f"{cors_server.endpoint}/live/index.m3u8", headers={"Origin": PAGE}
        ) as resp:
            body = await resp.read()
            headers = resp.headers
        async with http.get(
            f"{cors_server.endpoint}/live/index.m3u8", headers={"Origin": "http://evil.test"}
        ) as other:
            await other.read()
            other_headers = other.headers
    assert body == b"#EXTM3U\n"
    assert headers["Access-Control-Allow-Origin"] == PAGE
    assert headers["Access-Control-Expose-Headers"] == "ETag, Content-Length"
    # a page of another origin gets the bytes over HTTP, but no header lets its script read
    # them
    assert "Access-Control-Allow-Origin" not in other_headers


async def test_cors_policy_opens_no_reads() -> None:
    star = [{"AllowedOrigins": ["*"], "AllowedMethods": ["GET"], "AllowedHeaders": ["*"]}]
    async with (
        LocalMediaStore(cors_policy=star) as server,
        aiohttp.ClientSession() as http,
        http.get(f"{server.endpoint}/a.m3u8", headers={"Origin": PAGE}) as resp,
    ):
        await resp.read()
    assert resp.status == 403
    assert resp.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
    # the refusal is readable by the page's script, so a player can tell what went wrong
    assert resp.headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ([], "non-empty"),
        ({"Rules": []}, "non-empty"),
        ([{"AllowedMethods": ["GET"], "AllowedHeaders": []}], "AllowedOrigins"),
        ([{"AllowedOrigins": ["*"], "AllowedMethods": ["POST"], "AllowedHeaders": []}], "POST"),
        ([{"AllowedOrigins": ["http://*.*.com"], "AllowedMethods": ["GET"],
           "AllowedHeaders": []}], "more than one"),
        ([{"AllowedOrigins": ["*"], "AllowedMethods": ["GET"], "AllowedHeaders": [],
           "MaxAgeSeconds": -1}], "MaxAgeSeconds"),
        ([{"AllowedOrigins": ["*"], "AllowedMethods": ["GET"], "AllowedHeaders": [],
           "AllowOrigins": ["x"]}], "unknown fields"),
        ([{"AllowedOrigins": ["*"], "AllowedMethods": ["GET"], "AllowedHeaders": []}] * 101,
         "at most 100"),
    ],
)
def test_policies_the_service_refused_raise_a_typed_error(policy: Any, message: str) -> None:
    with pytest.raises(CorsPolicyError, match=message) as info:
        CorsPolicy.from_json(policy)
    assert isinstance(info.value, MediaStoreError)


def test_both_json_forms_give_the_same_policy() -> None:
    assert CorsPolicy.from_json({"CorsPolicy": POLICY}) == CorsPolicy.from_json(POLICY)
    assert CorsPolicy.from_json(POLICY).to_json()[0] == POLICY[0]


def test_msd_serve_cors_policy_file(tmp_path: Path) -> None:
    path = tmp_path / "cors.json"
    path.write_text(json.dumps({"CorsPolicy": POLICY}))
    served = start_serve("--cors-policy", str(path), "--allow-anonymous", "read", "--quiet")
    try:
        result = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-D", "-", "-X", "OPTIONS",
             "-H", f"Origin: {PAGE}", "-H", "Access-Control-Request-Method: GET",
             f"{served.endpoint}/live/index.m3u8"],
            capture_output=True, text=True, timeout=30, check=True,
        )
    finally:
        assert served.stop() == 0
    assert result.stdout.startswith("HTTP/1.1 200")
    assert f"Access-Control-Allow-Origin: {PAGE}" in result.stdout


def test_msd_serve_refuses_a_bad_policy_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "cors.json"
    path.write_text('[{"AllowedOrigins": ["*"], "AllowedMethods": ["PATCH"]}]')
    result = subprocess.run(
        [MSD, "serve", "--cors-policy", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert str(path) in result.stderr and "AllowedHeaders" in result.stderr
