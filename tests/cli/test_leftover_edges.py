"""Three edges of ``msd`` left over from the last round, each through the real entry point
as a subprocess against ``msd serve``: the text request log and a presigned URL's secrets,
``msd put`` of a pipe, FIFO or device, and ``msd rm`` of a missing object."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from serve_process import ServeProcess as Server

# --- the text request log of `msd serve` -----------------------------------------------------


def test_text_request_log_shows_a_presigned_get_without_its_secrets(
    serve: Callable[..., Server], tmp_path: Path
) -> None:
    log = tmp_path / "serve.log"
    token = "TOKENxyz" + "7" * 40  # URL-safe: the same in the URL as in the log
    server = serve(
        "--access-key-id", "AKIDLEFTOVEREDGES", "--secret-access-key", "s3cr3t" * 6,
        "--session-token", token, log=log,
    )
    (tmp_path / "a.ts").write_bytes(b"segment")
    assert server.run("put", str(tmp_path / "a.ts"), "v/a.ts").returncode == 0
    presign = server.run("presign", "v/a.ts")
    assert presign.returncode == 0, presign.stderr
    url = presign.stdout.strip()
    query = parse_qs(urlsplit(url).query)
    secrets = [
        query["X-Amz-Signature"][0],
        query["X-Amz-Security-Token"][0],
        "AKIDLEFTOVEREDGES",  # the key id of X-Amz-Credential
    ]
    assert token in secrets
    with urllib.request.urlopen(url, timeout=60) as response:
        assert response.read() == b"segment"
    # Other spellings of the names are secrets too (the server decodes names; refused: 403).
    forged = "X%2DAmz%2DSignature=00dead00beef&x-amz-security-token=TOKENforged"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{server.endpoint}/v/a.ts?{forged}", timeout=60)
    refused.value.close()
    assert refused.value.code == 403
    assert server.stop() == 0

    text = log.read_text()
    get = [line for line in text.splitlines() if " GET /v/a.ts" in line]
    assert [" 200 " in line for line in get] == [True, False], text
    assert " 403 " in get[1]
    # What is not a secret stays, so the line still tells a presigned GET from a plain one.
    assert "X-Amz-Expires=3600" in get[0] and "X-Amz-Signature=REDACTED" in get[0]
    for secret in [*secrets, "00dead00beef", "TOKENforged"]:
        assert secret not in text
