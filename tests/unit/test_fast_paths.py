"""The hot path's shortcuts give exactly what the general code gives.

Request building and signing skip work for the common case (a plain path, a valid
``(first, last)`` range, a header value with nothing to fold); these compare each shortcut
with the general rule it stands for, on generated inputs.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from msd_async import rules
from msd_async.errors import InvalidPathError, InvalidRangeError
from msd_async.signing import canonical_headers, canonical_uri

# Allowed path characters, the ones that must be encoded, dots, slashes, and a few that
# are refused: every branch of the path checks.
PATH_CHARS = st.sampled_from("aZ09._-~=:/%é \t")
paths = st.text(PATH_CHARS, max_size=40) | st.builds(
    lambda n: "/".join(["s"] * n), st.integers(1, 14)
)


def _checked_segment_by_segment(path: str) -> str:
    """normalize_object_path without its shortcut: the checks one by one."""
    stripped = path[1:] if path.startswith("/") else path
    if not stripped:
        raise InvalidPathError("empty", rule="path.empty")
    if len(stripped) > rules.MAX_PATH_LENGTH:
        raise InvalidPathError("long", rule="path.max-length")
    segments = stripped.split("/")
    rules._check_segments(stripped, segments, path)
    if len(segments) - 1 > rules.MAX_FOLDER_DEPTH:
        raise InvalidPathError("deep", rule="path.max-depth")
    return stripped


def _outcome(fn: object, arg: object) -> tuple[str, str]:
    try:
        return ("ok", fn(arg))  # type: ignore[operator]
    except (InvalidPathError, InvalidRangeError) as exc:
        return ("error", exc.rule)


@given(paths)
def test_object_path_shortcut_agrees_with_the_checks(path: str) -> None:
    assert _outcome(rules.normalize_object_path, path) == _outcome(
        _checked_segment_by_segment, path
    )


def test_object_path_length_and_depth_limits_hold_on_the_shortcut() -> None:
    assert rules.normalize_object_path("/".join(["d"] * 11)) == "/".join(["d"] * 11)
    with pytest.raises(InvalidPathError) as info:
        rules.normalize_object_path("/".join(["d"] * 12))
    assert info.value.rule == "path.max-depth"
    with pytest.raises(InvalidPathError) as info:
        rules.normalize_object_path("a" * (rules.MAX_PATH_LENGTH + 1))
    assert info.value.rule == "path.max-length"


@given(st.text(PATH_CHARS, max_size=40))
def test_encode_path_is_quote(path: str) -> None:
    assert rules.encode_path(path) == quote(path, safe="/~")


def _range_the_long_way(value: object) -> tuple[str, str]:
    start, end = value  # type: ignore[misc]
    if end < start:
        return ("error", "range.order")
    return ("ok", f"bytes={start}-{end}")


ints = st.integers(-3, 10**12)


@given(ints, ints)
def test_format_range_shortcut(start: int, end: int) -> None:
    expected = ("error", "range.negative") if start < 0 else _range_the_long_way((start, end))
    assert _outcome(rules.format_range, (start, end)) == expected


def test_format_range_refuses_bools_and_floats_as_before() -> None:
    for bad in ((True, 5), (0, 5.0), (0, True)):
        with pytest.raises(InvalidRangeError):
            rules.format_range(bad)  # type: ignore[arg-type]


@given(st.text(st.sampled_from("/a%~=:é .-_"), max_size=30))
def test_canonical_uri_shortcut_is_quote(path: str) -> None:
    path = "/" + path
    if "//" in path or "/." in path:
        return  # normalised: not the shortcut's case
    assert canonical_uri(path) == quote(path, safe="/~")


# ASCII and Unicode white space str.split() folds, and characters it does not.
values = st.text(
    st.sampled_from("ab= \t\n\x0b\x0c\r\x1c\x1f\x85\xa0\u2000\u2028\u3000é"), max_size=12
)


@given(st.dictionaries(st.sampled_from(["host", "range", "x-amz-date", "x-a"]), values))
def test_canonical_headers_fold_white_space_like_botocore(headers: dict[str, str]) -> None:
    block, signed = canonical_headers(headers)
    names = sorted(headers)
    assert block == "".join(f"{n}:{' '.join(headers[n].split())}\n" for n in names)
    assert signed == ";".join(names)
