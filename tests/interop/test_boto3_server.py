"""botocore's own mediastore-data client against the local server (a real peer we did not write)."""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Iterator

import boto3
import botocore.config
import botocore.exceptions
import pytest
import urllib3

from msd_async.testing import LocalMediaStore


class BackgroundServer:
    """A LocalMediaStore on its own event loop thread, so sync boto3 calls can reach it."""

    def __init__(self, **kwargs: object) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = LocalMediaStore(**kwargs)  # type: ignore[arg-type]
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> LocalMediaStore:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        return self.server

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def run(self, coro: object) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def background() -> Iterator[BackgroundServer]:
    bg = BackgroundServer()
    with bg:
        yield bg


@pytest.fixture
def client(background: BackgroundServer) -> Iterator[object]:
    server = background.server
    session = boto3.session.Session(
        aws_access_key_id=server.credentials.access_key_id,
        aws_secret_access_key=server.credentials.secret_access_key,
        region_name=server.region,
    )
    c = session.client(
        "mediastore-data",
        endpoint_url=server.endpoint,
        config=botocore.config.Config(retries={"max_attempts": 1, "mode": "standard"}),
    )
    yield c
    c.close()


def test_all_operations(client: object, background: BackgroundServer) -> None:
    c: object = client
    put = c.put_object(  # type: ignore[attr-defined]
        Path="/vod/movie.mp4",
        Body=b"0123456789",
        ContentType="video/mp4",
        CacheControl="max-age=60",
        StorageClass="TEMPORAL",
        UploadAvailability="STANDARD",
    )
    assert put["StorageClass"] == "TEMPORAL" and len(put["ETag"]) == 64
    desc = c.describe_object(Path="vod/movie.mp4")  # type: ignore[attr-defined]
    assert desc["ContentLength"] == 10 and desc["ContentType"] == "video/mp4"
    assert desc["ETag"] == put["ETag"] and desc["CacheControl"] == "max-age=60"
    assert desc["LastModified"].year >= 2024
    got = c.get_object(Path="vod/movie.mp4", Range="bytes=2-4")  # type: ignore[attr-defined]
    assert got["StatusCode"] == 206 and got["ContentRange"] == "bytes 2-4/10"
    assert got["Body"].read() == b"234"
    listing = c.list_items(Path="vod")  # type: ignore[attr-defined]
    (item,) = listing["Items"]
    assert item["Name"] == "movie.mp4" and item["Type"] == "OBJECT"
    assert item["ContentLength"] == 10
    assert c.list_items()["Items"] == [{"Name": "vod", "Type": "FOLDER"}]  # type: ignore[attr-defined]
    c.delete_object(Path="vod/movie.mp4")  # type: ignore[attr-defined]
    assert c.list_items()["Items"] == []  # type: ignore[attr-defined]


def test_streaming_put_of_unknown_length(client: object, background: BackgroundServer) -> None:
    class Unseekable(io.RawIOBase):
        def __init__(self) -> None:
            self.parts = [b"abc", b"defg", b""]

        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> bytes:
            return self.parts.pop(0) if self.parts else b""

    c: object = client
    c.put_object(
        Path="live/chunked.m4s",
        Body=Unseekable(),  # type: ignore[attr-defined]
        UploadAvailability="STREAMING",
    )
    assert c.get_object(Path="live/chunked.m4s")["Body"].read() == b"abcdefg"  # type: ignore[attr-defined]


def test_exception_classes(client: object) -> None:
    c: object = client
    exceptions = c.exceptions  # type: ignore[attr-defined]
    for call in (c.get_object, c.describe_object, c.delete_object):  # type: ignore[attr-defined]
        with pytest.raises(exceptions.ObjectNotFoundException):
            call(Path="no/such.ts")
    c.put_object(Path="r.bin", Body=b"abc")  # type: ignore[attr-defined]
    with pytest.raises(exceptions.RequestedRangeNotSatisfiableException):
        c.get_object(Path="r.bin", Range="bytes=5-")  # type: ignore[attr-defined]
    with pytest.raises(botocore.exceptions.ClientError) as info:
        c.list_items(MaxResults=5000)  # type: ignore[attr-defined]
    assert info.value.response["Error"]["Code"] == "ValidationException"
    assert info.value.response["ResponseMetadata"]["RequestId"]


