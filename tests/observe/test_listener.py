"""The listening address of the long-running commands (``--metrics``, ``msd serve --host``,
``msd relay --listen``; msd_async/_listen.py): every address of the name on one port,
which is the one printed (port 0 included), and nothing left open when that cannot be had.

asyncio's ``create_server`` binds each address of a name to a port of its own when the
port is 0 (``localhost`` on a dual-stack host: ``::1`` and ``127.0.0.1``), and the port
printed was whichever socket came first in a set. These tests listen on loopback IPv4
only: a name's addresses are played by loopback aliases (127.0.0.1 and 127.0.0.2, both
the machine itself on Linux), or by 127.0.0.1 twice, whose port is then always taken.

Then what /readyz says on the operators' worst paths: an origin that stops answering, a
container that is gone, a relay told to stop (and /metrics scraped while it drains)."""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import errno
import logging
import os
import signal
import socket
import threading
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from ingest_harness import Proc, aws_env, msd
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from scripted_server import Connection, response, scripted_server

from msd_async import ContainerNotFoundError, ObjectNotFoundError, ServiceError, Session, _listen
from msd_async.cli import _observe
from msd_async.cli import serve as serve_command
from msd_async.ingest import Relay
from msd_async.live import LivePublisher
from msd_async.live.watch import PlayerPage
from msd_async.prometheus import server_hook
from msd_async.testing import LocalMediaStore

pytestmark = pytest.mark.anyio

LOOPBACK = (socket.AF_INET, ("127.0.0.1", 0))


