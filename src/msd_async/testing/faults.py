"""Fault injection for the local server: make requests fail on purpose, reproducibly.

Two ways, usable together (targeted rules are consulted first)::

    plan = FaultPlan(rate=0.2, kinds={"503", "cut-upload"}, seed=7)    # a random share
    server = LocalMediaStore(faults=plan)
    server.faults.inject("cut-download", method="GET", path="a/b.ts", after_bytes=1000)

and from the command line: ``msd serve --fault-rate 0.2 --fault-kinds 503,cut-upload
--fault-seed 7 --fault-delay 0.5``.

========================  =====================================================================
kind                      effect
========================  =====================================================================
``"500"``                 ``500 InternalServerError`` before the request is acted on
``"503"``                 ``503 ServiceUnavailableException`` before the request is acted on
``"throttle"``            ``400 ThrottlingException`` ("Rate exceeded")
``"cut-upload"``          PUT only: read ``after_bytes`` of the body (default: half of it, at
                          least 1 byte), then drop the connection without a response. Nothing
                          is stored; the previous version stays.
``"cut-download"``        GET of an object only: send the headers and ``after_bytes`` of the
                          body (default: half), then abort the connection.
``"delay"``               wait ``delay`` seconds, then handle the request normally; a client
                          that leaves meanwhile, or the server closing, ends the wait (and the
                          request, unanswered)
========================  =====================================================================

Faults are decided when a request arrives, before authentication. A faulted request never
changes the store: error faults answer before anything is read, a cut upload is aborted
exactly like a client that disconnects. The random share draws from ``random.Random(seed)``,
so a run with the same seed and the same request order faults the same requests. A kind
that cannot apply to a request (``cut-upload`` on a GET) is not drawn for it.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, Literal, get_args

from ..config import is_number, is_seconds, is_whole_number
from ..errors import InvalidParameterError

__all__ = ["FAULT_KINDS", "Fault", "FaultKind", "FaultPlan"]

FaultKind = Literal["500", "503", "throttle", "cut-upload", "cut-download", "delay"]
FAULT_KINDS: Final[frozenset[str]] = frozenset(get_args(FaultKind))
#: Default for the "delay" kind, in seconds.
DEFAULT_DELAY: Final = 0.5


@dataclass(slots=True)
class Fault:
    """One fault to apply: what it is and its parameters."""

    kind: FaultKind
    after_bytes: int | None = None
    delay: float = DEFAULT_DELAY


@dataclass(slots=True)
class _Rule:
    fault: Fault
    times: int | None
    method: str | None
    path: str | None

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (
            self.path is None or self.path == path
        )


def _applies(kind: str, method: str, is_object: bool) -> bool:
    if kind == "cut-upload":
        return method == "PUT"
    if kind == "cut-download":
        return method == "GET" and is_object
    return True


def _check_delay(delay: object) -> None:
    # inf is a request held until its client leaves or the server closes: a hung origin.
    if not is_seconds(delay, endless=True):
        raise InvalidParameterError(
            f"fault delay must be a number of seconds, 0 or more, not {delay!r}",
            rule="faults.delay",
        )


@dataclass
class FaultPlan:
    """Which requests fail and how.

    ``rate`` (0..1, default 0) is the share of requests that get a random fault drawn from
    ``kinds`` (default: all kinds); ``seed`` makes the draw reproducible; ``delay`` is the
    wait of the ``"delay"`` kind in seconds. Raises
    :class:`~msd_async.errors.InvalidParameterError` (a :class:`ValueError`) for a rate
    outside 0..1, an unknown kind, or a value of the wrong type.
    """

    rate: float = 0.0
    kinds: Iterable[str] = FAULT_KINDS
    seed: int | None = None
    delay: float = DEFAULT_DELAY
    #: The most recent faults applied (at most ``history_limit``), oldest first, as
    #: ``(kind, method, path)``, for test assertions; a server faulting for days keeps
    #: only these. ``applied`` counts all of them.
    history: list[tuple[str, str, str]] = field(default_factory=list)
    history_limit: int = 10_000
    applied: int = 0

    def __post_init__(self) -> None:
        # InvalidParameterError (a ValueError, as these were) for each: True was a rate of
        # 1, a nan delay no delay, a str of kinds its letters, a float history_limit a
        # TypeError at the first fault recorded.
        if not is_number(self.rate) or not 0.0 <= self.rate <= 1.0:
            raise InvalidParameterError(
                f"fault rate must be a number within 0..1, not {self.rate!r}",
                rule="faults.rate",
            )
        if isinstance(self.kinds, str):
            raise InvalidParameterError(
                f"kinds must be a collection of fault kinds such as {{'delay'}}, not the str "
                f"{self.kinds!r}",
                rule="faults.kinds",
            )
        self.kinds = frozenset(self.kinds)
        unknown = self.kinds - FAULT_KINDS
        if unknown:
            raise InvalidParameterError(
                f"unknown fault kinds {sorted(unknown)}; choose from {sorted(FAULT_KINDS)}",
                rule="faults.kinds",
            )
        _check_delay(self.delay)
        if not is_whole_number(self.history_limit, 1):
            raise InvalidParameterError(
                f"history_limit must be a whole number, at least 1, not {self.history_limit!r}",
                rule="faults.history_limit",
            )
        self._random = random.Random(self.seed)
        self._rules: list[_Rule] = []
        # inject() may be called from another thread (a sync test driving boto3).
        self._lock = threading.Lock()

    def inject(
        self,
        kind: FaultKind,
        *,
        times: int | None = 1,
        method: str | None = None,
        path: str | None = None,
        after_bytes: int | None = None,
        delay: float | None = None,
    ) -> None:
        """Apply ``kind`` to the next ``times`` matching requests (``None``: every one).

        ``method`` (``"GET"``, ``"PUT"``...) and ``path`` (the object path without its
        leading ``/``; ``""`` for ListItems) narrow the match.
        """
        if kind not in FAULT_KINDS:
            raise InvalidParameterError(
                f"unknown fault kind {kind!r}; choose from {sorted(FAULT_KINDS)}",
                rule="faults.kind",
            )
        if times is not None and not is_whole_number(times, 1):
            raise InvalidParameterError(
                f"times must be a whole number, at least 1, or None, not {times!r}",
                rule="faults.times",
            )
        if after_bytes is not None and not is_whole_number(after_bytes):
            # A str or nan failed inside the request it was meant to cut (a 500).
            raise InvalidParameterError(
                f"after_bytes must be a whole number of bytes, 0 or more, or None, not "
                f"{after_bytes!r}",
                rule="faults.after_bytes",
            )
        if delay is not None:
            _check_delay(delay)
        for name, value in (("method", method), ("path", path)):
            if value is not None and not isinstance(value, str):
                raise InvalidParameterError(
                    f"{name} must be a str or None, not {value!r}", rule=f"faults.{name}"
                )
        fault = Fault(kind, after_bytes, self.delay if delay is None else delay)
        with self._lock:
            self._rules.append(_Rule(fault, times, method.upper() if method else None, path))

    def clear(self) -> None:
        """Drop every targeted rule (the random rate stays)."""
        with self._lock:
            self._rules.clear()

    def pick(self, method: str, path: str, *, is_object: bool) -> Fault | None:
        """The fault for this request, if any (consumes a targeted rule's count)."""
        with self._lock:
            for rule in self._rules:
                if rule.matches(method, path) and _applies(rule.fault.kind, method, is_object):
                    if rule.times is not None:
                        rule.times -= 1
                        if rule.times == 0:
                            self._rules.remove(rule)
                    self._record(rule.fault.kind, method, path)
                    return rule.fault
            if self.rate <= 0.0:
                return None
            # Draw both numbers every time so the sequence does not depend on the kinds.
            roll = self._random.random()
            which = self._random.random()
            if roll >= self.rate:
                return None
            candidates = sorted(k for k in self.kinds if _applies(k, method, is_object))
            if not candidates:
                return None
            kind: FaultKind = candidates[int(which * len(candidates))]  # type: ignore[assignment]
            self._record(kind, method, path)
            return Fault(kind, None, self.delay)

    def _record(self, kind: str, method: str, path: str) -> None:
        self.applied += 1
        self.history.append((kind, method, path))
        if len(self.history) > self.history_limit:
            # Trim a tenth at a time: amortised, and still a plain list for assertions.
            del self.history[: len(self.history) - self.history_limit * 9 // 10]
