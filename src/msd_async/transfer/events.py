"""What a tree transfer reports: progress events while it runs, a report when it ends."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "Action",
    "EventKind",
    "FileFailure",
    "ProgressHook",
    "TransferEvent",
    "TransferReport",
]

#: What is done to one path.
Action = Literal["upload", "download", "delete"]

#: ``plan``: the work is known (``files`` and ``size`` are the totals still to transfer);
#: ``start``: a file's transfer begins; ``bytes``: ``done`` bytes of it so far;
#: ``done``: it completed and was verified; ``skip``: it was already identical;
#: ``fail``: it failed (``error``); ``delete``: a path was deleted (or would be, in a dry run);
#: ``vanished``: the object (or local file) was listed but deleted before it could be
#: downloaded (uploaded).
EventKind = Literal["plan", "start", "bytes", "done", "skip", "fail", "delete", "vanished"]


@dataclass(frozen=True, slots=True)
class TransferEvent:
    """One progress event. ``path`` is relative to the transfer's root ("" for ``plan``)."""

    kind: EventKind
    path: str = ""
    action: Action | None = None
    #: Size of the file in bytes (for ``plan``: the bytes to transfer in total).
    size: int | None = None
    #: Bytes of this file transferred so far (``bytes`` and ``done``).
    done: int = 0
    #: Files to transfer (``plan`` only).
    files: int = 0
    error: BaseException | None = None


#: Called with every :class:`TransferEvent`, in the event loop's thread; it must not block
#: and must be a plain function (an async one is refused with InvalidParameterError:
#: nothing awaits it).
ProgressHook = Callable[[TransferEvent], object]


@dataclass(frozen=True, slots=True)
class FileFailure:
    """A path that could not be transferred or deleted, and why."""

    path: str
    action: Action
    error: BaseException

    @property
    def message(self) -> str:
        """``"<ErrorType>: <message>"``, one line."""
        text = " ".join(str(self.error).split())
        return f"{type(self.error).__name__}: {text}"


@dataclass(slots=True)
class TransferReport:
    """The outcome of :func:`~msd_async.transfer.upload_tree`,
    :func:`~msd_async.transfer.download_tree` or :func:`~msd_async.transfer.sync`.

    Paths are relative to the transfer's root. In a dry run, ``transferred`` and ``deleted``
    list what *would* be done and nothing was changed.
    """

    direction: Literal["upload", "download"]
    dry_run: bool = False
    #: Transferred and verified (uploads: the service's SHA-256 equals the file's).
    transferred: list[str] = field(default_factory=list)
    #: Already identical; nothing was written.
    skipped: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    failed: list[FileFailure] = field(default_factory=list)
    #: Body bytes moved over the network (a download-compare counts, too).
    bytes_transferred: int = 0
    #: Objects downloaded only to compare them (no record of their content) and found equal.
    compared: int = 0
    #: Objects listed, then deleted by someone else before their download, or local files
    #: scanned, then deleted before their upload (a live window rotating segments out, an
    #: overlapping sync): skipped, not a failure.
    vanished: list[str] = field(default_factory=list)
    #: The run was stopped (``stop`` was set: SIGTERM or SIGINT on the command line)
    #: before every path was done; what was done is reported and recorded.
    interrupted: bool = False
    #: Problems that did not fail a path, one line each (a sync record that could not be
    #: written).
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing failed."""
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (what ``msd sync --json`` prints)."""
        return {
            "direction": self.direction,
            "dry_run": self.dry_run,
            "ok": self.ok,
            "transferred": sorted(self.transferred),
            "skipped": len(self.skipped),
            "compared": self.compared,
            "deleted": sorted(self.deleted),
            "bytes_transferred": self.bytes_transferred,
            "vanished": sorted(self.vanished),
            "interrupted": self.interrupted,
            "warnings": list(self.warnings),
            "failed": [
                {
                    "path": f.path,
                    "action": f.action,
                    "error": type(f.error).__name__,
                    "message": " ".join(str(f.error).split()),
                }
                for f in sorted(self.failed, key=lambda f: f.path)
            ],
        }


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error a task group's exception group stands for: the progress hook's
    (:class:`HookError`) if it holds one, else its first leaf.

    Task groups wrap what their tasks raise; a transfer reports the error itself (a
    :class:`~msd_async.errors.MediaStoreError`, an ``OSError``), as a single call would.
    Tasks woken in the same turn of the loop all run before the group cancels them, so
    another task's error can come first: the hook's must still be the one raised (the
    docs promise it), else a bug in the caller's code is hidden behind, or retried as,
    a file's failure."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop(0)
        if isinstance(exc, BaseExceptionGroup):
            pending[:0] = exc.exceptions
        else:
            leaves.append(exc)
    return next((leaf for leaf in leaves if isinstance(leaf, HookError)), leaves[0])


class HookError(Exception):
    """Carries what the caller's progress hook raised through a transfer.

    A hook's ``OSError`` (a progress display whose terminal went away) or
    :class:`~msd_async.errors.MediaStoreError` would otherwise be taken for the file's own
    failure: reported in ``failed``, or tried again, while the run went on. The public
    functions raise ``error`` itself, unchanged."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(error)
        self.error = error
