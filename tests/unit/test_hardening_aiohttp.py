"""What msd_async needs from aiohttp is still there.

The transport uses aiohttp's public API, except for the private attributes listed in
``transport.AIOHTTP_PRIVATE_ATTRIBUTES``, and relies on how aiohttp drives an upload
payload (``consumed`` stopping its own resend, ``write_with_length``, the writer task,
``writer.transport``): docs/connections.md names each, with the test here that checks it.
An aiohttp upgrade that changes one fails here, with a message naming it, before anything
else breaks in a stranger way.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import tomllib
from pathlib import Path

import aiohttp
import pytest
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload
from packaging.requirements import Requirement
from packaging.version import Version
from scripted_server import Connection, response, response_head, scripted_server

from msd_async import transport
from msd_async.transport import AIOHTTP_PRIVATE_ATTRIBUTES, _UploadPayload, _Watchdog

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
    from aiohttp.client_proto import ResponseHandler

    assert isinstance(inspect.getattr_static(ResponseHandler, "should_close", None), property), (
        "aiohttp's ResponseHandler.should_close is gone: transport._CleanRequest reads it to "
        "refuse a pooled connection holding an answer nobody asked for"
    )


def test_the_transport_uses_no_other_aiohttp_internals() -> None:
    tree = ast.parse(inspect.getsource(transport))
    imported = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
    } | {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
         for alias in node.names}
    # aiohttp.http: its StreamWriter, public there (in its __all__), is what the transport
    # writes a followed live chunk with (test_aiohttps_stream_writer_writes_...).
    assert not {m for m in imported if m and m.startswith("aiohttp.")} - {
        "aiohttp.abc", "aiohttp.http", "aiohttp.payload"
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


# --- how aiohttp drives the upload payload (docs/connections.md, "aiohttp") ---------------
# Each test below checks one behaviour of aiohttp that _UploadPayload relies on, through a
# real aiohttp.ClientSession talking to a scripted peer on 127.0.0.1.


class _RecordingPayload(_UploadPayload):
    """The transport's upload payload, noting how aiohttp calls it."""

    def __init__(self, data: bytes) -> None:
        from msd_async.body import Meter, prepare_body

        super().__init__(
            prepare_body(data),
            Meter(limit=1 << 30, limit_rule="test"),
            None,
            _Watchdog(),
            None,
            None,
        )
        self.calls: list[tuple[str, int | None, object, object]] = []

    async def write(self, writer: AbstractStreamWriter) -> None:
        self.calls.append(("write", None, asyncio.current_task(), writer.transport))
        await super().write(writer)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        self.calls.append(
            ("write_with_length", content_length, asyncio.current_task(), writer.transport)
        )
        await super().write_with_length(writer, content_length)


async def _answer_each(conn: Connection) -> None:
    while await conn.read_request() is not None:
        await conn.send(response(200, b"ok"))


async def test_aiohttp_writes_a_payload_with_write_with_length_in_a_task_of_its_own() -> None:
    """``write_with_length(writer, content_length)`` is the method aiohttp calls (the
    payload overrides it, not only ``write``), in a writer task that is not the caller's
    (``stop()`` cancels that task), and ``writer.transport`` is the live connection that
    ``_abort`` resets."""
    payload = _RecordingPayload(b"x" * 5000)
    async with scripted_server(_answer_each) as server, aiohttp.ClientSession() as session:
        caller = asyncio.current_task()
        async with session.put(server.endpoint + "/a", data=payload) as answer:
            assert await answer.read() == b"ok"
    assert [c[:2] for c in payload.calls] == [("write_with_length", 5000)], (
        f"aiohttp {aiohttp.__version__} no longer calls Payload.write_with_length(writer, "
        f"content_length) once per request: {payload.calls}"
    )
    _, _, task, transport = payload.calls[0]
    assert task is not None and task is not caller, (
        "aiohttp no longer writes the body in a task of its own: _UploadPayload.stop() "
        "cancels that task to end a body the server answered early"
    )
    assert isinstance(transport, asyncio.WriteTransport), (
        f"writer.transport is {transport!r}, not the connection's transport: a cut upload "
        "could not be reset"
    )
    assert server.requests[0].body == b"x" * 5000


async def test_a_consumed_payload_stops_aiohttps_own_resend() -> None:
    """aiohttp resends an idempotent request once, on a new connection, when a pooled one
    turns out dead, unless its payload says ``consumed``: the transport's payload always
    does, so the retry policy decides (and counts) every resend."""

    async def dead_on_reuse(conn: Connection) -> None:
        if conn.index == 0:
            await conn.read_request()
            await conn.send(response(200, b"ok"))  # kept alive by the client...
            await conn.read_request()
            conn.abort()  # ...and dead when reused
            return
        await _answer_each(conn)

    async def put_twice(data: Payload) -> tuple[int, BaseException | None]:
        async with scripted_server(dead_on_reuse) as server, aiohttp.ClientSession() as s:
            async with s.put(server.endpoint + "/a", data=b"first") as answer:
                await answer.read()
            error: BaseException | None = None
            try:
                async with s.put(server.endpoint + "/a", data=data) as answer:
                    await answer.read()
            except aiohttp.ClientError as exc:
                error = exc
            return len(server.requests), error

    # Control: a plain payload is resent by aiohttp itself (3 requests), so the scenario
    # reaches aiohttp's resend path at all.
    requests, error = await put_twice(aiohttp.payload.BytesPayload(b"second"))
    assert (requests, error) == (3, None), (
        f"aiohttp {aiohttp.__version__} no longer resends a PUT on a dead pooled connection; "
        "_UploadPayload.consumed and docs/connections.md can say so"
    )
    requests, error = await put_twice(_RecordingPayload(b"second"))
    assert requests == 2 and error is not None, (
        f"aiohttp {aiohttp.__version__} resent a PUT whose payload is consumed: the retry "
        "policy no longer sees every attempt"
    )


