"""Relay overhead: what `msd relay` adds between ffmpeg and the origin.

One ffmpeg run feeds two identical HLS outputs through its ``tee`` muxer, so both get the
same packets at the same moments: one PUTs straight to the origin (anonymous writes
allowed for it), the other PUTs to ``msd relay``, which signs and publishes through the
LivePublisher. The origin (the local server, in this process) timestamps the end of every
PUT, so for each segment

    added latency = (relay copy stored) - (direct copy stored)

on one clock, paired segment by segment. The relay's CPU time (user + system, from
/proc) is divided by the megabytes it relayed.

Then the relay's memory under an origin stall: 50 simulated encoders each stream a 1 s
segment per second (``-re`` pacing, 10 pieces per segment) through one `msd relay` while
every origin PUT is held 3 s for a 3 s window. Recorded: the relay process's peak RSS
(VmHWM) over its RSS once started, and its own peak of body bytes held (the summary line's
"peak buffer"), with the default ``--max-buffer`` and with a small one.

    python benchmarks/bench_relay.py                      # 60 s of stream; writes results/relay.*
    python benchmarks/bench_relay.py --seconds 20 --no-write
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import re
import shlex
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from msd_async.credentials import Credentials
from msd_async.testing import LocalMediaStore

RESULTS = Path(__file__).parent / "results"
ACCESS = re.compile(r"^PUT /(direct|relay|raw)/(index\d+\.ts) 200 in=(\d+)")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class _Stored(logging.Handler):
    """The origin's access log: when each segment PUT finished, per path."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.done: dict[tuple[str, str], tuple[float, int]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        match = ACCESS.match(record.getMessage())
        if match:
            self.done[(match[1], match[2])] = (record.created, int(match[3]))


def cpu_seconds(pid: int) -> float:
    return sum(cpu_split(pid))


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def cpu_ns(pid: int) -> int:
    """CPU time of a process's live threads in ns, from the scheduler's own accounting
    (/proc/PID/task/*/schedstat): the tick-based figure above moves in 10 ms steps, which
    is 5% of a 30 s run's total."""
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        with contextlib.suppress(OSError):
            total += int(stat.read_text().split()[0])
    return total


