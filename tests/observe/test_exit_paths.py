"""Every attempt a hook saw start, it sees end, exactly once, on every exit path: the
session's hooks are independent observers, so one hook's bug must not leave another's
span open or its counts short (docs/observability.md)."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import nullcontext
from typing import TYPE_CHECKING

import anyio
import pytest
from ingest_harness import ACCESS_KEY, SECRET_KEY, msd
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client import CollectorRegistry, generate_latest

from msd_async import (
    Credentials,
    DeadlineExceeded,
    Limits,
    PoolTimeout,
    RequestEvent,
    RetryPolicy,
    Session,
    SessionClosedError,
    Timeouts,
)
from msd_async.cli._observe import Readiness
from msd_async.live import LivePublisher, PublishEvent
from msd_async.otel import tracing_hook
from msd_async.prometheus import metrics_hook, publisher_hook
from msd_async.testing import LocalMediaStore

if TYPE_CHECKING:
    from conftest import Exposition

pytestmark = pytest.mark.anyio

KEYS = Credentials("AKIDOBSERVETEST000000", "observe-test-secret-key-000000000000000")
FAST_RETRY = RetryPolicy(max_attempts=3, backoff_initial=0.01, backoff_max=0.02)


@pytest.fixture
async def server() -> AsyncIterator[LocalMediaStore]:
    async with LocalMediaStore(credentials=KEYS) as served:
        yield served


@pytest.fixture
def exporter() -> tuple[TracerProvider, InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return provider, memory


class HookBug(Exception):
    pass


def _requests(registry: CollectorRegistry, exposition: type[Exposition]) -> dict[str, float]:
    got = exposition.samples(generate_latest(registry).decode())
    return {
        dict(labels)["status"]: value
        for (name, labels), value in got.items() if name == "msd_requests_total"
    }


@pytest.mark.parametrize("kind", ["response", "error", "retry"])
async def test_a_hook_that_raises_does_not_keep_the_event_from_the_hooks_after_it(
    server: LocalMediaStore, exporter: tuple[TracerProvider, InMemorySpanExporter],
    exposition: type[Exposition], kind: str,
) -> None:
    """A user's hook placed first raises on one kind of event (as ``event.status // 100``
    does on an answerless error): the caller gets its exception, as promised, and the
    tracing and metrics hooks after it still see the attempt end. Before, they never
    heard of it: the span stayed open until the task's next call (then ended as
    ``cancelled``) and the attempt was not counted."""
    provider, memory = exporter
    registry = CollectorRegistry()
    seen: list[RequestEvent] = []

    def fragile(event: RequestEvent) -> None:
        if event.kind == kind:
            raise HookBug(kind)

    if kind != "error":
        async with Session(credentials=KEYS, region=server.region) as plain:
            await plain.container(server.endpoint).put_object("f/seg.ts", b"x")
    if kind != "response":
        server.faults.inject("503", method="HEAD", path="f/seg.ts")
    async with Session(
        credentials=KEYS, region=server.region, retry=FAST_RETRY,
        event_hooks=[fragile, tracing_hook(provider), metrics_hook(registry), seen.append],
    ) as session:
        store = session.container(server.endpoint)
        with pytest.raises(HookBug):
            await store.describe_object("f/seg.ts")
        assert session.pool.in_use == 0
        # The task goes on and makes no further call: the span must already be over.
        await anyio.sleep(0.05)
        spans = [s for s in memory.get_finished_spans() if s.name == "DescribeObject"]
        assert len(spans) == 1, [e.kind for e in seen]
        (span,) = spans
        if kind == "response":
            assert [e.kind for e in seen] == ["start", "response"]
            assert span.status.status_code is not StatusCode.ERROR
        elif kind == "error":
            assert [e.kind for e in seen] == ["start", "error"]
            assert span.attributes["error.type"] == "503"  # type: ignore[index]
        else:
            # The call ends with the hook's error before its next attempt.
            assert [e.kind for e in seen] == ["start", "error", "retry", "abandoned"]
            assert isinstance(seen[-1].error, HookBug)
            assert span.attributes["error.type"] == "HookBug"  # type: ignore[index]
        await anyio.sleep(0.05)
        assert len(memory.get_finished_spans()) == 1  # nothing ended twice
    assert _requests(registry, exposition) == ({"200": 1} if kind == "response" else {"503": 1})


async def test_a_hook_that_raises_on_start_is_the_only_one_spared_the_end(
    server: LocalMediaStore, exporter: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """Raising on ``start``: nothing is sent, and every other hook, those after the failed
    one included, sees the attempt start and end with the hook's error; the failed hook
    is not called again."""
    provider, memory = exporter
    seen: list[RequestEvent] = []
    fragile_saw: list[str] = []

    def fragile(event: RequestEvent) -> None:
        fragile_saw.append(event.kind)
        raise HookBug("start")

    async with Session(
        credentials=KEYS, region=server.region,
        event_hooks=[seen.append, fragile, tracing_hook(provider), seen.append],
    ) as session:
        with pytest.raises(HookBug):
            await session.container(server.endpoint).describe_object("f/a.ts")
        await anyio.sleep(0.05)
    assert fragile_saw == ["start"]
    assert [e.kind for e in seen] == ["start", "start", "error", "error"]
    assert all(isinstance(e.error, HookBug) for e in seen if e.kind == "error")
    (span,) = memory.get_finished_spans()
    assert span.attributes["error.type"] == "HookBug"  # type: ignore[index]


async def test_a_call_a_hook_stopped_on_start_is_counted_unsent_beside_it(
    server: LocalMediaStore, exposition: type[Exposition],
) -> None:
    """A hook raising on ``start`` stops the attempt before anything is sent: the metrics
    hooks beside it (before and after it) counted it ``error`` ("no answer came: look at
    the network") with a duration of ~0 s in the histogram. Nothing reached the origin,
    which is what ``unsent`` says, as for any failure before the request went out; the
    hooks that saw the attempt start are told so by ``bytes_sent`` None. The others'
    events are still counted as the wire saw them (see the test above)."""
    before, after = CollectorRegistry(), CollectorRegistry()
    seen: list[RequestEvent] = []

    def fragile(event: RequestEvent) -> None:
        if event.kind == "start":
            raise HookBug("start")

    async with Session(
        credentials=KEYS, region=server.region,
        event_hooks=[metrics_hook(before), fragile, metrics_hook(after), seen.append],
    ) as session:
        with pytest.raises(HookBug):
            await session.container(server.endpoint).describe_object("f/a.ts")
    assert [(e.kind, e.bytes_sent) for e in seen] == [("start", None), ("error", None)]
    for registry in (before, after):
        assert _requests(registry, exposition) == {"unsent": 1}
        got = exposition.samples(generate_latest(registry).decode())
        assert not any(name == "msd_request_duration_seconds_count" for name, _ in got)


async def test_when_two_hooks_raise_the_first_error_is_raised_and_the_second_logged(
    server: LocalMediaStore, caplog: pytest.LogCaptureFixture,
) -> None:
    first, second = HookBug("first"), HookBug("second")
    seen: list[str] = []

    def raising(bug: HookBug) -> Callable[[RequestEvent], None]:
        def hook(event: RequestEvent) -> None:
            if event.kind == "response":
                raise bug
        return hook

    async with Session(
        credentials=KEYS, region=server.region,
        event_hooks=[raising(first), raising(second), lambda e: seen.append(e.kind)],
    ) as session:
        with pytest.raises(HookBug) as caught:
            await session.container(server.endpoint).list_items_page("")
        assert caught.value is first
        assert session.pool.in_use == 0
    assert seen == ["start", "response"]
    logged = [r for r in caplog.records if r.name == "msd_async.client"]
    assert len(logged) == 1 and logged[0].exc_info is not None
    assert logged[0].exc_info[1] is second


async def test_a_listing_of_the_whole_container_is_listitems_not_getobject(
    server: LocalMediaStore, exporter: tuple[TracerProvider, InMemorySpanExporter],
    exposition: type[Exposition],
) -> None:
    """``GET /`` without a query (the root listed, no page size, no token) is ListItems:
    no object has an empty path. It was counted, traced and reported as a GetObject of
    ``""``, so a dashboard's GetObject rate rose with every ``msd ls``."""
    provider, memory = exporter
    registry = CollectorRegistry()
    seen: list[RequestEvent] = []
    async with Session(
        credentials=KEYS, region=server.region,
        event_hooks=[tracing_hook(provider), metrics_hook(registry), seen.append],
    ) as session:
        await session.container(server.endpoint).list_items_page("")
    assert [(e.kind, e.operation, e.path) for e in seen] == [
        ("start", "ListItems", ""), ("response", "ListItems", ""),
    ]
    (span,) = memory.get_finished_spans()
    assert span.name == "ListItems"
    assert span.attributes["http.request.method"] == "GET"  # type: ignore[index]
    assert span.attributes["url.full"] == f"{server.endpoint}/"  # type: ignore[index]
    got = exposition.samples(generate_latest(registry).decode())
    assert got["msd_requests_total", (("operation", "ListItems"), ("status", "200"))] == 1



async def test_calls_in_flight_when_the_session_closes_are_counted_as_cancelled_not_unsent(
    server: LocalMediaStore, exporter: tuple[TracerProvider, InMemorySpanExporter],
    exposition: type[Exposition],
) -> None:
    """``Session.aclose()`` from another task while a HEAD waits for its answer and a PUT
    has written its body: both requests reached the origin (which may have acted on
    them), so neither is ``unsent`` (docs: nothing reached the origin). The session's
    owner stopped waiting for them: ``cancelled``, with their durations and the PUT's
    bytes. A call made after the close is ``unsent``. Every span ends once, as an error,
    and /readyz does not blame the origin."""
    provider, memory = exporter
    registry = CollectorRegistry()
    readiness = Readiness(server.endpoint)
    server.faults.inject("delay", method="HEAD", path="c/a.ts", delay=30)
    server.faults.inject("delay", method="PUT", path="c/b.ts", delay=30)
    session = Session(credentials=KEYS, region=server.region, event_hooks=[readiness])
    store = session.container(server.endpoint)
    await store.put_object("c/ok.ts", b"ok")
    assert readiness.state() == (True, "ok")
    session.event_hooks += [tracing_hook(provider), metrics_hook(registry)]
    failures: list[BaseException] = []

    async def call(operation: Awaitable[object]) -> None:
        try:
            await operation
        except SessionClosedError as exc:
            failures.append(exc)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(call, store.describe_object("c/a.ts"))
        tasks.start_soon(call, store.put_object("c/b.ts", b"x" * 10))
        with anyio.fail_after(5):
            while server.faults.applied < 2:  # noqa: ASYNC110 - both reached the server
                await anyio.sleep(0.01)
        await session.aclose()
    await call(store.list_items_page(""))
    assert len(failures) == 3
    # Closing its own session says nothing of the origin (a scrape during shutdown).
    assert readiness.state() == (True, "ok")
    got = exposition.samples(generate_latest(registry).decode())
    counted = {
        (dict(labels)["operation"], dict(labels)["status"]): value
        for (name, labels), value in got.items() if name == "msd_requests_total"
    }
    assert counted == {
        ("DescribeObject", "cancelled"): 1, ("PutObject", "cancelled"): 1,
        ("ListItems", "unsent"): 1,
    }
    assert got["msd_request_duration_seconds_count", (("operation", "PutObject"),)] == 1
    assert got["msd_bytes_sent_total", ()] == 10
    await anyio.sleep(0.05)  # the ListItems span ends once no retry was announced
    spans = memory.get_finished_spans()
    assert sorted(s.name for s in spans) == ["DescribeObject", "ListItems", "PutObject"]
    assert all(s.status.status_code is StatusCode.ERROR for s in spans)


@pytest.mark.parametrize("close", ["grace", "cancel", "exception"])
async def test_the_publish_queue_depth_returns_to_zero_however_the_publisher_closes(
    server: LocalMediaStore, exposition: type[Exposition], close: str,
) -> None:
    """Objects still queued (behind a held upload, or a playlist republished while its
    previous version waits) when the publisher closes, by its grace period running out,
    by ``cancel=True`` or by leaving its ``async with`` with an exception: each settles
    once, and the gauge of objects waiting ends at 0, never below."""
    registry = CollectorRegistry()
    server.faults.inject("delay", method="PUT", times=None, delay=30)
    depths: list[float] = []
    hook = publisher_hook(registry)

    def on_event(event: PublishEvent) -> None:
        hook(event)
        depths.append(exposition.samples(generate_latest(registry).decode())[
            "msd_publish_queue_depth", ()
        ])

    async with Session(credentials=KEYS, region=server.region) as session:
        store = session.container(server.endpoint)
        publisher = LivePublisher(store, on_event=on_event, max_in_flight=1)
        with pytest.raises(HookBug) if close == "exception" else nullcontext():
            async with publisher:
                for n in range(3):
                    await publisher.publish(f"q/s{n}.m4s", b"x", duration=4.0)
                for n in range(2):
                    await publisher.publish("q/index.m3u8", f"#EXTM3U\n#{n}\n")
                await anyio.sleep(0.2)
                assert depths[-1] >= 2  # media behind the held upload
                if close == "grace":
                    await publisher.aclose(timeout=0.2)
                elif close == "cancel":
                    await publisher.aclose(cancel=True)
                else:
                    raise HookBug("the application failed mid-stream")
    assert depths[-1] == 0
    assert min(depths) >= 0


def test_a_bad_client_of_the_metrics_port_does_not_hold_the_commands_exit() -> None:
    """Two peers of ``--metrics`` when the command is stopped: one declared a body it never
    sends (answered 405 at once), one pipelines scrapes and never reads the answers. The
    command exits at once. Before, the listener went on waiting for the body (aiohttp's
    lingering close, 10 s) after the signal: a shutdown held up by any peer of the port."""
    serve = subprocess.Popen(
        msd("serve", "--metrics", "127.0.0.1:0", "--access-key-id", ACCESS_KEY,
            "--secret-access-key", SECRET_KEY),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert serve.stdout is not None
        lines = [serve.stdout.readline().strip() for _ in range(5)]
        line = next(x for x in lines if x.startswith("metrics: http://127.0.0.1:"))
        port = int(line.rsplit(":", 1)[1].split("/")[0])
        with socket.create_connection(("127.0.0.1", port), timeout=30) as body_never_sent, \
                socket.create_connection(("127.0.0.1", port), timeout=30) as never_reads:
            body_never_sent.sendall(
                b"POST /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\nabc"
            )
            assert body_never_sent.recv(100).startswith(b"HTTP/1.1 405")
            never_reads.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            never_reads.sendall(b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n" * 500)
            started = time.monotonic()
            serve.send_signal(signal.SIGINT)
            serve.communicate(timeout=60)
            took = time.monotonic() - started
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.communicate()
    assert serve.returncode == 0
    assert took < 5.0  # aiohttp's lingering close alone waits 10 s


async def test_a_call_that_found_no_free_connection_is_unsent(
    server: LocalMediaStore, exposition: type[Exposition],
) -> None:
    """A PoolTimeout is the session's own pool saturated: the request never left the
    process (errors.py, retry.py), which is what ``unsent`` says. Counted as ``error``
    (no answer came: look at the network), with a duration, it sent operators to the
    origin for a local limit."""
    registry = CollectorRegistry()
    server.faults.inject("delay", method="HEAD", path="p/held.ts", delay=30)
    async with Session(
        credentials=KEYS, region=server.region, limits=Limits(max_connections=1),
        timeouts=Timeouts(pool=0.2), event_hooks=[metrics_hook(registry)],
    ) as session:
        store = session.container(server.endpoint)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(store.describe_object, "p/held.ts")
            with anyio.fail_after(5):
                while server.faults.applied < 1:  # noqa: ASYNC110 - it holds the connection
                    await anyio.sleep(0.01)
            with pytest.raises(PoolTimeout):
                await store.describe_object("p/other.ts")
            tasks.cancel_scope.cancel()
    assert _requests(registry, exposition) == {"unsent": 1, "cancelled": 1}
    got = exposition.samples(generate_latest(registry).decode())
    # The held request's duration only: none for the one that was never sent.
    assert got["msd_request_duration_seconds_count", (("operation", "DescribeObject"),)] == 1


async def test_a_hook_failing_on_every_cancelled_call_is_logged_once_not_per_call(
    server: LocalMediaStore, caplog: pytest.LogCaptureFixture,
) -> None:
    """A hook's error on a cancelled call cannot reach the caller (the cancellation must go
    on), so it is logged; a hook broken for every cancellation (a web proxy's viewers
    leaving all day) must not log a traceback per call: the first, then every 1000th,
    saying how many so far."""
    server.faults.inject("delay", method="HEAD", times=None, delay=30)

    def fragile(event: RequestEvent) -> None:
        if event.kind == "cancelled":
            raise HookBug("the hook's own bug")

    async with Session(
        credentials=KEYS, region=server.region, event_hooks=[fragile]
    ) as session:
        store = session.container(server.endpoint)
        for n in range(5):
            with anyio.move_on_after(0.1) as scope:
                await store.describe_object(f"x/{n}.ts")
            assert scope.cancelled_caught  # the cancellation, not the hook's error
    logged = [r for r in caplog.records if r.name == "msd_async.client"]
    assert len(logged) == 1
    assert "cancelled DescribeObject" in logged[0].getMessage()
    assert "1 time(s) so far" in logged[0].getMessage()
    assert logged[0].exc_info is not None and isinstance(logged[0].exc_info[1], HookBug)


async def test_a_call_whose_deadline_passes_mid_attempt_ends_everything_once(
    server: LocalMediaStore, exporter: tuple[TracerProvider, InMemorySpanExporter],
    exposition: type[Exposition],
) -> None:
    """``deadline=`` ends the attempt waiting for a held answer: the caller gets
    DeadlineExceeded, the hooks one end for the one start, the span ends once as an
    error, and the attempt is counted once, not as the origin failing to answer."""
    provider, memory = exporter
    registry = CollectorRegistry()
    seen: list[RequestEvent] = []
    server.faults.inject("delay", method="HEAD", path="d/a.ts", delay=30)
    async with Session(
        credentials=KEYS, region=server.region,
        event_hooks=[tracing_hook(provider), metrics_hook(registry), seen.append],
    ) as session:
        with pytest.raises(DeadlineExceeded):
            await session.container(server.endpoint).describe_object("d/a.ts", deadline=0.3)
        await anyio.sleep(0.05)
        assert session.pool.in_use == 0
    kinds = [e.kind for e in seen]
    assert kinds[0] == "start" and len(kinds) == 2 and kinds[1] in ("cancelled", "error")
    (span,) = memory.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    counted = _requests(registry, exposition)
    assert sum(counted.values()) == 1 and "error" not in counted, counted


class EncoderCrashed(Exception):
    pass


@pytest.mark.parametrize("cut", ["source raised", "over the limit", "not bytes"])
async def test_an_upload_the_client_cut_itself_is_counted_aborted_not_error(
    server: LocalMediaStore, exposition: type[Exposition], cut: str,
) -> None:
    """An upload whose body's source raised, that passed the object limit or yielded a
    str is cut by the client mid-body. Counted ``error`` ("no answer came: look at the
    network"), it sent operators to an origin that was never at fault; the readiness
    probe already left it out (``_not_an_exchange``). ``aborted`` says what happened: the
    client cut its own request. Its duration and the bytes it wrote are counted."""
    registry = CollectorRegistry()
    readiness = Readiness(endpoint=None)

    async def body() -> AsyncIterator[bytes]:
        yield b"x" * 1000
        if cut == "source raised":
            raise EncoderCrashed("the encoder died")
        yield "text" if cut == "not bytes" else b"y" * 2000  # type: ignore[misc]

    async with Session(
        credentials=KEYS, region=server.region,
        event_hooks=[metrics_hook(registry), readiness],
    ) as session:
        store = session.container(server.endpoint, streaming_limit=2500)
        with pytest.raises(Exception) as raised:
            await store.put_object("f/cut.ts", body(), streaming=True)
    assert type(raised.value).__name__ == {
        "source raised": "EncoderCrashed", "over the limit": "ObjectTooLargeError",
        "not bytes": "ClientValidationError",
    }[cut]
    assert _requests(registry, exposition) == {"aborted": 1}
    got = exposition.samples(generate_latest(registry).decode())
    assert got[("msd_request_duration_seconds_count", (("operation", "PutObject"),))] == 1
    assert got[("msd_bytes_sent_total", ())] >= 1000
    assert readiness.last_end is None  # not an exchange with the origin
