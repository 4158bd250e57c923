"""``Limits`` and ``Timeouts`` refuse impossible values when they are built, with a typed
error naming the field, instead of letting every later call fail."""

from __future__ import annotations

import math

import pytest

from msd_async import InvalidParameterError, Limits, MediaStoreError, Timeouts


@pytest.mark.parametrize(
    ("kwargs", "rule"),
    [
        ({"max_connections": 0}, "limits.max_connections"),
        ({"max_connections": -3}, "limits.max_connections"),
        ({"max_connections": 2.5}, "limits.max_connections"),
        ({"max_connections": True}, "limits.max_connections"),
        ({"max_connections_per_host": -1}, "limits.max_connections_per_host"),
        ({"max_connections_per_host": None}, "limits.max_connections_per_host"),
        ({"keepalive_expiry": -1.0}, "limits.keepalive_expiry"),
        ({"keepalive_expiry": math.nan}, "limits.keepalive_expiry"),
    ],
)
def test_bad_limits_are_refused(kwargs: dict[str, object], rule: str) -> None:
    with pytest.raises(InvalidParameterError) as caught:
        Limits(**kwargs)  # type: ignore[arg-type]
    assert isinstance(caught.value, MediaStoreError)
    assert caught.value.rule == rule
    assert next(iter(kwargs)) in str(caught.value)


@pytest.mark.parametrize("field", ["connect", "read", "write", "pool"])
@pytest.mark.parametrize("value", [-1.0, math.nan, "5", True])
def test_bad_timeouts_are_refused(field: str, value: object) -> None:
    with pytest.raises(InvalidParameterError) as caught:
        Timeouts(**{field: value})  # type: ignore[arg-type]
    assert caught.value.rule == f"timeouts.{field}"
    assert field in str(caught.value)


@pytest.mark.parametrize("field", ["connect", "read", "write"])
def test_a_zero_network_timeout_is_refused(field: str) -> None:
    with pytest.raises(InvalidParameterError, match=field):
        Timeouts(**{field: 0})  # type: ignore[arg-type]


def test_good_values_are_kept() -> None:
    limits = Limits(max_connections=1, max_connections_per_host=1, keepalive_expiry=0)
    assert limits.max_connections == 1
    t = Timeouts(connect=None, read=0.01, write=5, pool=0)
    assert (t.connect, t.read, t.write, t.pool) == (None, 0.01, 5, 0)
