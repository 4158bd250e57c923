"""The worker pool of a tree transfer: ``concurrency`` workers take jobs from one queue.

A file that fails is retried as a whole (``file_attempts``, on top of each request's own
retries) when another try can help, then reported in :attr:`TransferReport.failed` while the
others go on; ``fail_fast=True`` stops at the first failure instead. Both it and a ``stop``
event stop the scheduling of new jobs; the jobs in flight finish (or fail) first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Final

import anyio

from ..config import refuse_awaitable
from ..errors import (
    ChecksumMismatchError,
    ClientValidationError,
    ConnectionLostError,
    InvalidParameterError,
    MediaStoreError,
    ObjectChangedError,
    ServerError,
    SessionClosedError,
    ThrottlingError,
    TransportError,
    WrongEventLoopError,
)
from ..retry import RetryPolicy
from .events import (
    Action,
    FileFailure,
    HookError,
    ProgressHook,
    TransferEvent,
    TransferReport,
    first_error,
)
from .options import TransferOptions
from .record import SyncRecord

if TYPE_CHECKING:
    from ..client import ContainerClient

__all__ = ["Job", "Pool"]

#: Per-file byte progress is reported only for files larger than this.
_PROGRESS_MIN: Final = 256 * 1024


def _retry_file(exc: BaseException, retry: RetryPolicy) -> bool:
    """Whether trying the whole file again may succeed."""
    if isinstance(exc, ChecksumMismatchError | ObjectChangedError | ConnectionLostError):
        return True
    if isinstance(exc, ClientValidationError) and exc.rule == "body.changed":
        # The local file grew or shrank while it was sent (the body was cut, nothing
        # stored): as for a change of its bytes, it is hashed and sent again.
        return True
    if isinstance(exc, ServerError | ThrottlingError | TransportError):
        return True
    return retry.is_retryable(exc)


def connection_limit(client: ContainerClient) -> int:
    """How many requests the client's session sends at once to its endpoint."""
    limits = client.limits
    return min(
        limits.max_connections, limits.max_connections_per_host or limits.max_connections
    )


class Job:
    """One path's work: ``run`` transfers (or deletes) it and raises on failure."""

    __slots__ = ("action", "path", "run", "size")

    def __init__(
        self, path: str, action: Action, size: int, run: Callable[[], Awaitable[None]]
    ) -> None:
        self.path = path
        self.action = action
        self.size = size
        self.run = run


class Pool:
    """Runs jobs and keeps the report, the record and the progress hook of one transfer."""

    def __init__(
        self,
        client: ContainerClient,
        report: TransferReport,
        options: TransferOptions,
        *,
        progress: ProgressHook | None,
        record: SyncRecord | None,
        stop: anyio.Event | None,
    ) -> None:
        self.client = client
        self.report = report
        self.options = options
        self.retry = options.retry
        self.progress = progress
        self.record = record
        self.stop = stop
        #: Set when fail_fast stopped the run.
        self.failed_fast = False
        #: One per request the session sends at once to this endpoint. Every request of
        #: the transfer holds one: more files (or ranged parts) in flight than the session
        #: has connections would otherwise wait in its gate and fail with PoolTimeout
        #: after Timeouts.pool, though nothing was wrong but this transfer's own queue.
        self.connections = anyio.CapacityLimiter(connection_limit(client))

    @property
    def stopped(self) -> bool:
        """No more jobs are scheduled: fail_fast hit, or ``stop`` was set."""
        return self.failed_fast or (self.stop is not None and self.stop.is_set())

    def emit(self, event: TransferEvent) -> None:
        if self.progress is not None:
            try:
                result = self.progress(event)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                # Carried as an Exception, whatever the hook raised: a BaseException came
                # out of the task groups as a BaseExceptionGroup, and from inside a request
                # body it was taken for a lost connection (the file sent again).
                raise HookError(exc) from exc
            if result is not None:
                # An async hook (or one returning a coroutine) was never awaited: the
                # progress asked for silently did not happen. Events are emitted from
                # inside request bodies and worker code that cannot await.
                try:
                    refuse_awaitable(
                        result, "the progress hook", self.progress, rule="transfer.progress"
                    )
                except InvalidParameterError as exc:
                    raise HookError(exc) from None

    def fail(self, path: str, action: Action, error: BaseException) -> None:
        self.report.failed.append(FileFailure(path, action, error))
        self.emit(TransferEvent("fail", path, action, error=error))

    async def run(self, jobs: Sequence[Job]) -> None:
        """Run ``jobs`` from ``concurrency`` workers; failures are collected."""
        if self.stopped or not jobs:
            return
        queue: Iterator[Job] = iter(jobs)

        async def worker() -> None:
            # One shared iterator: next() runs without an await in between, so each job is
            # taken by exactly one worker.
            for job in queue:
                if self.stopped:
                    return
                if not await self._attempt(job) and self.options.fail_fast:
                    # As a stop: the other workers' files in flight finish (and are
                    # recorded); cancelling them would throw away transfers nearly done.
                    self.failed_fast = True
                    return

        try:
            async with anyio.create_task_group() as tg:
                for _ in range(min(self.options.concurrency, len(jobs))):
                    tg.start_soon(worker)
        except ExceptionGroup as group:
            # Not a file's failure (those are collected): a bug, or the progress hook raised.
            raise first_error(group) from None

    async def _attempt(self, job: Job) -> bool:
        attempts = self.options.file_attempts
        for attempt in range(1, attempts + 1):
            try:
                await job.run()
                return True
            except (SessionClosedError, WrongEventLoopError):
                # Not this file's fault: no other file can go either. Reported once, the
                # call ends (the others in flight are cancelled), rather than each queued
                # file failing in turn and the call returning as if they were bad files.
                raise
            except (MediaStoreError, OSError) as exc:
                if (
                    isinstance(exc, MediaStoreError)
                    and attempt < attempts
                    and _retry_file(exc, self.retry)
                    and not self.stopped
                ):
                    await anyio.sleep(self.retry.backoff(attempt))
                    continue
                self.fail(job.path, job.action, exc)
                return False
        return False  # pragma: no cover - the loop always returns

    def byte_progress(self, path: str, action: Action, size: int) -> Callable[[int], None] | None:
        if self.progress is None or size <= _PROGRESS_MIN:
            return None

        def report(done: int) -> None:
            self.emit(TransferEvent("bytes", path, action, size=size, done=done))

        return report

    def start(self, path: str, action: Action, size: int) -> None:
        self.emit(TransferEvent("start", path, action, size=size))

    def done(self, path: str, action: Action, size: int) -> None:
        self.report.transferred.append(path)
        self.report.bytes_transferred += size
        self.emit(TransferEvent("done", path, action, size=size, done=size))

    def skip(self, path: str, action: Action, size: int) -> None:
        self.report.skipped.append(path)
        self.emit(TransferEvent("skip", path, action, size=size))

    def vanished(self, path: str, action: Action) -> None:
        self.report.vanished.append(path)
        self.emit(TransferEvent("vanished", path, action))

    def plan(self, jobs: Sequence[Job]) -> None:
        self.emit(TransferEvent("plan", files=len(jobs), size=sum(j.size for j in jobs)))
