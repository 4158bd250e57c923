"""Request validation that follows botocore's ``mediastore-data`` service model
(``service-2.json``): enums, patterns and the shape of the refusal (docs/contract.md)."""

from __future__ import annotations

import pytest
from rawclient import Raw
from test_objects import assert_error

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    "headers",
    [
        {"x-amz-storage-class": "temporal"},
        {"x-amz-storage-class": "Temporal"},
        {"x-amz-upload-availability": "streaming"},
        {"x-amz-upload-availability": "standard"},
        {"x-amz-upload-availability": "Streaming"},
    ],
)
async def test_enum_headers_are_case_sensitive(raw: Raw, headers: dict[str, str]) -> None:
    # The model's enums are StorageClass ["TEMPORAL"] and UploadAvailability
    # ["STANDARD", "STREAMING"]; every SDK sends them in upper case. A client that sends
    # another spelling must not pass here and fail on the service.
    reply = await raw.call("PUT", "/e.ts", data=b"x", headers=headers)
    assert_error(reply, 400, "ValidationException")
    assert raw.server.store.get("e.ts") is None


async def test_enum_headers_in_the_model_spelling_are_accepted(raw: Raw) -> None:
    for availability in ("STANDARD", "STREAMING"):
        reply = await raw.call("PUT", "/e.ts", data=b"x", headers={
            "x-amz-storage-class": "TEMPORAL", "x-amz-upload-availability": availability})
        assert reply.status == 200, reply


@pytest.mark.parametrize("path", ["/a//b.ts", "/a/b.ts/", "///a/b.ts", "/a/b.ts//"])
async def test_empty_segments_are_refused_not_collapsed(raw: Raw, path: str) -> None:
    # PathNaming, (?:[A-Za-z0-9_.\-~]+/){0,10}[A-Za-z0-9_.\-~]+, has no empty segment;
    # collapsing them would store "a//b.ts" as "a/b.ts" (the signature allows it: the
    # canonical URI drops empty segments).
    reply = await raw.call("PUT", path, data=b"x")
    assert_error(reply, 400, "ValidationException")
    assert len(raw.server.store) == 0
    await raw.put("a/b.ts", b"x")
    for method in ("GET", "DELETE"):
        assert_error(await raw.call(method, path), 400, "ValidationException")
    assert_error(await raw.call("HEAD", path), 400, "ValidationException", head=True)
    assert (await raw.get("a/b.ts")).body == b"x"


async def test_one_leading_slash_of_the_path_is_stripped(raw: Raw) -> None:
    # botocore sends Path="/a/b.ts" as "//a/b.ts" (docs/contract.md, Names and limits).
    assert (await raw.call("PUT", "//a/b.ts", data=b"x")).status == 200
    assert (await raw.get("a/b.ts")).body == b"x"
    assert (await raw.call("GET", "//")).json()["Items"] == [{"Name": "a", "Type": "FOLDER"}]


@pytest.mark.parametrize(
    "range_", ["BYTES=0-1", "Bytes=-2", "bytes= 0-1", "bytes=0 -1", "bytes=0-1,", "bytes=,0-1"]
)
async def test_range_must_match_the_model_pattern(raw: Raw, range_: str) -> None:
    # RangePattern is ^bytes=(?:\d+\-\d*|\d*\-\d+)$: lower-case unit, no spaces, one range.
    # RFC 9110's looser grammar (any case, list commas) is not what the API takes.
    await raw.put("r.bin", b"0123456789")
    reply = await raw.call("GET", "/r.bin", headers={"range": range_})
    assert_error(reply, 400, "ValidationException")


@pytest.mark.parametrize(
    ("range_", "content_range"),
    [("bytes=0-1", "bytes 0-1/10"), ("bytes=8-", "bytes 8-9/10"), ("bytes=-2", "bytes 8-9/10")],
)
async def test_range_in_the_model_pattern_is_served(
    raw: Raw, range_: str, content_range: str
) -> None:
    await raw.put("r.bin", b"0123456789")
    reply = await raw.call("GET", "/r.bin", headers={"range": range_})
    assert reply.status == 206 and reply.headers["Content-Range"] == content_range


async def test_an_empty_enum_header_is_refused(raw: Raw) -> None:
    for name in ("x-amz-storage-class", "x-amz-upload-availability"):
        reply = await raw.call("PUT", "/e.ts", data=b"x", headers={name: ""})
        assert_error(reply, 400, "ValidationException")


@pytest.mark.parametrize("value", ["\u0661", "\uff11", "1_0"])
async def test_max_results_is_ascii_digits(raw: Raw, value: str) -> None:
    # ListLimit is an integer; Python's int() also reads other scripts' digits and "_".
    assert_error(await raw.list(MaxResults=value), 400, "ValidationException")
