"""``msd ls|stat|get|put|rm|presign``: objects and folders of the container at ``--endpoint``."""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    CommandError,
    TransferProgress,
    client_options,
    header_option,
    open_container,
    progress_enabled,
    refuse_closed,
    run_command,
    stop_on_sigterm,
    whole_number,
)

if TYPE_CHECKING:
    from ..client import ContainerClient
    from ..results import Item

#: The longest presigned URL SigV4 allows: 7 days.
_MAX_EXPIRES = 7 * 24 * 3600

__all__ = ["register"]

_STDIN_CHUNK = 64 * 1024


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = client_options()

    p = commands.add_parser(
        "ls",
        parents=[common],
        help="list a folder (ListItems)",
        description="List a folder's objects and sub-folders; -r lists every object below "
        "it. Says so, and exits 1, when the folder does not exist or PATH is an object.",
    )
    p.add_argument("path", nargs="?", default="", help="folder path (default: the root)")
    p.add_argument("-r", "--recursive", action="store_true", help="every object at any depth")
    p.add_argument(
        "-l", "--long", action="store_true", help="size, last modified time and ETag too"
    )
    p.add_argument("--json", action="store_true", help="print a JSON array for scripts")
    p.set_defaults(func=_run, operation=_ls)

    p = commands.add_parser(
        "stat",
        parents=[common],
        help="describe an object",
        description="Print an object's size, Content-Type, ETag, last modified time and "
        "Cache-Control (DescribeObject). Says so, and exits 1, when there is no object at "
        "PATH.",
    )
    p.add_argument("path", help="object path")
    p.add_argument("--json", action="store_true", help="print a JSON object for scripts")
    p.set_defaults(func=_run, operation=_stat)

    p = commands.add_parser(
        "get",
        parents=[common],
        help="download an object",
        description="Download an object to FILE (written under a temporary name, renamed "
        "when complete: a FILE that is a link to a file is replaced, its target never "
        "written; a FIFO or device such as /dev/null is written into, not replaced), "
        "into FOLDER/ keeping its name, or to stdout with -. With --range, "
        "exactly those bytes, even from an origin that ignores Range (an in-progress "
        "STREAMING object). To download a folder, use msd sync.",
    )
    p.add_argument("path", help="object path")
    p.add_argument(
        "file", nargs="?", default="-", help="destination file or folder/ (default: - stdout)"
    )
    p.add_argument(
        "--range", type=header_option("range"), help="a byte range such as bytes=0-1023"
    )
    p.set_defaults(func=_run, operation=_get)

    p = commands.add_parser(
        "put",
        parents=[common],
        help="upload a file or stdin",
        description="Upload FILE (or - for stdin) as the object PATH (PATH ending in / keeps "
        "the file's name). A FILE that is a pipe, FIFO or device (msd put <(command) PATH) "
        "is read as stdin is. To upload a folder, use msd sync.",
    )
    p.add_argument("file", help="source file, or - for stdin")
    p.add_argument("path", help="object path, or a folder path ending in /")
    p.add_argument(
        "--content-type", type=header_option("content_type"),
        help="Content-Type (default: from the object's name extension)",
    )
    p.add_argument(
        "--cache-control", type=header_option("cache_control"),
        help="Cache-Control header stored with the object",
    )
    p.add_argument(
        "--streaming",
        action="store_true",
        help="STREAMING availability: readable while it uploads, sent as it is read "
        "(10 MB limit); for a live source on stdin",
    )
    p.set_defaults(func=_run, operation=_put)

    p = commands.add_parser(
        "rm",
        parents=[common],
        help="delete an object, or a folder's objects with -r",
        description="Delete the object PATH, or with -r every object below the folder PATH "
        "(a folder disappears with its last object; the root, / or an empty PATH, only "
        "with --whole-container). No object at PATH: said so, exit status 1. With -r, "
        "objects that cannot be "
        "deleted are listed on stderr after the others are gone, and the exit status is 1.",
    )
    p.add_argument("path", help="object path (a folder path with -r)")
    p.add_argument("-r", "--recursive", action="store_true", help="every object below PATH")
    p.add_argument(
        "--dry-run", action="store_true", help="with -r: print what would be deleted; delete "
        "nothing",
    )
    p.add_argument(
        "--concurrency", type=whole_number(1), default=16,
        help="deletes at the same time with -r (16)",
    )
    p.add_argument(
        "--whole-container", action="store_true",
        help="with -r and PATH / (the root): delete every object in the container",
    )
    p.add_argument("--json", action="store_true", help="print a JSON summary for scripts")
    p.set_defaults(func=_run, operation=_rm)

    p = commands.add_parser(
        "presign",
        parents=[common],
        help="print a presigned URL for an object",
        description="Print a URL that lets anyone without keys download the object PATH "
        "(or upload it, with --put) until it expires, for curl, a browser or a player. "
        "Signing needs no request: the URL is made even if there is no object yet.",
    )
    p.add_argument("path", help="object path")
    p.add_argument("--put", action="store_true", help="a URL to upload (default: download)")
    p.add_argument(
        "--expires-in", type=whole_number(1, _MAX_EXPIRES), default=3600,
        help="seconds the URL is valid (default 3600, at most 604800: 7 days)",
    )
    p.add_argument(
        "--content-type", type=header_option("content_type"),
        help="with --put: the Content-Type the uploader must send",
    )
    p.set_defaults(func=_run, operation=_presign)


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    async def main() -> int:
        async with stop_on_sigterm(), open_container(args) as store:
            result: int = await args.operation(store, args)
            return result

    return run_command(args, main)


