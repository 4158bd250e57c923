"""``msd serve``: prints its endpoint and keys, logs requests, stops on signals, binds safely."""

from __future__ import annotations

import signal
import subprocess
import sys
import urllib.request

import pytest
from serve_process import start_serve

from msd_async.cli import main


def test_serve_prints_endpoint_logs_and_stops_on_sigterm() -> None:
    # Reads the raw output itself (not tests/support/serve_process.py): that output is what
    # this test checks.
    proc = subprocess.Popen(
        [sys.executable, "-m", "msd_async.cli", "serve", "--allow-anonymous", "read"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("endpoint: "):
                break
        assert any("AKIDLOCALMEDIASTORE" in line for line in lines)
        endpoint = lines[-1].split(" ", 1)[1].strip()
        assert endpoint.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(f"{endpoint}/?Path=x", timeout=10) as resp:
            assert resp.status == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert proc.stderr is not None
        log = proc.stderr.read()
        assert "GET /?Path=x 200" in log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_sigint_exits_cleanly() -> None:
    serve = start_serve("--quiet")
    assert serve.stop(signal.SIGINT, timeout=10) == 0


def test_non_loopback_bind_refused_without_credentials(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["serve", "--host", "0.0.0.0"])
    assert info.value.code == 2
    assert "refusing" in capsys.readouterr().err


def test_half_credentials_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--access-key-id", "AK"])
    assert "go together" in capsys.readouterr().err


def test_bad_fault_kind_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--fault-kinds", "explode"])
    assert "unknown fault kinds" in capsys.readouterr().err
