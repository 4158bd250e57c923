"""Edges of the observability layer: what /readyz, the JSON log lines, the metrics and the
spans promise (docs/observability.md) on the paths the main tests do not take."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ingest_harness import aws_env
from prometheus_client import CollectorRegistry, generate_latest

from msd_async import (
    Credentials,
    CredentialsError,
    ObjectTooLargeError,
    RetryPolicy,
    Session,
)
from msd_async.cli._observe import MAX_LINE_BYTES, Readiness, json_line
from msd_async.prometheus import metrics_hook
from msd_async.testing import LocalMediaStore

if TYPE_CHECKING:
    from conftest import Exposition

pytestmark = pytest.mark.anyio

ACCESS, SECRET = "AKIDOBSERVEEDGE000000", "observe-edge-secret-key-0000000000000000"
KEYS = Credentials(ACCESS, SECRET)


@pytest.fixture
async def server() -> AsyncIterator[LocalMediaStore]:
    async with LocalMediaStore(credentials=KEYS) as served:
        yield served


async def test_a_body_the_client_refuses_mid_upload_is_not_the_origin_failing(
    server: LocalMediaStore,
) -> None:
    """A streamed body that passes the object limit is aborted by the client (the origin
    never got to answer): /readyz of a relay whose encoder sent an oversized segment must
    not say the origin failed, as it would for a cut connection or a 5xx."""

    async def oversized() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"x" * 1000

    async with Session(credentials=KEYS, region=server.region) as session:
        store = session.container(server.endpoint, standard_limit=2000)
        readiness = Readiness(store.endpoint)
        session.event_hooks.append(readiness)
        await store.put_object("live/ok.ts", b"1")
        assert readiness.state() == (True, "ok")
        with pytest.raises(ObjectTooLargeError):
            await store.put_object("live/huge.ts", oversized())
        assert readiness.state() == (True, "ok")
        # A real failure of the origin still shows.
        server.faults.inject("503", method="PUT", path="live/next.ts", times=None)
        with pytest.raises(Exception):  # noqa: B017 - the reason is checked below
            await store.put_object("live/next.ts", b"2")
        ready, reason = readiness.state()
        assert not ready and "PutObject" in reason and "503" in reason


def json_lines(data: bytes) -> list[dict[str, object]]:
    """Every line: valid UTF-8, one JSON object."""
    out = []
    for raw in data.splitlines():
        entry = json.loads(raw.decode("utf-8"))  # strict: a raw 0xff byte fails here
        assert isinstance(entry, dict) and {"ts", "level", "event"} <= entry.keys()
        out.append(entry)
    return out


def _folder_with_a_name_not_utf8(local: Path) -> Path:
    local.mkdir()
    (local / "kept.ts").write_bytes(b"k")
    Path(os.fsdecode(os.path.join(os.fsencode(local), b"a\xffb.ts"))).write_bytes(b"x")
    return local


async def test_json_lines_stay_utf8_for_a_file_name_that_is_not(
    server: LocalMediaStore, tmp_path: Path
) -> None:
    """A local file whose name is not UTF-8 (Python holds it with surrogates): `msd sync
    --log-format json` named it in a line holding the raw byte, which no UTF-8 log
    pipeline reads as JSON."""
    async with Session(credentials=KEYS, region=server.region) as session:
        await session.container(server.endpoint).put_object("d/kept.ts", b"k")
    local = _folder_with_a_name_not_utf8(tmp_path / "local")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "msd_async.cli", "sync", "--endpoint", server.endpoint,
        "--region", server.region, "--no-record", "--log-format", "json", "--delete",
        "--dry-run", "ms:d", str(local),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=aws_env(AWS_ACCESS_KEY_ID=ACCESS, AWS_SECRET_ACCESS_KEY=SECRET),
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err
    lines = json_lines(out)
    deleted = [entry["path"] for entry in lines if entry["event"] == "would-delete"]
    assert deleted == ["a\\xffb.ts"]  # the byte, visible, in a valid line


def test_a_record_logging_cannot_format_is_still_one_json_line() -> None:
    """A third-party logger's bad format string, or an argument whose __str__ raises: the
    standard handler prints a multi-line "--- Logging error ---" traceback instead, and
    the stream is no longer one JSON object per line."""
    code = (
        "import argparse, logging\n"
        "from msd_async.cli import _observe\n"
        "class Unprintable:\n"
        "    def __str__(self): raise RuntimeError('no text')\n"
        "    def __repr__(self): raise RuntimeError('no repr')\n"
        "_observe.configure_logging(argparse.Namespace(log_format='json'))\n"
        "log = logging.getLogger('some.library')\n"
        "log.warning('expected a number: %d', 'text')\n"
        "log.warning('object: %s', Unprintable())\n"
        "log.warning('a name %s\\nover two lines', 'b\\udcffc')\n"
        "print(_observe.json_line('object', path='x', error=Unprintable()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, timeout=60, check=True
    )
    logged = json_lines(out.stderr)
    assert len(logged) == 3
    assert all(entry["logger"] == "some.library" for entry in logged)
    assert "expected a number: %d" in str(logged[0]["message"])
    assert "object: %s" in str(logged[1]["message"])
    assert logged[2]["message"] == "a name b\\xffc\nover two lines"
    (printed,) = json_lines(out.stdout)
    assert printed["error"] == "<unprintable Unprintable>"


class _KeysGone:
    """A credentials provider whose source has gone (an expired role, a deleted file)."""

    async def get_credentials(self) -> Credentials:
        raise OSError("the credentials file is gone")


async def test_a_call_whose_keys_could_not_be_had_is_not_counted_as_no_answer(
    exposition: type[Exposition],
) -> None:
    """No request went out, so no answer could fail to come: counted as ``error`` (docs:
    connection refused or cut, timeout), it sent operators to the network, and its
    duration (the provider's) went into the request histogram."""
    log: list[tuple[str, str, float]] = []
    registry = CollectorRegistry()
    async with (
        LocalMediaStore(credentials=KEYS, on_request=lambda *entry: log.append(entry)) as server,
        Session(
            credentials=_KeysGone(), region=server.region, retry=RetryPolicy.none(),
            event_hooks=[metrics_hook(registry)],
        ) as session,
    ):
        with pytest.raises(CredentialsError):
            await session.container(server.endpoint).describe_object("live/a.ts")
        # The same server counts a request that does reach it: the oracle is live.
        async with Session(credentials=KEYS, region=server.region) as working:
            await working.container(server.endpoint).list_items_page()
    assert [operation for operation, _, _ in log] == ["ListItems"]
    got = exposition.samples(generate_latest(registry).decode())
    counted = {
        dict(labels)["status"]: value
        for (name, labels), value in got.items() if name == "msd_requests_total"
    }
    assert counted == {"unsent": 1}
    assert not any(name == "msd_request_duration_seconds_count" for name, _ in got)


def test_a_long_record_stays_one_json_line_under_16_kib() -> None:
    """Docker's log copier cuts a line over 16 KiB into partial messages (moby/moby#32923),
    and a collector then sees two halves that are not JSON: a deep traceback, or a message
    naming something long, must still be one valid line, its start kept, marked cut."""
    code = (
        "import argparse, logging, sys\n"
        "from msd_async.cli import _observe\n"
        "_observe.configure_logging(argparse.Namespace(log_format='json'))\n"
        "log = logging.getLogger('some.library')\n"
        "def deep(n):\n"
        "    try:\n"
        "        if n == 0: raise ValueError('at the bottom')\n"
        "        deep(n - 1)\n"
        "    except ValueError as exc:\n"
        "        raise ValueError(f'failed at depth {n}') from exc\n"
        "try:\n"
        "    deep(100)\n"
        "except ValueError:\n"
        "    log.exception('a deep failure')\n"
        "log.warning('wide: %s', '\\u20ac' * 20000)\n"
        "log.warning('short and whole')\n"
        "print(_observe.json_line('object', path='p/' + 'x' * 40000, detail='d' * 9000))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, timeout=60, check=True
    )
    lines = out.stderr.splitlines() + out.stdout.splitlines()
    assert len(lines) == 4
    assert all(len(line) + 1 <= 16 * 1024 for line in lines), [len(x) for x in lines]
    deep, wide, short = json_lines(out.stderr)
    assert deep["message"].startswith("a deep failure Traceback (most recent call last):")
    assert deep["truncated"] is True and "characters cut" in deep["message"]
    assert wide["message"].startswith("wide: \u20ac\u20ac") and wide["truncated"] is True
    assert short == {**short, "message": "short and whole"} and "truncated" not in short
    (printed,) = json_lines(out.stdout)
    assert printed["path"].startswith("p/xxx") and printed["truncated"] is True
    assert printed["event"] == "object" and printed["level"] == "info"


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.from_regex(r"[a-z_]{1,12}", fullmatch=True),
        st.one_of(
            st.text(max_size=30) | st.integers(),
            st.builds(lambda c, n: c * n, st.characters(), st.integers(1, 20_000)),
        ),
        max_size=40,
    )
)
def test_every_json_line_fits_and_keeps_what_fits(fields: dict[str, object]) -> None:
    fields = {k: v for k, v in fields.items() if k not in ("ts", "level", "event")}
    text = json_line("event", "info", **fields)
    assert len(text.encode()) + 1 <= MAX_LINE_BYTES
    entry = json.loads(text)
    # A lone surrogate (a file name's byte that is not UTF-8) is shown escaped, as
    # docs/observability.md says: "\\xNN" for a byte, "\\uNNNN" for any other.
    shown = {k: _escaped_surrogates(v) if isinstance(v, str) else v for k, v in fields.items()}
    if "truncated" not in entry:
        assert entry == {"ts": entry["ts"], "level": "info", "event": "event", **shown}
    else:
        for key, value in shown.items():  # each field is whole, or its start, marked cut
            if entry[key] != value:
                assert isinstance(value, str) and entry[key].endswith(" characters cut]")
                kept = entry[key].rsplit("... [", 1)[0]
                assert value.startswith(kept[: max(0, len(kept) - 6)])  # an escape may be cut


def _escaped_surrogates(value: str) -> str:
    def escape(match: re.Match[str]) -> str:
        code = ord(match.group())
        return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"

    return re.sub("[\ud800-\udfff]", escape, value)


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["serve", "--log-format", "json", "--port", "abc"], "argument --port: invalid int"),
        (["relay", "--log-format=json", "--no-such-option"], "unrecognized arguments"),
    ],
)
def test_a_usage_error_is_a_json_line_when_json_is_asked_for(
    args: list[str], said: str
) -> None:
    """argparse's errors come before --log-format is parsed: they printed its usage text,
    which a pipeline reading JSON lines cannot read."""
    out = subprocess.run(
        [sys.executable, "-m", "msd_async.cli", *args],
        capture_output=True, timeout=60, check=False,
    )
    assert out.returncode == 2
    (line,) = json_lines(out.stderr)
    assert line["event"] == "usage-error" and line["level"] == "error"
    assert said in str(line["error"]) and str(line["error"]).startswith("msd")
    text = subprocess.run(
        [sys.executable, "-m", "msd_async.cli",
         *[a for a in args if a not in ("--log-format", "json", "--log-format=json")]],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert text.returncode == 2 and text.stderr.startswith("usage: msd")
