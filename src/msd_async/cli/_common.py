"""What every ``msd`` command that talks to a container shares: its options."""

from __future__ import annotations

import argparse
import os

__all__ = ["client_options"]


def client_options() -> argparse.ArgumentParser:
    """A parent parser with ``--endpoint``, ``--region`` and ``--profile``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--endpoint",
        default=os.environ.get("MSD_ENDPOINT"),
        help="the container's data endpoint URL (default: $MSD_ENDPOINT)",
    )
    common.add_argument("--region", help="SigV4 region (default: from the endpoint or $AWS_REGION)")
    common.add_argument("--profile", help="AWS profile for credentials")
    return common
