"""``msd serve`` as a child process, for tests that drive the server (or other ``msd``
commands) from outside the test's own process: signals, ``kill -9``, the printed output.

``start_serve(*args)`` runs the console script pip installed next to this interpreter (the
real entry point) and returns once the server printed its ``export ...`` line, i.e. once it
accepts connections. ``ServeProcess.stop()`` is safe on every exit path: it signals a
running server, kills it after ``timeout`` seconds and closes the pipe. Tests inside the
event loop use the ``mediastore_server`` fixture instead; tests/ingest keeps its own asyncio
harness because it supervises ``msd relay``/``msd push`` and ffmpeg the same way.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO

__all__ = ["MSD", "ServeProcess", "one_line_error", "start_serve"]

#: The console script pip installed next to this interpreter: the real entry point.
MSD = str(Path(sys.executable).with_name("msd"))


class ServeProcess:
    """A running ``msd serve``: ``lines`` it printed on stdout up to and including the
    ``export`` line, its ``endpoint``, the ``exports`` it tells a client to set, and ``env``,
    this process's environment without any AWS_/MSD_ variable or shared config file, plus
    those exports."""

    def __init__(self, process: subprocess.Popen[str], lines: list[str]) -> None:
        self.process = process
        self.lines = lines
        self.endpoint = next(x for x in lines if x.startswith("endpoint: "))[len("endpoint: ") :]
        export = next(x for x in lines if x.startswith("export "))
        self.exports = dict(item.split("=", 1) for item in export[len("export ") :].split())
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MSD_"))}
        # No shared config or credentials files of the machine: the test's variables only.
        env["AWS_CONFIG_FILE"] = env["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
        env["AWS_EC2_METADATA_DISABLED"] = "true"
        env.update(self.exports)
        self.env = env

    def run(
        self, *args: str, env: dict[str, str] | None = None, input: bytes | None = None,
        cwd: Path | None = None, timeout: float = 240,
    ) -> subprocess.CompletedProcess[str]:
        """``msd ARGS`` with this server's environment (``env`` overrides it)."""
        raw = subprocess.run(
            [MSD, *args],
            env={**self.env, **(env or {})},
            input=input,
            capture_output=True,
            cwd=cwd,
            timeout=timeout,
            check=False,
        )
        return subprocess.CompletedProcess(
            raw.args, raw.returncode, raw.stdout.decode(errors="replace"),
            raw.stderr.decode(errors="replace"),
        )

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> int:
        """Send ``sig`` if it still runs, wait up to ``timeout`` s (then SIGKILL), close
        stdout; returns the exit code (negative: killed by that signal)."""
        process = self.process
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        assert process.stdout is not None
        process.stdout.close()
        return process.returncode


def start_serve(*args: str, stderr: int | IO[str] | None = subprocess.DEVNULL) -> ServeProcess:
    """``msd serve ARGS``; returns once it printed its ``export`` line. ``stderr`` (the
    request log) defaults to DEVNULL; pass a file or ``subprocess.PIPE`` to read it.
    Raises ``RuntimeError`` with what it printed if it exits before that."""
    process = subprocess.Popen(
        [MSD, "serve", *args], stdout=subprocess.PIPE, stderr=stderr, text=True
    )
    assert process.stdout is not None
    lines: list[str] = []
    while True:
        line = process.stdout.readline()
        if not line:
            process.kill()
            process.wait()
            process.stdout.close()
            raise RuntimeError(f"msd serve exited early: {lines}")
        lines.append(line.rstrip("\n"))
        if line.startswith("export "):
            return ServeProcess(process, lines)


def one_line_error(result: subprocess.CompletedProcess[str], command: str) -> str:
    """The failure of ``msd COMMAND``: exit status 1 and exactly one line on stderr, no
    traceback; returns that line."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith(f"msd {command}: ")
    return lines[0]


#: The environment of an ``msd`` command sent to a scripted server (which checks no keys).
SCRIPTED_ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MSD_"))},
    "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "secret",
    "AWS_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
