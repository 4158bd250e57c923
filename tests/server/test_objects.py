"""Operations, headers, ranges, folders and listing (docs/contract.md)."""

from __future__ import annotations

import email.utils
import hashlib
import re

import pytest
from rawclient import Raw

from msd_async.testing import LocalMediaStore

pytestmark = pytest.mark.anyio
HEX64 = re.compile(r"[0-9a-f]{64}")


def assert_error(reply: object, status: int, code: str, *, head: bool = False) -> None:
    assert reply.status == status, reply  # type: ignore[attr-defined]
    headers = reply.headers  # type: ignore[attr-defined]
    assert headers["x-amzn-ErrorType"] == code
    assert headers["x-amzn-RequestId"]
    if not head:
        assert headers["Content-Type"].startswith("application/json")
        body = reply.json()  # type: ignore[attr-defined]
        assert body["__type"] == code and body["Message"]


async def test_put_get_head_delete_roundtrip(raw: Raw) -> None:
    put = await raw.put("live/seg1.ts", b"segment", content_type="video/MP2T",
                        cache_control="max-age=60")
    assert put.status == 200
    result = put.json()
    assert result["StorageClass"] == "TEMPORAL"
    assert result["ContentSHA256"] == hashlib.sha256(b"segment").hexdigest()
    assert HEX64.fullmatch(result["ETag"]) and result["ETag"] != result["ContentSHA256"]
    assert put.headers["x-amzn-RequestId"]

    got = await raw.get("live/seg1.ts")
    assert got.status == 200 and got.body == b"segment"
    assert got.headers["ETag"] == result["ETag"]
    assert got.headers["Content-Type"] == "video/MP2T"
    assert got.headers["Cache-Control"] == "max-age=60"
    assert got.headers["Content-Length"] == "7"
    assert email.utils.parsedate_to_datetime(got.headers["Last-Modified"]) is not None

    head = await raw.call("HEAD", "/live/seg1.ts")
    assert head.status == 200 and head.body == b""
    assert head.headers["Content-Length"] == "7"
    assert head.headers["ETag"] == result["ETag"]

    deleted = await raw.call("DELETE", "/live/seg1.ts")
    assert deleted.status == 200 and deleted.json() == {}
    for method in ("GET", "HEAD", "DELETE"):
        reply = await raw.call(method, "/live/seg1.ts")
        assert_error(reply, 404, "ObjectNotFoundException", head=method == "HEAD")


async def test_defaults_and_etag_changes_on_every_put(raw: Raw) -> None:
    first = (await raw.put("a.bin", b"x")).json()["ETag"]
    second = (await raw.put("a.bin", b"x")).json()["ETag"]
    assert first != second
    got = await raw.get("a.bin")
    assert got.headers["Content-Type"] == "application/octet-stream"
    assert "Cache-Control" not in got.headers
    assert got.headers["ETag"] == second
    # ListItems omits ContentType when none was uploaded.
    (item,) = (await raw.list()).json()["Items"]
    assert "ContentType" not in item and item["ContentLength"] == 1


async def test_conditional_headers_are_ignored(raw: Raw) -> None:
    etag = (await raw.put("c.ts", b"abc")).json()["ETag"]
    got = await raw.get(
        "c.ts", if_none_match=etag, if_modified_since="Fri, 01 Jan 2100 00:00:00 GMT"
    )
    assert got.status == 200 and got.body == b"abc"


@pytest.mark.parametrize(
    ("range_", "status", "body", "content_range"),
    [
        ("bytes=0-3", 206, b"0123", "bytes 0-3/10"),
        ("bytes=5-", 206, b"56789", "bytes 5-9/10"),
        ("bytes=-3", 206, b"789", "bytes 7-9/10"),
        ("bytes=8-100", 206, b"89", "bytes 8-9/10"),
        ("bytes=-50", 206, b"0123456789", "bytes 0-9/10"),
        ("bytes=9-9", 206, b"9", "bytes 9-9/10"),
    ],
)
async def test_ranges(raw: Raw, range_: str, status: int, body: bytes, content_range: str) -> None:
    await raw.put("r.bin", b"0123456789")
    got = await raw.get("r.bin", range=range_)
    assert got.status == status and got.body == body
    assert got.headers["Content-Range"] == content_range
    assert got.headers["Content-Length"] == str(len(body))


