"""What a user copies from the documentation works.

Every ```python block of README.md and docs/*.md is compiled, and the public names it uses
are checked against the code: imports resolve, attributes read on the documented objects
exist, and the keyword arguments of a literal call bind to the callee's signature. A block
is then run against the local server (top-level ``await`` allowed, as in ``python -m
asyncio`` or the body of an ``async def``), with the names the docs leave to the reader
(``store``, ``endpoint``, ``stop``, the encoder's bytes...) bound by :func:`_placeholders`,
an AWS endpoint in the text pointed at the local server and the AWS environment variables
set, as a user of the AWS credential chain would. A block that cannot run on its own (it
needs Ray, a fixed port, an application object) is preceded by
``<!-- snippet: fragment -->`` and only checked.

The ```bash blocks' ``msd`` command lines are parsed by ``msd``'s own argument parser, and
examples/quickstart.py runs in-process as ``python examples/quickstart.py`` would.
"""

from __future__ import annotations

import ast
import asyncio
import builtins
import collections.abc
import contextlib
import importlib
import importlib.util
import inspect
import io
import re
import runpy
import shlex
import socket
import sys
import types
import typing
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import msd_async
from msd_async.cli import build_parser
from msd_async.testing import LocalMediaStore

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FRAGMENT = "<!-- snippet: fragment -->"
#: The block goes on from the one before it in the same file, whose imports it uses.
CONTINUES = "<!-- snippet: continues -->"
#: A MediaStore container endpoint as the docs write one (the test points it at the server).
AWS_ENDPOINT = re.compile(r"https://\w+\.data\.mediastore\.[\w-]+\.amazonaws\.com")


@dataclass(frozen=True)
class Block:
    file: str
    line: int
    code: str
    fragment: bool
    #: The imports of the block before it, for a block marked CONTINUES ("" otherwise).
    context: str = ""

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


def _blocks(lang: str) -> list[Block]:
    marks = f"{re.escape(FRAGMENT)}|{re.escape(CONTINUES)}"
    fence = re.compile(rf"^(?:({marks})\n)?```{lang}\n(.*?)^```", re.M | re.S)
    found: list[Block] = []
    for doc in DOCS:
        text = doc.read_text()
        name = doc.name if doc.parent == ROOT else f"docs/{doc.name}"
        for m in fence.finditer(text):
            context = ""
            if m.group(1) == CONTINUES:
                before = found[-1] if found else None
                assert before is not None and before.file == name, (
                    f"{name}: the first block is marked continues")
                context = "\n".join(
                    ast.unparse(n) for n in ast.parse(before.code).body
                    if isinstance(n, ast.Import | ast.ImportFrom))
            found.append(Block(name, text.count("\n", 0, m.start(2)), m.group(2),
                               m.group(1) == FRAGMENT, context))
    return found


PYTHON_BLOCKS = _blocks("python")


def test_the_docs_have_the_python_blocks_this_test_knows() -> None:
    # Another fence (```py, ```Python) or a marker not right above its fence would silently
    # take a block out of the tests here.
    assert len(PYTHON_BLOCKS) >= 14
    for doc in DOCS:
        text = doc.read_text()
        assert not re.search(r"^```(?!python\n)(?:py|pycon|python3|Python)\b", text, re.M), doc
        for mark in (FRAGMENT, CONTINUES):
            assert text.count(mark) == len(re.findall(rf"^{re.escape(mark)}\n```", text, re.M))


# --- the names a block leaves to the reader ------------------------------------------------

#: What the docs' free names stand for, by type, for the checks of attributes and calls.
PLACEHOLDER_TYPES: dict[str, object] = {
    "store": msd_async.ContainerClient,
    "session": msd_async.Session,
    "endpoint": str,
    "ENDPOINT": str,
    "url": str,
    "stop": asyncio.Event,
    "chunks_from_the_encoder": None,
    "encoder_chunks": None,
    "playlist_text": str,
    "playlist_bytes": bytes,
    "init_bytes": bytes,
}


