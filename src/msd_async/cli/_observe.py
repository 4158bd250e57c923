"""What the long-running commands show operators: ``--metrics HOST:PORT`` (Prometheus
``/metrics``, ``/healthz``, ``/readyz``) and ``--log-format json`` (docs/observability.md).

prometheus-client is imported only when ``--metrics`` is given; without the ``metrics``
extra, ``--metrics`` fails at once with one line naming the extra (exit status 2).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import logging
import math
import os
import re
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from ..client import ContainerClient
    from ..events import RequestEvent
    from ..live.stats import PublishEvent
    from ..session import Session

__all__ = [
    "MAX_LINE_BYTES",
    "METRICS_EXTRA_HINT",
    "JsonFormatter",
    "Observer",
    "Readiness",
    "add_options",
    "check_options",
    "clashes",
    "configure_logging",
    "json_handler",
    "json_line",
    "observing",
    "parse_address",
    "print_line",
    "print_publish_event",
    "wants_json",
]

METRICS_EXTRA_HINT: Final = (
    "--metrics needs the metrics extra: pip install 'msd-async[metrics]'"
)
#: /readyz: the origin must have answered within this many seconds.
READY_WINDOW: Final = 15.0
#: An idle command probes the origin (a signed ListItems) this often.
PROBE_INTERVAL: Final = 5.0
#: Seconds the command's exit gives a --metrics answer still being sent, twice (aiohttp
#: waits this long for the handler, then this long again once it cancelled it).
METRICS_SHUTDOWN_TIMEOUT: Final = 0.5


def add_options(parser: argparse.ArgumentParser, *, metrics: bool = True) -> None:
    """``--metrics HOST:PORT`` (unless ``metrics=False``) and ``--log-format text|json``."""
    if metrics:
        parser.add_argument(
            "--metrics",
            metavar="HOST:PORT",
            help="serve Prometheus /metrics, /healthz and /readyz on this address "
            "(needs msd-async[metrics])",
        )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="text (default) or json: one JSON object per log line",
    )


def wants_json(args: argparse.Namespace) -> bool:
    return getattr(args, "log_format", "text") == "json"


def parse_address(text: str) -> tuple[str, int] | None:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        return None
    return host, int(port)


def clashes(host: str, port: int, metrics: str | None) -> bool:
    """Whether ``--metrics`` names the address the command itself listens on (``host``,
    ``port``): the second bind would fail after the first, with a line that hides why."""
    from .._listen import every_interface

    parsed = None if metrics is None else parse_address(metrics)
    if parsed is None or port == 0 or parsed[1] != port:
        return False
    return parsed[0] == host or every_interface(parsed[0]) or every_interface(host)


def every_interface_line(port: int, what: str) -> str:
    """The line that says a listener on every interface printed its loopback URL: from
    another machine, the user needs this one's name or address."""
    return (
        f"listening: every interface, port {port} ({what}); the URL below is this "
        "machine's loopback: from another, use this machine's name or address"
    )


def check_options(args: argparse.Namespace) -> int | None:
    """Validate ``--metrics`` before the command starts: prints one line and returns the
    exit status (2) when it cannot be honoured, else ``None``."""
    address = getattr(args, "metrics", None)
    if address is None:
        return None
    command = getattr(args, "command", "")
    if parse_address(address) is None:
        _fail(args, f"msd {command}: --metrics must be HOST:PORT, not {address!r}")
        return 2
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        _fail(args, f"msd {command}: {METRICS_EXTRA_HINT}")
        return 2
    return None


def _fail(args: argparse.Namespace, text: str) -> None:
    if wants_json(args):
        text = json_line("usage-error", "error", error=text)
    print(text, file=sys.stderr)


# --- JSON lines ----------------------------------------------------------------------------
def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


#: A lone surrogate: what os.fsdecode() makes of a file name's bytes that are not UTF-8.
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def _escaped(match: re.Match[str]) -> str:
    # Written into the JSON text as an escaped backslash, so the line stays UTF-8 and the
    # value reads "\xff": the byte the name had (surrogateescape), else the code point.
    code = ord(match.group())
    return f"\\\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\\\u{code:04x}"


