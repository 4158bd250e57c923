"""The retry module: policy, backoff, budget, deadlines and the driver, on a fake clock."""

from __future__ import annotations

import builtins
import dataclasses
import email.utils
import logging
import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given
from hypothesis import strategies as st

from msd_async.errors import (
    AccessDeniedError,
    ConnectError,
    ConnectionLostError,
    ConnectTimeout,
    ContainerNotFoundError,
    CredentialsError,
    DeadlineExceeded,
    InvalidParameterError,
    InvalidPathError,
    InvalidSignatureError,
    MediaStoreError,
    ObjectChangedError,
    ObjectNotFoundError,
    ObjectTooLargeError,
    PoolTimeout,
    RangeNotSatisfiableError,
    ReadTimeout,
    ServerError,
    ServiceError,
    ThrottlingError,
    TransportError,
    UnreplayableBodyError,
    ValidationError,
    WriteTimeout,
)
from msd_async.retry import (
    DEFAULT_RETRY_POLICY,
    NO_RETRIES,
    RETRYABLE_STATUS_CODES,
    SYSTEM_CLOCK,
    Deadline,
    RetryBudget,
    RetryPolicy,
    call_with_retries,
    parse_retry_after,
)


class FakeClock:
    """Monotonic time that only moves when someone sleeps; every sleep is recorded."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []
        self.on_sleep: Callable[[float], None] | None = None

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if self.on_sleep is not None:
            self.on_sleep(seconds)
        self.now += seconds
        # Yield like a real sleep, so concurrent calls interleave and cancellation lands here.
        await anyio.lowlevel.checkpoint()


class Endpoint:
    """An attempt function that plays a script: raise each exception, return anything else."""

    def __init__(self, script: Sequence[object], *, forever: BaseException | None = None) -> None:
        self.script = list(script)
        self.forever = forever
        self.calls: list[int] = []
        self.raised: list[BaseException] = []

    async def __call__(self, n: int) -> object:
        self.calls.append(n)
        await anyio.lowlevel.checkpoint()
        if self.script:
            outcome = self.script.pop(0)
        elif self.forever is not None:
            outcome = _copy(self.forever)
        else:
            raise AssertionError("the endpoint was called more often than scripted")
        if isinstance(outcome, BaseException):
            self.raised.append(outcome)
            raise outcome
        return outcome


def _copy(exc: BaseException) -> BaseException:
    # A fresh object per attempt, so identity checks can tell attempts apart.
    new = type(exc).__new__(type(exc))
    new.__dict__.update(exc.__dict__)
    new.args = exc.args
    return new


def server_error(status: int = 500, *, retry_after: float | None = None) -> ServerError:
    return ServerError(
        "We encountered an internal error.",
        code="InternalServerError",
        status=status,
        request_id="req-1",
        retry_after=retry_after,
    )


def throttled(*, status: int = 400, retry_after: float | None = None) -> ThrottlingError:
    return ThrottlingError(
        "Rate exceeded", code="ThrottlingException", status=status, retry_after=retry_after
    )


def seeded(seed: int = 7) -> Callable[[], float]:
    return random.Random(seed).random


# --- which errors retry ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        throttled(),
        throttled(status=429),
        ThrottlingError("slow down", code="429", status=429),
        ServiceError("", code="TooManyRequestsException", status=400),
        server_error(500),
        ServerError("Bad Gateway", code="502", status=502),
        ServerError("Service Unavailable", code="ServiceUnavailable", status=503),
        ServerError("Gateway Timeout", code="504", status=504),
        ConnectError("connection refused"),
        ConnectionLostError("connection reset mid-body"),
        ConnectTimeout("connect timed out"),
        ReadTimeout("read timed out"),
        WriteTimeout("write timed out"),
        TransportError("some network failure"),
    ],
    ids=repr,
)
def test_retryable(exc: BaseException) -> None:
    assert DEFAULT_RETRY_POLICY.is_retryable(exc)


NOT_RETRYABLE: list[BaseException] = [
    ValidationError("bad path", code="ValidationException", status=400),
    InvalidSignatureError("signature mismatch", code="InvalidSignatureException", status=403),
    AccessDeniedError("denied", code="AccessDeniedException", status=403),
    ObjectNotFoundError("no such object", code="ObjectNotFoundException", status=404),
    ContainerNotFoundError("no container", code="ContainerNotFoundException", status=404),
    RangeNotSatisfiableError("", code="RequestedRangeNotSatisfiableException", status=416),
    ServerError("Not Implemented", code="501", status=501),
    ServiceError("Conflict", code="409", status=409),
    DeadlineExceeded("deadline"),
    PoolTimeout("no free connection"),
    InvalidPathError("bad path", rule="path.chars"),
    ObjectTooLargeError("too big", rule="object.size", limit=10, size=11),
    UnreplayableBodyError("one-shot body"),
    ObjectChangedError("changed", expected_etag="a", actual_etag="b"),
    CredentialsError("no credentials"),
    MediaStoreError("generic"),
    builtins.TimeoutError("unmapped builtin timeout"),
    ConnectionResetError("unmapped OS error"),
    KeyError("a bug"),
]


@pytest.mark.parametrize("exc", NOT_RETRYABLE, ids=repr)
def test_not_retryable(exc: BaseException) -> None:
    assert not DEFAULT_RETRY_POLICY.is_retryable(exc)


def test_retryable_sets_are_configurable() -> None:
    policy = dataclasses.replace(DEFAULT_RETRY_POLICY, status_codes=frozenset({503}))
    assert policy.is_retryable(server_error(500))  # its code InternalServerError still retries
    assert not policy.is_retryable(ServerError("Bad Gateway", code="502", status=502))
    policy = dataclasses.replace(policy, error_codes=frozenset())
    assert not policy.is_retryable(server_error(500))
    assert policy.is_retryable(server_error(503))
    assert frozenset({429, 500, 502, 503, 504}) == RETRYABLE_STATUS_CODES


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("status_codes", "503"),  # a str is a collection of one-char strs: never a status
        ("status_codes", frozenset({"503"})),
        ("status_codes", {503.0}),
        ("status_codes", frozenset({True})),  # True == 1, not a status
        ("status_codes", 503),
        ("status_codes", {5030}),  # no HTTP status
        ("status_codes", None),
        ("error_codes", "SlowDown"),
        ("error_codes", frozenset({503})),
        ("error_codes", [b"SlowDown"]),
        ("error_codes", None),
    ],
    ids=repr,
)
def test_retryable_sets_of_the_wrong_type_are_refused(field: str, value: object) -> None:
    """Each silently never matched a status or code (a str is iterable and supports ``in``),
    so a policy that was meant to retry 503s retried none of them."""
    with pytest.raises(InvalidParameterError, match=field) as caught:
        RetryPolicy(**{field: value})  # type: ignore[arg-type]
    assert caught.value.rule == f"retry.{field}"


def test_retryable_sets_take_any_collection_and_stay_hashable() -> None:
    """A set or list of the right type is what a user writes: kept as a frozenset, so the
    policy stays an immutable, hashable value."""
    policy = RetryPolicy(status_codes={503}, error_codes=["SlowDown"])  # type: ignore[arg-type]
    assert policy.status_codes == frozenset({503})
    assert policy.error_codes == frozenset({"SlowDown"})
    assert isinstance(policy.status_codes, frozenset)
    assert isinstance(policy.error_codes, frozenset)
    assert hash(policy) == hash(RetryPolicy(status_codes=frozenset({503}),
                                            error_codes=frozenset({"SlowDown"})))
    assert policy.is_retryable(ServerError("Service Unavailable", code="x", status=503))
    # A generator is read once: checking it must not leave the set empty.
    policy = RetryPolicy(status_codes=(code for code in (502, 503)))  # type: ignore[arg-type]
    assert policy.status_codes == frozenset({502, 503})


# --- the policy value ------------------------------------------------------------------------


def test_policy_is_an_immutable_slotted_value() -> None:
    policy = RetryPolicy()
    assert policy == DEFAULT_RETRY_POLICY
    assert (policy.max_attempts, policy.backoff_initial, policy.backoff_max) == (4, 0.1, 5.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.max_attempts = 9  # type: ignore[misc]
    assert not hasattr(policy, "__dict__")
    assert dataclasses.replace(policy, max_attempts=9).max_attempts == 9
    assert policy.max_attempts == 4
    assert RetryPolicy.none() is NO_RETRIES
    assert NO_RETRIES.max_attempts == 1


@pytest.mark.parametrize(
    "changes",
    [
        {"max_attempts": 0},
        {"backoff_initial": -0.1},
        {"backoff_max": math.nan},
        {"retry_after_max": -1.0},
    ],
)
def test_policy_refuses_nonsense(changes: dict[str, Any]) -> None:
    with pytest.raises(InvalidParameterError) as info:
        dataclasses.replace(DEFAULT_RETRY_POLICY, **changes)
    assert info.value.rule.startswith("retry.")


# --- backoff ---------------------------------------------------------------------------------


@given(
    retry_index=st.integers(min_value=0, max_value=100_000),
    u=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
    initial=st.floats(min_value=0.0, max_value=10.0),
    cap=st.floats(min_value=0.0, max_value=600.0),
)
def test_backoff_is_full_jitter_under_the_capped_ceiling(
    retry_index: int, u: float, initial: float, cap: float
) -> None:
    policy = RetryPolicy(backoff_initial=initial, backoff_max=cap)
    delay = policy.backoff(retry_index, lambda: u)
    ceiling = min(cap, initial * 2.0 ** min(retry_index, 62))
    assert 0.0 <= delay <= cap
    assert delay <= ceiling
    assert delay == pytest.approx(u * ceiling)


@given(
    retry_index=st.integers(min_value=0, max_value=50),
    u=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
    retry_after=st.one_of(st.none(), st.floats(min_value=0.0, max_value=1e6)),
    retry_after_max=st.floats(min_value=0.0, max_value=100.0),
)
def test_retry_after_is_a_capped_minimum(
    retry_index: int, u: float, retry_after: float | None, retry_after_max: float
) -> None:
    policy = RetryPolicy(retry_after_max=retry_after_max)
    exc = throttled(status=429, retry_after=retry_after)
    delay = policy.delay(retry_index, exc, lambda: u)
    backoff = policy.backoff(retry_index, lambda: u)
    if retry_after is None:
        assert delay == backoff
    else:
        assert delay == max(backoff, min(retry_after, retry_after_max))
        assert delay >= min(retry_after, retry_after_max)
    assert delay <= max(policy.backoff_max, retry_after_max)


def test_backoff_ceiling_doubles_then_caps() -> None:
    policy = RetryPolicy(backoff_initial=0.1, backoff_max=1.0)
    ceilings = [policy.backoff(i, lambda: 1.0) for i in range(6)]
    assert ceilings == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


def test_full_jitter_spreads_uniformly_over_zero_to_ceiling() -> None:
    policy = RetryPolicy(backoff_initial=0.1, backoff_max=5.0)
    rng = seeded(2024)
    samples = [policy.backoff(3, rng) for _ in range(20_000)]  # ceiling 0.8 s
    assert all(0.0 <= s <= 0.8 for s in samples)
    assert min(samples) < 0.01 and max(samples) > 0.79
    assert sum(samples) / len(samples) == pytest.approx(0.4, abs=0.01)
    # Ten equal bins each get about a tenth: no clustering near the ceiling, as "equal
    # jitter" (ceiling/2 + uniform) would show.
    bins = [0] * 10
    for s in samples:
        bins[min(int(s / 0.08), 9)] += 1
    assert all(1700 < b < 2300 for b in bins), bins


def test_backoff_is_deterministic_for_a_seed() -> None:
    a = [DEFAULT_RETRY_POLICY.backoff(i, rng) for rng in [seeded(1)] for i in range(5)]
    b = [DEFAULT_RETRY_POLICY.backoff(i, rng) for rng in [seeded(1)] for i in range(5)]
    assert a == b


# --- Retry-After parsing ---------------------------------------------------------------------


def test_parse_retry_after() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 7 ") == 7.0
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now=now) == 30.0
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0
    for bad in ["", "-5", "1.5", "soon", "٣", "Wed, 99 Foo 2023 99:99:99 GMT"]:
        assert parse_retry_after(bad, now=now) is None, bad


# --- the driver ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_retries_until_success_with_jittered_sleeps() -> None:
    clock = FakeClock()
    endpoint = Endpoint([server_error(503), ConnectionLostError("reset"), "ok"])
    result = await call_with_retries(endpoint, clock=clock, rng=seeded(3))
    assert result == "ok"
    assert endpoint.calls == [1, 2, 3]
    expected_rng = seeded(3)
    assert clock.sleeps == [DEFAULT_RETRY_POLICY.backoff(i, expected_rng) for i in range(2)]


@pytest.mark.anyio
async def test_exhausted_retries_raise_the_last_error_with_attempts_and_cause() -> None:
    clock = FakeClock()
    causes: list[OSError] = []

    async def attempt(n: int) -> None:
        cause = ConnectionResetError(f"reset on attempt {n}")
        causes.append(cause)
        raise ConnectionLostError(f"lost on attempt {n}") from cause

    with pytest.raises(ConnectionLostError) as info:
        await call_with_retries(attempt, clock=clock, rng=seeded())
    exc = info.value
    assert exc.message == "lost on attempt 4"
    assert exc.attempts == 4
    assert exc.__cause__ is causes[-1]
    assert len(causes) == 4 and len(clock.sleeps) == 3
    assert any("all 4 attempts" in note for note in exc.__notes__)


@pytest.mark.anyio
async def test_final_service_error_is_the_servers_answer_unchanged() -> None:
    last = server_error(500)
    endpoint = Endpoint([server_error(500), last])
    policy = RetryPolicy(max_attempts=2)
    with pytest.raises(ServerError) as info:
        await call_with_retries(endpoint, policy=policy, clock=FakeClock(), rng=seeded())
    assert info.value is last
    assert (info.value.code, info.value.status, info.value.request_id) == (
        "InternalServerError",
        500,
        "req-1",
    )
    assert info.value.attempts == 2


@pytest.mark.anyio
@pytest.mark.parametrize(
    "exc",
    [e for e in NOT_RETRYABLE if isinstance(e, MediaStoreError)],
    ids=repr,
)
async def test_non_retryable_errors_are_raised_at_once(exc: MediaStoreError) -> None:
    clock = FakeClock()
    budget = RetryBudget()
    endpoint = Endpoint([exc])
    with pytest.raises(type(exc)) as info:
        await call_with_retries(endpoint, clock=clock, budget=budget, rng=seeded())
    assert info.value is exc
    # An unsent error (a CredentialsError, a PoolTimeout) ends its attempt before it
    # took a connection: not counted.
    assert exc.attempts == (0 if exc.unsent else 1)
    assert exc.unsent == isinstance(exc, CredentialsError | PoolTimeout)
    assert endpoint.calls == [1]
    assert clock.sleeps == []
    assert budget.available == budget.capacity


@pytest.mark.anyio
async def test_non_retryable_after_retries_counts_every_attempt() -> None:
    missing = ObjectNotFoundError("gone", code="ObjectNotFoundException", status=404)
    endpoint = Endpoint([server_error(503), throttled(), missing])
    with pytest.raises(ObjectNotFoundError) as info:
        await call_with_retries(endpoint, clock=FakeClock(), rng=seeded())
    assert info.value is missing
    assert info.value.attempts == 3


@pytest.mark.anyio
async def test_foreign_exceptions_propagate_unretried() -> None:
    bug = KeyError("bug in attempt")
    endpoint = Endpoint([bug])
    with pytest.raises(KeyError) as info:
        await call_with_retries(endpoint, clock=FakeClock(), rng=seeded())
    assert info.value is bug
    assert endpoint.calls == [1]
    assert not hasattr(info.value, "attempts")


@pytest.mark.anyio
async def test_no_retries_policy_makes_one_attempt() -> None:
    clock = FakeClock()
    endpoint = Endpoint([server_error(503)])
    with pytest.raises(ServerError) as info:
        await call_with_retries(endpoint, policy=NO_RETRIES, clock=clock)
    assert info.value.attempts == 1
    assert clock.sleeps == []


@pytest.mark.anyio
async def test_retry_after_is_honoured_and_capped() -> None:
    clock = FakeClock()
    endpoint = Endpoint([throttled(status=429, retry_after=3.0), throttled(retry_after=3600), "ok"])
    policy = RetryPolicy(retry_after_max=20.0)
    assert await call_with_retries(endpoint, policy=policy, clock=clock, rng=lambda: 0.0) == "ok"
    assert clock.sleeps == [3.0, 20.0]


@pytest.mark.anyio
async def test_backoff_longer_than_retry_after_wins() -> None:
    clock = FakeClock()
    endpoint = Endpoint([throttled(retry_after=0.5), "ok"])
    policy = RetryPolicy(backoff_initial=2.0, backoff_max=2.0)
    assert await call_with_retries(endpoint, policy=policy, clock=clock, rng=lambda: 0.5) == "ok"
    assert clock.sleeps == [1.0]


@pytest.mark.anyio
async def test_on_retry_sees_each_failed_attempt_error_and_delay() -> None:
    clock = FakeClock()
    seen: list[tuple[int, MediaStoreError, float]] = []
    endpoint = Endpoint([server_error(502), ReadTimeout("slow"), "ok"])
    await call_with_retries(
        endpoint, clock=clock, rng=seeded(), on_retry=lambda *args: seen.append(args)
    )
    assert [(n, e) for n, e, _ in seen] == [(1, endpoint.raised[0]), (2, endpoint.raised[1])]
    assert [d for _, _, d in seen] == clock.sleeps


@pytest.mark.anyio
async def test_a_retry_that_on_retry_stops_gives_its_budget_back() -> None:
    """``on_retry`` raising (an event hook's bug) ends the call before the retry it paid
    for: the tokens go back, or every such call drained the session's shared budget and
    other calls' retries were refused."""

    class HookBug(Exception):
        pass

    def broken(*args: object) -> None:
        raise HookBug

    budget = RetryBudget()
    before = budget.available
    with pytest.raises(HookBug):
        await call_with_retries(
            Endpoint([server_error(503), "ok"]), budget=budget, clock=FakeClock(),
            rng=seeded(), on_retry=broken,
        )
    assert budget.available == before


@pytest.mark.anyio
async def test_a_cancelled_wait_before_a_retry_is_reported_and_the_cancellation_goes_on() -> None:
    abandoned: list[int] = []
    endpoint = Endpoint([server_error(503), server_error(503), "ok"])
    policy = RetryPolicy(backoff_initial=60.0, backoff_max=60.0)
    with anyio.move_on_after(0.2) as scope:
        await call_with_retries(
            endpoint, policy=policy, rng=lambda: 0.5, on_abandoned=abandoned.append
        )
    assert scope.cancelled_caught
    assert abandoned == [1] and endpoint.calls == [1]


@pytest.mark.anyio
async def test_a_cancelled_attempt_is_not_reported_as_a_cancelled_wait() -> None:
    abandoned: list[int] = []

    async def hangs(n: int) -> str:
        await anyio.sleep(60)
        return "never"

    with anyio.move_on_after(0.1) as scope:
        await call_with_retries(hangs, on_abandoned=abandoned.append)
    assert scope.cancelled_caught and abandoned == []


@pytest.mark.anyio
async def test_retries_are_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="msd_async.retry")
    await call_with_retries(Endpoint([server_error(503), "ok"]), clock=FakeClock(), rng=seeded())
    (record,) = [r for r in caplog.records if r.name == "msd_async.retry"]
    assert record.levelno == logging.DEBUG
    assert "attempt 1 failed" in record.getMessage()


