"""What importing msd_async and running ``msd --help`` load, checked in fresh interpreters.

The scoreboard (benchmarks/scoreboard.py) times these; here we check the mechanism that
makes them cheap: names are imported on first use, aiohttp only when a session first
sends, and the ``msd`` command's help never loads an HTTP client or botocore.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

import msd_async


def _loaded_after(code: str) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter; it must print one JSON object last."""
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_import_msd_async_loads_no_client_code() -> None:
    result = _loaded_after(
        """
        import json, sys
        import msd_async
        print(json.dumps({"mods": sorted(m for m in sys.modules if m.startswith(
            ("aiohttp", "aiobotocore", "botocore", "msgspec", "anyio", "asyncio",
             "msd_async.")))}))
        """
    )
    # The errors are imported eagerly (cheap, and needed by `except`); nothing else.
    assert result["mods"] == ["msd_async._version", "msd_async.errors"]


def test_session_class_and_construction_do_not_import_aiohttp() -> None:
    result = _loaded_after(
        """
        import json, sys
        from msd_async import Credentials, Session
        session = Session(credentials=Credentials("AKID", "SECRET"), region="us-east-1")
        store = session.container("http://127.0.0.1:9")
        print(json.dumps({"mods": [m for m in sys.modules if m.split(".")[0] in
            ("aiohttp", "aiobotocore", "botocore")]}))
        """
    )
    assert result["mods"] == []


def test_aiohttp_is_imported_when_a_session_first_sends() -> None:
    # A scripted one-response HTTP server on loopback answers one DescribeObject.
    result = _loaded_after(
        """
        import asyncio, json, sys
        from msd_async import Credentials, Session

        async def answer(reader, writer):
            await reader.readuntil(b"\\r\\n\\r\\n")
            writer.write(b"HTTP/1.1 200 OK\\r\\nContent-Type: video/mp4\\r\\n"
                         b"Content-Length: 7\\r\\nETag: abc\\r\\n\\r\\n")
            await writer.drain()
            writer.close()

        async def main():
            server = await asyncio.start_server(answer, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            async with server, Session(
                credentials=Credentials("AKID", "SECRET"), region="us-east-1"
            ) as session:
                store = session.container(f"http://127.0.0.1:{port}")
                before = "aiohttp" in sys.modules
                info = await store.describe_object("a/b.mp4")
                return before, "aiohttp" in sys.modules, info.content_length

        before, after, length = asyncio.run(main())
        print(json.dumps({"before": before, "after": after, "length": length}))
        """
    )
    assert result == {"before": False, "after": True, "length": 7}


def test_msd_help_loads_no_http_client_nor_botocore() -> None:
    result = _loaded_after(
        """
        import contextlib, io, json, sys
        from msd_async.cli import main
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            try:
                main(["--help"])
            except SystemExit as exc:
                code = exc.code
        print(json.dumps({"code": code, "usage": "usage: msd" in out.getvalue(),
            "mods": [m for m in sys.modules if m.split(".")[0] in
                ("aiohttp", "aiobotocore", "botocore", "msgspec", "rich", "watchfiles")]}))
        """
    )
    assert result == {"code": 0, "usage": True, "mods": []}


@pytest.mark.parametrize("name", msd_async.__all__)
def test_every_exported_name_resolves(name: str) -> None:
    assert getattr(msd_async, name) is not None
    assert name in dir(msd_async)


def test_lazy_names_are_the_defining_modules_objects() -> None:
    from msd_async.session import Session
    from msd_async.stream import ObjectStream

    assert msd_async.Session is Session
    assert msd_async.ObjectStream is ObjectStream


def test_unknown_attribute_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Sesion'"):
        msd_async.Sesion  # noqa: B018 - the attribute access is the test
    assert not hasattr(msd_async, "transport_")
