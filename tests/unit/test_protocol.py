"""The sans-I/O protocol layer: requests as botocore's serializer builds them, responses and
errors parsed as docs/contract.md describes and botocore's parser reads them."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import boto3
import pytest
from botocore.config import Config

from msd_async import errors, protocol
from msd_async.results import Item


class _Captured(Exception):
    def __init__(self, request: Any) -> None:
        self.request = request


def _capture(request: Any, **_: Any) -> None:
    raise _Captured(request)


@pytest.fixture(scope="module")
def botocore_client() -> Any:
    client = boto3.client(
        "mediastore-data",
        endpoint_url="http://127.0.0.1:9",
        region_name="us-east-1",
        aws_access_key_id="AKID",
        aws_secret_access_key="SECRET",
        config=Config(retries={"max_attempts": 0}),
    )
    client.meta.events.register("before-send.mediastore-data.*", _capture)
    return client


def botocore_request(client: Any, operation: str, **params: Any) -> Any:
    with pytest.raises(_Captured) as info:
        getattr(client, operation)(**params)
    return info.value.request


def _headers(request: Any) -> dict[str, str]:
    return {
        k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()
    }


CASES = [
    (
        protocol.put_object(
            "live/a=b:c~d.ts",
            content_type="video/MP2T",
            cache_control="max-age=1",
            availability="STREAMING",
        ),
        "put_object",
        {
            "Path": "live/a=b:c~d.ts",
            "Body": b"x",
            "ContentType": "video/MP2T",
            "CacheControl": "max-age=1",
            "UploadAvailability": "STREAMING",
        },
    ),
    (protocol.get_object("vod/m.mp4"), "get_object", {"Path": "vod/m.mp4"}),
    (
        protocol.get_object("vod/m.mp4", byte_range=(0, 99)),
        "get_object",
        {"Path": "vod/m.mp4", "Range": "bytes=0-99"},
    ),
    (
        protocol.get_object("vod/m.mp4", byte_range=(None, 500)),
        "get_object",
        {"Path": "vod/m.mp4", "Range": "bytes=-500"},
    ),
    (protocol.describe_object("/a/b.ts"), "describe_object", {"Path": "a/b.ts"}),
    (protocol.delete_object("a/b.ts"), "delete_object", {"Path": "a/b.ts"}),
    (protocol.list_items(), "list_items", {}),
    (
        protocol.list_items("/live/720p/", max_results=7, next_token="a/b+c= d"),
        "list_items",
        {"Path": "live/720p", "MaxResults": 7, "NextToken": "a/b+c= d"},
    ),
]


@pytest.mark.parametrize(("ours", "operation", "params"), CASES)
def test_requests_match_botocore_serializer(
    botocore_client: Any, ours: protocol.Request, operation: str, params: dict[str, Any]
) -> None:
    theirs = botocore_request(botocore_client, operation, **params)
    url = urlsplit(theirs.url)
    assert ours.method == theirs.method
    assert ours.path == url.path
    assert sorted(ours.query) == sorted(parse_qsl(url.query, keep_blank_values=True))
    # The target we send decodes to the same query, and only safe bytes stay unescaped.
    target = urlsplit(ours.target)
    assert sorted(parse_qsl(target.query)) == sorted(ours.query)
    sent = _headers(theirs)
    for name, value in ours.headers.items():
        assert sent[name] == value, name


def test_put_signs_unsigned_payload() -> None:
    request = protocol.put_object("a.ts")
    assert request.payload_hash == "UNSIGNED-PAYLOAD"
    assert request.headers["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"
    assert request.headers["x-amz-upload-availability"] == "STANDARD"
    assert "content-type" not in request.headers


# --- responses ---------------------------------------------------------------------------


def test_parse_put_result() -> None:
    body = json.dumps({"ContentSHA256": "a" * 64, "ETag": "b" * 64, "StorageClass": "TEMPORAL"})
    result = protocol.parse_put_result(body.encode(), 12)
    assert (result.content_sha256, result.etag, result.storage_class, result.size) == (
        "a" * 64,
        "b" * 64,
        "TEMPORAL",
        12,
    )
    with pytest.raises(errors.ProtocolError):
        protocol.parse_put_result(b"<html>proxy error</html>", 1)


def test_parse_object_info_headers() -> None:
    info = protocol.parse_object_info(
        {
            "Content-Type": "image/jpeg",
            "Content-Length": "2307346",
            "ETag": '"2aa333"',
            "Last-Modified": "Fri, 19 Jul 2019 21:32:20 GMT",
        }
    )
    assert info.content_length == 2307346
    assert info.etag == "2aa333"  # quotes a proxy may add are dropped
    assert info.last_modified == dt.datetime(2019, 7, 19, 21, 32, 20, tzinfo=dt.UTC)
    assert info.cache_control is None


def test_parse_list_page_user_guide_example() -> None:
    body = json.dumps(
        {
            "Items": [
                {
                    "ContentType": "image/jpeg",
                    "LastModified": 1563571859.379,
                    "Name": "filename.jpg",
                    "Type": "OBJECT",
                    "ETag": "543ab2",
                    "ContentLength": 3784,
                },
                {"Type": "FOLDER", "Name": "ExampleLiveDemo"},
            ],
            "NextToken": "tok",
        }
    ).encode()
    page = protocol.parse_list_page(body)
    assert page.next_token == "tok"
    obj, folder = page.items
    assert folder == Item(name="ExampleLiveDemo", type="FOLDER")
    assert obj.content_length == 3784 and obj.etag == "543ab2"
    assert obj.last_modified is not None
    assert obj.last_modified.timestamp() == pytest.approx(1563571859.379)
    assert protocol.parse_list_page(b'{"Items": []}').next_token is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bytes 0-100/2307346", (0, 100, 2307346)),
        ("bytes 5-9/*", (5, 9, None)),
        ("bytes=0-1/2", None),
        (None, None),
    ],
)
def test_parse_content_range(value: str | None, expected: object) -> None:
    assert protocol.parse_content_range(value) == expected


# The error matrix as botocore's rest-json parser maps it (docs/contract.md, "Errors").
ERROR_CASES = [
    (
        404,
        {"x-amzn-ErrorType": "ObjectNotFoundException:http://internal.amazon.com/coral/x/"},
        b'{"Message":"Object not found"}',
        True,
        errors.ObjectNotFoundError,
        "ObjectNotFoundException",
    ),
    (
        404,
        {},
        b'{"__type":"com.amazonaws#ObjectNotFoundException","Message":"nope"}',
        True,
        errors.ObjectNotFoundError,
        "ObjectNotFoundException",
    ),
    (
        404,
        {"x-amzn-ErrorType": "ContainerNotFoundException"},
        b'{"message":"no container"}',
        False,
        errors.ContainerNotFoundError,
        "ContainerNotFoundException",
    ),
    (416, {"x-amzn-ErrorType": "RequestedRangeNotSatisfiableException"}, b"", True,
     errors.RangeNotSatisfiableError, "RequestedRangeNotSatisfiableException"),
    # A HEAD 404 carries no body: without the header it is still the object that is missing.
    (404, {}, b"", True, errors.ObjectNotFoundError, "404"),
    (404, {}, b"", False, errors.ServiceError, "404"),
    (500, {"x-amzn-ErrorType": "InternalServerError"}, b'{"Message":"boom"}', True,
     errors.ServerError, "InternalServerError"),
    (500, {}, b"", True, errors.ServerError, "500"),
    (503, {}, b"<html>busy</html>", True, errors.ServerError, "503"),
    (400, {"x-amzn-ErrorType": "ThrottlingException"}, b'{"message":"Rate exceeded"}', True,
     errors.ThrottlingError, "ThrottlingException"),
    (429, {"x-amzn-ErrorType": "TooManyRequestsException"}, b"", True,
     errors.ThrottlingError, "TooManyRequestsException"),
    (403, {"x-amzn-ErrorType": "InvalidSignatureException"}, b'{"message":"sig"}', True,
     errors.InvalidSignatureError, "InvalidSignatureException"),
    (403, {"x-amzn-ErrorType": "UnrecognizedClientException"}, b"", True,
     errors.UnrecognizedClientError, "UnrecognizedClientException"),
    (403, {"x-amzn-ErrorType": "MissingAuthenticationTokenException"}, b"", True,
     errors.MissingAuthenticationTokenError, "MissingAuthenticationTokenException"),
    (400, {"x-amzn-ErrorType": "ValidationException"}, b'{"Message":"bad path"}', True,
     errors.ValidationError, "ValidationException"),
    (418, {}, b"", True, errors.ServiceError, "418"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("status", "headers", "body", "object_operation", "cls", "code"), ERROR_CASES
)
def test_parse_error_matrix(
    status: int,
    headers: dict[str, str],
    body: bytes,
    object_operation: bool,
    cls: type[errors.ServiceError],
    code: str,
) -> None:
    exc = protocol.parse_error(
        status,
        {**headers, "x-amzn-RequestId": "req-1"},
        body,
        object_operation=object_operation,
    )
    assert type(exc) is cls
    assert exc.code == code
    assert exc.status == status
    assert exc.request_id == "req-1"
    assert exc.message
    assert code in str(exc) and "req-1" in str(exc)


def test_parse_error_keeps_the_message_and_retry_after() -> None:
    exc = protocol.parse_error(
        503,
        {"Retry-After": "7"},
        b'{"Message":"slow down"}',
        object_operation=True,
    )
    assert exc.message == "slow down"
    assert exc.retry_after == 7.0