def _placeholders(server: LocalMediaStore, store: msd_async.ContainerClient) -> dict[str, Any]:
    def chunks_from_the_encoder() -> Iterator[bytes]:
        return iter([b"\x00" * 1000, b"\x01" * 1000])

    async def encoder_chunks() -> AsyncIterator[bytes]:
        for chunk in chunks_from_the_encoder():
            yield chunk

    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.2, stop.set)
    return {
        "store": store,
        "endpoint": server.endpoint,
        "ENDPOINT": server.endpoint,
        "url": server.endpoint,
        "stop": stop,
        "chunks_from_the_encoder": chunks_from_the_encoder,
        "encoder_chunks": encoder_chunks,
        "playlist_text": "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nseg_42.m4s\n",
        "playlist_bytes": b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nseg_42.m4s\n",
        "init_bytes": b"\x00" * 500,
    }


# --- static checks -------------------------------------------------------------------------


def _compile(block: Block) -> types.CodeType:
    return compile(block.code, str(block), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=str)
def test_python_block_compiles_and_uses_names_that_exist(block: Block) -> None:
    _compile(block)
    problems = _Checker(block).run()
    assert not problems, f"{block}:\n" + "\n".join(problems)


class _Unknown:
    """A value whose type the checker cannot tell: nothing about it is checked."""


UNKNOWN = _Unknown()


@dataclass(frozen=True)
class _Value:
    """A module, class or function the block names itself."""

    obj: object


@dataclass(frozen=True)
class _Instance:
    """An instance of ``cls`` (or of a typing generic such as ``AsyncIterator[Item]``)."""

    cls: object


_Type = _Value | _Instance | _Unknown


def _hints(obj: object) -> dict[str, Any]:
    try:
        return typing.get_type_hints(obj)
    except Exception:  # forward references under TYPE_CHECKING: nothing to check with
        return {}


def _as_instance(annotation: object, owner: object = None) -> _Type:
    if annotation is typing.Self and owner is not None:
        return _Instance(owner)
    if isinstance(annotation, type) or typing.get_origin(annotation) is not None:
        return _Instance(annotation)
    return UNKNOWN


def _has_attribute(cls: type, name: str) -> bool:
    if hasattr(cls, name) or name in _hints(cls):
        return True
    # Attributes set in __init__ without a class annotation.
    init = getattr(cls, "__init__", None)
    try:
        source = inspect.getsource(init) if inspect.isfunction(init) else ""
    except (OSError, TypeError):  # a generated __init__ (dataclass) sets only annotated fields
        return False
    return f"self.{name} " in source or f"self.{name}:" in source


def _item_type(t: _Type, method: str) -> _Type:
    """What ``async for`` / ``async with`` / ``await`` gives from a value of type ``t``."""
    if not isinstance(t, _Instance):
        return UNKNOWN
    origin, args = typing.get_origin(t.cls), typing.get_args(t.cls)
    if origin is not None:
        if method == "__aiter__" and issubclass(origin, collections.abc.AsyncIterable) and args:
            return _as_instance(args[0])
        if method == "__await__" and issubclass(origin, collections.abc.Awaitable) and args:
            return _as_instance(args[-1])
        return UNKNOWN
    if not isinstance(t.cls, type):
        return UNKNOWN
    if method == "__await__":
        return t if not hasattr(t.cls, "__await__") else UNKNOWN
    if method == "__aenter__":
        enter = getattr(t.cls, "__aenter__", None)
        return _as_instance(_hints(enter).get("return"), t.cls) if enter else UNKNOWN
    anext = getattr(t.cls, "__anext__", None)
    return _as_instance(_hints(anext).get("return"), t.cls) if anext else UNKNOWN


