"""The local side of a tree transfer: scanning, hashing, writing without half files.

Every function here blocks; the engine runs them in worker threads.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final, TypeVar

from ..errors import ChecksumMismatchError, ClientValidationError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: downloads go on without their locks
    fcntl = None  # type: ignore[assignment]
from .names import CUT_CHARACTERS, PART_SUFFIX, SHORTENED_BYTES, is_own, is_record_file

__all__ = [
    "HashedFile", "LocalFile", "Unscanned", "hash_file", "hash_open", "read_and_hash", "scan",
]

_READ_SIZE: Final = 1024 * 1024

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class LocalFile:
    #: Path relative to the root, with "/" separators.
    relative_path: str
    path: Path
    size: int
    mtime_ns: int


@dataclass(frozen=True, slots=True)
class Unscanned:
    """A path under the root whose content the scan could not see: a symbolic link whose
    target is missing (an unmounted disk) or unreachable, a link loop, a folder it could
    not read. What lies there is unknown, so it is reported, and nothing at or under it is
    deleted on the other side."""

    #: Path relative to the root, with "/" separators.
    relative_path: str
    error: OSError


def scan(
    root: Path,
    *,
    follow_links: bool = False,
    unscanned: list[Unscanned] | None = None,
    record_folder: tuple[int, int] | None = None,
) -> list[LocalFile]:
    """Every regular file under ``root``, the tool's own names included (the caller
    selects). A missing root is empty. Symbolic links to files are followed; links to
    folders only with ``follow_links`` (an upload's source: the files under them are the
    tree's too), never back into a folder above them. Following links, the record files
    (:func:`~msd_async.transfer.names.is_record_file`) in the folder whose ``(st_dev,
    st_ino)`` is ``record_folder`` are left out, however it is reached: through a link, they
    are under a path no name rule knows. ``unscanned`` receives the :class:`Unscanned`
    paths; a file or folder that vanished during the scan is not one. FIFOs, sockets and
    devices are left out."""
    found: list[LocalFile] = []
    if not root.is_dir():
        return found

    def note(rel: str, error: OSError) -> None:
        if unscanned is not None:
            unscanned.append(Unscanned(rel, error))

    # Each folder is scanned with the (st_dev, st_ino) of the folders above it: a link back
    # to one of them would recurse forever. Only needed when links are followed.
    top = os.stat(root) if follow_links else None
    # ... and whether it is the record folder (only known when following links).
    stack = [(
        root, "", frozenset([(top.st_dev, top.st_ino)] if top else []),
        top is not None and (top.st_dev, top.st_ino) == record_folder,
    )]
    while stack:
        folder, rel, above, records = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            continue  # gone (or replaced by a file) since it was listed
        except OSError as exc:
            if not rel:
                raise
            note(rel[:-1], _folder_error(rel[:-1], exc))
            continue
        for entry in entries:
            child_rel = f"{rel}{entry.name}"
            if entry.is_dir(follow_symlinks=False):
                if follow_links:
                    try:
                        own = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    ident = (own.st_dev, own.st_ino)
                    stack.append((
                        Path(entry.path), child_rel + "/", above | {ident},
                        ident == record_folder,
                    ))
                else:
                    stack.append((Path(entry.path), child_rel + "/", above, False))
                continue
            if records and is_record_file(entry.name):
                continue
            try:
                st = entry.stat()
            except FileNotFoundError as exc:
                if entry.is_symlink():
                    note(child_rel, _link_error(entry, exc))
                continue  # else: deleted since the folder was listed
            except OSError as exc:
                note(child_rel, _link_error(entry, exc) if entry.is_symlink() else exc)
                continue
            if stat.S_ISREG(st.st_mode):
                found.append(LocalFile(child_rel, Path(entry.path), st.st_size, st.st_mtime_ns))
            elif stat.S_ISDIR(st.st_mode) and follow_links:
                if (st.st_dev, st.st_ino) in above:
                    note(child_rel, OSError(
                        errno.ELOOP,
                        f"{child_rel} is a symbolic link back to a folder above it "
                        f"({link_target(entry)}); it is not followed (exclude it to silence this)",
                    ))
                else:
                    ident = (st.st_dev, st.st_ino)
                    stack.append(
                        (Path(entry.path), child_rel + "/", above | {ident}, ident == record_folder)
                    )
    found.sort(key=lambda f: f.relative_path)
    if unscanned is not None:
        unscanned.sort(key=lambda u: u.relative_path)
    return found


def link_target(entry: os.DirEntry[str] | Path) -> str:
    """``-> TARGET`` of a symbolic link, for a message."""
    try:
        return f"-> {os.readlink(entry)}"
    except OSError:
        return "its target cannot be read"


def _link_error(entry: os.DirEntry[str] | Path, exc: OSError) -> OSError:
    """The error of a link whose target cannot be reached, saying which link and target."""
    what = {
        errno.ENOENT: "whose target does not exist (a disk not mounted?)",
        errno.ELOOP: "in a loop of links",
    }.get(exc.errno or 0, f"whose target cannot be reached ({exc.strerror or exc})")
    return type(exc)(
        exc.errno or 0,
        f"{os.fspath(entry)} is a symbolic link {what} ({link_target(entry)}); nothing "
        "under it was transferred or deleted (fix the link, or exclude it)",
    )


def linked_folder(root: Path, relative_path: str) -> str | None:
    """The first folder (relative to ``root``) between ``root`` and the file
    ``relative_path`` below it that is a symbolic link (to a folder, to a file, or
    dangling), or None when there is none. ``root`` itself is not looked at. A folder not
    there yet is made by a download, a real one."""
    folder = root
    names = relative_path.split("/")[:-1]
    for depth, name in enumerate(names, 1):
        folder = folder / name
        try:
            st = os.lstat(folder)
        except (FileNotFoundError, NotADirectoryError):
            return None  # made as a folder; a file in the way fails with its own error
        if stat.S_ISLNK(st.st_mode):
            return "/".join(names[:depth])
    return None


def linked_folder_error(root: Path, relative_path: str) -> OSError | None:
    """The error of a download of ``relative_path`` below ``root`` through a folder that is
    a symbolic link (:func:`linked_folder`), or None. Written through, the object landed
    wherever the link pointed (another disk, another user's folder, ``/etc`` for a run as
    root), out of the tree; and the scan, which does not follow such a link, never saw it
    to compare, so it was overwritten on every run."""
    linked = linked_folder(root, relative_path)
    if linked is None:
        return None
    folder = root.joinpath(*linked.split("/"))
    return NotADirectoryError(
        errno.ENOTDIR,
        f"{folder} is a symbolic link ({link_target(folder)}), not a folder of the tree; "
        "nothing is written through it, so what it points to is never changed (replace "
        f"the link with a folder, exclude {linked}/, download that folder into the link's "
        "target on its own, or opt in with keep_dirlinks / --keep-dirlinks)",
    )


def _folder_error(rel: str, exc: OSError) -> OSError:
    return type(exc)(
        exc.errno or 0,
        f"the folder {rel} cannot be read ({exc.strerror or exc}); nothing under it was "
        "transferred or deleted",
    )


def open_regular(path: Path) -> BinaryIO:
    """``path`` opened for reading, if it is still a regular file.

    The scan saw a regular file, but a FIFO or device may have taken its place since:
    opening a FIFO waits for a writer (on the event loop that stops everything, Ctrl-C
    included; in a worker thread, the run cannot end), and a device never ends. So the
    open does not wait, and anything but a regular file is an error."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(
                f"{path} is not a regular file any more (it was when the tree was scanned; "
                "now a FIFO, socket or device); it was not read"
            )
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def open_scanned(f: LocalFile) -> BinaryIO | None:
    """:func:`open_regular` for a file the scan found, or None when it is gone since (a
    packager rotated it out of its window, an overlapping sync deleted it): nothing is
    left to send, as for an object deleted between its listing and its download. Behind
    a symbolic link whose target went missing (a disk unmounted meanwhile), at the file
    or at a folder above it in the tree, it is not gone but unknown: the error names the
    link and its target, as the scan's does."""
    try:
        return open_regular(f.path)
    except FileNotFoundError as exc:
        path = f.path
        for _ in range(f.relative_path.count("/") + 1):
            if os.path.islink(path) and not os.path.exists(path):
                raise _link_error(path, exc) from None
            path = path.parent
        return None


