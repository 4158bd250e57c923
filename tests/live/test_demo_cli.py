"""``msd demo`` as a user runs it: a subprocess, plain output (not a terminal)."""

from __future__ import annotations

import re
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
    [(["--duration", "-1"], "--duration"), (["--fault-rate", "2"], "--fault-rate")],
)
def test_demo_refuses_bad_options_in_one_line(args: list[str], message: str) -> None:
    result = run_demo(*args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