# --- the budget ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_budget_drains_under_a_failing_endpoint_then_fails_fast() -> None:
    clock = FakeClock()
    budget = RetryBudget(20, retry_cost=5)
    policy = RetryPolicy(max_attempts=100)
    endpoint = Endpoint([], forever=server_error(503))
    with pytest.raises(ServerError) as info:
        await call_with_retries(endpoint, policy=policy, budget=budget, clock=clock, rng=seeded())
    assert info.value.attempts == 5  # four paid retries, then the bucket is empty
    assert budget.available == 0
    assert any("retry budget exhausted" in note for note in info.value.__notes__)

    endpoint.calls.clear()
    with pytest.raises(ServerError) as info:
        await call_with_retries(endpoint, policy=policy, budget=budget, clock=clock, rng=seeded())
    assert info.value.attempts == 1
    assert endpoint.calls == [1]


@pytest.mark.anyio
async def test_budget_refills_on_success() -> None:
    clock = FakeClock()
    budget = RetryBudget(100)
    assert budget.acquire(50)
    await call_with_retries(Endpoint(["ok"]), budget=budget, clock=clock)
    assert budget.available == 51  # a first-try success gives back one token
    await call_with_retries(Endpoint([server_error(500), "ok"]), budget=budget, clock=clock)
    assert budget.available == 51  # a retry that worked costs nothing in the end
    await call_with_retries(Endpoint([ReadTimeout("slow"), "ok"]), budget=budget, clock=clock)
    assert budget.available == 51
    for _ in range(100):
        await call_with_retries(Endpoint(["ok"]), budget=budget, clock=clock)
    assert budget.available == budget.capacity == 100


