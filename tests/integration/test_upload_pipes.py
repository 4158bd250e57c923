"""put_object of a path that is not a regular file: a FIFO gives its bytes once, as they
come, whatever its size on disk (0) says; a folder is refused before anything is sent."""

from __future__ import annotations

import random
from pathlib import Path

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
    async with Session(
        credentials=mediastore_server.credentials,
        region=mediastore_server.region,
        retry=RetryPolicy(backoff_initial=0.001, backoff_max=0.001),
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