def test_wrong_secret_is_invalid_signature(background: BackgroundServer) -> None:
    server = background.server
    c = boto3.client(
        "mediastore-data",
        endpoint_url=server.endpoint,
        region_name=server.region,
        aws_access_key_id=server.credentials.access_key_id,
        aws_secret_access_key="wrong",
        config=botocore.config.Config(retries={"max_attempts": 1}),
    )
    with pytest.raises(botocore.exceptions.ClientError) as info:
        c.list_items()
    c.close()
    assert info.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_paginator_over_2000_objects(client: object, background: BackgroundServer) -> None:
    store = background.server.store

    async def fill() -> None:
        for i in range(2100):
            await store.put_bytes(f"many/{i:05d}.ts", b"x")

    background.run(fill())
    paginator = client.get_paginator("list_items")  # type: ignore[attr-defined]
    pages = list(paginator.paginate(Path="many"))
    names = [item["Name"] for page in pages for item in page["Items"]]
    assert len(pages) == 3
    assert names == [f"{i:05d}.ts" for i in range(2100)]
    small = list(paginator.paginate(Path="many", PaginationConfig={"PageSize": 700}))
    assert [len(p["Items"]) for p in small] == [700, 700, 700]


def test_presigned_urls_from_boto3(client: object, background: BackgroundServer) -> None:
    c: object = client
    http = urllib3.PoolManager(retries=False)
    c.put_object(Path="pre/seg.ts", Body=b"presigned!")  # type: ignore[attr-defined]
    url = c.generate_presigned_url(  # type: ignore[attr-defined]
        "get_object", Params={"Path": "pre/seg.ts"}, ExpiresIn=60
    )
    resp = http.request("GET", url)
    assert resp.status == 200 and resp.data == b"presigned!"
    put_url = c.generate_presigned_url(  # type: ignore[attr-defined]
        "put_object", Params={"Path": "pre/up.ts", "Body": b""}, ExpiresIn=60
    )
    # botocore can only presign a PUT with an empty Body (it moves a body into the query);
    # over http it signs the SHA-256 of b"", which the server accepts as "any payload".
    assert http.request("PUT", put_url, body=b"uploaded").status == 200
    other_path = put_url.replace("pre/up.ts", "pre/other.ts")
    assert http.request("PUT", other_path, body=b"x").status == 403
    assert c.get_object(Path="pre/up.ts")["Body"].read() == b"uploaded"  # type: ignore[attr-defined]
    assert http.request("GET", url.replace("pre/seg.ts", "pre/up.ts")).status == 403
    http.clear()


@pytest.mark.parametrize(
    "call",
    [
        {"op": "put_object", "Path": "e/a.ts", "Body": b"x", "UploadAvailability": "streaming"},
        {"op": "put_object", "Path": "e/a.ts", "Body": b"x", "StorageClass": "temporal"},
        {"op": "put_object", "Path": "e//a.ts", "Body": b"x"},
        {"op": "put_object", "Path": "e/a.ts/", "Body": b"x"},
        {"op": "get_object", "Path": "e/ok.ts", "Range": "BYTES=0-1"},
        {"op": "get_object", "Path": "e/ok.ts", "Range": "bytes=0-1,"},
    ],
    ids=["availability-case", "storage-class-case", "inner-slashes", "trailing-slash",
         "range-unit-case", "range-list"],
)
def test_what_botocore_sends_unchecked_is_refused_as_the_model_says(
    client: object, call: dict[str, object]
) -> None:
    # botocore validates neither enums nor patterns before sending: the server must, and
    # botocore must read its refusal as a ValidationException.
    c: object = client
    c.put_object(Path="e/ok.ts", Body=b"0123")  # type: ignore[attr-defined]
    params = dict(call)
    operation = getattr(c, str(params.pop("op")))
    with pytest.raises(botocore.exceptions.ClientError) as info:
        operation(**params)
    error = info.value.response["Error"]
    assert error["Code"] == "ValidationException" and error["Message"]
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    listing = c.list_items(Path="e")["Items"]  # type: ignore[attr-defined]
    assert [item["Name"] for item in listing] == ["ok.ts"]