@pytest.mark.anyio
async def test_timeouts_cost_more_than_other_retries() -> None:
    budget = RetryBudget(100, retry_cost=5, timeout_retry_cost=10)
    policy = RetryPolicy(max_attempts=2)
    for exc, cost in [(server_error(500), 5), (ReadTimeout("slow"), 10), (ConnectError("no"), 5)]:
        before = budget.available
        with pytest.raises(type(exc)):
            await call_with_retries(
                Endpoint([exc, _copy(exc)]), policy=policy, budget=budget, clock=FakeClock()
            )
        assert before - budget.available == cost


@pytest.mark.anyio
async def test_budget_is_shared_by_concurrent_calls() -> None:
    clock = FakeClock()
    budget = RetryBudget(10, retry_cost=5)
    policy = RetryPolicy(max_attempts=100)
    endpoints = [Endpoint([], forever=server_error(503)) for _ in range(2)]
    attempts: list[int] = []

    async def call(endpoint: Endpoint) -> None:
        with pytest.raises(ServerError) as info:
            await call_with_retries(
                endpoint, policy=policy, budget=budget, clock=clock, rng=seeded()
            )
        attempts.append(info.value.attempts)

    async with anyio.create_task_group() as tg:
        for endpoint in endpoints:
            tg.start_soon(call, endpoint)
    assert sum(attempts) == 4  # two calls, two paid retries between them
    assert all(len(e.calls) >= 1 for e in endpoints)
    assert budget.available == 0


