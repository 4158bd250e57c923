"""examples/scale_out.py runs as documented: four shard workers, each file uploaded once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "scale_out.py"


def test_scale_out_example() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=180, check=False
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    uploaded = [int(line.split()[3]) for line in lines if line.startswith("worker ")]
    assert len(uploaded) == 4 and sum(uploaded) == 120
    assert "120 objects stored, each by exactly one worker" in lines
    assert lines[-1] == "second round uploads: 0"
