"""Every argument error is a MediaStoreError with a rule name; messages speak in seconds."""

from __future__ import annotations

import anyio
import pytest

from msd_async import (
    Credentials,
    DeadlineExceeded,
    InvalidParameterError,
    InvalidRangeError,
    MediaStoreError,
    RetryPolicy,
    ServerError,
    Session,
)
from msd_async.retry import Deadline, call_with_retries
from msd_async.rules import format_range, parse_range_header

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    "value",
    ["bytes=0-3\r\n", "bytes=0-3\n", "bytes=0-3\rX-Evil: 1", "bytes=\x000-3", "bytes=0-3\x7f",
     "\tbytes=0-3"],
)
def test_a_range_with_control_characters_is_refused(value: str) -> None:
    with pytest.raises(InvalidRangeError) as caught:
        format_range(value)
    assert caught.value.rule == "range.characters"
    assert isinstance(caught.value, MediaStoreError)


@pytest.mark.parametrize(
    ("value", "sent"),
    [(" bytes=0-3 ", "bytes=0-3"), ("bytes=10-", "bytes=10-"), ("bytes=-5", "bytes=-5"),
     ("bytes=007-8", "bytes=7-8")],
)
def test_a_range_string_is_sent_normalized(value: str, sent: str) -> None:
    assert format_range(value) == sent
    assert parse_range_header(sent) == parse_range_header(value)


async def test_get_object_refuses_a_range_with_a_line_break_before_sending() -> None:
    async with Session(
        credentials=Credentials("AKIDEXAMPLE", "secret"), region="us-east-1"
    ) as session:
        # Nothing listens on port 9: a request that went out would fail with ConnectError.
        client = session.container("http://127.0.0.1:9")
        with pytest.raises(InvalidRangeError) as caught:
            await client.get_bytes("a.ts", range="bytes=0-3\r\n")
        assert caught.value.rule == "range.characters"
        assert session.pool.in_use == 0


@pytest.mark.parametrize("expires_in", [0, -1, 7 * 24 * 3600 + 1, 1.5, True])
async def test_presign_expiry_out_of_range_is_a_parameter_error(expires_in: object) -> None:
    async with Session(
        credentials=Credentials("AKIDEXAMPLE", "secret"), region="us-east-1"
    ) as session:
        client = session.container("http://127.0.0.1:9")
        for presign in (client.presign_get, client.presign_put):
            with pytest.raises(InvalidParameterError) as caught:
                await presign("a.ts", expires_in=expires_in)  # type: ignore[arg-type]
            assert caught.value.rule == "presign.expires-in"
            assert "7 days" in str(caught.value)
        assert "X-Amz-Expires=604800" in await client.presign_get("a.ts", expires_in=604800)


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await anyio.lowlevel.checkpoint()


async def test_deadline_exceeded_says_how_many_seconds_were_allowed() -> None:
    clock = _Clock()
    deadline = Deadline.after(2.5, clock=clock)

    async def attempt(n: int) -> None:
        raise ServerError("busy", code="InternalServerError", status=500)

    with pytest.raises(DeadlineExceeded) as caught:
        await call_with_retries(
            attempt,
            policy=RetryPolicy(max_attempts=100, backoff_initial=1.0, backoff_max=1.0),
            deadline=deadline,
            clock=clock,
            rng=lambda: 0.99,
        )
    message = str(caught.value)
    assert "deadline of 2.5 s" in message
    assert "monotonic" not in message and "1000" not in message
