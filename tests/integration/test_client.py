"""The client against the local server over loopback, with real SigV4 verification."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import AsyncIterator

import aiohttp
import anyio
import pytest

import msd_async
from msd_async import (
    ContainerClient,
    Credentials,
    InvalidParameterError,
    InvalidPathError,
    InvalidRangeError,
    InvalidSignatureError,
    Item,
    ObjectNotFoundError,
    ObjectTooLargeError,
    RangeNotSatisfiableError,
    RetryPolicy,
    Session,
    UnrecognizedClientError,
)
from msd_async.testing import LocalMediaStore

pytestmark = pytest.mark.anyio


async def test_round_trip_of_every_operation(mediastore_client: ContainerClient) -> None:
    store = mediastore_client
    body = b"#EXTM3U\n" + bytes(range(256)) * 40
    put = await store.put_object(
        "live/720p/seg_1.ts",
        body,
        content_type="video/MP2T",
        cache_control="max-age=31536000, immutable",
    )
    assert put.content_sha256 == hashlib.sha256(body).hexdigest()
    assert len(put.etag) == 64 and put.etag != put.content_sha256
    assert put.storage_class == "TEMPORAL"
    assert put.size == len(body)

    info = await store.describe_object("live/720p/seg_1.ts")
    assert info.content_length == len(body)
    assert info.content_type == "video/MP2T"
    assert info.cache_control == "max-age=31536000, immutable"
    assert info.etag == put.etag
    assert info.last_modified is not None
    age = dt.datetime.now(dt.UTC) - info.last_modified
    assert dt.timedelta(0) <= age < dt.timedelta(minutes=1)

    async with store.get_object("live/720p/seg_1.ts") as obj:
        assert obj.status == 200
        assert obj.etag == put.etag
        assert obj.content_length == len(body)
        assert await obj.read() == body

    items = [item async for item in store.list_items("live")]
    assert items == [Item(name="720p", type="FOLDER")]
    (item,) = [item async for item in store.list_items("live/720p/")]
    assert (item.name, item.type, item.etag, item.content_length) == (
        "seg_1.ts",
        "OBJECT",
        put.etag,
        len(body),
    )
    assert item.content_type == "video/MP2T"

    await store.delete_object("live/720p/seg_1.ts")
    with pytest.raises(ObjectNotFoundError):
        await store.describe_object("live/720p/seg_1.ts")
    # The folders went with their last object.
    assert [item async for item in store.list_items()] == []


async def test_paths_with_every_allowed_character_round_trip(
    mediastore_client: ContainerClient,
) -> None:
    path = "/a=b/c:d/e~f_g-h.i/Z9.ts"  # leading slash accepted and stripped
    await mediastore_client.put_object(path, b"x")
    assert await mediastore_client.get_bytes(path) == b"x"
    names = [i.name async for i in mediastore_client.list_items("a=b/c:d/e~f_g-h.i")]
    assert names == ["Z9.ts"]


async def test_default_content_type_and_absent_cache_control(
    mediastore_client: ContainerClient,
) -> None:
    await mediastore_client.put_object("plain", b"data")
    await mediastore_client.put_object("streamed", [b"da", b"ta"], streaming=True)
    info = await mediastore_client.describe_object("plain")
    assert info.content_type == "application/octet-stream"
    assert info.cache_control is None
    # No Content-Type went on the wire (aiohttp adds one unless told not to), so the
    # listing, like the service's, has none for these objects.
    items = [item async for item in mediastore_client.list_items()]
    assert [(i.name, i.content_type) for i in items] == [("plain", None), ("streamed", None)]


async def test_overwrite_replaces_object_and_changes_etag(
    mediastore_client: ContainerClient,
) -> None:
    first = await mediastore_client.put_object("x.m3u8", b"one")
    second = await mediastore_client.put_object("x.m3u8", b"two!")
    assert first.etag != second.etag
    assert await mediastore_client.get_bytes("x.m3u8") == b"two!"


@pytest.mark.parametrize("operation", ["get", "describe", "delete"])
async def test_missing_object_raises_object_not_found(
    mediastore_client: ContainerClient, operation: str
) -> None:
    with pytest.raises(ObjectNotFoundError) as info:
        if operation == "get":
            await mediastore_client.get_bytes("no/such.ts")
        elif operation == "describe":
            await mediastore_client.describe_object("no/such.ts")
        else:
            await mediastore_client.delete_object("no/such.ts")
    err = info.value
    assert err.status == 404
    assert err.code == "ObjectNotFoundException"
    assert err.request_id
    assert err.attempts == 1  # a 404 is never retried


async def test_range_past_the_end_raises_416(mediastore_client: ContainerClient) -> None:
    await mediastore_client.put_object("r.bin", b"0123456789")
    with pytest.raises(RangeNotSatisfiableError) as info:
        await mediastore_client.get_bytes("r.bin", range=(10, 20))
    assert info.value.status == 416


@pytest.mark.parametrize(
    ("byte_range", "rule"),
    [
        ((5, 2), "range.order"),
        ((-1, 4), "range.negative"),
        ((None, 0), "range.empty"),
        ((None, None), "range.form"),
        ("bytes=1-2,4-5", "range.form"),
        ("items=0-1", "range.form"),
    ],
)
async def test_invalid_range_refused_before_sending(
    mediastore_client: ContainerClient,
    server_requests: list[logging.LogRecord],
    byte_range: msd_async.ByteRange,
    rule: str,
) -> None:
    before = len(server_requests)
    with pytest.raises(InvalidRangeError) as info:
        await mediastore_client.get_bytes("r.bin", range=byte_range)
    assert info.value.rule == rule
    assert len(server_requests) == before


@pytest.mark.parametrize(
    ("path", "rule"),
    [
        ("", "path.empty"),
        ("a//b.ts", "path.empty-segment"),
        ("a/b/", "path.empty-segment"),
        ("a b.ts", "path.characters"),
        ("caf\u00e9.ts", "path.characters"),
        ("/".join(["d"] * 11) + "/f.ts", "path.max-depth"),
        ("x" * 901, "path.max-length"),
    ],
)
async def test_invalid_path_refused_before_sending(
    mediastore_client: ContainerClient,
    server_requests: list[logging.LogRecord],
    path: str,
    rule: str,
) -> None:
    before = len(server_requests)
    with pytest.raises(InvalidPathError) as info:
        await mediastore_client.put_object(path, b"x")
    assert info.value.rule == rule
    assert len(server_requests) == before


async def test_ten_folders_deep_is_allowed(mediastore_client: ContainerClient) -> None:
    path = "/".join(f"d{i}" for i in range(10)) + "/f.ts"
    await mediastore_client.put_object(path, b"deep")
    assert await mediastore_client.get_bytes(path) == b"deep"


@pytest.mark.parametrize(
    ("kwargs", "rule"),
    [
        ({"content_type": "text/plain; charset=utf-8"}, "content-type.pattern"),
        ({"cache_control": "max-age=1\r\nX-Evil: 1"}, "cache-control.value"),
    ],
)
async def test_invalid_headers_refused(
    mediastore_client: ContainerClient, kwargs: dict[str, str], rule: str
) -> None:
    with pytest.raises(InvalidParameterError) as info:
        await mediastore_client.put_object("h.ts", b"x", **kwargs)  # type: ignore[arg-type]
    assert info.value.rule == rule


@pytest.mark.parametrize("max_results", [0, 1001, True])
async def test_max_results_out_of_range(
    mediastore_client: ContainerClient, max_results: int
) -> None:
    with pytest.raises(InvalidParameterError) as info:
        await mediastore_client.list_items_page(max_results=max_results)
    assert info.value.rule == "max-results.range"


async def test_oversized_known_body_refused_before_sending(
    mediastore_server: LocalMediaStore, server_requests: list[logging.LogRecord]
) -> None:
    async with Session(credentials=mediastore_server.credentials, region="us-east-1") as s:
        store = s.container(mediastore_server.endpoint, standard_limit=1000)
        before = len(server_requests)
        with pytest.raises(ObjectTooLargeError) as info:
            await store.put_object("big.bin", b"x" * 1001)
        assert info.value.limit == 1000
        assert info.value.size == 1001
        assert info.value.rule == "body.max-size.standard"
        assert len(server_requests) == before
        # Exactly at the limit is fine (and the request log does see requests).
        assert (await store.put_object("big.bin", b"x" * 1000)).size == 1000
        assert len(server_requests) == before + 1


async def test_wrong_secret_raises_invalid_signature(
    mediastore_server: LocalMediaStore,
) -> None:
    good = mediastore_server.credentials
    bad = Credentials(good.access_key_id, good.secret_access_key + "x")
    async with Session(credentials=bad, region=mediastore_server.region) as session:
        store = session.container(mediastore_server.endpoint)
        with pytest.raises(InvalidSignatureError) as info:
            await store.put_object("a.ts", b"x")
        assert info.value.status == 403
        assert info.value.attempts == 1  # 403 is never retried
        assert good.secret_access_key not in str(info.value)
    assert mediastore_server.store.get("a.ts") is None


async def test_wrong_region_raises_invalid_signature(
    mediastore_server: LocalMediaStore,
) -> None:
    async with Session(credentials=mediastore_server.credentials, region="eu-west-1") as s:
        with pytest.raises(InvalidSignatureError):
            await s.container(mediastore_server.endpoint).describe_object("a.ts")


async def test_unknown_access_key_raises_unrecognized_client(
    mediastore_server: LocalMediaStore,
) -> None:
    creds = Credentials("AKIDUNKNOWN", "whatever")
    async with Session(credentials=creds, region=mediastore_server.region) as s:
        with pytest.raises(UnrecognizedClientError):
            await s.container(mediastore_server.endpoint).list_items_page()


async def test_temporary_credentials_with_session_token() -> None:
    temporary = Credentials("ASIATEMP", "temp-secret", session_token="FwoGZXIvYXdz//token=")
    async with LocalMediaStore(credentials=temporary) as server:
        async with Session(credentials=temporary, region=server.region) as s:
            store = s.container(server.endpoint)
            await store.put_object("t.ts", b"tok")
            assert await store.get_bytes("t.ts") == b"tok"
        missing_token = Credentials("ASIATEMP", "temp-secret")
        async with Session(credentials=missing_token, region=server.region) as s:
            with pytest.raises(msd_async.AuthError):
                await s.container(server.endpoint).get_bytes("t.ts")


async def test_pagination_follows_next_token(mediastore_client: ContainerClient) -> None:
    names = [f"seg_{i:04d}.ts" for i in range(57)]
    for name in names:
        await mediastore_client.put_object(f"p/{name}", b"s")
    page = await mediastore_client.list_items_page("p", max_results=10)
    assert len(page.items) == 10 and page.next_token is not None
    listed = [item.name async for item in mediastore_client.list_items("p", page_size=10)]
    assert listed == names
    last = await mediastore_client.list_items_page("p", max_results=1000)
    assert last.next_token is None and len(last.items) == 57


async def test_missing_folder_lists_empty(mediastore_client: ContainerClient) -> None:
    page = await mediastore_client.list_items_page("nothing/here")
    assert page.items == () and page.next_token is None


async def test_presigned_urls_work_without_signing(
    mediastore_client: ContainerClient,
) -> None:
    put_url = await mediastore_client.presign_put("pre/seg.ts", expires_in=60)
    get_url = await mediastore_client.presign_get("pre/seg.ts", expires_in=60)
    async with aiohttp.ClientSession() as http:
        async with http.put(aiohttp.client.URL(put_url, encoded=True), data=b"presigned") as r:
            assert r.status == 200, await r.text()
        async with http.get(aiohttp.client.URL(get_url, encoded=True)) as r:
            assert r.status == 200
            assert await r.read() == b"presigned"
        tampered = get_url.replace("pre/seg.ts", "pre/other.ts")
        async with http.get(aiohttp.client.URL(tampered, encoded=True)) as r:
            assert r.status == 403


async def test_session_shares_one_pool_across_containers() -> None:
    async with (
        LocalMediaStore() as a,
        LocalMediaStore() as b,
        Session(credentials=a.credentials, region="us-east-1") as session,
    ):
        store_a = session.container(a.endpoint)
        store_b = session.container(b.endpoint)
        await store_a.put_object("k", b"A")
        await store_b.put_object("k", b"B")
        assert await store_a.get_bytes("k") == b"A"
        assert await store_b.get_bytes("k") == b"B"
        assert session.pool.in_use == 0
        assert session.pool.idle == 2  # one keep-alive connection per endpoint


async def test_region_is_read_from_a_mediastore_endpoint() -> None:
    async with Session(credentials=Credentials("a", "b")) as session:
        store = session.container("https://abc123.data.mediastore.eu-west-1.amazonaws.com")
        assert store.region == "eu-west-1"


async def test_closed_session_refuses_new_containers() -> None:
    session = Session(credentials=Credentials("a", "b"), region="us-east-1")
    await session.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        session.container("http://127.0.0.1:1")


@pytest.mark.parametrize(
    "endpoint",
    [
        "127.0.0.1:8080", "ftp://host", "http://host/path", "http://h:notaport",
        # Accepted before (urlsplit drops them) but kept in every request event's URL.
        " http://host", "http://host\n", "http://ho st",
    ],
)
async def test_bad_endpoint_is_refused(endpoint: str) -> None:
    async with Session(credentials=Credentials("a", "b"), region="us-east-1") as session:
        with pytest.raises(InvalidParameterError) as info:
            session.container(endpoint)
        assert info.value.rule == "endpoint.form"


def test_public_api_is_pinned() -> None:
    expected = {
        "Session",
        "ContainerClient",
        "Credentials",
        "ObjectStream",
        "PutResult",
        "ObjectInfo",
        "Item",
        "ListPage",
        "Timeouts",
        "Limits",
        "MediaStoreError",
    }
    assert expected <= set(msd_async.__all__)
    for name in msd_async.__all__:
        assert hasattr(msd_async, name), name


async def test_server_shutdown_mid_upload_is_a_lost_connection(
    server_requests: list[logging.LogRecord],
) -> None:
    server = LocalMediaStore()
    await server.start()
    release = anyio.Event()

    async def encoder() -> AsyncIterator[bytes]:
        yield b"a" * 1000
        await release.wait()
        yield b"b"

    try:
        async with Session(
            credentials=server.credentials, region=server.region, retry=RetryPolicy.none()
        ) as session:
            store = session.container(server.endpoint)
            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    outcome: list[BaseException] = []

                    async def upload() -> None:
                        try:
                            await store.put_object("live/s.ts", encoder(), streaming=True)
                        except msd_async.MediaStoreError as exc:
                            outcome.append(exc)

                    tg.start_soon(upload)
                    # The in-progress STREAMING object is visible once its first bytes arrive.
                    while True:
                        try:
                            await store.describe_object("live/s.ts")
                            break
                        except ObjectNotFoundError:
                            await anyio.sleep(0.01)
                    # Shut down while the upload is still sending: the server aborts the
                    # upload first, then the handler receives the next chunk.
                    tg.start_soon(server.close)
                    await anyio.sleep(0.1)
                    release.set()
            (exc,) = outcome
            assert isinstance(exc, msd_async.TransportError), exc
    finally:
        await server.close()
    assert not any(" 500 " in r.getMessage() for r in server_requests)


async def test_invalid_region_is_refused() -> None:
    async with Session(credentials=Credentials("a", "b"), region="us east 1") as session:
        with pytest.raises(InvalidParameterError) as info:
            session.container("http://127.0.0.1:1")
        assert info.value.rule == "region.invalid"
