"""Request validation that follows botocore's ``mediastore-data`` service model
(``service-2.json``): enums, patterns and the shape of the refusal (docs/contract.md)."""

from __future__ import annotations

import pytest
from rawclient import Raw
from test_objects import assert_error

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    "headers",
    [
        {"x-amz-storage-class": "temporal"},
        {"x-amz-storage-class": "Temporal"},
        {"x-amz-upload-availability": "streaming"},
        {"x-amz-upload-availability": "standard"},
        {"x-amz-upload-availability": "Streaming"},
    ],
)
async def test_enum_headers_are_case_sensitive(raw: Raw, headers: dict[str, str]) -> None:
    # The model's enums are StorageClass ["TEMPORAL"] and UploadAvailability
    # ["STANDARD", "STREAMING"]; every SDK sends them in upper case. A client that sends
    # another spelling must not pass here and fail on the service.
    reply = await raw.call("PUT", "/e.ts", data=b"x", headers=headers)
    assert_error(reply, 400, "ValidationException")
    assert raw.server.store.get("e.ts") is None


async def test_enum_headers_in_the_model_spelling_are_accepted(raw: Raw) -> None:
    for availability in ("STANDARD", "STREAMING"):
        reply = await raw.call("PUT", "/e.ts", data=b"x", headers={
            "x-amz-storage-class": "TEMPORAL", "x-amz-upload-availability": availability})
        assert reply.status == 200, reply
