"""msd_async.signing against botocore, byte for byte.

Two oracles:

* botocore's real ``mediastore-data`` client builds and signs each operation; a
  ``before-send`` handler captures the prepared request and raises, so nothing is sent.
  botocore's clock is frozen, so our signer can be given the same instant independently.
* botocore's ``SigV4Auth.add_auth`` on a bare ``AWSRequest``, fed hypothesis-generated
  paths, queries and header values.

Our signer is always given the request the way *our* client builds it (``encode_path``,
decoded query pairs, the header set of docs/contract.md, "Signing"); the tests also check
that this request is the one botocore put on the wire.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import boto3
import botocore.auth
import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials as BotoCredentials
from botocore.utils import percent_encode_sequence
from hypothesis import given, settings
from hypothesis import strategies as st

from msd_async import Credentials
from msd_async.rules import encode_path
from msd_async.signing import (
    EMPTY_SHA256,
    UNSIGNED_PAYLOAD,
    SigV4Signer,
    amz_date,
    canonical_headers,
    canonical_query,
    canonical_request,
    canonical_uri,
    derive_signing_key,
    signing_host,
    string_to_sign,
)

REGION = "us-east-1"
FIXED = dt.datetime(2024, 2, 29, 23, 59, 58)  # botocore's clock is naive UTC
STATIC = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
TEMPORARY = Credentials("ASIAEXAMPLE", "c2VjcmV0/+=", "IQoJb3JpZ2luX2Vj//token+with/slashes=")
CONTAINER = "https://abc123.data.mediastore.us-east-1.amazonaws.com"
LOCAL = "http://127.0.0.1:9000"


class Captured(Exception):
    def __init__(self, request: Any) -> None:
        super().__init__("captured")
        self.request = request


def _capture(request: Any, **_: Any) -> None:
    raise Captured(request)


@pytest.fixture(scope="module")
def botocore_clients() -> Iterator[dict[tuple[str, Credentials], Any]]:
    clients: dict[tuple[str, Credentials], Any] = {}
    yield clients
    for client in clients.values():
        client.close()


@pytest.fixture
def sent_by_botocore(
    botocore_clients: dict[tuple[str, Credentials], Any], monkeypatch: pytest.MonkeyPatch
) -> Any:
    """``sent_by_botocore(endpoint, creds, operation, **params)`` -> the prepared request
    botocore's mediastore-data client would send at ``FIXED``."""
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: FIXED)

    def send(endpoint: str, creds: Credentials, operation: str, **params: Any) -> Any:
        client = botocore_clients.get((endpoint, creds))
        if client is None:
            client = boto3.client(
                "mediastore-data",
                endpoint_url=endpoint,
                region_name=REGION,
                aws_access_key_id=creds.access_key_id,
                aws_secret_access_key=creds.secret_access_key,
                aws_session_token=creds.session_token,
                config=Config(retries={"max_attempts": 0}),
            )
            client.meta.events.register("before-send.mediastore-data.*", _capture)
            botocore_clients[(endpoint, creds)] = client
        with pytest.raises(Captured) as info:
            getattr(client, operation)(**params)
        return info.value.request

    return send


def _header(request: Any, name: str) -> str | None:
    value = request.headers.get(name)
    return value.decode() if isinstance(value, bytes) else value


@dataclass
class Op:
    """One operation: the botocore call, and the request our client builds for it."""

    id: str
    operation: str
    params: dict[str, Any]
    method: str
    headers: dict[str, str] = field(default_factory=dict)
    payload_hash: str = EMPTY_SHA256

    def wire_path(self) -> str:
        if self.operation == "list_items":
            return "/"
        # botocore renders "/{Path+}" with the label encoded like encode_path does.
        return "/" + encode_path(self.params["Path"])

    def query(self) -> list[tuple[str, str]]:
        if self.operation != "list_items":
            return []
        return [
            (k, str(self.params[k]))
            for k in ("Path", "MaxResults", "NextToken")
            if k in self.params
        ]


def put(id: str, path: str, **extra: str) -> Op:
    names = {
        "ContentType": "content-type",
        "CacheControl": "cache-control",
        "StorageClass": "x-amz-storage-class",
        "UploadAvailability": "x-amz-upload-availability",
    }
    headers = {names[k]: v for k, v in extra.items()}
    headers["x-amz-content-sha256"] = UNSIGNED_PAYLOAD
    return Op(
        id,
        "put_object",
        {"Path": path, "Body": b"segment", **extra},
        "PUT",
        headers,
        UNSIGNED_PAYLOAD,
    )


