"""Scale-out: one tree sync spread over N workers with ``shard=(i, n)``.

Run it with ``python examples/scale_out.py``. It starts the local MediaStore-compatible
server, makes a tree of 120 small files, then runs four workers as four separate processes
(``python examples/scale_out.py --worker I --of 4``), as a Kubernetes indexed Job, GNU
parallel or a Ray/Dask map would: each uploads only the paths whose stable hash falls in
its shard, with no coordination. Then it checks that every file was uploaded exactly once,
and that a second round of workers has nothing left to do.

In production each worker is the same command on its own machine, for example::

    # Kubernetes indexed Job (completionMode: Indexed, completions: 8, parallelism: 8)
    msd sync /data/vod ms:vod --shard ${JOB_COMPLETION_INDEX}/8

    # GNU parallel on one machine
    parallel -j 8 msd sync /data/vod ms:vod --shard {}/8 ::: 0 1 2 3 4 5 6 7
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import msd_async
from msd_async.testing import LocalMediaStore
from msd_async.transfer import TransferOptions, sync, walk

WORKERS = 4


async def worker(endpoint: str, root: Path, index: int, count: int) -> dict[str, object]:
    """One worker: the same call on every machine, only ``shard`` differs."""
    async with msd_async.Session(
        credentials=msd_async.Credentials(
            os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
        ),
        region=os.environ["AWS_REGION"],
    ) as session:
        store = session.container(endpoint)
        options = TransferOptions(shard=(index, count), concurrency=8)
        report = await sync(store, root, "ms:vod", options)
        return report.to_dict()


def run_workers(endpoint: str, root: Path, env: dict[str, str]) -> list[dict[str, object]]:
    processes = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", str(i), "--of", str(WORKERS),
             "--endpoint", endpoint, "--root", str(root)],
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        for i in range(WORKERS)
    ]
    reports = []
    for process in processes:
        out, _ = process.communicate()
        if process.returncode != 0:
            raise SystemExit("a worker failed")
        reports.append(json.loads(out))
    return reports


async def main() -> None:
    async with LocalMediaStore() as server:
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": server.credentials.access_key_id,
            "AWS_SECRET_ACCESS_KEY": server.credentials.secret_access_key,
            "AWS_REGION": server.region,
        }
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            for i in range(120):
                path = root / f"title{i % 6}" / f"seg_{i:03d}.m4s"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(os.urandom(2000 + i))
            # The workers are separate processes; the server keeps serving from this one.
            reports = await asyncio.to_thread(run_workers, server.endpoint, root, env)
            for i, report in enumerate(reports):
                print(f"worker {i}/{WORKERS}: uploaded {len(report['transferred'])} files")  # type: ignore[arg-type]
            done = [p for r in reports for p in r["transferred"]]  # type: ignore[attr-defined]
            assert len(done) == len(set(done)) == 120, "each file exactly once"
            async with msd_async.Session(
                credentials=server.credentials, region=server.region
            ) as session:
                stored = [o async for o in walk(session.container(server.endpoint), "vod")]
            print(f"{len(stored)} objects stored, each by exactly one worker")
            again = await asyncio.to_thread(run_workers, server.endpoint, root, env)
            print("second round uploads:", sum(len(r["transferred"]) for r in again))  # type: ignore[arg-type]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", type=int)
    parser.add_argument("--of", type=int, default=WORKERS)
    parser.add_argument("--endpoint")
    parser.add_argument("--root")
    args = parser.parse_args()
    if args.worker is None:
        asyncio.run(main())
    else:
        result = asyncio.run(worker(args.endpoint, Path(args.root), args.worker, args.of))
        print(json.dumps(result))
