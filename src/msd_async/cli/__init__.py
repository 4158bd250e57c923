"""The ``msd`` command: one module per command group, each with a ``register`` function.

Argument parsing and rendering live here; the work lives in the library. Modules import
only argparse at the top, so ``msd --help`` stays fast: each command imports what it
needs (aiohttp, aiobotocore, rich) when it runs.

``msd serve`` runs the local MediaStore-compatible server until SIGINT/SIGTERM.
``msd demo`` publishes a synthetic low-latency live stream through an embedded local server.
``msd relay`` and ``msd push`` publish what encoders that cannot sign PUT or write to a
folder, through the live publisher.
``msd ls|stat|get|put|rm|presign|sync`` talk to a container: ``--endpoint`` (or
``MSD_ENDPOINT``), the region from the endpoint, ``--region`` or ``AWS_REGION``, credentials
from the AWS chain (``--profile``, the environment, ...). Errors print one line (a traceback
only with ``--debug``); exit status 0 only on full success, 1 on any failure, 2 for usage
errors. The shared pieces are in ``_common``. See ``docs/cli.md``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["build_parser", "main"]

#: Command-group modules of this package, in the order their commands are listed.
COMMAND_MODULES = ("serve", "objects", "sync", "live", "ingest")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="msd", description="AWS Elemental MediaStore data-plane tools."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``msd``; returns the exit status."""
    command = "msd"
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        command = f"msd {args.command}"
        result: int = args.func(args, parser)
    except KeyboardInterrupt:
        # Ctrl-C before a command's own handling begins (its imports take a moment): the
        # same line and status as after, not a traceback through importlib.
        print(f"{command}: interrupted", file=sys.stderr)
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main())