async def test_port_0_is_printed_as_the_port_it_listens_on(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = argparse.Namespace(metrics="127.0.0.1:0", command="relay")
    async with _observe.observing(args) as observer:
        printed = capsys.readouterr().out
        assert printed == f"metrics: {observer.url}\n"
        assert observer.url is not None and not observer.url.endswith(":0/metrics")
        async with aiohttp.ClientSession() as http, http.get(
            observer.url.replace("/metrics", "/healthz")
        ) as response:
            assert (response.status, await response.text()) == (200, "ok\n")


def test_every_address_of_a_name_gets_the_same_port() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        # Port 0 on two addresses, the second of which refuses every port the first
        # chooses: after its tries, the refusal, and no socket of the tries left open
        # (pytest turns a ResourceWarning into an error).
        with pytest.raises(OSError) as refused:
            _listen.bind_all([LOOPBACK, LOOPBACK], 0)
        assert refused.value.errno == errno.EADDRINUSE
        # A fixed port taken on one address is refused at once.
        with pytest.raises(OSError) as at_once:
            _listen.bind_all([LOOPBACK], taken.getsockname()[1])
        assert at_once.value.errno == errno.EADDRINUSE
    finally:
        taken.close()
    (one,) = _listen.bind_all([LOOPBACK], 0)
    try:
        assert one.getsockname()[1] != 0
        client = socket.create_connection(one.getsockname(), timeout=5)
        client.close()  # it listens already: the port is held, not just bound
    finally:
        one.close()


#: Two addresses of this machine, as ``::1`` and ``127.0.0.1`` are on a dual-stack host.
ALIASES = ("127.0.0.1", "127.0.0.2")


def test_every_address_gets_one_free_port() -> None:
    sockets = _listen.bind_all([(socket.AF_INET, (alias, 0)) for alias in ALIASES], 0)
    try:
        assert [sock.getsockname()[0] for sock in sockets] == list(ALIASES)
        (port,) = {sock.getsockname()[1] for sock in sockets}
        assert port != 0
        for alias in ALIASES:  # each listens already, on the port the first one took
            socket.create_connection((alias, port), timeout=5).close()
    finally:
        for sock in sockets:
            sock.close()


def test_an_address_this_machine_lacks_is_skipped_when_another_listens(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``localhost`` is ``::1`` too in many containers whose IPv6 is off: binding it fails
    with EADDRNOTAVAIL, and asyncio (and so every command) refused to listen at all."""
    absent = (socket.AF_INET, ("192.0.2.1", 0))  # TEST-NET-1 (RFC 5737): on no interface
    with pytest.raises(OSError) as alone:  # nothing else to listen on: refused
        _listen.bind_all([absent], 0)
    assert alone.value.errno == errno.EADDRNOTAVAIL and "192.0.2.1" in str(alone.value)
    with caplog.at_level(logging.WARNING, "msd_async.listen"):
        (sock,) = _listen.bind_all([absent, LOOPBACK], 0)
    try:
        assert sock.getsockname()[0] == "127.0.0.1"
        socket.create_connection(sock.getsockname(), timeout=5).close()
    finally:
        sock.close()
    assert "192.0.2.1" in caplog.text and "the name's other addresses" in caplog.text


async def test_an_address_is_listened_on_without_a_thread() -> None:
    """A numeric address needs no lookup, and asyncio made none: LocalMediaStore (and the
    relay, --metrics) started while the loop's default executor was busy with a
    program's blocking work waited for a thread to resolve "127.0.0.1"."""
    loop = asyncio.get_running_loop()
    release = threading.Event()
    busy = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    loop.set_default_executor(busy)
    blocked = loop.run_in_executor(None, release.wait)
    try:
        server = LocalMediaStore()
        await asyncio.wait_for(server.start(), 5)  # failed: waited for the thread
        await server.close()
    finally:
        release.set()
        await blocked


@pytest.fixture
def localhost_is_two_aliases(monkeypatch: pytest.MonkeyPatch) -> None:
    """``localhost`` resolves to :data:`ALIASES` (for asyncio too, which resolves with
    socket.getaddrinfo in a thread)."""
    resolve = socket.getaddrinfo

    def getaddrinfo(
        host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
    ) -> Any:
        if host == "localhost" and not flags & socket.AI_NUMERICHOST:
            return [
                info for alias in ALIASES
                for info in resolve(alias, port, family, type, proto, flags)
            ]
        return resolve(host, port, family, type, proto, flags)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


#: ``msd serve``'s shutdown grace here (2 s by default).
SERVE_GRACE = 0.5
#: More than loopback's socket buffers take for a client that reads nothing.
BIG = 20_000_000


async def test_serve_on_a_name_listens_on_each_address_and_is_unready_while_it_closes(
    localhost_is_two_aliases: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """``msd serve --host localhost --port 0 --metrics localhost:0``: the endpoint printed
    answers on every address of the name (asyncio gave each its own port, and the
    endpoint named one of them). Told to stop, the server's close() waits up to its grace
    for a client still taking a response: --metrics was closed before it began, so
    /readyz and /metrics were refused all that time; now /readyz says "stopping"."""
    registry = CollectorRegistry()
    server = LocalMediaStore(
        host="localhost", allow_anonymous=["read"], on_request=server_hook(registry)
    )
    server.shutdown_grace = SERVE_GRACE
    await server.store.put_bytes("vod/big.mp4", os.urandom(BIG))
    args = argparse.Namespace(
        command="serve", host="localhost", port=0, metrics="localhost:0", registry=registry,
        log_format="text",
    )
    serving = asyncio.create_task(serve_command._serve(server, args))
    loop = asyncio.get_running_loop()
    reader = socket.socket()
    try:
        printed = ""
        end = loop.time() + 10
        while "export " not in printed:
            assert loop.time() < end and not serving.done(), printed
            await asyncio.sleep(0.01)
            printed += capsys.readouterr().out
        said = dict(line.split(": ", 1) for line in printed.splitlines() if ": " in line)
        assert said["endpoint"] == f"http://localhost:{server.port}"
        metrics_port = int(said["metrics"].removeprefix("http://localhost:").split("/")[0])
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:

            async def get(alias: str, port: int, path: str) -> tuple[int, str]:
                async with http.get(f"http://{alias}:{port}{path}") as response:
                    return response.status, await response.text()

            for alias in ALIASES:
                assert (await get(alias, server.port, "/vod/missing.mp4"))[0] == 404
                assert await get(alias, metrics_port, "/readyz") == (200, "ok\n")
            # A client that stopped reading holds close() for the grace.
            reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            reader.setblocking(False)
            await loop.sock_connect(reader, (ALIASES[1], server.port))
            reader.send(b"GET /vod/big.mp4 HTTP/1.1\r\nHost: localhost\r\n\r\n")
            await asyncio.sleep(0.2)  # its response backs up
            os.kill(os.getpid(), signal.SIGTERM)  # _serve's handler: it printed the endpoint
            stopped = loop.time()
            while (answer := await get(ALIASES[1], metrics_port, "/readyz"))[0] == 200:
                assert loop.time() < stopped + SERVE_GRACE / 2, "still ready"
                await asyncio.sleep(0.01)
            assert answer == (503, "stopping: told to stop, finishing what it has\n")
            status, text = await get(ALIASES[0], metrics_port, "/metrics")
            assert status == 200
            assert 'msd_server_requests_total{operation="GetObject",status="404"} 2.0' in text
            assert not serving.done()  # still closing: the reader holds it
        await asyncio.wait_for(serving, SERVE_GRACE + 5)
    finally:
        reader.close()
        if not serving.done():
            serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        await server.close()


async def test_relay_on_a_name_takes_encoders_on_each_address_to_its_shutdown(
    localhost_is_two_aliases: None, mediastore_server: LocalMediaStore
) -> None:
    """``msd relay --listen localhost:0``: its url's port takes encoders on every address
    of the name (asyncio gave each its own port), and the connections waiting on any of
    them as the shutdown begins are still served (the relay takes each socket's backlog)."""
    origin = mediastore_server
    async with Session(credentials=origin.credentials, region=origin.region) as session:
        store = session.container(origin.endpoint)
        async with LivePublisher(store, close_timeout=5) as publisher:
            relay = Relay(publisher, host="localhost", drain_timeout=10)
            await relay.start()
            encoders: list[socket.socket] = []
            try:
                assert relay.url == f"http://localhost:{relay.port}"
                for n, alias in enumerate(ALIASES):
                    # Sent whole with no await before aclose(): waiting in the backlog.
                    sock = socket.create_connection((alias, relay.port), timeout=5)
                    encoders.append(sock)
                    sock.sendall(
                        f"PUT /a/seg{n}.ts HTTP/1.1\r\nHost: relay\r\nContent-Length: 1"
                        f"\r\nConnection: close\r\n\r\n{n}".encode()
                    )
                answers = [asyncio.create_task(asyncio.to_thread(_answer, sock))
                           for sock in encoders]
                await relay.aclose()
                assert [(await a)[:12] for a in answers] == [b"HTTP/1.1 204"] * len(ALIASES)
            finally:
                await relay.aclose()
                for sock in encoders:
                    sock.close()
        for n in range(len(ALIASES)):
            assert await store.get_bytes(f"a/seg{n}.ts") == str(n).encode()


async def test_the_player_page_on_a_name_answers_on_each_address(
    localhost_is_two_aliases: None,
) -> None:
    """``PlayerPage(host="localhost")`` (msd demo --watch's page): its url answers on every
    address of the name, and its origin (the CORS policy's) names that port."""
    async with (
        PlayerPage(host="localhost") as page,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http,
    ):
        assert page.url == f"http://localhost:{page.port}/"
        for alias in ALIASES:
            async with http.get(f"http://{alias}:{page.port}/") as response:
                assert response.status == 200
                assert "<html" in (await response.text()).lower()


def _answer(sock: socket.socket) -> bytes:
    """Everything the peer sends until it closes (blocking: run in a thread)."""
    answer = b""
    with contextlib.suppress(ConnectionError, TimeoutError):
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


#: /readyz's window and the idle probe's interval (and deadline), small for the test.
WINDOW, PROBE = 0.6, 0.2


async def test_readyz_of_an_origin_that_stops_answering(
    mediastore_server: LocalMediaStore,
) -> None:
    """The origin still accepts connections but answers nothing (a hung process, a
    proxy before it): /readyz answers at once all along (it never asks the origin itself),
    turns 503 within the window, and says the probe got no answer. The probe's deadline
    cancels its attempt, which tells the session's hooks nothing of the origin: /readyz
    said only "no exchange with the origin in the past ...", as for an idle one."""
    origin = mediastore_server
    args = argparse.Namespace(metrics="127.0.0.1:0", command="relay")
    async with (
        Session(credentials=origin.credentials, region=origin.region) as session,
        _observe.observing(
            args, session=session, store=session.container(origin.endpoint),
            window=WINDOW, probe_interval=PROBE,
        ) as observer,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WINDOW)) as http,
    ):
        assert observer.url is not None
        url = observer.url.replace("/metrics", "/readyz")

        async def readyz() -> tuple[int, str]:
            async with http.get(url) as response:  # within WINDOW, or it raises
                return response.status, await response.text()

        loop = asyncio.get_running_loop()
        end = loop.time() + 10 * WINDOW
        while (answer := await readyz())[0] != 200:
            assert loop.time() < end, answer
            await asyncio.sleep(PROBE / 4)
        # Longer than the test: the probes' answers never come while it looks.
        origin.faults.inject("delay", method="GET", path="", times=None, delay=8 * PROBE)
        try:
            stopped = loop.time()
            while (answer := await readyz())[0] == 200:
                assert loop.time() < stopped + 10 * WINDOW, "still ready"
                await asyncio.sleep(PROBE / 4)
            # The attempt's read timeout, capped to the deadline, may end it first.
            assert answer in (
                (503, f"the last ListItems to the origin failed (no answer within {PROBE:g} s)\n"),
                (503, "the last ListItems to the origin failed (ReadTimeout)\n"),
            )
        finally:
            origin.faults.clear()


async def test_readyz_says_stopping_while_a_relay_drains(
    tmp_path: Path, mediastore_server: LocalMediaStore
) -> None:
    """Told to stop, a relay accepts no new connection and drains what it has, for up to
    --shutdown-timeout: /readyz went on answering 200 all that time, so a load balancer
    that reads it kept sending encoders to a port that no longer took them."""
    origin = mediastore_server
    env = aws_env(
        AWS_ACCESS_KEY_ID=origin.credentials.access_key_id,
        AWS_SECRET_ACCESS_KEY=origin.credentials.secret_access_key,
        AWS_REGION=origin.region, MSD_PROBE_INTERVAL=str(PROBE), MSD_READY_WINDOW="30",
    )
    relay, metrics = await Proc.start(
        msd("relay", "--listen", "127.0.0.1:0", "--endpoint", origin.endpoint,
            "--no-preflight", "--metrics", "127.0.0.1:0", "--shutdown-timeout", "30"),
        tmp_path / "relay.log", "metrics: ", env=env,
    )
    writer = None
    try:
        assert relay.process.stdout is not None
        line = (await asyncio.wait_for(relay.process.stdout.readline(), 30)).decode()
        assert line.startswith("relay: "), line
        port = int(line.rsplit(":", 1)[1])
        loop = asyncio.get_running_loop()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:

            async def readyz() -> tuple[int, str]:
                async with http.get(metrics.replace("/metrics", "/readyz")) as response:
                    return response.status, await response.text()

            end = loop.time() + 20
            while (answer := await readyz())[0] != 200:
                assert loop.time() < end, answer
                await asyncio.sleep(PROBE / 2)
            # An encoder's request half sent: the drain waits for the rest.
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"PUT /a/seg0.ts HTTP/1.1\r\nHost: r\r\nContent-Length: 10\r\n\r\nmedia")
            await writer.drain()
            await asyncio.sleep(0.3)
            relay.process.send_signal(signal.SIGTERM)
            end = loop.time() + 20
            while (answer := await readyz())[0] == 200:
                assert loop.time() < end, "still ready while it drains"
                await asyncio.sleep(PROBE / 2)
            assert answer == (503, "stopping: told to stop, finishing what it has\n")
            # A scrape during the drain still gets the metrics (the probes so far).
            async with http.get(metrics) as response:
                assert response.status == 200
                assert 'msd_requests_total{operation="ListItems",status="200"}' in (
                    await response.text()
                )
            assert relay.process.returncode is None  # draining, not gone
        writer.write(b"media")
        await writer.drain()
        # The rest of the body ends the drain, and the relay its stop.
        assert await asyncio.wait_for(relay.process.wait(), 30) == 0, relay.stderr()
    finally:
        if writer is not None:
            writer.close()
        await relay.stop(signal.SIGKILL)