class _Checker:
    def __init__(self, block: Block) -> None:
        self.block = block
        self.env: dict[str, _Type] = {}
        self.problems: list[str] = []
        tree = ast.parse(block.context + "\n" + block.code)
        self.tree = tree
        # Calls whose coroutine is awaited or handed on (asyncio.run(main()), a task).
        self.consumed = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Await)} | {
            id(a) for n in ast.walk(tree) if isinstance(n, ast.Call)
            for a in [*n.args, *(k.value for k in n.keywords)]
        } | {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Return) and n.value}
        self.defined = {
            n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
        } | {
            n.name for n in ast.walk(tree)
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        } | {n.arg for n in ast.walk(tree) if isinstance(n, ast.arg)} | {
            (a.asname or a.name).partition(".")[0] for n in ast.walk(tree)
            if isinstance(n, ast.Import | ast.ImportFrom) for a in n.names
        } | {
            n.name for n in ast.walk(tree) if isinstance(n, ast.ExceptHandler) and n.name
        }

    def problem(self, node: ast.AST, message: str) -> None:
        line = self.block.line + getattr(node, "lineno", 0) - self.block.context.count("\n") - 1
        problem = f"{self.block.file}:{line}: {message}"
        if problem not in self.problems:
            self.problems.append(problem)

    def run(self) -> list[str]:
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                self.import_(node)
        self.free_names()
        self.statements(self.tree.body)
        return self.problems

    # Imports: a module the test environment lacks (Ray) is skipped; msd_async's never is.
    def import_(self, node: ast.Import | ast.ImportFrom) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                module = self.module(node, alias.name)
                if module is not None:
                    top = alias.name.partition(".")[0]
                    self.env[alias.asname or top] = _Value(
                        module if alias.asname else sys.modules[top])
            return
        module = self.module(node, node.module or "")
        for alias in node.names:
            if module is None:
                continue
            try:
                value = getattr(module, alias.name)
            except AttributeError:
                try:
                    value = importlib.import_module(f"{node.module}.{alias.name}")
                except ImportError:
                    self.problem(node, f"{node.module} has no name {alias.name!r}")
                    continue
            self.env[alias.asname or alias.name] = _Value(value)

    def module(self, node: ast.AST, name: str) -> types.ModuleType | None:
        if not name.startswith("msd_async") and importlib.util.find_spec(
            name.partition(".")[0]
        ) is None:
            return None
        try:
            return importlib.import_module(name)
        except ImportError as exc:
            self.problem(node, f"import {name} fails: {exc}")
            return None

    def free_names(self) -> None:
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                name = node.id
                if name in self.env or name in self.defined or hasattr(builtins, name):
                    continue
                if name not in PLACEHOLDER_TYPES:
                    self.problem(node, f"{name!r} is used but never imported or defined")
        for name, cls in PLACEHOLDER_TYPES.items():
            if name not in self.env and name not in self.defined and cls is not None:
                self.env[name] = _Instance(cls)

    # Statements: only what binds a name to a type matters; everything else is walked.
    def statements(self, body: list[ast.stmt]) -> None:
        for stmt in body:
            self.statement(stmt)

    def statement(self, stmt: ast.stmt) -> None:
        if isinstance(stmt, ast.Assign):
            t = self.expr(stmt.value)
            for target in stmt.targets:
                self.bind(target, t)
        elif isinstance(stmt, ast.AsyncWith | ast.With):
            for item in stmt.items:
                t = self.expr(item.context_expr)
                if item.optional_vars is not None:
                    method = "__aenter__" if isinstance(stmt, ast.AsyncWith) else "__enter__"
                    self.bind(item.optional_vars, _item_type(t, method) if method ==
                              "__aenter__" else t)
            self.statements(stmt.body)
        elif isinstance(stmt, ast.AsyncFor | ast.For):
            t = self.expr(stmt.iter)
            self.bind(stmt.target,
                      _item_type(t, "__aiter__") if isinstance(stmt, ast.AsyncFor) else UNKNOWN)
            self.statements(stmt.body)
            self.statements(stmt.orelse)
        elif isinstance(stmt, ast.Try):
            self.statements(stmt.body)
            for handler in stmt.handlers:
                if handler.type is not None:
                    self.expr(handler.type)
                if handler.name:
                    cls = self.expr(handler.type) if handler.type is not None else UNKNOWN
                    self.env[handler.name] = (
                        _Instance(cls.obj) if isinstance(cls, _Value) else UNKNOWN)
                self.statements(handler.body)
            self.statements(stmt.orelse)
            self.statements(stmt.finalbody)
        elif isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            for decorator in stmt.decorator_list:
                self.expr(decorator)
            self.statements(stmt.body)
            self.env[stmt.name] = UNKNOWN
        elif isinstance(stmt, ast.Import | ast.ImportFrom):
            pass
        else:
            for child in ast.iter_child_nodes(stmt):
                if isinstance(child, ast.expr):
                    self.expr(child)
                elif isinstance(child, ast.stmt):
                    self.statement(child)

    def bind(self, target: ast.expr, t: _Type) -> None:
        if isinstance(target, ast.Name):
            self.env[target.id] = t

    def expr(self, node: ast.expr) -> _Type:
        if isinstance(node, ast.Name):
            return self.env.get(node.id, UNKNOWN)
        if isinstance(node, ast.Attribute):
            return self.attribute(node, self.expr(node.value))
        if isinstance(node, ast.Await):
            return _item_type(self.expr(node.value), "__await__")
        if isinstance(node, ast.Call):
            return self.call(node)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr):
                self.expr(child)
            elif isinstance(child, ast.comprehension):
                self.expr(child.iter)
        return UNKNOWN

    def attribute(self, node: ast.Attribute, base: _Type) -> _Type:
        name = node.attr
        if isinstance(base, _Value):
            if isinstance(base.obj, types.ModuleType) and not base.obj.__name__.startswith(
                "msd_async"
            ):
                return UNKNOWN  # a third-party module's names are its docs' business
            try:
                return _Value(getattr(base.obj, name))
            except AttributeError:
                self.problem(node, f"{getattr(base.obj, '__name__', base.obj)} has no {name!r}")
                return UNKNOWN
        if isinstance(base, _Instance) and isinstance(base.cls, type):
            cls = base.cls
            if not cls.__module__.startswith("msd_async"):
                return UNKNOWN
            if not _has_attribute(cls, name):
                self.problem(node, f"{cls.__name__} has no attribute {name!r}")
                return UNKNOWN
            member = inspect.getattr_static(cls, name, None)
            if isinstance(member, property):
                return _as_instance(_hints(member.fget).get("return"))
            if callable(member) or isinstance(member, classmethod | staticmethod):
                return _Value(getattr(cls, name))  # the function: its signature is checked
            return _as_instance(_hints(cls).get(name))
        return UNKNOWN

    def call(self, node: ast.Call) -> _Type:
        func = self.expr(node.func)
        for arg in [*node.args, *(k.value for k in node.keywords)]:
            self.expr(arg)
        if not isinstance(func, _Value) or not callable(func.obj):
            return UNKNOWN
        target = func.obj
        if not getattr(target, "__module__", "msd_async").startswith("msd_async"):
            return UNKNOWN
        starred = any(isinstance(a, ast.Starred) for a in node.args) or any(
            k.arg is None for k in node.keywords)
        try:
            signature = inspect.signature(target)
        except (TypeError, ValueError):
            signature = None
        if signature is not None and not starred:
            args = [object()] * len(node.args)
            # A method read from an instance: the class's function takes ``self`` first.
            if isinstance(node.func, ast.Attribute) and isinstance(
                self.expr(node.func.value), _Instance
            ) and inspect.isfunction(target) and next(iter(signature.parameters), "") == "self":
                args.insert(0, object())
            try:
                signature.bind(*args, **{k.arg: object() for k in node.keywords if k.arg})
            except TypeError as exc:
                self.problem(node, f"{getattr(target, '__qualname__', target)}{signature}: {exc}")
        if inspect.iscoroutinefunction(target) and id(node) not in self.consumed:
            self.problem(node, f"{ast.unparse(node.func)}() is a coroutine: await it")
        if isinstance(target, type):
            return _Instance(target)
        return _as_instance(_hints(target).get("return"))


