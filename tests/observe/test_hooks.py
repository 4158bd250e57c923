"""msd_async.prometheus and msd_async.otel against the real local server: what the server
saw (its on_request log) is the oracle for the client's counters."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import anyio
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client import CollectorRegistry, generate_latest

from msd_async import (
    DEFAULT_RETRY_POLICY,
    Credentials,
    ObjectNotFoundError,
    RequestEvent,
    RetryPolicy,
    Session,
)
from msd_async.live import LivePublisher, ObjectKind
from msd_async.otel import tracing_hook
from msd_async.prometheus import metrics_hook, publisher_hook
from msd_async.testing import LocalMediaStore

if TYPE_CHECKING:
    from conftest import Exposition

pytestmark = pytest.mark.anyio

SECRET = "observe-test-secret-key-000000000000000"
KEYS = Credentials("AKIDOBSERVETEST000000", SECRET)
FAST_RETRY = RetryPolicy(max_attempts=3, backoff_initial=0.01, backoff_max=0.02)


@pytest.fixture
async def served() -> AsyncIterator[tuple[LocalMediaStore, list[tuple[str, str, float]]]]:
    log: list[tuple[str, str, float]] = []
    async with LocalMediaStore(
        credentials=KEYS, on_request=lambda *entry: log.append(entry)
    ) as server:
        yield server, log


def text(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


async def test_metrics_hook_counts_every_attempt_as_the_server_saw_it(
    served: object, exposition: type[Exposition]
) -> None:
    server, log = served  # type: ignore[misc]
    registry = CollectorRegistry()
    server.faults.inject("503", method="PUT", path="a/b.ts")
    async with Session(
        credentials=KEYS, region=server.region, retry=FAST_RETRY,
        event_hooks=[metrics_hook(registry)],
    ) as session:
        store = session.container(server.endpoint)
        await store.put_object("a/b.ts", b"x" * 1000)  # a 503, then a 200
        await store.put_object("a/c.m3u8", "#EXTM3U\n")
        assert await store.get_bytes("a/b.ts") == b"x" * 1000
        with pytest.raises(ObjectNotFoundError):
            await store.describe_object("a/missing.ts")
        await store.list_items_page("a")
        await store.delete_object("a/c.m3u8")
    got = exposition.samples(text(registry))

    expected: dict[tuple[str, str], int] = {}
    for operation, status, _ in log:
        expected[operation, status] = expected.get((operation, status), 0) + 1
    assert expected[("PutObject", "503")] == 1
    counted = {
        (dict(labels)["operation"], dict(labels)["status"]): value
        for (name, labels), value in got.items() if name == "msd_requests_total"
    }
    assert counted == expected
    assert got["msd_retries_total", (("operation", "PutObject"),)] == 1
    # Sent: both attempts of the 1000-byte PUT and the playlist; received: the GET's body
    # and the small JSON answers the server declared.
    assert got["msd_bytes_sent_total", ()] == 2000 + len("#EXTM3U\n")
    assert got["msd_bytes_received_total", ()] >= 1000
    assert exposition.check_histograms(text(registry)) == 5
    # Bounded labels: operation names and statuses, never a path.
    assert not any("/" in v for _, labels in got for _, v in labels)


async def test_namespace_replaces_the_prefix_and_hooks_share_metrics(
    served: object, exposition: type[Exposition]
) -> None:
    server, _ = served  # type: ignore[misc]
    registry = CollectorRegistry()
    async with Session(
        credentials=KEYS, region=server.region,
        event_hooks=[metrics_hook(registry, namespace="edge"), metrics_hook(registry, "edge")],
    ) as session:
        await session.container(server.endpoint).put_object("x.txt", b"1")
    got = exposition.samples(text(registry))
    assert got["edge_requests_total", (("operation", "PutObject"), ("status", "200"))] == 2
    assert not any(name.startswith("msd_") for name, _ in got)


async def test_publisher_hook_counts_outcomes_by_kind(
    served: object, exposition: type[Exposition]
) -> None:
    server, _ = served  # type: ignore[misc]
    registry = CollectorRegistry()
    hook = publisher_hook(registry)
    async with Session(credentials=KEYS, region=server.region) as session:
        store = session.container(server.endpoint)
        async with LivePublisher(store, prefix="live", on_event=hook) as publisher:
            init = await publisher.publish("v/init.mp4", b"i" * 100, kind=ObjectKind.INIT)
            seg = await publisher.publish("v/seg1.m4s", b"s" * 500, duration=2.0)
            await init.wait()
            await seg.wait()
            playlist = await publisher.publish(
                "v/index.m3u8",
                "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MAP:URI=\"init.mp4\"\n"
                "#EXTINF:2.0,\nseg1.m4s\n",
            )
            await playlist.wait()
            mid = exposition.samples(text(registry))["msd_publish_queue_depth", ()]
        # A refused publication: the origin answers 403 to keys it does not know.
    async with Session(
        credentials=Credentials("AKIDUNKNOWN000000000", "nope"), region=server.region
    ) as session:
        store = session.container(server.endpoint)
        async with LivePublisher(store, on_event=hook) as publisher:
            refused = await publisher.publish("other.bin", b"z", kind=ObjectKind.OTHER)
            await refused.wait()
    got = exposition.samples(text(registry))
    for kind in ("init", "segment", "playlist"):
        assert got["msd_publications_total", (("kind", kind), ("outcome", "acknowledged"))] == 1
        assert got["msd_publish_latency_seconds_count", (("kind", kind),)] == 1
    assert got["msd_publications_total", (("kind", "other"), ("outcome", "refused"))] == 1
    assert mid == 0 and got["msd_publish_queue_depth", ()] == 0
    assert got["msd_gaps_total", ()] == 0
    assert exposition.check_histograms(text(registry)) == 3


async def test_publisher_queue_depth_counts_media_not_started(
    served: object, exposition: type[Exposition]
) -> None:
    server, _ = served  # type: ignore[misc]
    registry = CollectorRegistry()
    server.faults.inject("delay", method="PUT", delay=0.5)
    async with Session(credentials=KEYS, region=server.region) as session:
        store = session.container(server.endpoint)
        async with LivePublisher(
            store, on_event=publisher_hook(registry), max_in_flight=1
        ) as publisher:
            first = await publisher.publish("v/s1.m4s", b"1", duration=4.0)
            second = await publisher.publish("v/s2.m4s", b"2", duration=4.0)
            queued = exposition.samples(text(registry))["msd_publish_queue_depth", ()]
            # The first upload is held by the server (0.5 s); one in flight at a time, so
            # the second waits.
            await anyio.sleep(0.2)
            waiting = exposition.samples(text(registry))["msd_publish_queue_depth", ()]
            await first.wait()
            await second.wait()
    assert (queued, waiting) == (2, 1)
    assert exposition.samples(text(registry))["msd_publish_queue_depth", ()] == 0


@pytest.fixture
def exporter() -> tuple[TracerProvider, InMemorySpanExporter]:
    provider = TracerProvider()
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return provider, memory


async def test_one_span_per_call_with_http_client_attributes(
    served: object, exporter: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    server, _ = served  # type: ignore[misc]
    provider, memory = exporter
    server.faults.inject("503", method="PUT", path="v/seg_1.ts")
    tracer = provider.get_tracer("test")
    async with Session(
        credentials=KEYS, region=server.region, retry=FAST_RETRY,
        event_hooks=[tracing_hook(provider)],
    ) as session:
        store = session.container(server.endpoint)
        with tracer.start_as_current_span("publish segment"):
            await store.put_object("v/seg_1.ts", b"abc")  # retried once
        with pytest.raises(ObjectNotFoundError):
            await store.describe_object("v/nothing.ts")
        await store.list_items_page("v")
        server.faults.inject("503", method="DELETE")
        await store.delete_object("v/never-there.ts")  # 503, then a 404 the client accepts
        url = await store.presign_get("v/seg_1.ts")
        assert "X-Amz-Signature" in url
    async with Session(
        credentials=KEYS, region=server.region, retry=RetryPolicy.none(),
        event_hooks=[tracing_hook(provider)],
    ) as session:
        closed = session.container("http://127.0.0.1:9")  # nothing listens on port 9
        with pytest.raises(Exception):  # noqa: B017 - the type is checked on the span
            await closed.get_bytes("x.ts")

    spans = {s.name: s for s in memory.get_finished_spans()}
    put = spans["PutObject"]
    parent = spans["publish segment"]
    assert put.kind is trace.SpanKind.CLIENT
    assert put.parent is not None and put.parent.span_id == parent.context.span_id
    attrs = dict(put.attributes or {})
    assert attrs["http.request.method"] == "PUT"
    assert attrs["http.response.status_code"] == 200
    assert attrs["http.request.resend_count"] == 1
    assert attrs["server.address"] == "127.0.0.1"
    assert attrs["server.port"] == server.port
    assert attrs["url.full"] == f"{server.endpoint}/v/seg_1.ts"
    assert attrs["mediastore.path"] == "v/seg_1.ts"
    assert "error.type" not in attrs and put.status.status_code is not StatusCode.ERROR
    assert [e.name for e in put.events] == ["exception"]  # the 503 attempt

    head = spans["DescribeObject"]
    assert head.attributes["error.type"] == "404"  # type: ignore[index]
    assert head.attributes["http.response.status_code"] == 404  # type: ignore[index]
    assert head.status.status_code is StatusCode.ERROR
    assert "http.request.resend_count" not in (head.attributes or {})

    delete = spans["DeleteObject"]
    assert delete.attributes["http.request.resend_count"] == 1  # type: ignore[index]
    assert "error.type" not in (delete.attributes or {})
    assert delete.status.status_code is not StatusCode.ERROR

    listing = spans["ListItems"]
    assert listing.attributes["url.full"] == f"{server.endpoint}/?Path=v"  # type: ignore[index]

    get = spans["GetObject"]
    assert get.attributes["error.type"] == "ConnectError"  # type: ignore[index]
    assert "http.response.status_code" not in (get.attributes or {})
    assert get.events[0].attributes["exception.type"].endswith("ConnectError")  # type: ignore[index]

    # Six calls, six spans (plus the test's own parent), whatever the attempts.
    assert sorted(spans) == sorted([
        "publish segment", "PutObject", "DescribeObject", "DeleteObject", "ListItems",
        "GetObject",
    ])
    assert len(memory.get_finished_spans()) == 6
    everything = repr([(s.attributes, [e.attributes for e in s.events]) for s in spans.values()])
    assert SECRET not in everything and "Signature" not in everything
    assert "X-Amz" not in everything and "Credential=" not in everything


def test_the_clients_event_constructor_fills_every_field_in_place() -> None:
    # new_event stores fields through the slots in declaration order: a field added to
    # RequestEvent in another place would shift every later one.
    from msd_async.events import new_event

    values = ("error", "PutObject", "a/b.ts", "http://e", 2, 0.5, 503, ValueError("x"),
              0.25, 1000, 20)
    made = new_event(*values)  # type: ignore[arg-type]
    names = [f.name for f in dataclasses.fields(RequestEvent)]
    assert made == RequestEvent(**dict(zip(names, values, strict=True)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.kind = "start"  # type: ignore[misc]


def _observed(
    server: LocalMediaStore, provider: TracerProvider, registry: CollectorRegistry,
    events: list[RequestEvent], retry: RetryPolicy = DEFAULT_RETRY_POLICY,
) -> Session:
    """A session whose calls are traced, counted, and recorded as events."""
    return Session(
        credentials=KEYS, region=server.region, retry=retry,
        event_hooks=[tracing_hook(provider), metrics_hook(registry), events.append],
    )


async def test_a_cancelled_call_ends_its_span_and_is_counted_at_once(
    served: object, exporter: tuple[TracerProvider, InMemorySpanExporter],
    exposition: type[Exposition],
) -> None:
    """A call cancelled mid-attempt (a timeout around it, a viewer gone) in a task that goes
    on living: its span ends when it is cancelled, not at the task's next call or end, and
    the attempt is counted as cancelled, not as an origin failure."""
    server, _ = served  # type: ignore[misc]
    provider, memory = exporter
    registry = CollectorRegistry()
    events: list[RequestEvent] = []
    server.faults.inject("delay", method="HEAD", path="slow/seg.ts", delay=30)
    async with _observed(server, provider, registry, events) as session:
        store = session.container(server.endpoint)
        with anyio.move_on_after(0.3) as scope:
            await store.describe_object("slow/seg.ts")
        assert scope.cancelled_caught
        # The same task goes on, and makes no further call: the span is already over.
        spans = [s for s in memory.get_finished_spans() if s.name == "DescribeObject"]
        assert len(spans) == 1
        assert spans[0].attributes["error.type"] == "cancelled"  # type: ignore[index]
        assert spans[0].status.status_code is StatusCode.ERROR
        assert [e.kind for e in events] == ["start", "cancelled"]
        assert events[1].error is None and events[1].status is None
        await anyio.sleep(0.1)
        assert len(memory.get_finished_spans()) == 1  # nothing ended twice
    got = exposition.samples(text(registry))
    labels = (("operation", "DescribeObject"), ("status", "cancelled"))
    assert got["msd_requests_total", labels] == 1


class _WaitLong(RetryPolicy):
    """A policy whose wait before a retry is long enough to be cancelled during it."""

    def delay(self, retry_index: int, exc: BaseException, rng: object = None) -> float:
        return 60.0


async def test_a_call_cancelled_while_it_waits_to_retry_ends_its_span_at_once(
    served: object, exporter: tuple[TracerProvider, InMemorySpanExporter],
    exposition: type[Exposition],
) -> None:
    """No attempt is in flight while the call sleeps before a retry, so no attempt event
    can say it ended: an ``abandoned`` event does, and the span ends then, not at the
    task's next call or end. The attempts are counted once each, as the server saw them."""
    server, log = served  # type: ignore[misc]
    provider, memory = exporter
    registry = CollectorRegistry()
    events: list[RequestEvent] = []
    server.faults.inject("503", method="HEAD", path="busy/seg.ts")
    async with _observed(
        server, provider, registry, events, retry=_WaitLong(max_attempts=3)
    ) as session:
        store = session.container(server.endpoint)
        with anyio.move_on_after(0.5) as scope:
            await store.describe_object("busy/seg.ts")
        assert scope.cancelled_caught
        assert [e.kind for e in events] == ["start", "error", "retry", "abandoned"]
        abandoned = events[-1]
        assert abandoned.attempt == 1 and abandoned.elapsed >= events[2].elapsed
        # The same task goes on, and makes no further call: the span is already over.
        (span,) = [s for s in memory.get_finished_spans() if s.name == "DescribeObject"]
        assert span.attributes["error.type"] == "cancelled"  # type: ignore[index]
        assert span.status.status_code is StatusCode.ERROR
        await anyio.sleep(0.1)
        assert len(memory.get_finished_spans()) == 1  # nothing ended twice
    assert [(operation, status) for operation, status, _ in log] == [("DescribeObject", "503")]
    got = exposition.samples(text(registry))
    assert got["msd_requests_total", (("operation", "DescribeObject"), ("status", "503"))] == 1
    assert not any(key[1] == (("operation", "DescribeObject"), ("status", "cancelled"))
                   or key[1] == (("operation", "DescribeObject"), ("status", "error"))
                   for key in got if key[0] == "msd_requests_total")
    assert got["msd_retries_total", (("operation", "DescribeObject"),)] == 1