OPS = [
    put("put-minimal", "live/seg1.ts"),
    put(
        "put-all-headers",
        "live/720p/seg_42.ts",
        ContentType="video/MP2T",
        CacheControl="max-age=31536000,  immutable",
        StorageClass="TEMPORAL",
        UploadAvailability="STREAMING",
    ),
    put(
        "put-standard",
        "index.m3u8",
        ContentType="application/vnd.apple.mpegurl",
        UploadAvailability="STANDARD",
        CacheControl="max-age=1",
    ),
    put("put-escaped", "live/a=b:c~d.ts", ContentType="video/MP2T"),
    put("put-unicode-space", "vidéo/ü ß+%.ts"),
    put("put-leading-slash", "/live/seg1.ts"),
    put("put-double-slash", "//live//seg1.ts"),
    put("put-dot-segments", "live/./a/../b/seg.ts"),
    Op("get", "get_object", {"Path": "live/seg1.ts"}, "GET"),
    Op(
        "get-range",
        "get_object",
        {"Path": "live/seg1.ts", "Range": "bytes=0-99"},
        "GET",
        {"range": "bytes=0-99"},
    ),
    Op(
        "get-open-range",
        "get_object",
        {"Path": "vod/movie.mp4", "Range": "bytes=1048576-"},
        "GET",
        {"range": "bytes=1048576-"},
    ),
    Op(
        "get-suffix-range",
        "get_object",
        {"Path": "a=b:c.ts", "Range": "bytes=-500"},
        "GET",
        {"range": "bytes=-500"},
    ),
    Op("get-trailing-slash", "get_object", {"Path": "live/"}, "GET"),
    Op("describe", "describe_object", {"Path": "live/seg1.ts"}, "HEAD"),
    Op("describe-unicode", "describe_object", {"Path": "日本/ファイル 1.ts"}, "HEAD"),
    Op("delete", "delete_object", {"Path": "live/seg1.ts"}, "DELETE"),
    # The User Guide's CLI example: leading slash puts "//" on the wire.
    Op("delete-spec-example", "delete_object", {"Path": "/live/a=b:c.ts"}, "DELETE"),
    Op("delete-dots", "delete_object", {"Path": "../x/./../live/seg.ts"}, "DELETE"),
    Op("list-bare", "list_items", {}, "GET"),
    Op("list-path", "list_items", {"Path": "live"}, "GET"),
    Op("list-root-slash", "list_items", {"Path": "/"}, "GET"),
    Op("list-max", "list_items", {"MaxResults": 1000}, "GET"),
    Op("list-token", "list_items", {"NextToken": "eyJrIjoiYS9iKz0ifQ=="}, "GET"),
    Op(
        "list-all",
        "list_items",
        {"Path": "/live/720p/", "MaxResults": 7, "NextToken": "a/b+c=d e~f"},
        "GET",
    ),
    Op("list-encoded", "list_items", {"Path": "a b+c=d/ü", "NextToken": "+/="}, "GET"),
]


def sign_ours(endpoint: str, creds: Credentials, op: Op, signer: SigV4Signer) -> dict[str, str]:
    return signer.sign(
        creds,
        method=op.method,
        host=signing_host(endpoint),
        path=op.wire_path(),
        query=op.query(),
        headers=op.headers,
        payload_hash=op.payload_hash,
        timestamp=amz_date(FIXED),
    )


def assert_same(request: Any, ours: dict[str, str], creds: Credentials) -> None:
    assert ours["Authorization"] == _header(request, "Authorization")
    assert ours["X-Amz-Date"] == _header(request, "X-Amz-Date") == "20240229T235958Z"
    assert ours.get("X-Amz-Security-Token") == _header(request, "X-Amz-Security-Token")
    assert ("X-Amz-Security-Token" in ours) == (creds.session_token is not None)