# --- ls ----------------------------------------------------------------------------------


def _item_json(path: str, item_type: str, size: int | None, etag: str | None,
               modified: Any, content_type: str | None) -> dict[str, Any]:
    return {
        "path": path,
        "type": item_type,
        "size": size,
        "etag": etag,
        "last_modified": modified.isoformat() if modified is not None else None,
        "content_type": content_type,
    }


async def _explain_empty(store: ContainerClient, folder: str) -> None:
    """An empty listing of a non-root path: say whether it is an object or missing."""
    from ..errors import ObjectNotFoundError

    try:
        await store.describe_object(folder)
    except ObjectNotFoundError:
        raise CommandError(f"no folder {folder!r} in the container") from None
    raise CommandError(
        f"{folder!r} is an object, not a folder (msd stat {folder} describes it)"
    )


async def _ls(store: ContainerClient, args: argparse.Namespace) -> int:
    from ..rules import normalize_folder_path

    folder = normalize_folder_path(args.path)
    rows: list[dict[str, Any]] = []
    if args.recursive:
        from ..transfer import walk

        async for obj in walk(store, folder):
            rows.append(
                _item_json(obj.path, "OBJECT", obj.size, obj.etag, obj.last_modified,
                           obj.content_type)
            )
    else:
        items: list[Item] = [item async for item in store.list_items(folder or None)]
        for item in items:
            path = f"{folder}/{item.name}" if folder else item.name
            rows.append(
                _item_json(path, item.type, item.content_length, item.etag,
                           item.last_modified, item.content_type)
            )
    if not rows and folder:
        await _explain_empty(store, folder)
    if args.json:
        print(json.dumps(rows, indent=None))
        return EXIT_OK
    cut = len(folder) + 1 if folder and not args.recursive else 0
    for row in rows:
        name = row["path"][cut:] + ("/" if row["type"] == "FOLDER" else "")
        if args.long:
            size = "FOLDER" if row["type"] == "FOLDER" else str(row["size"] or 0)
            when = (row["last_modified"] or "")[:19]
            print(f"{size:>12}  {when:19}  {row['etag'] or '':40}  {name}")
        else:
            print(name)
    return EXIT_OK


# --- stat --------------------------------------------------------------------------------


async def _no_object(store: ContainerClient, path: str, command: str) -> CommandError:
    """What to say when there is no object at ``path``: it may be a folder (a HEAD or GET of
    a folder is a 404 too, with no body to say why)."""
    from ..rules import normalize_folder_path

    folder = normalize_folder_path(path)
    async for _ in store.list_items(folder or None, page_size=1):
        what = {
            "get": f"msd sync ms:{folder} FOLDER downloads what it holds",
            "stat": f"msd ls {folder} lists what it holds",
            "rm": f"msd rm -r {path} deletes what it holds"
            if folder
            else "msd rm -r --whole-container / deletes every object in the container",
        }[command]
        return CommandError(f"{path!r} is a folder, not an object; {what}")
    # rm: the service's 404 reads like a failure to delete; say what it means.
    done = "; nothing was deleted" if command == "rm" else ""
    return CommandError(f"no object at {path!r} in the container{done}")


