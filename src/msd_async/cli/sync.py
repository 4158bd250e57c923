"""``msd sync SRC DST``: a local folder and a container folder (``ms:PATH``), either way."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from typing import TYPE_CHECKING, Final

from . import _observe
from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    CommandError,
    TransferProgress,
    client_options,
    header_option,
    open_container,
    progress_enabled,
    run_command,
    whole_number,
)

if TYPE_CHECKING:
    from ..transfer import TransferReport

__all__ = ["register"]

#: Exit status after a stop by signal: 128 + the signal's number, as shells report it.
_SIGNAL_EXIT: Final = {signal.SIGINT: 130, signal.SIGTERM: 143}


class _AppendRule(argparse.Action):
    """--include and --exclude append to one list, in command-line order."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
        values: object, option_string: str | None = None,
    ) -> None:
        from ..errors import InvalidParameterError
        from ..transfer.filters import PathFilter

        rules = list(getattr(namespace, self.dest, None) or [])
        try:
            # A pattern that matches nothing is a typo: a usage error, before any scan.
            PathFilter([(self.const, values)])  # type: ignore[list-item]
        except InvalidParameterError as exc:
            parser.error(f"{option_string}: {exc}")
        rules.append((self.const, values))
        setattr(namespace, self.dest, rules)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "sync",
        parents=[client_options()],
        help="make a folder match another (local <-> ms:PATH), transferring what differs",
        description="Copy what differs from SRC to DST; one is a local folder, the other a "
        "container folder written ms:PATH (ms: alone is the whole container). Differences "
        "are decided by content (SHA-256 and the sync record, kept in "
        "$XDG_CACHE_HOME/msd/sync or --record-dir), never by size and time alone. Names the "
        "API cannot store and files over 25 MB are reported, never renamed. Exit status: 0 "
        "when everything was done, 1 if anything failed (after the rest completed), 130/143 "
        "when stopped by SIGINT/SIGTERM (the files in flight finish and are recorded; a "
        "second signal stops them too).",
        epilog="examples: msd sync ./site ms:www   msd sync ms:www ./copy --delete   "
        "msd sync ./vod ms:vod --shard 3/8 --exclude '*.tmp'",
    )
    p.add_argument("source", metavar="SRC", help="local folder or ms:PATH")
    p.add_argument("destination", metavar="DST", help="local folder or ms:PATH")
    p.add_argument(
        "--delete", action="store_true", help="also delete in DST what SRC does not have"
    )
    p.add_argument(
        "--max-delete",
        type=whole_number(0),
        metavar="N",
        help="with --delete: if more than N files or objects would be deleted, do nothing "
        "and fail",
    )
    p.add_argument(
        "--exclude",
        dest="filters",
        action=_AppendRule,
        const="exclude",
        metavar="PATTERN",
        help="leave out paths matching PATTERN (.gitignore syntax: '*.tmp', 'logs/', "
        "'vod/*.ts'); repeatable; the first matching --include/--exclude decides",
    )
    p.add_argument(
        "--include",
        dest="filters",
        action=_AppendRule,
        const="include",
        metavar="PATTERN",
        help="take paths matching PATTERN; once any --include is given, only such paths",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print what would be done; change nothing"
    )
    p.add_argument(
        "--concurrency", type=whole_number(1), default=16,
        help="files transferred at the same time (16)",
    )
    p.add_argument("--json", action="store_true", help="print a JSON report for scripts")
    p.add_argument(
        "--shard",
        type=_parse_shard,
        metavar="I/N",
        help="take only shard I of N (0 <= I < N), by a stable hash of each path: run N "
        "workers with I = 0..N-1 to spread one sync over many machines",
    )
    p.add_argument(
        "--fail-fast", action="store_true", help="stop at the first failed file"
    )
    p.add_argument(
        "--no-record",
        action="store_true",
        help="neither read nor write the sync record (a full compare)",
    )
    p.add_argument(
        "--record-dir",
        metavar="DIR",
        help="keep sync records in DIR (default: $XDG_CACHE_HOME/msd/sync, else "
        "~/.cache/msd/sync)",
    )
    p.add_argument(
        "--content-type", type=header_option("content_type"),
        help="Content-Type of every upload (default: from each name)",
    )
    p.add_argument(
        "--cache-control", type=header_option("cache_control"),
        help="Cache-Control stored with every upload",
    )
    p.add_argument(
        "--keep-dirlinks",
        action="store_true",
        help="into a local DST: write through (and compare under) a symbolic link to a "
        "folder found in DST, as rsync -K (default: an object under one fails, the link "
        "and what it points to are left alone)",
    )
    _observe.add_options(p, metrics=False)
    p.set_defaults(func=_run, filters=[])