def memory_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _relay_env(creds: Credentials, region: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MSD_"))}
    env.update(
        AWS_ACCESS_KEY_ID=creds.access_key_id,
        AWS_SECRET_ACCESS_KEY=creds.secret_access_key,
        AWS_REGION=region,
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
    )
    return env


async def _encoder(port: int, n: int, segments: int, size: int, pieces: int) -> int:
    """One encoder on a persistent connection: a segment per second, sent in ``pieces``
    paced pieces; returns how many were answered 2xx."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    ok = 0
    piece = bytes([n % 256]) * (size // pieces)
    loop = asyncio.get_running_loop()
    try:
        for seg in range(segments):
            start = loop.time()
            writer.write(f"PUT /e{n}/seg{seg}.ts HTTP/1.1\r\nHost: relay\r\n"
                         f"Content-Length: {len(piece) * pieces}\r\n\r\n".encode())
            for i in range(pieces):
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(max(0.0, start + (i + 1) / pieces - loop.time()))
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"content-length: (\d+)", head, re.I)
            if length and int(length[1]):
                await reader.readexactly(int(length[1]))
            ok += head.startswith((b"HTTP/1.1 204", b"HTTP/1.1 202"))
    finally:
        writer.close()
        await writer.wait_closed()
    return ok


async def run_stall(
    encoders: int, stall: float, segment_bytes: int, segments: int, max_buffer: str | None
) -> dict[str, object]:
    """Peak memory of `msd relay` with ``encoders`` encoders behind an origin that holds
    every PUT ``stall`` seconds during a ``stall``-second window."""
    creds = Credentials("AKIDBENCHRELAY000000", "bench-relay-secret-000000000000000000000")
    async with LocalMediaStore(credentials=creds, fsync=False) as server:
        extra = ["--max-buffer", max_buffer] if max_buffer else []
        relay = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "msd_async.cli", "relay", "--endpoint", server.endpoint,
            "--listen", "127.0.0.1:0", "--media-deadline", "30", "--shutdown-timeout", "30",
            *extra, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=_relay_env(creds, server.region),
        )
        assert relay.stdout is not None and relay.stderr is not None
        line = (await relay.stdout.readline()).decode()
        port = int(line.rsplit(":", 1)[1])
        await asyncio.sleep(0.5)
        rss_start = memory_kb(relay.pid, "VmRSS")

        async def outage() -> None:
            await asyncio.sleep(1.5)
            server.faults.inject("delay", times=None, method="PUT", delay=stall)
            await asyncio.sleep(stall)
            server.faults.clear()

        stalling = asyncio.create_task(outage())
        answered = await asyncio.gather(
            *(_encoder(port, n, segments, segment_bytes, 10) for n in range(encoders))
        )
        await stalling
        await asyncio.sleep(stall + 1)  # the last held PUTs complete
        peak = memory_kb(relay.pid, "VmHWM")
        relay.send_signal(signal.SIGTERM)
        _, err = await relay.communicate()
    lines = err.decode().splitlines()
    summary = next((ln for ln in lines if "summary:" in ln), "\n".join(lines[-5:]))
    causes = [ln.split("msd relay: ", 1)[1] for ln in lines if " failed: " in ln
              and ln.startswith("msd relay: ")]
    buffered = re.search(r"peak buffer ([\d.]+) MB", summary)
    return {
        "encoders": encoders,
        "stall_s": stall,
        "segment_bytes": segment_bytes,
        "segments_per_encoder": segments,
        "segments_sent": encoders * segments,
        "max_buffer": max_buffer or "default (64M)",
        "answered": sum(answered),
        "relay_rss_start_mb": rss_start / 1024,
        "relay_rss_peak_mb": peak / 1024,
        "relay_rss_growth_mb": (peak - rss_start) / 1024,
        "relay_peak_buffer_mb": float(buffered[1]) if buffered else None,
        "exit_status": relay.returncode,
        "summary": summary,
        "failure_causes": causes,
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))]


async def run(seconds: int, size: str, bitrate: str, floor: bool = False) -> dict[str, object]:
    stored = _Stored()
    access = logging.getLogger("msd_async.testing.access")
    access.propagate = False
    access.setLevel(logging.INFO)
    access.addHandler(stored)
    creds = Credentials("AKIDBENCHRELAY000000", "bench-relay-secret-000000000000000000000")
    async with LocalMediaStore(
        credentials=creds, allow_anonymous=["read", "write"], fsync=False
    ) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MSD_"))}
        env.update(
            AWS_ACCESS_KEY_ID=creds.access_key_id,
            AWS_SECRET_ACCESS_KEY=creds.secret_access_key,
            AWS_REGION=server.region,
            AWS_CONFIG_FILE=os.devnull,
            AWS_SHARED_CREDENTIALS_FILE=os.devnull,
            AWS_EC2_METADATA_DISABLED="true",
        )
        relay = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "msd_async.cli", "relay", "--endpoint", server.endpoint,
            "--listen", "127.0.0.1:0", stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL, env=env,
        )
        assert relay.stdout is not None
        line = (await relay.stdout.readline()).decode()
        url = line.split("relay: ", 1)[1].strip()
        cpu_start = cpu_seconds(relay.pid)
        sys_start = cpu_split(relay.pid)[1]
        ns_start = cpu_ns(relay.pid)
        hls = "f=hls:hls_time=1:hls_list_size=0:method=PUT:http_persistent=1"
        outputs = f"[{hls}]{server.endpoint}/direct/index.m3u8|[{hls}]{url}/relay/index.m3u8"
        raw = None
        if floor:
            raw = await asyncio.create_subprocess_exec(
                sys.executable, str(Path(__file__).parent / "_raw_relay.py"), server.endpoint,
                stdout=asyncio.subprocess.PIPE, env=env,
            )
            assert raw.stdout is not None
            raw_url = (await raw.stdout.readline()).decode().split("raw relay: ", 1)[1].strip()
            # Last in the tee, so the direct and relayed outputs are written as without it.
            outputs += f"|[{hls}]{raw_url}/raw/index.m3u8"
            raw_ns_start = cpu_ns(raw.pid)
        ffmpeg = [
            "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-re",
            "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25", "-t", str(seconds),
            "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
            "-b:v", bitrate, "-maxrate", bitrate, "-bufsize", bitrate,
            "-g", "25", "-keyint_min", "25", "-sc_threshold", "0", "-map", "0:v", "-f", "tee",
            outputs,
        ]
        process = await asyncio.create_subprocess_exec(*ffmpeg, stderr=asyncio.subprocess.PIPE)
        _, err = await process.communicate()
        if process.returncode:
            raise SystemExit(f"ffmpeg failed: {err.decode()}")
        # Let the relay finish what it has, then read its CPU before it stops.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            names = {n for d, n in stored.done if d == "direct"}
            sides = ("relay", "raw") if floor else ("relay",)
            if names and all((side, n) in stored.done for n in names for side in sides):
                break
            await asyncio.sleep(0.1)
        cpu = cpu_seconds(relay.pid) - cpu_start
        system = cpu_split(relay.pid)[1] - sys_start
        ns = cpu_ns(relay.pid) - ns_start
        relay.send_signal(signal.SIGTERM)
        await relay.wait()
        assert relay.returncode == 0, relay.returncode
        if raw is not None:
            raw_ns = cpu_ns(raw.pid) - raw_ns_start
            raw.send_signal(signal.SIGTERM)
            await raw.wait()

    added: list[float] = []
    relayed = 0
    for (side, name), (when, size_in) in sorted(stored.done.items()):
        if side != "direct":
            continue
        other = stored.done.get(("relay", name))
        if other is None:
            raise SystemExit(f"the relay never stored {name}")
        added.append((other[0] - when) * 1000)
        relayed += size_in
    return {
        "segments": len(added),
        "mb_relayed": relayed / 1e6,
        "added_latency_ms": {
            "p50": percentile(added, 0.5),
            "p99": percentile(added, 0.99),
            "mean": statistics.fmean(added),
            "min": min(added),
            "max": max(added),
        },
        "relay_cpu_s": cpu,
        "relay_cpu_ms_per_mb": cpu * 1000 / (relayed / 1e6),
        "relay_cpu_schedstat_ms_per_mb": ns / 1e6 / (relayed / 1e6),
        # The kernel's share: reading from ffmpeg's socket, writing into the origin's.
        "relay_system_ms_per_mb": system * 1000 / (relayed / 1e6),
        **(_floor(stored, raw_ns) if floor else {}),
    }


def _floor(stored: _Stored, raw_ns: int) -> dict[str, object]:
    """The bare aiohttp relay's CPU per MB in the same run (``--floor``)."""
    raw_bytes = sum(size for (side, _), (_, size) in stored.done.items() if side == "raw")
    return {
        "floor_mb_relayed": raw_bytes / 1e6,
        "floor_cpu_schedstat_ms_per_mb": raw_ns / 1e6 / (raw_bytes / 1e6),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60, help="stream length (default 60)")
    parser.add_argument("--size", default="1280x720", help="video size (default 1280x720)")
    parser.add_argument("--bitrate", default="3M", help="video bitrate (default 3M)")
    parser.add_argument("--note", default="", help="recorded with the results")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--encoders", type=int, default=50, help="for the stall (default 50)")
    parser.add_argument("--stall", type=float, default=3.0, help="origin stall, s (default 3)")
    parser.add_argument(
        "--floor", action="store_true",
        help="also relay the stream through a bare aiohttp relay (_raw_relay.py) and report "
        "its CPU per MB; writes results/relay-floor.* instead of relay.*",
    )
    args = parser.parse_args()
    load_before = os.getloadavg()
    result = asyncio.run(run(args.seconds, args.size, args.bitrate, args.floor))
    if args.floor:
        _write_floor(args, load_before, result)
        return
    segment = 375_000  # 1 s of a 3 Mb/s stream
    stalls = [
        asyncio.run(run_stall(args.encoders, args.stall, segment, 8, budget))
        for budget in (None, "16M")
    ]
    result["stall"] = stalls
    meta = _meta(args, load_before)
    if not _write_json({**meta, **result}, "relay", args):
        return
    lat = result["added_latency_ms"]
    assert isinstance(lat, dict)
    md = f"""# Relay overhead (`msd relay`)

Command: `{meta["command"]}`
Date: {meta["date"]}; Python {meta["python"]}; {meta["machine"]}; load average (1/5/15 min)
{meta["load_average_before"]} before and {meta["load_average_1_5_15"]} after the run — a
shared machine, busy with other work during the run.
{("Note: " + args.note) if args.note else ""}

One ffmpeg feeds two identical HLS outputs (tee muxer, {args.size}, {args.bitrate}b/s,
1 s segments, `-re`): straight to the origin, and through `msd relay` (SigV4-signed,
STREAMING uploads through the LivePublisher). Added latency = when the origin stored the
relayed copy of a segment minus when it stored the direct copy, paired per segment, on the
origin's clock. It can be negative: the tee muxer writes its outputs one after the other and
the two uploads then race, so the direct copy is sometimes stored last. Relay CPU is read
from /proc with the kernel's 10 ms tick granularity.

| measure | value |
|---|---|
| segments | {result["segments"]} |
| MB relayed | {result["mb_relayed"]:.1f} |
| added latency p50 | {lat["p50"]:.1f} ms |
| added latency p99 | {lat["p99"]:.1f} ms |
| added latency mean / min / max | {lat["mean"]:.1f} / {lat["min"]:.1f} / {lat["max"]:.1f} ms |
| relay CPU (user + system) | {result["relay_cpu_s"]:.2f} s |
| relay CPU per MB | {result["relay_cpu_ms_per_mb"]:.1f} ms |
| relay CPU per MB (schedstat, ns resolution) | {result["relay_cpu_schedstat_ms_per_mb"]:.2f} ms |
| of it system time (kernel: sockets, epoll) | {result["relay_system_ms_per_mb"]:.1f} ms |

## Memory behind a stalled origin

{args.encoders} simulated encoders, each a 1 s segment of {segment:,} B per second
(3 Mb/s, sent in 10 paced pieces) for 8 s on one persistent connection, into one
`msd relay --media-deadline 30`; 1.5 s in, every origin PUT is held {args.stall:g} s for
{args.stall:g} s. Peak RSS is the relay process's VmHWM; "peak buffer" is the relay's own
count of body bytes held (received, not yet acknowledged), bounded by `--max-buffer`
(64M = 64 MiB = 67.1 MB). The rest of the growth is socket buffers, the publisher's
per-request state and the allocator. (Issue 16 reported 172 MB for 50 encoders behind a
3 s stall before the budget existed, in its own scenario; that is not re-measured here.)

| --max-buffer | RSS at start | peak RSS | growth | peak buffer | segments answered | exit |
|---|---|---|---|---|---|---|
""" + "".join(
        f"| {r['max_buffer']} | {r['relay_rss_start_mb']:.0f} MB | "
        f"{r['relay_rss_peak_mb']:.0f} MB | {r['relay_rss_growth_mb']:.0f} MB | "
        f"{r['relay_peak_buffer_mb']} MB | {r['answered']} / "
        f"{r['segments_sent']} | {r['exit_status']} |\n"
        for r in stalls
    )
    (RESULTS / "relay.md").write_text(md)


def _meta(args: argparse.Namespace, load_before: tuple[float, float, float]) -> dict[str, Any]:
    """What a result file records of its run: the command, the machine, the load."""
    command = "python benchmarks/bench_relay.py " + shlex.join(sys.argv[1:])
    return {
        "command": command.strip(),
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "load_average_before": [round(x, 2) for x in load_before],
        "note": args.note,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def _write_json(report: dict[str, Any], name: str, args: argparse.Namespace) -> bool:
    """Print ``report``; unless ``--no-write``, keep it as results/NAME.json. Whether it
    was kept (the caller then writes the Markdown beside it)."""
    print(json.dumps(report, indent=2))
    if args.no_write:
        return False
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    return True


def _write_floor(
    args: argparse.Namespace, load_before: tuple[float, float, float], result: dict[str, object]
) -> None:
    report = {**_meta(args, load_before), **result}
    if not _write_json(report, "relay-floor", args):
        return
    lat = result["added_latency_ms"]
    assert isinstance(lat, dict)
    md = f"""# Relay CPU against its floor (`bench_relay.py --floor`)

Command: `{report["command"]}`
Date: {report["date"]}; Python {report["python"]}; {report["machine"]}; load average
(1/5/15 min) {report["load_average_before"]} before and {report["load_average_1_5_15"]} after.
{("Note: " + args.note) if args.note else ""}

The scenario of [relay.md](relay.md) with a third output on the same ffmpeg `tee` (last,
so the direct and relayed copies are written as without it): the same segments and
playlists through `benchmarks/_raw_relay.py`, a bare aiohttp relay (an `aiohttp.web`
server streaming each PUT's body as it arrives to the origin through an
`aiohttp.ClientSession`; no signing, no publisher, no playlist handling, no retries, no
logging). Both processes' CPU from `/proc/PID/task/*/schedstat` over the same stream.

| measure | `msd relay` | bare aiohttp relay |
|---|---:|---:|
| MB relayed | {result["mb_relayed"]:.1f} | {result["floor_mb_relayed"]:.1f} |
| CPU per MB (schedstat) | {result["relay_cpu_schedstat_ms_per_mb"]:.2f} ms \
| {result["floor_cpu_schedstat_ms_per_mb"]:.2f} ms |

Added latency of `msd relay` in this run (three outputs, so not the scenario's measure):
p50 {lat["p50"]:.1f} ms, p99 {lat["p99"]:.1f} ms.
"""
    (RESULTS / "relay-floor.md").write_text(md)


if __name__ == "__main__":
    main()
