"""The web helpers refuse a wrong argument where it is given, as an InvalidParameterError
(a ValueError): before, a str upload limit failed every upload with a TypeError (a 500), a
str of allowed types silently allowed none, and an async limit function made a coroutine
that was compared with the request's length."""

from __future__ import annotations

from typing import Any

import pytest

from msd_async import InvalidParameterError
from msd_async.web import check_upload_length, open_object, stored_content_type

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("method", ["POST", 5, None])
async def test_open_object_refuses_a_method_other_than_get_and_head(method: Any) -> None:
    with pytest.raises(InvalidParameterError, match="GET and HEAD"):
        await open_object(object(), "a.ts", method=method)  # type: ignore[arg-type]


@pytest.mark.parametrize("limit", ["1000", 1000.5, True, -1])
def test_check_upload_length_refuses_a_limit_that_is_no_byte_count(limit: Any) -> None:
    with pytest.raises(InvalidParameterError, match="upload limit"):
        check_upload_length({"content-length": "5"}, limit)


def test_allowed_types_given_as_one_str_is_refused() -> None:
    with pytest.raises(InvalidParameterError, match="allowed_types"):
        stored_content_type("a.bin", "video/mp4", allowed_types="video/mp4")
    assert stored_content_type("a.bin", "video/mp4", allowed_types=["video/mp4"]) == "video/mp4"


@pytest.mark.parametrize("shape", ["async def", "str", "negative"])
def test_expect_handler_refuses_a_limit_it_could_not_use(shape: str) -> None:
    pytest.importorskip("aiohttp")
    from msd_async.web.aiohttp import expect_handler

    async def limit_for(request: object) -> int:
        return 1000

    limit: Any = {"async def": limit_for, "str": "1000", "negative": -1}[shape]
    with pytest.raises(InvalidParameterError, match="limit"):
        expect_handler(limit)
    expect_handler(lambda request: 1000)
    expect_handler(1000)


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": "30"}, "limit"),
        ({"limit": 1, "interval": 0}, "interval"),
        ({"limit": 1, "interval": float("nan")}, "interval"),
        ({"limit": None, "alive": "yes"}, "alive"),
    ],
)
async def test_watch_writes_refuses_settings_it_could_not_use(
    options: dict[str, Any], says: str
) -> None:
    """An interval of 0 re-armed the watch's timer at once, forever (a busy loop beside
    the body); an async alive() was a coroutine, always true: a client gone unnoticed."""
    from msd_async.web import watch_writes

    wrote: list[bool] = []

    async def body(watch: object) -> None:
        wrote.append(True)

    with pytest.raises(InvalidParameterError, match=says):
        await watch_writes(body, **options)
    assert not wrote


async def test_watch_writes_refuses_an_async_alive() -> None:
    from msd_async.web import watch_writes

    class Connected:
        async def __call__(self) -> bool:
            return True

    async def body(watch: object) -> None:
        pass

    with pytest.raises(InvalidParameterError, match="alive must be a plain function"):
        await watch_writes(body, 1, alive=Connected())  # type: ignore[arg-type]


async def test_an_alive_check_that_raises_ends_the_watch_as_a_client_gone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """alive() raising in the watch's timer went to the event loop's handler and the
    timer was never re-armed: the body ran on unwatched to its end."""
    import time

    import anyio

    from msd_async.web import watch_writes

    calls: list[int] = []

    def alive() -> bool:
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("socket check bug")
        return True

    async def body(watch: Any) -> None:
        for _ in range(100):
            watch.begin()
            await anyio.sleep(0.01)
            watch.end()

    started = time.monotonic()
    watch = await watch_writes(body, None, alive=alive, interval=0.05)
    assert watch.gone
    assert time.monotonic() - started < 0.5  # the body would take 1 s
    assert "alive()" in caplog.text and "socket check bug" in caplog.text