def hash_file(path: Path) -> str:
    """The file's SHA-256, lowercase hex."""
    with open_regular(path) as f:
        return hash_open(f)


def hash_open(f: BinaryIO) -> str:
    """The SHA-256, lowercase hex, of what is left of an open file."""
    digest = hashlib.sha256()
    while chunk := f.read(_READ_SIZE):
        digest.update(chunk)
    return digest.hexdigest()


def _read_all(f: BinaryIO) -> bytes:
    """The rest of ``f``. Its own function: the tests change a file while it is read by
    wrapping it, since no real writer can be timed to land inside one read."""
    return f.read()


def _identity(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def read_and_hash(f: BinaryIO, inline_limit: int, name: str) -> tuple[str, bytes | None, int]:
    """``(sha256, content or None, size)`` of an open file (:func:`open_regular`), read
    from its start: the content is returned when the file is at most ``inline_limit``
    bytes (one read, sent from memory), else only hashed (then sent from the same open
    file through :class:`HashedFile`).

    Raises :class:`~msd_async.errors.ClientValidationError` (rule ``body.changed``) when
    the file's size, modification or change time moved during the read (as ``tar`` says
    "file changed as we read it"): the bytes read may be a mix of two versions, which
    would be sent, verified and recorded as the file. A write in the same tick of the
    file system's clock as the one before it is not seen; most are."""
    f.seek(0)
    before = os.fstat(f.fileno())
    size = before.st_size
    data: bytes | None = None
    if size <= inline_limit:
        data = _read_all(f)
        sha, total = hashlib.sha256(data).hexdigest(), len(data)
    else:
        digest = hashlib.sha256()
        total = 0
        while chunk := f.read(_READ_SIZE):
            digest.update(chunk)
            total += len(chunk)
        sha = digest.hexdigest()
    if _identity(os.fstat(f.fileno())) != _identity(before) or total != size:
        raise ClientValidationError(
            f"{name} changed while it was read (its size or times moved); nothing of it "
            "was sent. Do not change a file while uploading it (upload a finished copy)",
            rule="body.changed",
        )
    return sha, data, total


class HashedFile:
    """An open file, as an upload body that can only hold the bytes that were hashed.

    A file too large to keep in memory is hashed, then read again as it is sent. Written
    to in place meanwhile, the service would store the first bytes of one version and the
    last of another, as a complete object (the SHA-256 in its answer then differs, but
    the mix is stored). So the bytes are hashed again as they are read, and the last read
    raises :class:`~msd_async.errors.ChecksumMismatchError` instead of returning when they
    differ: the body is then one read short of its Content-Length, the request is cut and
    the service keeps what it had. Its size is the size hashed, so a file that grew or
    shrank is cut by the client's own check (``body.changed``). Reads always start from
    the beginning (each attempt seeks back to 0)."""

    def __init__(self, f: BinaryIO, size: int, sha256: str, name: str) -> None:
        self._file = f
        self._size = size
        self._sha256 = sha256
        self._name = name
        self._digest = hashlib.sha256()
        self._read = 0

    @property
    def closed(self) -> bool:
        return self._file.closed

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._read

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_END and offset == 0:
            return self._size  # where the body ends: the size that was hashed
        if whence != os.SEEK_SET or offset != 0:
            raise OSError(errno.ESPIPE, "a hashed file is read from its start only")
        self._file.seek(0)
        self._digest = hashlib.sha256()
        self._read = 0
        return 0

    def read(self, n: int = -1) -> bytes:
        chunk = self._file.read(n)
        self._digest.update(chunk)
        self._read += len(chunk)
        if chunk and self._read == self._size:
            actual = self._digest.hexdigest()
            if actual != self._sha256:
                raise ChecksumMismatchError(
                    f"{self._name} changed while it was sent (its bytes hashed to "
                    f"{self._sha256}, then to {actual}); the upload was cut before its "
                    "last bytes and nothing was stored",
                    expected=self._sha256,
                    actual=actual,
                )
        return chunk


def folder_identity(path: Path) -> tuple[int, int] | None:
    """``(st_dev, st_ino)`` of the folder ``path``, or None when it is none."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


def holds_a_file(root: Path, own: Callable[[str], bool] = is_own) -> bool:
    """Whether anything but folders is below ``root`` (a file, a link, a FIFO: the scan
    may skip some, but a folder holding them was not emptied). Stops at the first one.
    The tool's own names (``own``, by default :func:`~msd_async.transfer.names.is_own`:
    what an interrupted download into the folder left, a legacy record folder; a record
    folder chosen inside the tree with :class:`~msd_async.transfer.names.OwnNames`) do
    not count: they are never uploaded, and a folder of nothing else is one a download
    was meant to fill."""
    pending = [root]
    while pending:
        try:
            with os.scandir(pending.pop()) as entries:
                for entry in entries:
                    relative = Path(entry.path).relative_to(root).as_posix()
                    if entry.is_dir(follow_symlinks=False):
                        if not own(relative):
                            pending.append(Path(entry.path))
                    elif not own(relative):
                        return True
        except OSError:
            return True  # unreadable: what it holds is not known
    return False


#: Longest file name most file systems take (NAME_MAX), in bytes.
_NAME_MAX: Final = 255
#: What the part state adds to a temporary name (``.json``, saved through ``.json.tmp``).
_STATE_SUFFIX: Final = ".json.tmp"


def is_shortened(name: str) -> bool:
    """Whether NAME's resumable download has a shortened name (see :func:`temporary_path`)."""
    return len(os.fsencode(f".{name}{PART_SUFFIX}{_STATE_SUFFIX}")) > _NAME_MAX