def _text(value: object) -> str:
    """``default`` of the JSON encoder: str(), else repr(), else the type's name; an
    object whose __str__ raises must not cost the line."""
    for show in (str, repr):
        try:
            return show(value)
        except Exception:
            pass
    return f"<unprintable {type(value).__name__}>"


#: The longest line written, in bytes with its newline. Docker's log copier cuts longer lines
#: into partial messages (16 KiB, moby/moby#32923), which a collector reads as two halves
#: that are not JSON; Kubernetes' runtimes cut at the same size.
MAX_LINE_BYTES: Final = 16 * 1024


def json_line(event: str, level: str = "info", **fields: Any) -> str:
    """One JSON log line: ``ts``, ``level``, ``event`` and the fields that are not None.

    Always valid UTF-8: a lone surrogate (a file name that is not UTF-8, as Python decodes
    it) is written ``\\xNN``; left raw, stdout wrote the byte itself (or raised). Never
    longer than :data:`MAX_LINE_BYTES`: the longest texts are cut, their start kept, and
    the line gets ``"truncated": true``."""
    line: dict[str, Any] = {"ts": _now(), "level": level, "event": event}
    line.update((k, v) for k, v in fields.items() if v is not None)
    text = _encoded(line)
    size = len(text.encode())
    return text if size < MAX_LINE_BYTES else _cut_to_fit(line, size)


def _encoded(line: dict[str, Any]) -> str:
    return _SURROGATE.sub(_escaped, json.dumps(line, ensure_ascii=False, default=_text))


def _cut_to_fit(line: dict[str, Any], size: int) -> str:
    """The line with its longest texts cut until it fits, each keeping its start and saying
    how much it lost. A pass cuts the longest text by the bytes still over, at its mean
    bytes per character; escapes can make a pass fall short, and the next one cuts more."""
    whole: dict[str, Any] = {
        k: v if isinstance(v, int | float | bool | str) else _text(v) for k, v in line.items()
    }
    texts = [k for k, v in whole.items() if isinstance(v, str) and k not in ("ts", "level")]
    kept = {k: len(whole[k]) for k in texts}
    line = {**whole, "truncated": True}
    size += len(', "truncated": true')
    while size >= MAX_LINE_BYTES:
        key = max(texts, key=kept.__getitem__)
        value: str = whole[key]
        keep = kept[key]
        if keep == 0:  # nothing left to cut (thousands of fields): say only what it was
            return _encoded({
                "ts": whole["ts"], "level": whole["level"], "event": str(whole["event"])[:200],
                "truncated": True,
            })
        per_char = len(value[:keep].encode("utf-8", "surrogatepass")) / keep
        over = (size - MAX_LINE_BYTES + 1 + _CUT_MARKER_ROOM) / per_char
        kept[key] = keep = max(0, keep - math.ceil(over))
        line[key] = f"{value[:keep]}... [{len(value) - keep} characters cut]"
        size = len(_encoded(line).encode())
    return _encoded(line)


#: Room for the "... [N characters cut]" that ends a cut text.
_CUT_MARKER_ROOM: Final = 40


def print_line(
    args: argparse.Namespace, text: str, event: str, level: str = "info",
    file: IO[str] | None = None, **fields: Any,
) -> None:
    """``text`` in the text format, else the JSON line of ``event`` and ``fields``."""
    out = sys.stdout if file is None else file
    print(json_line(event, level, **fields) if wants_json(args) else text, file=out, flush=True)


#: Publisher events that ``msd demo --log-format json`` writes (each object's outcome).
_PUBLISH_EVENTS: Final = frozenset({"acknowledged", "retried", "dropped", "failed", "gap"})


def print_publish_event(event: PublishEvent) -> None:
    """A JSON line on stdout for a publisher event that ends an object, retries it or marks
    a gap; other events print nothing."""
    kind = event.kind
    if kind not in _PUBLISH_EVENTS:
        return
    settled = kind not in ("retried", "gap")
    error = event.error
    print(json_line(
        "object" if settled else kind,
        "warning" if kind in ("dropped", "failed") else "info",
        path=event.path, kind=str(event.object_kind), outcome=kind if settled else None,
        latency_s=None if event.latency is None else round(event.latency, 6),
        attempts=event.attempt or None,
        error=None if error is None else type(error).__name__,
    ), flush=True)


