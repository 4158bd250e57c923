"""LL-HLS blocking playlist reload: an opt-in extension of the local server (RFC 8216bis
section 6.2.5.2), off by default as MediaStore never had it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import aiohttp
import anyio
import pytest

from msd_async import Session
from msd_async.client import ContainerClient
from msd_async.testing import LocalMediaStore

pytestmark = pytest.mark.anyio


def playlist(segments: int, parts_after: int, *, ended: bool = False) -> bytes:
    lines = ["#EXTM3U", "#EXT-X-TARGETDURATION:1", "#EXT-X-PART-INF:PART-TARGET=0.2",
             "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.6",
             "#EXT-X-MEDIA-SEQUENCE:10", '#EXT-X-MAP:URI="init.mp4"']
    for n in range(segments):
        lines += ["#EXTINF:1.000,", f"seg_{10 + n}.m4s"]
    for p in range(parts_after):
        lines.append(f'#EXT-X-PART:DURATION=0.200,URI="seg_{10 + segments}.part{p}.m4s"')
    if ended:
        lines.append("#EXT-X-ENDLIST")
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
async def blocking() -> AsyncIterator[tuple[LocalMediaStore, ContainerClient]]:
    async with (
        LocalMediaStore(allow_anonymous=["read"], ll_hls_blocking=True) as server,
        Session(credentials=server.credentials, region=server.region) as session,
    ):
        store = session.container(server.endpoint)
        await store.put_object("live/index.m3u8", playlist(2, 1))  # segments 10, 11; 12.0
        yield server, store


async def get(server: LocalMediaStore, query: str) -> tuple[int, bytes, float]:
    started = time.monotonic()
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{server.endpoint}/live/index.m3u8?{query}") as resp,
    ):
        return resp.status, await resp.read(), time.monotonic() - started


async def test_a_part_already_listed_is_answered_at_once(
    blocking: tuple[LocalMediaStore, ContainerClient],
) -> None:
    server, _ = blocking
    status, body, _ = await get(server, "_HLS_msn=12&_HLS_part=0")
    assert status == 200 and body == playlist(2, 1)
    status, body, _ = await get(server, "_HLS_msn=11")
    assert status == 200 and body == playlist(2, 1)


async def test_the_request_is_held_until_the_part_is_published(
    blocking: tuple[LocalMediaStore, ContainerClient],
) -> None:
    server, store = blocking
    answers: list[tuple[int, bytes, float]] = []

    async def ask() -> None:
        answers.append(await get(server, "_HLS_msn=12&_HLS_part=1"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(ask)
        await anyio.sleep(0.5)
        assert not answers  # still held: part 12.1 is not listed yet
        await store.put_object("live/index.m3u8", playlist(2, 2))
    status, body, waited = answers[0]
    assert status == 200 and body == playlist(2, 2)  # never the version lacking the part
    assert waited >= 0.5


async def test_a_completed_segment_satisfies_a_request_for_its_part(
    blocking: tuple[LocalMediaStore, ContainerClient],
) -> None:
    server, store = blocking
    await store.put_object("live/index.m3u8", playlist(3, 0))  # segment 12 complete
    status, _, _ = await get(server, "_HLS_msn=12&_HLS_part=4")
    assert status == 200


async def test_too_far_ahead_is_400_and_a_timeout_is_503(
    blocking: tuple[LocalMediaStore, ContainerClient],
) -> None:
    server, _ = blocking
    status, body, _ = await get(server, "_HLS_msn=15")  # last complete is 11
    assert status == 400 and b"more than two segments" in body
    status, body, waited = await get(server, "_HLS_msn=13")
    # three target durations (1 s) later, without segment 13
    assert status == 503 and 2.5 <= waited < 30, (status, body, waited)


async def test_bad_values_are_400(blocking: tuple[LocalMediaStore, ContainerClient]) -> None:
    server, _ = blocking
    for query in ("_HLS_msn=x", "_HLS_part=1", "_HLS_msn=12&_HLS_part=-1"):
        status, body, _ = await get(server, query)
        assert status == 400, (query, body)


async def test_off_by_default_the_query_is_ignored() -> None:
    async with LocalMediaStore(allow_anonymous=["read"]) as server:
        async with Session(credentials=server.credentials, region=server.region) as session:
            await session.container(server.endpoint).put_object(
                "live/index.m3u8", playlist(2, 1)
            )
        status, body, waited = await get(server, "_HLS_msn=13")
    assert status == 200 and body == playlist(2, 1) and waited < 2.5


async def test_a_held_reload_does_not_hold_close(
    blocking: tuple[LocalMediaStore, ContainerClient],
) -> None:
    """``close()`` while a reload waits for a part: the hold ends at once, unanswered (as
    by a server going away), instead of aiohttp's shutdown grace passing twice (2 s to
    wait for the handler, 2 s more once its request is cancelled, which a hold does not
    notice) before the handler was cancelled."""
    import asyncio

    server, _ = blocking
    held = asyncio.ensure_future(get(server, "_HLS_msn=12&_HLS_part=1"))  # not yet listed
    try:
        await anyio.sleep(0.3)
        assert not held.done()
        started = time.monotonic()
        await server.close()
        assert time.monotonic() - started < 1.0
    finally:
        with pytest.raises(aiohttp.ClientError):  # no answer: the connection ended
            await held
