"""What this process holds open, from /proc/self/fd (Linux), for tests that check that
every exit path lets go of its files."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def open_files_under(root: Path) -> list[str]:
    """The files under ``root`` this process holds open, removed ones included (their
    link reads ``... (deleted)``)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(str(root)):
                found.append(target)
    return found
