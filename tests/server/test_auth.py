"""SigV4 verification (docs/contract.md, "Signing") and the 403 rows of its "Errors"."""

from __future__ import annotations

import datetime as dt

import aiohttp
import pytest
from rawclient import Raw, Reply
from yarl import URL

from msd_async.credentials import Credentials
from msd_async.signing import SigV4Signer, amz_date
from msd_async.testing import LocalMediaStore

pytestmark = pytest.mark.anyio


def forbidden(reply: Reply, code: str = "InvalidSignatureException") -> str:
    assert reply.status == 403, reply
    assert reply.error == code
    return str(reply.json()["Message"])


async def test_valid_signature_accepted(raw: Raw) -> None:
    assert (
        await raw.call("GET", "/", query=[("Path", "a=b:c/d~e"), ("MaxResults", "5")])
    ).status == 200


async def test_tampered_signature(raw: Raw) -> None:
    headers = raw.sign("GET", "/x")
    auth = headers["Authorization"]
    flipped = auth[:-1] + ("0" if auth[-1] != "0" else "1")
    reply = await raw.call("GET", "/x", sign=False, headers={**headers, "Authorization": flipped})
    assert "does not match" in forbidden(reply)


async def test_tampered_signed_header(raw: Raw) -> None:
    headers = raw.sign("GET", "/x", headers={"range": "bytes=0-1"})
    reply = await raw.call("GET", "/x", sign=False, headers={**headers, "range": "bytes=0-2"})
    forbidden(reply)


async def test_tampered_path(raw: Raw) -> None:
    await raw.put("a.ts", b"1")
    headers = raw.sign("GET", "/a.ts")
    forbidden(await raw.call("GET", "/b.ts", sign=False, headers=headers))
    headers = raw.sign("DELETE", "/a.ts")
    forbidden(await raw.call("DELETE", "/a.ts", sign=False, headers=headers, query=[("x", "1")]))
    assert raw.server.store.get("a.ts") is not None


async def test_tampered_date(raw: Raw) -> None:
    headers = raw.sign("GET", "/x")
    later = dt.datetime.strptime(headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ") + dt.timedelta(seconds=1)
    headers["X-Amz-Date"] = later.strftime("%Y%m%dT%H%M%SZ")
    forbidden(await raw.call("GET", "/x", sign=False, headers=headers))


async def test_put_with_tampered_signature_stores_nothing(raw: Raw) -> None:
    headers = raw.sign("PUT", "/p.ts", headers={"content-type": "video/MP2T"})
    headers["content-type"] = "video/mp4"
    reply = await raw.call("PUT", "/p.ts", sign=False, headers=headers, data=b"data")
    forbidden(reply)
    assert raw.server.store.get("p.ts") is None


async def test_clock_skew(raw: Raw) -> None:
    old = amz_date(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=16))
    headers = raw.sign("GET", "/x", timestamp=old)
    message = forbidden(await raw.call("GET", "/x", sign=False, headers=headers))
    assert "skew" in message and "expired" in message
    # Within 15 minutes is fine (404: authenticated, object missing).
    recent = amz_date(dt.datetime.now(dt.UTC) + dt.timedelta(minutes=14))
    headers = raw.sign("GET", "/x", timestamp=recent)
    assert (await raw.call("GET", "/x", sign=False, headers=headers)).status == 404


async def test_unknown_key_and_wrong_secret(raw: Raw) -> None:
    stranger = Credentials("AKIDUNKNOWN", "whatever")
    headers = raw.sign("GET", "/x", credentials=stranger)
    forbidden(
        await raw.call("GET", "/x", sign=False, headers=headers), "UnrecognizedClientException"
    )
    wrong = Credentials(raw.server.credentials.access_key_id, "wrong-secret")
    headers = raw.sign("GET", "/x", credentials=wrong)
    forbidden(await raw.call("GET", "/x", sign=False, headers=headers))


async def test_wrong_region_or_service(raw: Raw) -> None:
    for signer in (SigV4Signer("eu-west-1"), SigV4Signer("us-east-1", "s3")):
        headers = signer.sign(raw.server.credentials, method="GET", host=raw.host, path="/x")
        forbidden(await raw.call("GET", "/x", sign=False, headers=headers))


async def test_malformed_authorization(raw: Raw) -> None:
    reply = await raw.call("GET", "/x", sign=False, headers={"Authorization": "Basic Zm9vOmJhcg=="})
    forbidden(reply)


async def test_missing_authentication(raw: Raw) -> None:
    for method in ("GET", "HEAD", "PUT", "DELETE"):
        reply = await raw.call(method, "/x", sign=False, data=b"1" if method == "PUT" else None)
        assert reply.status == 403
        assert reply.error == "MissingAuthenticationTokenException"
    forbidden(await raw.call("GET", "/", sign=False), "MissingAuthenticationTokenException")