@pytest.mark.parametrize("creds", [STATIC, TEMPORARY], ids=["static", "temporary"])
@pytest.mark.parametrize("op", OPS, ids=[op.id for op in OPS])
def test_operation_matches_botocore_client(
    sent_by_botocore: Any, op: Op, creds: Credentials
) -> None:
    request = sent_by_botocore(CONTAINER, creds, op.operation, **op.params)
    # The request our client builds is the one botocore sends...
    url = urlsplit(request.url)
    assert request.method == op.method
    assert url.path == op.wire_path()
    assert sorted(parse_qsl(url.query, keep_blank_values=True)) == sorted(op.query())
    for name, value in op.headers.items():
        assert _header(request, name) == value
    # ...and it is signed identically.
    assert_same(request, sign_ours(CONTAINER, creds, op, SigV4Signer(REGION)), creds)


ENDPOINTS = [
    LOCAL,
    "http://localhost",
    "http://127.0.0.1:80",  # the default port is not signed
    "https://127.0.0.1:443",
    "https://Media.Example.COM:8443",  # host names are signed in lower case
    "http://[::1]:9000",
    "https://abc.data.mediastore.cn-north-1.amazonaws.com.cn",
]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("op_id", ["put-all-headers", "get-range", "list-all", "describe"])
def test_endpoints_match_botocore_client(sent_by_botocore: Any, endpoint: str, op_id: str) -> None:
    op = next(op for op in OPS if op.id == op_id)
    request = sent_by_botocore(endpoint, TEMPORARY, op.operation, **op.params)
    assert signing_host(endpoint) == botocore.auth._host_from_url(request.url)
    assert_same(request, sign_ours(endpoint, TEMPORARY, op, SigV4Signer(REGION)), TEMPORARY)


def test_put_over_http_still_signs_unsigned_payload(sent_by_botocore: Any) -> None:
    # botocore signs real body hashes over http, except where the model says
    # unsignedPayload: PutObject sends and signs UNSIGNED-PAYLOAD on both schemes.
    request = sent_by_botocore(LOCAL, STATIC, "put_object", Path="a.ts", Body=b"x")
    assert _header(request, "X-Amz-Content-SHA256") == UNSIGNED_PAYLOAD
    assert "x-amz-content-sha256" in _header(request, "Authorization")  # type: ignore[operator]


# --- hypothesis against SigV4Auth ---------------------------------------------------------

_any_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
_segment = st.one_of(
    st.sampled_from(["", ".", "..", "a=b:c", "~x", "seg.ts"]),
    st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=12),
)
_paths = st.lists(_segment, max_size=6).map("/".join)
_header_names = st.sampled_from(
    ["content-type", "cache-control", "range", "x-amz-upload-availability", "x-custom"]
)
_header_values = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.sampled_from(["\t", " "]),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(
    path=_paths,
    query=st.lists(st.tuples(_any_text, _any_text), max_size=4),
    headers=st.dictionaries(_header_names, _header_values, max_size=4),
    token=st.none() | st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1),
    method=st.sampled_from(["GET", "PUT", "HEAD", "DELETE"]),
    endpoint=st.sampled_from([LOCAL, CONTAINER, "https://h.example:8443"]),
    unsigned=st.booleans(),
)
def test_matches_sigv4auth(
    path: str,
    query: list[tuple[str, str]],
    headers: dict[str, str],
    token: str | None,
    method: str,
    endpoint: str,
    unsigned: bool,
) -> None:
    creds = Credentials("AKIDHYPO", "secret/key+", token)
    wire_path = "/" + encode_path(path)
    url = endpoint + wire_path
    if query:
        url += "?" + percent_encode_sequence(query)
    to_sign = dict(headers)
    if unsigned:
        to_sign["x-amz-content-sha256"] = UNSIGNED_PAYLOAD
    request = AWSRequest(method=method, url=url, headers=dict(to_sign))
    SigV4Auth(BotoCredentials("AKIDHYPO", "secret/key+", token), "mediastore", REGION).add_auth(
        request
    )
    timestamp = request.headers["X-Amz-Date"]
    ours = SigV4Signer(REGION).sign(
        creds,
        method=method,
        host=signing_host(endpoint),
        path=wire_path,
        query=query,
        headers=to_sign,
        payload_hash=UNSIGNED_PAYLOAD if unsigned else EMPTY_SHA256,
        timestamp=timestamp,
    )
    assert ours["Authorization"] == request.headers["Authorization"]
    assert ours.get("X-Amz-Security-Token") == request.headers.get("X-Amz-Security-Token")


