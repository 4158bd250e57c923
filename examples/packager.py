"""A packager integration: hand HLS/DASH output to msd_async's LivePublisher.

    python examples/packager.py DIR --endpoint URL [--prefix live]   # publish a folder
    python examples/packager.py --ffmpeg --endpoint URL [--duration 10]  # ffmpeg, live

The publisher owns what a packager integration would otherwise re-implement: content types
and cache lifetimes per kind, segments before the playlists naming them, retries with
per-kind deadlines, latest-wins playlists, sliding-window deletes and metrics (see
docs/live.md). Credentials come from the AWS chain (environment, profile); the region from
the endpoint or --region.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import anyio
import anyio.to_thread
import watchfiles

from msd_async import Session
from msd_async.live import LivePublisher, ObjectKind, Publication, infer_kind

MANIFESTS = (".m3u8", ".mpd")


def order(paths: list[Path]) -> list[Path]:
    """Media first (oldest first), then media playlists, then multivariant ones."""
    def rank(p: Path) -> tuple[int, float]:
        kind = infer_kind(p.name, p.read_bytes()[:4096] if p.suffix in MANIFESTS else None)
        return ({ObjectKind.MULTIVARIANT_PLAYLIST: 2}.get(kind, 1 if kind.is_manifest else 0),
                p.stat().st_mtime)
    return sorted(paths, key=rank)


def changed(root: Path, seen: dict[Path, tuple[int, int]]) -> list[Path]:
    """Whole files of ``root`` new or changed since ``seen``, in publishing order."""
    new = []
    for p in root.rglob("*"):
        if p.is_file() and p.suffix != ".tmp":
            stat = p.stat()  # mtime ticks coarsely: size tells quick rewrites apart
            if seen.get(p) != (stat.st_mtime_ns, stat.st_size):
                seen[p] = (stat.st_mtime_ns, stat.st_size)
                new.append(p)
    return order(new)


async def publish_new(publisher: LivePublisher, root: Path, seen: dict[Path, tuple[int, int]],
                      pubs: list[Publication]) -> None:
    for p in await anyio.to_thread.run_sync(changed, root, seen):
        pubs.append(await publisher.publish(p.relative_to(root).as_posix(), p))


async def failures(pubs: list[Publication]) -> int:
    outcomes = [await pub.wait() for pub in pubs]
    for o in outcomes:
        if not o.acknowledged:
            print(f"{o.path}: {o.status} ({o.reason})", file=sys.stderr)
    return sum(not outcome.acknowledged for outcome in outcomes)


async def publish_folder(publisher: LivePublisher, root: Path) -> int:
    pubs: list[Publication] = []
    await publish_new(publisher, root, {}, pubs)
    return await failures(pubs)


async def publish_ffmpeg(publisher: LivePublisher, duration: float) -> int:
    seen: dict[Path, tuple[int, int]] = {}
    pubs: list[Publication] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ffmpeg = await anyio.open_process([
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i",
            f"testsrc=duration={duration}:size=320x240:rate=25", "-filter_complex",
            "[0:v]split=2[a][b];[b]scale=160:120[c]", "-map", "[a]", "-map", "[c]",
            "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-b:v:0", "500k",
            "-b:v:1", "200k", "-f", "hls",  # bitrates: ffmpeg lists a variant only with one
            "-hls_time", "1", "-hls_list_size", "6", "-hls_segment_type", "fmp4",
            "-hls_flags", "temp_file+independent_segments",
            "-hls_segment_filename", f"{tmp}/v%v/seg_%03d.m4s", "-master_pl_name",
            "master.m3u8", "-var_stream_map", "v:0 v:1", f"{tmp}/v%v/index.m3u8",
        ])
        async with ffmpeg:
            # temp_file: ffmpeg writes "x.tmp" and renames it once whole, so a file without
            # ".tmp" is complete when the watcher reports it.
            stop = anyio.Event()
            async with anyio.create_task_group() as tg:
                async def watch() -> None:
                    async for _ in watchfiles.awatch(root, stop_event=stop, debounce=50,
                                                     step=10):
                        await publish_new(publisher, root, seen, pubs)
                tg.start_soon(watch)
                await ffmpeg.wait()
                stop.set()
        await publish_new(publisher, root, seen, pubs)  # the final playlists (ENDLIST)
        return await failures(pubs)


async def main(args: argparse.Namespace) -> int:
    async with Session(region=args.region) as session:
        store = session.container(args.endpoint)
        async with LivePublisher(store, prefix=args.prefix) as publisher:
            failed = (await publish_ffmpeg(publisher, args.duration) if args.ffmpeg
                      else await publish_folder(publisher, Path(args.dir)))
        stats = publisher.stats()
    for kind, k in stats.kinds.items():
        p99 = f"{k.latency_p99 * 1000:.1f} ms" if k.latency_p99 is not None else "-"
        print(f"{kind:>22}: {k.acknowledged}/{k.published} stored, p99 {p99}, "
              f"{k.retries} retries, {k.dropped} dropped")
    return 1 if failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", nargs="?", help="an HLS/DASH folder to publish")
    parser.add_argument("--ffmpeg", action="store_true", help="run ffmpeg and publish live")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--region")
    parser.add_argument("--prefix", default="live")
    args = parser.parse_args()
    if args.ffmpeg and not shutil.which("ffmpeg"):
        parser.error("--ffmpeg needs ffmpeg on PATH; try 'msd demo' for a stream without it")
    if not args.ffmpeg and not args.dir:
        parser.error("give a folder, or --ffmpeg")
    sys.exit(anyio.run(main, args))
