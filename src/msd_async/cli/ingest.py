"""``msd relay`` and ``msd push``: ingest for encoders that cannot sign (docs/ingest.md)."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from typing import TYPE_CHECKING, Any

from . import _observe
from ._common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    cannot_listen,
    check_port,
    client_options,
    run_command,
)

if TYPE_CHECKING:
    import signal
    from collections.abc import AsyncIterator, Callable

    from ..client import ContainerClient

__all__ = ["register"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = client_options()
    common.add_argument("--prefix", default="", help="folder to publish under (default: root)")
    common.add_argument(
        "--backup-endpoint",
        action="append",
        default=[],
        metavar="URL",
        help="also publish to this container (redundant ingest, own queues and health; "
        "repeatable)",
    )
    common.add_argument(
        "--shutdown-timeout",
        type=_not_negative,
        default=30.0,
        help="seconds to publish what is pending after SIGINT/SIGTERM (default 30; the "
        "process exits within this + 2 s)",
    )
    common.add_argument(
        "--media-deadline",
        type=_positive,
        default=None,
        metavar="SECONDS",
        help="how long a segment or part is retried before it is given up and marked as a "
        "gap (default: its duration, from the playlist)",
    )
    common.add_argument(
        "--no-preflight",
        dest="preflight",
        action="store_false",
        help="skip the signed ListItems of --prefix made at start to check the endpoint "
        "and credentials",
    )
    _observe.add_options(common)

    p = commands.add_parser(
        "relay",
        parents=[common],
        help="an HTTP relay for encoders that cannot sign (ffmpeg -method PUT)",
        description="Accept PUT/POST/DELETE from an encoder and publish each object, signed, "
        "through the live publisher. Prints 'relay: http://HOST:PORT' once it accepts "
        "connections; stops on SIGINT/SIGTERM after publishing what is pending.",
    )
    p.add_argument(
        "--listen",
        default="127.0.0.1:8080",
        metavar="HOST:PORT",
        help="address to listen on (default 127.0.0.1:8080; port 0 = any free port)",
    )
    p.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a non-loopback --listen address (the relay signs whatever it receives)",
    )
    p.add_argument(
        "--secret",
        default=os.environ.get("MSD_RELAY_SECRET"),
        help="require this value in the X-Relay-Secret header (default: $MSD_RELAY_SECRET)",
    )
    p.add_argument(
        "--basic-auth",
        default=os.environ.get("MSD_RELAY_BASIC_AUTH"),
        metavar="USER:PASSWORD",
        help="require HTTP Basic auth (default: $MSD_RELAY_BASIC_AUTH)",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=None,
        metavar="N",
        help="encoder connections served at once; more are answered 503 (default 256)",
    )
    p.add_argument(
        "--max-buffer",
        type=_size,
        default=None,
        metavar="BYTES",
        help="request bodies held at once, for retries (suffix K, M or G; default 64M); "
        "beyond it the relay stops reading from encoders until the origin catches up",
    )
    p.set_defaults(func=_relay, command_parser=p)

    p = commands.add_parser(
        "push",
        parents=[common],
        help="publish the folder an encoder writes, as files complete",
        description="Watch DIR and publish new and changed files through the live publisher "
        "(media before the playlists that reference them), ignoring temporary files, and "
        "mirror deletions. Catches up on start; on SIGINT/SIGTERM scans once more, "
        "publishes what is pending and exits.",
    )
    p.add_argument("dir", help="the encoder's output folder")
    p.add_argument(
        "--settle",
        type=_finite_not_negative,
        default=1.0,
        help="seconds a file written in place must stay unchanged before it is published "
        "(default 1.0; files renamed into place go at once)",
    )
    p.set_defaults(func=_push, command_parser=p)


# --- shared plumbing -------------------------------------------------------------------
def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
    return value


def _not_negative(text: str) -> float:
    # "not value >= 0" also refuses nan, which every deadline comparison would treat as
    # neither passed nor pending.
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def _finite_not_negative(text: str) -> float:
    # An endless settle time would never publish a file written in place, and the stop
    # waits up to it.
    value = _not_negative(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be 0 or more, and finite, not {text}")
    return value


_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


def _size(text: str) -> int:
    number, unit = text.strip().upper().rstrip("B"), ""
    if number and number[-1] in "KMG":
        number, unit = number[:-1], number[-1]
    try:
        value = int(float(number) * _UNITS[unit])
    except ValueError:
        raise argparse.ArgumentTypeError(f"a size like 64M or 1048576, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
    return value


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser, main: Any) -> int:
    if not args.endpoint:
        args.command_parser.error("give --endpoint URL or set MSD_ENDPOINT")
    refused = _observe.check_options(args)
    if refused is not None:
        return refused
    _observe.configure_logging(args)
    return run_command(args, lambda: main(args))


async def _preflight(store: ContainerClient, args: argparse.Namespace) -> None:
    if args.preflight:
        from ..ingest.preflight import preflight

        await preflight(store, args.prefix)
        for url in args.backup_endpoint:
            await preflight(store.session.container(url), args.prefix)


@contextlib.asynccontextmanager
async def _publishing(
    args: argparse.Namespace, signals: _Signals
) -> AsyncIterator[tuple[Any, Any]]:
    """The session, the --metrics observer, the preflight and the open publisher that relay
    and push share: yields the publisher and its last-error lookup (see _make_publisher).
    After a second signal the publisher closes without its grace period."""
    from ..session import Session

    async with Session(region=args.region, profile=args.profile) as session:
        store = session.container(args.endpoint)
        async with _observe.observing(
            args, session=session, store=store, publisher=True, stopping=signals.stop.is_set
        ) as obs:
            await _preflight(store, args)
            publisher, last_error = _make_publisher(store, args, obs)
            async with publisher:
                yield publisher, last_error
                if signals.second is not None:
                    await publisher.aclose(cancel=True)


def _finish(
    args: argparse.Namespace, name: str, reporter: Any, extra: list[str], started: float
) -> int:
    """The summary on stderr at exit, and the exit status: 1 when objects were handled and
    none of them reached the origin."""
    import time

    counters = reporter.counters
    outcomes = ", ".join(f"{count} {outcome}" for outcome, count in counters.outcomes.items())
    parts = [outcomes or "nothing published", f"{counters.bytes / 1e6:.1f} MB stored", *extra,
             f"{time.monotonic() - started:.0f} s"]
    _observe.print_line(
        args, f"msd {name}: summary: " + "; ".join(parts), "summary", file=sys.stderr,
        outcomes=dict(counters.outcomes), bytes=counters.bytes,
    )
    for detail, count in counters.causes.items():
        _observe.print_line(args, f"msd {name}: {count} failed: {detail}", "failures",
                            "warning", file=sys.stderr, count=count, error=detail)
    if counters.failed and not counters.published:
        _observe.print_line(args, f"msd {name}: every publication failed", "failed", "error",
                            file=sys.stderr, error="every publication failed")
        return EXIT_FAILED
    return 0


def _make_publisher(
    store: ContainerClient, args: argparse.Namespace, observer: _observe.Observer
) -> tuple[Any, Any]:
    """The live publisher for ``--endpoint`` and its backups, and a function that tells the
    last error it met for an ingest path (for the failure lines)."""
    import logging

    from ..live import LivePublisher, PublishEvent

    logger = logging.getLogger("msd_async.ingest")

    def on_event(event: PublishEvent) -> None:
        # The relay and the pusher log each object's outcome; what happens later (the
        # window's deletes) is logged from here.
        observer.on_publish(event)
        if event.kind == "retried" and event.error is not None:
            last_errors[event.path] = event.error
        elif event.kind == "deleted":
            logger.info("DELETE %s deleted", event.path,
                        extra={"msd_fields": {"event": "deleted", "path": event.path}})
        elif event.kind == "delete-failed":
            logger.warning("DELETE %s failed: %s", event.path, event.reason,
                           extra={"msd_fields": {"event": "delete-failed", "path": event.path,
                                                 "error": event.reason}})

    # The relay and the pusher wait up to --shutdown-timeout for every outcome before the
    # publisher closes: by then only deletes (those due are carried out in the grace, the
    # rest abandoned) or objects that missed that wait are left, and a short grace keeps
    # the whole stop within the timeout + 2 s.
    session = store.session
    backups = [session.container(url) for url in args.backup_endpoint]
    last_errors: dict[str, BaseException] = {}
    prefix = args.prefix.strip("/")

    def last_error(path: str) -> BaseException | None:
        # Asked once per outcome: a path's entry goes with it.
        return last_errors.pop(f"{prefix}/{path}" if prefix else path, None)

    return LivePublisher(
        store,
        backups=backups,
        prefix=args.prefix,
        close_timeout=min(2.0, args.shutdown_timeout),
        on_event=on_event,
    ), last_error


class _Console:
    """One log line per object on stderr; on a terminal, a status line below them."""

    def __init__(self, status: Any, args: argparse.Namespace) -> None:
        import logging

        from rich.console import Console

        self.console = Console(stderr=True)
        self._status = status
        self._live: Any = None
        logger = logging.getLogger("msd_async.ingest")
        logger.propagate = False
        logger.setLevel(logging.INFO)
        self._json = _observe.wants_json(args)
        if self._json:
            handler: logging.Handler = _observe.json_handler()
        elif self.console.is_terminal:
            from rich.logging import RichHandler

            handler = RichHandler(
                console=self.console, show_path=False, show_level=False
            )
        else:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        logger.handlers[:] = [handler]

    async def __aenter__(self) -> _Console:
        if self.console.is_terminal and not self._json:
            import asyncio

            from rich.live import Live

            # Refreshed from the event loop, not from rich's refresh thread: the status
            # reads the publisher's state, which lives in this loop.
            self._live = Live(console=self.console, auto_refresh=False, transient=True)
            self._live.__enter__()
            self._task = asyncio.create_task(self._refresh())
        return self

    async def _refresh(self) -> None:
        import asyncio

        from rich.text import Text

        while True:
            self._live.update(
                Text(self._status(), no_wrap=True, overflow="ellipsis"), refresh=True
            )
            await asyncio.sleep(0.25)

    async def __aexit__(self, *exc_info: object) -> None:
        if self._live is not None:
            import asyncio

            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._live.__exit__(None, None, None)


def _publisher_status(publisher: Any) -> str:
    stats = publisher.stats()
    deletes = sum(d.deletes for d in stats.destinations)
    return f"retries {stats.retries} dropped {stats.dropped} deleted {deletes}"


class _Signals:
    """SIGINT and SIGTERM through the command's life. During start-up (the preflight may
    wait 10 s on an origin that does not answer) the first one cancels the start: nothing
    was received yet, and saying "ready" after being told to stop would mislead. Once
    running, the first one sets :attr:`stop` (the drain, up to --shutdown-timeout); a
    second one calls :attr:`abandon` (an operator who will not wait)."""

    def __init__(self, args: argparse.Namespace) -> None:
        import asyncio
        import signal

        self._args = args
        self._task = asyncio.current_task()
        self._running = False
        self.stop = asyncio.Event()
        self.first: signal.Signals | None = None
        self.second: signal.Signals | None = None
        #: Set by the command once it has something to abandon.
        self.abandon: Callable[[], None] | None = None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._received, sig)

    def started(self) -> None:
        self._running = True

    @property
    def cut_start(self) -> bool:
        """Whether a signal cancelled the start-up."""
        return self.first is not None and not self._running

    def _received(self, sig: signal.Signals) -> None:
        name = self._args.command
        if self.first is None:
            self.first = sig
            if self._running:
                self.stop.set()
            elif self._task is not None:
                self._task.cancel()
        elif self.second is None and self._running:
            self.second = sig
            _observe.print_line(
                self._args, f"msd {name}: stopped by a second {sig.name}: not waiting for "
                "what is pending", "stopping", "warning", file=sys.stderr, signal=sig.name,
                message="not waiting for what is pending",
            )
            if self.abandon is not None:
                self.abandon()

    def status(self, status: int) -> int:
        """The exit status: a stop forced by a second signal says so (130 or 143)."""
        import signal

        if self.second is None:
            return status
        return EXIT_INTERRUPTED if self.second == signal.SIGINT else EXIT_TERMINATED

    def stopped_at_start(self) -> int:
        """Called handling a CancelledError: a stop during start-up (a normal stop, with
        nothing received and nothing published) is one line and status 0; any other
        cancellation is raised again."""
        import asyncio

        if not self.cut_start:
            raise  # the CancelledError being handled
        task = asyncio.current_task()
        assert task is not None and self.first is not None
        task.uncancel()
        name = self._args.command
        _observe.print_line(
            self._args, f"msd {name}: stopped by {self.first.name} during start-up; nothing "
            "was published", "stopped", file=sys.stderr, signal=self.first.name,
            message="stopped during start-up; nothing was published",
        )
        return 0

    def close(self) -> None:
        import asyncio
        import signal

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


# --- msd relay -------------------------------------------------------------------------
def _relay(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    host, sep, port = args.listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit():
        args.command_parser.error(f"--listen must be HOST:PORT, not {args.listen!r}")
    problem = check_port(port)
    if problem is not None:
        args.command_parser.error(f"--listen port {problem}")
    args.host, args.port = host, int(port)
    if _observe.clashes(args.host, args.port, args.metrics):
        args.command_parser.error(
            f"--metrics {args.metrics} is the same address as --listen; give --metrics "
            "another port"
        )
    from ..ingest.relay import is_loopback

    if not is_loopback(host):
        if not args.allow_remote:
            args.command_parser.error(
                f"refusing to listen on {host}: the relay signs whatever it receives; add "
                "--allow-remote (and --secret or --basic-auth) to accept other hosts"
            )
        warning = "msd relay: warning: listening on a non-loopback address"
        if not (args.secret or args.basic_auth):
            warning += " WITHOUT --secret or --basic-auth: anyone who reaches it can publish"
        _observe.print_line(args, warning, "warning", "warning", file=sys.stderr,
                            message=warning.removeprefix("msd relay: warning: "))
    if args.basic_auth is not None and ":" not in args.basic_auth:
        args.command_parser.error("--basic-auth must be USER:PASSWORD")
    from ..ingest.relay import DEFAULT_MAX_CONNECTIONS, minimum_buffer

    if args.max_connections is not None and args.max_connections < 1:
        args.command_parser.error("--max-connections must be at least 1")
    least = minimum_buffer(args.max_connections or DEFAULT_MAX_CONNECTIONS)
    if args.max_buffer is not None and args.max_buffer < least:
        args.command_parser.error(
            f"--max-buffer must be at least {least:,} bytes for "
            f"{args.max_connections or DEFAULT_MAX_CONNECTIONS} connections"
        )
    return _run(args, parser, _relay_main)


async def _relay_main(args: argparse.Namespace) -> int:
    import time

    from .._listen import every_interface
    from ..ingest import Relay

    started = time.monotonic()
    basic: tuple[str, str] | None = None
    if args.basic_auth:
        user, _, password = args.basic_auth.partition(":")
        basic = (user, password)
    limits = {
        name: value
        for name, value in (
            ("max_connections", args.max_connections),
            ("max_buffer", args.max_buffer),
        )
        if value is not None
    }
    import asyncio

    signals = _Signals(args)
    try:
        async with _publishing(args, signals) as (publisher, last_error):
            relay = Relay(
                publisher,
                host=args.host,
                port=args.port,
                allow_remote=args.allow_remote,
                secret=args.secret,
                basic_auth=basic,
                drain_timeout=args.shutdown_timeout,
                media_deadline=args.media_deadline,
                **limits,
            )
            relay.reporter.last_error = last_error

            def status() -> str:
                s = relay.stats
                outcomes = relay.reporter.counters.outcomes
                counts = " ".join(f"{k} {v}" for k, v in outcomes.items())
                return " | ".join(
                    part
                    for part in (
                        f"relay :{relay.port}",
                        f"receiving {s.in_flight}",
                        f"pending {relay.reporter.pending}",
                        counts,
                        f"{s.bytes_in / 1e6:.1f} MB in",
                        _publisher_status(publisher),
                    )
                    if part
                )

            try:
                await relay.start()
            except OSError as exc:
                raise cannot_listen("--listen", args.listen, exc) from None
            try:
                if every_interface(relay.host):
                    print(_observe.every_interface_line(relay.port, "--listen"), flush=True)
                print(f"relay: {relay.url}", flush=True)
                signals.started()
                signals.abandon = relay.abandon
                async with _Console(status, args):
                    await signals.stop.wait()
            finally:
                await relay.aclose()
            retries = publisher.stats().retries
    except asyncio.CancelledError:
        return signals.stopped_at_start()
    finally:
        signals.close()
    s = relay.stats
    return signals.status(_finish(
        args,
        "relay",
        relay.reporter,
        [
            f"{s.requests} requests ({s.cut} cut, {s.rejected} rejected, "
            f"{s.refused_connections} connections refused)",
            f"{s.bytes_in / 1e6:.1f} MB in, peak buffer {s.buffered_peak / 1e6:.1f} MB",
            f"{retries} retries",
        ],
        started,
    ))


# --- msd push --------------------------------------------------------------------------
def _push(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if not os.path.isdir(args.dir):
        args.command_parser.error(f"{args.dir} is not a folder")
    return _run(args, parser, _push_main)


async def _push_main(args: argparse.Namespace) -> int:
    import asyncio
    import time

    from ..ingest import FolderPusher

    started = time.monotonic()
    signals = _Signals(args)
    try:
        async with _publishing(args, signals) as (publisher, last_error):
            pusher = FolderPusher(
                publisher,
                args.dir,
                settle=args.settle,
                drain_timeout=args.shutdown_timeout,
                media_deadline=args.media_deadline,
            )
            pusher.reporter.last_error = last_error

            def status() -> str:
                counts = " ".join(
                    f"{k} {v}" for k, v in pusher.reporter.counters.outcomes.items()
                )
                return " | ".join(
                    part
                    for part in (
                        f"push {args.dir}",
                        f"pending {pusher.reporter.pending}",
                        counts,
                        _publisher_status(publisher),
                    )
                    if part
                )

            async with _Console(status, args):
                print(f"push: watching {pusher.directory}", flush=True)
                signals.started()
                signals.abandon = pusher.abandon
                await pusher.run(signals.stop)
            retries = publisher.stats().retries
    except asyncio.CancelledError:
        return signals.stopped_at_start()
    finally:
        signals.close()
    extra = [f"{pusher.skipped_temporary} temporary or hidden files skipped", f"{retries} retries"]
    return signals.status(_finish(args, "push", pusher.reporter, extra, started))