async def test_session_token_must_match() -> None:
    temp = Credentials("ASIATEMP", "temp-secret", "the-token")
    async with (
        LocalMediaStore(credentials=temp) as server,
        aiohttp.ClientSession() as session,
    ):
        raw = Raw(server, session)
        assert (await raw.put("t.ts", b"1")).status == 200
        without = Credentials("ASIATEMP", "temp-secret")
        headers = raw.sign("GET", "/t.ts", credentials=without)
        forbidden(
            await raw.call("GET", "/t.ts", sign=False, headers=headers),
            "UnrecognizedClientException",
        )
        other = Credentials("ASIATEMP", "temp-secret", "other-token")
        headers = raw.sign("GET", "/t.ts", credentials=other)
        forbidden(
            await raw.call("GET", "/t.ts", sign=False, headers=headers),
            "UnrecognizedClientException",
        )


async def test_extra_credentials_accepted() -> None:
    second = Credentials("AKIDSECOND", "second-secret")
    async with (
        LocalMediaStore(extra_credentials=[second]) as server,
        aiohttp.ClientSession() as session,
    ):
        raw = Raw(server, session)
        headers = raw.sign("PUT", "/k.ts", credentials=second)
        assert (
            await raw.call("PUT", "/k.ts", sign=False, headers=headers, data=b"1")
        ).status == 200


@pytest.mark.parametrize("allowed", [(), ("read",), ("write",), ("read", "write")])
async def test_anonymous_access(allowed: tuple[str, ...]) -> None:
    async with (
        LocalMediaStore(allow_anonymous=allowed) as server,  # type: ignore[arg-type]
        aiohttp.ClientSession() as session,
    ):
        raw = Raw(server, session)
        await server.store.put_bytes("seed.ts", b"seed")
        put = await raw.call("PUT", "/anon.ts", sign=False, data=b"anon")
        get = await raw.call("GET", "/seed.ts", sign=False)
        head = await raw.call("HEAD", "/seed.ts", sign=False)
        listing = await raw.call("GET", "/", sign=False)
        delete = await raw.call("DELETE", "/seed.ts", sign=False)
        can_read, can_write = "read" in allowed, "write" in allowed
        assert (get.status == 200) is can_read and (get.body == b"seed") is can_read
        assert (head.status == 200) is can_read
        assert (listing.status == 200) is can_read
        assert (put.status == 200) is can_write
        assert (delete.status == 200) is can_write
        assert (server.store.get("anon.ts") is not None) is can_write
        for reply in (put, get, listing, delete):
            if reply.status != 200:
                assert reply.error == "MissingAuthenticationTokenException"
        # A signature is still checked when one is sent, even where anonymous is allowed.
        bad = raw.sign("GET", "/seed.ts", credentials=Credentials("AKIDX", "nope"))
        reply = await raw.call("GET", "/seed.ts", sign=False, headers=bad)
        assert reply.status == 403


async def _presigned(raw: Raw, method: str, path: str, **kw: object) -> URL:
    qs = raw.signer.presign(raw.server.credentials, method=method, host=raw.host, path=path, **kw)  # type: ignore[arg-type]
    return URL(f"{raw.server.endpoint}{path}?{qs}", encoded=True)


async def test_presigned_get_and_put(raw: Raw) -> None:
    url = await _presigned(raw, "PUT", "/pre/sig.ts", expires_in=60)
    async with raw.session.put(url, data=b"via url") as resp:
        assert resp.status == 200
    url = await _presigned(raw, "GET", "/pre/sig.ts", expires_in=60)
    async with raw.session.get(url) as resp:
        assert resp.status == 200 and await resp.read() == b"via url"


async def test_presigned_expired_and_tampered(raw: Raw) -> None:
    await raw.put("pre.ts", b"1")
    old = amz_date(dt.datetime.now(dt.UTC) - dt.timedelta(seconds=120))
    url = await _presigned(raw, "GET", "/pre.ts", expires_in=60, timestamp=old)
    async with raw.session.get(url) as resp:
        assert resp.status == 403
        assert "expired" in (await resp.json())["Message"]
    url = await _presigned(raw, "GET", "/pre.ts", expires_in=60)
    tampered = URL(str(url).replace("/pre.ts", "/pre2.ts"), encoded=True)
    async with raw.session.get(tampered) as resp:
        assert (
            resp.status == 403 and resp.headers["x-amzn-ErrorType"] == "InvalidSignatureException"
        )
    tampered = URL(str(url).replace("X-Amz-Expires=60", "X-Amz-Expires=600"), encoded=True)
    async with raw.session.get(tampered) as resp:
        assert resp.status == 403
    # A presigned GET does not authorise a PUT to the same path.
    async with raw.session.put(url, data=b"evil") as resp:
        assert resp.status == 403
    assert (await raw.get("pre.ts")).body == b"1"


WRITER = Credentials("AKIDWRITEONLY0000000", "writer-secret-key-00000000000000000000000")