class JsonFormatter(logging.Formatter):
    """Formats a log record as one JSON line. Records of an object's outcome (the ingest
    reporter's ``msd_record``) and records with ``msd_fields`` become structured fields;
    anything else keeps its message in ``message``."""

    def format(self, record: logging.LogRecord) -> str:
        try:
            return self._format(record)
        except Exception as exc:
            # A record that cannot be formatted (a "%d" given a string, an argument whose
            # __str__ raises): logging would print a multi-line "--- Logging error ---"
            # traceback instead, breaking one JSON object per line.
            return json_line(
                "log", record.levelname.lower(), logger=record.name,
                message=f"unformattable log record {_text(record.msg)!r} "
                f"({type(exc).__name__}: {_text(exc)})",
            )

    def _format(self, record: logging.LogRecord) -> str:
        level = record.levelname.lower()
        rec = getattr(record, "msd_record", None)
        fields: dict[str, Any]
        if rec is not None:
            failed = rec.outcome in ("failed", "dropped") or rec.outcome.startswith("unfinished")
            fields = {
                "method": rec.method,
                "path": rec.path,
                "kind": getattr(rec, "kind", None),
                "outcome": rec.outcome,
                "size": rec.size if rec.method != "DELETE" else None,
                "latency_s": round(rec.elapsed, 6),
                "attempts": getattr(rec, "attempts", None),
                ("error" if failed else "detail"): rec.detail or None,
            }
            return json_line("object", level, **fields)
        extra: Mapping[str, Any] | None = getattr(record, "msd_fields", None)
        if extra is not None:
            fields = dict(extra)
            return json_line(str(fields.pop("event", "log")), level, **fields)
        message = record.getMessage()
        if record.exc_info:
            message += " " + " ".join(self.formatException(record.exc_info).split())
        return json_line("log", level, logger=record.name, message=message)


def json_handler(stream: IO[str] | None = None) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(JsonFormatter())
    return handler


def configure_logging(args: argparse.Namespace) -> None:
    """Under ``--log-format json``, warnings of any logger (aiohttp's, asyncio's, the
    library's) are JSON lines too: without a root handler, Python would print them plain."""
    if wants_json(args):
        logging.basicConfig(level=logging.WARNING, handlers=[json_handler()], force=True)


# --- readiness -----------------------------------------------------------------------------
def _origin_failed(event: RequestEvent) -> bool:
    """Whether an error event says the origin is unwell (no answer, 5xx, throttling, keys
    refused, no container) rather than that one request was wrong (a missing object, a
    bad path).

    An AccessDenied to a ListItems is the origin answering: it accepted the keys and
    refused the action, and publishing needs no listing. Keys made for an encoder are
    often allowed to write only; the idle probe and the preflight list, and would
    otherwise read such keys as an outage."""
    from ..errors import AccessDeniedError, ContainerNotFoundError, ThrottlingError

    status = event.status
    if event.operation == "ListItems" and isinstance(event.error, AccessDeniedError):
        return False
    return (
        status is None
        or status >= 500
        or status in (401, 403, 429)
        # No container (deleted, or the endpoint names another): nothing can be published.
        # A 404 to a PUT says the same (a PUT creates its object; it is never "no such
        # object"), where a 404 to a read is one object missing, the origin answering.
        or isinstance(event.error, ThrottlingError | ContainerNotFoundError)
        or (status == 404 and event.operation == "PutObject")
    )


def _not_an_exchange(event: RequestEvent) -> bool:
    """Whether an error event is the client's own refusal, which says nothing of the
    origin: a streamed body that passed the object limit is cut by the client before the
    origin could answer (ObjectTooLargeError), as is a body whose own source failed. Read
    as "no answer came", one oversized segment from the encoder made a healthy relay
    unready. So is a request the command's own session dropped as it closed (its
    shutdown): a scrape then read the origin as failing."""
    from ..errors import ClientValidationError, MediaStoreError, SessionClosedError

    error = event.error
    return isinstance(error, ClientValidationError | SessionClosedError) or (
        error is not None and not isinstance(error, MediaStoreError)
    )