@pytest.mark.parametrize("kind", ["cancelled", "abandoned"])
async def test_a_hook_failing_on_a_cancelled_call_is_logged_and_the_cancellation_goes_on(
    served: object, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    """Cancelled mid-attempt (the answer is slow), or while it waits to retry (the first
    answer was a 503): the hook's error is logged, the caller sees the cancellation."""
    server, _ = served  # type: ignore[misc]
    if kind == "cancelled":
        server.faults.inject("delay", method="HEAD", path="x/seg.ts", delay=30)
    else:
        server.faults.inject("503", method="HEAD", path="x/seg.ts")

    def fragile(event: RequestEvent) -> None:
        if event.kind == kind:
            raise RuntimeError("the hook's own bug")

    async with Session(
        credentials=KEYS, region=server.region, retry=_WaitLong(max_attempts=3),
        event_hooks=[fragile],
    ) as session:
        with anyio.move_on_after(0.5) as scope:
            await session.container(server.endpoint).describe_object("x/seg.ts")
        assert scope.cancelled_caught  # the cancellation, not the hook's error
        assert session.pool.in_use == 0
    logged = [r for r in caplog.records if r.name == "msd_async.client"]
    expected = ("cancelled DescribeObject" if kind == "cancelled"
                else "DescribeObject cancelled before its retry")
    assert len(logged) == 1 and expected in logged[0].getMessage()
    assert logged[0].exc_info is not None and "the hook's own bug" in str(logged[0].exc_info[1])


class _EncoderCrashed(Exception):
    pass


async def test_a_body_that_fails_ends_its_span_with_its_own_error(
    served: object, exporter: tuple[TracerProvider, InMemorySpanExporter],
    exposition: type[Exposition],
) -> None:
    """A streamed body whose iterator raises (an encoder that crashed) ends the attempt
    with an ``error`` event carrying that exception, as events.py promises: before, the
    hooks saw only ``start``, the attempt was not counted, and the span stayed open until
    the task's next call, which ended it as ``cancelled``."""
    server, _ = served  # type: ignore[misc]
    provider, memory = exporter
    registry = CollectorRegistry()
    events: list[RequestEvent] = []

    async def crashing() -> AsyncIterator[bytes]:
        yield b"first chunk"
        raise _EncoderCrashed("the encoder died")

    async with _observed(server, provider, registry, events) as session:
        store = session.container(server.endpoint)
        with pytest.raises(_EncoderCrashed):
            await store.put_object("crash/seg.ts", crashing(), streaming=True)
        assert [e.kind for e in events] == ["start", "error"]
        assert isinstance(events[1].error, _EncoderCrashed)
        # The same task goes on and makes no further call: the span ends once the retry
        # driver has had its step to announce a retry (none comes).
        await anyio.sleep(0.05)
        (span,) = [s for s in memory.get_finished_spans() if s.name == "PutObject"]
        assert span.attributes["error.type"] == "_EncoderCrashed"  # type: ignore[index]
    got = exposition.samples(text(registry))
    # The client cut its own request (test_exit_paths: ...counted_aborted_not_error).
    assert got["msd_requests_total", (("operation", "PutObject"), ("status", "aborted"))] == 1
    assert server.store.get("crash/seg.ts") is None


class _StartFails(Exception):
    pass


async def test_a_hook_failing_on_start_does_not_leave_the_span_open(
    served: object, exporter: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """The hook's error reaches the caller, nothing is sent, and the hooks that saw the
    attempt start see it end (the span is over, with the hook's error as its type)."""
    server, log = served  # type: ignore[misc]
    provider, memory = exporter

    def failing(event: RequestEvent) -> None:
        if event.kind == "start":
            raise _StartFails("the hook failed")

    async with Session(
        credentials=KEYS, region=server.region, event_hooks=[tracing_hook(provider), failing],
    ) as session:
        with pytest.raises(_StartFails):
            await session.container(server.endpoint).describe_object("v/a.ts")
        await anyio.sleep(0.05)  # as above: no retry is announced
        (span,) = [s for s in memory.get_finished_spans() if s.name == "DescribeObject"]
        assert span.attributes["error.type"] == "_StartFails"  # type: ignore[index]
    assert log == []