async def test_a_key_limited_to_some_operations_is_refused_the_others() -> None:
    from msd_async import AccessDeniedError, ObjectNotFoundError, Session
    from msd_async.ingest.preflight import preflight

    async with LocalMediaStore(
        extra_credentials=[WRITER],
        permissions={WRITER.access_key_id: ["PutObject", "DeleteObject"]},
    ) as server:
        async with Session(credentials=WRITER, region="us-east-1") as session:
            writer = session.container(server.endpoint)
            await writer.put_object("live/seg1.ts", b"media")
            with pytest.raises(AccessDeniedError, match="mediastore:ListItems"):
                await writer.list_items_page("live")
            with pytest.raises(AccessDeniedError, match="mediastore:GetObject"):
                await writer.get_bytes("live/seg1.ts")
            with pytest.raises(AccessDeniedError) as caught:  # HEAD: no body, no message
                await writer.describe_object("live/seg1.ts")
            assert caught.value.status == 403
            # Refused, not hidden: the signature was accepted and the object is there.
            assert server.store.get("live/seg1.ts") is not None
            # The preflight checks the keys, not the right to list: it lets these pass.
            await preflight(writer, "live")
            await writer.delete_object("live/seg1.ts")
            presigned = await writer.presign_get("live/seg1.ts")
        async with aiohttp.ClientSession() as http, http.get(presigned) as reply:
            assert reply.status == 403
            assert reply.headers["x-amzn-ErrorType"].startswith("AccessDeniedException")
        # A key not named may call every operation.
        async with Session(credentials=server.credentials, region="us-east-1") as session:
            owner = session.container(server.endpoint)
            await owner.put_object("live/seg2.ts", b"media")
            assert await owner.get_bytes("live/seg2.ts") == b"media"
            assert [i.name async for i in owner.list_items("live")] == ["seg2.ts"]
            with pytest.raises(ObjectNotFoundError):
                await owner.describe_object("live/seg1.ts")


async def test_the_preflight_still_refuses_a_wrong_secret() -> None:
    from msd_async import InvalidSignatureError, Session
    from msd_async.ingest.preflight import preflight

    wrong = Credentials(WRITER.access_key_id, "not-the-secret-000000000000000000000000")
    async with LocalMediaStore(
        extra_credentials=[WRITER], permissions={WRITER.access_key_id: ["PutObject"]}
    ) as server, Session(credentials=wrong, region="us-east-1") as session:
        with pytest.raises(InvalidSignatureError):
            await preflight(session.container(server.endpoint), "live")


def test_permissions_name_only_api_operations() -> None:
    with pytest.raises(ValueError, match="PutObjects"):
        LocalMediaStore(permissions={"AKID": ["PutObjects"]})


async def test_a_repeated_signed_header_is_signed_with_all_its_values(raw: Raw) -> None:
    # SigV4 canonicalizes a header sent twice as its values joined by ",": a signature over
    # the first value alone must not let an unsigned second one through.
    from multidict import CIMultiDict

    await raw.put("d.ts", b"abc")
    signed = raw.sign("GET", "/d.ts", headers={"range": "bytes=0-0"})
    headers = CIMultiDict(signed)
    headers.add("range", "bytes=1-2")
    async with raw.session.get(raw.url("/d.ts"), headers=headers) as resp:
        assert resp.status == 403 and resp.headers["x-amzn-ErrorType"] == (
            "InvalidSignatureException"
        )
    # Signed as SigV4 says (both values, joined), the signature is accepted.
    joined = raw.sign("GET", "/d.ts", headers={"range": "bytes=0-0,bytes=1-2"})
    headers = CIMultiDict({k: v for k, v in joined.items() if k != "range"})
    headers.add("range", "bytes=0-0")
    headers.add("range", "  bytes=1-2")
    async with raw.session.get(raw.url("/d.ts"), headers=headers) as resp:
        # ... and the operation sees that joined value too, which RangePattern refuses.
        assert resp.status == 400 and resp.headers["x-amzn-ErrorType"] == "ValidationException"


async def test_amz_date_must_be_zero_padded(raw: Raw) -> None:
    # strptime reads "%m%d" from one digit each, so "2026" "1" "5" was 2026-01-05: a
    # signer that forgets the zero padding must not pass (on the 5th of January, here).
    from msd_async.testing.auth import Verifier

    now = dt.datetime(2026, 1, 5, 1, 2, 3, tzinfo=dt.UTC)
    server = raw.server
    server.verifier = Verifier([server.credentials], server.region, clock=lambda: now)
    good = raw.sign("GET", "/x", timestamp="20260105T010203Z")
    assert (await raw.call("GET", "/x", sign=False, headers=good)).status == 404
    bad = raw.sign("GET", "/x", timestamp="202615T010203Z")
    assert "X-Amz-Date" in forbidden(await raw.call("GET", "/x", sign=False, headers=bad))


async def test_presigned_expires_is_ascii_digits(raw: Raw) -> None:
    from urllib.parse import quote

    signer = SigV4Signer(raw.server.region)
    for expires in ("6_0", "\u0666\u0660"):
        query = signer.presign(
            raw.server.credentials, method="GET", host=raw.host, path="/x", expires_in=60
        ).replace("X-Amz-Expires=60", f"X-Amz-Expires={quote(expires)}")
        reply = await raw.call("GET", "/x?" + query, sign=False)
        assert "X-Amz-Expires" in forbidden(reply)
