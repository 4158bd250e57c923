"""Object storage for the local server: a folder tree of versions, in memory or in a directory.

The namespace is a tree of folders whose leaves are object versions. Folders exist only while
they hold an object (docs/contract.md, "Semantics"): inserting creates them, removing the
last object prunes them.
A name is either a folder or an object, never both.

An :class:`Upload` collects one PUT's body. It becomes a version only by :meth:`Upload.commit`,
which publishes it atomically; :meth:`Upload.abort` drops it and leaves the previous version
untouched. A STREAMING upload is *visible* while in progress: readers follow its chunks with
:meth:`Upload.follow` until it completes, or see :class:`UploadFailed` if it is aborted.

:class:`DirectoryStore` keeps each object as one file at ``DIR/<path>``: the object's bytes,
then a JSON metadata trailer, its length (8 bytes, big-endian) and the magic ``MSDOBJ01``. An
upload is written to ``DIR/@tmp/`` (``@`` cannot occur in an object name, so these never alias
one), fsynced, then ``os.replace``d onto its final name: a file either holds a complete version
or does not exist, so a kill at any moment leaves the previous version intact. On start,
leftovers in ``@tmp`` are deleted and empty folders pruned.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from dataclasses import dataclass
from typing import IO, Final, Literal

from ..rules import Availability

__all__ = [
    "DirectoryStore",
    "MemoryStore",
    "NameConflictError",
    "ObjectVersion",
    "Store",
    "Upload",
    "UploadFailed",
]

logger = logging.getLogger("msd_async.testing.store")

DEFAULT_CONTENT_TYPE: Final = "application/octet-stream"
_TRAILER_MAGIC: Final = b"MSDOBJ01"
_TMP_DIR: Final = "@tmp"
_READ_SIZE: Final = 1 << 20


class NameConflictError(Exception):
    """The path would make one name both a folder and an object."""


class UploadFailed(Exception):
    """The upload a reader was following was aborted: the data it received is incomplete."""


@dataclass(frozen=True, slots=True)
class ObjectVersion:
    """One stored version of an object. ``data`` is set by the memory store, ``file`` by the
    directory store (the bytes are the first ``size`` bytes of that file)."""

    path: str
    size: int
    etag: str
    content_sha256: str
    content_type: str
    cache_control: str | None
    last_modified: float
    availability: Availability
    #: Whether the uploader set a Content-Type (ListItems omits ContentType otherwise).
    content_type_set: bool = True
    data: bytes | None = None
    file: str | None = None

    def metadata(self) -> dict[str, object]:
        return {
            "path": self.path,
            "size": self.size,
            "etag": self.etag,
            "content_sha256": self.content_sha256,
            "content_type": self.content_type,
            "content_type_set": self.content_type_set,
            "cache_control": self.cache_control,
            "last_modified": self.last_modified,
            "availability": self.availability,
        }


def _new_etag(sha: bytes) -> str:
    # Content hash mixed with a per-version nonce: 64 hex, differs from ContentSHA256 and
    # changes on every PUT even for identical bytes (a choice; docs/contract.md,
    # "Operations on the wire").
    return hashlib.sha256(sha + secrets.token_bytes(16)).hexdigest()


class _Folder:
    __slots__ = ("children", "sorted_names")

    def __init__(self) -> None:
        self.children: dict[str, _Folder | ObjectVersion] = {}
        self.sorted_names: list[str] | None = None


class Store:
    """The namespace and in-progress uploads; subclasses decide where bytes live."""

    def __init__(self) -> None:
        self._root = _Folder()
        #: Visible STREAMING uploads in progress per path, oldest first. A GET answers with
        #: the newest; an older one that is still running becomes the answer again when a
        #: newer one ends first (it is still uploading, so still readable).
        self._streaming: dict[str, list[Upload]] = {}
        self._count = 0

    # -- lookups ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._count

    def get(self, path: str) -> ObjectVersion | None:
        """The committed version at ``path`` (``None`` if missing or a folder)."""
        node: _Folder | ObjectVersion = self._root
        for name in path.split("/"):
            if not isinstance(node, _Folder):
                return None
            child = node.children.get(name)
            if child is None:
                return None
            node = child
        return node if isinstance(node, ObjectVersion) else None

    def in_progress(self, path: str) -> Upload | None:
        """The visible STREAMING upload at ``path``, if one is running."""
        running = self._streaming.get(path)
        return running[-1] if running else None

    def is_folder(self, path: str) -> bool:
        return self._folder(path) is not None

    def _folder(self, path: str) -> _Folder | None:
        node: _Folder | ObjectVersion = self._root
        if path:
            for name in path.split("/"):
                if not isinstance(node, _Folder):
                    return None
                child = node.children.get(name)
                if child is None:
                    return None
                node = child
        return node if isinstance(node, _Folder) else None

    def list(
        self, folder: str, *, after: str | None = None, limit: int = 1000
    ) -> tuple[list[tuple[str, ObjectVersion | None]], bool]:
        """Direct children of ``folder`` in byte order, after the name ``after``.

        Returns ``(entries, more)``; an entry is ``(name, version)`` or ``(name, None)`` for a
        folder. A missing folder (or an object path) lists as empty.
        """
        node = self._folder(folder)
        if node is None:
            return [], False
        names = node.sorted_names
        if names is None:
            names = node.sorted_names = sorted(node.children)
        start = 0 if after is None else bisect.bisect_right(names, after)
        chosen = names[start : start + limit]
        entries: list[tuple[str, ObjectVersion | None]] = []
        for name in chosen:
            child = node.children[name]
            entries.append((name, child if isinstance(child, ObjectVersion) else None))
        return entries, start + limit < len(names)

    def walk(self) -> Iterator[ObjectVersion]:
        """Every committed version, depth first."""
        stack = [self._root]
        while stack:
            node = stack.pop()
            for child in node.children.values():
                if isinstance(child, _Folder):
                    stack.append(child)
                else:
                    yield child

    # -- namespace changes -----------------------------------------------------------------

    def check_put(self, path: str) -> None:
        """Raise :class:`NameConflictError` if an object cannot be stored at ``path``."""
        node: _Folder = self._root
        names = path.split("/")
        for i, name in enumerate(names):
            child = node.children.get(name)
            if child is None:
                return
            last = i == len(names) - 1
            if isinstance(child, ObjectVersion):
                if last:
                    return
                raise NameConflictError(
                    f"'{'/'.join(names[: i + 1])}' is an object; it cannot also be a folder"
                )
            if last:
                raise NameConflictError(f"'{path}' is a folder; it cannot also be an object")
            node = child

    def _insert(self, version: ObjectVersion) -> ObjectVersion | None:
        self.check_put(version.path)
        node = self._root
        *folders, leaf = version.path.split("/")
        for name in folders:
            child = node.children.get(name)
            if child is None:
                child = node.children[name] = _Folder()
                node.sorted_names = None
            assert isinstance(child, _Folder)
            node = child
        old = node.children.get(leaf)
        if old is None:
            node.sorted_names = None
            self._count += 1
        node.children[leaf] = version
        return old if isinstance(old, ObjectVersion) else None

    def _remove(self, path: str) -> ObjectVersion | None:
        chain: list[tuple[_Folder, str]] = []
        node: _Folder | ObjectVersion = self._root
        for name in path.split("/"):
            if not isinstance(node, _Folder):
                return None
            child = node.children.get(name)
            if child is None:
                return None
            chain.append((node, name))
            node = child
        if not isinstance(node, ObjectVersion):
            return None
        # Remove the leaf, then every folder the removal left empty (User Guide, folders-delete).
        for parent, name in reversed(chain):
            del parent.children[name]
            parent.sorted_names = None
            if parent.children or parent is self._root:
                break
        self._count -= 1
        return node

    # -- uploads ---------------------------------------------------------------------------

    def begin_upload(
        self,
        path: str,
        *,
        content_type: str | None,
        cache_control: str | None,
        availability: Availability,
        visible: bool,
    ) -> Upload:
        """Start an upload. ``visible`` makes an in-progress STREAMING upload readable.

        Raises :class:`NameConflictError` when the name is taken by a folder (or a parent by
        an object).
        """
        self.check_put(path)
        upload = self._new_upload(path, content_type, cache_control, availability)
        if visible:
            self._streaming.setdefault(path, []).append(upload)
        return upload

    def _new_upload(
        self,
        path: str,
        content_type: str | None,
        cache_control: str | None,
        availability: Availability,
    ) -> Upload:
        return Upload(self, path, content_type, cache_control, availability)

    def _finish(self, upload: Upload) -> None:
        running = self._streaming.get(upload.path)
        if running is not None and upload in running:
            running.remove(upload)
            if not running:
                del self._streaming[upload.path]

    def _publish(self, upload: Upload, data: bytes | None, file: str | None) -> ObjectVersion:
        sha = upload.sha256.digest()
        ctype = upload.content_type
        version = ObjectVersion(
            path=upload.path,
            size=upload.size,
            etag=_new_etag(sha),
            content_sha256=sha.hex(),
            content_type=ctype or DEFAULT_CONTENT_TYPE,
            content_type_set=ctype is not None,
            cache_control=upload.cache_control,
            last_modified=_now(),
            availability=upload.availability,
            data=data,
            file=file,
        )
        self._insert(version)
        return version

    async def _commit(self, upload: Upload) -> ObjectVersion:
        raise NotImplementedError

    def _discard(self, upload: Upload) -> None:
        """Release whatever an aborted upload holds."""

    def delete(self, path: str) -> bool:
        """Remove the object at ``path``; ``False`` if there was none."""
        return self._remove(path) is not None

    # -- reading ---------------------------------------------------------------------------

    def open(self, version: ObjectVersion) -> _Reader:
        """Open a version for reading. Call it right after the lookup, with no ``await`` in
        between, so a concurrent replace cannot swap the bytes under the metadata."""
        raise NotImplementedError

    async def put_bytes(
        self,
        path: str,
        data: bytes,
        *,
        content_type: str | None = None,
        cache_control: str | None = None,
        availability: Availability = "STANDARD",
    ) -> ObjectVersion:
        """Store ``data`` at ``path`` directly (for fixtures and tests)."""
        upload = self.begin_upload(
            path,
            content_type=content_type,
            cache_control=cache_control,
            availability=availability,
            visible=False,
        )
        try:
            upload.write(data)
            return await upload.commit()
        except BaseException:
            upload.abort()
            raise

    async def aclose(self) -> None:
        """Abort the visible STREAMING uploads in progress (their readers see them fail);
        one whose body all came and that is being committed completes."""
        for running in list(self._streaming.values()):
            for upload in list(running):
                upload.abort()


def _now() -> float:
    # Milliseconds, as the service's epoch-float LastModified shows (User Guide,
    # objects-view-list: 1563571859.379).
    return round(time.time(), 3)


class _Reader:
    """Reads a byte range of a committed version."""

    def __init__(self, data: bytes | None, fh: IO[bytes] | None) -> None:
        self._data = data
        self._fh = fh

    async def iter_range(self, start: int, end: int) -> AsyncIterator[bytes]:
        """Yield bytes ``[start, end)``; always closes the file."""
        try:
            if self._data is not None:
                if start == 0 and end == len(self._data):
                    yield self._data
                else:
                    yield memoryview(self._data)[start:end].tobytes()
                return
            assert self._fh is not None
            self._fh.seek(start)
            remaining = end - start
            while remaining > 0:
                # Page-cache reads of at most 1 MiB are cheaper inline than in a thread.
                chunk = self._fh.read(min(_READ_SIZE, remaining))
                if not chunk:
                    raise UploadFailed("object file is shorter than its metadata says")
                remaining -= len(chunk)
                yield chunk
        finally:
            self.close()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class Upload:
    """The body of one PUT as it arrives. Not thread-safe; one writer."""

    def __init__(
        self,
        store: Store,
        path: str,
        content_type: str | None,
        cache_control: str | None,
        availability: Availability,
    ) -> None:
        self.store = store
        self.path = path
        self.content_type = content_type
        self.cache_control = cache_control
        self.availability = availability
        self.size = 0
        self.sha256 = hashlib.sha256()
        self.chunks: list[bytes] = []
        self.state: Literal["open", "committed", "aborted"] = "open"
        self.version: ObjectVersion | None = None
        self.etag = hashlib.sha256(secrets.token_bytes(16)).hexdigest()
        self.started = _now()
        self._waiter: asyncio.Future[None] | None = None
        #: The body all came and commit() is publishing it (maybe awaiting an fsync).
        self._committing = False
        #: Set by stores that write to disk as the body arrives.
        self.keep_chunks = True

    def write(self, chunk: bytes) -> None:
        """Append one chunk (never copied) and wake readers."""
        if self.state != "open":
            raise RuntimeError(f"upload is {self.state}")
        self.size += len(chunk)
        self.sha256.update(chunk)
        if self.keep_chunks:
            self.chunks.append(chunk)
        self._write_more(chunk)
        self._wake()

    def _write_more(self, chunk: bytes) -> None:
        """Hook for stores that persist chunks as they arrive."""

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def commit(self) -> ObjectVersion:
        """Publish the upload as the current version (atomically replacing the old one).

        Raises :class:`NameConflictError` if a folder took the name meanwhile; the upload is
        then aborted.
        """
        if self.state != "open":
            raise RuntimeError(f"upload is {self.state}")
        self._committing = True
        try:
            version = await self.store._commit(self)
        except BaseException:
            self._committing = False
            self.abort()
            raise
        self.version = version
        self.state = "committed"
        self.store._finish(self)
        self._wake()
        return version

    def abort(self) -> None:
        """Drop the upload; readers following it get :class:`UploadFailed`. Idempotent.

        An upload being committed is left to its commit, which ends it either way:
        aborted under it (by :meth:`Store.aclose`), a whole body was refused, and the
        commit then failed on the file removed under it."""
        if self.state != "open" or self._committing:
            return
        self.state = "aborted"
        self.store._finish(self)
        self.store._discard(self)
        self._wake()

    async def follow(self, *, heartbeat: float | None = None) -> AsyncGenerator[bytes, None]:
        """Yield the chunks received so far, then new ones until the upload ends.

        With ``heartbeat``, also yield ``b""`` after each ``heartbeat`` seconds in which
        nothing arrived, so the reader gets a turn to check that it is still wanted while
        the upload pauses (an encoder that stalls may never write again).

        Raises :class:`UploadFailed` if the upload is aborted.
        """
        index = 0
        chunks = self.chunks
        while True:
            while index < len(chunks):
                yield chunks[index]
                index += 1
            if self.state == "committed":
                return
            if self.state == "aborted":
                raise UploadFailed(f"upload of {self.path!r} failed")
            if self._waiter is None:
                self._waiter = asyncio.get_running_loop().create_future()
            # asyncio.wait neither cancels the shared waiter (other readers wait on it too)
            # nor keeps a callback on it after a timeout: a reader that stops iterating
            # leaves nothing behind on the upload.
            done, _ = await asyncio.wait((self._waiter,), timeout=heartbeat)
            if not done:
                yield b""


class MemoryStore(Store):
    """Everything in memory; bytes are joined once when an upload completes."""

    async def _commit(self, upload: Upload) -> ObjectVersion:
        chunks = upload.chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        version = self._publish(upload, data, None)
        upload.chunks = [data] if data else []
        return version

    def open(self, version: ObjectVersion) -> _Reader:
        assert version.data is not None
        return _Reader(version.data, None)


class _FileUpload(Upload):
    def __init__(self, store: DirectoryStore, *args: object, **kwargs: object) -> None:
        super().__init__(store, *args, **kwargs)  # type: ignore[arg-type]
        # Only a visible STREAMING upload has readers that need the chunks in memory.
        self.keep_chunks = False
        self.tmp_path = os.path.join(store.tmp_dir, secrets.token_hex(12))
        self.fh: IO[bytes] | None = open(self.tmp_path, "wb")  # noqa: SIM115

    def _write_more(self, chunk: bytes) -> None:
        assert self.fh is not None
        self.fh.write(chunk)


class DirectoryStore(Store):
    """Objects as files under ``root`` (see the module docstring); survives restarts.

    ``fsync`` (default ``True``) makes a completed PUT durable before it is acknowledged.
    """

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True) -> None:
        super().__init__()
        self.root = os.path.realpath(os.fspath(root))
        self.tmp_dir = os.path.join(self.root, _TMP_DIR)
        self.fsync = fsync
        os.makedirs(self.root, exist_ok=True)
        # Anything left in @tmp is a partial upload from a process that died: never visible.
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
        os.makedirs(self.tmp_dir)
        self._load()

    def _file(self, path: str) -> str:
        parts = path.split("/")
        if any(p in ("", ".", "..") or "@" in p for p in parts):
            # The server rejects these before they get here; this is the last line of defence.
            raise ValueError(f"unsafe object path {path!r}")
        full = os.path.join(self.root, *parts)
        if os.path.commonpath([self.root, full]) != self.root:
            raise ValueError(f"object path {path!r} escapes the data directory")
        return full

    def _load(self) -> None:
        for dirpath, _dirnames, filenames in os.walk(self.root, topdown=False):
            rel_dir = os.path.relpath(dirpath, self.root)
            if rel_dir.split(os.sep)[0] == _TMP_DIR:
                continue
            for name in filenames:
                full = os.path.join(dirpath, name)
                rel = name if rel_dir == "." else f"{rel_dir.replace(os.sep, '/')}/{name}"
                version = self._read_trailer(full, rel)
                if version is None:
                    logger.warning("ignoring %s: not an object file", full)
                    continue
                try:
                    self._insert(version)
                except NameConflictError:
                    logger.warning("ignoring %s: name conflict", full)
            if dirpath != self.root and not os.listdir(dirpath):
                os.rmdir(dirpath)

    @staticmethod
    def _read_trailer(full: str, rel: str) -> ObjectVersion | None:
        try:
            with open(full, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                total = fh.tell()
                if total < 16:
                    return None
                fh.seek(total - 16)
                tail = fh.read(16)
                if tail[8:] != _TRAILER_MAGIC:
                    return None
                meta_len = int.from_bytes(tail[:8], "big")
                fh.seek(total - 16 - meta_len)
                meta = json.loads(fh.read(meta_len))
        except (OSError, ValueError):
            return None
        if meta.get("path") != rel:
            return None
        return ObjectVersion(
            path=rel,
            size=int(meta["size"]),
            etag=meta["etag"],
            content_sha256=meta["content_sha256"],
            content_type=meta["content_type"],
            content_type_set=bool(meta.get("content_type_set", True)),
            cache_control=meta.get("cache_control"),
            last_modified=float(meta["last_modified"]),
            availability=meta.get("availability", "STANDARD"),
            file=full,
        )

    def begin_upload(
        self,
        path: str,
        *,
        content_type: str | None,
        cache_control: str | None,
        availability: Availability,
        visible: bool,
    ) -> Upload:
        self._file(path)
        upload = super().begin_upload(
            path,
            content_type=content_type,
            cache_control=cache_control,
            availability=availability,
            visible=visible,
        )
        upload.keep_chunks = visible
        return upload

    def _new_upload(
        self,
        path: str,
        content_type: str | None,
        cache_control: str | None,
        availability: Availability,
    ) -> Upload:
        return _FileUpload(self, path, content_type, cache_control, availability)

    async def _commit(self, upload: Upload) -> ObjectVersion:
        assert isinstance(upload, _FileUpload) and upload.fh is not None
        final = self._file(upload.path)
        fh = upload.fh
        # Build the version first (metadata goes into the file), insert it only after the
        # rename so the namespace and the disk change together.
        sha = upload.sha256.digest()
        version = ObjectVersion(
            path=upload.path,
            size=upload.size,
            etag=_new_etag(sha),
            content_sha256=sha.hex(),
            content_type=upload.content_type or DEFAULT_CONTENT_TYPE,
            content_type_set=upload.content_type is not None,
            cache_control=upload.cache_control,
            last_modified=_now(),
            availability=upload.availability,
            file=final,
        )
        meta = json.dumps(version.metadata(), separators=(",", ":")).encode()
        fh.write(meta)
        fh.write(len(meta).to_bytes(8, "big") + _TRAILER_MAGIC)
        fh.flush()
        if self.fsync:
            await asyncio.to_thread(os.fsync, fh.fileno())
        fh.close()
        upload.fh = None
        # From here to the end nothing awaits: the rename and the namespace update are one
        # step for every other request.
        self.check_put(upload.path)
        parent = os.path.dirname(final)
        os.makedirs(parent, exist_ok=True)
        os.replace(upload.tmp_path, final)
        self._insert(version)
        if self.fsync:
            await asyncio.to_thread(_fsync_dir, parent)
        return version

    def _discard(self, upload: Upload) -> None:
        assert isinstance(upload, _FileUpload)
        if upload.fh is not None:
            upload.fh.close()
            upload.fh = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(upload.tmp_path)

    def delete(self, path: str) -> bool:
        try:
            full = self._file(path)
        except ValueError:
            return False
        if self._remove(path) is None:
            return False
        os.unlink(full)
        parent = os.path.dirname(full)
        while parent != self.root:
            try:
                os.rmdir(parent)
            except OSError:
                break
            parent = os.path.dirname(parent)
        return True

    def open(self, version: ObjectVersion) -> _Reader:
        assert version.file is not None
        return _Reader(None, open(version.file, "rb"))


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        # A DELETE that came after the rename removed the object and pruned its folder: the
        # upload did complete (the client is owed its 200), and nothing of it is left to sync.
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