def test_the_checker_sees_a_wrong_name_a_wrong_keyword_and_a_missing_import() -> None:
    # The checks above must be able to fail: each of these is a mistake a doc could make.
    code = (
        "import msd_async\n"
        "from msd_async import Sesion\n"
        "async with msd_async.Session(regoin='x') as s:\n"
        "    st = s.container('http://h')\n"
        "    await st.put_objekt('a', b'')\n"
        "    async with st.get_object('a') as obj:\n"
        "        print(obj.sizee)\n"
        "    async for item in st.list_items():\n"
        "        print(item.nme)\n"
        "    info = await st.describe_object('a')\n"
        "    print(info.etag, info.colour, LivePublisher)\n"
        "    url = st.presign_get('a')\n"
        "    print(msd_async.Limits().max_conns)\n"
    )
    problems = "\n".join(_Checker(Block("t", 1, code, False)).run())
    for mistake in ("Sesion", "max_conns", "regoin", "put_objekt", "sizee", "nme", "colour",
                    "'LivePublisher' is used but never imported",
                    "st.presign_get() is a coroutine: await it"):
        assert mistake in problems, (mistake, problems)
    assert "etag" not in problems


# --- running the blocks --------------------------------------------------------------------

RUNNABLE = [b for b in PYTHON_BLOCKS if not b.fragment]
RUN_TIMEOUT = 20
#: What a block prints, by its file and a line of its code: the values its names promise.
EXPECTED_OUTPUT = [
    # status, content_length (the range's), object_size (the whole object's), etag
    ("README.md", "print(obj.status, obj.content_length",
     re.compile(r"^206 1048576 2000000 \S+$", re.M)),
    ("README.md", "print(item.type, item.name", re.compile(r"^OBJECT index.m3u8 \d+$", re.M)),
    ("README.md", "print(err.code, err.status", re.compile(r"^ObjectNotFoundException 404 \S+$")),
    ("docs/ingest.md", "print(relay.url)", re.compile(r"^http://127\.0\.0\.1:\d+")),
    ("docs/live.md", ".latency_p99)", re.compile(r"^0\.\d+$")),
]


