"""Durable, append-only NDJSON sink with group commit.

One file per node and UTC day of the write: ``<sink_dir>/<node>-YYYY-MM-DD.ndjson``.

Request handlers call ``await sink.append(data)`` and answer 200 only when it returns. A single
writer task takes every batch queued since its last commit, appends them with one write, fsyncs
once (in a dedicated thread, so the event loop keeps parsing the next requests meanwhile), then
completes all their futures. Under load one fsync covers many batches; when idle a lone batch is
committed at once.

All-or-nothing: if the write or the fsync fails, the file is truncated back to the offset before
that commit and every batch of the commit fails with ``SinkError``; no partial line is left for
later lines to be glued to. A partial last line found when a file is opened (a crash mid-write; it
was never acknowledged) is cut off the same way, with a warning.

Failing state: after a failed commit ``failure`` says why (the service answers 503 on
/health/ready meanwhile, so the load balancer stops sending batches) until a commit succeeds. With
no batches coming, the writer probes every ``probe_interval`` seconds: it appends a block of
spaces to the file, fsyncs it and truncates it away again, which needs what a commit needs (space,
a working write, sync and truncate). The first probe that succeeds ends the failing state. A probe
never adds a line: its bytes hold no newline, so even a crash mid-probe leaves only a partial last
line, cut off when the file is next opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from pathlib import Path

__all__ = ["CommitObserver", "HealthObserver", "Sink", "SinkError", "sink_file_name"]

log = logging.getLogger("logplatform.sink")

# Called on the event loop after each successful commit: (bytes, batches, entries, fsync seconds).
CommitObserver = Callable[[int, int, int, float], None]
# Called on the event loop when the sink starts failing (the reason) or works again (None).
HealthObserver = Callable[[str | None], None]

_TAIL_CHUNK = 64 * 1024
# What a probe appends (and cuts off again): one page, so a full disk shows; no newline (see above).
_PROBE = b" " * 4096


class SinkError(Exception):
    """The batch could not be made durable; nothing of it is in the sink."""


def sink_file_name(node: str, day: date) -> str:
    """``<node>-YYYY-MM-DD.ndjson``."""
    return f"{node}-{day.isoformat()}.ndjson"


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Sink:
    """Group-committing NDJSON appender. Use ``start()``, ``append()``, ``close()`` on one loop."""

    def __init__(
        self,
        directory: Path,
        node: str,
        *,
        fsync: bool = True,
        clock: Callable[[], datetime] = _utc_now,
        on_commit: CommitObserver | None = None,
        on_health: HealthObserver | None = None,
        probe_interval: float = 1.0,
    ) -> None:
        self.directory = Path(directory)
        self.node = node
        self.fsync = fsync
        self._clock = clock
        self._on_commit = on_commit
        self._on_health = on_health
        self.probe_interval = probe_interval
        # Why the last commit (or probe) failed; None while commits succeed.
        self.failure: str | None = None
        # One thread: commits are serialised by construction and never queue behind other
        # executor work (DNS lookups and the like use the loop's default executor).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="logplatform-sink")
        self._pending: list[tuple[bytes, asyncio.Future[None], int]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        # File state, touched only by the writer thread (and start/close around it).
        self._fd: int | None = None
        self._day: date | None = None
        self._path: Path | None = None
        self._size = 0  # offset up to which the current file is known to be good
        self._dirty = False  # a failed commit could not be rolled back yet
        # Counters for logs and tests.
        self.commits = 0
        self.failed_commits = 0
        self.batches_written = 0
        self.entries_written = 0
        self.bytes_written = 0

    @property
    def path(self) -> Path | None:
        """The file currently appended to."""
        return self._path

    def path_for(self, day: date) -> Path:
        return self.directory / sink_file_name(self.node, day)

    async def start(self) -> None:
        """Create the directory if needed, open (and repair) today's file, start the writer."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._open_today)
        except BaseException:
            self._executor.shutdown(wait=False)
            raise
        self._task = loop.create_task(self._writer(), name="logplatform-sink-writer")
        self._task.add_done_callback(self._writer_done)

    async def append(self, data: bytes, entries: int = 0) -> None:
        """Return once ``data`` (whole NDJSON lines) is written and fsynced; else raise SinkError."""
        if self._closing or self._task is None:
            raise SinkError("sink write failed: sink is closed")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((data, fut, entries))
        self._wakeup.set()
        await fut

    async def close(self) -> None:
        """Commit everything queued, fsync, close the file. Appends after this are refused."""
        if self._task is None:
            return
        self._closing = True
        self._wakeup.set()
        await self._task
        self._task = None
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._close_file)
        finally:
            self._executor.shutdown(wait=True)

    # -- writer task (event loop) ---------------------------------------------------------------

    def _writer_done(self, task: asyncio.Task[None]) -> None:
        # Only a bug gets here with an exception; without this, waiting handlers would hang.
        if task.cancelled() or task.exception() is None:
            return
        log.critical("sink writer stopped unexpectedly: %r", task.exception())
        self._closing = True
        error = SinkError(f"sink write failed: writer stopped: {task.exception()!r}")
        for _, fut, _ in self._pending:
            if not fut.done():
                fut.set_exception(error)
        self._pending = []

    async def _writer(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wakeup.clear()
                if self.failure is None:
                    await self._wakeup.wait()
                    continue
                try:  # failing: no traffic may come (the node is not ready), so probe meanwhile
                    await asyncio.wait_for(self._wakeup.wait(), self.probe_interval)
                except TimeoutError:
                    await self._probe_once(loop)
                continue
            group, self._pending = self._pending, []
            data = b"".join([item[0] for item in group])
            try:
                fsync_seconds = await loop.run_in_executor(self._executor, self._commit, data)
            except Exception as exc:
                self.failed_commits += 1
                log.error("sink commit of %d batch(es), %d bytes failed: %s", len(group), len(data), exc)
                error = SinkError(f"sink write failed: {exc}")
                for _, fut, _ in group:
                    if not fut.done():  # the handler may have been cancelled meanwhile
                        fut.set_exception(error)
                self._set_failure(str(error))
                continue
            self._set_failure(None, "a commit succeeded")
            entries = sum(item[2] for item in group)
            self.commits += 1
            self.batches_written += len(group)
            self.entries_written += entries
            self.bytes_written += len(data)
            for _, fut, _ in group:
                if not fut.done():
                    fut.set_result(None)
            if self._on_commit is not None:
                try:
                    self._on_commit(len(data), len(group), entries, fsync_seconds)
                except Exception:  # metrics must never stop the writer
                    log.exception("sink on_commit callback failed")

    async def _probe_once(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            await loop.run_in_executor(self._executor, self._probe)
        except Exception as exc:
            self._set_failure(f"sink write failed: {exc}")
        else:
            self._set_failure(None, "a probe write succeeded")

    def _set_failure(self, failure: str | None, how: str = "") -> None:
        """Enter, update or leave the failing state (logged and reported on changes only)."""
        if failure == self.failure:
            return
        if failure is None:
            log.warning("sink: writes work again (%s): %s", how, self.directory)
        elif self.failure is None:
            log.error(
                "sink: commits fail, probing every %gs until one succeeds: %s", self.probe_interval, failure
            )
        self.failure = failure
        if self._on_health is not None:
            try:
                self._on_health(failure)
            except Exception:  # an observer must never stop the writer
                log.exception("sink on_health callback failed")

    # -- file operations (writer thread) --------------------------------------------------------

    def _probe(self) -> None:
        """Append _PROBE, sync, cut it off again: the steps of a commit, leaving no line behind."""
        self._roll_if_new_day()
        fd = self._fd
        assert fd is not None
        if self._dirty:
            self._rollback()  # raises if the file still cannot be repaired
        self._dirty = True  # until the probe's bytes are cut off
        try:
            self._write_all(fd, _PROBE)
            self._sync(fd)
        finally:
            self._rollback()

    def _commit(self, data: bytes) -> float:
        """Append ``data`` durably; on any failure leave the file as it was. Returns fsync seconds."""
        self._roll_if_new_day()
        fd = self._fd
        assert fd is not None
        if self._dirty:
            self._rollback()  # raises if the file still cannot be repaired
        start = self._size
        try:
            self._write_all(fd, data)
            began = time.perf_counter()
            if self.fsync:
                self._sync(fd)
            fsync_seconds = time.perf_counter() - began
        except BaseException:
            self._dirty = True
            with contextlib.suppress(OSError):  # logged; retried before the next commit
                self._rollback()
            raise
        self._size = start + len(data)
        return fsync_seconds

    def _write_all(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]

    def _sync(self, fd: int) -> None:
        # fdatasync covers the data and the file size, all an append needs; cheaper than fsync.
        os.fdatasync(fd)

    def _rollback(self) -> None:
        assert self._fd is not None
        try:
            os.ftruncate(self._fd, self._size)
            self._sync(self._fd)
        except OSError as exc:
            log.error("sink: cannot truncate %s back to %d bytes: %s", self._path, self._size, exc)
            raise
        self._dirty = False

    def _roll_if_new_day(self) -> None:
        if self._clock().date() != self._day:
            self._close_file()
            self._open_today()

    def _open_today(self) -> None:
        day = self._clock().date()
        path = self.path_for(day)
        self.directory.mkdir(parents=True, exist_ok=True)
        created = not path.exists()
        # O_APPEND: every write lands at the end; O_RDWR: the repair step reads the tail.
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            try:
                # Two processes appending to one file would interleave lines; refuse the second.
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise SinkError(f"{path} is locked by another process (same node name twice?)") from None
            size = self._repair(fd, path)
            if created:
                # The new directory entry must be durable too, or a crash could lose the file.
                self._fsync_dir()
        except BaseException:
            os.close(fd)
            raise
        self._fd, self._day, self._path, self._size, self._dirty = fd, day, path, size, False
        log.info("sink: appending to %s (%d bytes)", path, size)

    def _repair(self, fd: int, path: Path) -> int:
        """Cut a partial last line (a crash mid-write); return the resulting size."""
        size = os.fstat(fd).st_size
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return size
        end = size
        good = 0
        while end > 0:
            begin = max(0, end - _TAIL_CHUNK)
            chunk = os.pread(fd, end - begin, begin)
            newline = chunk.rfind(b"\n")
            if newline != -1:
                good = begin + newline + 1
                break
            end = begin
        os.ftruncate(fd, good)
        os.fsync(fd)
        log.warning(
            "sink: %s ended with a partial line (interrupted write, never acknowledged): "
            "dropped %d bytes, kept %d",
            path,
            size - good,
            good,
        )
        return good

    def _fsync_dir(self) -> None:
        dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _close_file(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if self._dirty:
                os.ftruncate(fd, self._size)  # last chance to drop a failed commit's bytes
                self._dirty = False
            os.fsync(fd)  # also when fsync=false: shutdown always leaves the data on disk
        finally:
            os.close(fd)  # closing also releases the flock
