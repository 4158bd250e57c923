"""``msd demo`` as a user runs it: a subprocess, plain output (not a terminal)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "msd_async.cli", "demo", *args],
        capture_output=True, text=True, timeout=90, check=False,
    )


def test_demo_publishes_a_stream_and_prints_a_summary() -> None:
    result = run_demo("--duration", "3", "--renditions", "2", "--fault-rate", "0.05",
                      "--seed", "7")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "Traceback" not in out + result.stderr
    assert "msd demo: local server at http://127.0.0.1:" in out
    rows = {
        m.group(1): m.group(0)
        for m in re.finditer(r"^\| (r\d) .*\|$", out, re.MULTILINE)
    }
    assert set(rows) == {"r0", "r1"}
    for row in rows.values():
        cells = [c.strip() for c in row.strip("|").split("|")]
        acked, published = map(int, cells[1].split("/"))
        assert published == 2 and acked + int(cells[2]) == published
        assert cells[5] != "-" and cells[7] != "-"  # publish and reader latencies measured
        assert cells[10] == "0"  # no named object missing at the reader
    summary = re.search(r"faults injected: (\d+); retries: (\d+); dropped: (\d+); "
                        r"missing at reader: (\d+)", out)
    assert summary is not None and summary.group(4) == "0"
    assert int(summary.group(1)) > 0  # the faults really happened


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--duration", "-1"], "--duration"), (["--fault-rate", "2"], "--fault-rate"),
     # 0 stopped the demo with "float division by zero" (status 1); nan was blamed on
     # --part-duration.
     (["--segment-duration", "0"], "--segment-duration must be"),
     (["--segment-duration", "nan"], "--segment-duration must be"),
     (["--segment-duration", "inf"], "--segment-duration must be")],
)
def test_demo_refuses_bad_options_in_one_line(args: list[str], message: str) -> None:
    result = run_demo(*args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def _demo_process(*args: str, **popen: object) -> subprocess.Popen[str]:
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-m", "msd_async.cli", "demo", "--no-live-view", *args],
        text=True, **popen,
    )


def test_sigterm_stops_the_demo_with_one_line() -> None:
    """It had no SIGTERM handler: the process died where it stood (status -15), and a
    service manager could not tell a stop from a crash."""
    demo = _demo_process("--duration", "60", "--synthetic",
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert demo.stdout is not None
    assert demo.stdout.readline().startswith("msd demo: local server at")  # it runs
    demo.send_signal(signal.SIGTERM)
    out, err = demo.communicate(timeout=30)
    assert demo.returncode == 143, err
    assert err.strip().splitlines()[-1] == "msd demo: stopped by SIGTERM"
    assert "Traceback" not in out + err


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_reader_that_goes_away_stops_the_demo_quietly(log_format: str) -> None:
    """`msd demo --log-format json | head -1`: the publisher's event callback raised
    BrokenPipeError (a logged traceback per event), then the demo failed with status 1;
    an endless one would never have ended, its reader long gone."""
    args = ["--synthetic", "--log-format", log_format]
    # JSON writes an event per object, so the demo notices the reader's leaving while it
    # runs (endless here); the text form writes only at the start and the end.
    args += ["--duration", "0" if log_format == "json" else "4"]
    read, write = os.pipe()
    demo = _demo_process(*args, stdout=write, stderr=subprocess.PIPE)
    os.close(write)
    with os.fdopen(read, "rb") as reader:
        first = reader.readline()
    # The reader has gone, as `head -1` goes after its line.
    _, err = demo.communicate(timeout=60)
    assert first.strip()
    assert demo.returncode == 0, err
    assert "Traceback" not in err and "Broken pipe" not in err, err
