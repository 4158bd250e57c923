"""What every ``msd`` command shares: its options, how it opens a container, how it fails,
its exit codes and its progress display.

Only argparse and the standard library are imported here at module level; the client and
rich are imported inside the functions that use them, so ``msd --help`` stays fast.

Exit codes: 0 only on full success; 1 when the command failed or any object failed (after
the others completed); 2 for a usage error (argparse's); 130 when interrupted; 143 when
stopped by SIGTERM (commands that handle it, with :func:`stop_on_sigterm`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from ..client import ContainerClient
    from ..transfer import TransferEvent

__all__ = [
    "ENDPOINT_ENV",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "CommandError",
    "Terminated",
    "TransferProgress",
    "add_debug_option",
    "cannot_listen",
    "check_port",
    "client_options",
    "describe_error",
    "guard_standard_streams",
    "header_option",
    "open_container",
    "progress_enabled",
    "refuse_closed",
    "run_command",
    "stdout_gone",
    "whole_number",
]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130
#: Stopped by SIGTERM (128 + 15, the shell's status for a process SIGTERM ended).
EXIT_TERMINATED: Final = 143
#: The environment variable that names the container's data endpoint.
ENDPOINT_ENV: Final = "MSD_ENDPOINT"

_CREDENTIAL_HELP: Final = (
    "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE / --profile); "
    "msd serve prints the keys it accepts"
)


#: The standard streams ``msd`` was started without (``<&-``, ``>&-``, ``2>&-``), by name
#: ("stdin", "stdout", "stderr"); set by :func:`guard_standard_streams`.
closed_streams: frozenset[str] = frozenset()


def guard_standard_streams() -> None:
    """Put the null device where ``msd`` was started without a standard stream.

    Python leaves ``sys.stderr`` (``stdout``, ``stdin``) None then, and ``print(file=None)``
    writes to stdout: with ``2>&-`` the error lines went into ``msd get NAME -``'s data.
    And a closed descriptor 0-2 is the next one a socket or a file gets. The commands whose
    output (or input) is the data they were asked for check :data:`closed_streams` and say
    so; what only reports is dropped.
    """
    global closed_streams
    closed = []
    for fd, name in enumerate(("stdin", "stdout", "stderr")):
        if getattr(sys, name) is not None:
            continue
        closed.append(name)
        flags = os.O_RDONLY if fd == 0 else os.O_WRONLY
        try:
            os.fstat(fd)
        except OSError:  # still closed: take it, so that nothing else does
            null = os.open(os.devnull, flags)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
            target = fd
        else:  # already someone else's descriptor: never write into it
            target = os.open(os.devnull, flags)
        setattr(sys, name, open(  # noqa: SIM115 - the process's own stream, for its life
            target, "r" if fd == 0 else "w", closefd=target != fd, errors="backslashreplace"
        ))
    closed_streams = frozenset(closed)


_STREAM_WORDS: Final = {
    "stdin": ("standard input", "<&-"),
    "stdout": ("standard output", ">&-"),
    "stderr": ("standard error", "2>&-"),
}


def refuse_closed(stream: str, what: str) -> None:
    """Raise :class:`CommandError` if ``msd`` was started with ``stream`` closed."""
    if stream in closed_streams:
        words, redirect = _STREAM_WORDS[stream]
        raise CommandError(f"{words} is closed (msd was started with {redirect}): {what}")


class CommandError(Exception):
    """A failure already phrased for the user: printed as one line, exit status 1."""


class Terminated(Exception):
    """The command was stopped by SIGTERM (see :func:`stop_on_sigterm`): one line, 143."""


@contextlib.asynccontextmanager
async def stop_on_sigterm() -> AsyncIterator[None]:
    """Within the block, SIGTERM stops the command as Ctrl-C does: the running task is
    cancelled, so its ``finally`` blocks run (a download's temporary file is removed, an
    upload is cut before it completes), then :class:`Terminated` is raised (one line on
    stderr, exit status 143). Without it SIGTERM killed the process where it stood."""
    import asyncio
    import signal

    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    received: list[bool] = []

    def on_sigterm() -> None:
        received.append(True)
        task.cancel()

    try:
        loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    except (NotImplementedError, RuntimeError):  # not the main thread, or no signals
        yield
        return
    try:
        yield
    except asyncio.CancelledError:
        if not received:
            raise
        task.uncancel()
        raise Terminated from None
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
    if received:
        # The signal came as the work ended: it is still a stop by SIGTERM.
        task.uncancel()
        raise Terminated


def add_debug_option(parser: argparse.ArgumentParser) -> None:
    """``--debug``: print the traceback of a failure, not only its one-line message."""
    parser.add_argument(
        "--debug", action="store_true", help="on failure, print the full traceback too"
    )


def client_options() -> argparse.ArgumentParser:
    """A parent parser with ``--endpoint``, ``--region``, ``--profile`` and ``--debug``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--endpoint",
        default=os.environ.get(ENDPOINT_ENV),
        help=f"the container's data endpoint URL (default: ${ENDPOINT_ENV})",
    )
    common.add_argument(
        "--region",
        help="SigV4 region (default: from the endpoint, else $AWS_REGION / $AWS_DEFAULT_REGION)",
    )
    common.add_argument(
        "--profile",
        help="AWS profile for credentials (default: $AWS_PROFILE, the environment's keys, "
        "then the rest of the standard AWS chain)",
    )
    add_debug_option(common)
    return common


