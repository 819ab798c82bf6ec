"""One log segment: ``<base offset>.log`` with its ``.index`` and ``.timeindex``.

The ``.log`` holds RecordBatch v2 bytes exactly as appended. A segment knows its size, the
offset after its last batch and its largest timestamp, keeps both sparse indexes in memory
and can rebuild them (and cut off a torn or corrupt tail) from the log (Kafka's
``LogSegment.recover``).

Offsets inside a segment are contiguous, except in segments rewritten by the log cleaner
(``compacted``), where batches keep their original offsets and gaps are expected.
"""

from __future__ import annotations

import os
import threading
from array import array
from collections.abc import Iterator
from pathlib import Path

from dari.records.batch import (
    HEADER_SIZE,
    LOG_OVERHEAD,
    MAGIC_V2,
    BatchHeader,
    CorruptRecordError,
    parse_header,
    peek_size,
    valid_prefix,
)
from dari.storage.index import IndexCorruptError, OffsetIndex, TimeIndex, _write_all

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIME_INDEX_SUFFIX = ".timeindex"
SCAN_CHUNK = 16 * 1024
RECOVER_CHUNK = 8 * 1024 * 1024
NO_TIMESTAMP = -1
INDEX_WRITE_BATCH = 4096  # index entries reach their file in writes of this many bytes
_MIN_BATCH_LENGTH = HEADER_SIZE - LOG_OVERHEAD
_INT32_MAX = (1 << 31) - 1


def segment_name(base_offset: int) -> str:
    return f"{base_offset:020d}"


