"""The player test's peers: hls.js from npm (tests/player/js) and headless Chromium."""

from __future__ import annotations

from pathlib import Path

import pytest

#: npm's browser build, installed by ``npm ci`` in tests/player/js (scripts/test.sh does).
HLSJS = Path(__file__).parent / "js" / "node_modules" / "hls.js" / "dist" / "hls.min.js"


@pytest.fixture(scope="session")
def hlsjs() -> Path:
    if not HLSJS.is_file():
        pytest.fail(
            f"{HLSJS} is missing: run 'npm ci' in tests/player/js (scripts/test.sh does)",
            pytrace=False,
        )
    return HLSJS
