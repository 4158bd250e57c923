"""``msd relay`` and ``msd push``: ingest for encoders that cannot sign (docs/ingest.md)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import TYPE_CHECKING, Any

from . import _observe
from ._common import client_options, run_command

if TYPE_CHECKING:
    import asyncio

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
        type=float,
        default=30.0,
        help="seconds to publish what is pending after SIGINT/SIGTERM (default 30)",
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
    p.set_defaults(func=_relay)

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
        type=float,
        default=1.0,
        help="seconds a file written in place must stay unchanged before it is published "
        "(default 1.0; files renamed into place go at once)",
    )
    p.set_defaults(func=_push)


# --- shared plumbing -------------------------------------------------------------------
def _run(args: argparse.Namespace, parser: argparse.ArgumentParser, main: Any) -> int:
    if not args.endpoint:
        parser.error("give --endpoint URL or set MSD_ENDPOINT")
    refused = _observe.check_options(args)
    if refused is not None:
        return refused
    _observe.configure_logging(args)
    return run_command(args, lambda: main(args))


def _make_publisher(
    store: ContainerClient, args: argparse.Namespace, observer: _observe.Observer
) -> Any:
    import logging

    from ..live import LivePublisher, PublishEvent

    logger = logging.getLogger("msd_async.ingest")

    def on_event(event: PublishEvent) -> None:
        # The relay and the pusher log each object's outcome; what happens later (the
        # window's deletes) is logged from here.
        observer.on_publish(event)
        if event.kind == "deleted":
            logger.info("DELETE %s deleted", event.path,
                        extra={"msd_fields": {"event": "deleted", "path": event.path}})
        elif event.kind == "delete-failed":
            logger.warning("DELETE %s failed: %s", event.path, event.reason,
                           extra={"msd_fields": {"event": "delete-failed", "path": event.path,
                                                 "error": event.reason}})

    # The relay and the pusher wait up to --shutdown-timeout for every outcome before the
    # publisher closes: by then only deletes not yet due (abandoned) or objects that missed
    # that wait are left, and a short grace keeps the whole stop within the timeout + 2 s.
    session = store.session
    backups = [session.container(url) for url in args.backup_endpoint]
    return LivePublisher(
        store,
        backups=backups,
        prefix=args.prefix,
        close_timeout=min(2.0, args.shutdown_timeout),
        on_event=on_event,
    )


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


def _stop_event() -> asyncio.Event:
    import asyncio
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def _remove_signal_handlers() -> None:
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
        parser.error(f"--listen must be HOST:PORT, not {args.listen!r}")
    args.host, args.port = host, int(port)
    from ..ingest.relay import is_loopback

    if not is_loopback(host):
        if not args.allow_remote:
            parser.error(
                f"refusing to listen on {host}: the relay signs whatever it receives; add "
                "--allow-remote (and --secret or --basic-auth) to accept other hosts"
            )
        warning = "msd relay: warning: listening on a non-loopback address"
        if not (args.secret or args.basic_auth):
            warning += " WITHOUT --secret or --basic-auth: anyone who reaches it can publish"
        _observe.print_line(args, warning, "warning", "warning", file=sys.stderr,
                            message=warning.removeprefix("msd relay: warning: "))
    if args.basic_auth is not None and ":" not in args.basic_auth:
        parser.error("--basic-auth must be USER:PASSWORD")
    return _run(args, parser, _relay_main)


async def _relay_main(args: argparse.Namespace) -> int:
    from ..ingest import Relay
    from ..session import Session

    basic: tuple[str, str] | None = None
    if args.basic_auth:
        user, _, password = args.basic_auth.partition(":")
        basic = (user, password)
    stop = _stop_event()
    try:
        async with Session(region=args.region, profile=args.profile) as session:
            store = session.container(args.endpoint)
            async with (
                _observe.observing(args, session=session, store=store, publisher=True) as obs,
                _make_publisher(store, args, obs) as publisher,
            ):
                relay = Relay(
                    publisher,
                    host=args.host,
                    port=args.port,
                    allow_remote=args.allow_remote,
                    secret=args.secret,
                    basic_auth=basic,
                    drain_timeout=args.shutdown_timeout,
                )

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

                async with relay:
                    print(f"relay: {relay.url}", flush=True)
                    async with _Console(status, args):
                        await stop.wait()
    finally:
        _remove_signal_handlers()
    return 0


# --- msd push --------------------------------------------------------------------------
def _push(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if not os.path.isdir(args.dir):
        parser.error(f"{args.dir} is not a folder")
    return _run(args, parser, _push_main)


async def _push_main(args: argparse.Namespace) -> int:
    from ..ingest import FolderPusher
    from ..session import Session

    stop = _stop_event()
    try:
        async with Session(region=args.region, profile=args.profile) as session:
            store = session.container(args.endpoint)
            async with (
                _observe.observing(args, session=session, store=store, publisher=True) as obs,
                _make_publisher(store, args, obs) as publisher,
            ):
                pusher = FolderPusher(
                    publisher, args.dir, settle=args.settle, drain_timeout=args.shutdown_timeout
                )

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
                    await pusher.run(stop)
    finally:
        _remove_signal_handlers()
    return 0
