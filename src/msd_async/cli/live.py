"""``msd demo``: a synthetic low-latency live stream through the embedded local server."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from typing import TYPE_CHECKING, Any

from . import _common, _observe

if TYPE_CHECKING:
    import anyio

__all__ = ["register"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "demo",
        help="publish a live LL-HLS stream to a local server, follow it, and watch it",
        description="Start the embedded local MediaStore server, publish a live stream "
        "(several renditions, LL-HLS parts, chunked CMAF STREAMING uploads) with a few "
        "injected faults, while a reader follows each playlist and reads parts as they "
        "upload. Shows a live status view, then a summary table. With PyAV installed "
        "(msd-async[video]) the stream is real H.264 showing the wall clock, else synthetic "
        "CMAF-shaped chunks. --watch serves a player page (hls.js). Needs no ffmpeg.",
    )
    p.add_argument(
        "--duration", type=float, default=10.0, help="seconds of stream (10; 0: until Ctrl-C)"
    )
    p.add_argument("--renditions", type=int, default=3, help="renditions (3)")
    p.add_argument(
        "--fault-rate", type=float, default=0.03,
        help="share of requests the server fails on purpose (0.03)",
    )
    p.add_argument(
        "--segment-duration", type=float, default=None, help="seconds (2; 1 with --watch)"
    )
    p.add_argument(
        "--part-duration", type=float, default=None,
        help="LL part seconds (0.5; 0.2 with --watch; 0: no parts, standard HLS)",
    )
    p.add_argument("--seed", type=int, default=None, help="fault seed (random by default)")
    p.add_argument(
        "--no-live-view", action="store_true",
        help="no live status view (the default when stdout is not a terminal)",
    )
    p.add_argument(
        "--watch", action="store_true",
        help="serve a player page (hls.js) and print 'watch: URL' once the stream plays; "
        "needs real video (msd-async[video])",
    )
    p.add_argument(
        "--hlsjs", metavar="PATH",
        help="with --watch: a local hls.min.js for the page (default: hls.js "
        "from a public CDN, pinned with a Subresource Integrity hash)",
    )
    p.add_argument(
        "--ll-hls-blocking", action=argparse.BooleanOptionalAction, default=None,
        help="the embedded server holds playlist reloads until the next part is listed "
        "(LL-HLS blocking playlist reload, an extension MediaStore never had), and the "
        "playlists say CAN-BLOCK-RELOAD=YES (default: on with --watch, else off)",
    )
    p.add_argument(
        "--synthetic", action="store_true",
        help="publish synthetic chunks even when PyAV is installed",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    _observe.add_options(p)
    p.set_defaults(func=demo)


def demo(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``msd demo``: exit 0 when the stream was published and every named object was there."""
    if not 0 <= args.duration <= 3600:
        parser.error("--duration must be within 0..3600 seconds (0: until Ctrl-C)")
    if not 1 <= args.renditions <= 32:
        parser.error("--renditions must be 1-32")
    if not 0 <= args.fault_rate <= 0.5:
        parser.error("--fault-rate must be within 0..0.5")
    # --watch is for eyes: low-latency shapes unless told otherwise.
    if args.segment_duration is None:
        args.segment_duration = 1.0 if args.watch else 2.0
    if not 0 < args.segment_duration < math.inf:  # nan too: a stream needs segments
        parser.error("--segment-duration must be above 0 seconds")
    if args.part_duration is None:
        args.part_duration = min(args.segment_duration, 0.2 if args.watch else 0.5)
    if args.ll_hls_blocking is None:
        args.ll_hls_blocking = args.watch
    if not 0 <= args.part_duration <= args.segment_duration:
        parser.error("--part-duration must be 0 (no parts) to --segment-duration")
    from ..live.video import VIDEO_EXTRA, video_available

    if args.hlsjs is not None and not args.watch:
        parser.error("--hlsjs goes with --watch")
    if args.hlsjs is not None and not os.path.isfile(args.hlsjs):
        print(
            f"msd demo: --hlsjs {args.hlsjs!r} is not a file; give the path of an "
            "hls.min.js (npm's hls.js/dist/hls.min.js)",
            file=sys.stderr,
        )
        return 2
    args.video = not args.synthetic and video_available()
    if args.watch and not args.video:
        print(
            "msd demo: --watch plays real video, which needs PyAV: "
            f"pip install '{VIDEO_EXTRA}'" + (" (and drop --synthetic)" if args.synthetic else ""),
            file=sys.stderr,
        )
        return 2
    refused = _observe.check_options(args)
    if refused is not None:
        return refused
    _observe.configure_logging(args)
    import anyio

    async def demo() -> int:
        async with _common.stop_on_sigterm():
            # Cancelled when the reader of stdout goes away (`msd demo --log-format json |
            # head -1`): an endless demo would otherwise run on, unread.
            with anyio.CancelScope() as running:
                return await _demo(args, running)
            return 0

    try:
        return anyio.run(demo)
    except KeyboardInterrupt:
        _observe.print_line(args, "msd demo: interrupted", "interrupted", "error",
                            file=sys.stderr)
        return 130
    except _common.Terminated:
        _observe.print_line(args, "msd demo: stopped by SIGTERM", "stopped", "warning",
                            file=sys.stderr, signal="SIGTERM")
        return _common.EXIT_TERMINATED
    except BrokenPipeError as exc:
        if _common.stdout_gone():  # `msd demo | head -1`: the reader had what it wanted
            return 0
        _observe.print_line(args, f"msd demo: {exc}", "failed", "error", file=sys.stderr,
                            error=str(exc))
        return 1
    except Exception as exc:
        if args.debug:
            raise
        _observe.print_line(args, f"msd demo: {exc}", "failed", "error", file=sys.stderr,
                            error=str(exc))
        return 1


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