def test_budget_arithmetic() -> None:
    budget = RetryBudget(10)
    assert not budget.acquire(11)
    assert budget.acquire(10) and budget.available == 0
    budget.release(25)
    assert budget.available == 10
    assert budget.cost_of(ReadTimeout("t")) == 10 and budget.cost_of(server_error()) == 5
    with pytest.raises(InvalidParameterError):
        RetryBudget(-1)


# --- deadlines -------------------------------------------------------------------------------


def test_deadline_arithmetic() -> None:
    clock = FakeClock(50.0)
    deadline = Deadline.after(2.0, clock=clock)
    assert deadline == Deadline(52.0, clock)
    assert deadline.remaining() == 2.0 and not deadline.expired
    assert deadline.cap(5.0) == 2.0 and deadline.cap(0.5) == 0.5 and deadline.cap(None) == 2.0
    clock.now = 53.0
    assert deadline.remaining() == 0.0 and deadline.expired
    with pytest.raises(InvalidParameterError):
        Deadline.after(-1.0, clock=clock)
    assert Deadline.after(1.0).clock is SYSTEM_CLOCK


@pytest.mark.parametrize("seconds", [True, False, "5", None, b"1"])
def test_a_deadline_that_is_not_a_number_of_seconds_is_refused(seconds: object) -> None:
    # As Timeouts refuses them: True was taken as a 1 s deadline, and "5" (read from a
    # config file) raised a bare TypeError from a comparison.
    with pytest.raises(InvalidParameterError, match="deadline") as caught:
        Deadline.after(seconds, clock=FakeClock())  # type: ignore[arg-type]
    assert caught.value.rule == "retry.deadline"