class LogSegment:
    """A segment of one PartitionLog.

    Owned by that log on the event loop thread: appends, reads, truncation and deletion happen
    there. ``sync`` may run concurrently in a flush worker thread; ``_io_lock`` only keeps
    ``close`` from closing a descriptor under a running fsync.
    """

    def __init__(
        self, directory: Path, base_offset: int, fd: int, size: int, suffix: str = ""
    ) -> None:
        self.directory = directory
        self.base_offset = base_offset
        self.fd = fd
        self.size = size
        stem = segment_name(base_offset)
        self.log_path = directory / (stem + LOG_SUFFIX + suffix)
        self.offset_index = OffsetIndex(directory / (stem + INDEX_SUFFIX + suffix), base_offset)
        self.time_index = TimeIndex(directory / (stem + TIME_INDEX_SUFFIX + suffix), base_offset)
        # Rewritten by the cleaner: batches keep their offsets, so gaps between them are valid.
        self.compacted = False
        self.next_offset = base_offset
        self.max_timestamp = NO_TIMESTAMP
        self.offset_of_max_timestamp = base_offset  # base offset of the batch that reached it
        self.rolling_ms = 0  # when the segment got its first batch; drives segment.ms
        self._bytes_since_index = 0
        self._io_lock = threading.Lock()
        self.closed = False
        self.deleted = False

    # ---- lifecycle -------------------------------------------------------------------------

    @classmethod
    def create(cls, directory: Path, base_offset: int) -> LogSegment:
        path = directory / (segment_name(base_offset) + LOG_SUFFIX)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        segment = cls(directory, base_offset, fd, 0)
        segment.offset_index.rewrite(b"")
        segment.time_index.rewrite(b"")
        return segment

    @classmethod
    def create_temporary(cls, directory: Path, base_offset: int, suffix: str) -> LogSegment:
        """A new compacted segment whose three files carry ``suffix`` (e.g. ".cleaned") until
        ``rename_files`` gives them their final names; any stale files of that name go first."""
        stem = segment_name(base_offset)
        for name in (LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX):
            (directory / (stem + name + suffix)).unlink(missing_ok=True)
        path = directory / (stem + LOG_SUFFIX + suffix)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        segment = cls(directory, base_offset, fd, 0, suffix)
        segment.compacted = True
        segment.offset_index.rewrite(b"")
        segment.time_index.rewrite(b"")
        return segment

    def rename_files(self, suffix: str) -> None:
        """Rename the three files to their base names plus ``suffix`` ("" = final names),
        indexes first and the .log last, so the .log's name alone tells recovery how far a
        swap got. Open descriptors follow the files."""
        stem = segment_name(self.base_offset)
        indexes = ((self.offset_index, INDEX_SUFFIX), (self.time_index, TIME_INDEX_SUFFIX))
        for index, name in indexes:
            target = self.directory / (stem + name + suffix)
            os.rename(index.path, target)
            index.path = target
        target = self.directory / (stem + LOG_SUFFIX + suffix)
        os.rename(self.log_path, target)
        self.log_path = target

    def discard(self) -> None:
        """Close and unlink a temporary segment that will not be used."""
        self.close()
        for path in (self.log_path, self.offset_index.path, self.time_index.path):
            path.unlink(missing_ok=True)

    @classmethod
    def open(cls, directory: Path, base_offset: int) -> LogSegment:
        path = directory / (segment_name(base_offset) + LOG_SUFFIX)
        fd = os.open(path, os.O_RDWR | os.O_APPEND)
        return cls(directory, base_offset, fd, os.fstat(fd).st_size)

    def load(self, now_ms: int) -> None:
        """Trust-but-verify load of a cleanly written segment.

        Reads both indexes, checks them, and scans only the batches after the last index entry
        to learn the next offset and max timestamp. Raises IndexCorruptError or
        CorruptRecordError when anything does not add up; the caller then calls ``recover``.
        """
        self.offset_index = OffsetIndex.load(self.offset_index.path, self.base_offset, self.size)
        self.time_index = TimeIndex.load(self.time_index.path, self.base_offset)
        start = self.offset_index.last_position
        expected = self.base_offset
        if len(self.offset_index):
            header = self._header_at(start)
            indexed = self.base_offset + self.offset_index.offsets[-1]
            if header is None or header.last_offset != indexed:
                raise IndexCorruptError(f"{self.offset_index.path.name} disagrees with the log")
            expected = header.base_offset
        last_entry = self.time_index.last_entry
        if last_entry is not None:
            self.max_timestamp, self.offset_of_max_timestamp = last_entry
        for position, header in self.iter_headers(start):
            if header.magic != MAGIC_V2 or not self._continues(header, expected):
                raise CorruptRecordError(f"unexpected batch at byte {position} of {self.log_path}")
            expected = header.next_offset
            if header.max_timestamp > self.max_timestamp:
                self.max_timestamp = header.max_timestamp
                self.offset_of_max_timestamp = header.base_offset
        self.next_offset = expected
        last_entry = self.time_index.last_entry
        if last_entry is not None and last_entry[1] >= self.next_offset:
            raise IndexCorruptError(f"{self.time_index.path.name} points past the log end")
        self._bytes_since_index = self.size - start
        self.rolling_ms = self._first_batch_time(now_ms)

    def recover(self, now_ms: int, index_interval_bytes: int) -> int:
        """Rebuild both indexes from the log, truncating at the first invalid batch.

        A batch is valid when it is whole, is v2, its CRC32C matches and its base offset
        continues the previous batch (or, in a compacted segment, follows it). Returns the
        number of bytes cut off.
        """
        offsets, positions = array("i"), array("i")
        timestamps, time_offsets = array("q"), array("i")
        base = self.base_offset
        expected = base
        max_ts, max_ts_offset = NO_TIMESTAMP, base
        since = 0
        pos = 0
        file_size = os.fstat(self.fd).st_size
        need = RECOVER_CHUNK
        stop = False
        while pos < file_size and not stop:
            chunk = os.pread(self.fd, min(need, file_size - pos), pos)
            length, headers = valid_prefix(chunk)
            for header in headers:
                if not self._continues(header, expected) or header.last_offset_delta < 0:
                    stop = True
                    break
                if header.max_timestamp > max_ts:
                    max_ts, max_ts_offset = header.max_timestamp, header.base_offset
                if since > index_interval_bytes:
                    offsets.append(header.last_offset - base)
                    positions.append(pos)
                    if not timestamps or max_ts > timestamps[-1]:
                        timestamps.append(max_ts)
                        time_offsets.append(max_ts_offset - base)
                    since = 0
                since += header.size
                pos += header.size
                expected = header.next_offset
            if stop or pos >= file_size:
                break
            # valid_prefix stopped early: either the chunk ended inside a batch (read on) or
            # the batch at ``pos`` is bad (truncate there).
            rest = len(chunk) - length
            more_on_disk = pos + rest < file_size
            size = peek_size(chunk, length)
            if more_on_disk and size is not None and rest < size and pos + size <= file_size:
                need = max(RECOVER_CHUNK, size)  # the batch continues past this chunk
            elif more_on_disk and rest < HEADER_SIZE:
                need = RECOVER_CHUNK  # the header continues past this chunk
            else:
                stop = True  # torn or corrupt batch at ``pos``
        truncated = file_size - pos
        if truncated:
            os.ftruncate(self.fd, pos)
        self.size = pos
        self.next_offset = expected
        self.max_timestamp, self.offset_of_max_timestamp = max_ts, max_ts_offset
        self._bytes_since_index = since
        self.offset_index.reset(offsets, positions)
        self.time_index.reset(timestamps, time_offsets)
        self.seal()
        self.rolling_ms = self._first_batch_time(now_ms)
        return truncated

    def _continues(self, header: BatchHeader, expected: int) -> bool:
        """Whether a batch may follow one that ended just before ``expected``."""
        if header.last_offset - self.base_offset > _INT32_MAX:
            return False
        if self.compacted:
            return header.base_offset >= expected
        return header.base_offset == expected

    def seal(self) -> None:
        """Make the time index's last entry the segment's max timestamp (on roll and close)."""
        if self.size:
            self.time_index.maybe_append(
                self.max_timestamp, self.offset_of_max_timestamp - self.base_offset
            )
        self.time_index.write_pending()
        self.offset_index.write_pending()

    def sync(self, indexes: bool) -> None:
        """fsync the log (and the index files when ``indexes``); safe from a worker thread."""
        with self._io_lock:
            if self.closed:
                return
            os.fsync(self.fd)
            if indexes:
                self.offset_index.sync()
                self.time_index.sync()

    def close(self) -> None:
        with self._io_lock:
            if self.closed:
                return
            self.closed = True
            self.offset_index.close()
            self.time_index.close()
            os.close(self.fd)

    def delete(self) -> None:
        self.delete_files()
        self.close()

    def delete_files(self) -> None:
        """Unlink the files but keep the descriptor readable until ``close``. The ``.deleted``
        rename makes a crash midway harmless: restart removes the leftovers."""
        with self._io_lock:
            if self.deleted:
                return
            self.deleted = True
        doomed = self.log_path.with_name(self.log_path.name + ".deleted")
        os.rename(self.log_path, doomed)
        for path in (self.offset_index.path, self.time_index.path, doomed):
            path.unlink(missing_ok=True)

    # ---- append ----------------------------------------------------------------------------

    def append(
        self,
        buf: bytes | bytearray | memoryview,
        headers: list[BatchHeader],
        base_offset: int,
        append_time: int | None,
        now_ms: int,
        index_interval_bytes: int,
    ) -> None:
        """Write already offset-assigned batches with one write, then update the indexes.

        ``headers`` are the batches' headers as validated (their base offsets are the
        producer's); the offsets written start at ``base_offset``.
        """
        position = self.size
        try:
            _write_all(self.fd, buf)
        except BaseException:
            os.ftruncate(self.fd, position)  # never leave half a batch behind
            raise
        if not position:
            self.rolling_ms = now_ms
        base = self.base_offset
        since = self._bytes_since_index
        max_ts, max_ts_offset = self.max_timestamp, self.offset_of_max_timestamp
        offset_index, time_index = self.offset_index, self.time_index
        offset = base_offset
        for header in headers:
            timestamp = header.max_timestamp if append_time is None else append_time
            if timestamp > max_ts:
                max_ts, max_ts_offset = timestamp, offset
            last = offset + header.last_offset_delta
            if since > index_interval_bytes:
                offset_index.append(last - base, position)
                time_index.maybe_append(max_ts, max_ts_offset - base)
                since = 0
            size = header.batch_length + LOG_OVERHEAD
            since += size
            position += size
            offset = last + 1
        self._bytes_since_index = since
        self.max_timestamp, self.offset_of_max_timestamp = max_ts, max_ts_offset
        self.size = position
        self.next_offset = offset
        offset_index.write_pending_if_over(INDEX_WRITE_BATCH)
        time_index.write_pending_if_over(INDEX_WRITE_BATCH)

    def append_batches(
        self,
        buf: bytes | bytearray | memoryview,
        headers: list[BatchHeader],
        index_interval_bytes: int,
    ) -> None:
        """Write batches that keep the offsets in their headers (the cleaner's output, where
        gaps are allowed) with one write, then update the indexes."""
        position = self.size
        _write_all(self.fd, buf)
        base = self.base_offset
        since = self._bytes_since_index
        max_ts, max_ts_offset = self.max_timestamp, self.offset_of_max_timestamp
        offset = self.next_offset
        for header in headers:
            if header.base_offset < offset:
                raise ValueError(f"offset {header.base_offset} after {offset - 1}")
            if header.max_timestamp > max_ts:
                max_ts, max_ts_offset = header.max_timestamp, header.base_offset
            if since > index_interval_bytes:
                self.offset_index.append(header.last_offset - base, position)
                self.time_index.maybe_append(max_ts, max_ts_offset - base)
                since = 0
            since += header.size
            position += header.size
            offset = header.next_offset
        self._bytes_since_index = since
        self.max_timestamp, self.offset_of_max_timestamp = max_ts, max_ts_offset
        self.size = position
        self.next_offset = offset
        self.offset_index.write_pending_if_over(INDEX_WRITE_BATCH)
        self.time_index.write_pending_if_over(INDEX_WRITE_BATCH)

    # ---- read ------------------------------------------------------------------------------

    def iter_batches(
        self, chunk_bytes: int = RECOVER_CHUNK
    ) -> Iterator[tuple[BatchHeader, memoryview]]:
        """Every batch (header and bytes) in order, read in chunks of about ``chunk_bytes``:
        one pread per chunk instead of one per batch, for whole-segment scans (the cleaner).
        Batches are not CRC-checked (closed segments were validated when written)."""
        end = self.size
        pos = 0
        while pos < end:
            want = min(max(chunk_bytes, HEADER_SIZE), end - pos)
            chunk = memoryview(_pread_all(self.fd, want, pos))
            rel = 0
            while len(chunk) - rel >= HEADER_SIZE:
                header = parse_header(chunk, rel)
                size = header.size
                if header.batch_length < _MIN_BATCH_LENGTH or pos + rel + size > end:
                    raise CorruptRecordError(f"bad batch at byte {pos + rel} of {self.log_path}")
                if rel + size > len(chunk):
                    if rel == 0:  # one batch larger than the chunk: read it whole
                        chunk = memoryview(_pread_all(self.fd, size, pos))
                    else:
                        break
                yield header, chunk[rel : rel + size]
                rel += size
            if rel == 0 and len(chunk) < HEADER_SIZE:
                raise CorruptRecordError(f"trailing bytes at {pos} of {self.log_path}")
            pos += rel

    def iter_headers(self, start: int = 0) -> Iterator[tuple[int, BatchHeader]]:
        """(position, header) of every batch from ``start`` (a batch boundary) to the end.

        Reads in chunks with pread and jumps over batch bodies, so a scan costs one syscall per
        chunk of small batches or per large batch.
        """
        end = self.size
        pos = start
        buf = b""
        buf_pos = start
        while pos + HEADER_SIZE <= end:
            rel = pos - buf_pos
            if rel + HEADER_SIZE > len(buf):
                buf = os.pread(self.fd, min(SCAN_CHUNK, end - pos), pos)
                buf_pos, rel = pos, 0
                if len(buf) < HEADER_SIZE:
                    raise CorruptRecordError(f"{self.log_path} is shorter than expected")
            header = parse_header(buf, rel)
            if header.batch_length < _MIN_BATCH_LENGTH or pos + header.size > end:
                raise CorruptRecordError(f"bad batch length at byte {pos} of {self.log_path}")
            yield pos, header
            pos += header.size
        if pos != end:
            raise CorruptRecordError(f"trailing bytes at {pos} of {self.log_path}")

    def find(self, offset: int) -> tuple[int, BatchHeader] | None:
        """The batch containing ``offset`` or the first one after it, located through the
        sparse index and a short forward scan; None when the segment holds nothing >= offset."""
        if offset >= self.next_offset:
            return None
        for position, header in self.iter_headers(self.offset_index.lookup(offset)):
            if header.last_offset >= offset:
                return position, header
        return None

    def read(self, offset: int, max_bytes: int) -> bytes | memoryview | None:
        """Whole batches from the one containing ``offset``: as many as fit in ``max_bytes``,
        but always at least one. None when the segment has nothing at or after ``offset``."""
        found = self.find(offset)
        if found is None:
            return None
        position, header = found
        first = header.size
        if first >= max_bytes:
            return _pread_all(self.fd, first, position)
        available = self.size - position
        if available <= max_bytes:
            return _pread_all(self.fd, available, position)
        data = _pread_all(self.fd, max_bytes, position)
        # Cut after the last whole batch; the index gives a batch boundary close to the cut, so
        # only the batches after it are walked.
        cut = max(self.offset_index.floor_position(position + max_bytes) - position, 0)
        while cut + LOG_OVERHEAD <= max_bytes:
            size = peek_size(data, cut)
            if size is None or cut + size > max_bytes:
                break
            cut += size
        return memoryview(data)[:cut]

    def read_batch(self, position: int, header: BatchHeader) -> bytes:
        return _pread_all(self.fd, header.size, position)

    def iter_timestamp_candidates(
        self, timestamp: int, min_offset: int
    ) -> Iterator[tuple[int, BatchHeader]]:
        """Batches with offsets >= ``min_offset`` whose max timestamp >= ``timestamp``, in
        order, starting from the time index's best guess instead of the segment start."""
        if self.max_timestamp < timestamp or min_offset >= self.next_offset:
            return
        start = 0
        indexed = self.time_index.lookup(timestamp)
        if indexed is not None:
            start = self.offset_index.lookup(indexed)
        start = max(start, self.offset_index.lookup(min_offset))
        for position, header in self.iter_headers(start):
            if header.last_offset >= min_offset and header.max_timestamp >= timestamp:
                yield position, header

    def truncate_to(self, offset: int, now_ms: int, index_interval_bytes: int) -> None:
        """Cut the log before the batch holding ``offset`` and rebuild the indexes."""
        found = self.find(offset)
        if found is not None:
            os.ftruncate(self.fd, found[0])
        self.recover(now_ms, index_interval_bytes)

    def _header_at(self, position: int) -> BatchHeader | None:
        if position + HEADER_SIZE > self.size:
            return None
        header = parse_header(os.pread(self.fd, HEADER_SIZE, position))
        if header.magic != MAGIC_V2:
            return None
        return header

    def _first_batch_time(self, now_ms: int) -> int:
        """segment.ms counts from the first batch; after a restart its max timestamp stands in
        for the (unknown) wall-clock time of the first append, as in Kafka."""
        header = self._header_at(0)
        if header is None or header.max_timestamp < 0:
            return now_ms
        return min(header.max_timestamp, now_ms)

    def __repr__(self) -> str:
        return f"LogSegment({self.log_path.name}, size={self.size}, next={self.next_offset})"


def _pread_all(fd: int, size: int, position: int) -> bytes:
    data = os.pread(fd, size, position)
    if len(data) == size:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = os.pread(fd, size - got, position + got)
        if not more:
            raise CorruptRecordError(f"log ended at byte {position + got}, expected {size} bytes")
        parts.append(more)
        got += len(more)
    return b"".join(parts)


__all__ = ["IndexCorruptError", "LogSegment", "segment_name"]
