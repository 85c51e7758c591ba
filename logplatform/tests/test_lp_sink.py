"""logplatform.sink: group commit, all-or-nothing on failure, crash repair, day files."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from logplatform.sink import Sink, SinkError, sink_file_name

DAY = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def line(n: int | str) -> bytes:
    return f'{{"n":"{n}"}}\n'.encode()


class Clock:
    def __init__(self, now: datetime = DAY) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def make_sink(tmp_path: Path, **kwargs: object) -> Sink:
    kwargs.setdefault("clock", Clock())
    return Sink(tmp_path / "sink", "blue-1", **kwargs)  # type: ignore[arg-type]


def today_file(tmp_path: Path) -> Path:
    return tmp_path / "sink" / "blue-1-2026-11-24.ndjson"


def test_file_name_is_node_and_utc_day() -> None:
    assert sink_file_name("blue-1", date(2026, 1, 2)) == "blue-1-2026-01-02.ndjson"


def test_creates_missing_dir_and_appends_lines(tmp_path: Path) -> None:
    sink = Sink(tmp_path / "a" / "b" / "sink", "green-2", clock=Clock())

    async def run() -> None:
        await sink.start()
        await sink.append(line(1) + line(2), entries=2)
        await sink.append(line(3), entries=1)
        await sink.close()

    asyncio.run(run())
    path = tmp_path / "a" / "b" / "sink" / "green-2-2026-11-24.ndjson"
    assert path.read_bytes() == line(1) + line(2) + line(3)
    assert (sink.commits, sink.batches_written, sink.entries_written) == (2, 2, 3)


def test_group_commit_writes_every_queued_batch_with_one_fsync(tmp_path: Path) -> None:
    commits: list[tuple[int, int, int, float]] = []
    sink = make_sink(tmp_path, on_commit=lambda *args: commits.append(args))
    syncs: list[int] = []
    real_sync = sink._sync

    def slow_sync(fd: int) -> None:
        time.sleep(0.05)  # while this runs, the other batches queue up
        syncs.append(fd)
        real_sync(fd)

    sink._sync = slow_sync  # type: ignore[method-assign]

    async def run() -> None:
        await sink.start()
        await asyncio.gather(*(sink.append(line(i), entries=1) for i in range(50)))
        await sink.close()

    asyncio.run(run())
    lines = today_file(tmp_path).read_bytes().splitlines(keepends=True)
    assert sorted(lines) == sorted(line(i) for i in range(50))
    assert len(syncs) == len(commits) == sink.commits
    assert sink.commits < 5  # first batch alone, then everything that queued meanwhile
    assert sum(c[1] for c in commits) == 50
    assert sum(c[2] for c in commits) == 50
    assert sum(c[0] for c in commits) == sum(len(line(i)) for i in range(50))


def test_failed_fsync_truncates_and_fails_every_batch_of_that_commit(tmp_path: Path) -> None:
    sink = make_sink(tmp_path)
    real_sync = sink._sync
    fail = {"on": False}

    def flaky_sync(fd: int) -> None:
        if fail["on"]:
            fail["on"] = False
            raise OSError(errno.EIO, "Input/output error")
        real_sync(fd)

    sink._sync = flaky_sync  # type: ignore[method-assign]

    async def run() -> list[object]:
        await sink.start()
        await sink.append(line("a"))
        fail["on"] = True
        results = await asyncio.gather(
            sink.append(line("b1")), sink.append(line("b2")), return_exceptions=True
        )
        await sink.append(line("c"))
        await sink.close()
        return results

    results = asyncio.run(run())
    assert all(isinstance(r, SinkError) for r in results)
    assert "sink write failed" in str(results[0])
    assert "Input/output error" in str(results[0])
    assert today_file(tmp_path).read_bytes() == line("a") + line("c")
    assert sink.failed_commits == 1


def test_partial_write_is_rolled_back(tmp_path: Path) -> None:
    sink = make_sink(tmp_path)
    real_write = sink._write_all

    def disk_full(fd: int, data: bytes) -> None:
        os.write(fd, data[: len(data) // 2])  # half a line reaches the file, then ENOSPC
        raise OSError(errno.ENOSPC, "No space left on device")

    async def run() -> None:
        await sink.start()
        await sink.append(line("a"))
        sink._write_all = disk_full  # type: ignore[method-assign]
        with pytest.raises(SinkError, match="No space left"):
            await sink.append(line("b") + line("bb"))
        assert today_file(tmp_path).read_bytes() == line("a")
        sink._write_all = real_write  # type: ignore[method-assign]
        await sink.append(line("c"))
        await sink.close()

    asyncio.run(run())
    assert today_file(tmp_path).read_bytes() == line("a") + line("c")


def test_rollback_that_fails_is_retried_before_the_next_commit(tmp_path: Path) -> None:
    sink = make_sink(tmp_path)
    real_write, real_sync = sink._write_all, sink._sync
    broken = {"sync": False}

    def half_write(fd: int, data: bytes) -> None:
        os.write(fd, data[:3])
        raise OSError(errno.EIO, "write failed")

    def sync(fd: int) -> None:
        if broken["sync"]:
            raise OSError(errno.EIO, "sync failed")
        real_sync(fd)

    sink._sync = sync  # type: ignore[method-assign]

    async def run() -> None:
        await sink.start()
        await sink.append(line("a"))
        sink._write_all = half_write  # type: ignore[method-assign]
        broken["sync"] = True  # the rollback's own fsync fails too: the sink stays dirty
        with pytest.raises(SinkError):
            await sink.append(line("b"))
        sink._write_all = real_write  # type: ignore[method-assign]
        with pytest.raises(SinkError):  # still cannot repair: refuse rather than append after junk
            await sink.append(line("c"))
        broken["sync"] = False
        await sink.append(line("d"))
        await sink.close()

    asyncio.run(run())
    assert today_file(tmp_path).read_bytes() == line("a") + line("d")


def test_partial_last_line_is_repaired_on_open(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = today_file(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(line(1) + line(2) + b'{"n":"trunc')
    sink = make_sink(tmp_path)

    async def run() -> None:
        await sink.start()
        await sink.append(line(3))
        await sink.close()

    with caplog.at_level(logging.WARNING, logger="logplatform.sink"):
        asyncio.run(run())
    assert path.read_bytes() == line(1) + line(2) + line(3)
    assert "partial line" in caplog.text
    assert "dropped 11 bytes" in caplog.text


def test_file_without_any_newline_is_emptied(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = today_file(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x" * 70_000)  # longer than one tail-read chunk
    sink = make_sink(tmp_path)

    async def run() -> None:
        await sink.start()
        await sink.close()

    with caplog.at_level(logging.WARNING, logger="logplatform.sink"):
        asyncio.run(run())
    assert path.read_bytes() == b""
    assert "dropped 70000 bytes" in caplog.text


def test_complete_file_is_left_alone(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = today_file(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(line(1))
    sink = make_sink(tmp_path)

    async def run() -> None:
        await sink.start()
        await sink.append(line(2))
        await sink.close()

    with caplog.at_level(logging.WARNING, logger="logplatform.sink"):
        asyncio.run(run())
    assert path.read_bytes() == line(1) + line(2)
    assert "partial line" not in caplog.text


def test_day_rollover_opens_a_new_file(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 11, 24, 23, 59, 59, tzinfo=UTC))
    sink = make_sink(tmp_path, clock=clock)

    async def run() -> None:
        await sink.start()
        await sink.append(line("late"))
        clock.now = datetime(2026, 11, 25, 0, 0, 1, tzinfo=UTC)
        await sink.append(line("early"))
        await sink.close()

    asyncio.run(run())
    assert sorted(p.name for p in (tmp_path / "sink").iterdir()) == [
        "blue-1-2026-11-24.ndjson",
        "blue-1-2026-11-25.ndjson",
    ]
    assert (tmp_path / "sink" / "blue-1-2026-11-24.ndjson").read_bytes() == line("late")
    assert (tmp_path / "sink" / "blue-1-2026-11-25.ndjson").read_bytes() == line("early")
    assert sink.path == tmp_path / "sink" / "blue-1-2026-11-25.ndjson"


def test_close_commits_everything_queued_and_then_refuses(tmp_path: Path) -> None:
    sink = make_sink(tmp_path)

    async def run() -> None:
        await sink.start()
        pending = [asyncio.ensure_future(sink.append(line(i))) for i in range(10)]
        await asyncio.sleep(0)  # let them enqueue
        await sink.close()
        await asyncio.gather(*pending)  # all succeeded
        with pytest.raises(SinkError, match="closed"):
            await sink.append(line("late"))

    asyncio.run(run())
    assert sorted(today_file(tmp_path).read_bytes().splitlines(keepends=True)) == sorted(
        line(i) for i in range(10)
    )


def test_second_writer_for_the_same_node_file_is_refused(tmp_path: Path) -> None:
    first, second = make_sink(tmp_path), make_sink(tmp_path)

    async def run() -> None:
        await first.start()
        try:
            with pytest.raises(SinkError, match="locked by another process"):
                await second.start()
        finally:
            await first.close()

    asyncio.run(run())