async def test_range_not_satisfiable_and_malformed(raw: Raw) -> None:
    await raw.put("r.bin", b"0123456789")
    reply = await raw.get("r.bin", range="bytes=10-")
    assert_error(reply, 416, "RequestedRangeNotSatisfiableException")
    assert reply.headers["Content-Range"] == "bytes */10"
    assert_error(await raw.get("r.bin", range="bytes=0-1,3-4"), 400, "ValidationException")
    await raw.put("empty", b"")
    assert_error(await raw.get("empty", range="bytes=0-"), 416,
                 "RequestedRangeNotSatisfiableException")
    plain = await raw.get("empty")
    assert plain.status == 200 and plain.body == b"" and plain.headers["Content-Length"] == "0"


async def test_folders_are_implicit_and_removed_when_empty(raw: Raw) -> None:
    await raw.put("a/b/c/one.ts", b"1")
    await raw.put("a/two.ts", b"2")
    assert [i["Name"] for i in (await raw.list("a")).json()["Items"]] == ["b", "two.ts"]
    # A folder path is not an object.
    assert_error(await raw.get("a/b"), 404, "ObjectNotFoundException")
    assert_error(await raw.call("DELETE", "/a/b"), 404, "ObjectNotFoundException")
    await raw.call("DELETE", "/a/b/c/one.ts")
    assert (await raw.list("a")).json()["Items"] == [
        {"Name": "two.ts", "Type": "OBJECT", **{k: v for k, v in
         (await raw.list("a")).json()["Items"][0].items() if k not in ("Name", "Type")}}
    ]
    assert (await raw.list("a/b")).json() == {"Items": []}
    await raw.call("DELETE", "/a/two.ts")
    assert (await raw.list()).json() == {"Items": []}
    assert len(raw.server.store) == 0


async def test_name_cannot_be_folder_and_object(raw: Raw) -> None:
    await raw.put("x/y.ts", b"1")
    assert_error(await raw.put("x", b"2"), 400, "ValidationException")
    assert_error(await raw.put("x/y.ts/z", b"3"), 400, "ValidationException")
    assert (await raw.get("x/y.ts")).body == b"1"


async def test_listing_shape_order_and_pagination(raw: Raw) -> None:
    names = ["b.ts", "A.ts", "a.ts", "_x", "Z", "0", "~t", "m:1", "m=2"]
    for name in names:
        await raw.put(f"f/{name}", b"..", content_type="video/MP2T")
    await raw.put("f/sub/deep.ts", b"d")
    items = (await raw.list("f")).json()["Items"]
    assert [i["Name"] for i in items] == sorted([*names, "sub"])
    folder = next(i for i in items if i["Type"] == "FOLDER")
    assert folder == {"Name": "sub", "Type": "FOLDER"}
    obj = next(i for i in items if i["Name"] == "a.ts")
    assert set(obj) == {"Name", "Type", "ETag", "LastModified", "ContentType", "ContentLength"}
    assert isinstance(obj["LastModified"], float) and obj["ContentLength"] == 2

    seen: list[str] = []
    token = None
    pages = 0
    while True:
        params = {"MaxResults": "3"}
        if token:
            params["NextToken"] = token
        page = (await raw.list("/f/", **params)).json()
        pages += 1
        assert len(page["Items"]) <= 3
        seen += [i["Name"] for i in page["Items"]]
        token = page.get("NextToken")
        if not token:
            break
    assert seen == sorted([*names, "sub"]) and pages == 4


async def test_listing_validation(raw: Raw) -> None:
    for bad in ("0", "1001", "x", "-1"):
        assert_error(await raw.list(MaxResults=bad), 400, "ValidationException")
    assert_error(await raw.list(NextToken="garbage"), 400, "ValidationException")
    await raw.put("p/a", b"1")
    await raw.put("p/b", b"1")
    await raw.put("q/a", b"1")
    token = (await raw.list("p", MaxResults="1")).json()["NextToken"]
    # A token belongs to its listing; a tampered one is refused.
    assert_error(await raw.list("q", NextToken=token), 400, "ValidationException")
    # Change a whole byte of the MAC: the token's last base64 characters partly carry
    # padding bits, so rewriting them may leave it unchanged (a flaky test once).
    payload, mac = token.split(".")
    tampered = f"{payload}.{'B' if mac[0] == 'A' else 'A'}{mac[1:]}"
    assert_error(await raw.list("p", NextToken=tampered), 400, "ValidationException")
    assert (await raw.list("p", NextToken=token)).json()["Items"][0]["Name"] == "b"
    assert (await raw.list("missing/folder")).json() == {"Items": []}


