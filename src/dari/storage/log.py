"""PartitionLog: the segmented, append-only log of one partition (Kafka's ``UnifiedLog``).

Batches are stored byte-for-byte; the broker rewrites only their base offset, leader epoch and
(on LogAppendTime topics) max timestamp. Offsets are assigned contiguously from
``log_end_offset``; ``log_start_offset`` advances through retention and DeleteRecords.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
import uuid
from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from dari.records.batch import BatchHeader, assign_offsets
from dari.records.records import iter_batches, iter_records
from dari.storage.config import LogConfig
from dari.storage.files import fsync_dir
from dari.storage.loader import (
    CLEAN_SHUTDOWN_FILE,
    Checkpoint,
    CleanerCheckpoint,
    LoadedLog,
    load_log,
    write_checkpoint,
    write_cleaner_checkpoint,
)
from dari.storage.retention import segments_to_delete
from dari.storage.segment import LogSegment

_INT32_MAX = (1 << 31) - 1
SCAN_CHUNK_BYTES = 1 << 20  # what iter_batches reads per call of ``read``


class OffsetOutOfRangeError(Exception):
    """A fetch or DeleteRecords offset outside [log_start_offset, log_end_offset]."""

    def __init__(self, offset: int, log_start_offset: int, log_end_offset: int) -> None:
        super().__init__(f"offset {offset} is out of range [{log_start_offset}, {log_end_offset}]")
        self.offset = offset
        self.log_start_offset = log_start_offset
        self.log_end_offset = log_end_offset


class LogClosedError(RuntimeError):
    """The log was closed or deleted."""


@dataclass(frozen=True, slots=True)
class AppendInfo:
    base_offset: int
    last_offset: int
    log_append_time: int  # -1 unless the topic uses LogAppendTime


class PartitionLog:
    """One partition's log in its own directory.

    Owned by the event loop thread: append, read, roll, retention, truncation and close run
    there. ``flush()`` (and ``flush_rolled()``) may run in a worker thread concurrently with
    appends and reads; they snapshot what to fsync under ``_lock`` and never block the loop
    for the duration of an fsync. ``config`` may be replaced at any time.

    The log cleaner (``dari.storage.compaction``) rewrites closed segments in a worker thread
    while holding ``_cleaner_lock``; retention skips a pass rather than wait for it, and
    truncation, close and delete ask it to stop (``_cleaner_abort``) and wait the moment it
    takes to notice.
    """

    def __init__(
        self,
        directory: Path,
        config: LogConfig,
        clock: Callable[[], float],
        loaded: LoadedLog,
    ) -> None:
        self.directory = directory
        self.config = config
        self._clock = clock
        # Segments and their base offsets, swapped as one pair so a reader never mixes an old
        # list with a new one (retention may run in a worker thread).
        self._layout: tuple[list[LogSegment], list[int]] = (
            loaded.segments,
            [s.base_offset for s in loaded.segments],
        )
        self._graveyard = _Graveyard()  # removed, files unlinked, descriptors still open
        self.log_start_offset = loaded.log_start_offset
        self.log_end_offset = loaded.segments[-1].next_offset
        self.recovered_segments = loaded.recovered_segments
        self.truncated_bytes = loaded.truncated_bytes
        self.flush_count = 0  # fsync rounds that did work
        self._recovery_point = loaded.recovery_point
        self._flushed_offset = self.log_end_offset
        self._unflushed_rolled: list[LogSegment] = []
        self._rolled_in_flight: list[LogSegment] = []  # being fsynced by a flush right now
        self._dir_dirty = False
        self._generation = 0  # bumped by truncation so a racing flush cannot overstate
        self._closed = False
        self._deleted = False
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._checkpoint_lock = threading.Lock()
        self._cleaner_lock = threading.Lock()
        self._cleaner_abort = threading.Event()
        self.cleaner_checkpoint: CleanerCheckpoint = loaded.cleaner

    # ---- open / close ---------------------------------------------------------------------------

    @classmethod
    def open(
        cls, directory: Path, config: LogConfig, clock: Callable[[], float] = time.time
    ) -> PartitionLog:
        """Open the log in ``directory``, creating it or recovering it after a crash."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        loaded = load_log(directory, config.index_interval_bytes, int(clock() * 1000))
        log = cls(directory, config, clock, loaded)
        # From here on a crash must be detected: drop the marker (the checkpoint write below
        # fsyncs the directory, making the removal durable).
        (directory / CLEAN_SHUTDOWN_FILE).unlink(missing_ok=True)
        log._write_checkpoint()
        return log

    def close(self) -> None:
        """Flush everything, then mark the shutdown clean so the next open skips recovery."""
        if self._closed:
            return
        with self._cleaner_stopped():
            self._close()

    def _close(self) -> None:
        if self._closed:
            return
        self.flush()
        active = self._segments[-1]
        active.seal()
        active.sync(indexes=True)
        self._recovery_point = active.base_offset
        self._write_checkpoint()
        with self._lock:
            self._closed = True
        for segment in self._segments:
            segment.close()
        self._graveyard.close_all()
        marker = os.open(self.directory / CLEAN_SHUTDOWN_FILE, os.O_WRONLY | os.O_CREAT, 0o644)
        os.fsync(marker)
        os.close(marker)
        fsync_dir(self.directory)

    def delete(self) -> None:
        """Close the log and remove its directory (renamed first, so a crash leaves no log)."""
        with self._cleaner_stopped():
            self._delete()

    def _delete(self) -> None:
        if not self._closed:
            with self._lock:
                self._closed = True
            for segment in self._segments:
                segment.close()
            self._graveyard.close_all()
        with self._checkpoint_lock:
            self._deleted = True
        doomed = self.directory.with_name(f".{self.directory.name}.{uuid.uuid4().hex}.deleting")
        os.rename(self.directory, doomed)
        fsync_dir(self.directory.parent)
        shutil.rmtree(doomed, ignore_errors=True)

    @property
    def closed(self) -> bool:
        return self._closed

    @contextlib.contextmanager
    def _cleaner_stopped(self) -> Iterator[None]:
        """Stop a running cleaning (it notices between batches) and keep others out."""
        self._cleaner_abort.set()
        try:
            with self._cleaner_lock:
                yield
        finally:
            self._cleaner_abort.clear()

    # ---- append ---------------------------------------------------------------------------------

    def append(
        self, buf: bytearray, headers: list[BatchHeader], leader_epoch: int = 0
    ) -> AppendInfo:
        """Assign offsets to validated batches in ``buf`` (in place) and write them.

        ``headers`` come from ``dari.records.batch.validate(buf)``. The whole buffer lands in
        one segment with one write; the segment rolls first if it is full, too old, or the
        offsets would not fit its int32 relative offsets.
        """
        if self._closed:
            raise LogClosedError(f"log {self.directory} is closed")
        if not headers:
            raise ValueError("nothing to append")
        now_ms = int(self._clock() * 1000)
        count = 0
        for header in headers:
            count += header.last_offset_delta + 1
        base = self.log_end_offset
        last = base + count - 1
        size = len(buf)
        config = self.config
        segment = self._segments[-1]
        if segment.size and (
            segment.size + size > config.segment_bytes
            or now_ms - segment.rolling_ms >= config.roll_ms
            or last - segment.base_offset > _INT32_MAX
            or segment.size + size > _INT32_MAX
        ):
            segment = self._roll()
        append_time = now_ms if config.log_append_time else None
        assign_offsets(buf, headers, base, leader_epoch, append_time)
        segment.append(buf, headers, base, append_time, now_ms, config.index_interval_bytes)
        self.log_end_offset = last + 1  # only after the bytes are written (see flush)
        return AppendInfo(base, last, -1 if append_time is None else append_time)

    def roll_if_due(self, now_ms: int | None = None) -> bool:
        """Roll a non-empty active segment older than segment.ms (or max.compaction.lag.ms on
        a compacted log, when smaller); True if it rolled."""
        if self._closed:
            return False
        if now_ms is None:
            now_ms = int(self._clock() * 1000)
        active = self._segments[-1]
        if active.size and now_ms - active.rolling_ms >= self.config.roll_ms:
            self._roll()
            return True
        return False

    def _roll(self) -> LogSegment:
        old = self._segments[-1]
        old.seal()
        new = LogSegment.create(self.directory, self.log_end_offset)
        with self._lock:
            segments, bases = self._layout
            self._layout = ([*segments, new], [*bases, new.base_offset])
            self._unflushed_rolled.append(old)
            self._dir_dirty = True
        return new

    # ---- read -----------------------------------------------------------------------------------

    def read(self, offset: int, max_bytes: int) -> bytes | memoryview:
        """Whole batches from the one containing ``offset``, up to ``max_bytes`` but at least
        one batch; b"" at the log end. Data comes from a single segment per call."""
        if offset < self.log_start_offset or offset > self.log_end_offset:
            raise OffsetOutOfRangeError(offset, self.log_start_offset, self.log_end_offset)
        if offset == self.log_end_offset:
            return b""
        segments, bases = self._layout
        for segment in segments[_floor_index(bases, offset) :]:
            data = segment.read(offset, max_bytes)
            if data is not None:
                return data
        return b""

    def iter_batches(
        self, from_offset: int, chunk_bytes: int = SCAN_CHUNK_BYTES
    ) -> Iterator[tuple[BatchHeader, memoryview]]:
        """Every batch holding an offset >= ``from_offset``, in order up to the log end, across
        segments and over a compacted log's gaps, read with ``read`` in chunks of about
        ``chunk_bytes``: how recovery and replay read a whole log.

        The first batch may start below ``from_offset`` (it holds it); callers decoding records
        skip those below. A ``from_offset`` below the log start, or a start that retention
        moves while iterating, continues at the log start; the walk ends at the log end (as
        it is when the walk gets there) or when truncation cuts the log below its position.
        Runs where ``read`` may: on the event loop, or in a worker thread at start before
        anything else touches the log.
        """
        offset = from_offset
        while True:
            offset = max(offset, self.log_start_offset)
            try:
                data = self.read(offset, chunk_bytes)
            except OffsetOutOfRangeError:
                if offset < self.log_start_offset:
                    continue  # retention moved the start meanwhile: go on from there
                return  # truncated below ``offset``
            if not data:
                return
            after = offset
            for header, batch in iter_batches(data):
                yield header, batch
                after = header.next_offset
            if after <= offset:  # pragma: no cover - read returns batches holding offset
                return
            offset = after

    def offset_for_timestamp(self, timestamp_ms: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the earliest record with timestamp >= ``timestamp_ms``
        (ListOffsets); None when there is none."""
        start = self.log_start_offset
        segments, bases = self._layout
        for segment in segments[_floor_index(bases, start) :]:
            for position, header in segment.iter_timestamp_candidates(timestamp_ms, start):
                found = _first_record(
                    segment, position, header, start, lambda ts: ts >= timestamp_ms
                )
                if found is not None:
                    return found
        return None

    def max_timestamp(self) -> tuple[int, int]:
        """(offset, timestamp) of the earliest record with the largest timestamp (ListOffsets
        -3); (-1, -1) for an empty log."""
        best: LogSegment | None = None
        for segment in self._segments:
            if segment.size and (best is None or segment.max_timestamp > best.max_timestamp):
                best = segment
        if best is None:
            return -1, -1
        target = best.max_timestamp
        found = best.find(best.offset_of_max_timestamp)
        if found is None:
            return best.offset_of_max_timestamp, target
        position, header = found
        exact = _first_record(best, position, header, -1, lambda ts: ts >= target)
        return exact if exact is not None else (header.base_offset, target)

    # ---- durability -----------------------------------------------------------------------------

    @property
    def flushed_offset(self) -> int:
        """Every offset below this one is on disk (fsynced)."""
        return self._flushed_offset

    @property
    def is_dirty(self) -> bool:
        return (
            self.log_end_offset > self._flushed_offset
            or bool(self._unflushed_rolled)
            or self._dir_dirty
        )

    @property
    def has_unflushed_rolled_segments(self) -> bool:
        return bool(self._unflushed_rolled or self._rolled_in_flight) or self._dir_dirty

    def flush(self) -> None:
        """fsync everything appended so far; safe to call from a worker thread.

        Rolled segments are synced with their indexes; the active segment's indexes are not,
        since recovery rebuilds them from the log after a crash anyway (one fsync per flush
        instead of three)."""
        self._flush(include_active=True)

    def flush_rolled(self) -> None:
        """fsync only segments that have been rolled (with their indexes), as Kafka does after
        every roll whatever the flush policy, so recovery after a crash only rescans the
        active segment."""
        self._flush(include_active=False)

    def _flush(self, include_active: bool) -> None:
        with self._flush_lock:
            with self._lock:
                if self._closed or not self._segments:  # empty only inside truncate_to
                    return
                target = self.log_end_offset
                generation = self._generation
                rolled, self._unflushed_rolled = self._unflushed_rolled, []
                self._rolled_in_flight = rolled
                active = self._segments[-1]
                dir_dirty, self._dir_dirty = self._dir_dirty, False
            sync_active = include_active and target > self._flushed_offset
            if not (sync_active or rolled or dir_dirty):
                return
            try:
                for segment in rolled:
                    segment.sync(indexes=True)
                if sync_active:
                    active.sync(indexes=False)
                if dir_dirty:
                    fsync_dir(self.directory)
            except BaseException:
                with self._lock:
                    self._unflushed_rolled[:0] = rolled
                    self._rolled_in_flight = []
                    self._dir_dirty = self._dir_dirty or dir_dirty
                raise
            durable = target if sync_active else active.base_offset
            try:
                with self._lock:
                    if generation != self._generation:
                        return  # truncated meanwhile: what was synced may no longer exist
                    self._flushed_offset = max(self._flushed_offset, durable)
                    advanced = bool(rolled) and active.base_offset > self._recovery_point
                    if advanced:
                        self._recovery_point = active.base_offset
                self.flush_count += 1
                if advanced:
                    self._write_checkpoint()
            finally:
                with self._lock:
                    self._rolled_in_flight = []

    def _write_checkpoint(self) -> None:
        with self._checkpoint_lock:
            if self._deleted:
                return
            write_checkpoint(
                self.directory, Checkpoint(self.log_start_offset, self._recovery_point)
            )

    # ---- retention and truncation ---------------------------------------------------------------

    def apply_retention(self, now_ms: int | None = None) -> int:
        """Delete closed segments past retention.ms / retention.bytes (cleanup.policy with
        "delete") or below the log start offset; returns how many were deleted. While the
        cleaner works on this log it does nothing (the next pass catches up)."""
        if self._closed:
            return 0
        if now_ms is None:
            now_ms = int(self._clock() * 1000)
        if not self._cleaner_lock.acquire(blocking=False):
            return 0
        try:
            if self._closed:
                return 0
            doomed = segments_to_delete(
                self._segments, self.config, now_ms, self.log_start_offset, self.size_bytes
            )
            if not doomed:
                return 0
            self._remove_segments([segment for segment, _ in doomed])
            self.log_start_offset = max(self.log_start_offset, self._segments[0].base_offset)
            self._write_checkpoint()
            return len(doomed)
        finally:
            self._cleaner_lock.release()

    def delete_records(self, before_offset: int) -> int:
        """Make ``before_offset`` the new log start offset (DeleteRecords); returns the log
        start offset. The value is checkpointed before this returns; the segments below it are
        deleted now, or by the next retention pass if the cleaner is busy with the log."""
        if self._closed:
            raise LogClosedError(f"log {self.directory} is closed")
        if before_offset < 0 or before_offset > self.log_end_offset:
            raise OffsetOutOfRangeError(before_offset, self.log_start_offset, self.log_end_offset)
        if before_offset <= self.log_start_offset:
            return self.log_start_offset
        self.log_start_offset = before_offset
        self._write_checkpoint()
        active = self._segments[-1]
        if active.size and active.next_offset <= before_offset:
            self._roll()  # everything is deleted: roll so the old active can go too
        if not self._cleaner_lock.acquire(blocking=False):
            return self.log_start_offset
        try:
            doomed = []
            for segment in self._segments[:-1]:
                if segment.next_offset > before_offset:
                    break
                doomed.append(segment)
            if doomed:
                self._remove_segments(doomed)
        finally:
            self._cleaner_lock.release()
        return self.log_start_offset

    def truncate_to(self, offset: int) -> int:
        """Drop every batch holding offsets >= ``offset`` (whole batches, so the new log end
        may be below ``offset`` when it falls inside a batch); returns the new log end."""
        if self._closed:
            raise LogClosedError(f"log {self.directory} is closed")
        if offset < 0:
            raise ValueError(f"cannot truncate to negative offset {offset}")
        if offset >= self.log_end_offset:
            return self.log_end_offset
        with self._cleaner_stopped():
            return self._truncate_to(offset)

    def _truncate_to(self, offset: int) -> int:
        now_ms = int(self._clock() * 1000)
        with self._lock:
            self._generation += 1
        if offset <= self._segments[0].base_offset:
            old = list(self._segments)
            self._remove_segments(old, keep_active=False)
            fresh = LogSegment.create(self.directory, offset)
            with self._lock:
                self._layout = ([fresh], [offset])
                self._dir_dirty = True
            self.log_start_offset = offset
        else:
            index = _floor_index(self._layout[1], offset)
            later = self._segments[index + 1 :]
            if later:
                self._remove_segments(later, keep_active=False)
            segment = self._segments[-1]
            with self._lock:
                if segment in self._unflushed_rolled:
                    self._unflushed_rolled.remove(segment)
            segment.truncate_to(offset, now_ms, self.config.index_interval_bytes)
        active = self._segments[-1]
        self.log_end_offset = active.next_offset
        self.log_start_offset = min(self.log_start_offset, self.log_end_offset)
        with self._lock:
            self._flushed_offset = min(self._flushed_offset, self.log_end_offset)
            self._recovery_point = min(self._recovery_point, active.base_offset)
        self._write_checkpoint()
        cleaner = self.cleaner_checkpoint
        end = self.log_end_offset
        if cleaner.clean_offset > end or cleaner.compacted_end > end:
            self.save_cleaner_checkpoint(
                replace(
                    cleaner,
                    clean_offset=min(cleaner.clean_offset, end),
                    compacted_end=min(cleaner.compacted_end, end),
                    marks=tuple((min(upto, end), at) for upto, at in cleaner.marks),
                )
            )
        return self.log_end_offset

    def _remove_segments(self, doomed: list[LogSegment], keep_active: bool = True) -> None:
        """Take segments out of the log and unlink their files.

        Their descriptors stay open for a grace period (or until close): a read that picked a
        segment just before it was removed by retention in another thread still reads it
        intact, and a descriptor number is never reused under it.
        """
        self._graveyard.reap()
        with self._lock:
            segments, _ = self._layout
            if keep_active and segments[-1] in doomed:
                raise AssertionError("the active segment cannot be removed")
            gone = {id(s) for s in doomed} & {id(s) for s in segments}
            doomed = [s for s in segments if id(s) in gone]
            kept = [s for s in segments if id(s) not in gone]
            self._layout = (kept, [s.base_offset for s in kept])
            self._unflushed_rolled = [s for s in self._unflushed_rolled if id(s) not in gone]
            self._rolled_in_flight = [s for s in self._rolled_in_flight if id(s) not in gone]
        for segment in doomed:
            segment.delete_files()
        self._graveyard.bury(doomed)

    # ---- compaction support (called by the cleaner holding _cleaner_lock) ------------------------

    def save_cleaner_checkpoint(self, checkpoint: CleanerCheckpoint) -> None:
        with self._checkpoint_lock:
            if self._deleted:
                return
            write_cleaner_checkpoint(self.directory, checkpoint)
            self.cleaner_checkpoint = checkpoint

    def swap_segments(self, old: list[LogSegment], new: LogSegment) -> None:
        """Put ``new`` in place of the adjacent closed segments ``old`` in one layout swap.

        The old segments keep their descriptors for a grace period, so readers in flight
        still read them (see ``_Graveyard``)."""
        with self._lock:
            segments, _ = self._layout
            ids = [id(s) for s in segments]
            first = ids.index(id(old[0]))
            if ids[first : first + len(old)] != [id(s) for s in old] or segments[-1] in old:
                raise AssertionError("cleaned segments are no longer adjacent closed segments")
            kept = [*segments[:first], new, *segments[first + len(old) :]]
            self._layout = (kept, [s.base_offset for s in kept])
            gone = {id(s) for s in old}
            self._unflushed_rolled = [s for s in self._unflushed_rolled if id(s) not in gone]
            self._rolled_in_flight = [s for s in self._rolled_in_flight if id(s) not in gone]
        self._graveyard.bury(old)

    def close_replaced_segments(self) -> None:
        self._graveyard.reap()

    @contextlib.contextmanager
    def cleaning(self) -> Iterator[bool]:
        """Hold the cleaner lock if it is free (yields True) for one cleaning; yields False
        when another cleaning, a retention pass or a close already holds it."""
        if not self._cleaner_lock.acquire(blocking=False):
            yield False
            return
        try:
            self.close_replaced_segments()
            yield not self._closed
        finally:
            self._cleaner_lock.release()

    @property
    def cleaner_abort_requested(self) -> bool:
        return self._cleaner_abort.is_set()

    @property
    def _segments(self) -> list[LogSegment]:
        return self._layout[0]

    @property
    def size_bytes(self) -> int:
        return sum(s.size for s in self._layout[0])

    # ---- introspection --------------------------------------------------------------------------

    @property
    def segments(self) -> tuple[LogSegment, ...]:
        return tuple(self._segments)

    def __repr__(self) -> str:
        return (
            f"PartitionLog({self.directory.name}, start={self.log_start_offset}, "
            f"end={self.log_end_offset}, segments={len(self._segments)})"
        )


class _Graveyard:
    """Segments taken out of a log, files unlinked, descriptors still open.

    A read on the loop picks a segment from the layout and then preads it; retention or the
    cleaner may remove that segment from another thread in between. Keeping descriptors
    open for ``GRACE_S`` (monotonic time, whatever the log's clock says) lets such a read
    finish on the old data, and keeps a reused descriptor number from ever being read in
    its place. Safe across threads.
    """

    GRACE_S = 10.0

    def __init__(self) -> None:
        self._entries: list[tuple[float, LogSegment]] = []
        self._lock = threading.Lock()

    def bury(self, segments: list[LogSegment]) -> None:
        now = time.monotonic()
        with self._lock:
            self._entries.extend((now, segment) for segment in segments)

    def reap(self) -> None:
        """Close the segments removed more than ``GRACE_S`` ago."""
        limit = time.monotonic() - self.GRACE_S
        with self._lock:
            due = [segment for at, segment in self._entries if at <= limit]
            self._entries = [(at, segment) for at, segment in self._entries if at > limit]
        for segment in due:
            segment.close()

    def close_all(self) -> None:
        with self._lock:
            entries, self._entries = self._entries, []
        for _, segment in entries:
            segment.close()


def _floor_index(bases: list[int], offset: int) -> int:
    """Index of the segment whose base offset is the largest <= ``offset`` (0 if none)."""
    return max(bisect_right(bases, offset) - 1, 0)


def _first_record(
    segment: LogSegment,
    position: int,
    header: BatchHeader,
    min_offset: int,
    accept: Callable[[int], bool],
) -> tuple[int, int] | None:
    """(offset, timestamp) of the first record of a batch at/after ``min_offset`` whose
    timestamp is accepted. Records are decoded (and decompressed) only for this one batch;
    if that fails the batch itself answers with its base offset and max timestamp."""
    try:
        for record in iter_records(segment.read_batch(position, header)):
            if record.offset >= min_offset and accept(record.timestamp):
                return record.offset, record.timestamp
    except ValueError:
        return max(header.base_offset, min_offset), header.max_timestamp
    return None
