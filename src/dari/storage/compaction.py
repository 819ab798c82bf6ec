"""The log cleaner: compaction of closed segments (Kafka's ``LogCleaner``, cleanup.policy=compact).

A pass over one log:

1. **Plan.** The cleanable range runs from the log start to the *first uncleanable offset*: the
   active segment's base, or the first dirty segment holding records newer than
   min.compaction.lag.ms. The cleaner checkpoint's ``clean_offset`` splits it into the clean
   part (compacted before) and the dirty part. A pass is due when dirty bytes / cleanable
   bytes exceed min.cleanable.dirty.ratio, when the oldest dirty segment is older than
   max.compaction.lag.ms, or when tombstones kept by an earlier pass have expired.
2. **Map.** The dirty segments are scanned into key -> offset of its newest record.
3. **Copy.** Every segment of the range is copied, in groups of adjacent segments whose total
   size fits segment.bytes (and offsets fit int32 relative offsets), keeping a record when
   it is the newest of its key. Batches keep their base offset, last offset delta, producer
   id/epoch/base sequence, leader epoch, compression codec and timestamp type; a batch all of
   whose records survive is copied byte for byte, others are rebuilt from the surviving
   records (so offsets keep their gaps). A group of one segment that loses nothing is left
   alone.
4. **Swap**, crash-safe: ``<base>.log.cleaned`` (+ indexes) is written and fsynced, the swap
   is recorded in the cleaner checkpoint, the files are renamed to ``.swap`` (the .log last:
   the commit point), the replaced segments are deleted and the ``.swap`` files renamed to
   their final names. ``loader.complete_interrupted_swaps`` finishes a committed swap after a
   crash; anything uncommitted is discarded, so no step loses a record.
5. **Checkpoint** the new ``clean_offset`` and the tombstone marks.

Rules worth knowing:

* Tombstones (null values) live on for delete.retention.ms after the pass that first saw them
  in the dirty part (Kafka's delete horizon); the checkpoint keeps (offset range, time) marks
  instead of rewriting batch headers.
* Records without a key are always kept: the broker should refuse them on compacted topics
  (Kafka answers INVALID_RECORD) and the cleaner never decides on their behalf. (Kafka's own
  cleaner drops such records.)
* Control batches (transaction markers) are kept as they are, and a batch that loses all its
  records is kept empty when it is its producer's last batch in the range, so producer
  state (id, epoch, sequence) survives compaction, or when it ends the log (the active
  segment is empty after a time-based roll): a consumer positioned there then still gets a
  batch to step over instead of an empty fetch below the log end. Records of aborted
  transactions are compacted like any other record: the storage layer does not track
  transactions.
* The key map is a dict; ``max_map_keys`` is a soft cap on the keys mapped in one pass (the
  rest of the dirty part waits for the next pass).

Threading: ``LogCleaner.clean`` runs in a worker thread while the event loop appends to and
reads from the same log. It only reads closed segments, swaps them through
``PartitionLog.swap_segments`` (one atomic layout change under the log's lock) and keeps the
replaced segments' descriptors open until the next pass, so a read in flight completes.
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from dari.records.batch import BatchHeader, CorruptRecordError, parse_header
from dari.records.builder import rebuild_batch
from dari.records.records import iter_records, records_section, scan_keys
from dari.storage.files import fsync_dir
from dari.storage.loader import CLEANED_SUFFIX, SWAP_SUFFIX, CleanerCheckpoint
from dari.storage.log import PartitionLog
from dari.storage.retention import segment_timestamp
from dari.storage.segment import LogSegment

log = logging.getLogger(__name__)

_INT32_MAX = (1 << 31) - 1
MAX_MARKS = 64  # tombstone marks kept per log; older ones merge (keeping tombstones longer)
WRITE_BUFFER = 1 << 20

Buffer = bytes | bytearray | memoryview


@dataclass
class CleanStats:
    """What one ``LogCleaner.clean`` call did. ``cleaned`` is False when nothing was due, the
    log is not compacted, or another cleaning or retention pass held the log."""

    cleaned: bool = False
    aborted: bool = False
    dirty_ratio: float = 0.0
    clean_offset: int = 0
    segments_read: int = 0
    segments_written: int = 0  # cleaned segments swapped in
    bytes_read: int = 0  # size of the segments copied (the cleanable range)
    bytes_written: int = 0  # size of the cleaned segments swapped in
    bytes_saved: int = 0  # size of the segments they replaced minus bytes_written
    records_read: int = 0
    records_removed: int = 0
    tombstones_removed: int = 0
    batches_rewritten: int = 0
    seconds: float = 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes_read / 1e6 / self.seconds if self.seconds else 0.0


class CleanAbortedError(Exception):
    """The log is being closed, deleted or truncated: the pass stopped before its next swap."""


@dataclass
class _Plan:
    segments: list[LogSegment]  # closed segments from the log start to the first uncleanable
    first_dirty: int  # index in ``segments``
    end_offset: int  # first uncleanable offset
    dirty_ratio: float
    due: bool


@dataclass
class _Pass:
    """Per-pass state shared by the copy steps."""

    now_ms: int
    clean_offset: int
    delete_retention_ms: int
    latest: dict[bytes, int]
    producer_last: dict[int, int]
    marks: tuple[tuple[int, int], ...]
    mark_ends: list[int]
    stats: CleanStats
    tail_offset: int = -1  # the log's last offset when the range reaches the log end
    marks_kept: set[int] = field(default_factory=set)
    new_tombstones: bool = False


class LogCleaner:
    """Compacts logs whose cleanup policy includes "compact".

    Stateless between calls apart from ``uncleanable`` (logs whose cleaning hit corrupt data
    and are skipped from then on, as Kafka marks partitions uncleanable), so one instance can
    serve every log; calls for different logs may run in parallel threads, calls for the same
    log are serialised by the log (a second one returns at once). ``step_hook`` is called with
    the name of each durable step of a swap (tests use it to take crash snapshots).
    """

    def __init__(
        self,
        *,
        max_map_keys: int = 1_000_000,
        read_chunk_bytes: int = 1 << 20,
        step_hook: Callable[[str], None] | None = None,
    ) -> None:
        self.max_map_keys = max_map_keys
        self.read_chunk_bytes = read_chunk_bytes
        self.step_hook = step_hook
        self.uncleanable: set[str] = set()

    # ---- deciding ---------------------------------------------------------------------------

    def needs_cleaning(self, plog: PartitionLog, now_ms: int) -> bool:
        """Whether ``clean(plog, now_ms)`` would do work: the log is compacted and its dirty
        ratio, max.compaction.lag.ms or an expired tombstone calls for a pass."""
        if plog.closed or not plog.config.compact or str(plog.directory) in self.uncleanable:
            return False
        plan = self._plan(plog, now_ms)
        return plan is not None and plan.due

    def dirty_ratio(self, plog: PartitionLog, now_ms: int) -> float:
        plan = self._plan(plog, now_ms)
        return plan.dirty_ratio if plan is not None else 0.0

    def _plan(self, plog: PartitionLog, now_ms: int) -> _Plan | None:
        config = plog.config
        segments = plog.segments
        checkpoint = plog.cleaner_checkpoint
        closed = [s for s in segments[:-1] if s.next_offset > plog.log_start_offset]
        if not closed:
            return None
        clean_offset = checkpoint.clean_offset
        lag_limit = now_ms - config.min_compaction_lag_ms
        end = len(closed)
        if config.min_compaction_lag_ms > 0:
            for i, segment in enumerate(closed):
                if segment.next_offset > clean_offset and segment_timestamp(segment) > lag_limit:
                    end = i
                    break
        cleanable = closed[:end]
        end_offset = closed[end].base_offset if end < len(closed) else segments[-1].base_offset
        first_dirty = len(cleanable)
        for i, segment in enumerate(cleanable):
            if segment.next_offset > clean_offset:
                first_dirty = i
                break
        clean_bytes = sum(s.size for s in cleanable[:first_dirty])
        dirty_bytes = sum(s.size for s in cleanable[first_dirty:])
        total = clean_bytes + dirty_bytes
        ratio = dirty_bytes / total if total else 0.0
        due = False
        if dirty_bytes:
            oldest = cleanable[first_dirty].rolling_ms
            due = (
                ratio > config.min_cleanable_dirty_ratio
                or now_ms - oldest > config.max_compaction_lag_ms
            )
        if cleanable and not due:
            retention = config.delete_retention_ms
            due = any(at + retention <= now_ms for _, at in checkpoint.marks)
        return _Plan(cleanable, first_dirty, end_offset, ratio, due)

    # ---- cleaning ---------------------------------------------------------------------------

    def clean(self, plog: PartitionLog, now_ms: int, *, force: bool = False) -> CleanStats:
        """Compact ``plog`` once if a pass is due (any cleanable range when ``force``).

        Call from a worker thread; blocking I/O throughout. Raises CorruptRecordError (and
        marks the log uncleanable) on corrupt data, OSError on I/O failure; either way what is
        on disk stays a valid log.
        """
        started = time.perf_counter()
        stats = CleanStats(clean_offset=plog.cleaner_checkpoint.clean_offset)
        with plog.cleaning() as acquired:
            if not acquired or not plog.config.compact:
                return stats
            if str(plog.directory) in self.uncleanable:
                return stats
            plan = self._plan(plog, now_ms)
            if plan is None or not plan.segments or not (plan.due or force):
                return stats
            stats.dirty_ratio = plan.dirty_ratio
            try:
                self._clean(plog, plan, now_ms, stats)
            except CleanAbortedError:
                stats.aborted = True
            except CorruptRecordError:
                self.uncleanable.add(str(plog.directory))
                log.exception("cleaning %s hit corrupt data; not cleaning it again", plog)
                raise
        stats.seconds = time.perf_counter() - started
        return stats

    def _clean(self, plog: PartitionLog, plan: _Plan, now_ms: int, stats: CleanStats) -> None:
        checkpoint = plog.cleaner_checkpoint
        latest: dict[bytes, int] = {}
        producer_last: dict[int, int] = {}
        segments = plan.segments
        for segment in segments[: plan.first_dirty]:
            for _, header in segment.iter_headers():
                if header.producer_id >= 0:
                    producer_last[header.producer_id] = header.base_offset
        mapped = plan.first_dirty
        for segment in segments[plan.first_dirty :]:
            if mapped > plan.first_dirty and len(latest) >= self.max_map_keys:
                break
            self._map_segment(plog, segment, latest, producer_last)
            mapped += 1
        if mapped < len(segments):
            end_offset = segments[mapped].base_offset
            segments = segments[:mapped]
        else:
            end_offset = plan.end_offset
        state = _Pass(
            now_ms=now_ms,
            clean_offset=checkpoint.clean_offset,
            delete_retention_ms=plog.config.delete_retention_ms,
            latest=latest,
            producer_last=producer_last,
            marks=checkpoint.marks,
            mark_ends=[upto for upto, _ in checkpoint.marks],
            stats=stats,
        )
        if end_offset == plog.log_end_offset:
            state.tail_offset = end_offset - 1
        groups = _group(segments, plog.config.segment_bytes)
        for i, group in enumerate(groups):
            following = groups[i + 1][0].base_offset if i + 1 < len(groups) else end_offset
            self._clean_group(plog, group, following, state)
        self._finish(plog, end_offset, state)

    def _map_segment(
        self,
        plog: PartitionLog,
        segment: LogSegment,
        latest: dict[bytes, int],
        producer_last: dict[int, int],
    ) -> None:
        for header, batch in segment.iter_batches(self.read_chunk_bytes):
            if plog.cleaner_abort_requested:
                raise CleanAbortedError(str(plog))
            if header.producer_id >= 0:
                producer_last[header.producer_id] = header.base_offset
            if header.is_control:
                continue
            for offset, key, _ in scan_keys(records_section(batch, header), header):
                if key is not None:
                    latest[key] = offset

    def _clean_group(
        self, plog: PartitionLog, group: list[LogSegment], end_offset: int, state: _Pass
    ) -> None:
        """Copy ``group`` into one cleaned segment and swap it in (unless nothing changed)."""
        stats = state.stats
        output: _Output | None = None
        if len(group) > 1:
            output = _Output(plog, group[0].base_offset, self.read_chunk_bytes)
        try:
            for segment in group:
                stats.segments_read += 1
                stats.bytes_read += segment.size
                for header, batch in segment.iter_batches(self.read_chunk_bytes):
                    if plog.cleaner_abort_requested:
                        raise CleanAbortedError(str(plog))
                    kept = self._filter(header, batch, state)
                    if output is None:
                        if kept is batch:
                            continue  # unchanged so far: nothing to write yet
                        output = _Output(plog, group[0].base_offset, self.read_chunk_bytes)
                        output.copy_prefix(segment, header.base_offset)
                    if kept is not None:
                        output.add(header if kept is batch else parse_header(kept), kept)
            if output is None:
                return  # a single segment that keeps every batch: leave it as it is
            cleaned = output.finish()
        except BaseException:
            if output is not None:
                output.discard()
            raise
        self._swap(plog, group, cleaned, end_offset)
        stats.segments_written += 1
        stats.bytes_written += cleaned.size
        stats.bytes_saved += sum(s.size for s in group) - cleaned.size

    def _filter(self, header: BatchHeader, batch: memoryview, state: _Pass) -> Buffer | None:
        """The batch to write in place of ``batch``: itself when every record stays, a
        rebuilt batch holding the survivors, or None to drop it."""
        stats = state.stats
        stats.records_read += header.record_count
        if header.is_control:
            return batch
        records = scan_keys(records_section(batch, header), header)
        keep = [self._keep(offset, key, tomb, state) for offset, key, tomb in records]
        removed = keep.count(False)
        if not removed:
            return batch
        stats.records_removed += removed
        if removed == len(keep):
            if (
                state.producer_last.get(header.producer_id) != header.base_offset
                and header.last_offset != state.tail_offset
            ):
                return None
            # Kept empty: the producer's last batch (for its producer state), or the batch
            # ending the log (so a consumer there is not left facing a gap up to the end).
            survivors = []
        else:
            survivors = [r for r, wanted in zip(iter_records(batch), keep, strict=True) if wanted]
        stats.batches_rewritten += 1
        return rebuild_batch(header, survivors)

    @staticmethod
    def _keep(offset: int, key: bytes | None, tombstone: bool, state: _Pass) -> bool:
        if key is None:
            return True
        newest = state.latest.get(key)
        if newest is not None and offset < newest:
            return False
        if not tombstone:
            return True
        if offset >= state.clean_offset:
            state.new_tombstones = True  # first seen now: the delete horizon starts today
            return True
        mark = bisect_right(state.mark_ends, offset)
        if (
            mark < len(state.marks)
            and state.now_ms < state.marks[mark][1] + state.delete_retention_ms
        ):
            state.marks_kept.add(mark)
            return True
        state.stats.tombstones_removed += 1
        return False

    def _swap(
        self, plog: PartitionLog, old: list[LogSegment], new: LogSegment, end_offset: int
    ) -> None:
        """Replace ``old`` (the segments with base offsets in [new base, end_offset)) with the
        fsynced ``new`` following the .cleaned -> .swap -> final protocol."""
        step = self.step_hook or _no_step
        step("cleaned")
        if plog.cleaner_abort_requested:
            new.discard()
            raise CleanAbortedError(str(plog))
        checkpoint = plog.cleaner_checkpoint
        try:
            plog.save_cleaner_checkpoint(
                replace(
                    checkpoint,
                    compacted_end=max(checkpoint.compacted_end, end_offset),
                    swap_base=new.base_offset,
                    swap_end=end_offset,
                )
            )
            step("recorded")
            new.rename_files(SWAP_SUFFIX)
            fsync_dir(plog.directory)
        except BaseException:
            new.discard()
            raise
        step("committed")
        plog.swap_segments(old, new)
        for segment in old:
            segment.delete_files()
            step(f"deleted {segment.base_offset}")
        fsync_dir(plog.directory)
        new.rename_files("")
        fsync_dir(plog.directory)
        step("swapped")

    def _finish(self, plog: PartitionLog, end_offset: int, state: _Pass) -> None:
        marks = [m for i, m in enumerate(state.marks) if i in state.marks_kept]
        if state.new_tombstones:
            marks.append((end_offset, state.now_ms))
        while len(marks) > MAX_MARKS:  # merge the oldest two, keeping their tombstones longer
            (_, first_at), (upto, second_at) = marks[0], marks[1]
            marks[:2] = [(upto, max(first_at, second_at))]
        checkpoint: CleanerCheckpoint = plog.cleaner_checkpoint
        clean_offset = max(checkpoint.clean_offset, end_offset)
        plog.save_cleaner_checkpoint(
            replace(
                checkpoint,
                clean_offset=clean_offset,
                compacted_end=max(checkpoint.compacted_end, clean_offset),
                marks=tuple(marks),
            )
        )
        state.stats.clean_offset = clean_offset
        state.stats.cleaned = True
        (self.step_hook or _no_step)("checkpointed")


def _no_step(name: str) -> None:
    pass


def _group(segments: list[LogSegment], max_bytes: int) -> list[list[LogSegment]]:
    """Adjacent segments whose sizes add up to at most ``max_bytes`` and whose offsets fit
    int32 relative offsets, each becoming one cleaned segment (Kafka's groupSegmentsBySize)."""
    groups: list[list[LogSegment]] = []
    current: list[LogSegment] = []
    size = 0
    for segment in segments:
        if current and (
            size + segment.size > max_bytes
            or segment.next_offset - 1 - current[0].base_offset > _INT32_MAX
        ):
            groups.append(current)
            current, size = [], 0
        current.append(segment)
        size += segment.size
    if current:
        groups.append(current)
    return groups


class _Output:
    """One cleaned segment being written (``<base>.log.cleaned``), in large writes."""

    def __init__(self, plog: PartitionLog, base_offset: int, flush_bytes: int) -> None:
        self.segment = LogSegment.create_temporary(plog.directory, base_offset, CLEANED_SUFFIX)
        self._interval = plog.config.index_interval_bytes
        self._flush_bytes = max(flush_bytes, WRITE_BUFFER)
        self._buf = bytearray()
        self._headers: list[BatchHeader] = []

    def add(self, header: BatchHeader, data: Buffer) -> None:
        self._buf += data
        self._headers.append(header)
        if len(self._buf) >= self._flush_bytes:
            self._flush()

    def copy_prefix(self, source: LogSegment, before_offset: int) -> None:
        """Copy the batches of ``source`` below ``before_offset`` unchanged."""
        for header, batch in source.iter_batches(self._flush_bytes):
            if header.base_offset >= before_offset:
                break
            self.add(header, batch)

    def _flush(self) -> None:
        if self._headers:
            self.segment.append_batches(self._buf, self._headers, self._interval)
            self._buf = bytearray()
            self._headers = []

    def finish(self) -> LogSegment:
        self._flush()
        self.segment.seal()
        self.segment.sync(indexes=True)
        return self.segment

    def discard(self) -> None:
        self.segment.discard()


__all__ = ["CleanAbortedError", "CleanStats", "LogCleaner"]
