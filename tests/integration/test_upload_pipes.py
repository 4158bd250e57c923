"""put_object of a path that is not a regular file: a FIFO gives its bytes once, as they
come, whatever its size on disk (0) says; a folder is refused before anything is sent."""

from __future__ import annotations

import contextlib
import functools
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from fifo_writer import feeding

from msd_async import (
    ClientValidationError,
    ContainerClient,
    RetryPolicy,
    Session,
    UnreplayableBodyError,
)
from msd_async.testing import LocalMediaStore

pytestmark = pytest.mark.anyio

#: More than one 1 MiB read and far more than a pipe holds (64 KiB).
DATA = random.Random(11).randbytes(3 * 1024 * 1024 + 77)


@pytest.mark.parametrize("streaming", [False, True], ids=["STANDARD", "STREAMING"])
async def test_a_fifo_is_uploaded_whole(
    mediastore_client: ContainerClient, tmp_path: Path, streaming: bool
) -> None:
    fifo = tmp_path / "fifo"
    body = DATA[: 2 * 1024 * 1024] if streaming else DATA  # STREAMING objects: 10 MB
    with feeding(fifo, body) as broken:
        result = await mediastore_client.put_object(
            "pipes/a.bin", fifo, streaming=streaming, verify=True
        )
    assert broken == []
    assert result.size == len(body)
    assert await mediastore_client.get_bytes("pipes/a.bin") == body


async def test_a_fifo_is_one_shot_unless_replay_buffer(
    mediastore_server: LocalMediaStore, tmp_path: Path
) -> None:
    async with _session(
        mediastore_server, retry=RetryPolicy(backoff_initial=0.001, backoff_max=0.001)
    ) as session:
        store = session.container(mediastore_server.endpoint)
        mediastore_server.faults.inject(
            "cut-upload", method="PUT", path="pipes/once.bin", after_bytes=100_000
        )
        with (
            feeding(tmp_path / "once", DATA),
            pytest.raises(UnreplayableBodyError, match=r"replay_buffer=True"),
        ):
            await store.put_object("pipes/once.bin", tmp_path / "once")
        assert mediastore_server.store.get("pipes/once.bin") is None

        mediastore_server.faults.inject(
            "cut-upload", method="PUT", path="pipes/kept.bin", after_bytes=100_000
        )
        with feeding(tmp_path / "kept", DATA) as broken:
            result = await store.put_object(
                "pipes/kept.bin", tmp_path / "kept", replay_buffer=True
            )
        assert broken == []
        assert result.size == len(DATA)
        assert await store.get_bytes("pipes/kept.bin") == DATA


async def test_a_folder_is_refused_before_sending(
    mediastore_client: ContainerClient, tmp_path: Path
) -> None:
    with pytest.raises(ClientValidationError) as caught:
        await mediastore_client.put_object("pipes/dir.bin", tmp_path)
    assert caught.value.rule == "body.file" and "is a folder" in str(caught.value)


# --- cancellation while the pipe gives nothing ---------------------------------------------
#
# A read of a pipe whose writer stalls (or that has no writer yet) never returns by itself.
# A cancelled upload must end at once anyway, store nothing and give its connection back,
# and the process must be able to exit while such a read is still blocked.


async def test_an_upload_waiting_for_a_fifo_writer_ends_when_cancelled(
    mediastore_server: LocalMediaStore, tmp_path: Path
) -> None:
    fifo = tmp_path / "nobody-writes"
    os.mkfifo(fifo)
    async with _session(mediastore_server) as session:
        store = session.container(mediastore_server.endpoint)
        started = time.monotonic()
        with anyio.move_on_after(0.3) as scope:
            await store.put_object("pipes/never.bin", fifo)
        assert scope.cancelled_caught
        # Within a generous margin of the 0.3 s: it ends, rather than waiting for a writer.
        assert time.monotonic() - started < 10
        assert session.pool.in_use == 0
    assert mediastore_server.store.get("pipes/never.bin") is None
    _release_blocked_open(fifo)


@pytest.mark.parametrize("streaming", [False, True], ids=["STANDARD", "STREAMING"])
async def test_an_upload_of_a_stalled_fifo_ends_when_cancelled(
    mediastore_server: LocalMediaStore, tmp_path: Path, streaming: bool
) -> None:
    fifo = tmp_path / "stalls"
    os.mkfifo(fifo)
    wrote = threading.Event()
    release = threading.Event()

    def stalling_writer() -> None:
        with open(fifo, "wb") as out:
            out.write(b"first bytes")
            out.flush()
            wrote.set()
            release.wait(30)  # the writer holds the pipe open and sends nothing more

    writer = threading.Thread(target=stalling_writer, daemon=True)
    writer.start()
    try:
        async with _session(mediastore_server) as session:
            store = session.container(mediastore_server.endpoint)
            with anyio.move_on_after(10) as scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(
                        functools.partial(
                            store.put_object, "pipes/stalled.bin", fifo, streaming=streaming
                        )
                    )
                    await anyio.to_thread.run_sync(wrote.wait, 10)
                    await anyio.sleep(0.2)  # the upload is now waiting in a read
                    started = time.monotonic()
                    tg.cancel_scope.cancel()
            assert not scope.cancelled_caught, "the cancelled upload did not end"
            assert time.monotonic() - started < 5
            assert session.pool.in_use == 0
        assert mediastore_server.store.get("pipes/stalled.bin") is None
    finally:
        release.set()
        writer.join(10)


def _session(server: LocalMediaStore, **options: Any) -> Session:
    """A session of its own on ``server``: these tests look at its pool or its retries."""
    return Session(credentials=server.credentials, region=server.region, **options)


def _release_blocked_open(fifo: Path) -> None:
    """A thread left in open() of ``fifo``, waiting for a writer: opening the write end once
    lets it return (it then reads an empty pipe and ends)."""
    with contextlib.suppress(OSError):  # ENXIO: no reader is waiting
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
