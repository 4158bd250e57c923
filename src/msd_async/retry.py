"""Retries: an immutable policy, a shared retry budget, deadlines, and the driver that runs them.

Pure and small: no aiohttp, no protocol knowledge. The client hands :func:`call_with_retries`
one function that makes one HTTP attempt; this module decides whether, when and how often to
call it again. Time comes from a :class:`Clock` and randomness from a callable, so tests drive
both without sleeping.

What is retried (docs/contract.md, "Errors"; botocore's ``_retry.json``):
``ThrottlingException``, HTTP 429, 500, 502, 503 and 504, connection errors
(:class:`~msd_async.errors.ConnectError`, :class:`~msd_async.errors.ConnectionLostError`) and
timeouts. What is not: every other 4xx (a 400 or 403 will not get better by asking again;
docs/contract.md, "Live publishing"), errors raised before sending,
:class:`~msd_async.errors.DeadlineExceeded`,
:class:`~msd_async.errors.PoolTimeout` (the request never left this process; retrying only
queues more work on a saturated pool), and anything that is not a
:class:`~msd_async.errors.MediaStoreError` (the transport translates network errors first).

Whatever ends a call carries ``attempts``, and keeps its cause: the last error is raised
itself, unchanged but for ``attempts`` and a note saying why it was not retried;
``DeadlineExceeded`` and ``UnreplayableBodyError`` are raised ``from`` it.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Final, Protocol, TypeGuard, TypeVar

import anyio

from .config import is_seconds, is_whole_number
from .errors import (
    DeadlineExceeded,
    InvalidParameterError,
    MediaStoreError,
    MediaStoreTimeout,
    PoolTimeout,
    ServiceError,
    TransportError,
    UnreplayableBodyError,
)
from .httpdate import parse_http_date

__all__ = [
    "DEFAULT_BACKOFF_INITIAL",
    "DEFAULT_BACKOFF_MAX",
    "DEFAULT_BUDGET_CAPACITY",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_RETRY_AFTER_MAX",
    "DEFAULT_RETRY_COST",
    "DEFAULT_RETRY_POLICY",
    "DEFAULT_SUCCESS_REFUND",
    "DEFAULT_TIMEOUT_RETRY_COST",
    "NO_RETRIES",
    "RETRYABLE_ERROR_CODES",
    "RETRYABLE_STATUS_CODES",
    "SYSTEM_CLOCK",
    "Clock",
    "Deadline",
    "RetryBudget",
    "RetryPolicy",
    "call_with_retries",
    "parse_retry_after",
]

T = TypeVar("T")

logger = logging.getLogger("msd_async.retry")

#: Total attempts, the first included: three retries ride out a restart or a throttling burst.
DEFAULT_MAX_ATTEMPTS: Final = 4
#: Ceiling of the first retry's delay. With full jitter the first wait averages 50 ms, so a
#: 2 s live segment can afford several retries.
DEFAULT_BACKOFF_INITIAL: Final = 0.1
#: No single backoff sleep is longer than this. A live stream gains nothing from longer waits;
#: the retry budget, not long sleeps, is what spares a failing endpoint.
DEFAULT_BACKOFF_MAX: Final = 5.0
#: The longest ``Retry-After`` honoured, in seconds; longer requests are cut to this.
#: urllib3 allows six hours, which no live stream can wait; botocore's backoff cap is 20 s.
DEFAULT_RETRY_AFTER_MAX: Final = 20.0

#: HTTP statuses that are worth another attempt, whatever the error code (botocore
#: ``retries/standard.py``).
RETRYABLE_STATUS_CODES: Final = frozenset({429, 500, 502, 503, 504})
#: AWS error codes worth another attempt even with a 4xx status. ``ThrottlingException`` comes
#: with HTTP 400; the others are the throttling and transient codes botocore retries that
#: errors.py maps for this API.
RETRYABLE_ERROR_CODES: Final = frozenset(
    {
        "ThrottlingException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "InternalServerError",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
    }
)

# 2.0 ** 1024 overflows a float; any exponent this large is far past every useful cap.
_MAX_EXPONENT: Final = 62


# --- time ----------------------------------------------------------------------------------


class Clock(Protocol):
    """Where retries read the time and sleep. Tests pass a fake that advances instantly."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds``; must be cancellable."""
        ...


class _SystemClock:
    __slots__ = ()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)

    def __repr__(self) -> str:
        return "SYSTEM_CLOCK"