def temporary_path(final: Path) -> Path:
    """``.NAME.msdpart`` beside ``final``: the resumable download of NAME. A NAME too long
    for that and its part state to fit NAME_MAX (an object name may have up to 900
    characters in one segment) becomes ``.SHORTENED.XXXXXXXX.msdpart``, the hex digits
    from a hash of NAME: still one name per NAME, and still one of the tool's own."""
    name = final.name
    if not is_shortened(name):
        return final.with_name(f".{name}{PART_SUFFIX}")
    digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:8]
    short = name
    while len(os.fsencode(short)) > SHORTENED_BYTES:
        short = short[:-1]
    return final.with_name(f".{short}.{digest}{PART_SUFFIX}")


#: Opening never follows a symlink at the last component (where the OS can say so).
NO_FOLLOW: Final = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def create_fresh(path: Path, mode: int = 0o644) -> int:
    """A new, empty file at ``path`` (a temporary name of ours), open for writing: its
    descriptor. Whatever is there is removed first, and ``O_EXCL`` refuses anything that
    appears meanwhile: a symlink planted at the name in a folder others can write to is
    never written through."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NO_FOLLOW, mode)


#: How long a claim waits out another's lock before calling the file in use: a sweep holds
#: one for the instant of an unlink, a download for as long as it runs.
_CLAIM_PATIENCE: Final = 0.5
#: How many times a claim starts over after losing a race for its name before giving up.
_CLAIM_TRIES: Final = 64
#: Where the file system has no advisory locks, a claim goes on without (as before them).
_NO_LOCKS: Final = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL})


def _lock(fd: int, path: Path) -> None:
    """Hold an exclusive advisory lock (``flock``) on ``fd`` until it is closed, waiting
    briefly for a sweep's; ``OSError(EBUSY)`` if another download holds it."""
    if fcntl is None:  # pragma: no cover - not POSIX
        return
    deadline = time.monotonic() + _CLAIM_PATIENCE
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise OSError(
                    errno.EBUSY,
                    "another download is writing it (an overlapping run into the same "
                    "folder?); it was left to that one",
                    str(path),
                ) from None
            time.sleep(0.02)
        except OSError as exc:
            if exc.errno in _NO_LOCKS:
                return
            raise


