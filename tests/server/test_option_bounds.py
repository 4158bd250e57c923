"""LocalMediaStore and FaultPlan refuse an option that would fail later, inside a request
(a 500 far from the test that set it) or never (a nan delay: no delay), with an
InvalidParameterError (a ValueError, as the options checked before raised)."""

from __future__ import annotations

import gc
import logging
import math
import warnings
from typing import Any

import pytest

from msd_async import InvalidParameterError, Session
from msd_async.testing import FaultPlan, LocalMediaStore

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"standard_limit": 0}, "standard_limit"),
        ({"streaming_limit": 2.5}, "streaming_limit"),
        ({"standard_limit": "3"}, "standard_limit"),
        ({"upload_time_limit": math.nan}, "upload_time_limit"),
        ({"upload_time_limit": -1}, "upload_time_limit"),
        ({"upload_time_limit": "30"}, "upload_time_limit"),
        ({"idle_time_limit": True}, "idle_time_limit"),
        ({"send_time_limit": "30"}, "send_time_limit"),
        ({"clock_skew": math.inf}, "clock_skew"),
        ({"clock_skew": math.nan}, "clock_skew"),
        ({"region": "x y"}, "region 'x y' is not a region name"),
        ({"region": ""}, "region '' is not"),
        ({"port": -1}, "port"),
        ({"port": 70000}, "port"),
        ({"faults": 0.5}, "faults must be a FaultPlan"),
        ({"allow_anonymous": "read"}, "allow_anonymous"),
        ({"on_request": "print"}, "on_request"),
        # Each made every request with a MediaStore-style Host a 404 ContainerNotFound.
        ({"container": ""}, "container '' is not a container name"),
        ({"container": "my.movies"}, "container 'my.movies'"),
        ({"container": "café"}, "container 'café'"),
        ({"container": "x" * 256}, "container 'x"),
        ({"container": 5}, "container 5"),
    ],
)
def test_a_server_option_out_of_range_is_refused(options: dict[str, Any], says: str) -> None:
    with pytest.raises(InvalidParameterError, match=says):
        LocalMediaStore(**options)


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"rate": True}, "rate"),
        ({"rate": "0.5"}, "rate"),
        ({"delay": math.nan}, "delay"),
        ({"delay": "1"}, "delay"),
        ({"history_limit": 2.5}, "history_limit"),
        ({"kinds": "delay"}, "not the str 'delay'"),
    ],
)
def test_a_fault_plan_out_of_range_is_refused(options: dict[str, Any], says: str) -> None:
    with pytest.raises(InvalidParameterError, match=says):
        FaultPlan(**options)


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"times": True}, "times"),
        ({"times": math.nan}, "times"),
        ({"after_bytes": -1}, "after_bytes"),
        ({"after_bytes": "3"}, "after_bytes"),
        ({"delay": math.nan}, "delay"),
        ({"method": 5}, "method"),
        ({"path": 5}, "path"),
    ],
)
def test_an_injected_fault_out_of_range_is_refused(options: dict[str, Any], says: str) -> None:
    plan = FaultPlan()
    with pytest.raises(InvalidParameterError, match=says):
        plan.inject("cut-download", **options)
    assert plan.pick("GET", "a.ts", is_object=True) is None  # nothing half-added


def test_an_infinite_delay_is_a_hung_origin_and_accepted() -> None:
    assert FaultPlan(delay=math.inf).delay == math.inf


async def test_an_async_on_request_is_refused() -> None:
    """It was called after every request and never awaited: the metrics it fed stayed at
    zero, with a RuntimeWarning per request."""

    class Observer:
        async def __call__(self, operation: str, status: str, seconds: float) -> None:
            pass

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InvalidParameterError, match="on_request must be a plain"):
            LocalMediaStore(on_request=Observer())
        gc.collect()
    seen: list[str] = []
    async with LocalMediaStore(on_request=lambda op, status, s: seen.append(status)) as server:
        session = Session(credentials=server.credentials, region=server.region)
        async with session:
            await session.container(server.endpoint).put_object("a.ts", b"x")
    assert seen == ["200"]


async def test_an_on_request_that_raises_is_logged_once_and_the_answers_stand(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """It raised out of the server's middleware, and aiohttp logged "Error handling
    request" with a traceback for every request, naming no callback."""

    def broken(operation: str, status: str, seconds: float) -> None:
        raise RuntimeError("metrics bug")

    caplog.set_level(logging.ERROR)
    async with LocalMediaStore(on_request=broken) as server:
        session = Session(credentials=server.credentials, region=server.region)
        async with session:
            store = session.container(server.endpoint)
            await store.put_object("a.ts", b"x")
            assert await store.get_bytes("a.ts") == b"x"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert errors[0].name == "msd_async.testing.server"
    assert "on_request" in errors[0].getMessage()
    assert server.on_request_failures == 2


@pytest.mark.parametrize("name", ["movies", "my_movies-2", "X" * 255])
def test_a_container_name_the_service_allows_is_taken(name: str) -> None:
    """The control plane's ContainerName rule: 1 to 255 of letters, digits, _ and -."""
    assert LocalMediaStore(container=name).container == name
