#!/usr/bin/env bash
# Everything the test suite needs, from a fresh clone: the real peers the interop tests
# talk to (curl, ffmpeg, Chromium for the player test, npm for its hls.js), a virtualenv with
# the project and its dev extras, hls.js from the committed lock file, then the tests
# (warnings are errors), mypy --strict and ruff.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v ffmpeg >/dev/null 2>&1 || missing+=(ffmpeg)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

python3 -m venv .venv
# boto3 comes with the dev extras in this same install, so pip picks the botocore that
# aiobotocore pins.
.venv/bin/python -m pip install -q -e '.[dev]'
# Bytecode for the project's own modules (pip compiled only the dependencies): the tests
# start many `msd` children, and where PYTHONDONTWRITEBYTECODE is set (it is where the suite
# was timed) each would compile src/ again: about 50 ms of a 0.3 s `msd ls`, 12 s of the
# 95 s tests/cli took. Python checks each .pyc against its source: a stale one is unused.
.venv/bin/python -m compileall -q src
# hls.js for tests/player, exactly the version the lock file pins (nothing of it is committed).
(cd tests/player/js && npm ci --no-audit --no-fund --loglevel=error)
.venv/bin/python -m pytest
.venv/bin/mypy --strict src
.venv/bin/ruff check