async def test_expired_next_token(raw: Raw) -> None:
    import time as time_module

    await raw.put("p/a", b"1")
    await raw.put("p/b", b"1")
    token = (await raw.list("p", MaxResults="1")).json()["NextToken"]
    real = time_module.time
    raw.server.token_clock = lambda: real() + 15 * 60 + 5
    reply = await raw.list("p", NextToken=token)
    assert_error(reply, 400, "ValidationException")
    assert "expired" in reply.json()["Message"]


@pytest.mark.parametrize(
    "path",
    ["/a%20b.ts", "/a/./b.ts", "/a/../b.ts", "/" + "a" * 901, "/" + "d/" * 11 + "f",
     "/a%2Fb%C3%BC", "/a%FF"],
)
async def test_bad_paths_are_validation_errors(raw: Raw, path: str) -> None:
    reply = await raw.call("PUT", path, data=b"x")
    assert_error(reply, 400, "ValidationException")
    assert len(raw.server.store) == 0


async def test_leading_double_slash_and_encoded_names(raw: Raw) -> None:
    # botocore sends a leading "/" path as "//live/..."; "=" and ":" arrive percent-encoded.
    reply = await raw.call("PUT", "//live/a%3Db%3Ac.ts", data=b"v")
    assert reply.status == 200
    assert raw.server.store.get("live/a=b:c.ts") is not None
    assert (await raw.call("GET", "/live/a=b:c.ts")).body == b"v"


async def test_bad_put_headers(raw: Raw) -> None:
    cases = [
        {"content-type": "text/plain; charset=utf-8"},
        {"x-amz-storage-class": "STANDARD_IA"},
        {"x-amz-upload-availability": "sometimes"},
        {"x-amz-content-sha256": "not-a-hash"},
    ]
    for headers in cases:
        reply = await raw.call("PUT", "/h.ts", data=b"x", headers=headers)
        assert_error(reply, 400, "ValidationException")
    ok = await raw.call("PUT", "/h.ts", data=b"x", headers={
        "x-amz-storage-class": "TEMPORAL", "x-amz-upload-availability": "STREAMING"})
    assert ok.status == 200


async def test_declared_sha256_is_checked(raw: Raw) -> None:
    good = hashlib.sha256(b"body").hexdigest()
    reply = await raw.call("PUT", "/s.ts", data=b"body", headers={"x-amz-content-sha256": good})
    assert reply.status == 200
    bad = await raw.call("PUT", "/s.ts", data=b"other", headers={"x-amz-content-sha256": good})
    assert_error(bad, 400, "ValidationException")
    assert (await raw.get("s.ts")).body == b"body"


async def test_unknown_container_host(raw: Raw) -> None:
    host = "abcdef.data.mediastore.us-east-1.amazonaws.com"
    reply = await raw.call("GET", "/x", extra={"Host": host})
    assert_error(reply, 404, "ContainerNotFoundException")


async def test_known_container_host_is_served(raw: Raw) -> None:
    raw.host = "local.data.mediastore.us-east-1.amazonaws.com"
    reply = await raw.call("PUT", "/x", data=b"1", extra={"Host": raw.host})
    assert reply.status == 200


async def test_unsupported_method(raw: Raw) -> None:
    reply = await raw.call("POST", "/x", data=b"1")
    assert reply.status == 405 and reply.error


async def test_internal_error_is_shaped(raw: Raw, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(path: str) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(raw.server.store, "get", boom)
    import logging

    logging.getLogger("msd_async.testing.server").disabled = True
    try:
        reply = await raw.get("x")
    finally:
        logging.getLogger("msd_async.testing.server").disabled = False
    assert_error(reply, 500, "InternalServerError")


async def test_access_log_line(raw: Raw, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    with caplog.at_level(logging.INFO, logger="msd_async.testing.access"):
        reply = await raw.put("log.ts", b"12345")
    (record,) = [r for r in caplog.records if r.name == "msd_async.testing.access"]
    line = record.getMessage()
    assert line.startswith("PUT /log.ts 200 in=5")
    assert reply.headers["x-amzn-RequestId"] in line


async def test_server_without_async_with() -> None:
    server = LocalMediaStore()
    await server.start()
    try:
        assert server.endpoint.startswith("http://127.0.0.1:") and server.port > 0
    finally:
        await server.close()
    await server.close()  # idempotent