def _still_named(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (not swept or replaced while
    its lock was awaited)."""
    held = os.fstat(fd)
    try:
        named = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return held.st_nlink > 0 and (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


def claim(path: Path, mode: int = 0o644) -> int:
    """The temporary download file ``path`` (a name of ours), opened for reading and
    writing (created if missing) and locked: its descriptor. The lock lasts until the
    descriptor is closed, so an overlapping run cannot start the file afresh or rename it,
    and a sweep of leftovers (:func:`remove_unless_in_use`) passes it by. Two runs of a
    sync into one folder (cron, every minute, a run that takes longer) shared the file:
    the second started it afresh, and the first renamed that (still empty) into place.

    Raises ``OSError(EBUSY)`` when another download holds it. What is at the name and
    cannot be a download of this user's is removed first, never written through: a
    symlink, a FIFO or a device, a hard link (a file with another name), a file of
    another user (who could change it between its hash and its rename)."""
    for _ in range(_CLAIM_TRIES):
        created = False
        try:
            fd = os.open(path, os.O_RDWR | NO_FOLLOW)
        except FileNotFoundError:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | NO_FOLLOW, mode)
            except FileExistsError:
                continue
            created = True
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            path.unlink()  # a symlink planted at our name
            continue
        try:
            held = os.fstat(fd)
            # One created here is ours whatever owner the file system gives it (root
            # squashed to nobody on NFS): judged by its owner, it would be replaced forever.
            ours = stat.S_ISREG(held.st_mode) and (created or is_own_file(held))
            if ours:
                _lock(fd, path)
                if _still_named(fd, path):
                    return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # swept or replaced while the lock was awaited: again
        if not ours:
            with contextlib.suppress(FileNotFoundError):
                named = os.stat(path, follow_symlinks=False)
                # Unless another run already replaced it with its own download.
                if (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino):
                    path.unlink()
    # Each try lost a race (a sweep, another run) or found what it removed back: or this
    # file system's stat and fstat never agree on the file (some overlay file systems).
    raise OSError(
        errno.EAGAIN,
        f"the temporary file kept changing under this download ({_CLAIM_TRIES} tries); "
        "is another program removing or replacing files in this folder?",
        str(path),
    )


def is_own_file(st: os.stat_result) -> bool:
    """Whether a regular file found at a temporary name may be this user's download: of
    this user, and with no other name (a hard link would be written through)."""
    euid = getattr(os, "geteuid", None)
    return st.st_nlink == 1 and (euid is None or st.st_uid == euid())


def remove_unless_in_use(owner: Path, *paths: Path) -> bool:
    """Remove ``paths`` (files of the temporary download ``owner``) unless a download holds
    ``owner`` (:func:`claim`); whether they were removed. The lock is held while they are
    removed, so a claim that waited on it finds its file gone and starts a new one."""
    fd = -1
    # For writing where it may: NFSv4 grants an exclusive flock only on a descriptor open
    # for writing (flock(2), NOTES), and answers EBADF otherwise.
    for access in (os.O_RDWR, os.O_RDONLY):
        try:
            fd = os.open(owner, access | NO_FOLLOW | getattr(os, "O_NONBLOCK", 0))
            break
        except FileNotFoundError:
            break  # only its part state is left
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EROFS, errno.EPERM):
                break  # a symlink or other non-file at our name: nobody's download
    try:
        if fd >= 0 and fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            except OSError as exc:
                if exc.errno == errno.EBADF:
                    return False  # cannot tell whether a download holds it: keep it
                if exc.errno not in _NO_LOCKS:
                    raise
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        return True
    finally:
        if fd >= 0:
            os.close(fd)


#: Creations of one file in a folder taken away each time before the file was in it.
_FOLDER_TRIES: Final = 8


def in_folder(folder: Path, create: Callable[[], _T]) -> _T:
    """``create()`` (a file in ``folder``), making the folder and its parents as needed.

    An overlapping sync with delete into the same tree (another shard, a cron run) removes
    the folders its deletions emptied (:func:`remove_empty_parents`): this one may go
    between its ``mkdir`` and the creation of the file, which then failed with a bare
    ``FileNotFoundError``. Once the file is in it, the folder is not empty and stays."""
    for _ in range(_FOLDER_TRIES):
        try:
            return create()
        except FileNotFoundError:
            pass
        with contextlib.suppress(FileNotFoundError):  # its parent went, too: again
            folder.mkdir(parents=True, exist_ok=True)
    raise FileNotFoundError(
        errno.ENOENT,
        f"the folder {folder} was removed each of {_FOLDER_TRIES} times a file was "
        "created in it (another program removing empty folders there?)",
        str(folder),
    )


def create_own_temporary(final: Path, mode: int = 0o644) -> tuple[Path, int]:
    """A new file beside ``final`` that no other writer uses, open for writing: its path
    (``.NAME.XXXXXXXX.msdpart``, random) and descriptor. Unlike :func:`create_fresh` it
    removes nothing: two writers of one ``final`` (two ``msd get`` into one FILE) shared
    ``.NAME.msdpart``, and the one that finished first renamed the other's half-written
    file into place."""
    name = final.name
    if len(os.fsencode(name)) > SHORTENED_BYTES:  # the suffixes must not exceed NAME_MAX (255)
        name = name[:CUT_CHARACTERS]
    while True:
        tmp = final.with_name(f".{name}.{secrets.token_hex(4)}{PART_SUFFIX}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NO_FOLLOW, mode)
        except FileExistsError:
            continue
        try:
            # Held until it is renamed (or removed): a sync's sweep of leftovers in the
            # same folder passes it by.
            _lock(fd, tmp)
            if _still_named(fd, tmp):
                return tmp, fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # swept in the instant before its lock: another name


def open_fresh(path: Path) -> BinaryIO:
    """:func:`create_fresh` as a binary file object."""
    return os.fdopen(create_fresh(path), "wb")


def write_atomically(final: Path, data: bytes, mtime: float | None = None) -> int:
    """Write ``data`` under a temporary name in the same folder, then rename it to ``final``:
    no reader ever sees a half file under the final name. ``mtime`` (seconds since the
    epoch) is set as its modification time. Returns the file's mtime (ns).

    The temporary name is this call's own (:func:`create_own_temporary`): two syncs
    writing one tree at once each removed the other's ``.NAME.msdpart``, and could rename
    the other's half-written file into place."""
    tmp, fd = in_folder(final.parent, lambda: create_own_temporary(final))
    lock = held_apart(fd, tmp)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()  # the write must come before the mtime is set
            if mtime is not None:
                os.utime(f.fileno(), (mtime, mtime))
            mtime_ns = os.fstat(f.fileno()).st_mtime_ns
        os.replace(tmp, final)
        return mtime_ns
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    finally:
        os.close(lock)


def held_apart(fd: int, tmp: Path) -> int:
    """A second descriptor of ``fd``'s open file (the temporary ``tmp``), which keeps its
    lock (:func:`_lock`: one per open file) once ``fd`` is closed. The writer is closed
    before the rename, so a write error only the close reports (NFS: a quota, ENOSPC)
    comes before the file has its final name, while the lock keeps a sweep off until after
    it; close this last. If it cannot be had (no descriptor left), ``fd`` is closed and
    ``tmp`` removed before the error is raised."""
    try:
        return os.dup(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def remove_empty_parents(path: Path, root: Path) -> None:
    """Remove the now-empty folders between ``path``'s parent and ``root`` (exclusive)."""
    parent = path.parent
    while parent != root and root in parent.parents:
        try:
            parent.rmdir()
        except OSError:
            return
        parent = parent.parent
