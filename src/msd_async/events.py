"""Request events: what a :class:`~msd_async.Session` reports about every HTTP attempt.

In the spirit of httpx's event hooks and aiohttp's ``TraceConfig``, but one flat callable
with one typed event, so metrics (the live publisher's among them) need no plumbing::

    def log_event(event: msd_async.RequestEvent) -> None:
        if event.kind == "response":
            print(event.operation, event.path, event.status, f"{event.elapsed * 1e3:.1f} ms")

    async with msd_async.Session(event_hooks=[log_event]) as session:
        ...

Hooks are plain functions called synchronously on the event loop: keep them cheap (append
to a list, update a counter). An async one is refused with ``InvalidParameterError`` (by
``Session``; one appended to ``session.event_hooks`` later fails the first call it sees).
An exception raised by a hook reaches the caller unchanged and is never retried; the other
hooks still get that event, and every attempt or call they saw start they see end (a hook
raising on ``start`` is not called again for that attempt; one raising on ``retry`` ends
the call, and the others get ``abandoned`` with its ``error``). If several hooks raise on
one event, the first error is raised and the others are logged; so is a hook's error on
``cancelled`` or ``abandoned`` (the cancellation goes on). Those logs are the session's
first, then every 1000th.
With no hooks, no event is built.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

__all__ = ["EventHook", "EventKind", "Operation", "RequestEvent"]

EventKind = Literal["start", "response", "retry", "error", "cancelled", "abandoned"]
Operation = Literal["PutObject", "GetObject", "DescribeObject", "DeleteObject", "ListItems"]


@dataclass(frozen=True, slots=True)
class RequestEvent:
    """One step of one HTTP attempt.

    ==========  ==================================================================
    kind        when
    ==========  ==================================================================
    start       the attempt begins (before its credentials are fetched and it is signed)
    response    its response headers arrived (``status`` set; for PutObject, after
                the whole body was sent)
    error       the attempt failed (``error`` set: a service error, a transport
                error, or the body's own exception)
    retry       the call will make another attempt after ``delay`` seconds
    cancelled   the attempt was cancelled before it ended (its task was cancelled:
                a timeout or deadline around the call, a viewer gone); no answer was
                taken, and the call ends with the cancellation
    abandoned   the call was cancelled while it waited to retry (after ``retry``,
                before the next ``start``): no attempt was in flight, so none is
                counted for it; ``attempt`` is the one that failed, and ``elapsed``
                counts from the call's start, as for ``retry``. Also the end of a call
                that a hook's error on ``retry`` stopped (``error`` is that error)
    ==========  ==================================================================
    """

    kind: EventKind
    operation: Operation
    #: The object path (for ListItems, the folder; ``""`` for the root).
    path: str
    #: The container's endpoint URL.
    endpoint: str
    #: 1 for the first attempt of a call.
    attempt: int
    #: Seconds since the attempt started (``start``: 0; ``retry`` and ``abandoned``: since
    #: the call started).
    elapsed: float
    status: int | None = None
    error: BaseException | None = None
    #: ``retry`` only: seconds until the next attempt.
    delay: float | None = None
    #: ``response``, ``error`` and ``cancelled``: request body bytes this attempt wrote (0
    #: without a body). ``None`` on the ``error`` that ends an attempt another hook raised
    #: on ``start``: its request was never made.
    bytes_sent: int | None = None
    #: ``response`` only: the response body's length as the server declared it
    #: (``Content-Length``; 0 for DescribeObject), ``None`` when it did not (a STREAMING
    #: object still uploading). What the caller then reads of it is not reported.
    bytes_received: int | None = None


EventHook = Callable[[RequestEvent], object]


def _event_factory() -> Callable[..., RequestEvent]:
    """A positional constructor of :class:`RequestEvent` that stores the fields through the
    slots' own descriptors: the frozen dataclass ``__init__`` (``object.__setattr__`` per
    field) doubled the cost of a session with hooks (benchmarks/bench_hooks.py). The event
    stays frozen for the hooks."""
    setters = tuple(getattr(RequestEvent, name).__set__ for name in RequestEvent.__slots__)
    (kind_, operation_, path_, endpoint_, attempt_, elapsed_, status_, error_, delay_,
     sent_, received_) = setters
    new = object.__new__

    def make(
        kind: EventKind, operation: Operation, path: str, endpoint: str, attempt: int,
        elapsed: float, status: int | None, error: BaseException | None,
        delay: float | None, bytes_sent: int | None, bytes_received: int | None,
    ) -> RequestEvent:
        event: RequestEvent = new(RequestEvent)
        kind_(event, kind)
        operation_(event, operation)
        path_(event, path)
        endpoint_(event, endpoint)
        attempt_(event, attempt)
        elapsed_(event, elapsed)
        status_(event, status)
        error_(event, error)
        delay_(event, delay)
        sent_(event, bytes_sent)
        received_(event, bytes_received)
        return event

    return make


#: Used by the client for every event (internal).
new_event = _event_factory()