@pytest.mark.anyio
async def test_deadline_stops_retries_without_sleeping_past_it() -> None:
    clock = FakeClock()
    deadline = Deadline.after(2.5, clock=clock)
    policy = RetryPolicy(max_attempts=100, backoff_initial=1.0, backoff_max=1.0)
    endpoint = Endpoint([], forever=server_error(503))
    with pytest.raises(DeadlineExceeded) as info:
        await call_with_retries(
            endpoint, policy=policy, clock=clock, deadline=deadline, rng=lambda: 0.99
        )
    assert info.value.attempts == 3  # 0, 0.99, 1.98; the next retry would start at 2.97
    assert info.value.__cause__ is endpoint.raised[-1]
    assert clock.sleeps == [0.99, 0.99]
    assert clock.now <= deadline.at


@pytest.mark.anyio
async def test_retry_after_past_the_deadline_fails_at_once() -> None:
    clock = FakeClock()
    deadline = Deadline.after(2.0, clock=clock)
    endpoint = Endpoint([throttled(retry_after=5.0)])
    with pytest.raises(DeadlineExceeded) as info:
        await call_with_retries(endpoint, clock=clock, deadline=deadline, rng=seeded())
    assert info.value.__cause__ is endpoint.raised[0]
    assert info.value.attempts == 1
    assert clock.sleeps == []


