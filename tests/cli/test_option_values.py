"""A command-line value out of range, or one the API's rules refuse, is a usage error
(exit 2, the error on one line naming the option) said before any request. Before, these
failed with status 1 once the command ran (a sync's --concurrency 0, presign's
--expires-in 0, get's --range, a --content-type MediaStore refuses, an --exclude pattern
that matches nothing), and ``--max-delete 5`` without ``--delete`` was a failure too."""

from __future__ import annotations

import pytest

from msd_async.cli import main

SRC = "."


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["sync", SRC, "ms:x", "--concurrency", "0"], "--concurrency: must be 1 or more, not 0"),
        (["sync", SRC, "ms:x", "--concurrency", "2.5"], "--concurrency: '2.5' is not a whole"),
        (["sync", SRC, "ms:x", "--delete", "--max-delete", "-1"],
         "--max-delete: must be 0 or more, not -1"),
        (["sync", SRC, "ms:x", "--max-delete", "5"], "--max-delete N needs --delete"),
        (["sync", SRC, "ms:x", "--shard", "x"], "--shard: 'x': write it I/N, for example 0/4"),
        (["sync", SRC, "ms:x", "--exclude", "#x"], "--exclude: filter pattern '#x' matches"),
        (["sync", SRC, "ms:x", "--content-type", "text/html; charset=utf-8"],
         "--content-type: content type"),
        (["sync", SRC, "ms:x", "--cache-control", "a\nb"], "--cache-control: cache control"),
        (["presign", "a.ts", "--expires-in", "0"], "--expires-in: must be 1..604800, not 0"),
        (["presign", "a.ts", "--expires-in", "604801"], "--expires-in: must be 1..604800"),
        (["get", "a.ts", "--range", "bytes=5-1"], "--range: range 'bytes=5-1' ends before"),
        (["put", "-", "a.ts", "--content-type", "a b"], "--content-type: content type 'a b'"),
    ],
)
def test_a_bad_option_value_is_a_usage_error(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Nothing listens on port 9: a command that got as far as a request would fail there.
    monkeypatch.setenv("MSD_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert says in err.strip().splitlines()[-1]


def test_an_empty_content_type_is_still_left_to_the_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from msd_async.cli._common import header_option

    assert header_option("content_type")("") == ""
    assert header_option("range")(" bytes=0-3 ") == "bytes=0-3"