async def _not_a_folder_path(store: ContainerClient, path: str, command: str) -> None:
    """A PATH written with a trailing ``/`` names a folder: say so (or that there is
    nothing there) rather than refuse it as a path with an empty segment."""
    if path.endswith("/"):
        raise await _no_object(store, path, command)


async def _stat(store: ContainerClient, args: argparse.Namespace) -> int:
    from ..errors import ObjectNotFoundError

    await _not_a_folder_path(store, args.path, "stat")
    try:
        info = await store.describe_object(args.path)
    except ObjectNotFoundError:
        raise await _no_object(store, args.path, "stat") from None
    fields = {
        "path": args.path,
        "size": info.content_length,
        "content_type": info.content_type,
        "etag": info.etag,
        "last_modified": info.last_modified.isoformat() if info.last_modified else None,
        "cache_control": info.cache_control,
    }
    if args.json:
        print(json.dumps(fields))
        return EXIT_OK
    for name, value in fields.items():
        if value is not None:
            print(f"{name}: {value}")
    return EXIT_OK


# --- get ---------------------------------------------------------------------------------


def _download_target(object_path: str, file: str) -> Path:
    """Where ``msd get`` writes: FILE, or FOLDER/NAME for an existing folder or a ``/``."""
    if not file:
        # An unset shell variable (msd get PATH "$OUT"): not the current folder.
        raise CommandError("FILE is empty: name a file, a folder/ or - (stdout)")
    name = object_path.rstrip("/").rpartition("/")[2]
    target = Path(file)
    if file.endswith(("/", os.sep)):
        if not target.is_dir():
            raise CommandError(f"{file}: no such folder (create it, or name a file)")
        return target / name
    if target.is_dir():
        return target / name
    if not target.parent.is_dir():
        raise CommandError(f"{target.parent}: no such folder for {file}")
    return target


async def _get(store: ContainerClient, args: argparse.Namespace) -> int:
    from ..errors import ObjectNotFoundError

    if args.file == "-":
        refuse_closed("stdout", "nothing to write the object to; give a FILE")
    await _not_a_folder_path(store, args.path, "get")
    try:
        if args.file == "-":
            from .._pipes import write_all

            # To the descriptor, each write abandonable: Ctrl-C ends msd while the reader
            # of its stdout takes nothing (see _pipes).
            sys.stdout.buffer.flush()
            fd = sys.stdout.fileno()
            await _download(store, args, functools.partial(write_all, fd))
            return EXIT_OK
        # A link at FILE to a regular file is replaced by the rename below, never written
        # through (as rsync and aws s3 cp): in a folder others can write to, a planted one
        # would have the object written into whatever it points to. A link to a folder is
        # the folder named (_download_target follows it, as cp does).
        target = _download_target(args.path, args.file)
        from ..body import is_stream_path

        if is_stream_path(str(target)):
            # A FIFO, a device or a link to one (/dev/null, /dev/stdout, the /dev/fd/N of
            # >(command)): written into as stdout is. A temporary file renamed over it
            # would replace the node itself (as root, /dev/null).
            await _download_into_stream(store, args, target)
            return EXIT_OK
        import anyio.to_thread

        from ..transfer._local import create_own_temporary, held_apart

        # Not cancellable while it runs: a cancellation is delivered at the next await,
        # inside the try that removes the file.
        tmp, fd = await anyio.to_thread.run_sync(create_own_temporary, target)
        lock = held_apart(fd, tmp)  # keeps a sync's sweep off it until after the rename
        try:
            fileobj = os.fdopen(fd, "wb")
            try:
                await _download(store, args, _in_thread(fileobj.write))
                await anyio.to_thread.run_sync(fileobj.flush)
            finally:
                fileobj.close()
            os.replace(tmp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):  # renamed into place
                tmp.unlink()
            os.close(lock)
    except ObjectNotFoundError:
        raise await _no_object(store, args.path, "get") from None
    return EXIT_OK


