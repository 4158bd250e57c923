"""One log line per object: the relay and the pusher follow each publication to its outcome."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from ..config import check_plain_callback, refuse_awaitable
from ._publisher import PublicationLike

__all__ = ["ObjectRecord", "Reporter", "cause", "outcome_name"]

logger = logging.getLogger("msd_async.ingest")


@dataclass(slots=True)
class ObjectRecord:
    """One object handled, as logged: what, how big, what became of it, how long it took
    from the first byte received (or the file read) to its outcome. ``started`` and
    ``received`` are ``time.monotonic()`` readings: the first byte, and the last byte of
    the encoder's body (``None`` for a file or a delete)."""

    method: str
    path: str
    size: int
    outcome: str
    elapsed: float
    detail: str = ""
    started: float = 0.0
    received: float | None = None
    #: The object's kind and the primary destination's attempts, when the publisher said.
    kind: str | None = None
    attempts: int | None = None

    def line(self) -> str:
        """The log line: ``PUT live/seg_3.ts 183,212 B acknowledged 0.042 s``."""
        if self.method == "DELETE":
            text = f"DELETE {self.path} {self.outcome}"
        else:
            text = (
                f"{self.method} {self.path} {self.size:,} B {self.outcome} {self.elapsed:.3f} s"
            )
        return f"{text} ({self.detail})" if self.detail else text


#: A failure's cause is cut to this many characters in a log line: the line says what
#: happened to one object, the details of a repeated cause belong to --debug.
_CAUSE_LENGTH: Final = 160
#: Outcomes that mean an object did not reach the origin.
FAILURES: Final = ("failed", "dropped", "refused", "unfinished at shutdown")
_MAX_CAUSES: Final = 5
_URL: Final = re.compile(r"(https?://[^/\s]+)[^\s]*")


def cause(error: BaseException | str, length: int = _CAUSE_LENGTH) -> str:
    """A failure's cause in one short line: the error's type and first line (for a
    string, its first line), URLs cut to their origin (so one cause reads the same for
    every object it failed), at most ``length`` characters."""
    if isinstance(error, BaseException):
        text = str(error).strip()
        error = f"{type(error).__name__}: {text}" if text else type(error).__name__
    line = " ".join(error.strip().split("\n", 1)[0].split())
    line = _URL.sub(lambda m: m[1] + (":" if m[0].endswith(":") else ""), line)
    return line if len(line) <= length else line[: length - 1] + "…"