#: ``time.monotonic`` and ``anyio.sleep``: the clock used unless a test says otherwise.
SYSTEM_CLOCK: Final[Clock] = _SystemClock()


@dataclass(frozen=True, slots=True)
class Deadline:
    """A point in time, on ``clock``, by which a whole call (every attempt) must finish.

    Build one with :meth:`after` (a timeout in seconds) or directly from an absolute
    ``clock.monotonic()`` value. The client caps each attempt's timeouts with :meth:`cap`;
    :func:`call_with_retries` never sleeps past it and raises
    :class:`~msd_async.errors.DeadlineExceeded` once it has passed.
    """

    at: float
    clock: Clock = field(default=SYSTEM_CLOCK, compare=False)
    #: The timeout it was built from (:meth:`after`), for messages; ``None`` if built from
    #: an absolute time.
    seconds: float | None = field(default=None, compare=False)

    @classmethod
    def after(cls, seconds: float, *, clock: Clock = SYSTEM_CLOCK) -> Deadline:
        """The deadline ``seconds`` from now. Raises ``InvalidParameterError`` if negative,
        infinite or not a number (a bool, a string)."""
        # bool is an int: True was a 1 s deadline. A str raised a bare TypeError below.
        # inf: with Timeouts(connect=None) it became the connect timeout, which aiohttp
        # cannot round (OverflowError). None is the way to say no deadline.
        if not is_seconds(seconds):
            raise InvalidParameterError(
                f"a deadline must be a finite number of seconds, 0 or more (or None for "
                f"none), not {seconds!r}",
                rule="retry.deadline",
            )
        return cls(clock.monotonic() + seconds, clock, seconds)

    def remaining(self) -> float:
        """Seconds left, never below 0."""
        return max(0.0, self.at - self.clock.monotonic())

    @property
    def expired(self) -> bool:
        """Whether the deadline has passed."""
        return self.clock.monotonic() >= self.at

    def cap(self, timeout: float | None) -> float:
        """``timeout`` shortened to what is left (``None``, no timeout, becomes what is left)."""
        remaining = self.remaining()
        return remaining if timeout is None else min(timeout, remaining)