@dataclass
class Readiness:
    """``/readyz`` from the session's event hooks: ready once an exchange with the origin
    succeeded and the last exchange that ended within ``window`` seconds succeeded."""

    endpoint: str | None
    window: float = READY_WINDOW
    clock: Callable[[], float] = time.monotonic
    last_end: float | None = None
    last_ok: bool = False
    ever_ok: bool = False
    reason: str = "the origin has not answered yet"

    def __call__(self, event: RequestEvent) -> None:
        kind = event.kind
        if kind not in ("response", "error") or (
            self.endpoint is not None and event.endpoint != self.endpoint
        ):
            return
        if kind == "error" and _not_an_exchange(event):
            return
        if kind == "response" or not _origin_failed(event):
            self.last_end = self.clock()
            self.last_ok = self.ever_ok = True
        else:
            from ..errors import ContainerNotFoundError

            error = event.error
            what = f"HTTP {event.status}" if event.status else type(error).__name__
            if isinstance(error, ContainerNotFoundError):
                what += ": no such container"
            self.failed(event.operation, what)

    def failed(self, operation: str, what: str) -> None:
        """An exchange with the origin failed just now (``what``: how)."""
        self.last_end = self.clock()
        self.last_ok = False
        self.reason = f"the last {operation} to the origin failed ({what})"

    def state(self) -> tuple[bool, str]:
        if not self.ever_ok:
            return False, self.reason if self.last_end is not None else (
                "the origin has not answered yet"
            )
        if self.last_end is None or self.clock() - self.last_end > self.window:
            return False, f"no exchange with the origin in the past {self.window:g} s"
        if not self.last_ok:
            return False, self.reason
        return True, "ok"

    def idle_for(self) -> float:
        return float("inf") if self.last_end is None else self.clock() - self.last_end


async def _probe(store: ContainerClient, readiness: Readiness, interval: float) -> None:
    """Keeps /readyz honest while nothing else talks to the origin: a signed ListItems of
    one item when no exchange ended for ``interval`` seconds."""
    import asyncio

    from ..errors import DeadlineExceeded, MediaStoreError
    from ..retry import RetryPolicy

    once = RetryPolicy(max_attempts=1)
    while True:
        idle = readiness.idle_for()
        if idle >= interval:
            # Its outcome reaches `readiness` through the session's hooks, but for a
            # deadline that cancelled the attempt (an origin that accepts and never
            # answers): a cancelled attempt tells the hooks nothing of the origin, and
            # /readyz said only "no exchange with the origin" a window later.
            ended = readiness.last_end
            try:
                await store.list_items_page(max_results=1, deadline=interval, retry=once)
            except DeadlineExceeded as exc:
                if readiness.last_end == ended:
                    # attempts 0: its deadline passed before it was sent (its keys).
                    what = (
                        f"no answer within {interval:g} s" if exc.attempts
                        else type(exc).__name__
                    )
                    readiness.failed("ListItems", what)
            except MediaStoreError:
                pass
            await asyncio.sleep(interval)
        else:
            await asyncio.sleep(interval - idle)


@dataclass
class Observer:
    """What a command wires in: hooks for its session and publisher (``None`` without
    ``--metrics``) and the readiness it reports."""

    registry: CollectorRegistry | None = None
    readiness: Readiness | None = None
    session_hooks: list[Callable[[RequestEvent], object]] = field(default_factory=list)
    publisher_hook: Callable[[PublishEvent], object] | None = None
    url: str | None = None

    def on_publish(self, event: PublishEvent) -> None:
        if self.publisher_hook is not None:
            self.publisher_hook(event)