def _outcome_detail(outcome: Any) -> str:
    """Why a publication ended as it did: the publisher's reason, after the last error
    of its first destination that had one (what a deadline or a failure came from)."""
    reason = getattr(outcome, "reason", None) or ""
    errors = [
        error
        for destination in getattr(outcome, "destinations", ()) or ()
        if (error := getattr(destination, "error", None)) is not None
    ]
    if not errors:
        return cause(reason) if reason else ""
    last = cause(errors[0], _CAUSE_LENGTH * 3 // 4)
    return f"{last} ({cause(reason, _CAUSE_LENGTH * 3 // 4)})" if reason else last


def outcome_name(outcome: Any) -> str:
    """A lowercase word for a publication's outcome (an enum, an object with ``status``,
    or a string)."""
    for attr in ("status", "state", "outcome"):
        value = getattr(outcome, attr, None)
        if value is not None and not callable(value):
            outcome = value
            break
    name = getattr(outcome, "name", None) or getattr(outcome, "value", None) or outcome
    return str(name).lower()


@dataclass(slots=True)
class Counters:
    """Outcomes so far, by name (``acknowledged``, ``dropped``, ``superseded``, ...)."""

    outcomes: dict[str, int] = field(default_factory=dict)
    bytes: int = 0
    #: Distinct causes of failures with their counts (the first few kinds only: a run
    #: failing for one reason has one cause, however many objects it failed).
    causes: dict[str, int] = field(default_factory=dict)

    def add(self, outcome: str, size: int, detail: str = "") -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        if outcome == "acknowledged":
            self.bytes += size
        elif outcome in FAILURES and detail and (
            detail in self.causes or len(self.causes) < _MAX_CAUSES
        ):
            self.causes[detail] = self.causes.get(detail, 0) + 1

    @property
    def published(self) -> int:
        """Objects stored (or replaced by a newer version that was)."""
        return self.outcomes.get("acknowledged", 0) + self.outcomes.get("superseded", 0)

    @property
    def failed(self) -> int:
        return sum(self.outcomes.get(name, 0) for name in FAILURES)


class Reporter:
    """Follows publications to their outcome and reports each once (log + callback)."""

    def __init__(self, on_object: Callable[[ObjectRecord], object] | None) -> None:
        if on_object is not None:
            check_plain_callback(on_object, "on_object", rule="ingest.on_object")
        self._on_object = on_object
        self._watchers: set[asyncio.Task[None]] = set()
        self._abandoned = False
        self.counters = Counters()
        #: Optional: the last error the publisher met for a path (its retries), which a
        #: deadline's reason does not name; called once per outcome, so it may forget it.
        self.last_error: Callable[[str], BaseException | None] | None = None

    @property
    def pending(self) -> int:
        """Publications whose outcome is not known yet."""
        return len(self._watchers)

    def follow(
        self,
        method: str,
        path: str,
        size: Callable[[], int],
        started: float,
        publication: PublicationLike,
        done: Callable[[], object] | None = None,
        received: Callable[[], float | None] = lambda: None,
    ) -> None:
        task = asyncio.create_task(
            self._watch(method, path, size, started, publication, done, received),
            name=f"ingest {path}",
        )
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    async def _watch(
        self,
        method: str,
        path: str,
        size: Callable[[], int],
        started: float,
        publication: PublicationLike,
        done: Callable[[], object] | None,
        received: Callable[[], float | None],
    ) -> None:
        try:
            outcome = await publication.wait()
        except asyncio.CancelledError:
            why = ("no outcome before the shutdown was cut short" if self._abandoned
                   else "no outcome within the drain timeout")
            self.record(method, path, size(), started, "unfinished at shutdown", why,
                        received=received())
            raise
        except Exception as exc:
            self.record(method, path, size(), started, "failed", cause(exc),
                        received=received())
        else:
            detail = _outcome_detail(outcome)
            name = outcome_name(outcome)
            error = self.last_error(path) if self.last_error is not None else None
            key = None
            if error is not None and name in FAILURES:
                key = cause(error, _CAUSE_LENGTH * 3 // 4)
                if key not in detail:
                    detail = f"{key} ({cause(detail, _CAUSE_LENGTH * 3 // 4)})"
            kind = getattr(outcome, "kind", None)
            destinations = getattr(outcome, "destinations", None)
            self.record(method, path, size(), started, name, detail, received=received(),
                        cause_key=key, kind=None if kind is None else str(kind),
                        attempts=destinations[0].attempts if destinations else None)
        finally:
            if done is not None:
                done()

    def record(
        self,
        method: str,
        path: str,
        size: int,
        started: float,
        outcome: str,
        detail: str = "",
        *,
        received: float | None = None,
        cause_key: str | None = None,
        kind: str | None = None,
        attempts: int | None = None,
    ) -> None:
        """Count and log one outcome. ``cause_key``: what the summary groups this failure
        under (default: ``detail``)."""
        self.counters.add(outcome, size, detail if cause_key is None else cause_key)
        rec = ObjectRecord(
            method, path, size, outcome, time.monotonic() - started, detail, started, received,
            kind, attempts,
        )
        # The record rides along for --log-format json (cli/_observe.JsonFormatter).
        logger.log(logging.WARNING if outcome in ("failed", "dropped") else logging.INFO,
                   "%s", rec.line(), extra={"msd_record": rec})
        if self._on_object is not None:
            try:
                result = self._on_object(rec)
                if result is not None:
                    refuse_awaitable(result, "on_object", self._on_object,
                                     rule="ingest.on_object")
            except Exception:
                # The caller's bug must not stop the relay's submit loop or the pusher's
                # scan: it is logged, the object keeps its outcome, the next one goes on.
                logger.exception("on_object callback raised for %s; carrying on", path)

    def abandon(self) -> None:
        """Stop waiting for outcomes, as the drain's deadline would: each publication still
        followed is reported ``unfinished at shutdown`` now, and a drain (running, or to
        come) returns at once."""
        self._abandoned = True
        for task in self._watchers:
            task.cancel()

    async def drain(self, seconds: float) -> None:
        """Wait up to ``seconds`` for every outcome; cancel the watchers left."""
        if not self._watchers:
            return
        if self._abandoned:
            seconds = 0.0
        _, pending = await asyncio.wait(set(self._watchers), timeout=seconds)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