async def _demo(args: argparse.Namespace, running: anyio.CancelScope) -> int:
    import anyio
    from rich import box
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    from .. import Session
    from ..live import LivePublisher, PublishEvent
    from ..live.synthetic import PlaylistReader, RenditionReport, SyntheticStream
    from ..live.video import VideoStream
    from ..live.watch import PlayerPage, player_cors_policy
    from ..testing import FaultPlan, LocalMediaStore

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            # rich exits with status 1 here; the reader of stdout going away (`msd demo |
            # head -1`) is a quiet stop, as for the JSON lines.
            self.quiet = True
            if not _common.stdout_gone():
                raise BrokenPipeError("stdout is a pipe that broke")
            running.cancel()

    console = _Console() if sys.stdout.isatty() else _Console(width=140)
    as_json = _observe.wants_json(args)
    live_view = console.is_terminal and not args.no_live_view and not as_json
    faults = FaultPlan(
        rate=args.fault_rate,
        kinds={"500", "503", "throttle", "cut-upload"},
        seed=args.seed,
    )
    stream: SyntheticStream | VideoStream
    if args.video:
        stream = VideoStream(
            renditions=args.renditions,
            duration=args.duration,
            segment_duration=args.segment_duration,
            part_duration=args.part_duration or None,
            can_block_reload=args.ll_hls_blocking,
        )
    else:
        stream = SyntheticStream(
            renditions=args.renditions,
            duration=args.duration,
            segment_duration=args.segment_duration,
            part_duration=args.part_duration or None,
            chunk_duration=min(0.1, args.part_duration or 0.1),
            can_block_reload=args.ll_hls_blocking,
        )
    retries: dict[str, int] = {}

    def on_event(event: PublishEvent) -> None:
        observer.on_publish(event)  # the --metrics hooks, set below before publishing
        if as_json:
            try:
                _observe.print_publish_event(event)
            except BrokenPipeError:
                if not _common.stdout_gone():
                    raise
                running.cancel()  # stdout now goes to devnull: the rest prints nothing
        if event.kind == "retried":
            folder = event.path.split("/")[1] if event.path.count("/") >= 2 else "-"
            retries[folder] = retries.get(folder, 0) + 1

    reports: dict[str, RenditionReport] = {}
    readers: dict[str, PlaylistReader] = {}

    def table(title: str) -> Table:
        t = Table(
            title=title,
            caption="segs, parts: acknowledged/published; drop: segments given up; lists: "
            "playlist versions; pub: a segment's acknowledgement after its last chunk (ms); "
            "read: a chunk's production to its arrival at the reader (ms); retry: retried "
            "attempts; miss: named objects the reader could not GET",
            box=box.SIMPLE_HEAVY if console.is_terminal else box.ASCII,
        )
        for column in (
            "", "segs", "drop", "parts", "lists", "pub\np50", "pub\np99", "read\np50",
            "read\np99", "retry", "miss",
        ):
            t.add_column(
                column, justify="left" if not column else "right", no_wrap=True
            )
        for name in stream.names():
            report = reports.get(name)
            reader = readers.get(name)
            if report is None:
                report = RenditionReport(name)
            segs, parts = report.segments, report.parts
            segs.settle()
            parts.settle()
            chunk = reader.stats.chunk_latency if reader else None
            t.add_row(
                name,
                f"{segs.acknowledged}/{segs.published}",
                str(segs.given_up),
                f"{parts.acknowledged}/{parts.published}",
                str(report.playlists.published),
                _ms(segs.latency.percentile(0.5)),
                _ms(segs.latency.percentile(0.99)),
                _ms(chunk.percentile(0.5) if chunk else None),
                _ms(chunk.percentile(0.99) if chunk else None),
                str(retries.get(name, 0)),
                str(len(reader.stats.missing)) if reader else "0",
            )
        return t

    async with contextlib.AsyncExitStack() as stack:
        page = None
        server_options: dict[str, Any] = {}
        if args.watch:
            # The page has its own origin: it reads the stream as a browser reads a
            # container, unsigned (anonymous reads) and cross-origin (a CORS policy).
            page = await stack.enter_async_context(PlayerPage(hlsjs=args.hlsjs))
            server_options = {
                "allow_anonymous": ["read"],
                "cors_policy": player_cors_policy(page.origin),
            }
        server = await stack.enter_async_context(
            LocalMediaStore(
                faults=faults, ll_hls_blocking=args.ll_hls_blocking, **server_options
            )
        )
        session = await stack.enter_async_context(
            Session(credentials=server.credentials, region=server.region)
        )
        store = session.container(server.endpoint)
        observer = await stack.enter_async_context(
            _observe.observing(args, session=session, store=store, publisher=True)
        )
        if page is not None:
            page.source = f"{server.endpoint}/demo/master.m3u8"
        length = "endless" if stream.segments is None else f"{stream.segments}"
        if as_json:
            print(_observe.json_line(
                "start", endpoint=server.endpoint, renditions=args.renditions,
                segments=stream.segments, fault_rate=args.fault_rate,
            ), flush=True)
        else:
            console.print(
                f"msd demo: local server at {server.endpoint}; {args.renditions} renditions x "
                f"{length} segments of {args.segment_duration:g} s, "
                + (f"LL parts of {args.part_duration:g} s" if args.part_duration else "no LL parts")
                + f", {args.fault_rate:.0%} injected faults, "
                + ("H.264 video" if args.video else "synthetic chunks")
                + (", blocking playlist reload" if args.ll_hls_blocking else ""),
                highlight=False,
                soft_wrap=True,
            )
        for name in stream.names():
            reports[name] = RenditionReport(name)
            readers[name] = PlaylistReader(store, f"demo/{name}/index.m3u8")
        publisher = LivePublisher(store, prefix="demo", on_event=on_event)
        live: Any = (
            Live(table("live"), console=console, refresh_per_second=4, transient=True)
            if live_view else None
        )
        try:
            if live is not None:
                live.start()
            async with publisher, anyio.create_task_group() as tg:

                async def refresh() -> None:
                    while live is not None:
                        live.update(table(f"live: {publisher.stats().uptime:4.1f} s"))
                        await anyio.sleep(0.25)

                if live is not None:
                    tg.start_soon(refresh)
                if page is not None:
                    tg.start_soon(_announce, console, store, stream.names(), page.url)
                async with anyio.create_task_group() as following:
                    for reader in readers.values():
                        following.start_soon(reader.run)
                    await stream.run(publisher, reports=reports)
                    # The readers stop at ENDLIST; give them a bounded moment to get there.
                    following.cancel_scope.deadline = anyio.current_time() + max(
                        5.0, 2 * args.segment_duration
                    )
                tg.cancel_scope.cancel()
        finally:
            if live is not None:
                live.stop()
        stats = publisher.stats()
        missing = sum(len(r.stats.missing) for r in readers.values())
        hint_misses = sum(len(r.stats.hint_misses) for r in readers.values())
        while_uploading = sum(r.stats.read_while_uploading for r in readers.values())
        if as_json:
            print(_observe.json_line(
                "summary", "warning" if missing else "info", faults=faults.applied,
                retries=stats.retries, dropped=stats.dropped, missing=missing,
                hint_misses=hint_misses, read_while_uploading=while_uploading,
            ), flush=True)
        else:
            console.print(table("summary"))
            console.print(
                f"faults injected: {faults.applied}; retries: {stats.retries}; "
                f"dropped: {stats.dropped}; missing at reader: {missing}; hinted parts not "
                f"there yet: {hint_misses}; read while uploading: {while_uploading} parts"
            )
        if missing:
            names = ", ".join(sorted({m for r in readers.values() for m in r.stats.missing}))
            if as_json:
                print(_observe.json_line("missing", "error", error=f"named objects missing: "
                                         f"{names}"), flush=True)
            else:
                console.print(f"msd demo: a reader found a named object missing: {names}")
            return 1
    return 0


async def _announce(console: Any, store: Any, names: list[str], url: str) -> None:
    """Print ``watch: URL`` once the stream is playable: the multivariant playlist and at
    least two segments of every rendition stored (named by its stored playlist)."""
    import anyio

    from ..errors import MediaStoreError

    while True:
        try:
            await store.get_bytes("demo/master.m3u8")
            counts = [
                (await store.get_bytes(f"demo/{name}/index.m3u8")).count(b"#EXTINF")
                for name in names
            ]
        except MediaStoreError:
            counts = []
        if counts and min(counts) >= 2:
            break
        await anyio.sleep(0.1)
    console.print(f"watch: {url}", highlight=False, markup=False, soft_wrap=True)
    sys.stdout.flush()
