"""The ``msd`` command. One function per subcommand; ``main`` builds the parser.

``msd serve`` runs the local MediaStore-compatible server until SIGINT/SIGTERM.
``msd ls|stat|get|put|rm`` talk to a container: ``--endpoint`` (or ``MSD_ENDPOINT``), the
region from the endpoint, ``--region`` or ``AWS_REGION``, credentials from the AWS chain
(``--profile``, the environment, ...). Errors print one line and exit with status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .client import ContainerClient

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="msd", description="AWS Elemental MediaStore data-plane tools."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_serve(commands)
    _add_client_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``msd``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    result: int = args.func(args, parser)
    return result


# -- serve --------------------------------------------------------------------------------


def _add_serve(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from .rules import STANDARD_OBJECT_LIMIT, STREAMING_OBJECT_LIMIT, UPLOAD_TIME_LIMIT

    p = commands.add_parser(
        "serve",
        help="run a local MediaStore-compatible server",
        description="Run a local MediaStore-compatible server. Prints 'endpoint: URL' once it "
        "accepts connections, one log line per request, and stops on SIGINT/SIGTERM.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port (default 0: any free port)")
    p.add_argument("--data-dir", help="keep objects in this directory (default: in memory)")
    p.add_argument("--region", default="us-east-1", help="SigV4 region (default us-east-1)")
    p.add_argument("--access-key-id", help="access key id clients sign with")
    p.add_argument("--secret-access-key", help="secret access key clients sign with")
    p.add_argument("--session-token", help="require this session token (temporary keys)")
    p.add_argument("--container", default="local", help="container name (default local)")
    p.add_argument(
        "--allow-anonymous",
        action="append",
        choices=["read", "write"],
        default=[],
        help="accept unsigned reads or writes (repeatable)",
    )
    p.add_argument("--standard-limit", type=int, default=STANDARD_OBJECT_LIMIT)
    p.add_argument("--streaming-limit", type=int, default=STREAMING_OBJECT_LIMIT)
    p.add_argument("--upload-time-limit", type=float, default=UPLOAD_TIME_LIMIT)
    p.add_argument("--no-fsync", action="store_true", help="do not fsync uploads (faster)")
    p.add_argument("--fault-rate", type=float, default=0.0, help="share of requests to fault")
    p.add_argument(
        "--fault-kinds",
        default="",
        help="comma-separated: 500,503,throttle,cut-upload,cut-download,delay (default all)",
    )
    p.add_argument("--fault-seed", type=int, default=None)
    p.add_argument("--fault-delay", type=float, default=0.5, help="seconds for 'delay'")
    p.add_argument("--quiet", action="store_true", help="do not log requests")
    p.set_defaults(func=serve)


def serve(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``msd serve``: run until SIGINT/SIGTERM; exit 0 on a clean stop."""
    from .credentials import Credentials
    from .testing import DEFAULT_CREDENTIALS, FaultPlan, LocalMediaStore
    from .testing.faults import FAULT_KINDS
    from .testing.server import is_loopback

    if (args.access_key_id is None) != (args.secret_access_key is None):
        parser.error("--access-key-id and --secret-access-key go together")
    explicit = args.access_key_id is not None
    if not is_loopback(args.host) and not explicit:
        parser.error(
            f"refusing to listen on {args.host} with the well-known default keys; "
            "give --access-key-id and --secret-access-key"
        )
    credentials = (
        Credentials(args.access_key_id, args.secret_access_key, args.session_token)
        if explicit
        else DEFAULT_CREDENTIALS
    )
    kinds = [k.strip() for k in args.fault_kinds.split(",") if k.strip()] or FAULT_KINDS
    try:
        faults = FaultPlan(
            rate=args.fault_rate, kinds=kinds, seed=args.fault_seed, delay=args.fault_delay
        )
    except ValueError as exc:
        parser.error(str(exc))

    access = logging.getLogger("msd_async.testing.access")
    access.propagate = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    access.addHandler(handler)
    access.setLevel(logging.WARNING if args.quiet else logging.INFO)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")

    server = LocalMediaStore(
        host=args.host,
        port=args.port,
        region=args.region,
        credentials=credentials,
        data_dir=args.data_dir,
        allow_anonymous=args.allow_anonymous,
        standard_limit=args.standard_limit,
        streaming_limit=args.streaming_limit,
        upload_time_limit=args.upload_time_limit,
        faults=faults,
        container=args.container,
        fsync=not args.no_fsync,
        access_logger=access,
    )
    print(f"access key id: {credentials.access_key_id}", flush=True)
    if not explicit:
        print(f"secret access key: {credentials.secret_access_key}", flush=True)
    print(f"region: {args.region}", flush=True)
    try:
        asyncio.run(_serve(server))
    except OSError as exc:
        print(f"msd serve: {exc}", file=sys.stderr)
        return 1
    return 0


