"""``msd`` as a user runs it: a subprocess pointed at a local server by the environment
(credentials and endpoint), with nothing from this machine's AWS profile."""

from __future__ import annotations

import os
import sys

import anyio

from msd_async.testing import LocalMediaStore


async def msd(
    server: LocalMediaStore, *args: str, stdin: bytes | None = None
) -> tuple[int, bytes, str]:
    """``msd *args`` against ``server``: (exit status, stdout, stderr)."""
    env = {
        **os.environ,
        "MSD_ENDPOINT": server.endpoint,
        "AWS_ACCESS_KEY_ID": server.credentials.access_key_id,
        "AWS_SECRET_ACCESS_KEY": server.credentials.secret_access_key,
        "AWS_REGION": server.region,
    }
    env.pop("AWS_PROFILE", None)
    with anyio.fail_after(60):
        result = await anyio.run_process(
            [sys.executable, "-m", "msd_async.cli", *args], input=stdin, env=env, check=False
        )
    return result.returncode, result.stdout, result.stderr.decode()