@pytest.fixture
def aws_user(
    aws_home: Path, monkeypatch: pytest.MonkeyPatch, mediastore_server: LocalMediaStore
) -> LocalMediaStore:
    """The AWS environment a user of the credential chain has, for the local server."""
    creds = mediastore_server.credentials
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", creds.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", creds.secret_access_key)
    monkeypatch.setenv("AWS_REGION", mediastore_server.region)
    return mediastore_server


@pytest.mark.anyio
@pytest.mark.parametrize("block", RUNNABLE, ids=str)
async def test_python_block_runs_against_the_local_server(
    block: Block, aws_user: LocalMediaStore, mediastore_client: msd_async.ContainerClient,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, store = aws_user, mediastore_client
    # What the docs' examples expect to find: a movie, an old segment, a site folder.
    await store.put_object("vod/movie.mp4", b"m" * 2_000_000, content_type="video/mp4")
    await store.put_object("live/720p/seg_01.m4s", b"s" * 1000)
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text("<h1>hi</h1>")
    monkeypatch.chdir(tmp_path)
    code = block.context + "\n" + AWS_ENDPOINT.sub(server.endpoint, block.code)
    # A fixed port of the docs (the relay's 8080) may be taken on this machine.
    code = re.sub(r"\bport=\d+", "port=0", code)
    namespace = {"__name__": "__main__", **_placeholders(server, store)}
    compiled = compile(code, str(block), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        if compiled.co_flags & inspect.CO_COROUTINE:
            await asyncio.wait_for(eval(compiled, namespace), RUN_TIMEOUT)
        else:
            # A whole program (it calls asyncio.run itself) runs on a loop of its own, as
            # ``python file.py`` would, while this loop serves it.
            await asyncio.wait_for(asyncio.to_thread(exec, compiled, namespace), RUN_TIMEOUT)
    for file, line, expected in EXPECTED_OUTPUT:
        if block.file == file and line in block.code:
            assert expected.search(out.getvalue()), (expected, out.getvalue())
    for file, line, check in EXPECTED_EFFECTS:
        if block.file == file and line in block.code:
            await check(store)
    if "app" in namespace:
        await _check_video_routes(namespace["app"], store)


async def _check_video_routes(app: object, store: msd_async.ContainerClient) -> None:
    """docs/web.md's apps serve and accept /videos/{name} as vod/{name}."""
    from aiohttp import ClientSession, web

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/videos"
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(listener.close)
        if isinstance(app, web.Application):
            runner = web.AppRunner(app, handle_signals=False)
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            await web.SockSite(runner, listener).start()
        else:
            import uvicorn

            server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off",
                                                   ws="none", timeout_graceful_shutdown=2))
            serving = asyncio.ensure_future(server.serve(sockets=[listener]))

            async def stop() -> None:
                server.should_exit = True
                await serving

            stack.push_async_callback(stop)
            while not server.started and not serving.done():  # uvicorn has no started event
                await asyncio.wait({serving}, timeout=0.02)
        http = await stack.enter_async_context(ClientSession())
        async with http.put(f"{url}/new.mp4", data=b"v" * 3000,
                            headers={"Content-Type": "video/mp4"}) as resp:
            assert resp.status < 300, await resp.text()
        assert await store.get_bytes("vod/new.mp4") == b"v" * 3000
        async with http.get(f"{url}/movie.mp4", headers={"Range": "bytes=10-19"}) as resp:
            assert (resp.status, await resp.read()) == (206, b"m" * 10)
        async with http.head(f"{url}/movie.mp4") as resp:
            assert (resp.status, resp.headers["Content-Length"]) == (200, "2000000")


