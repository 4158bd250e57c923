"""Drive the installed ``msd`` entry point as a subprocess against ``msd serve``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

#: The console script pip installed next to this interpreter: the real entry point.
MSD = str(Path(sys.executable).with_name("msd"))


class Server:
    """A running ``msd serve`` and the environment its output tells a client to use."""

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


def start_server(*extra: str, log: Path | None = None) -> Server:
    """``msd serve``; with ``log``, its request log goes to that file (else it is quiet)."""
    log_file = open(log, "w") if log is not None else None  # noqa: SIM115 - closed below
    try:
        process = subprocess.Popen(
            [MSD, "serve", "--no-fsync", *(() if log else ("--quiet",)), *extra],
            stdout=subprocess.PIPE,
            stderr=log_file if log_file is not None else subprocess.DEVNULL,
            text=True,
        )
    finally:
        if log_file is not None:
            log_file.close()  # the child has its own descriptor
    assert process.stdout is not None
    lines: list[str] = []
    while True:
        line = process.stdout.readline()
        if not line:
            process.kill()
            process.wait()
            raise RuntimeError(f"msd serve exited early: {lines}")
        lines.append(line.rstrip("\n"))
        if line.startswith("export "):
            return Server(process, lines)


def stop_server(server: Server) -> None:
    server.process.send_signal(signal.SIGINT)
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
    assert server.process.stdout is not None
    server.process.stdout.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    """A factory: ``serve("--fault-rate", "0.2")`` starts a server, stopped after the test."""
    started: list[Server] = []

    def factory(*extra: str, log: Path | None = None) -> Server:
        server = start_server(*extra, log=log)
        started.append(server)
        return server

    yield factory
    for server in started:
        stop_server(server)


@pytest.fixture
def server(serve: Callable[..., Server]) -> Server:
    return serve()