@pytest.mark.anyio
async def test_deadline_passing_during_an_attempt_chains_its_error() -> None:
    clock = FakeClock()
    deadline = Deadline.after(1.0, clock=clock)
    timeout = ReadTimeout("no byte for 1.0 s")

    async def attempt(n: int) -> None:
        clock.now += deadline.cap(30.0)  # the client capped its read timeout to the deadline
        raise timeout

    with pytest.raises(DeadlineExceeded) as info:
        await call_with_retries(attempt, clock=clock, deadline=deadline, rng=seeded())
    assert info.value.__cause__ is timeout
    assert info.value.attempts == 1
    assert clock.sleeps == []


@pytest.mark.anyio
async def test_a_past_deadline_makes_no_attempt() -> None:
    clock = FakeClock()
    endpoint = Endpoint(["ok"])
    with pytest.raises(DeadlineExceeded) as info:
        await call_with_retries(endpoint, clock=clock, deadline=Deadline(clock.now, clock))
    assert info.value.attempts == 0
    assert endpoint.calls == []


@pytest.mark.anyio
async def test_non_retryable_error_is_not_masked_by_the_deadline() -> None:
    clock = FakeClock()
    deadline = Deadline.after(1.0, clock=clock)
    denied = InvalidSignatureError("clock skew", code="InvalidSignatureException", status=403)

    async def attempt(n: int) -> None:
        clock.now += 5.0
        raise denied

    with pytest.raises(InvalidSignatureError) as info:
        await call_with_retries(attempt, clock=clock, deadline=deadline)
    assert info.value is denied


