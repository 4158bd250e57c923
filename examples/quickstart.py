"""Quickstart: every MediaStore operation against the embedded local server.

Run it with ``python examples/quickstart.py``. It starts a MediaStore-compatible server on
127.0.0.1 (real SigV4 verification), then, as a packager would: pushes a segment as a
STREAMING upload from an async generator while a player reads it, publishes the playlist
that names it, lists the folder, fetches a byte range, inspects and deletes objects.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import msd_async
from msd_async.testing import LocalMediaStore


async def encoder(chunks: int, size: int) -> AsyncIterator[bytes]:
    """Stands in for a live encoder: one CMAF-sized chunk every 20 ms."""
    for i in range(chunks):
        await asyncio.sleep(0.02)
        yield bytes([i % 256]) * size


async def main() -> None:
    async with LocalMediaStore() as server:
        print(f"local MediaStore server: {server.endpoint} (region {server.region})")
        async with msd_async.Session(
            credentials=server.credentials, region=server.region
        ) as session:
            store = session.container(server.endpoint)

            # 1. A STREAMING segment upload: each chunk goes out as the encoder yields it,
            #    and a player can read the segment while it is still being written.
            loop = asyncio.get_running_loop()
            first_byte_at: list[float] = []

            async def player() -> bytes:
                while True:
                    try:
                        async with store.get_object("live/720p/seg_00001.m4s") as segment:
                            parts = []
                            async for chunk in segment:
                                first_byte_at.append(loop.time())
                                parts.append(chunk)
                            return b"".join(parts)
                    except msd_async.ObjectNotFoundError:
                        await asyncio.sleep(0.005)

            reader = asyncio.create_task(player())
            put = await store.put_object(
                "live/720p/seg_00001.m4s",
                encoder(chunks=10, size=64 * 1024),
                content_type="video/mp4",
                cache_control="max-age=31536000, immutable",
                streaming=True,
            )
            uploaded_at = loop.time()
            seen = await reader
            print(f"PutObject  live/720p/seg_00001.m4s  {put.size:,} bytes (STREAMING)")
            print(f"           ContentSHA256 {put.content_sha256[:16]}...  ETag {put.etag[:16]}...")
            ok = hashlib.sha256(seen).hexdigest() == put.content_sha256
            lead_ms = (uploaded_at - first_byte_at[0]) * 1000
            print(f"GetObject  read while uploading: {len(seen):,} bytes, sha256 matches: {ok}; "
                  f"first bytes arrived {lead_ms:.0f} ms before the upload finished")

            # 2. The playlist goes after the segment it names (a player must never see a name
            # it cannot fetch; docs/contract.md, "Live publishing"), with a short max-age.
            # A str body is uploaded as its UTF-8 text.
            playlist = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nseg_00001.m4s\n"
            await store.put_object(
                "live/720p/index.m3u8",
                playlist,
                content_type="application/vnd.apple.mpegurl",
                cache_control="max-age=1",
            )
            print("PutObject  live/720p/index.m3u8 (STANDARD)")

            # 3. ListItems follows NextToken for you.
            async for item in store.list_items("live/720p"):
                print(f"ListItems  {item.type:6} {item.name:16} {item.content_length} bytes")

            # 4. A ranged GET comes back as an async stream.
            async with store.get_object("live/720p/seg_00001.m4s", range=(0, 1023)) as obj:
                first_kib = await obj.read()
                print(f"GetObject  range {obj.content_range} -> {len(first_kib)} bytes, "
                      f"status {obj.status}")

            # 5. DescribeObject, then DeleteObject; errors are typed.
            info = await store.describe_object("live/720p/index.m3u8")
            print(f"Describe   index.m3u8: {info.content_type}, {info.content_length} bytes, "
                  f"Cache-Control {info.cache_control!r}")
            await store.delete_object("live/720p/index.m3u8")
            await store.delete_object("live/720p/seg_00001.m4s")
            try:
                await store.describe_object("live/720p/index.m3u8")
            except msd_async.ObjectNotFoundError as exc:
                print(f"Delete     done; describing it again: {type(exc).__name__} ({exc.code})")
            remaining = [item async for item in store.list_items()]
            print(f"ListItems  container root after deletes: {remaining} (empty folders go)")
    print("round trip complete")


if __name__ == "__main__":
    asyncio.run(main())