def test_the_modules_that_import_aiohttp_are_the_ones_the_docs_name() -> None:
    """The client's one aiohttp module is transport.py; aiohttp.web is imported only by the
    web adapter, the local server, the commands' metrics listener, the demo's player
    page and the listeners' shared binder (README, "Architecture"; transport.py's
    docstring)."""
    package = ROOT / "src" / "msd_async"
    importers = set()
    for module in package.rglob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            names = (
                [node.module or ""] if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names] if isinstance(node, ast.Import) else []
            )
            if any(n == "aiohttp" or n.startswith("aiohttp.") for n in names):
                importers.add(module.relative_to(package).as_posix())
    assert importers == {
        "transport.py", "web/aiohttp.py", "testing/server.py", "cli/_observe.py",
        "live/watch.py", "_listen.py",
    }


async def test_aiohttp_starts_the_response_class_after_writing_the_request() -> None:
    """``ClientSession(response_class=...)`` is public, but the transport's watchdog also
    relies on aiohttp calling ``response.start(connection)`` once per request, after the
    request was written and before the head is read: that is where the read timeout of a
    request without a body begins (``transport._WatchedResponse``)."""
    from msd_async.transport import _WatchedResponse

    calls: list[object] = []

    class Recording(_WatchedResponse):
        async def start(self, connection: aiohttp.connector.Connection) -> aiohttp.ClientResponse:
            calls.append(connection)
            return await super().start(connection)

    async with (
        scripted_server(_answer_each) as server,
        aiohttp.ClientSession(response_class=Recording) as session,
        session.get(server.endpoint + "/a") as answer,
    ):
        assert await answer.read() == b"ok"
    assert len(calls) == 1, (
        f"aiohttp {aiohttp.__version__} no longer calls ClientResponse.start(connection) once "
        f"per request: the watchdog cannot tell when the wait for the answer begins ({calls})"
    )
    assert isinstance(calls[0], aiohttp.connector.Connection)


@pytest.mark.parametrize(
    ("base", "host", "header"),
    [
        ("http://127.0.0.1:8080", "127.0.0.1:8080", {}),
        ("https://abc.data.mediastore.us-east-1.amazonaws.com",
         "abc.data.mediastore.us-east-1.amazonaws.com", {}),
        ("http://[::1]:9000", "[::1]:9000", {}),
        ("http://example.com:80", "example.com", {}),
        ("https://example.com:443", "example.com", {}),
        ("http://127.0.0.1:8080", "other:1", {"Host": "other:1"}),
    ],
)
def test_the_host_header_is_left_to_aiohttp_only_where_it_writes_the_signed_host(
    base: str, host: str, header: dict[str, str]
) -> None:
    """The client signs ``signing.signing_host(endpoint)`` and sends no Host header of its
    own where aiohttp writes that same value (the URL's ``host_port_subcomponent``)."""
    from msd_async.signing import signing_host

    assert transport.Transport.host_header(base, host) == header
    if not header:
        assert signing_host(base) == host


async def test_the_host_aiohttp_writes_is_the_host_the_client_signed() -> None:
    """On the wire: the request carries one Host header, and it is the host named in the
    signature's canonical request (the local server's signature check relies on it too;
    this names the reliance)."""
    from msd_async import Credentials, Session
    from msd_async.signing import signing_host

    async def answer_head(conn: Connection) -> None:
        while await conn.read_request() is not None:
            await conn.send(response_head(200, {"Content-Length": 0}))

    async with scripted_server(answer_head) as server:
        async with Session(
            credentials=Credentials("AKIDEXAMPLE", "secret"), region="us-east-1"
        ) as s:
            store = s.container(server.endpoint)
            await store.describe_object("a")
        head = server.requests[0].head.decode("latin-1").lower()
    assert head.count("\r\nhost:") == 1, head
    assert server.requests[0].headers["host"] == signing_host(server.endpoint)


class _WritingInOneStep(Payload):
    """Writes its body the way a followed live chunk is written: without awaiting."""

    def __init__(self, parts: list[bytes]) -> None:
        super().__init__(b"", content_type=None)
        self._parts = parts
        self.writer_type: type | None = None

    @property
    def size(self) -> int:
        return sum(map(len, self._parts))

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        self.writer_type = type(writer)
        from aiohttp.http import StreamWriter

        assert isinstance(writer, StreamWriter)
        for part in self._parts:
            transport._write_without_waiting(writer, part)


async def test_aiohttps_stream_writer_writes_a_chunk_without_waiting_when_not_draining() -> None:
    """``StreamWriter.write(chunk, drain=False)`` runs to its end without suspending (no
    trace callback, no compression): the transport writes a followed live chunk in its
    producer's step that way (``transport._write_without_waiting``), and the writer aiohttp
    hands an upload payload is that ``StreamWriter``."""
    parts = [b"a" * 1000, b"b" * 70_000, b"c"]
    payload = _WritingInOneStep(parts)
    async with (
        scripted_server(_answer_each) as server,
        aiohttp.ClientSession() as session,
        session.put(server.endpoint + "/a", data=payload, chunked=True) as answer,
    ):
        assert await answer.read() == b"ok"
    assert server.requests[0].body == b"".join(parts), (
        f"aiohttp {aiohttp.__version__}'s StreamWriter.write(chunk, drain=False) no longer "
        "completes without suspending: live chunks cannot be written in their producer's step"
    )