@given(st.text(st.characters(exclude_categories=("Cs",)), max_size=60))
def test_canonical_uri_matches_botocore(raw: str) -> None:
    encoded = quote(raw, safe="/~")
    auth = SigV4Auth(BotoCredentials("a", "b"), "mediastore", REGION)
    assert canonical_uri(encoded) == auth._normalize_url_path(encoded)
    # Wire paths always start with "/": the fast path for clean paths must agree too.
    assert canonical_uri("/" + encoded) == auth._normalize_url_path("/" + encoded)


def test_canonical_uri_double_encodes_spec_example() -> None:
    assert canonical_uri("//live/a%3Db%3Ac.ts") == "/live/a%253Db%253Ac.ts"
    assert canonical_uri("") == "/"
    assert canonical_uri("/") == "/"
    assert canonical_uri("/a/./b/../c/") == "/a/c/"
    assert canonical_uri("/../..") == "/"


def test_canonical_pieces() -> None:
    assert canonical_query([]) == ""
    assert canonical_query([("b", "2"), ("a", "x y"), ("a", "+/=")]) == ("a=%2B%2F%3D&a=x%20y&b=2")
    block, signed = canonical_headers({"x-b": "  two   words \t", "host": "h"})
    assert (block, signed) == ("host:h\nx-b:two words\n", "host;x-b")


# --- presigned URLs -----------------------------------------------------------------------


def _verify_presigned(
    query: str, *, method: str, host: str, path: str, secret: str, payload: str
) -> bool:
    """Recompute a SigV4 query signature from the URL's own parts."""
    pairs = parse_qsl(query, keep_blank_values=True)
    given_sig = dict(pairs)["X-Amz-Signature"]
    params = [(k, v) for k, v in pairs if k != "X-Amz-Signature"]
    values = dict(params)
    signed = values["X-Amz-SignedHeaders"]
    assert signed == "host"
    block, _ = canonical_headers({"host": host})
    creq = canonical_request(
        method, canonical_uri(path), canonical_query(params), block, signed, payload
    )
    _, date, region, service, _ = values["X-Amz-Credential"].split("/")
    sts = string_to_sign(values["X-Amz-Date"], f"{date}/{region}/{service}/aws4_request", creq)
    key = derive_signing_key(secret, date, region, service)
    return hmac.compare_digest(hmac.new(key, sts.encode(), hashlib.sha256).hexdigest(), given_sig)


@pytest.mark.parametrize("creds", [STATIC, TEMPORARY], ids=["static", "temporary"])
def test_presign_get_object(sent_by_botocore: Any, creds: Credentials) -> None:
    path = "/" + encode_path("live/a=b:c.ts")
    ours = SigV4Signer(REGION).presign(
        creds,
        method="GET",
        host=signing_host(CONTAINER),
        path=path,
        expires_in=900,
        timestamp=amz_date(FIXED),
    )
    assert _verify_presigned(
        ours,
        method="GET",
        host=signing_host(CONTAINER),
        path=path,
        secret=creds.secret_access_key,
        payload=UNSIGNED_PAYLOAD,
    )
    # A tampered URL does not verify.
    assert not _verify_presigned(
        ours.replace("X-Amz-Expires=900", "X-Amz-Expires=901"),
        method="GET",
        host=signing_host(CONTAINER),
        path=path,
        secret=creds.secret_access_key,
        payload=UNSIGNED_PAYLOAD,
    )

    # sent_by_botocore has frozen botocore's clock at FIXED, which presigning reads too.
    boto_client = boto3.client(
        "mediastore-data",
        endpoint_url=CONTAINER,
        region_name=REGION,
        aws_access_key_id=creds.access_key_id,
        aws_secret_access_key=creds.secret_access_key,
        aws_session_token=creds.session_token,
    )
    try:
        boto_url = boto_client.generate_presigned_url(
            "get_object", Params={"Path": "live/a=b:c.ts"}, ExpiresIn=900
        )
    finally:
        boto_client.close()
    boto = urlsplit(boto_url)
    assert boto.path == path
    boto_params = dict(parse_qsl(boto.query))
    our_params = dict(parse_qsl(ours))
    # Same parameters, same values, except the signature itself: botocore's generic
    # (non-S3) query signer hashes the empty GET body into the canonical request, while we
    # sign UNSIGNED-PAYLOAD as S3 does, so one URL shape also serves presigned PUTs.
    assert set(our_params) == set(boto_params)
    assert {k: v for k, v in our_params.items() if k != "X-Amz-Signature"} == {
        k: v for k, v in boto_params.items() if k != "X-Amz-Signature"
    }
    assert our_params["X-Amz-Signature"] != boto_params["X-Amz-Signature"]
    # With botocore's payload choice, our canonical functions reproduce its signature.
    assert _verify_presigned(
        boto.query,
        method="GET",
        host=signing_host(CONTAINER),
        path=path,
        secret=creds.secret_access_key,
        payload=EMPTY_SHA256,
    )