def _one_line(text: str) -> str:
    return " ".join(text.split())


def describe_error(exc: BaseException) -> str:
    """One line for the user: what happened and, where it helps, what to do."""
    from ..errors import (
        AuthError,
        ConnectError,
        CredentialsError,
        InvalidParameterError,
        MediaStoreError,
    )

    if isinstance(exc, CommandError):
        return _one_line(str(exc))
    if isinstance(exc, InvalidParameterError) and exc.rule == "region.required":
        return "no region for this endpoint: give --region or set AWS_REGION"
    if isinstance(exc, AuthError) and "region" in str(exc).lower():
        # SigV4 signs for a region: a wrong one fails like a wrong key, and the service
        # says which ("Credential should be scoped to a valid region").
        return _one_line(
            f"{type(exc).__name__}: {exc}; the request was signed for another region: give "
            "the endpoint's region with --region or AWS_REGION"
        )
    if isinstance(exc, AuthError):
        return _one_line(f"{type(exc).__name__}: {exc}; {_CREDENTIAL_HELP}")
    if isinstance(exc, CredentialsError):
        # The library speaks to Python callers; here the way to pass keys is a flag.
        text = (
            str(exc)
            .replace("or pass credentials explicitly", "or give --profile")
            .replace("passing credentials=Credentials(...), ", "")
            .replace("profile=...", "--profile")
        )
        return _one_line(f"CredentialsError: {text}")
    if isinstance(exc, ConnectError):
        return _one_line(f"{exc}; is --endpoint (or ${ENDPOINT_ENV}) right?")
    if isinstance(exc, MediaStoreError):
        return _one_line(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, OSError):
        if exc.strerror:
            where = f"{exc.filename}: " if exc.filename else ""
            return _one_line(f"{where}{exc.strerror}")
        return _one_line(str(exc))
    return _one_line(f"{type(exc).__name__}: {exc} (run with --debug for the traceback)")


def cannot_listen(option: str, address: str, exc: OSError) -> CommandError:
    """The one line for an address that cannot be bound (taken, not this machine's, no
    such host), naming the option that gave it and what to do."""
    # asyncio words it "error while attempting to bind on address ('h', p): <reason>",
    # the reason lowered; a bind of our own (--metrics) raises the OS's words as they are.
    reason = exc.strerror.lower() if exc.strerror else str(exc)
    if reason.startswith("error while attempting to bind"):
        reason = reason.rpartition(": ")[2]
    return CommandError(
        f"{option} {address}: cannot listen there ({reason}); give another address, or "
        "port 0 for any free one"
    )


def check_port(port: int | str) -> str | None:
    """Why ``port`` cannot be listened on, or None; bind() would raise OverflowError."""
    if not str(port).isdigit() or not 0 <= int(port) <= 65535:
        return f"must be 0-65535, not {port}"
    return None


def whole_number(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number of ``minimum`` or more (up to ``maximum``), else a
    usage error naming the option (exit 2), before any request."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if maximum is None and value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, not {value}")
        if maximum is not None and not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"must be {minimum}..{maximum}, not {value}")
        return value

    return parse


def header_option(check: str) -> Callable[[str], str]:
    """An argparse type for a value the API rules check (``"content_type"``,
    ``"cache_control"``, ``"range"``): refused as a usage error (exit 2) by the same rule
    the client applies, instead of failing with status 1 once the command ran. An empty
    value is left to the command (``--content-type ''``: from the name, as before)."""

    def parse(text: str) -> str:
        if not text:
            return text
        from .. import rules  # at parse time: `msd --help` stays light
        from ..errors import ClientValidationError

        checks: dict[str, Callable[[str], str]] = {
            "content_type": rules.check_content_type,
            "cache_control": rules.check_cache_control,
            "range": rules.format_range,
        }
        try:
            return checks[check](text)
        except ClientValidationError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def stdout_gone() -> bool:
    """After a BrokenPipeError: whether the reader of stdout went away (``msd ls | head
    -1``); if so stdout now goes to devnull, so that Python's own flush at exit does not
    fail again (Python docs, "Note on SIGPIPE"). Any other broken pipe is a failure."""
    if not _stdout_closed():
        return False
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return True


