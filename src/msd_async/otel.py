"""OpenTelemetry spans for a :class:`~msd_async.Session`'s calls.

Needs the ``otel`` extra (``pip install 'msd-async[otel]'``: ``opentelemetry-api`` only; the
application installs and configures the SDK and exporter it wants). Nothing else in
``msd_async`` imports this module. ::

    from msd_async.otel import tracing_hook

    session = msd_async.Session(event_hooks=[tracing_hook()])

One CLIENT span per call, named after the operation (``PutObject``...), covering all its
attempts, with the attributes of OpenTelemetry's HTTP client semantic conventions
(``http.request.method``, ``http.response.status_code``, ``server.address``,
``server.port``, ``url.full``, ``error.type``, ``http.request.resend_count``) and
``mediastore.path``. A call that failed (a 404 included) has ``error.type`` and an ERROR
status; each failed attempt's exception is recorded on the span. The span is a child of
whatever span is current where the call is made. Attributes never carry credentials,
signatures or object contents: requests are signed in headers, and ``url.full`` is the
endpoint and the object path. Listed in docs/observability.md.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote, urlsplit

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from ._version import __version__

if TYPE_CHECKING:
    from opentelemetry.trace import Span, TracerProvider

    from .events import RequestEvent

__all__ = ["tracing_hook"]

_METHODS: Final = {
    "PutObject": "PUT",
    "GetObject": "GET",
    "DescribeObject": "HEAD",
    "DeleteObject": "DELETE",
    "ListItems": "GET",
}


@dataclass(slots=True)
class _Call:
    span: Span
    key: tuple[str, str, str]
    attempt: int = 1
    retrying: bool = False
    error: BaseException | None = None
    status: int | None = None


def _url(endpoint: str, operation: str, path: str) -> str:
    if operation == "ListItems":
        return f"{endpoint}/?Path={quote(path, safe='')}" if path else f"{endpoint}/"
    return f"{endpoint}/{quote(path, safe='/')}"


def tracing_hook(tracer_provider: TracerProvider | None = None) -> Callable[[RequestEvent], None]:
    """An event hook for ``Session(event_hooks=[...])`` that makes one span per call.

    ``tracer_provider``: where the spans go (default: the global one, set by the
    application's OpenTelemetry setup). Calls are followed per asyncio task: a task makes
    one call at a time, so each attempt's events find their call's span. A call cancelled
    mid-attempt or while it waits to retry (its deadline, a cancellation) ends its span at
    once, with ``error.type`` ``cancelled``.
    """
    tracer = trace.get_tracer("msd_async", __version__, tracer_provider=tracer_provider)
    calls: dict[asyncio.Task[Any] | None, _Call] = {}
    watched: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()
    endpoints: dict[str, dict[str, Any]] = {}

    def finish(call: _Call, error_type: str | None = None) -> None:
        span = call.span
        if call.attempt > 1:
            span.set_attribute("http.request.resend_count", call.attempt - 1)
        if call.status is not None:
            span.set_attribute("http.response.status_code", call.status)
        error = call.error
        if error_type is None and error is not None:
            error_type = str(call.status) if call.status else type(error).__name__
        if error_type is not None:
            span.set_attribute("error.type", error_type)
            span.set_status(Status(StatusCode.ERROR, error_type))
        span.end()

    def task_done(task: asyncio.Task[Any]) -> None:
        call = calls.pop(task, None)
        if call is not None:
            finish(call, "cancelled")

    def settle(task: asyncio.Task[Any] | None, call: _Call) -> None:
        # Runs after the failed attempt's task step: by then the retry driver has either
        # announced another attempt (a "retry" event) or given up.
        if calls.get(task) is call and not call.retrying:
            del calls[task]
            if call.key[1] == "DeleteObject" and call.attempt > 1 and call.status == 404:
                # The client's rule: an earlier attempt may have deleted it and lost the
                # answer, so the call succeeded (ContainerClient.delete_object).
                call.error = None
            finish(call)

    def server(endpoint: str) -> dict[str, Any]:
        attributes = endpoints.get(endpoint)
        if attributes is None:
            parts = urlsplit(endpoint)
            attributes = {"server.address": parts.hostname or ""}
            port = parts.port or (443 if parts.scheme == "https" else 80)
            attributes["server.port"] = port
            endpoints[endpoint] = attributes
        return attributes

    def hook(event: RequestEvent) -> None:
        task = asyncio.current_task()
        key = (event.endpoint, event.operation, event.path)
        call = calls.get(task)
        kind = event.kind
        if kind == "start":
            if call is not None and (call.key != key or event.attempt == 1):
                del calls[task]
                # A failed attempt not followed by a retry: the call failed, and this
                # task went on before settle() ran. Otherwise the call never ended.
                finish(call, None if call.error is not None else "cancelled")
                call = None
            if call is None:
                operation = event.operation
                attributes = {
                    "http.request.method": _METHODS[operation],
                    "url.full": _url(event.endpoint, operation, event.path),
                    "mediastore.path": event.path,
                    **server(event.endpoint),
                }
                span = tracer.start_span(operation, kind=SpanKind.CLIENT, attributes=attributes)
                call = calls[task] = _Call(span, key)
                if task is not None and task not in watched:
                    watched.add(task)
                    task.add_done_callback(task_done)
            call.attempt = event.attempt
            call.retrying = False
            call.error = None
            return
        if call is None or call.key != key:
            return
        if kind == "response":
            del calls[task]
            call.status = event.status
            finish(call)
        elif kind == "error":
            call.status = event.status
            call.error = event.error
            if event.error is not None:
                call.span.record_exception(event.error)
            asyncio.get_running_loop().call_soon(settle, task, call)
        elif kind == "retry":
            call.retrying = True
        elif kind == "cancelled":
            del calls[task]
            call.status = None
            finish(call, "cancelled")
        elif kind == "abandoned":
            # Ended between attempts (cancelled, or by a hook's error on its retry event):
            # the last attempt's status stays on the span.
            del calls[task]
            error = event.error
            if error is not None:
                call.span.record_exception(error)
            finish(call, "cancelled" if error is None else type(error).__name__)

    return hook