@pytest.mark.anyio
async def test_deadline_cancels_an_attempt_that_never_ends() -> None:
    # The one test that waits on the event loop clock: 10 ms, for the cancel scope to fire.
    clock = FakeClock()
    first = server_error(503)
    calls: list[int] = []

    async def attempt(n: int) -> None:
        calls.append(n)
        if n == 1:
            raise first
        await anyio.sleep_forever()

    deadline = Deadline(clock.now + 0.01, clock)
    with pytest.raises(DeadlineExceeded) as info:
        await call_with_retries(attempt, clock=clock, deadline=deadline, rng=lambda: 0.0)
    assert calls == [1, 2]
    assert info.value.attempts == 2
    assert info.value.__cause__ is first


@pytest.mark.anyio
async def test_deadline_cancellation_turned_into_an_error_is_still_the_deadline() -> None:
    clock = FakeClock()
    lost = ConnectionLostError("connection torn down")

    async def attempt(n: int) -> None:
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            raise lost from None

    deadline = Deadline(clock.now + 0.01, clock)
    with pytest.raises(DeadlineExceeded) as info:
        await call_with_retries(attempt, clock=clock, deadline=deadline, rng=lambda: 0.0)
    assert info.value.attempts == 1
    assert info.value.__cause__ is lost
    assert clock.sleeps == []


