"""Property-based tests of the client API against the in-process server.

Random paths, ranges, header values and bodies: the only exceptions that may come out are
the documented ones (a ClientValidationError before sending, a ServiceError from the
server), and whatever the client accepts and the server stores must round-trip exactly.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from msd_async import (
    ClientValidationError,
    ContainerClient,
    InvalidRangeError,
    ObjectNotFoundError,
    RangeNotSatisfiableError,
    ServiceError,
    ValidationError,
)
from msd_async.testing import LocalMediaStore

pytestmark = pytest.mark.anyio

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_unique = itertools.count()

_segment = st.text("abcXYZ019-_.~", min_size=1, max_size=12).filter(
    lambda s: s not in (".", "..")
)
_valid_path = st.lists(_segment, min_size=1, max_size=4).map("/".join)
# Half plausible paths (so there is something to round-trip), half anything at all.
paths = st.one_of(_valid_path, st.text(st.characters(codec="utf-8"), max_size=60))
_known_values = st.sampled_from(
    ["video/MP2T", "application/x-mpegURL", "max-age=60", "no-cache", "text/plain; a=b"]
)
header_values = st.one_of(
    st.none(), _known_values, st.text(st.characters(codec="utf-8"), max_size=80)
)
ints = st.one_of(st.none(), st.integers(min_value=-5, max_value=3000))
ranges = st.one_of(
    st.none(),
    st.tuples(ints, ints),
    st.text(max_size=30),
    st.builds(lambda a, b: f"bytes={a}-{b}", st.integers(0, 3000), st.integers(0, 3000)),
)


def _expected_slice(data: bytes, byte_range: tuple[int | None, int | None]) -> bytes | None:
    """What the service returns for a range the client accepted; ``None`` for a 416."""
    first, last = byte_range
    size = len(data)
    if first is None:
        assert last is not None
        return data[-last:] if size and last else None
    if first >= size:
        return None
    return data[first : None if last is None else last + 1]


@FUZZ
@given(
    path=paths,
    body=st.binary(max_size=3000),
    content_type=header_values,
    cache_control=header_values,
    streaming=st.booleans(),
    byte_range=ranges,
)
async def test_put_get_describe_only_raise_documented_errors(
    mediastore_client: ContainerClient,
    mediastore_server: LocalMediaStore,
    path: str,
    body: bytes,
    content_type: str | None,
    cache_control: str | None,
    streaming: bool,
    byte_range: object,
) -> None:
    store = mediastore_client
    # A fresh folder per example: names from one example cannot conflict with another's.
    full = f"fz{next(_unique)}/{path}"
    try:
        result = await store.put_object(
            full, body, content_type=content_type, cache_control=cache_control,
            streaming=streaming,
        )
    except ClientValidationError as exc:
        assert exc.rule and exc.message  # says which rule, and how to fix it
        assert exc.attempts == 0
        event(f"put refused: {exc.rule}")
        return
    event("put stored")
    # The client's checks are the service's: what passes them is stored.
    assert len(result.content_sha256) == 64
    assert result.size == len(body)

    info = await store.describe_object(full)
    assert info.content_length == len(body)
    assert info.etag == result.etag
    if content_type is not None:
        assert info.content_type == content_type
    assert info.cache_control == cache_control

    try:
        async with store.get_object(full, range=byte_range) as obj:  # type: ignore[arg-type]
            got = await obj.read()
            normalized = obj.content_range
    except InvalidRangeError as exc:
        assert exc.attempts == 0
        event("range refused")
        return
    except RangeNotSatisfiableError as exc:
        assert exc.status == 416
        if isinstance(byte_range, tuple):
            assert _expected_slice(body, byte_range) is None, (byte_range, len(body))
        event("range not satisfiable")
        return
    event("range served")
    if byte_range is None:
        assert got == body
    elif isinstance(byte_range, tuple):
        assert got == _expected_slice(body, byte_range), (byte_range, len(body))
        assert normalized is not None and normalized[2] == len(body)
    else:
        assert normalized is not None
        first, last, total = normalized
        assert total == len(body) and got == body[first : last + 1]


@FUZZ
@given(path=st.one_of(st.none(), paths), max_results=st.one_of(st.none(), ints),
       token=st.one_of(st.none(), st.text(max_size=40)))
async def test_listing_only_raises_documented_errors(
    mediastore_client: ContainerClient,
    path: str | None,
    max_results: int | None,
    token: str | None,
) -> None:
    try:
        page = await mediastore_client.list_items_page(
            path, max_results=max_results, next_token=token
        )
    except ClientValidationError as exc:
        assert exc.attempts == 0
        return
    except ValidationError as exc:  # a token the server did not issue
        assert exc.status == 400 and token
        return
    assert page.next_token is None or isinstance(page.next_token, str)
    assert all(item.type in ("OBJECT", "FOLDER") for item in page.items)


@FUZZ
@given(path=paths)
async def test_delete_and_describe_of_random_paths(
    mediastore_client: ContainerClient, path: str
) -> None:
    for operation in (mediastore_client.describe_object, mediastore_client.delete_object):
        try:
            await operation(path)
        except ClientValidationError as exc:
            assert exc.attempts == 0
        except ObjectNotFoundError as exc:
            assert exc.status == 404 and exc.attempts == 1
        except ServiceError as exc:  # pragma: no cover - reported with its details
            pytest.fail(f"{path!r}: unexpected service error {exc!r}")
        else:
            pytest.fail(f"{path!r}: found an object in an empty container")


@FUZZ
@given(
    name=st.text(st.characters(codec="utf-8"), min_size=1, max_size=40),
    value=st.text(st.characters(codec="utf-8"), max_size=40),
)
async def test_header_injection_is_refused_before_sending(
    mediastore_client: ContainerClient,
    mediastore_server: LocalMediaStore,
    name: str,
    value: str,
) -> None:
    evil = f"{value}\r\n{name}: injected"
    for kwargs in ({"content_type": evil}, {"cache_control": evil}):
        with pytest.raises(ClientValidationError):
            await mediastore_client.put_object("inj/a", b"x", **kwargs)  # type: ignore[arg-type]
    assert mediastore_server.store.get("inj/a") is None
