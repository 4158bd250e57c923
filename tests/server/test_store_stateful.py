"""The local server as a state machine, against a plain model, through peers we did not write.

Hypothesis drives one container through puts (STANDARD and STREAMING, with and without
Content-Type and Cache-Control, sizes around the server's read and chunk boundaries and
the object limits), overwrites, deletes, nested paths and name conflicts, ranged gets,
describes, paginated listings (some with the folder changing between pages), concurrent
puts to one path, a STREAMING upload left open across other steps with readers following
it until it completes, is cut off or passes the limit, and, for the directory store,
restarts. Everything reaches the server over HTTP from code outside msd_async:

- botocore's own ``mediastore-data`` client for the five operations;
- for what botocore cannot do (an upload still in progress, read concurrently; chunked
  bodies; several PUTs at once), aiohttp and a hand-framed socket, signed with botocore's
  ``SigV4Auth``.

After every step the server must agree with the model (docs/contract.md, "Operations on the
wire", "Ranges", "Semantics"): every object's bytes, ETag, Content-Length, Content-Type,
Cache-Control and Last-Modified by GET and HEAD; every folder's ListItems (names, types,
sizes, ETags); a missing object is 404; readers of the open upload hold exactly what was
sent; and the server never answered 5xx nor logged an error.

CI runs a bounded, derandomized set of examples; ``MSD_LONG_TESTS=1`` runs many more.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import itertools
import json
import random
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import botocore.config
import botocore.session
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from botocore.exceptions import ClientError
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from server_errors import ServerErrors, watching_server_errors
from stateful import LONG, machine_settings
from yarl import URL

from msd_async.testing import LocalMediaStore

pytestmark = pytest.mark.timeout(3600 if LONG else 120)

#: Small limits, so both edges are cheap to reach; STANDARD's sits just past 1 MiB, the
#: directory store's read size, and STREAMING's past 64 KiB, aiohttp's read chunk.
STANDARD_LIMIT = (1 << 20) + 1
STREAMING_LIMIT = 70_000
LIMITS = {"STANDARD": STANDARD_LIMIT, "STREAMING": STREAMING_LIMIT}
#: Wide: a busy two-core machine can stall a step for seconds.
WAIT = 15.0

FOLDERS = ["", "a", "a/b", "c"]
#: Leaves under every folder, and three names that are folders too: conflicts happen.
PATHS = [f"{f}/{leaf}" if f else leaf for f in FOLDERS for leaf in ("x", "y.ts", "k=1:2~")]
PATHS += ["a", "a/b", "c"]
#: Folders listed after every step: the model's, one never used, and an object's path.
LISTED = [*FOLDERS, "zz", "a/x"]
SIZES = st.one_of(
    st.integers(0, 40),
    st.sampled_from([65535, 65536, 65537, STREAMING_LIMIT, 1 << 20, STANDARD_LIMIT]),
)
CONTENT_TYPES = [None, "video/MP2T", "application/vnd.apple.mpegurl", "text/plain"]
CACHE_CONTROLS = [None, "max-age=60", "no-cache, no-store"]
DEFAULT_CONTENT_TYPE = "application/octet-stream"
ETAG = re.compile(r"[0-9a-f]{1,64}")


def payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Version:
    """One committed version as a client saw it stored."""

    data: bytes
    etag: str
    content_type: str | None
    cache_control: str | None
    #: The Last-Modified header, learnt at the first read: a version's never changes.
    last_modified: str | None = None


@dataclass
class Reader:
    """A GET following the open STREAMING upload (runs on the portal's loop)."""

    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)
    ended: str | None = None  # "eof" or "cut"
    error: BaseException | None = None


@dataclass
class OpenUpload:
    """The STREAMING upload left open: a hand-framed chunked PUT on its own socket."""

    path: str
    content_type: str | None
    cache_control: str | None
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    sent: bytearray = field(default_factory=bytearray)
    etag: str | None = None
    readers: list[Reader] = field(default_factory=list)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body


def chunk_frames(data: bytes, cuts: list[int]) -> bytes:
    """``data`` as chunked-encoding frames, cut at ``cuts`` (empty frames never: one ends
    the body)."""
    frames = bytearray()
    edges = sorted({0, len(data), *(c for c in cuts if 0 < c < len(data))})
    for lo, hi in itertools.pairwise(edges):
        frames += b"%x\r\n" % (hi - lo) + data[lo:hi] + b"\r\n"
    return bytes(frames)


