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
from typing import NoReturn

__all__ = ["build_parser", "main"]

#: Command-group modules of this package, in the order their commands are listed.
COMMAND_MODULES = ("serve", "objects", "sync", "live", "ingest")


class _Parser(argparse.ArgumentParser):
    """argparse, whose usage errors are one JSON line when the command line asks for
    ``--log-format json``: they come before that option is parsed, and a log pipeline
    that reads JSON lines would otherwise get argparse's usage text."""

    #: The arguments being parsed (set by :func:`main`; subparsers share it).
    argv: list[str] | None = None

    def error(self, message: str) -> NoReturn:
        argv = sys.argv[1:] if _Parser.argv is None else _Parser.argv
        if not _asks_for_json(argv):
            super().error(message)
        from ._observe import json_line

        print(json_line("usage-error", "error", error=f"{self.prog}: {message}"),
              file=sys.stderr)
        self.exit(2)


def _asks_for_json(argv: list[str]) -> bool:
    for i, arg in enumerate(argv):
        if arg == "--":
            return False
        if arg == "--log-format=json" or (
            arg == "--log-format" and argv[i + 1 : i + 2] == ["json"]
        ):
            return True
    return False


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="msd", description="AWS Elemental MediaStore data-plane tools.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``msd``; returns the exit status."""
    command = "msd"
    try:
        from ._common import guard_standard_streams

        guard_standard_streams()
        parser = build_parser()
        _Parser.argv = argv
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