async def _download_into_stream(
    store: ContainerClient, args: argparse.Namespace, target: Path
) -> None:
    from .._pipes import open_pipe, write_all

    fd = await open_pipe(str(target), write=True)  # a FIFO's open waits for its reader
    try:
        await _download(store, args, functools.partial(write_all, fd))
    except OSError as exc:
        if exc.filename is not None or exc.errno is None:
            raise
        # Named, as a write to a file is ("out: No space left on device"). Of the same
        # type: a BrokenPipeError whose reader was msd's own stdout's (msd get PATH
        # /dev/stdout | head) ends quietly in run_command, as for -.
        raise type(exc)(exc.errno, exc.strerror or os.strerror(exc.errno), str(target)) from None
    finally:
        os.close(fd)


async def _download(
    store: ContainerClient, args: argparse.Namespace,
    write: Callable[[bytes], Awaitable[object]],
) -> None:
    """The object, or exactly ``--range`` of it (cut out of the whole body when the origin
    ignored the range), handed to ``write`` as it arrives."""
    async with store.get_object(args.path, range=args.range) as obj:
        async for chunk in obj.iter_range():
            await write(chunk)


def _in_thread(write: Callable[[bytes], object]) -> Callable[[bytes], Awaitable[object]]:
    """``write`` (of a regular file: it cannot stall) in anyio's worker threads."""
    import anyio.to_thread

    async def write_in_thread(chunk: bytes) -> None:
        await anyio.to_thread.run_sync(write, chunk)

    return write_in_thread


# --- put ---------------------------------------------------------------------------------


async def _read_whole(fd: int, name: str, limit: int, *, close: bool) -> bytes:
    from .._pipes import pipe_chunks
    from ..errors import ObjectTooLargeError

    parts: list[bytes] = []
    size = 0
    async with contextlib.aclosing(pipe_chunks(fd, _STDIN_CHUNK, close=close)) as chunks:
        async for chunk in chunks:
            parts.append(chunk)
            size += len(chunk)
            if size > limit:
                break
    data = b"".join(parts)
    if len(data) > limit:
        # Not "use --streaming": its limit is lower still (10 MB).
        raise ObjectTooLargeError(
            f"{name} gave more than {limit:,} bytes, the largest object the container "
            "stores; split the stream into objects (segments) of at most that size",
            rule="body.max-size.standard",
            limit=limit,
            size=None,
        )
    return data


async def _put(store: ContainerClient, args: argparse.Namespace) -> int:
    from ..media_types import content_type_for

    body: Any
    path = args.path
    # stdin, or a FILE that is a pipe, FIFO or device (`msd put <(command) name`): its size
    # on disk (0) says nothing of what it gives. It is read as it comes, once: whole (so a
    # retry can send it again) or, with --streaming, sent as it is read. Read from the
    # descriptor: nothing else reads stdin, and a read left blocked in a thread must not
    # hold the lock of sys.stdin's buffer (see _pipes).
    fd: int | None = None
    owned = False  # a FIFO we opened: the reading iterator closes it
    name = "stdin"
    if args.file == "-":
        if path.endswith("/"):
            raise CommandError("with - (stdin) give the object's full path, not a folder/")
        refuse_closed("stdin", "nothing to upload; give a FILE")
        fd = sys.stdin.fileno()
    else:
        source = Path(args.file)
        if source.is_dir():  # noqa: ASYNC240 - one stat before any I/O starts
            raise CommandError(
                f"{args.file} is a folder; msd put uploads one file. To upload a folder: "
                f"msd sync {args.file} ms:{path.rstrip('/')}"
            )
        if not source.exists():  # noqa: ASYNC240
            raise CommandError(f"{args.file}: no such file")
        if path.endswith("/"):
            if source.name.isdigit() and source.parent.name == "fd":
                # /dev/fd/63 from a shell's <(command): the number says nothing.
                raise CommandError(
                    f"{args.file} is a pipe with no name of its own; give the object's full "
                    f"path (not {path})"
                )
            path += source.name
        body = source
        if not source.is_file():  # noqa: ASYNC240
            from .._pipes import open_pipe

            # Opening a FIFO waits for its writer.
            fd = await open_pipe(str(source))
            owned = True
            name = args.file
    if fd is not None:
        from .._pipes import pipe_chunks

        body = (
            # Sent as it is read: each read returns what the pipe has, so a live
            # encoder's bytes go out at once (put_object closes the iterator).
            pipe_chunks(fd, _STDIN_CHUNK, close=owned)
            if args.streaming
            else await _read_whole(fd, name, store.standard_limit, close=owned)
        )
    result = await store.put_object(
        path,
        body,
        content_type=args.content_type or content_type_for(path),
        cache_control=args.cache_control,
        streaming=args.streaming,
    )
    print(f"{path}  {result.size} bytes  etag {result.etag}  sha256 {result.content_sha256}")
    return EXIT_OK