async def _quickstart_effects(store: msd_async.ContainerClient) -> None:
    segment = await store.describe_object("live/720p/seg_42.m4s")
    assert (segment.content_length, segment.content_type) == (2000, "video/mp4")
    assert (await store.describe_object("live/720p/index.m3u8")).cache_control == "max-age=1"
    with pytest.raises(msd_async.ObjectNotFoundError):
        await store.describe_object("live/720p/seg_01.m4s")


async def _sync_effects(store: msd_async.ContainerClient) -> None:
    # Up into www, then back down into copy (the test's working folder).
    assert await store.get_bytes("www/index.html") == b"<h1>hi</h1>"
    copied = await asyncio.to_thread(Path("copy", "index.html").read_text)
    assert copied == "<h1>hi</h1>"


#: What a block leaves in the container or on disk, by its file and a line of its code.
EXPECTED_EFFECTS = [
    ("README.md", "seg_42.m4s", _quickstart_effects),
    ("docs/transfer.md", "report = await sync(", _sync_effects),
]


def test_expected_outputs_name_blocks_that_exist() -> None:
    for file, line, _ in [*EXPECTED_OUTPUT, *EXPECTED_EFFECTS]:
        assert any(b.file == file and line in b.code for b in RUNNABLE), (file, line)


def test_examples_quickstart_runs_as_documented() -> None:
    # README: "`.venv/bin/python examples/quickstart.py` runs a round trip of every
    # operation through the embedded server (a STREAMING segment read while it uploads, its
    # playlist, a listing, a ranged GET, describe and delete)."
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        runpy.run_path(str(ROOT / "examples" / "quickstart.py"), run_name="__main__")
    printed = out.getvalue()
    for expected in (
        "PutObject  live/720p/seg_00001.m4s  655,360 bytes (STREAMING)",
        "GetObject  read while uploading: 655,360 bytes, sha256 matches: True",
        "PutObject  live/720p/index.m3u8 (STANDARD)",
        "ListItems  OBJECT seg_00001.m4s",
        "GetObject  range (0, 1023, 655360) -> 1024 bytes, status 206",
        "Describe   index.m3u8: application/vnd.apple.mpegurl",
        "Delete     done; describing it again: ObjectNotFoundError (ObjectNotFoundException)",
        "ListItems  container root after deletes: [] (empty folders go)",
        "round trip complete",
    ):
        assert expected in printed, (expected, printed)
    # Read while it uploads: the player had bytes before the last chunk was yielded.
    lead = re.search(r"first bytes arrived (-?\d+) ms before the upload finished", printed)
    assert lead is not None and int(lead[1]) > 0, printed


# --- the command lines ---------------------------------------------------------------------

#: Commands that run the command after their own options (``parallel ... msd sync ...``).
WRAPPERS = {"parallel", "xargs", "exec", "nohup", "time", "sudo"}


