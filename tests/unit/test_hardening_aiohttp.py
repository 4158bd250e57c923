"""What msd_async needs from aiohttp is still there.

The transport uses aiohttp's public API, except for the few private attributes listed in
``transport.AIOHTTP_PRIVATE_ATTRIBUTES``; an aiohttp upgrade that removes one fails here,
with a message naming it, before anything else breaks in a stranger way.
"""

from __future__ import annotations

import ast
import inspect
import tomllib
from pathlib import Path

import aiohttp
import pytest
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload
from packaging.requirements import Requirement
from packaging.version import Version

from msd_async import transport
from msd_async.transport import AIOHTTP_PRIVATE_ATTRIBUTES, _UploadPayload

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]


async def test_the_private_attributes_still_exist() -> None:
    for cls, attribute, why in AIOHTTP_PRIVATE_ATTRIBUTES:
        instance = cls()
        try:
            assert hasattr(instance, attribute), (
                f"aiohttp {aiohttp.__version__} has no {cls.__name__}.{attribute} any more; "
                f"msd_async reads it for {why}"
            )
        finally:
            await instance.close()


def test_the_public_api_the_transport_relies_on_exists() -> None:
    consumed = inspect.getattr_static(Payload, "consumed", None)
    assert isinstance(consumed, property), (
        "aiohttp.payload.Payload.consumed is no longer a property: the upload payload "
        "overrides it so aiohttp never resends a PUT or DELETE by itself"
    )
    assert isinstance(inspect.getattr_static(_UploadPayload, "consumed"), property)
    assert isinstance(inspect.getattr_static(AbstractStreamWriter, "transport", None), property), (
        "aiohttp.abc.AbstractStreamWriter.transport is gone: the upload writer needs it to "
        "abort a cut upload"
    )


def test_the_transport_uses_no_other_aiohttp_internals() -> None:
    tree = ast.parse(inspect.getsource(transport))
    imported = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
    } | {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
         for alias in node.names}
    assert not {m for m in imported if m and m.startswith("aiohttp.")} - {
        "aiohttp.abc", "aiohttp.payload"
    }
    assigned = {
        target.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Attribute)
    }
    assert "_consumed" not in assigned


def test_the_installed_aiohttp_is_in_the_declared_range() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (spec,) = [
        Requirement(d) for d in project["dependencies"] if Requirement(d).name == "aiohttp"
    ]
    # The declared range is the tested one: a lower bound and an upper bound.
    assert any(s.operator == "<" for s in spec.specifier), spec
    assert Version(aiohttp.__version__) in spec.specifier, (aiohttp.__version__, spec)
