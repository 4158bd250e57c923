"""Numbers and objects a Session, its policies and its calls take are refused where they are
given, with an InvalidParameterError naming them; each was taken before and failed later,
far from its cause, as another error (an OverflowError from aiohttp, an AttributeError at
the first retry), or silently meant something else (nan attempts: one attempt)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from msd_async import (
    Credentials,
    InvalidParameterError,
    Limits,
    RetryPolicy,
    Session,
    Timeouts,
)
from msd_async.retry import Deadline
from msd_async.testing import LocalMediaStore

pytestmark = pytest.mark.anyio

KEYS = Credentials("AKIDEXAMPLE", "secret")
NOT_A_COUNT = [math.nan, math.inf, -1, True, 2.5, "3"]


@pytest.mark.parametrize("value", [0, *NOT_A_COUNT])
def test_max_attempts_must_be_a_whole_number_of_at_least_one(value: object) -> None:
    with pytest.raises(InvalidParameterError, match="max_attempts") as caught:
        RetryPolicy(max_attempts=value)  # type: ignore[arg-type]
    assert caught.value.rule == "retry.max-attempts"


@pytest.mark.parametrize("field", ["backoff_initial", "backoff_max", "retry_after_max"])
@pytest.mark.parametrize("value", [math.inf, True, "1"])
def test_retry_delays_must_be_finite_numbers(field: str, value: object) -> None:
    with pytest.raises(InvalidParameterError, match=field):
        RetryPolicy(**{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["connect", "read", "write", "pool", "credentials"])
def test_an_infinite_timeout_is_refused_none_is_the_way_to_disable_one(field: str) -> None:
    with pytest.raises(InvalidParameterError, match=f"Timeouts.{field}.*None"):
        Timeouts(**{field: math.inf})  # type: ignore[arg-type]
    assert getattr(Timeouts(**{field: None}), field) is None  # type: ignore[arg-type]


def test_an_infinite_keepalive_expiry_is_refused() -> None:
    with pytest.raises(InvalidParameterError, match="keepalive_expiry"):
        Limits(keepalive_expiry=math.inf)


def test_an_infinite_deadline_is_refused() -> None:
    with pytest.raises(InvalidParameterError, match="None for none"):
        Deadline.after(math.inf)


@pytest.mark.parametrize(
    ("name", "value"),
    [("timeouts", 5), ("limits", {"max_connections": 1}), ("retry", 3), ("retry", None)],
)
def test_session_refuses_settings_of_the_wrong_type(name: str, value: object) -> None:
    with pytest.raises(InvalidParameterError, match=name):
        Session(credentials=KEYS, region="us-east-1", **{name: value})


def test_assigning_a_wrong_retry_policy_is_refused() -> None:
    session = Session(credentials=KEYS, region="us-east-1")
    with pytest.raises(InvalidParameterError, match="RetryPolicy"):
        session.retry = 3  # type: ignore[assignment]
    assert isinstance(session.retry, RetryPolicy)


@pytest.mark.parametrize("name", ["standard_limit", "streaming_limit"])
@pytest.mark.parametrize("value", [0, *NOT_A_COUNT])
async def test_container_object_limits_must_be_whole_numbers_of_bytes(
    name: str, value: object
) -> None:
    async with Session(credentials=KEYS, region="us-east-1") as session:
        with pytest.raises(InvalidParameterError, match=name) as caught:
            session.container("http://127.0.0.1:9", **{name: value})
        assert caught.value.rule == f"container.{name}"


async def test_call_arguments_are_refused_before_anything_is_sent(
    mediastore_server: LocalMediaStore,
) -> None:
    """A wrong ``retry=`` was used only at the first retryable error (AttributeError); a
    ``max_resumes`` of -1, nan or "3" silently meant no resume, or failed mid-download;
    ``deadline=inf`` became an infinite connect timeout with ``Timeouts(connect=None)``."""
    requests: list[str] = []
    mediastore_server.on_request = lambda operation, status, seconds: requests.append(status)
    async with Session(credentials=mediastore_server.credentials,
                       region=mediastore_server.region,
                       timeouts=Timeouts(connect=None)) as session:
        store = session.container(mediastore_server.endpoint)
        bad_retry: Any = "twice"
        with pytest.raises(InvalidParameterError, match="retry must be a RetryPolicy"):
            await store.put_object("a.ts", b"x", retry=bad_retry)
        with pytest.raises(InvalidParameterError, match="retry must be a RetryPolicy"):
            await store.describe_object("a.ts", retry=bad_retry)
        for resumes in (-1, math.nan, "3", True):
            with pytest.raises(InvalidParameterError, match="max_resumes"):
                store.get_object("a.ts", max_resumes=resumes)  # type: ignore[arg-type]
        with pytest.raises(InvalidParameterError, match="deadline"):
            await store.get_bytes("a.ts", deadline=math.inf)
        assert requests == []
        assert session.pool.in_use == 0
        await store.put_object("a.ts", b"x")
        async with store.get_object("a.ts", max_resumes=0) as obj:
            assert await obj.read() == b"x"
