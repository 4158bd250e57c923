"""One log line per object: the relay and the pusher follow each publication to its outcome."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._publisher import PublicationLike

__all__ = ["ObjectRecord", "Reporter", "outcome_name"]

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

    def add(self, outcome: str, size: int) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        if outcome == "acknowledged":
            self.bytes += size


class Reporter:
    """Follows publications to their outcome and reports each once (log + callback)."""

    def __init__(self, on_object: Callable[[ObjectRecord], object] | None) -> None:
        self._on_object = on_object
        self._watchers: set[asyncio.Task[None]] = set()
        self.counters = Counters()

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
            self.record(method, path, size(), started, "unfinished at shutdown",
                        received=received())
            raise
        except Exception as exc:
            self.record(method, path, size(), started, "failed", f"{type(exc).__name__}: {exc}",
                        received=received())
        else:
            detail = getattr(outcome, "reason", None) or ""
            kind = getattr(outcome, "kind", None)
            destinations = getattr(outcome, "destinations", None)
            self.record(method, path, size(), started, outcome_name(outcome), detail,
                        received=received(), kind=None if kind is None else str(kind),
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
        kind: str | None = None,
        attempts: int | None = None,
    ) -> None:
        self.counters.add(outcome, size)
        rec = ObjectRecord(
            method, path, size, outcome, time.monotonic() - started, detail, started, received,
            kind, attempts,
        )
        # The record rides along for --log-format json (cli/_observe.JsonFormatter).
        logger.log(logging.WARNING if outcome in ("failed", "dropped") else logging.INFO,
                   "%s", rec.line(), extra={"msd_record": rec})
        if self._on_object is not None:
            self._on_object(rec)

    async def drain(self, seconds: float) -> None:
        """Wait up to ``seconds`` for every outcome; cancel the watchers left."""
        if not self._watchers:
            return
        _, pending = await asyncio.wait(set(self._watchers), timeout=seconds)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
