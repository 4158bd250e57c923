"""Callbacks called synchronously and never awaited refuse an async one at the boundary, in
every shape Python gives it: an ``async def`` function or method, an object whose
``__call__`` is ``async def``, a ``functools.partial`` of either. Each was taken and then
called, making a coroutine per event that nobody ran: the callback silently did nothing."""

from __future__ import annotations

import functools
import gc
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from msd_async import Credentials, InvalidParameterError, RequestEvent, Session
from msd_async.config import check_plain_callback, is_async_callable
from msd_async.testing import LocalMediaStore

pytestmark = pytest.mark.anyio


async def _async_function(event: object) -> None:
    pass


def _plain_function(event: object) -> None:
    pass


class _AsyncCall:
    async def __call__(self, event: object) -> None:
        pass


class _PlainCall:
    def __call__(self, event: object) -> None:
        pass


class _Methods:
    async def on_async(self, event: object) -> None:
        pass

    def on_plain(self, event: object) -> None:
        pass


ASYNC_SHAPES: dict[str, Callable[[], object]] = {
    "async def": lambda: _async_function,
    "async method": lambda: _Methods().on_async,
    "async __call__": _AsyncCall,
    "partial of async def": lambda: functools.partial(_async_function),
    "partial of async __call__": lambda: functools.partial(_AsyncCall()),
    "partial of partial": lambda: functools.partial(functools.partial(_AsyncCall())),
}
PLAIN_SHAPES: dict[str, Callable[[], object]] = {
    "def": lambda: _plain_function,
    "lambda": lambda: lambda event: None,
    "method": lambda: _Methods().on_plain,
    "__call__": _PlainCall,
    "partial": lambda: functools.partial(_plain_function),
    "builtin": lambda: [].append,
    # Called to construct, never awaited, even though its instances' __call__ is async.
    "class": lambda: _AsyncCall,
}


@pytest.mark.parametrize("shape", ASYNC_SHAPES)
def test_every_shape_of_async_callable_is_refused_naming_the_parameter(shape: str) -> None:
    callback = ASYNC_SHAPES[shape]()
    assert is_async_callable(callback)
    with pytest.raises(InvalidParameterError, match="on_thing must be a plain function") as e:
        check_plain_callback(callback, "on_thing", rule="x.on_thing")
    assert e.value.rule == "x.on_thing"


@pytest.mark.parametrize("shape", PLAIN_SHAPES)
def test_plain_callables_are_accepted(shape: str) -> None:
    callback = PLAIN_SHAPES[shape]()
    assert not is_async_callable(callback)
    check_plain_callback(callback, "on_thing", rule="x.on_thing")


@pytest.mark.parametrize("value", ["print", 5, b"x"])
def test_something_not_callable_is_refused_up_front(value: object) -> None:
    with pytest.raises(InvalidParameterError, match="on_thing must be a function"):
        check_plain_callback(value, "on_thing", rule="x.on_thing")


# --- each public callback, through its own entry point -----------------------------------

_CALLABLE_ONLY = ["async __call__", "partial of async __call__"]


@pytest.mark.parametrize("shape", _CALLABLE_ONLY)
def test_an_async_callable_object_is_refused_by_the_live_publisher(shape: str) -> None:
    from msd_async.live import LivePublisher

    with pytest.raises(InvalidParameterError, match="on_event must be a plain function"):
        LivePublisher(object(), on_event=ASYNC_SHAPES[shape]())  # type: ignore[arg-type]


@pytest.mark.parametrize("shape", _CALLABLE_ONLY)
def test_an_async_callable_object_is_refused_by_relay_and_pusher(
    shape: str, tmp_path: Path
) -> None:
    from msd_async.ingest import FolderPusher, Relay

    callback: Any = ASYNC_SHAPES[shape]()
    with pytest.raises(InvalidParameterError, match="on_object must be a plain function"):
        Relay(object(), port=0, on_object=callback)  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match="on_object must be a plain function"):
        FolderPusher(object(), str(tmp_path), on_object=callback)  # type: ignore[arg-type]


@pytest.mark.parametrize("shape", _CALLABLE_ONLY)
async def test_an_async_callable_object_is_refused_by_the_transfer_before_sending(
    shape: str, mediastore_server: LocalMediaStore, tmp_path: Path
) -> None:
    from msd_async.transfer import upload_tree

    (tmp_path / "a.ts").write_bytes(b"x")
    async with Session(credentials=mediastore_server.credentials,
                       region=mediastore_server.region) as session:
        store = session.container(mediastore_server.endpoint)
        with pytest.raises(InvalidParameterError, match="progress must be a plain function"):
            await upload_tree(store, tmp_path, "t", progress=ASYNC_SHAPES[shape]())
        assert mediastore_server.store.get("t/a.ts") is None


@pytest.mark.parametrize("shape", ["async def", "async __call__"])
async def test_put_object_refuses_an_async_progress_before_sending(
    shape: str, mediastore_server: LocalMediaStore
) -> None:
    # It was called for every chunk and never awaited: no progress, a RuntimeWarning.
    async with Session(credentials=mediastore_server.credentials,
                       region=mediastore_server.region) as session:
        store = session.container(mediastore_server.endpoint)
        with pytest.raises(InvalidParameterError, match="progress must be a plain function"):
            await store.put_object("p.ts", b"x" * 100, progress=ASYNC_SHAPES[shape]())
        assert mediastore_server.store.get("p.ts") is None
        assert session.pool.in_use == 0


