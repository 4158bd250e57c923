"""The API rules of docs/contract.md ("Names and limits"): every rule, its ``rule`` name,
and generated paths."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from msd_async import (
    ClientValidationError,
    InvalidParameterError,
    InvalidPathError,
    InvalidRangeError,
)
from msd_async.rules import (
    MAX_FOLDER_DEPTH,
    MAX_PATH_LENGTH,
    MAX_RESULTS_LIMIT,
    STANDARD_OBJECT_LIMIT,
    STREAMING_OBJECT_LIMIT,
    check_cache_control,
    check_content_type,
    check_max_results,
    encode_path,
    format_range,
    normalize_folder_path,
    normalize_object_path,
    object_limit,
    parse_range_header,
)

NAME_CHARS = "ABCXYZabcxyz0189._-~=:"
# The User Guide's rule for a name (folders-rules-for-names), written independently of rules.py.
NAME_RE = re.compile(r"[A-Za-z0-9._\-~=:]+")


def rule_of(exc_type: type[ClientValidationError], fn: Any, *args: Any) -> str:
    with pytest.raises(exc_type) as info:
        fn(*args)
    assert isinstance(info.value, ValueError)  # callers may catch ValueError
    assert str(info.value)  # the message says how to fix it
    return info.value.rule


def test_limits() -> None:
    assert (MAX_PATH_LENGTH, MAX_FOLDER_DEPTH, MAX_RESULTS_LIMIT) == (900, 10, 1000)
    assert object_limit("STANDARD") == STANDARD_OBJECT_LIMIT == 25_000_000
    assert object_limit("STREAMING") == STREAMING_OBJECT_LIMIT == 10_000_000


# --- object paths ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "normalized"),
    [
        ("seg.ts", "seg.ts"),
        ("/live/seg.ts", "live/seg.ts"),  # the User Guide's leading slash
        ("live/a=b:c.ts", "live/a=b:c.ts"),  # '=' and ':' are allowed (User Guide)
        ("A-Z_a-z~0.9", "A-Z_a-z~0.9"),
        ("...", "..."),
        (".hidden/..x", ".hidden/..x"),
        ("/".join(["f"] * 10 + ["file"]), "/".join(["f"] * 10 + ["file"])),  # 10 folders
        ("x" * 900, "x" * 900),
        ("/" + "x" * 900, "x" * 900),  # the stripped slash does not count
    ],
)
def test_valid_object_paths(path: str, normalized: str) -> None:
    assert normalize_object_path(path) == normalized


@pytest.mark.parametrize(
    ("path", "rule"),
    [
        ("", "path.empty"),
        ("/", "path.empty"),
        ("//live/seg.ts", "path.empty-segment"),
        ("live//seg.ts", "path.empty-segment"),
        ("live/", "path.empty-segment"),
        ("live/./seg.ts", "path.dot-segment"),
        ("live/../seg.ts", "path.dot-segment"),
        ("..", "path.dot-segment"),
        ("live/seg 1.ts", "path.characters"),
        ("vidéo.ts", "path.characters"),
        ("a+b", "path.characters"),
        ("a%20b", "path.characters"),
        ("a?b", "path.characters"),
        ("a#b", "path.characters"),
        ("a\\b", "path.characters"),
        ("a\nb", "path.characters"),
        ("x" * 901, "path.max-length"),
        ("/".join(["f"] * 11 + ["file"]), "path.max-depth"),  # 11 folders
        (b"live/seg.ts", "path.type"),
        (None, "path.type"),
    ],
)
def test_invalid_object_paths(path: Any, rule: str) -> None:
    assert rule_of(InvalidPathError, normalize_object_path, path) == rule


def test_character_error_names_the_bad_characters() -> None:
    with pytest.raises(InvalidPathError, match=r"' \+'"):
        normalize_object_path("a b+c.ts")


# --- folder paths (ListItems) ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "normalized"),
    [
        (None, ""),
        ("", ""),
        ("/", ""),
        ("live", "live"),
        ("/live", "live"),  # the User Guide's form
        ("live/", "live"),
        ("/live/720p/", "live/720p"),
        ("a=b:c", "a=b:c"),
        ("/".join(["f"] * 10), "/".join(["f"] * 10)),
    ],
)
def test_valid_folder_paths(path: str | None, normalized: str) -> None:
    assert normalize_folder_path(path) == normalized


@pytest.mark.parametrize(
    ("path", "rule"),
    [
        ("//", "path.empty-segment"),
        ("///", "path.empty-segment"),
        ("//live", "path.empty-segment"),
        ("live//", "path.empty-segment"),
        ("a//b", "path.empty-segment"),
        ("a/./b", "path.dot-segment"),
        ("..", "path.dot-segment"),
        ("a b", "path.characters"),
        ("/".join(["f"] * 11), "path.max-depth"),
        ("x" * 901, "path.max-length"),
        (7, "path.type"),
    ],
)
def test_invalid_folder_paths(path: Any, rule: str) -> None:
    assert rule_of(InvalidPathError, normalize_folder_path, path) == rule


# --- encoding ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "encoded"),
    [
        ("live/seg_1-a.b~c.ts", "live/seg_1-a.b~c.ts"),
        ("live/a=b:c.ts", "live/a%3Db%3Ac.ts"),
        # Paths the rules reject still encode as botocore does (serialize.py, safe='/~').
        ("a b+c~d=e%f.ts", "a%20b%2Bc~d%3De%25f.ts"),
        ("ü", "%C3%BC"),
    ],
)
def test_encode_path(path: str, encoded: str) -> None:
    assert encode_path(path) == encoded


# --- generated paths --------------------------------------------------------------------------

_names = st.text(NAME_CHARS, min_size=1, max_size=20).filter(lambda s: s not in (".", ".."))


@given(
    folders=st.lists(_names, max_size=MAX_FOLDER_DEPTH),
    name=_names,
    leading_slash=st.booleans(),
)
def test_generated_valid_object_paths_round_trip(
    folders: list[str], name: str, leading_slash: bool
) -> None:
    path = "/".join([*folders, name])
    normalized = normalize_object_path("/" + path if leading_slash else path)
    assert normalized == path
    assert normalize_object_path(normalized) == normalized
    encoded = encode_path(normalized)
    assert re.fullmatch(r"[A-Za-z0-9_.\-~/%]+", encoded)
    assert unquote(encoded) == normalized
    # Every allowed character but '=' and ':' goes on the wire as it is.
    assert encoded == normalized.replace("=", "%3D").replace(":", "%3A")


@given(folders=st.lists(_names, max_size=MAX_FOLDER_DEPTH), slashes=st.sampled_from(["", "/"]))
def test_generated_valid_folder_paths(folders: list[str], slashes: str) -> None:
    path = "/".join(folders)
    wrapped = slashes + path + slashes if path else slashes  # "//" is an empty segment
    assert normalize_folder_path(wrapped) == path


@given(st.text(max_size=60) | st.text(NAME_CHARS + "/ %é", max_size=60))
def test_generated_paths_are_valid_or_raise_invalid_path_only(path: str) -> None:
    try:
        normalized = normalize_object_path(path)
    except InvalidPathError as exc:
        assert exc.rule.startswith("path.")
    else:
        segments = normalized.split("/")
        assert all(NAME_RE.fullmatch(s) and s not in (".", "..") for s in segments)
        assert len(segments) <= MAX_FOLDER_DEPTH + 1
        assert normalized == (path[1:] if path.startswith("/") else path)
    try:
        folder = normalize_folder_path(path)
    except InvalidPathError as exc:
        assert exc.rule.startswith("path.")
    else:
        assert folder == "" or all(NAME_RE.fullmatch(s) for s in folder.split("/"))


_bad_chars = st.characters(exclude_categories=("Cs",)).filter(
    lambda c: c != "/" and NAME_RE.fullmatch(c) is None
)


@given(st.text(_bad_chars, min_size=1, max_size=3))
def test_generated_bad_characters_rejected(bad: str) -> None:
    assert rule_of(InvalidPathError, normalize_object_path, f"live/a{bad}b.ts") == (
        "path.characters"
    )
    assert quote(bad, safe="") == encode_path(bad)


# --- headers and parameters -----------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "video/MP2T",
        "application/vnd.apple.mpegurl",
        "application/dash+xml",
        "a",
        "x" * 255,
        "text/plain_x-y.z",
    ],
)
def test_valid_content_types(value: str) -> None:
    assert check_content_type(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "text/plain; charset=utf-8",
        "text/plain charset",
        "a=b",
        "x" * 256,
        "vidéo/mp4",
        "text/plain\r\n",
        None,
        b"video/MP2T",
    ],
)
def test_invalid_content_types(value: Any) -> None:
    assert rule_of(InvalidParameterError, check_content_type, value) == "content-type.pattern"


@pytest.mark.parametrize(
    "value", ["max-age=60", "max-age=31536000, immutable", "no-cache", 'private, x="a\tb"']
)
def test_valid_cache_control(value: str) -> None:
    assert check_cache_control(value) == value


@pytest.mark.parametrize("value", ["", "   ", "max-age=1\r\nX-Evil: 1", "é", "a\x00", None])
def test_invalid_cache_control(value: Any) -> None:
    assert rule_of(InvalidParameterError, check_cache_control, value) == "cache-control.value"


@pytest.mark.parametrize("value", [1, 2, 999, 1000])
def test_valid_max_results(value: int) -> None:
    assert check_max_results(value) == value


@pytest.mark.parametrize("value", [0, -1, 1001, True, False, 1.0, "10", None])
def test_invalid_max_results(value: Any) -> None:
    assert rule_of(InvalidParameterError, check_max_results, value) == "max-results.range"


# --- byte ranges ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("byte_range", "header", "parsed"),
    [
        ((0, 99), "bytes=0-99", (0, 99)),
        ((5, 5), "bytes=5-5", (5, 5)),
        ((1048576, None), "bytes=1048576-", (1048576, None)),
        ((0, None), "bytes=0-", (0, None)),
        ((None, 500), "bytes=-500", (None, 500)),
        ("bytes=0-99", "bytes=0-99", (0, 99)),
        ("bytes=10-", "bytes=10-", (10, None)),
        ("bytes=-1", "bytes=-1", (None, 1)),
        ((0, 2**63), f"bytes=0-{2**63}", (0, 2**63)),
    ],
)
def test_valid_ranges(byte_range: Any, header: str, parsed: tuple[int | None, int | None]) -> None:
    assert format_range(byte_range) == header
    assert parse_range_header(header) == parsed


@pytest.mark.parametrize(
    ("byte_range", "rule"),
    [
        ((None, None), "range.form"),
        ((0, 1, 2), "range.form"),
        ([0, 1], "range.form"),
        ((0.0, 1), "range.form"),
        ((True, 1), "range.form"),
        ((0, "1"), "range.form"),
        (5, "range.form"),
        ((-1, 5), "range.negative"),
        ((-1, None), "range.negative"),
        ((5, 4), "range.order"),
        ((None, 0), "range.empty"),
        ((None, -3), "range.empty"),
        ("bytes=5-4", "range.order"),
        ("bytes=-0", "range.empty"),
        ("bytes=0-1,5-6", "range.form"),
        ("bytes=", "range.form"),
        ("bytes=-", "range.form"),
        ("bytes=a-b", "range.form"),
        ("bytes=-1-2", "range.form"),
        ("items=0-1", "range.form"),
        ("0-1", "range.form"),
        ("", "range.form"),
    ],
)
def test_invalid_ranges(byte_range: Any, rule: str) -> None:
    assert rule_of(InvalidRangeError, format_range, byte_range) == rule


@pytest.mark.parametrize("value", ["bytes=0-1,5-6", "bytes=9-1", "bytes=-0", None, "bytes 0-1"])
def test_parse_range_header_rejects(value: Any) -> None:
    with pytest.raises(InvalidRangeError):
        parse_range_header(value)


@given(start=st.integers(0, 2**40), length=st.integers(1, 2**40))
def test_generated_ranges_round_trip(start: int, length: int) -> None:
    end = start + length - 1
    assert parse_range_header(format_range((start, end))) == (start, end)
    assert parse_range_header(format_range((start, None))) == (start, None)
    assert parse_range_header(format_range((None, length))) == (None, length)