def test_presign_matches_botocore_query_signer_with_unsigned_payload() -> None:
    # botocore's SigV4QueryAuth with the payload forced to UNSIGNED-PAYLOAD is exactly our
    # presigner: same canonical request, same signature.
    class UnsignedQueryAuth(SigV4QueryAuth):
        def payload(self, request: Any) -> str:
            return UNSIGNED_PAYLOAD

    path = "/" + encode_path("//vod/movie file=1.mp4")
    request = AWSRequest(method="PUT", url=CONTAINER + path, headers={"content-type": "video/mp4"})
    boto_creds = BotoCredentials(
        TEMPORARY.access_key_id, TEMPORARY.secret_access_key, TEMPORARY.session_token
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(botocore.auth, "get_current_datetime", lambda: FIXED)
        UnsignedQueryAuth(boto_creds, "mediastore", REGION, expires=120).add_auth(request)
    ours = SigV4Signer(REGION).presign(
        TEMPORARY,
        method="PUT",
        host=signing_host(CONTAINER),
        path=path,
        headers={"content-type": "video/mp4"},
        expires_in=120,
        timestamp=amz_date(FIXED),
    )
    assert dict(parse_qsl(ours)) == dict(parse_qsl(urlsplit(request.url).query))


@pytest.mark.parametrize("expires", [0, -1, 7 * 24 * 3600 + 1])
def test_presign_expiry_limits(expires: int) -> None:
    with pytest.raises(ValueError, match="7 days"):
        SigV4Signer(REGION).presign(STATIC, method="GET", host="h", path="/a", expires_in=expires)


# --- the signing key cache ------------------------------------------------------------------


def test_signing_key_cached_per_day() -> None:
    signer = SigV4Signer(REGION)
    day1 = signer.signing_key(STATIC.secret_access_key, "20240229")
    assert signer.signing_key(STATIC.secret_access_key, "20240229") is day1
    assert day1 == derive_signing_key(STATIC.secret_access_key, "20240229", REGION)
    day2 = signer.signing_key(STATIC.secret_access_key, "20240301")
    assert day2 != day1
    assert day2 == derive_signing_key(STATIC.secret_access_key, "20240301", REGION)
    # A rotated secret gets its own key on the same day.
    assert signer.signing_key("rotated", "20240301") != day2


def test_sign_across_midnight_uses_the_new_days_key() -> None:
    signer = SigV4Signer(REGION)
    op = OPS[0]
    before = signer.sign(
        STATIC,
        method="PUT",
        host="h",
        path="/a",
        headers=op.headers,
        payload_hash=UNSIGNED_PAYLOAD,
        timestamp="20240229T235959Z",
    )
    after = signer.sign(
        STATIC,
        method="PUT",
        host="h",
        path="/a",
        headers=op.headers,
        payload_hash=UNSIGNED_PAYLOAD,
        timestamp="20240301T000000Z",
    )
    assert "/20240229/" in before["Authorization"]
    assert "/20240301/" in after["Authorization"]
    assert len(signer._keys) == 2
    # The cache stays small however many days or secrets go through it.
    for n in range(20):
        signer.signing_key(f"secret{n}", "20240301")
    assert len(signer._keys) <= 8


def test_amz_date() -> None:
    assert amz_date(FIXED) == "20240229T235958Z"
    aware = dt.datetime(2024, 3, 1, 1, 59, 58, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert amz_date(aware) == "20240229T235958Z"
    # The current time is formatted once per second and cached.
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    now = dt.datetime.strptime(amz_date(), "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    assert amz_date() >= amz_date(now)
    assert before <= now <= dt.datetime.now(dt.UTC)
