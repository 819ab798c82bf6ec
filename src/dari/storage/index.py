"""Sparse indexes of one segment: Kafka's ``.index`` and ``.timeindex`` files.

Both are derived data. Their entries live in memory (``array`` + ``bisect``) so lookups never
touch the disk; new entries are appended to the file as they are made. On load a file is
sanity-checked and any inconsistency raises ``IndexCorruptError``, upon which the segment
rebuilds the index from its log (Kafka's ``OffsetIndex``/``TimeIndex`` sanityCheck).

File formats (big-endian, as Kafka writes them):
  .index      int32 offset relative to the segment base, int32 byte position in the .log
  .timeindex  int64 timestamp, int32 relative offset; timestamps strictly increase
"""

from __future__ import annotations

import os
import struct
import sys
from array import array
from bisect import bisect_right
from pathlib import Path

_OFFSET_ENTRY = struct.Struct(">ii")
_TIME_ENTRY = struct.Struct(">qi")


class IndexCorruptError(Exception):
    """An index file is missing or inconsistent and must be rebuilt from the log."""


def _be_array(typecode: str, raw: bytes) -> array:
    values = array(typecode)
    values.frombytes(raw)
    if sys.byteorder == "little":
        values.byteswap()
    return values


class _IndexFile:
    """Append-only file of fixed-size entries; entries queue in ``_pending`` until written.

    Owned by its segment on the event loop thread; ``sync`` may run in a flush worker.
    """

    entry_size = 0

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pending = bytearray()
        self._fd: int | None = None

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        return self._fd

    def write_pending_if_over(self, threshold: int) -> None:
        """Entries are derived data, rebuilt after a crash, so they may be written lazily."""
        if len(self._pending) >= threshold:
            self.write_pending()

    def write_pending(self) -> None:
        if self._pending:
            data = self._pending
            self._pending = bytearray()
            _write_all(self._open(), data)

    def rewrite(self, data: bytes) -> None:
        """Replace the whole file (after a rebuild or truncation)."""
        self._pending = bytearray()
        fd = self._open()
        os.ftruncate(fd, 0)
        _write_all(fd, data)

    def sync(self) -> None:
        self.write_pending()
        os.fsync(self._open())

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @classmethod
    def _read_checked(cls, path: Path) -> bytes:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise IndexCorruptError(f"{path.name} is missing") from None
        if len(raw) % cls.entry_size:
            raise IndexCorruptError(
                f"{path.name} size {len(raw)} is not a multiple of {cls.entry_size}"
            )
        return raw


class OffsetIndex(_IndexFile):
    """Relative offset -> byte position of the batch whose last offset it is."""

    entry_size = _OFFSET_ENTRY.size

    def __init__(self, path: Path, base_offset: int) -> None:
        super().__init__(path)
        self.base_offset = base_offset
        self.offsets = array("i")
        self.positions = array("i")

    def __len__(self) -> int:
        return len(self.offsets)

    @classmethod
    def load(cls, path: Path, base_offset: int, log_size: int) -> OffsetIndex:
        raw = cls._read_checked(path)
        flat = _be_array("i", raw)
        index = cls(path, base_offset)
        index.offsets = flat[0::2]
        index.positions = flat[1::2]
        previous_offset = previous_position = -1
        for offset, position in zip(index.offsets, index.positions, strict=True):
            if offset <= previous_offset or position <= previous_position:
                raise IndexCorruptError(f"{path.name} entries do not increase")
            if position >= log_size:
                raise IndexCorruptError(f"{path.name} points at {position}, past the log end")
            previous_offset, previous_position = offset, position
        return index

    def append(self, relative_offset: int, position: int) -> None:
        self.offsets.append(relative_offset)
        self.positions.append(position)
        self._pending += _OFFSET_ENTRY.pack(relative_offset, position)

    def lookup(self, offset: int) -> int:
        """Position of the indexed batch with the largest last offset <= ``offset``, else 0."""
        i = bisect_right(self.offsets, offset - self.base_offset) - 1
        return self.positions[i] if i >= 0 else 0

    def floor_position(self, position: int) -> int:
        """The largest indexed batch position <= ``position`` (0 when none): a batch boundary."""
        i = bisect_right(self.positions, position) - 1
        return self.positions[i] if i >= 0 else 0

    @property
    def last_position(self) -> int:
        return self.positions[-1] if self.positions else 0

    def reset(self, offsets: array, positions: array) -> None:
        self.offsets, self.positions = offsets, positions
        data = bytearray()
        for entry in zip(offsets, positions, strict=True):
            data += _OFFSET_ENTRY.pack(*entry)
        self.rewrite(bytes(data))


class TimeIndex(_IndexFile):
    """Max timestamp so far -> relative offset of the batch that first reached it."""

    entry_size = _TIME_ENTRY.size

    def __init__(self, path: Path, base_offset: int) -> None:
        super().__init__(path)
        self.base_offset = base_offset
        self.timestamps = array("q")
        self.offsets = array("i")

    def __len__(self) -> int:
        return len(self.timestamps)

    @classmethod
    def load(cls, path: Path, base_offset: int) -> TimeIndex:
        raw = cls._read_checked(path)
        index = cls(path, base_offset)
        previous_ts = previous_offset = -1 << 63
        for timestamp, offset in _TIME_ENTRY.iter_unpack(raw):
            if timestamp <= previous_ts or offset < previous_offset or offset < 0:
                raise IndexCorruptError(f"{path.name} entries do not increase")
            index.timestamps.append(timestamp)
            index.offsets.append(offset)
            previous_ts, previous_offset = timestamp, offset
        return index

    def maybe_append(self, timestamp: int, relative_offset: int) -> None:
        """Add an entry only when it raises the maximum (Kafka's TimeIndex.maybeAppend)."""
        if self.timestamps and (
            timestamp <= self.timestamps[-1] or relative_offset < self.offsets[-1]
        ):
            return
        self.timestamps.append(timestamp)
        self.offsets.append(relative_offset)
        self._pending += _TIME_ENTRY.pack(timestamp, relative_offset)

    def lookup(self, timestamp: int) -> int | None:
        """Absolute offset of the entry with the largest timestamp <= ``timestamp``."""
        i = bisect_right(self.timestamps, timestamp) - 1
        return self.base_offset + self.offsets[i] if i >= 0 else None

    @property
    def last_entry(self) -> tuple[int, int] | None:
        """(timestamp, absolute offset) of the last entry."""
        if not self.timestamps:
            return None
        return self.timestamps[-1], self.base_offset + self.offsets[-1]

    def reset(self, timestamps: array, offsets: array) -> None:
        self.timestamps, self.offsets = timestamps, offsets
        data = bytearray()
        for entry in zip(timestamps, offsets, strict=True):
            data += _TIME_ENTRY.pack(*entry)
        self.rewrite(bytes(data))


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