def _msd_command_lines() -> list[tuple[str, list[str]]]:
    found = []
    for block in [b for lang in ("bash", "sh", "console", "shell") for b in _blocks(lang)]:
        text = block.code.replace("\\\n", " ")
        lines = text.splitlines()
        # A comment may show more commands: "# and back; msd ls -r --json www; msd rm -r www".
        lines += [part.strip() for line in lines if " # " in line
                  for part in line.partition(" # ")[2].split(";")
                  if part.strip().startswith("msd ")]
        for n, line in enumerate(lines):
            lexer = shlex.shlex(line.removeprefix("$ "), posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            words, command = list(lexer), []
            for word in [*words, ";"]:
                if word not in ("&&", "||", "|", ";", "&", "(", ")"):
                    command.append(word)
                    continue
                names = [Path(w).name for w in command]
                start = 0 if names[:1] == ["msd"] else (
                    names.index("msd") if names[:1] and names[0] in WRAPPERS and "msd" in names
                    else -1)
                if start >= 0:
                    # ``...`` elides options; ``{}`` is GNU parallel's argument, here 0.
                    args = [w.replace("{}", "0") for w in command[start + 1:] if w != "..."]
                    if ":::" in args:
                        args = args[: args.index(":::")]
                    found.append((f"{block.file}:{block.line + n + 1}", args))
                command = []
    return found


def test_msd_command_lines_of_the_docs_parse() -> None:
    lines = _msd_command_lines()
    # README shows demo, relay, serve and sync; docs/cli.md ls, get and put.
    assert {args[0] for _, args in lines} >= {"demo", "relay", "serve", "sync", "ls", "get", "put"}
    parser = build_parser()
    for where, args in lines:
        errors = io.StringIO()
        try:
            with contextlib.redirect_stderr(errors):
                parser.parse_args(args)
        except SystemExit:
            pytest.fail(f"{where}: msd {shlex.join(args)}: {errors.getvalue()}")


# --- the dashboard -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_dashboard_queries_name_metrics_and_labels_the_hooks_export(
    mediastore_server: LocalMediaStore,
) -> None:
    # examples/grafana-live.json and examples/dashboard_picture.py (not run here: it needs
    # a 40 s demo) query metrics by name and group them by label: a renamed metric or label
    # leaves a panel silently empty. Each name must be one the hooks export after a little
    # traffic, with the labels the queries group by.
    from prometheus_client import CollectorRegistry

    from msd_async.live import LivePublisher
    from msd_async.prometheus import metrics_hook, publisher_hook

    registry = CollectorRegistry()
    async with msd_async.Session(
        credentials=mediastore_server.credentials, region=mediastore_server.region,
        retry=msd_async.RetryPolicy(backoff_initial=0.01, backoff_max=0.01),
        event_hooks=[metrics_hook(registry=registry)],
    ) as session:
        store = session.container(mediastore_server.endpoint)
        mediastore_server.faults.inject("503", method="PUT")  # a retry: msd_retries_total
        await store.put_object("a/seg_0.m4s", b"s" * 1000)
        async with LivePublisher(store, prefix="live",
                                 on_event=publisher_hook(registry=registry)) as publisher:
            seg = await publisher.publish("a/seg_1.m4s", b"s" * 1000, duration=2.0)
            await seg.wait()
    exported: dict[str, set[str]] = {}
    for family in registry.collect():
        for sample in family.samples:
            # A histogram is queried by its family's name too (dashboard_picture appends
            # _bucket itself).
            for name in (sample.name, family.name):
                exported.setdefault(name, set()).update(sample.labels)
    grafana = (ROOT / "examples" / "grafana-live.json").read_text()
    queries = re.findall(r'"expr": "((?:[^"\\]|\\.)*)"', grafana)
    assert len(queries) >= 10
    picture = (ROOT / "examples" / "dashboard_picture.py").read_text()
    for query in [*queries, *re.findall(r'"(msd_\w+)"', picture)]:
        for name in re.findall(r"\bmsd_\w+", query):
            assert name in exported, (name, query, sorted(exported))
            for by in re.findall(r"by \(([^)]*)\)", query):
                grouped = {label.strip() for label in by.split(",")} - {"le"}
                assert grouped <= exported[name], (name, grouped, query)