async def test_a_progress_returning_a_coroutine_fails_the_upload_unsent(
    mediastore_server: LocalMediaStore,
) -> None:
    """A lambda around an async function passes the check (it is no coroutine function):
    each chunk made a coroutine nobody ran. Its first result now fails the upload, as a
    progress callback's error does: raised as is, nothing stored, nothing left unawaited."""
    async with Session(credentials=mediastore_server.credentials,
                       region=mediastore_server.region) as session:
        store = session.container(mediastore_server.endpoint)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(InvalidParameterError, match="returned <coroutine"):
                await store.put_object("p.ts", [b"x"] * 3,
                                       progress=lambda sent: _async_function(sent))
            gc.collect()
        assert mediastore_server.store.get("p.ts") is None
        assert session.pool.in_use == 0


@pytest.mark.parametrize("shape", ["async def", "async __call__"])
def test_a_session_refuses_an_async_event_hook(shape: str) -> None:
    hook: Any = ASYNC_SHAPES[shape]()
    keys = Credentials("AKIDEXAMPLE", "secret")
    with pytest.raises(InvalidParameterError, match="event hook must be a plain function"):
        Session(credentials=keys, region="us-east-1", event_hooks=[_plain_function, hook])
    session = Session(credentials=keys, region="us-east-1")
    with pytest.raises(InvalidParameterError, match="event hook must be a plain function"):
        session.event_hooks = [hook]
    assert session.event_hooks == []
    with pytest.raises(InvalidParameterError, match="event_hooks must be a list"):
        Session(credentials=keys, region="us-east-1",
                event_hooks=_plain_function)  # type: ignore[arg-type]


async def test_an_async_hook_appended_later_fails_the_call_instead_of_seeing_nothing(
    mediastore_server: LocalMediaStore,
) -> None:
    """``session.event_hooks`` is a list to append to, past the Session's check: the hook's
    coroutine was dropped at every event (the events it asked for were lost, with a
    RuntimeWarning at best). Now its first event fails the call, as a hook's error does,
    and the plain hook beside it still hears how the attempt ends."""
    seen: list[str] = []

    def plain(event: RequestEvent) -> None:
        seen.append(event.kind)

    async with Session(credentials=mediastore_server.credentials,
                       region=mediastore_server.region, event_hooks=[plain]) as session:
        store = session.container(mediastore_server.endpoint)
        session.event_hooks.append(_AsyncCall())  # type: ignore[arg-type]
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(InvalidParameterError, match=r"event hook .*returned <coroutine"):
                await store.put_object("h.ts", b"x")
            gc.collect()  # a coroutine dropped unawaited would warn here
        assert seen == ["start", "error"]
        assert mediastore_server.store.get("h.ts") is None
        session.event_hooks.pop()
        await store.put_object("h.ts", b"x")
        assert seen[-1] == "response"


async def test_an_async_body_factory_is_refused_before_sending(
    mediastore_server: LocalMediaStore,
) -> None:
    """A callable body must return an async iterable; an ``async def`` one returns a
    coroutine, which was found only once the upload began, and dropped unawaited."""

    async def chunks() -> list[bytes]:
        return [b"x"]

    async with Session(credentials=mediastore_server.credentials,
                       region=mediastore_server.region) as session:
        store = session.container(mediastore_server.endpoint)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(ValueError, match="async generator"):
                await store.put_object("b.ts", chunks)
            with pytest.raises(ValueError, match="returned coroutine"):
                await store.put_object("b.ts", lambda: chunks())
            gc.collect()
        assert mediastore_server.store.get("b.ts") is None


# --- a lambda around an async function passes the check: its result is caught -----------


async def test_an_on_event_returning_a_coroutine_is_logged_not_dropped(
    mediastore_server: LocalMediaStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Each event made a coroutine nobody ran: the application saw no event, and no error
    said why. Now it is the callback's error, logged as on_event's are."""
    from msd_async.live import LivePublisher

    async with Session(credentials=mediastore_server.credentials,
                       region=mediastore_server.region) as session:
        store = session.container(mediastore_server.endpoint)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            async with LivePublisher(
                store, on_event=lambda event: _async_function(event)
            ) as publisher:
                await (await publisher.publish("a.m4s", b"x", duration=2.0)).wait()
                assert publisher._recorder.callback_errors >= 2  # queued, sent, acknowledged
            gc.collect()
    assert "returned <coroutine" in caplog.text


def test_an_on_object_returning_a_coroutine_is_logged_not_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from msd_async.ingest._report import Reporter

    reporter = Reporter(lambda record: _async_function(record))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reporter.record("PUT", "a.ts", 1, 0.0, "acknowledged")
        gc.collect()
    assert "on_object callback raised" in caplog.text
    assert "returned <coroutine" in caplog.text


async def test_an_on_request_returning_a_coroutine_is_logged_not_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        async with LocalMediaStore(
            on_request=lambda operation, status, seconds: _async_function(status)
        ) as server:
            session = Session(credentials=server.credentials, region=server.region)
            async with session:
                await session.container(server.endpoint).put_object("a.ts", b"x")
        gc.collect()
    assert server.on_request_failures == 1
    assert "returned <coroutine" in caplog.text