def run_command(args: argparse.Namespace, main: Callable[[], Awaitable[int]]) -> int:
    """Run a command's coroutine; a failure is printed as one line on stderr (with the
    traceback too under ``--debug``) and returns :data:`EXIT_FAILED`."""
    import asyncio  # here, not at the top: `msd --help` loads every command module

    try:
        status = asyncio.run(_call(main))
        if sys.stdout is not None:  # None when the command was started with stdout closed
            sys.stdout.flush()  # a reader that went away is noticed here, not at exit
        return status
    except KeyboardInterrupt:
        print(f"msd {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print(f"msd {args.command}: stopped by SIGTERM", file=sys.stderr)
        return EXIT_TERMINATED
    except BrokenPipeError as exc:
        if not stdout_gone():
            print(f"msd {args.command}: {describe_error(exc)}", file=sys.stderr)
            return EXIT_FAILED
        # The reader of stdout went away (`msd ls | head -1`): what it wanted was
        # delivered. Stop quietly, as Unix tools do.
        return EXIT_OK
    except Exception as exc:
        if getattr(args, "debug", False):
            traceback.print_exception(exc, file=sys.stderr)
        line = f"msd {args.command}: {describe_error(exc)}"
        if getattr(args, "log_format", "text") == "json":
            from ._observe import json_line

            line = json_line("failed", "error", error=describe_error(exc))
        print(line, file=sys.stderr)
        return EXIT_FAILED


def _stdout_closed() -> bool:
    """Whether stdout is a pipe whose reader is gone (the write end then polls POLLERR),
    rather than some other pipe of the command that broke."""
    import select

    if not hasattr(select, "poll"):
        return True
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError):
        return False


async def _call(main: Callable[[], Awaitable[int]]) -> int:
    return await main()


def require_endpoint(args: argparse.Namespace) -> str:
    endpoint: str | None = getattr(args, "endpoint", None)
    if not endpoint:
        raise CommandError(
            f"no container endpoint: give --endpoint URL or set {ENDPOINT_ENV} "
            "(msd serve prints one)"
        )
    return endpoint


@contextlib.asynccontextmanager
async def open_container(args: argparse.Namespace) -> AsyncIterator[ContainerClient]:
    """A client for ``--endpoint`` with ``--region`` and ``--profile``, closed on exit."""
    endpoint = require_endpoint(args)
    from ..session import Session

    async with Session(region=args.region, profile=args.profile) as session:
        yield session.container(endpoint)


def progress_enabled(args: argparse.Namespace) -> bool:
    """Progress bars only for a person watching: stdout is a terminal and no ``--json``."""
    return (
        sys.stdout.isatty()
        and not getattr(args, "json", False)
        and not getattr(args, "quiet", False)
    )


class TransferProgress:
    """rich progress for a tree transfer: one total bar, and a line for each of at most
    :attr:`ACTIVE` files in flight.

    Use as a context manager; pass :meth:`__call__` as a transfer's ``progress`` hook. When
    ``enabled`` is false it does nothing (and imports nothing). Events only change numbers;
    rich's own thread redraws :attr:`REFRESH` times a second, so the display costs the same
    for 20 files as for 20,000 (a task added per file redraws the view each time, on the
    event loop). The total counts bytes as they move: the ``bytes`` events of large files,
    then the rest of each file when it is done or skipped.
    """

    #: Files shown with their own line at most.
    ACTIVE: Final = 3
    #: Redraws per second.
    REFRESH: Final = 4

    def __init__(self, enabled: bool, description: str = "total") -> None:
        self.enabled = enabled
        self._description = description
        self._progress: Any = None
        self._total: Any = None
        self._free: list[Any] = []
        self._shown: dict[str, Any] = {}
        self._moved: dict[str, int] = {}

    def __enter__(self) -> TransferProgress:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}", justify="left"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                transient=False,
                refresh_per_second=self.REFRESH,
            )
            self._total = self._progress.add_task(self._description, total=None)
            self._free = [
                self._progress.add_task("", total=None, visible=False)
                for _ in range(self.ACTIVE)
            ]
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            for task in self._shown.values():
                self._progress.update(task, visible=False)
            self._progress.stop()

    def __call__(self, event: TransferEvent) -> None:
        progress = self._progress
        if progress is None:
            return
        kind, path = event.kind, event.path
        if kind == "plan":
            progress.update(
                self._total,
                total=event.size or 0,
                description=f"{self._description} ({event.files} files)",
            )
        elif kind == "start":
            if self._free:
                task = self._free.pop()
                self._shown[path] = task
                # update(), not reset(): reset() redraws at once, on the event loop.
                progress.update(
                    task, total=event.size or 0, completed=0, description=f"  {path}",
                    visible=True,
                )
        elif kind == "bytes":
            before = self._moved.get(path, 0)
            self._moved[path] = event.done
            progress.advance(self._total, event.done - before)
            task = self._shown.get(path)
            if task is not None:
                progress.update(task, completed=event.done)
        elif kind in ("done", "skip", "fail", "vanished"):
            task = self._shown.pop(path, None)
            if task is not None:
                progress.update(task, visible=False)
                self._free.append(task)
            moved = self._moved.pop(path, 0)
            if kind != "fail" and event.size:
                progress.advance(self._total, event.size - moved)