def _app(registry: CollectorRegistry, ready: Callable[[], tuple[bool, str]]) -> Any:
    from aiohttp import web
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(request: web.Request) -> web.Response:
        ok, reason = ready()
        return web.Response(status=200 if ok else 503, text=f"{reason}\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


@contextlib.asynccontextmanager
async def observing(
    args: argparse.Namespace,
    *,
    session: Session | None = None,
    store: ContainerClient | None = None,
    publisher: bool = False,
    server_ready: Callable[[], bool] | None = None,
    registry: CollectorRegistry | None = None,
    window: float | None = None,
    probe_interval: float | None = None,
    stopping: Callable[[], bool] | None = None,
) -> AsyncIterator[Observer]:
    """Start the ``--metrics`` listener (if asked) for the command's ``session`` talking to
    ``store`` (its requests and readiness; idle, it probes ``store``), its live publisher
    (``publisher=True``: pass ``observer.on_publish`` as ``on_event``), or, for a server,
    ``server_ready`` and its own ``registry``. ``stopping()`` true: the command was told
    to stop and accepts nothing new (its drain), so /readyz is 503 whatever the origin
    does. Without ``--metrics`` it does nothing."""
    address = getattr(args, "metrics", None)
    if address is None:
        yield Observer()
        return
    import asyncio

    from aiohttp import web
    from prometheus_client import CollectorRegistry

    from .._listen import every_interface, listen, serve_sockets, url_host
    from ..prometheus import metrics_hook, publisher_hook
    from ._common import cannot_listen

    parsed = parse_address(address)
    assert parsed is not None  # check_options ran
    # The environment overrides exist for the tests, which cannot wait 15 s per outage.
    if window is None:
        window = float(os.environ.get("MSD_READY_WINDOW", READY_WINDOW))
    if probe_interval is None:
        probe_interval = float(os.environ.get("MSD_PROBE_INTERVAL", PROBE_INTERVAL))
    registry = CollectorRegistry() if registry is None else registry
    observer = Observer(registry=registry)
    state: Callable[[], tuple[bool, str]]
    if session is not None:
        readiness = Readiness(None if store is None else store.endpoint, window)
        observer.readiness = readiness
        observer.session_hooks = [metrics_hook(registry), readiness]
        session.event_hooks.extend(observer.session_hooks)
        state = readiness.state
    else:

        def state() -> tuple[bool, str]:
            if server_ready is None or server_ready():
                return True, "ok"
            return False, "not listening"

    def ready() -> tuple[bool, str]:
        # A load balancer that reads /readyz must stop sending to a command that drains:
        # it accepts no new connection by then.
        if stopping is not None and stopping():
            return False, "stopping: told to stop, finishing what it has"
        return state()

    if publisher:
        observer.publisher_hook = publisher_hook(registry)
    # lingering_time=0: a request whose body is not read (no scrape has one) closes its
    # connection once answered. aiohttp's default waited up to 10 s more for that body,
    # and went on waiting after the command was told to stop: any peer of the port
    # could hold its exit. shutdown_timeout: aiohttp's default 60 s let a scraper that
    # stopped reading a large /metrics hold the exit that long; an answer here is small.
    runner = web.AppRunner(
        _app(registry, ready), access_log=None, handle_signals=False, lingering_time=0,
        shutdown_timeout=METRICS_SHUTDOWN_TIMEOUT,
    )
    await runner.setup()
    probing: asyncio.Task[None] | None = None
    try:
        try:
            listeners = await listen(parsed[0], parsed[1])
        except OSError as exc:
            raise cannot_listen("--metrics", address, exc) from None
        await serve_sockets(runner, listeners)
        port = listeners[0].getsockname()[1]
        observer.url = f"http://{url_host(parsed[0])}:{port}/metrics"
        if every_interface(parsed[0]):
            print(every_interface_line(port, "--metrics"), flush=True)
        print(f"metrics: {observer.url}", flush=True)
        if store is not None and observer.readiness is not None:
            probing = asyncio.create_task(
                _probe(store, observer.readiness, probe_interval), name="msd readiness probe"
            )
        yield observer
    finally:
        if probing is not None:
            probing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probing
        if session is not None:
            for hook in observer.session_hooks:
                with contextlib.suppress(ValueError):
                    session.event_hooks.remove(hook)
        await runner.cleanup()
