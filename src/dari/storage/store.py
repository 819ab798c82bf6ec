"""The data directory (LogStore) and the asyncio side of durability (FlushScheduler).

Layout: ``<data_dir>/.lock`` (flock, holds the owner's pid) and one directory per log, named
by the caller (``orders-0``, a queue name, ...). Names starting with a dot are reserved.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from pathlib import Path

from dari.storage.compaction import CleanStats, LogCleaner
from dari.storage.config import LogConfig
from dari.storage.log import LogClosedError, PartitionLog

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
LogsProvider = Callable[[], Iterable[PartitionLog]]


class DataDirLockedError(RuntimeError):
    """Another process owns the data directory."""


class LogStore:
    """Owns a data directory and the logs opened in it.

    Owned by the event loop thread. ``lock()`` takes an exclusive ``flock`` on
    ``data_dir/.lock`` that lasts until ``close()`` (or process exit), so two brokers never
    write the same logs. ``open_log`` takes the lock if it is not held yet.
    """

    def __init__(self, data_dir: Path, clock: Callable[[], float] = time.time) -> None:
        self.data_dir = Path(data_dir)
        self.logs: dict[str, PartitionLog] = {}
        self._clock = clock
        self._lock_fd: int | None = None

    def lock(self) -> None:
        if self._lock_fd is not None:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirLockedError(
                f"data directory {self.data_dir} is in use by another dari process (pid {owner})"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd
        self._remove_interrupted_deletes()

    def _remove_interrupted_deletes(self) -> None:
        for path in self.data_dir.iterdir():
            if path.name.startswith(".") and path.name.endswith(".deleting") and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)

    def log_names(self) -> list[str]:
        """Names of the logs on disk (open or not), for rebuilding topics and queues at start."""
        if not self.data_dir.exists():
            return []
        return sorted(
            p.name for p in self.data_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
        )

    def open_log(self, name: str, config: LogConfig) -> PartitionLog:
        """Open (create or recover) the log ``name``; an already open log gets ``config``."""
        _check_name(name)
        existing = self.logs.get(name)
        if existing is not None:
            existing.config = config
            return existing
        self.lock()
        partition_log = PartitionLog.open(self.data_dir / name, config, self._clock)
        self.logs[name] = partition_log
        return partition_log

    def remove_log(self, name: str) -> None:
        """Delete the log ``name`` and its files, whether it is open or not."""
        _check_name(name)
        self.lock()
        partition_log = self.logs.pop(name, None)
        if partition_log is not None:
            partition_log.delete()
        elif (self.data_dir / name).is_dir():
            shutil.rmtree(self.data_dir / name)

    def close(self) -> None:
        """Close every log cleanly, then release the directory lock."""
        try:
            for partition_log in self.logs.values():
                partition_log.close()
            self.logs.clear()
        finally:
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = None


def _check_name(name: str) -> None:
    if not name or name.startswith(".") or "/" in name or "\0" in name or len(name) > 255:
        raise ValueError(f"invalid log name {name!r}")


class FlushScheduler:
    """Applies each log's flush policy without blocking the event loop.

    ``await durable(log, offset)`` returns once every offset below ``offset`` is fsynced, as the
    log's policy requires:

    * ``always``: group commit. Callers register and one "round" fsyncs every log with waiters
      in worker threads; callers arriving while a round runs are served by the next round, so
      N concurrent producers share a handful of fsyncs. ``rounds`` counts them.
    * ``interval``: a periodic task fsyncs dirty logs every ``flush_interval_ms``; callers wait
      for the next one.
    * ``os``: returns at once; data reaches disk with the page cache (and on close).

    For every policy the periodic task also fsyncs freshly rolled segments (``flush_rolled``)
    so that recovery after a crash only rescans the active segment. Owned by the event loop;
    every task it starts is cancelled by ``aclose()``.
    """

    def __init__(
        self,
        logs: LogsProvider | LogStore | None = None,
        *,
        executor: Executor | None = None,
        idle_tick_s: float = 1.0,
    ) -> None:
        if isinstance(logs, LogStore):
            store = logs
            self._logs: LogsProvider = lambda: list(store.logs.values())
        else:
            self._logs = logs if logs is not None else tuple
        self._executor = executor
        self._idle_tick_s = idle_tick_s
        self._waiters: dict[PartitionLog, list[tuple[int, asyncio.Future[None]]]] = {}
        self._always_pending: dict[PartitionLog, None] = {}
        self._round_task: asyncio.Task[None] | None = None
        self._periodic_task: asyncio.Task[None] | None = None
        self._last_flush: dict[PartitionLog, float] = {}
        self._closed = False
        self.rounds = 0  # group-commit rounds run for "always" logs
        self.periodic_flushes = 0  # fsyncs done by the periodic task

    async def start(self, logs: LogsProvider | None = None) -> None:
        """Start the periodic task; ``logs`` (if given) replaces the provider of logs to watch."""
        if logs is not None:
            self._logs = logs
        if self._periodic_task is None and not self._closed:
            self._periodic_task = asyncio.get_running_loop().create_task(
                self._periodic(), name="dari-flush-periodic"
            )

    async def durable(self, log: PartitionLog, upto_offset: int) -> None:
        """Wait until ``log.flushed_offset >= upto_offset`` (immediately under policy "os")."""
        if log.flushed_offset >= upto_offset or log.config.flush == "os":
            return
        if self._closed:
            raise RuntimeError("flush scheduler is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._waiters.setdefault(log, []).append((upto_offset, future))
        if log.config.flush == "always":
            self._always_pending[log] = None
            if self._round_task is None:
                self._round_task = loop.create_task(self._run_rounds(), name="dari-group-commit")
        else:
            await self.start()
        await future

    async def _run_rounds(self) -> None:
        try:
            while self._always_pending:
                logs = list(self._always_pending)
                self._always_pending.clear()
                self.rounds += 1
                await self._flush_logs(logs, "flush")
        finally:
            self._round_task = None

    async def _flush_logs(self, logs: list[PartitionLog], method: str) -> None:
        loop = asyncio.get_running_loop()
        results = await asyncio.gather(
            *(loop.run_in_executor(self._executor, getattr(lg, method)) for lg in logs),
            return_exceptions=True,
        )
        for partition_log, result in zip(logs, results, strict=True):
            if isinstance(result, BaseException):
                log.error("flushing %s failed: %s", partition_log, result)
                self._settle(partition_log, result)
            else:
                self._settle(partition_log, None)

    def _settle(self, log: PartitionLog, error: BaseException | None) -> None:
        """Resolve the waiters of ``log`` that are now durable (or fail them all on error)."""
        waiters = self._waiters.get(log)
        if not waiters:
            return
        flushed = log.flushed_offset
        keep = []
        for upto, future in waiters:
            if future.done():
                continue
            if error is not None:
                future.set_exception(error)
            elif upto <= flushed:
                future.set_result(None)
            elif log.closed:
                future.set_exception(
                    LogClosedError(f"{log} closed before offset {upto} was flushed")
                )
            else:
                keep.append((upto, future))
        if keep:
            self._waiters[log] = keep
        else:
            del self._waiters[log]

    async def _periodic(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            logs = {lg: None for lg in self._logs()}
            logs.update(dict.fromkeys(self._waiters))
            intervals = [
                lg.config.flush_interval_ms / 1000
                for lg in logs
                if lg.config.flush == "interval" and not lg.closed
            ]
            await asyncio.sleep(max(0.001, min(intervals, default=self._idle_tick_s)))
            now = loop.time()
            full: list[PartitionLog] = []
            rolled: list[PartitionLog] = []
            for lg in logs:
                if lg.closed:
                    self._waiters.pop(lg, None)
                    self._last_flush.pop(lg, None)
                    continue
                due = now - self._last_flush.get(lg, 0.0) >= lg.config.flush_interval_ms / 1000
                if lg.config.flush == "interval" and lg.is_dirty and due:
                    full.append(lg)
                    self._last_flush[lg] = now
                elif lg.has_unflushed_rolled_segments:
                    rolled.append(lg)
            if full or rolled:
                self.periodic_flushes += len(full)
                await asyncio.gather(
                    self._flush_logs(full, "flush"), self._flush_logs(rolled, "flush_rolled")
                )

    async def aclose(self) -> None:
        """Finish the running group commit, fsync logs with waiters, stop the periodic task."""
        self._closed = True
        if self._periodic_task is not None:
            self._periodic_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._periodic_task
            self._periodic_task = None
        if self._round_task is not None:
            await self._round_task
        pending = [lg for lg in self._waiters if not lg.closed]
        if pending:
            await self._flush_logs(pending, "flush")
        for waiters in self._waiters.values():
            for _, future in waiters:
                if not future.done():
                    future.set_exception(RuntimeError("flush scheduler closed"))
        self._waiters.clear()


def _provider(logs: LogsProvider | LogStore) -> LogsProvider:
    if isinstance(logs, LogStore):
        store = logs
        return lambda: list(store.logs.values())
    return logs


async def run_cleaner(
    logs: LogsProvider | LogStore,
    interval_s: float = 15.0,
    executor: Executor | None = None,
    cleaner: LogCleaner | None = None,
    clock: Callable[[], float] = time.time,
) -> None:
    """Forever: every ``interval_s``, compact the logs that need it (``clean_due_logs``).

    The broker starts it as a task it owns and cancels on shutdown, next to
    ``run_maintenance``, e.g. ``tg.create_task(run_cleaner(topics.all_logs, 15, executor))``.
    Cleaning runs in ``executor`` (default: the loop's), one log at a time, so the event loop
    keeps serving appends and reads; cancelling the task leaves a running pass to finish in
    its thread (closing the log stops it promptly).
    """
    provider = _provider(logs)
    cleaner = cleaner if cleaner is not None else LogCleaner()
    while True:
        await asyncio.sleep(interval_s)
        await clean_due_logs(provider(), cleaner, executor, int(clock() * 1000))


async def clean_due_logs(
    logs: Iterable[PartitionLog],
    cleaner: LogCleaner,
    executor: Executor | None = None,
    now_ms: int | None = None,
) -> list[CleanStats]:
    """One cleaner pass: for each open log with cleanup.policy "compact" whose dirty ratio,
    max.compaction.lag.ms or expired tombstones call for it, run ``cleaner.clean`` in
    ``executor``; failures are logged and the other logs still get their turn."""
    loop = asyncio.get_running_loop()
    done: list[CleanStats] = []
    for partition_log in list(logs):
        now = int(time.time() * 1000) if now_ms is None else now_ms
        if not cleaner.needs_cleaning(partition_log, now):
            continue
        try:
            stats = await loop.run_in_executor(executor, cleaner.clean, partition_log, now)
        except Exception:
            log.exception("cleaning %s failed", partition_log)
            continue
        if stats.cleaned:
            log.info(
                "cleaned %s: %d segments, %.1f MB -> %.1f MB, %d records removed in %.2fs",
                partition_log,
                stats.segments_read,
                stats.bytes_read / 1e6,
                (stats.bytes_read - stats.bytes_saved) / 1e6,
                stats.records_removed,
                stats.seconds,
            )
            done.append(stats)
    return done


async def run_maintenance(
    logs: LogsProvider | LogStore,
    interval_s: float = 30.0,
    clock: Callable[[], float] = time.time,
    *,
    executor: Executor | None = None,
    after_pass: Callable[[], None] | None = None,
) -> None:
    """Forever: every ``interval_s``, roll active segments older than segment.ms and apply
    retention to every log, then call ``after_pass`` (the broker snapshots producer state).

    Rolls run on the event loop (they change the active segment appends go to); retention,
    which unlinks segment files, runs in ``executor`` (default: the loop's) so a large
    deletion does not stall the loop. Start it as a task owned by the server and cancel it
    on shutdown, e.g. ``tg.create_task(run_maintenance(store, 30))``.
    """
    provider = _provider(logs)
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(interval_s)
        now_ms = int(clock() * 1000)
        live = [partition_log for partition_log in provider() if not partition_log.closed]
        roll_due(live, now_ms)
        await loop.run_in_executor(executor, apply_retention, live, now_ms)
        if after_pass is not None:
            after_pass()


def maintain(logs: Iterable[PartitionLog], now_ms: int) -> int:
    """One maintenance pass in the calling thread (time-based rolls, then retention);
    returns the segments deleted."""
    live = [partition_log for partition_log in logs if not partition_log.closed]
    roll_due(live, now_ms)
    return apply_retention(live, now_ms)


def roll_due(logs: Iterable[PartitionLog], now_ms: int) -> None:
    """Roll the active segments older than segment.ms; a failing log is logged and skipped."""
    for partition_log in logs:
        try:
            partition_log.roll_if_due(now_ms)
        except Exception:
            log.exception("maintenance of %s failed", partition_log)


def apply_retention(logs: Iterable[PartitionLog], now_ms: int) -> int:
    """Apply retention to each log (any thread); returns the segments deleted. A failing log
    is logged and the others still get their turn."""
    deleted = 0
    for partition_log in logs:
        try:
            count = partition_log.apply_retention(now_ms)
        except Exception:
            log.exception("maintenance of %s failed", partition_log)
            continue
        if count:
            log.info("retention deleted %d segments of %s", count, partition_log.directory)
        deleted += count
    return deleted
