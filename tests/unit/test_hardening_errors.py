"""Exceptions travel between processes intact, and the package shadows no builtin."""

from __future__ import annotations

import builtins
import pickle
import subprocess
import sys
from typing import Any

import pytest

import msd_async
from msd_async import errors

ERROR_CLASSES = [
    getattr(errors, name)
    for name in errors.__all__
    if isinstance(getattr(errors, name), type) and issubclass(getattr(errors, name), Exception)
]


def _make(cls: type[errors.MediaStoreError]) -> errors.MediaStoreError:
    """An instance of ``cls`` with every field set to a non-default value."""
    if issubclass(cls, errors.ObjectTooLargeError):
        return cls("too big", rule="body.max-size.standard", limit=10, size=11)
    if issubclass(cls, errors.ClientValidationError):
        return cls("bad argument", rule="some.rule")
    if issubclass(cls, errors.ServiceError):
        exc = cls(
            "it failed",
            code=cls.CODE or "SomeCode",
            status=503,
            request_id="rid-1",
            attempts=3,
            retry_after=2.5,
            body=b"<html>busy</html>",
            headers={"Content-Type": "text/html", "x-amzn-RequestId": "rid-1"},
        )
        if isinstance(exc, errors.RangeNotSatisfiableError):
            exc.object_size = 1234
        return exc
    if issubclass(cls, errors.ObjectChangedError):
        return cls("changed", expected_etag="aa", actual_etag="bb")
    if issubclass(cls, errors.ChecksumMismatchError):
        return cls("mismatch", expected="11", actual="22")
    return cls("went wrong", attempts=2)


def test_every_exported_error_class_is_covered() -> None:
    assert len(ERROR_CLASSES) >= 30
    assert all(issubclass(cls, errors.MediaStoreError) for cls in ERROR_CLASSES)


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_error_pickles_with_type_and_fields(cls: type[errors.MediaStoreError]) -> None:
    original = _make(cls)
    original.attempts = 4
    original.add_note("msd_async: not retried: a note")
    copy: Any = pickle.loads(pickle.dumps(original))
    assert type(copy) is cls
    assert str(copy) == str(original)
    assert copy.args == original.args
    assert vars(copy) == vars(original)
    assert copy.attempts == 4
    assert copy.__notes__ == ["msd_async: not retried: a note"]


def test_range_not_satisfiable_keeps_object_size_through_pickle() -> None:
    exc = _make(errors.RangeNotSatisfiableError)
    copy = pickle.loads(pickle.dumps(exc))
    assert copy.object_size == 1234


def test_the_unsent_and_unwritten_markers_survive_pickle() -> None:
    """A SessionClosedError raised before sending is marked per instance (the retry
    driver does not count its attempt); the mark crosses a process boundary with it."""
    closed = errors.SessionClosedError("closed", unsent=True)
    copy = pickle.loads(pickle.dumps(closed))
    assert copy.unsent and copy.unwritten
    assert not errors.SessionClosedError("closed").unsent
    lost = errors.ConnectionLostError("refused before writing")
    lost.unwritten = True
    assert pickle.loads(pickle.dumps(lost)).unwritten
    assert not errors.ConnectionLostError("cut").unwritten
    assert errors.ConnectError("refused").unwritten and not errors.ConnectError("r").unsent


def test_no_exported_name_shadows_a_builtin() -> None:
    shadowing = [name for name in msd_async.__all__ if hasattr(builtins, name)]
    assert shadowing == []
    assert "TimeoutError" not in errors.__all__


def test_star_import_keeps_the_builtin_timeout_error() -> None:
    code = (
        "import asyncio, builtins\n"
        "from msd_async import *\n"
        "assert TimeoutError is builtins.TimeoutError, TimeoutError\n"
        "async def main():\n"
        "    try:\n"
        "        async with asyncio.timeout(0):\n"
        "            await asyncio.sleep(1)\n"
        "    except TimeoutError:\n"
        "        return 'caught'\n"
        "print(asyncio.run(main()))\n"
        "assert issubclass(ReadTimeout, MediaStoreTimeout)\n"
        "assert issubclass(MediaStoreTimeout, builtins.TimeoutError)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "caught"


@pytest.mark.parametrize(
    "cls",
    [
        errors.ConnectTimeout,
        errors.ReadTimeout,
        errors.WriteTimeout,
        errors.PoolTimeout,
        errors.DeadlineExceeded,
    ],
)
def test_timeouts_stay_under_one_base_and_the_builtin(cls: type[Exception]) -> None:
    assert issubclass(cls, errors.MediaStoreTimeout)
    assert issubclass(cls, errors.TransportError)
    assert issubclass(cls, builtins.TimeoutError)