async def test_a_scraper_that_stops_reading_holds_the_exit_only_briefly(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A scraper that stops reading a /metrics larger than the socket buffers kept its
    answer in flight, and aiohttp's default shutdown_timeout held the command's exit for
    60 s. Now for at most twice METRICS_SHUTDOWN_TIMEOUT (wait, then cancel and wait)."""
    bound = _observe.METRICS_SHUTDOWN_TIMEOUT
    collecting = threading.Event()

    class Huge(Collector):
        def collect(self) -> Any:
            collecting.set()  # called by the /metrics handler: the answer is in flight
            # 16 MiB of HELP: more than any loopback socket buffers.
            yield GaugeMetricFamily("msd_test_huge", "x" * (16 << 20), value=1)

    registry = CollectorRegistry()
    registry.register(Huge())
    collecting.clear()  # register() collected once to check the names
    args = argparse.Namespace(metrics="127.0.0.1:0", command="serve")
    loop = asyncio.get_running_loop()
    scraper = socket.socket()
    try:
        scraper.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        async with _observe.observing(args, registry=registry) as observer:
            assert observer.url is not None
            port = int(observer.url.rsplit(":", 1)[1].split("/")[0])
            scraper.setblocking(False)
            await loop.sock_connect(scraper, ("127.0.0.1", port))
            await loop.sock_sendall(scraper, b"GET /metrics HTTP/1.1\r\nHost: m\r\n\r\n")
            end = loop.time() + 20
            while not collecting.is_set():
                assert loop.time() < end, "the scrape never reached the handler"
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)  # the handler writes, and waits for the reader
            started = loop.time()
        took = loop.time() - started
    finally:
        scraper.close()
    assert took < 2 * bound + 3, f"the exit waited {took:.1f} s for a stalled scraper"
    capsys.readouterr()


async def test_readyz_of_a_container_that_is_gone(scripted_session: Session) -> None:
    """The origin answers, but the container is gone (deleted, or the endpoint names
    another): every publication fails with a 404 ContainerNotFoundException, or a plain
    404 to a PUT (which never means "no such object": a PUT creates it). Read as "the
    origin answering", as a 404 for a missing object is, /readyz stayed 200 for a relay
    that could publish nothing."""
    listing = response(200, b'{"Items": []}', headers={"Content-Type": "application/json"})
    answers = [
        listing,
        response(404, headers={"x-amzn-ErrorType": "ObjectNotFoundException"}),
        response(404, b'{"message": "gone"}',
                 headers={"x-amzn-ErrorType": "ContainerNotFoundException"}),
        listing,
        response(404),
    ]

    async def handler(conn: Connection) -> None:
        while await conn.read_request() is not None:
            await conn.send(answers.pop(0))

    async with scripted_server(handler) as server:
        readiness = _observe.Readiness(server.endpoint)
        scripted_session.event_hooks.append(readiness)
        store = scripted_session.container(server.endpoint)
        await store.list_items_page(max_results=1)
        with pytest.raises(ObjectNotFoundError):
            await store.describe_object("a/missing.ts")
        assert readiness.state() == (True, "ok")  # a missing object: the origin answering
        with pytest.raises(ContainerNotFoundError):
            await store.put_object("a/seg.ts", b"media")
        assert readiness.state() == (
            False, "the last PutObject to the origin failed (HTTP 404: no such container)"
        )
        await store.list_items_page(max_results=1)
        assert readiness.state() == (True, "ok")
        with pytest.raises(ServiceError):
            await store.put_object("a/seg.ts", b"media")
        assert readiness.state() == (False, "the last PutObject to the origin failed (HTTP 404)")
