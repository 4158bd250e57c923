"""Cold start of one client in a fresh process: import it, then make one DescribeObject.

Started by ``benchmarks/scoreboard.py``: ``python benchmarks/_cold.py CLIENT ENDPOINT``;
prints one JSON line: ``import_ms`` (the import a user writes), ``first_request_ms`` (from
then to the first response: client creation, event loop, connection, signing, parsing) and
``total_ms``. Only ``sys`` and ``time`` are imported before the clock starts, so the
client's import pays for everything it needs (asyncio included).
"""

import sys
import time

REGION = "us-east-1"
AKID, SECRET = "AKIDLOCALMEDIASTORE", "local-mediastore-secret-key"
PATH = "bench/obj0.mp4"


def main() -> None:
    client, endpoint = sys.argv[1], sys.argv[2]
    t0 = time.perf_counter()
    if client == "msd":
        from msd_async import Credentials, Session

        t1 = time.perf_counter()
        import asyncio

        async def first() -> None:
            async with Session(credentials=Credentials(AKID, SECRET), region=REGION) as s:
                await s.container(endpoint).describe_object(PATH)

        asyncio.run(first())
    elif client == "aiohttp":
        import aiohttp

        t1 = time.perf_counter()
        import asyncio

        async def first() -> None:
            async with (
                aiohttp.ClientSession() as session,
                session.head(f"{endpoint}/{PATH}") as resp,
            ):
                await resp.read()

        asyncio.run(first())
    elif client == "aiobotocore":
        from aiobotocore.session import get_session

        t1 = time.perf_counter()
        import asyncio

        async def first() -> None:
            async with get_session().create_client(
                "mediastore-data",
                endpoint_url=endpoint,
                region_name=REGION,
                aws_access_key_id=AKID,
                aws_secret_access_key=SECRET,
            ) as c:
                await c.describe_object(Path=PATH)

        asyncio.run(first())
    elif client == "boto3":
        import boto3

        t1 = time.perf_counter()
        boto3.session.Session().client(
            "mediastore-data",
            endpoint_url=endpoint,
            region_name=REGION,
            aws_access_key_id=AKID,
            aws_secret_access_key=SECRET,
        ).describe_object(Path=PATH)
    elif client == "capo":
        from capo_mediastore_data import AsyncMediaStoreDataClient

        t1 = time.perf_counter()
        import asyncio

        async def first() -> None:
            async with AsyncMediaStoreDataClient(
                endpoint=endpoint,
                region=REGION,
                credentials={"access_key": AKID, "secret_key": SECRET},
            ) as c:
                await c.describe_object(PATH)

        asyncio.run(first())
    else:
        raise SystemExit(f"unknown client {client!r}")
    t2 = time.perf_counter()
    import json

    print(
        json.dumps(
            {
                "client": client,
                "import_ms": (t1 - t0) * 1e3,
                "first_request_ms": (t2 - t1) * 1e3,
                "total_ms": (t2 - t0) * 1e3,
            }
        )
    )


if __name__ == "__main__":
    main()