def _parse_shard(text: str) -> tuple[int, int]:
    """``--shard I/N``, or a usage error (exit 2) before anything is scanned."""
    index, sep, count = text.partition("/")
    try:
        if not sep:
            raise ValueError
        i, n = int(index), int(count)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: write it I/N, for example 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"{text!r}: needs 0 <= I < N")
    return i, n


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.max_delete is not None and not args.delete:
        parser.error("--max-delete N needs --delete")
    _observe.configure_logging(args)
    return run_command(args, lambda: _sync(args))


async def _sync(args: argparse.Namespace) -> int:
    import asyncio

    import anyio

    from ..errors import InvalidParameterError
    from ..transfer import REMOTE_SCHEME, TransferOptions, sync

    remote = [x for x in (args.source, args.destination) if x.startswith(REMOTE_SCHEME)]
    if len(remote) != 1:
        raise CommandError(
            "give one local folder and one container folder written ms:PATH, for example "
            "msd sync ./site ms:www"
        )
    options = TransferOptions(
        concurrency=args.concurrency,
        fail_fast=args.fail_fast,
        dry_run=args.dry_run,
        shard=args.shard,
        filters=tuple(args.filters),
        record=not args.no_record,
        record_dir=args.record_dir,
        content_type=args.content_type,
        cache_control=args.cache_control,
        keep_dirlinks=args.keep_dirlinks,
    )
    upload = args.destination.startswith(REMOTE_SCHEME)
    verb = "upload" if upload else "download"
    stop = anyio.Event()
    received: list[signal.Signals] = []
    loop = asyncio.get_running_loop()

    with anyio.CancelScope() as scope:

        def on_signal(sig: signal.Signals) -> None:
            # The first signal stops scheduling; the files in flight finish and are
            # recorded. A second one stops those too (parts already written are kept).
            received.append(sig)
            if stop.is_set():
                scope.cancel()
            stop.set()

        for sig in _SIGNAL_EXIT:
            loop.add_signal_handler(sig, on_signal, sig)
        try:
            async with open_container(args) as store:
                with TransferProgress(progress_enabled(args), f"{verb}ing") as bars:
                    report = await sync(
                        store, args.source, args.destination, options,
                        delete=args.delete, max_delete=args.max_delete, progress=bars,
                        stop=stop,
                    )
        except InvalidParameterError as exc:
            if exc.rule in ("transfer.max-delete", "transfer.source-missing"):
                text = str(exc).replace("max_delete=", "--max-delete ")
                raise CommandError(text.replace("with delete", "with --delete")) from None
            raise
        finally:
            for sig in _SIGNAL_EXIT:
                loop.remove_signal_handler(sig)
    if scope.cancelled_caught:
        _observe.print_line(
            args, f"msd sync: stopped by {received[-1].name}; the files in flight were cut "
            "(a later sync resumes)", "interrupted", "error", file=sys.stderr,
            stopped_by=received[-1].name,
        )
        return _SIGNAL_EXIT[received[0]]
    _print_report(args, report, verb, received[0].name if received else None)
    if received:
        return _SIGNAL_EXIT[received[0]]
    return EXIT_OK if report.ok else EXIT_FAILED


def _print_report(
    args: argparse.Namespace, report: TransferReport, verb: str, stopped_by: str | None
) -> None:
    for failure in sorted(report.failed, key=lambda f: f.path):
        _observe.print_line(
            args, f"msd sync: failed: {failure.path}: {failure.message}", "failed", "error",
            file=sys.stderr, path=failure.path, outcome="failed", error=failure.message,
        )
    for warning in report.warnings:
        _observe.print_line(args, f"msd sync: warning: {warning}", "warning", "warning",
                            file=sys.stderr, error=warning)
    if args.json:
        print(json.dumps(report.to_dict()))
        return
    if args.dry_run:
        for path in sorted(report.transferred):
            _observe.print_line(args, f"would {verb}: {path}", f"would-{verb}", path=path)
        for path in sorted(report.deleted):
            _observe.print_line(args, f"would delete: {path}", "would-delete", path=path)
    would = "would " if args.dry_run else ""
    gone = f", {len(report.vanished)} gone before {verb}" if report.vanished else ""
    stopped = f"stopped by {stopped_by}: " if stopped_by else ""
    _observe.print_line(
        args,
        f"{stopped}{would}{verb} {len(report.transferred)} files "
        f"({report.bytes_transferred:,} bytes), {len(report.skipped)} unchanged, "
        f"{would}delete {len(report.deleted)}, {len(report.failed)} failed{gone}",
        "summary", "info" if report.ok else "error",
        direction=verb, dry_run=args.dry_run, transferred=len(report.transferred),
        bytes=report.bytes_transferred, unchanged=len(report.skipped),
        deleted=len(report.deleted), failed=len(report.failed),
        vanished=len(report.vanished), stopped_by=stopped_by,
    )