@pytest.mark.anyio
async def test_sleeps_default_to_the_deadlines_clock() -> None:
    clock = FakeClock()
    endpoint = Endpoint([server_error(503), "ok"])
    deadline = Deadline.after(60.0, clock=clock)
    assert await call_with_retries(endpoint, deadline=deadline, rng=lambda: 0.5) == "ok"
    assert clock.sleeps == [0.05]


# --- cancellation ----------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("with_deadline", [False, True])
async def test_cancellation_during_an_attempt_propagates(with_deadline: bool) -> None:
    clock = FakeClock()
    budget = RetryBudget()
    retried: list[object] = []
    calls: list[int] = []

    with anyio.CancelScope() as scope:

        async def attempt(n: int) -> None:
            calls.append(n)
            scope.cancel()
            await anyio.sleep_forever()

        await call_with_retries(
            attempt,
            clock=clock,
            budget=budget,
            deadline=Deadline.after(60.0, clock=clock) if with_deadline else None,
            on_retry=lambda *a: retried.append(a),
        )
        pytest.fail("cancellation was swallowed")
    assert scope.cancelled_caught
    assert calls == [1]
    assert clock.sleeps == [] and retried == []
    assert budget.available == budget.capacity


@pytest.mark.anyio
async def test_cancellation_during_backoff_propagates() -> None:
    clock = FakeClock()
    endpoint = Endpoint([], forever=server_error(503))
    with anyio.CancelScope() as scope:
        clock.on_sleep = lambda _: scope.cancel()
        await call_with_retries(endpoint, clock=clock, rng=seeded())
        pytest.fail("cancellation was swallowed")
    assert scope.cancelled_caught
    assert endpoint.calls == [1]
    assert len(clock.sleeps) == 1


# --- bodies that cannot be sent twice ----------------------------------------------------------


@pytest.mark.anyio
async def test_unreplayable_body_stops_the_retry_with_a_named_error() -> None:
    clock = FakeClock()
    budget = RetryBudget()
    endpoint = Endpoint([server_error(500)])
    with pytest.raises(UnreplayableBodyError) as info:
        await call_with_retries(
            endpoint, clock=clock, budget=budget, rng=seeded(), replayable=lambda: False
        )
    assert info.value.attempts == 1
    assert info.value.__cause__ is endpoint.raised[0]
    assert "InternalServerError" in str(info.value)
    assert clock.sleeps == [] and budget.available == budget.capacity


@pytest.mark.anyio
async def test_replayable_is_asked_only_before_a_real_retry() -> None:
    asked: list[int] = []

    def replayable() -> bool:
        asked.append(1)
        return True

    clock = FakeClock()
    assert (
        await call_with_retries(
            Endpoint([server_error(500), "ok"]), clock=clock, replayable=replayable
        )
        == "ok"
    )
    assert len(asked) == 1
    missing = ObjectNotFoundError("gone", code="ObjectNotFoundException", status=404)
    with pytest.raises(ObjectNotFoundError):
        await call_with_retries(Endpoint([missing]), clock=clock, replayable=replayable)
    with pytest.raises(ServerError):  # the last attempt's error, not UnreplayableBodyError
        await call_with_retries(
            Endpoint([server_error(500)]), policy=NO_RETRIES, clock=clock, replayable=replayable
        )
    assert len(asked) == 1


# --- properties of the whole driver --------------------------------------------------------------


@pytest.mark.anyio
@given(
    failures=st.integers(min_value=0, max_value=7),
    seed=st.integers(min_value=0, max_value=2**32),
)
async def test_every_sleep_is_under_its_ceiling(failures: int, seed: int) -> None:
    clock = FakeClock()
    policy = RetryPolicy(max_attempts=8, backoff_initial=0.25, backoff_max=2.0)
    endpoint = Endpoint([server_error(503) for _ in range(failures)] + ["ok"])
    assert await call_with_retries(endpoint, policy=policy, clock=clock, rng=seeded(seed)) == "ok"
    assert endpoint.calls == list(range(1, failures + 2))
    assert len(clock.sleeps) == failures
    for i, slept in enumerate(clock.sleeps):
        assert 0.0 <= slept <= min(2.0, 0.25 * 2**i)