# --- rm ----------------------------------------------------------------------------------


async def _rm(store: ContainerClient, args: argparse.Namespace) -> int:
    if args.dry_run and not args.recursive:
        raise CommandError("--dry-run goes with -r (msd stat PATH shows the one object)")
    if args.whole_container and not args.recursive:
        raise CommandError("--whole-container goes with -r: msd rm -r --whole-container /")
    if not args.recursive:
        from ..errors import ObjectNotFoundError

        await _not_a_folder_path(store, args.path, "rm")
        try:
            await store.delete_object(args.path)
        except ObjectNotFoundError:
            raise await _no_object(store, args.path, "rm") from None
        return EXIT_OK
    return await _rm_tree(store, args)


async def _rm_tree(store: ContainerClient, args: argparse.Namespace) -> int:
    import anyio

    from ..errors import MediaStoreError, ObjectNotFoundError
    from ..rules import normalize_folder_path
    from ..transfer import TransferEvent, walk

    folder = normalize_folder_path(args.path)
    if folder and args.whole_container:
        raise CommandError(
            f"--whole-container deletes the root only, and {args.path!r} is a folder; "
            "nothing was deleted (drop --whole-container)"
        )
    if not folder and not args.whole_container and not args.dry_run:
        # "$DIR" unset, or "$DIR/": a script meant a folder and would empty the container.
        raise CommandError(
            f"PATH {args.path!r} is the whole container (an unset variable?); nothing was "
            "deleted. To delete every object in it: msd rm -r --whole-container /"
        )
    paths = sorted([obj.path async for obj in walk(store, folder)])
    if not paths:
        if folder:
            await _explain_empty(store, folder)
        return EXIT_OK
    if args.dry_run:
        if args.json:
            print(json.dumps({"deleted": paths, "failed": [], "dry_run": True}))
        else:
            for path in paths:
                print(f"would delete: {path}")
            print(f"would delete {len(paths)} objects")
        return EXIT_OK
    failed: list[tuple[str, MediaStoreError]] = []
    deleted: list[str] = []
    queue = iter(paths)
    limit: int = args.concurrency

    with TransferProgress(progress_enabled(args), "deleting") as bars:
        bars(TransferEvent("plan", files=len(paths), size=len(paths)))

        async def worker() -> None:
            for path in queue:
                try:
                    await store.delete_object(path)
                except ObjectNotFoundError:
                    pass  # already gone: the goal is reached
                except MediaStoreError as exc:
                    failed.append((path, exc))
                    continue
                deleted.append(path)
                bars(TransferEvent("done", path, "delete", size=1))

        async with anyio.create_task_group() as tg:
            for _ in range(min(limit, len(paths))):
                tg.start_soon(worker)
    for path, exc in sorted(failed, key=lambda f: f[0]):
        msg = " ".join(str(exc).split())
        print(f"msd rm: failed: {path}: {type(exc).__name__}: {msg}", file=sys.stderr)
    if args.json:
        print(json.dumps({"deleted": sorted(deleted), "failed": sorted(p for p, _ in failed)}))
    else:
        print(f"deleted {len(deleted)} objects" + (f", {len(failed)} failed" if failed else ""))
    return EXIT_FAILED if failed else EXIT_OK


# --- presign -----------------------------------------------------------------------------




async def _presign(store: ContainerClient, args: argparse.Namespace) -> int:
    if args.put:
        url = await store.presign_put(
            args.path, expires_in=args.expires_in, content_type=args.content_type
        )
    else:
        if args.content_type:
            raise CommandError("--content-type applies to --put URLs only")
        url = await store.presign_get(args.path, expires_in=args.expires_in)
    print(url)
    return EXIT_OK