def parse_retry_after(value: str, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date.

    ``now`` is the wall-clock time (``time.time()`` by default) an HTTP-date is measured from.
    Returns ``None`` for a value that is neither, and 0 for a date in the past; never raises.
    """
    value = value.strip()
    if value.isdigit() and value.isascii():
        # Thousands of digits are still "wait very long", not an infinite float.
        return float(value) if len(value) <= 9 else _RETRY_AFTER_CEILING
    when = parse_http_date(value)  # the package's one date parser: UTC or None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


#: The delay :func:`parse_retry_after` gives a delta-seconds value of 10 digits or more
#: (about 31 years); the policy's ``retry_after_max`` cuts it far shorter.
_RETRY_AFTER_CEILING: Final = 999_999_999.0


def _items(value: object) -> tuple[object, ...] | None:
    """The elements of a collection (a generator read once), or None for a bare str or
    bytes (iterable, but not a collection of codes) or a non-iterable."""
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        return None
    return tuple(value)


# --- the policy ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Which errors are retried, how often, and how long to wait between attempts.

    An immutable value: share it freely, derive variants with ``dataclasses.replace``.

    ===================  ========  ==========================================================
    field                default   why
    ===================  ========  ==========================================================
    ``max_attempts``     4         total attempts, the first included; 1 means no retries.
                                   For manifests, which must get through, pass a large
                                   number together with a :class:`Deadline`.
    ``backoff_initial``  0.1 s     ceiling of the first retry's delay; doubles each retry
    ``backoff_max``      5.0 s     the ceiling never grows past this
    ``retry_after_max``  20.0 s    longest ``Retry-After`` honoured; longer ones are cut
    ``status_codes``     see [1]   HTTP statuses retried whatever the error code
    ``error_codes``      see [2]   AWS error codes retried whatever the status
    ===================  ========  ==========================================================

    [1] :data:`RETRYABLE_STATUS_CODES`: 429, 500, 502, 503, 504.
    [2] :data:`RETRYABLE_ERROR_CODES`: ``ThrottlingException`` (sent with HTTP 400) and the
    other throttling and transient codes.

    The delay before retry ``i`` (0 for the first retry) uses "full jitter"::

        delay = uniform(0, min(backoff_max, backoff_initial * 2 ** i))

    so clients that failed together do not come back together. When the server sent
    ``Retry-After``, that (capped at ``retry_after_max``) is the *minimum* delay: the larger of
    the two is slept. Raises ``InvalidParameterError`` for a negative, infinite or non-number
    value, a ``max_attempts`` that is not a whole number of at least 1, ``status_codes`` that
    are not ints from 100 to 599, or ``error_codes`` that are not strs (a bare str is refused:
    it is not a collection of codes). Any collection of them is kept as a frozenset.
    """

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    backoff_initial: float = DEFAULT_BACKOFF_INITIAL
    backoff_max: float = DEFAULT_BACKOFF_MAX
    retry_after_max: float = DEFAULT_RETRY_AFTER_MAX
    status_codes: frozenset[int] = RETRYABLE_STATUS_CODES
    error_codes: frozenset[str] = RETRYABLE_ERROR_CODES

    def __post_init__(self) -> None:
        attempts = self.max_attempts
        # A float, nan or inf count was taken (nan: one attempt; inf: retries only the
        # budget and a deadline could stop), True was 1, and a str a bare TypeError.
        if not is_whole_number(attempts, 1):
            raise InvalidParameterError(
                f"max_attempts counts the first attempt and must be a whole number, at "
                f"least 1, not {attempts!r}",
                rule="retry.max-attempts",
            )
        for name in ("backoff_initial", "backoff_max", "retry_after_max"):
            value = getattr(self, name)
            # inf: a retry could sleep forever (a Retry-After of a year honoured).
            if not is_seconds(value):
                raise InvalidParameterError(
                    f"{name} must be a finite number of seconds, 0 or more, not {value!r}",
                    rule=f"retry.{name}",
                )
        # A wrong element type never matched and raised nothing: a str "503" (a str is a
        # collection of one-char strs that supports ``in``) or {"503"} retried no 503.
        statuses = _items(self.status_codes)
        if statuses is None or not all(
            isinstance(code, int) and not isinstance(code, bool) and 100 <= code <= 599
            for code in statuses
        ):
            raise InvalidParameterError(
                f"status_codes must be a collection of HTTP statuses (ints from 100 to 599), "
                f"such as frozenset({{503}}), not {self.status_codes!r}",
                rule="retry.status_codes",
            )
        codes = _items(self.error_codes)
        if codes is None or not all(isinstance(code, str) for code in codes):
            raise InvalidParameterError(
                f"error_codes must be a collection of AWS error codes (strs), such as "
                f"frozenset({{'SlowDown'}}), not {self.error_codes!r}",
                rule="retry.error_codes",
            )
        # A set or list is what users write; a frozenset keeps the policy immutable and
        # hashable.
        object.__setattr__(self, "status_codes", frozenset(statuses))
        object.__setattr__(self, "error_codes", frozenset(codes))

    @classmethod
    def none(cls) -> RetryPolicy:
        """The policy that never retries (:data:`NO_RETRIES`)."""
        return NO_RETRIES

    def is_retryable(self, exc: BaseException) -> TypeGuard[MediaStoreError]:
        """Whether another attempt might succeed where this error ended the last one.

        Service errors retry by status or code (see the class table); transport errors retry
        except :class:`~msd_async.errors.DeadlineExceeded` and
        :class:`~msd_async.errors.PoolTimeout`; nothing else does.
        """
        if isinstance(exc, ServiceError):
            return exc.status in self.status_codes or exc.code in self.error_codes
        if isinstance(exc, TransportError):
            return not isinstance(exc, DeadlineExceeded | PoolTimeout)
        return False

    def backoff(self, retry_index: int, rng: Callable[[], float] = random.random) -> float:
        """The jittered delay before retry ``retry_index`` (0 for the first retry).

        ``rng`` returns a float in ``[0, 1)``; the result is in
        ``[0, min(backoff_max, backoff_initial * 2 ** retry_index)]``.
        """
        exponent = min(max(retry_index, 0), _MAX_EXPONENT)
        ceiling = min(self.backoff_max, self.backoff_initial * 2.0**exponent)
        return rng() * ceiling

    def delay(
        self, retry_index: int, exc: BaseException, rng: Callable[[], float] = random.random
    ) -> float:
        """The backoff for ``retry_index``, but never less than ``exc``'s capped Retry-After."""
        delay = self.backoff(retry_index, rng)
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None and retry_after > 0:
            delay = max(delay, min(float(retry_after), self.retry_after_max))
        return delay


#: The default policy: 4 attempts, full-jitter backoff from 0.1 s up to 5 s.
DEFAULT_RETRY_POLICY: Final = RetryPolicy()
#: One attempt, no retries.
NO_RETRIES: Final = RetryPolicy(max_attempts=1)


def check_retry_policy(retry: object, name: str = "retry") -> None:
    """Refuse what is not a :class:`RetryPolicy`: it was used only when a call failed,
    so a wrong one turned the first retryable error into an AttributeError."""
    if not isinstance(retry, RetryPolicy):
        raise InvalidParameterError(
            f"{name} must be a RetryPolicy (RetryPolicy.none() for no retries), "
            f"not {retry!r}",
            rule="retry.policy",
        )


# --- the budget ----------------------------------------------------------------------------

#: Tokens in a full budget (botocore's standard retry quota).
DEFAULT_BUDGET_CAPACITY: Final = 500
#: Tokens one retry costs.
DEFAULT_RETRY_COST: Final = 5
#: Tokens a retry after a timeout costs: a timing-out endpoint costs us the most to wait on.
DEFAULT_TIMEOUT_RETRY_COST: Final = 10
#: Tokens a call that succeeded at its first attempt gives back.
DEFAULT_SUCCESS_REFUND: Final = 1


class RetryBudget:
    """A token bucket of retries, shared by every call of one session.

    Each retry takes ``retry_cost`` tokens (``timeout_retry_cost`` after a timeout); when too
    few are left, calls stop retrying and fail at once with their error, so an endpoint that is
    down gets one request per call instead of ``max_attempts``. Success refills the bucket, as
    in AWS's "standard" retry mode: a call that succeeded at its first attempt gives back
    ``success_refund`` tokens, a call that succeeded after retrying gives back what its last
    retry cost, so an endpoint that fails now and then never drains it. Never above
    ``capacity``.

    Defaults: capacity 500, retry 5, timeout retry 10, refund 1, i.e. 100 retries from full
    with nothing succeeding. Meant for one event loop; concurrent tasks may share it (no await
    happens between reading and updating the tokens).
    """

    __slots__ = ("_available", "capacity", "retry_cost", "success_refund", "timeout_retry_cost")

    def __init__(
        self,
        capacity: int = DEFAULT_BUDGET_CAPACITY,
        *,
        retry_cost: int = DEFAULT_RETRY_COST,
        timeout_retry_cost: int = DEFAULT_TIMEOUT_RETRY_COST,
        success_refund: int = DEFAULT_SUCCESS_REFUND,
    ) -> None:
        if capacity < 0 or retry_cost < 0 or timeout_retry_cost < 0 or success_refund < 0:
            raise InvalidParameterError(
                "retry budget capacity, costs and refund must be 0 or more",
                rule="retry.budget",
            )
        self.capacity = capacity
        self.retry_cost = retry_cost
        self.timeout_retry_cost = timeout_retry_cost
        self.success_refund = success_refund
        self._available = capacity

    @property
    def available(self) -> int:
        """Tokens left."""
        return self._available

    def cost_of(self, exc: BaseException) -> int:
        """Tokens a retry after ``exc`` would take."""
        return self.timeout_retry_cost if isinstance(exc, MediaStoreTimeout) else self.retry_cost

    def acquire(self, amount: int) -> bool:
        """Take ``amount`` tokens if that many are left; return whether it did."""
        if amount > self._available:
            return False
        self._available -= amount
        return True

    def release(self, amount: int) -> None:
        """Give back ``amount`` tokens, up to ``capacity``."""
        self._available = min(self.capacity, self._available + amount)

    def __repr__(self) -> str:
        return f"RetryBudget(available={self._available}, capacity={self.capacity})"


# --- the driver ----------------------------------------------------------------------------


def _give_up(exc: MediaStoreError, attempts: int, why: str) -> MediaStoreError:
    exc.attempts = attempts
    exc.add_note(f"msd_async: not retried: {why}")
    return exc


#: What the attempt in flight waits for before it can send anything (the client sets it
#: while its credentials provider has not answered, the transport while the pool has no
#: free connection), for the message of a deadline that ends the attempt there (the
#: endpoint is then not what to check) and its count (that attempt sent nothing).
waiting_before_sending: ContextVar[str | None] = ContextVar(
    "msd_async_waiting_before_sending", default=None
)
#: :data:`waiting_before_sending` while a call queues for a connection of its pool.
WAITING_FOR_CONNECTION: Final = "a free connection of the pool"


def _deadline_exceeded(
    deadline: Deadline, attempts: int, why: str, check: str = "the endpoint's health"
) -> DeadlineExceeded:
    allowed = "" if deadline.seconds is None else f" of {deadline.seconds:g} s"
    return DeadlineExceeded(
        f"the call's deadline{allowed} passed {why} (attempts made: {attempts}); allow more "
        f"time with deadline=, or check {check}",
        attempts=attempts,
    )


async def call_with_retries(
    attempt: Callable[[int], Awaitable[T]],
    *,
    policy: RetryPolicy = DEFAULT_RETRY_POLICY,
    budget: RetryBudget | None = None,
    deadline: Deadline | None = None,
    clock: Clock | None = None,
    rng: Callable[[], float] = random.random,
    replayable: Callable[[], bool] | None = None,
    on_retry: Callable[[int, MediaStoreError, float], object] | None = None,
    on_abandoned: Callable[[int], object] | None = None,
    interruptible: Callable[[Awaitable[None]], Awaitable[None]] | None = None,
) -> T:
    """Run ``attempt(n)`` (``n`` = 1, 2, ...) until it returns, or until retrying must stop.

    After a failed attempt ``n``, in this order:

    1. an error ``policy.is_retryable`` refuses is raised at once, with ``attempts = n``
       (``n - 1`` when it is ``unsent``, as a :class:`~msd_async.errors.CredentialsError`
       or :class:`~msd_async.errors.PoolTimeout` is: its attempt took no connection);
    2. if ``deadline`` has passed: :class:`~msd_async.errors.DeadlineExceeded` ``from`` it;
    3. if ``n == policy.max_attempts``: the error itself, with ``attempts = n``;
    4. if ``replayable()`` says the request body cannot be sent again (a one-shot iterator
       already read from): :class:`~msd_async.errors.UnreplayableBodyError` ``from`` it;
    5. if the delay (:meth:`RetryPolicy.delay`) would end at or after the deadline:
       ``DeadlineExceeded`` ``from`` it, at once, without sleeping;
    6. if ``budget`` cannot pay for the retry: the error itself, with ``attempts = n``;
    7. otherwise ``on_retry(n, error, delay)`` is called, the retry is logged at DEBUG on
       ``msd_async.retry``, and after sleeping ``delay`` on ``clock`` attempt ``n + 1`` runs.

    Sleeps happen on ``clock``: by default the deadline's clock, else :data:`SYSTEM_CLOCK`.
    ``rng`` returns floats in ``[0, 1)`` for the jitter.

    ``replayable`` is asked only when a retry would otherwise happen, and before any token is
    taken or any time slept. With a ``deadline``, each attempt also runs in a cancel scope
    that ends at the deadline (measured on the event loop's clock, ``deadline.remaining()``
    seconds from the attempt's start); if it fires, ``DeadlineExceeded`` is raised from the
    previous attempt's error (with ``attempts = n - 1`` and what it waited for when the
    attempt was still waiting before it could send, for its credentials or a connection:
    :data:`waiting_before_sending`). A
    deadline already past raises before the first attempt (``attempts = 0``). The client
    should still cap its own timeouts with :meth:`Deadline.cap`, so a slow attempt ends
    with a clear timeout rather than a cancellation.

    Cancellation is never caught: it propagates from the attempt or the sleep untouched.
    When it ends the sleep after attempt ``n`` (no attempt in flight), ``on_abandoned(n)``
    is called first: without it nothing would tell that the call ended there.
    ``interruptible`` wraps each sleep (the client's ends it when its session closes); an
    exception it raises ends the call as a cancellation of the sleep does (a
    :class:`~msd_async.errors.MediaStoreError` with ``attempts = n``, caused by the error
    of attempt ``n``).
    Exceptions raised by ``attempt`` that are not :class:`~msd_async.errors.MediaStoreError`
    are never retried and propagate unchanged, as do those of ``replayable`` and ``on_retry``
    (the tokens taken for the retry that ``on_retry`` stopped are given back).
    """
    if clock is None:
        clock = SYSTEM_CLOCK if deadline is None else deadline.clock
    last: MediaStoreError | None = None  # the error of the previous attempt, for chaining
    last_cost = 0  # tokens the latest retry took, given back if the call then succeeds
    n = 0
    while True:
        if deadline is not None and deadline.expired:
            why = "before the first attempt" if last is None else f"after attempt {n}"
            raise _deadline_exceeded(deadline, n, why) from last
        n += 1
        scope: anyio.CancelScope | None = None
        if waiting_before_sending.get() is not None:  # left by an attempt that ended there
            waiting_before_sending.set(None)
        try:
            if deadline is None:
                result = await attempt(n)
            else:
                with anyio.move_on_after(deadline.remaining()) as scope:
                    result = await attempt(n)
        except MediaStoreError as exc:
            if not policy.is_retryable(exc):
                # An error marked unsent (no credentials, no free connection, the session
                # found closed, another event loop) ended its attempt before it took a
                # connection, and so does any error raised while the attempt still waits
                # before sending: only the attempts before it count.
                unsent = exc.unsent or waiting_before_sending.get() is not None
                exc.attempts = n - 1 if unsent else n
                raise
            failure = exc
        else:
            if scope is not None and scope.cancelled_caught:
                assert deadline is not None
                waiting = waiting_before_sending.get()
                if waiting is not None:
                    # Counted as a CredentialsError is: this attempt sent nothing.
                    check = (
                        "the pool: release responses sooner, or raise Limits.max_connections"
                        if waiting == WAITING_FOR_CONNECTION
                        else "that provider's source (credential_process, SSO, instance "
                        "metadata) or raise Timeouts.credentials"
                    )
                    raise _deadline_exceeded(
                        deadline, n - 1, f"during attempt {n}, waiting for {waiting}",
                        check=check,
                    ) from last
                raise _deadline_exceeded(deadline, n, f"during attempt {n}") from last
            if budget is not None:
                budget.release(last_cost or budget.success_refund)
            return result

        last = failure
        # cancel_called: the attempt turned the deadline's cancellation into an error of its
        # own (a connection torn down mid-request); that is the deadline, not a new failure.
        if deadline is not None and (
            deadline.expired or (scope is not None and scope.cancel_called)
        ):
            raise _deadline_exceeded(deadline, n, f"during attempt {n}") from failure
        if n >= policy.max_attempts:
            raise _give_up(failure, n, f"all {policy.max_attempts} attempts made")
        if replayable is not None and not replayable():
            raise UnreplayableBodyError(
                f"attempt {n} failed with a retryable error ({failure}), but the request body "
                "can only be read once and was already partly sent; pass replay_buffer=True "
                "to keep what is sent (in memory, up to the object size limit) for retries, "
                "or bytes, a file path or a re-openable source",
                attempts=n,
            ) from failure
        delay = policy.delay(n - 1, failure, rng)
        if deadline is not None and delay >= deadline.remaining():
            retry_after = getattr(failure, "retry_after", None)
            if retry_after and delay == min(float(retry_after), policy.retry_after_max):
                # Not the client's choice: say who asked for the wait.
                wait = f"the server's Retry-After asks for {delay:.3f} s"
                if float(retry_after) > policy.retry_after_max:
                    wait += f", its {float(retry_after):g} s cut to retry_after_max"
            else:
                wait = f"backoff {delay:.3f} s"
            raise _deadline_exceeded(
                deadline, n, f"before retry {n} could start ({wait})"
            ) from failure
        if budget is not None:
            last_cost = budget.cost_of(failure)
            if not budget.acquire(last_cost):
                why = f"retry budget exhausted ({budget.available} of {budget.capacity} left)"
                raise _give_up(failure, n, why)
        if on_retry is not None:
            try:
                on_retry(n, failure, delay)
            except BaseException:
                # The call ends here, without the retry its tokens paid for.
                if budget is not None:
                    budget.release(last_cost)
                raise
        logger.debug("attempt %d failed (%r); retrying in %.3f s", n, failure, delay)
        try:
            if interruptible is None:
                await clock.sleep(delay)
            else:
                await interruptible(clock.sleep(delay))
        except BaseException as exc:
            if on_abandoned is not None:
                on_abandoned(n)
            if isinstance(exc, MediaStoreError):
                # interruptible's error (the session closed during the wait) ends a call
                # that made n attempts, as every other error after retries says; the
                # failure that asked for the retry is its cause.
                exc.attempts = n
                if exc.__cause__ is None:
                    exc.__cause__ = failure
            raise
