"""``msd sync SRC DST``: a local folder and a container folder (``ms:PATH``), either way."""

from __future__ import annotations

import argparse
import json
import sys

from . import _observe
from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    CommandError,
    TransferProgress,
    client_options,
    open_container,
    progress_enabled,
    run_command,
)

__all__ = ["register"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "sync",
        parents=[client_options()],
        help="make a folder match another (local <-> ms:PATH), transferring what differs",
        description="Copy what differs from SRC to DST; one is a local folder, the other a "
        "container folder written ms:PATH (ms: alone is the whole container). Differences "
        "are decided by content (SHA-256 and the sync record in DIR/.msd-sync/), never by "
        "size and time alone. Names the API cannot store and files over 25 MB are reported, "
        "never renamed; the exit status is 1 if anything failed, after the rest completed.",
        epilog="examples: msd sync ./site ms:www   msd sync ms:www ./copy --delete   "
        "msd sync ./vod ms:vod --shard 3/8",
    )
    p.add_argument("source", metavar="SRC", help="local folder or ms:PATH")
    p.add_argument("destination", metavar="DST", help="local folder or ms:PATH")
    p.add_argument(
        "--delete", action="store_true", help="also delete in DST what SRC does not have"
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print what would be done; change nothing"
    )
    p.add_argument(
        "--concurrency", type=int, default=16, help="files transferred at the same time (16)"
    )
    p.add_argument("--json", action="store_true", help="print a JSON report for scripts")
    p.add_argument(
        "--shard",
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
        "--content-type", help="Content-Type of every upload (default: from each name)"
    )
    p.add_argument("--cache-control", help="Cache-Control stored with every upload")
    _observe.add_options(p, metrics=False)
    p.set_defaults(func=_run)


def _parse_shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    index, sep, count = text.partition("/")
    try:
        if not sep:
            raise ValueError
        i, n = int(index), int(count)
    except ValueError:
        raise CommandError(f"--shard {text!r}: write it I/N, for example 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise CommandError(f"--shard {text!r}: needs 0 <= I < N")
    return i, n


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    _observe.configure_logging(args)
    return run_command(args, lambda: _sync(args))


async def _sync(args: argparse.Namespace) -> int:
    from ..transfer import REMOTE_SCHEME, sync

    remote = [x for x in (args.source, args.destination) if x.startswith(REMOTE_SCHEME)]
    if len(remote) != 1:
        raise CommandError(
            "give one local folder and one container folder written ms:PATH, for example "
            "msd sync ./site ms:www"
        )
    if args.concurrency < 1:
        raise CommandError(f"--concurrency must be at least 1, not {args.concurrency}")
    shard = _parse_shard(args.shard)
    upload = args.destination.startswith(REMOTE_SCHEME)
    verb = "upload" if upload else "download"
    async with open_container(args) as store:
        with TransferProgress(progress_enabled(args), f"{verb}ing") as bars:
            report = await sync(
                store,
                args.source,
                args.destination,
                delete=args.delete,
                dry_run=args.dry_run,
                concurrency=args.concurrency,
                progress=bars,
                fail_fast=args.fail_fast,
                shard=shard,
                content_type=args.content_type,
                cache_control=args.cache_control,
                record=not args.no_record,
            )
    for failure in sorted(report.failed, key=lambda f: f.path):
        _observe.print_line(
            args, f"msd sync: failed: {failure.path}: {failure.message}", "failed", "error",
            file=sys.stderr, path=failure.path, outcome="failed", error=failure.message,
        )
    if args.json:
        print(json.dumps(report.to_dict()))
        return EXIT_OK if report.ok else EXIT_FAILED
    would = "would " if args.dry_run else ""
    if args.dry_run:
        for path in sorted(report.transferred):
            _observe.print_line(args, f"would {verb}: {path}", f"would-{verb}", path=path)
        for path in sorted(report.deleted):
            _observe.print_line(args, f"would delete: {path}", "would-delete", path=path)
    _observe.print_line(
        args,
        f"{would}{verb} {len(report.transferred)} files "
        f"({report.bytes_transferred:,} bytes), {len(report.skipped)} unchanged, "
        f"{would}delete {len(report.deleted)}, {len(report.failed)} failed",
        "summary", "info" if report.ok else "error",
        direction=verb, dry_run=args.dry_run, transferred=len(report.transferred),
        bytes=report.bytes_transferred, unchanged=len(report.skipped),
        deleted=len(report.deleted), failed=len(report.failed),
    )
    return EXIT_OK if report.ok else EXIT_FAILED
