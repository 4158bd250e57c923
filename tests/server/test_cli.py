"""``msd serve``: prints its endpoint and keys, logs requests, stops on signals, binds safely."""

from __future__ import annotations

import os
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


def test_every_interface_prints_urls_that_can_be_pasted() -> None:
    """``--host ""`` listens on every interface and printed ``endpoint: http://:PORT``, a
    URL nothing can open (``--metrics 0.0.0.0:0``: ``http://0.0.0.0:PORT``, which
    browsers refuse). Both print the loopback, which every interface includes, and say
    they listen on every interface."""
    serve = start_serve("--host", "", "--access-key-id", "AK", "--secret-access-key", "SK",
                        "--allow-anonymous", "read", "--metrics", "0.0.0.0:0")
    try:
        assert serve.endpoint.startswith("http://127.0.0.1:"), serve.lines
        assert serve.exports["MSD_ENDPOINT"] == serve.endpoint
        with urllib.request.urlopen(f"{serve.endpoint}/?Path=x", timeout=10) as resp:
            assert resp.status == 200
        metrics = next(x for x in serve.lines if x.startswith("metrics: "))[len("metrics: "):]
        assert metrics.startswith("http://127.0.0.1:"), serve.lines
        with urllib.request.urlopen(metrics, timeout=10) as resp:
            assert resp.status == 200
        port = serve.endpoint.rsplit(":", 1)[1]
        metrics_port = metrics.rsplit(":", 1)[1].split("/")[0]
        said = [x for x in serve.lines if x.startswith("listening: every interface")]
        assert len(said) == 2, serve.lines
        assert any(f"port {port}" in x for x in said) and any(
            f"port {metrics_port}" in x and "--metrics" in x for x in said
        ), said
    finally:
        assert serve.stop(timeout=10) == 0


def test_every_interface_and_metrics_on_its_port_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--host ""`` is every interface, as 0.0.0.0 is: --metrics on its port cannot bind
    once the server has, which was found only then, as 'address already in use'."""
    with pytest.raises(SystemExit) as info:
        main(["serve", "--host", "", "--access-key-id", "AK", "--secret-access-key", "SK",
              "--port", "9464", "--metrics", "127.0.0.1:9464"])
    assert info.value.code == 2
    assert "the same address" in capsys.readouterr().err


def test_half_credentials_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--access-key-id", "AK"])
    assert "go together" in capsys.readouterr().err


def test_bad_fault_kind_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--fault-kinds", "explode"])
    assert "unknown fault kinds" in capsys.readouterr().err


def _serve(*args: str, stdout: int = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "msd_async.cli", "serve", *args],
        stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=60, check=False,
    )


@pytest.mark.parametrize("port", ["70000", "-1"])
def test_a_port_out_of_range_is_a_usage_error(port: str) -> None:
    result = _serve("--port", port)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith(f"--port must be 0-65535, not {port}")


def test_a_busy_port_is_one_line_saying_what_to_do() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for args, option in ((["--port", str(port)], "--port"),
                             (["--metrics", f"127.0.0.1:{port}"], "--metrics")):
            result = _serve(*args)
            assert result.returncode == 1, result.stderr
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1, result.stderr
            assert lines[0].startswith(f"msd serve: {option} ") and "[Errno" not in lines[0]
            assert "address already in use" in lines[0] and "another" in lines[0], lines[0]


def test_same_address_for_the_server_and_metrics_is_a_usage_error() -> None:
    result = _serve("--port", "9464", "--metrics", "127.0.0.1:9464")
    assert result.returncode == 2, result.stderr
    assert "the same address" in result.stderr


def test_a_reader_that_went_away_costs_no_traceback() -> None:
    """``msd serve | true``: the reader of stdout is gone before the first line; the server
    stops quietly, as the client commands do (docs/cli.md)."""
    reader, writer = os.pipe()
    os.close(reader)
    try:
        result = _serve(stdout=writer)
    finally:
        os.close(writer)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--send-time-limit", "-1"], "--send-time-limit must be 0 (no limit) or more, not -1"),
        (["--send-time-limit", "nan"], "--send-time-limit must be 0 (no limit) or more, not nan"),
        (["--idle-time-limit", "0"], "--idle-time-limit must be more than 0, not 0"),
        # These were taken: a server that refused every upload, or timed none out.
        (["--standard-limit", "0"], "--standard-limit must be a whole number of bytes, 1 or "
                                    "more, not 0"),
        (["--streaming-limit", "-5"], "--streaming-limit must be a whole number of bytes, 1 "
                                      "or more, not -5"),
        (["--upload-time-limit", "nan"], "--upload-time-limit must be a number of seconds "
                                         "above 0, not nan"),
        (["--region", "x y"], "--region 'x y' is not a region name such as 'us-east-1'"),
        # Taken: every request with a MediaStore-style Host was a 404 ContainerNotFound.
        (["--container", ""], "--container '' is not a container name: 1 to 255 letters, "
                              "digits, '_' or '-' (the service's rule), such as 'local'"),
        (["--fault-delay", "nan"], "--fault-delay must be a number of seconds, 0 or more, "
                                   "not nan"),
    ],
)
def test_a_time_limit_out_of_range_is_named_by_its_option(
    args: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The server's own words named its Python parameter ("send_time_limit must be
    positive or None"): no option is spelled so, and None cannot be given on a command
    line (0 is "no limit" there)."""
    with pytest.raises(SystemExit) as info:
        main(["serve", *args])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(says)


def test_a_refused_serve_leaves_the_process_logging_as_it_found_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An option refused once the server is built (here --standard-limit 0) is a usage
    error; the command had already configured logging by then: the root logger bound to
    that moment's sys.stderr for good (basicConfig), and the access log at INFO. Run
    in-process, as these tests do, every later test's server logged into a closed stream
    ("--- Logging error ---" with a stack for each request, from the server's thread)."""
    import logging

    root, access = logging.getLogger(), logging.getLogger("msd_async.testing.access")
    before = (list(root.handlers), list(access.handlers), access.level, access.propagate)
    with pytest.raises(SystemExit) as info:
        main(["serve", "--standard-limit", "0"])
    assert info.value.code == 2
    assert "--standard-limit" in capsys.readouterr().err
    assert (list(root.handlers), list(access.handlers), access.level, access.propagate) == before
