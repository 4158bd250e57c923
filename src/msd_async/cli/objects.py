"""``msd ls|stat|get|put|rm``: one object operation each, against ``--endpoint``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ._common import client_options

if TYPE_CHECKING:
    from ..client import ContainerClient

__all__ = ["register"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = client_options()

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
    import asyncio  # here, not at the top: `msd --help` loads every command module

    from ..errors import MediaStoreError

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
    from ..session import Session

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
    # A Path: a str body is uploaded as its text, not read as a file name.
    body = sys.stdin.buffer if args.file == "-" else Path(args.file)
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
