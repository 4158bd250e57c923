"""Tree transfer settings are refused before anything is listed or sent, with an
InvalidParameterError naming them: a float or bool count, a retry that is no RetryPolicy
(an AttributeError at the first failed request), and above all a ``max_delete`` of nan,
which compared False with every count and so never stopped a deletion."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from msd_async import ContainerClient, InvalidParameterError
from msd_async.testing import LocalMediaStore
from msd_async.transfer import TransferOptions, sync, upload_tree, walk

pytestmark = pytest.mark.anyio

NOT_A_COUNT: list[object] = [math.nan, math.inf, True, 2.5, "3"]


@pytest.mark.parametrize("field", ["concurrency", "file_attempts"])
@pytest.mark.parametrize("value", NOT_A_COUNT)
async def test_counts_must_be_whole_numbers(
    mediastore_client: ContainerClient, tmp_path: Path, field: str, value: object
) -> None:
    (tmp_path / "a.ts").write_bytes(b"x")
    options: Any = TransferOptions(**{field: value}, record=False)  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match=field):
        await upload_tree(mediastore_client, tmp_path, "t", options)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"retry": 3}, "TransferOptions.retry must be a RetryPolicy"),
        ({"record_dir": 5}, "record_dir"),
        ({"filters": "exclude *.tmp"}, "filters must be a sequence"),
        # A string ("no") was true: it opted in to writing through links.
        ({"keep_dirlinks": "no"}, "keep_dirlinks must be True or False"),
    ],
)
async def test_options_of_the_wrong_type_are_refused(
    mediastore_client: ContainerClient, tmp_path: Path, options: dict[str, Any], match: str
) -> None:
    with pytest.raises(InvalidParameterError, match=match):
        await upload_tree(mediastore_client, tmp_path, "t", TransferOptions(**options))


async def test_stop_and_options_of_the_wrong_type_are_refused(
    mediastore_client: ContainerClient, tmp_path: Path
) -> None:
    bad: Any = 5
    with pytest.raises(InvalidParameterError, match="stop must be"):
        await upload_tree(mediastore_client, tmp_path, "t", stop=bad)
    with pytest.raises(InvalidParameterError, match="options must be a TransferOptions"):
        await upload_tree(mediastore_client, tmp_path, "t", bad)


@pytest.mark.parametrize("value", NOT_A_COUNT)
async def test_walk_concurrency_is_a_parameter_error(
    mediastore_client: ContainerClient, value: Any
) -> None:
    with pytest.raises(InvalidParameterError, match="concurrency"):
        async for _ in walk(mediastore_client, concurrency=value):
            pass


@pytest.mark.parametrize("value", [math.nan, -1, True, 2.5, "3"])
async def test_a_max_delete_that_is_no_count_deletes_nothing(
    mediastore_server: LocalMediaStore, mediastore_client: ContainerClient, tmp_path: Path,
    value: Any,
) -> None:
    for name in ("keep.ts", "stale1.ts", "stale2.ts"):
        await mediastore_client.put_object(f"site/{name}", b"x")
    (tmp_path / "keep.ts").write_bytes(b"x")
    with pytest.raises(InvalidParameterError, match="max_delete"):
        await sync(mediastore_client, tmp_path, "ms:site", delete=True, max_delete=value)
    assert mediastore_server.store.get("site/stale1.ts") is not None
    assert mediastore_server.store.get("site/stale2.ts") is not None