class StoreMachine(RuleBasedStateMachine):
    portal: ClassVar[BlockingPortal]
    data_root: ClassVar[Path | None]
    errors: ClassVar[ServerErrors]
    counter: ClassVar[int] = 0

    def __init__(self) -> None:
        super().__init__()
        StoreMachine.counter += 1
        self.data_dir = (
            None if self.data_root is None else str(self.data_root / f"ex{self.counter}")
        )
        self.statuses: list[tuple[str, str]] = []
        self.model: dict[str, Version] = {}
        self.open: OpenUpload | None = None
        self.changed = False
        self.server = self._start_server()
        self.session: aiohttp.ClientSession = self.portal.call(self._new_session)
        self.errors.records.clear()

    # --- plumbing -------------------------------------------------------------------------

    def _start_server(self) -> LocalMediaStore:
        server = LocalMediaStore(
            data_dir=self.data_dir,
            standard_limit=STANDARD_LIMIT,
            streaming_limit=STREAMING_LIMIT,
            # The open upload spans many steps; on a slow machine they can add up to more
            # than the service's 30 seconds, and that cap is not what this test is about.
            upload_time_limit=600,
            on_request=lambda op, status, _s: self.statuses.append((op, status)),
        )
        self.portal.call(server.start)
        self.client = botocore.session.get_session().create_client(
            "mediastore-data",
            endpoint_url=server.endpoint,
            region_name=server.region,
            aws_access_key_id=server.credentials.access_key_id,
            aws_secret_access_key=server.credentials.secret_access_key,
            # One attempt: a retried 500 or dropped connection would hide the failure.
            config=botocore.config.Config(
                retries={"total_max_attempts": 1}, read_timeout=WAIT, connect_timeout=WAIT
            ),
        )
        return server

    @staticmethod
    async def _new_session() -> aiohttp.ClientSession:
        return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT))

    def teardown(self) -> None:
        upload, self.open = self.open, None
        if upload is not None:
            upload.writer.transport.abort()
            # Closing the session under a reader still running would leave it unclosed.
            for reader in upload.readers:
                self.portal.call(self._until, lambda r=reader: r.ended is not None)
        # The clients' idle connections first: the server's shutdown would wait for them.
        self.portal.call(self.session.close)
        self.client.close()
        self.portal.call(self.server.close)

    def sign(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
        unsigned: bool = False,
    ) -> dict[str, str]:
        """Headers for a request signed by botocore's SigV4Auth, as botocore signs them."""
        request = AWSRequest(
            method=method, url=self.server.endpoint + path, headers=dict(headers or {}),
            data=body,
        )
        if unsigned:
            request.context["payload_signing_enabled"] = False
        creds = self.server.credentials
        SigV4Auth(
            BotoCredentials(creds.access_key_id, creds.secret_access_key),
            "mediastore",
            self.server.region,
        ).add_auth(request)
        return dict(request.headers.items())

    def url(self, path: str) -> URL:
        return URL(self.server.endpoint + path, encoded=True)

    # --- the model ------------------------------------------------------------------------

    def conflict(self, path: str) -> bool:
        """Whether storing ``path`` would make a name both a folder and an object."""
        parts = path.split("/")
        if any("/".join(parts[:i]) in self.model for i in range(1, len(parts))):
            return True
        return any(p.startswith(path + "/") for p in self.model)

    def view(self, folder: str) -> dict[str, Version | None]:
        """The model's direct children of ``folder``: a version, or None for a folder."""
        prefix = f"{folder}/" if folder else ""
        items: dict[str, Version | None] = {}
        for path, version in self.model.items():
            if path.startswith(prefix):
                name, sep, _ = path[len(prefix):].partition("/")
                items[name] = None if sep else version
        return items

    # --- puts -----------------------------------------------------------------------------

    @rule(
        path=st.sampled_from(PATHS),
        size=SIZES,
        seed=st.integers(0, 3),
        availability=st.sampled_from(["STANDARD", "STREAMING", None]),
        content_type=st.sampled_from(CONTENT_TYPES),
        cache_control=st.sampled_from(CACHE_CONTROLS),
        slash=st.booleans(),
    )
    def put(
        self, path: str, size: int, seed: int, availability: str | None,
        content_type: str | None, cache_control: str | None, slash: bool,
    ) -> None:
        if size > LIMITS[availability or "STANDARD"]:
            size = LIMITS[availability or "STANDARD"]
        data = payload(size, seed)
        params: dict[str, Any] = {"Path": ("/" if slash else "") + path, "Body": data}
        if availability is not None:
            params["UploadAvailability"] = availability
        if content_type is not None:
            params["ContentType"] = content_type
        if cache_control is not None:
            params["CacheControl"] = cache_control
        if self.conflict(path):
            with pytest.raises(ClientError) as caught:
                self.client.put_object(**params)
            assert caught.value.response["Error"]["Code"] == "ValidationException"
            return
        reply = self.client.put_object(**params)
        self.stored(path, reply, data, content_type, cache_control)

    def stored(
        self, path: str, reply: dict[str, Any], data: bytes, content_type: str | None,
        cache_control: str | None,
    ) -> None:
        assert reply["ContentSHA256"] == sha256(data)
        assert reply["StorageClass"] == "TEMPORAL"
        etag = reply["ETag"]
        assert ETAG.fullmatch(etag), etag
        # Every PUT is a new version with a new ETag, identical bytes or not (docs/contract.md,
        # "Operations on the wire": a choice of the local server).
        old = self.model.get(path)
        assert old is None or old.etag != etag
        self.model[path] = Version(data, etag, content_type, cache_control)
        self.changed = True

    @rule(
        path=st.sampled_from(PATHS),
        availability=st.sampled_from(["STANDARD", "STREAMING"]),
        chunked=st.booleans(),
    )
    def put_over_limit(self, path: str, availability: str, chunked: bool) -> None:
        """One byte past the limit: refused, and the previous version stays."""
        limit = LIMITS[availability]
        if chunked and availability == "STANDARD":
            chunked = False  # a megabyte the server stops reading is not worth the wait
        status, headers, body = self.portal.call(
            self._raw_put, path, payload(limit + 1, 9), availability, chunked
        )
        assert status == 400, (status, body)
        assert headers["x-amzn-errortype"] == "ValidationException"

    async def _raw_put(
        self, path: str, data: bytes, availability: str, chunked: bool
    ) -> tuple[int, dict[str, str], bytes]:
        reader, writer = await asyncio.open_connection(self.server.host, self.server.port)
        try:
            signed = self.sign(
                "PUT", "/" + path, {"x-amz-upload-availability": availability}, unsigned=True
            )
            framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(data)}"
            head = f"PUT /{path} HTTP/1.1\r\nHost: {self.host()}\r\n{framing}\r\n"
            head += "".join(f"{k}: {v}\r\n" for k, v in signed.items()) + "\r\n"
            writer.write(head.encode())
            if chunked:
                # A STREAMING body fits the socket buffers: all of it is sent before the
                # server's refusal closes the connection.
                writer.write(chunk_frames(data, list(range(0, len(data), 8192))) + b"0\r\n\r\n")
            # A declared length over the limit is refused before the body is read: the
            # body is never sent.
            await writer.drain()
            return await asyncio.wait_for(read_response(reader), WAIT)
        finally:
            writer.transport.abort()

    def host(self) -> str:
        return f"{self.server.host}:{self.server.port}"

    @rule(
        path=st.sampled_from(PATHS),
        ops=st.lists(
            st.one_of(
                st.tuples(st.integers(0, 70), st.integers(0, 3), st.booleans(), st.booleans()),
                st.just(None),
            ),
            min_size=2, max_size=4,
        ).filter(lambda ops: any(op is not None for op in ops)),
    )
    def concurrent_writes(
        self, path: str, ops: list[tuple[int, int, bool, bool] | None]
    ) -> None:
        """PUTs (None: a DELETE) of one path at once: each PUT succeeds, each DELETE finds an
        object or not, and what is left is nothing or one PUT's bytes, whole, with the ETag
        that PUT returned."""
        datas = [None if op is None else payload(op[0], op[1]) for op in ops]
        replies = self.portal.call(self._concurrent, path, datas, ops)
        puts = [(d, r) for d, r in zip(datas, replies, strict=True) if d is not None]
        deletes = [r for d, r in zip(datas, replies, strict=True) if d is None]
        if self.conflict(path):
            assert all(r[0] == 400 for _, r in puts), replies
            assert all(r[0] == 404 for r in deletes), replies
            return
        assert all(r[0] == 200 for _, r in puts), replies
        assert all(r[0] in (200, 404) for r in deletes), replies
        for data, (_, text) in puts:
            assert json.loads(text)["ContentSHA256"] == sha256(data)
        self.changed = True
        by_etag = {json.loads(text)["ETag"]: data for data, (_, text) in puts}
        if self.open is not None and self.open.path == path:
            # GET answers with the upload in progress: ListItems shows what is committed.
            folder, _, name = path.rpartition("/")
            item = next((i for i in self.list_all(folder, None) if i["Name"] == name), None)
            if item is None:
                assert deletes, "no DELETE was sent, yet nothing is stored"
                self.model.pop(path, None)
                return
            assert item["ETag"] in by_etag, "the stored version is none of the PUTs"
            assert item["ContentLength"] == len(by_etag[item["ETag"]])
            self.model[path] = Version(by_etag[item["ETag"]], item["ETag"], None, None)
            return
        try:
            got = self.client.get_object(Path=path)
        except ClientError as exc:
            assert deletes, "no DELETE was sent, yet nothing is stored"
            assert exc.response["Error"]["Code"] == "ObjectNotFoundException"
            self.model.pop(path, None)
            return
        assert got["ETag"] in by_etag, "the stored version is none of the PUTs"
        assert got["Body"].read() == by_etag[got["ETag"]]
        self.model[path] = Version(by_etag[got["ETag"]], got["ETag"], None, None)

    async def _concurrent(
        self, path: str, datas: list[bytes | None], ops: list[tuple[int, int, bool, bool] | None]
    ) -> list[tuple[int, str]]:
        async def put(data: bytes, chunked: bool, unsigned: bool) -> tuple[int, str]:
            # A signed payload hash is checked only once the body is in (a deferred check);
            # UNSIGNED-PAYLOAD is what botocore sends.
            headers = self.sign("PUT", "/" + path, body=data, unsigned=unsigned)
            body: Any = data
            if chunked:
                async def gen() -> AsyncIterator[bytes]:
                    for i in range(0, len(data), 16):
                        yield data[i:i + 16]
                        await asyncio.sleep(0)
                body = gen()
            async with self.session.put(
                self.url("/" + path), data=body, headers=headers,
                skip_auto_headers=["Content-Type"],
            ) as resp:
                return resp.status, await resp.text()

        async def delete() -> tuple[int, str]:
            async with self.session.delete(
                self.url("/" + path), headers=self.sign("DELETE", "/" + path)
            ) as resp:
                return resp.status, await resp.text()

        return list(await asyncio.gather(*(
            delete() if data is None or op is None else put(data, op[2], op[3])
            for data, op in zip(datas, ops, strict=True)
        )))

    @rule(path=st.sampled_from(PATHS))
    def delete(self, path: str) -> None:
        if path not in self.model:
            with pytest.raises(ClientError) as caught:
                self.client.delete_object(Path=path)
            assert caught.value.response["Error"]["Code"] == "ObjectNotFoundException"
            assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
            return
        self.client.delete_object(Path=path)
        del self.model[path]
        self.changed = True

    # --- reads ----------------------------------------------------------------------------

    @rule(
        path=st.sampled_from(PATHS),
        kind=st.sampled_from(["a-b", "a-", "-n", "past"]),
        a=st.integers(0, 1 << 21),
        n=st.integers(0, 70),
    )
    def get_range(self, path: str, kind: str, a: int, n: int) -> None:
        version = self.model.get(path)
        if version is None or (self.open is not None and self.open.path == path):
            return
        data, size = version.data, len(version.data)
        start = a % size if size else 0
        if kind == "a-b":
            spec, lo, hi = f"{start}-{start + n}", start, min(start + n + 1, size)
        elif kind == "a-":
            spec, lo, hi = f"{start}-", start, size
        elif kind == "-n":
            spec, lo, hi = f"-{n + 1}", max(0, size - n - 1), size
        else:
            spec, lo, hi = f"{size + n}-{size + n + a}", size, size
        # RFC 9110 section 14.1.1: a range that starts past the end (or any suffix of an
        # empty object) is unsatisfiable.
        if lo >= size:
            with pytest.raises(ClientError) as caught:
                self.client.get_object(Path=path, Range=f"bytes={spec}")
            error = caught.value.response
            assert error["Error"]["Code"] == "RequestedRangeNotSatisfiableException"
            assert error["ResponseMetadata"]["HTTPStatusCode"] == 416
            assert error["ResponseMetadata"]["HTTPHeaders"]["content-range"] == f"bytes */{size}"
            return
        got = self.client.get_object(Path=path, Range=f"bytes={spec}")
        assert got["StatusCode"] == 206
        assert got["ContentRange"] == f"bytes {lo}-{hi - 1}/{size}"
        assert got["ContentLength"] == hi - lo
        assert got["Body"].read() == data[lo:hi]
        self.same_version(version, got)

    @rule(path=st.sampled_from(PATHS), slash=st.booleans())
    def describe(self, path: str, slash: bool) -> None:
        version = self.model.get(path)
        if version is None or (self.open is not None and self.open.path == path):
            return  # a 404 is checked after every step, the open upload by its readers
        described = self.client.describe_object(Path=("/" if slash else "") + path)
        assert described["ContentLength"] == len(version.data)
        self.same_version(version, described)

    def same_version(self, version: Version, got: dict[str, Any]) -> None:
        assert got["ETag"] == version.etag
        assert got["ContentType"] == (version.content_type or DEFAULT_CONTENT_TYPE)
        assert got.get("CacheControl") == version.cache_control
        modified = got["ResponseMetadata"]["HTTPHeaders"]["last-modified"]
        if version.last_modified is None:
            version.last_modified = modified
        assert modified == version.last_modified

    # --- listings -------------------------------------------------------------------------

    def list_all(self, folder: str, max_results: int | None, spelling: str = "") -> list[Any]:
        items: list[Any] = []
        token = None
        while True:
            params: dict[str, Any] = {}
            if folder or spelling:
                params["Path"] = spelling or folder
            if max_results is not None:
                params["MaxResults"] = max_results
            if token is not None:
                params["NextToken"] = token
            page = self.client.list_items(**params)
            assert len(page["Items"]) <= (max_results or 1000)
            items += page["Items"]
            token = page.get("NextToken")
            if token is None:
                return items
            # A token promises more: a page that ends the listing carries none.
            assert page["Items"]

    def check_listing(self, folder: str, items: list[Any]) -> None:
        names = [i["Name"] for i in items]
        assert len(names) == len(set(names)), f"{folder!r} lists a name twice: {names}"
        # Ascending byte order is the local server's choice (docs/contract.md).
        assert names == sorted(names, key=lambda n: n.encode())
        expected = self.view(folder)
        assert set(names) == set(expected), (folder, names, sorted(expected))
        for item in items:
            self.check_item(item, expected[item["Name"]])

    def check_item(self, item: dict[str, Any], version: Version | None) -> None:
        if version is None:
            assert item == {"Name": item["Name"], "Type": "FOLDER"}
            return
        assert item["Type"] == "OBJECT"
        assert item["ContentLength"] == len(version.data)
        assert item["ETag"] == version.etag
        # ContentType only when the uploader set one (the server's choice).
        assert item.get("ContentType") == version.content_type
        assert set(item) <= {"Name", "Type", "ETag", "LastModified", "ContentLength",
                             "ContentType"}
        if version.last_modified is not None:
            header = email.utils.parsedate_to_datetime(version.last_modified)
            # ListItems has milliseconds, the header whole seconds: the same instant.
            assert int(item["LastModified"].timestamp()) == int(header.timestamp())

    @rule(
        folder=st.sampled_from(LISTED),
        max_results=st.integers(1, 4),
        spelling=st.sampled_from(["plain", "leading", "trailing"]),
    )
    def list_paginated(self, folder: str, max_results: int, spelling: str) -> None:
        written = folder
        if folder and spelling == "leading":
            written = "/" + folder
        elif folder and spelling == "trailing":
            written = folder + "/"
        self.check_listing(folder, self.list_all(folder, max_results, written))

    @rule(
        folder=st.sampled_from(FOLDERS),
        max_results=st.integers(1, 2),
        changes=st.lists(
            st.tuples(st.sampled_from(["x", "y.ts", "k=1:2~", "b", "m"]), st.booleans()),
            min_size=1, max_size=4,
        ),
    )
    def list_while_changing(
        self, folder: str, max_results: int, changes: list[tuple[str, bool]]
    ) -> None:
        """A folder changed between pages: no name twice, in order, and every name there
        from start to end listed once. A name deleted between pages and stored again is
        not one of those: stored again behind the cursor, it is rightly missed, as a name
        stored there for the first time is."""
        before = set(self.view(folder))
        deleted: set[str] = set()
        names: list[str] = []
        token = None
        pending = list(changes)
        while True:
            params: dict[str, Any] = {"MaxResults": max_results}
            if folder:
                params["Path"] = folder
            if token is not None:
                params["NextToken"] = token
            page = self.client.list_items(**params)
            names += [i["Name"] for i in page["Items"]]
            token = page.get("NextToken")
            if token is None:
                break
            if pending:
                leaf, add = pending.pop(0)
                path = f"{folder}/{leaf}" if folder else leaf
                if add and not self.conflict(path):
                    data = payload(3, 0)
                    self.stored(path, self.client.put_object(Path=path, Body=data), data,
                                None, None)
                elif not add and path in self.model:
                    self.client.delete_object(Path=path)
                    del self.model[path]
                    deleted.add(leaf)
        throughout = (before & set(self.view(folder))) - deleted
        assert len(names) == len(set(names)), names
        assert names == sorted(names, key=lambda n: n.encode())
        assert throughout <= set(names), throughout - set(names)
        after = set(self.view(folder))
        # Anything else listed was there at some moment of the listing.
        assert set(names) <= before | after | {leaf for leaf, _ in changes}

    # --- the open STREAMING upload --------------------------------------------------------

    @precondition(lambda self: self.open is None)
    @rule(
        path=st.sampled_from(PATHS),
        content_type=st.sampled_from(CONTENT_TYPES),
        cache_control=st.sampled_from(CACHE_CONTROLS),
    )
    def stream_start(self, path: str, content_type: str | None, cache_control: str | None) -> None:
        headers = {"x-amz-upload-availability": "STREAMING", "x-amz-storage-class": "TEMPORAL"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        if cache_control is not None:
            headers["Cache-Control"] = cache_control
        signed = self.sign("PUT", "/" + path, headers, unsigned=True)
        reader, writer = self.portal.call(
            asyncio.open_connection, self.server.host, self.server.port
        )
        upload = OpenUpload(path, content_type, cache_control, reader, writer)
        head = f"PUT /{path} HTTP/1.1\r\nHost: {self.host()}\r\nTransfer-Encoding: chunked\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in signed.items()) + "\r\n"
        self.portal.call(self._send, upload, head.encode())
        if self.conflict(path):
            status, headers_, _ = self.portal.call(self._response, upload)
            assert status == 400 and headers_["x-amzn-errortype"] == "ValidationException"
            writer.transport.abort()
            return
        self.open = upload
        self.changed = True
        # Visible as soon as it starts (docs/contract.md, "Semantics", STREAMING): a HEAD
        # without a length, with the upload's own ETag.
        described = self.wait_for_open(path)
        assert "ContentLength" not in described
        assert described["ContentType"] == (content_type or DEFAULT_CONTENT_TYPE)
        assert described.get("CacheControl") == cache_control
        assert ETAG.fullmatch(described["ETag"])
        upload.etag = described["ETag"]

    def wait_for_open(self, path: str) -> dict[str, Any]:
        """DescribeObject until the in-progress upload answers: the PUT's request may still
        be on its way to the handler."""
        for _ in range(int(WAIT / 0.02)):
            try:
                described = self.client.describe_object(Path=path)
            except ClientError:
                described = None
            if described is not None and "ContentLength" not in described:
                return dict(described)
            self.portal.call(asyncio.sleep, 0.02)
        raise AssertionError(f"the STREAMING upload of {path!r} never became visible")

    @staticmethod
    async def _send(upload: OpenUpload, data: bytes) -> None:
        upload.writer.write(data)
        await upload.writer.drain()

    @staticmethod
    async def _response(upload: OpenUpload) -> tuple[int, dict[str, str], bytes]:
        return await asyncio.wait_for(read_response(upload.reader), WAIT)

    @precondition(lambda self: self.open is not None)
    @rule(size=st.sampled_from([1, 7, 100, 4096, 65536]), seed=st.integers(0, 3),
          cuts=st.lists(st.integers(1, 65535), max_size=3), split=st.integers(0, 40))
    def stream_write(self, size: int, seed: int, cuts: list[int], split: int) -> None:
        upload = self.open
        assert upload is not None
        size = min(size, STREAMING_LIMIT - len(upload.sent))
        if size <= 0:
            return
        data = payload(size, seed + len(upload.sent))
        frames = chunk_frames(data, cuts)
        # The frames themselves may arrive in pieces: a split inside a chunk header or CRLF.
        split = min(split, len(frames))
        self.portal.call(self._send, upload, frames[:split])
        self.portal.call(self._send, upload, frames[split:])
        upload.sent += data

    @precondition(lambda self: self.open is not None)
    @rule(
        size=st.integers(0, 40),
        availability=st.sampled_from(["STANDARD", "STREAMING"]),
    )
    def put_over_open(self, size: int, availability: str) -> None:
        """Another PUT of the open upload's path completes while it is still running."""
        assert self.open is not None
        path = self.open.path
        if self.conflict(path):
            return  # the plain put rule covers a refused PUT
        data = payload(size, 7)
        reply = self.client.put_object(Path=path, Body=data, UploadAvailability=availability)
        self.stored(path, reply, data, None, None)

    @precondition(lambda self: self.open is not None and len(self.open.readers) < 3)
    @rule(ranged=st.booleans())
    def stream_read(self, ranged: bool) -> None:
        """A reader joins the open upload: it gets everything so far, then follows."""
        upload = self.open
        assert upload is not None
        headers = {"Range": "bytes=0-0"} if ranged else {}
        reader = Reader()
        signed = self.sign("GET", "/" + upload.path, headers)
        self.portal.start_task_soon(self._follow, reader, upload.path, signed)
        upload.readers.append(reader)
        self.portal.call(self._until, lambda: reader.status is not None or reader.ended)
        assert reader.error is None, reader.error
        # Range is ignored for a partially uploaded STREAMING object (Model,
        # GetObjectRequest.Range): 200, chunked, no length.
        assert reader.status == 200
        assert "content-length" not in reader.headers
        assert reader.headers.get("transfer-encoding") == "chunked"
        assert reader.headers["etag"] == upload.etag

    async def _follow(self, reader: Reader, path: str, headers: dict[str, str]) -> None:
        try:
            async with self.session.get(self.url("/" + path), headers=headers) as resp:
                reader.headers = {k.lower(): v for k, v in resp.headers.items()}
                reader.status = resp.status
                try:
                    async for chunk in resp.content.iter_any():
                        reader.data += chunk
                    reader.ended = "eof"
                except aiohttp.ClientPayloadError:
                    reader.ended = "cut"
        except Exception as exc:  # reported by the next check of this reader
            reader.error = exc
            reader.ended = "error"

    @staticmethod
    async def _until(predicate: Any) -> None:
        async with asyncio.timeout(WAIT):
            while not predicate():  # noqa: ASYNC110 - state set by other tasks on this loop
                await asyncio.sleep(0.002)

    @precondition(lambda self: self.open is not None)
    @rule(how=st.sampled_from(["complete", "complete", "cut", "overflow"]))
    def stream_end(self, how: str) -> None:
        upload = self.open
        assert upload is not None
        self.open = None
        try:
            self._end(upload, how)
        finally:
            upload.writer.transport.abort()

    def _end(self, upload: OpenUpload, how: str) -> None:
        path = upload.path
        committed = False
        if how == "complete":
            self.portal.call(self._send, upload, b"0\r\n\r\n")
            status, headers, body = self.portal.call(self._response, upload)
            if self.conflict(path):
                # A folder took the name while it streamed: the upload fails at the end.
                assert status == 400 and headers["x-amzn-errortype"] == "ValidationException"
            else:
                assert status == 200, body
                self.stored(path, json.loads(body), bytes(upload.sent), upload.content_type,
                            upload.cache_control)
                committed = True
        elif how == "overflow":
            extra = STREAMING_LIMIT - len(upload.sent) + 1
            self.portal.call(self._send, upload, chunk_frames(payload(extra, 5), []))
            status, headers, _ = self.portal.call(self._response, upload)
            assert status == 400 and headers["x-amzn-errortype"] == "ValidationException"
        else:
            upload.writer.transport.abort()
        for reader in upload.readers:
            self.portal.call(self._until, lambda r=reader: r.ended is not None)
            assert reader.error is None, reader.error
            if committed:
                assert reader.ended == "eof" and reader.data == upload.sent
            else:
                # A failed upload ends its readers' responses without the last chunk, so
                # they can tell (docs/contract.md, "Semantics", STREAMING).
                assert reader.ended == "cut", reader.ended
                assert upload.sent.startswith(reader.data)
        if not committed:
            self.wait_until_gone(path)

    def wait_until_gone(self, path: str) -> None:
        """A failed upload is noticed when its connection drops: until then it may still
        answer; after, the previous version (or nothing) does."""
        for _ in range(int(WAIT / 0.02)):
            try:
                described = self.client.describe_object(Path=path)
            except ClientError:
                described = None
            if described is None and path not in self.model:
                return
            if described is not None and "ContentLength" in described:
                return
            self.portal.call(asyncio.sleep, 0.02)
        raise AssertionError(f"the failed upload of {path!r} is still visible")

    # --- restarts (the directory store) ---------------------------------------------------

    # Only once something changed since the last start: a restart is the slowest step.
    @precondition(lambda self: self.data_dir is not None and self.changed)
    @rule()
    def restart(self) -> None:
        """Close and reopen on the same directory: every completed version survives, ETag
        and dates included; an open upload is lost and the previous version stays."""
        upload, self.open = self.open, None
        self.client.close()
        self.portal.call(self.server.close)
        if upload is not None:
            for reader in upload.readers:
                self.portal.call(self._until, lambda r=reader: r.ended is not None)
                assert reader.ended == "cut", reader.ended
            upload.writer.transport.abort()
        self.portal.call(self.session.close)
        self.server = self._start_server()
        self.session = self.portal.call(self._new_session)
        self.changed = False

    # --- invariants -----------------------------------------------------------------------

    @invariant()
    def objects_match(self) -> None:
        open_path = self.open.path if self.open is not None else None
        for path in sorted({*PATHS, *self.model}):
            version = self.model.get(path)
            if path == open_path:
                continue  # answered by the upload in progress: checked by its readers
            if version is None:
                with pytest.raises(ClientError) as caught:
                    self.client.describe_object(Path=path)
                assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
                assert caught.value.response["Error"]["Code"] == "ObjectNotFoundException"
                continue
            got = self.client.get_object(Path=path)
            assert got["StatusCode"] == 200
            assert got["ContentLength"] == len(version.data)
            assert got["Body"].read() == version.data
            self.same_version(version, got)

    @invariant()
    def listings_match(self) -> None:
        for folder in LISTED:
            self.check_listing(folder, self.list_all(folder, None))

    @invariant()
    def readers_follow(self) -> None:
        upload = self.open
        if upload is None:
            return
        # Whatever else was stored at its path meanwhile, the upload is readable until it
        # ends (docs/contract.md, "Semantics", STREAMING).
        described = self.client.describe_object(Path=upload.path)
        assert "ContentLength" not in described and described["ETag"] == upload.etag
        for reader in upload.readers:
            self.portal.call(
                self._until,
                lambda r=reader, u=upload: len(r.data) >= len(u.sent) or r.ended is not None,
            )
            assert reader.error is None and reader.ended is None, (reader.ended, reader.error)
            assert reader.data == upload.sent

    @invariant()
    def no_server_errors(self) -> None:
        assert not [s for s in self.statuses if s[1].startswith("5")], self.statuses
        assert not self.errors.records, [r.getMessage() for r in self.errors.records]


@pytest.fixture
def server_errors() -> Iterator[ServerErrors]:
    with watching_server_errors() as handler:
        yield handler


@pytest.mark.parametrize("store", ["memory", "directory"])
def test_store_state_machine(store: str, tmp_path: Path, server_errors: ServerErrors) -> None:
    with start_blocking_portal("asyncio") as portal:
        StoreMachine.portal = portal
        StoreMachine.data_root = tmp_path if store == "directory" else None
        StoreMachine.errors = server_errors
        run = machine_settings(
            examples=8, long_examples=200, steps=30, long_steps=60, shrink_long=False
        )
        run_state_machine_as_test(StoreMachine, settings=run)


def test_a_name_deleted_and_stored_again_behind_the_cursor_may_be_missed(
    server_errors: ServerErrors,
) -> None:
    """The long run's find (the machine's model, not the server, was wrong): a name deleted
    after the first page and stored again after the cursor passed it was required in the
    listing, as if it had been there all along."""
    with start_blocking_portal("asyncio") as portal:
        StoreMachine.portal = portal
        StoreMachine.data_root = None
        StoreMachine.errors = server_errors
        machine = StoreMachine()
        try:
            for path in ("a/x", "c/x", "x", "y.ts"):
                machine.put(path, 3, 0, None, None, None, False)
            machine.list_while_changing("", 1, [("b", True)])  # behind the cursor
            assert "b" in machine.model
            # Pages a | c | x | y.ts: b goes after the first, comes back after the third.
            machine.list_while_changing("", 1, [("b", False), ("b", False), ("b", True)])
            machine.listings_match()
            machine.no_server_errors()
        finally:
            machine.teardown()