async def _serve(server: object) -> None:
    from .testing import LocalMediaStore

    assert isinstance(server, LocalMediaStore)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
        print(f"endpoint: {server.endpoint}", flush=True)
        await stop.wait()
    finally:
        await server.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


# -- client commands ------------------------------------------------------------------------


def _add_client_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--endpoint",
        default=os.environ.get("MSD_ENDPOINT"),
        help="the container's data endpoint URL (default: $MSD_ENDPOINT)",
    )
    common.add_argument("--region", help="SigV4 region (default: from the endpoint or $AWS_REGION)")
    common.add_argument("--profile", help="AWS profile for credentials")

    p = commands.add_parser("ls", parents=[common], help="list a folder (ListItems)")
    p.add_argument("path", nargs="?", default="", help="folder path (default: the root)")
    p.set_defaults(func=_run_client, operation=_ls)

    p = commands.add_parser("stat", parents=[common], help="describe an object")
    p.add_argument("path")
    p.set_defaults(func=_run_client, operation=_stat)

    p = commands.add_parser("get", parents=[common], help="download an object")
    p.add_argument("path")
    p.add_argument("file", nargs="?", default="-", help="destination (default: stdout)")
    p.add_argument("--range", help="a byte range such as bytes=0-1023")
    p.set_defaults(func=_run_client, operation=_get)

    p = commands.add_parser("put", parents=[common], help="upload an object")
    p.add_argument("path")
    p.add_argument("file", help="source file, or - for stdin (streamed as it is read)")
    p.add_argument("--content-type")
    p.add_argument("--cache-control")
    p.add_argument(
        "--streaming", action="store_true", help="STREAMING availability (readable while uploading)"
    )
    p.set_defaults(func=_run_client, operation=_put)

    p = commands.add_parser("rm", parents=[common], help="delete an object")
    p.add_argument("path")
    p.set_defaults(func=_run_client, operation=_rm)


def _run_client(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .errors import MediaStoreError

    if not args.endpoint:
        parser.error("give --endpoint URL or set MSD_ENDPOINT")
    try:
        result: int = asyncio.run(_with_client(args))
    except MediaStoreError as exc:
        print(f"msd {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return result


async def _with_client(args: argparse.Namespace) -> int:
    from .session import Session

    async with Session(region=args.region, profile=args.profile) as session:
        store = session.container(args.endpoint)
        result: int = await args.operation(store, args)
        return result


async def _ls(store: ContainerClient, args: argparse.Namespace) -> int:
    async for item in store.list_items(args.path or None):
        if item.type == "FOLDER":
            print(f"{'FOLDER':>12}  {'':25}  {item.name}/")
        else:
            when = item.last_modified.isoformat(timespec="seconds") if item.last_modified else ""
            print(f"{item.content_length or 0:>12}  {when:25}  {item.name}")
    return 0


async def _stat(store: ContainerClient, args: argparse.Namespace) -> int:
    info = await store.describe_object(args.path)
    for field in ("content_length", "content_type", "etag", "last_modified", "cache_control"):
        value = getattr(info, field)
        if value is not None:
            print(f"{field}: {value}")
    return 0


async def _get(store: ContainerClient, args: argparse.Namespace) -> int:
    async with store.get_object(args.path, range=args.range) as obj:
        if args.file == "-":
            out = sys.stdout.buffer
            async for chunk in obj:
                out.write(chunk)
            out.flush()
        else:
            await obj.write_to(args.file)
    return 0


async def _put(store: ContainerClient, args: argparse.Namespace) -> int:
    body = sys.stdin.buffer if args.file == "-" else args.file
    result = await store.put_object(
        args.path,
        body,
        content_type=args.content_type,
        cache_control=args.cache_control,
        streaming=args.streaming,
    )
    print(f"{result.size} bytes  etag {result.etag}  sha256 {result.content_sha256}")
    return 0


async def _rm(store: ContainerClient, args: argparse.Namespace) -> int:
    await store.delete_object(args.path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
