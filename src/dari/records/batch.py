"""Kafka RecordBatch v2 headers: parse, validate and rewrite the broker-owned fields in place.

The broker stores batches byte-for-byte as producers send them. Only the base offset, the
partition leader epoch and (for LogAppendTime topics) the max timestamp are rewritten, so the
hot path touches 61-byte headers and never the records inside.

Layout (big-endian)::

    0  baseOffset int64        27 baseTimestamp int64
    8  batchLength int32       35 maxTimestamp int64
    12 partitionLeaderEpoch    43 producerId int64
    16 magic int8              51 producerEpoch int16
    17 crc uint32 (CRC32C of bytes 21..end)
    21 attributes int16        53 baseSequence int32
    23 lastOffsetDelta int32   57 recordCount int32     61 records...
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import crc32c

HEADER_SIZE = 61
LOG_OVERHEAD = 12  # baseOffset + batchLength: the bytes not counted by batchLength
CRC_START = 21
MAGIC_V2 = 2

COMPRESSION_MASK = 0x07
TIMESTAMP_TYPE_MASK = 0x08  # set = LogAppendTime
TRANSACTIONAL_MASK = 0x10
CONTROL_MASK = 0x20

_HEADER = struct.Struct(">qiibIhiqqqhii")
_OFFSET = struct.Struct(">q")
_LEN = struct.Struct(">qi")
_EPOCH = struct.Struct(">i")
_CRC = struct.Struct(">I")
_MAX_TS = struct.Struct(">q")
_ATTR = struct.Struct(">h")


class CorruptRecordError(ValueError):
    """The bytes are not a sequence of valid v2 record batches (Kafka CORRUPT_MESSAGE)."""


class UnsupportedMagicError(CorruptRecordError):
    """A batch of the pre-v2 message formats, which this broker does not store."""


class BatchHeader(NamedTuple):
    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int

    @property
    def size(self) -> int:
        """Bytes this batch occupies on the wire and on disk."""
        return self.batch_length + LOG_OVERHEAD

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    @property
    def compression(self) -> int:
        return self.attributes & COMPRESSION_MASK

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & CONTROL_MASK)

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & TRANSACTIONAL_MASK)

    @property
    def log_append_time(self) -> bool:
        return bool(self.attributes & TIMESTAMP_TYPE_MASK)


def parse_header(buf: bytes | bytearray | memoryview, pos: int = 0) -> BatchHeader:
    """Decode the fixed header at ``pos``; the caller guarantees HEADER_SIZE bytes are there."""
    return BatchHeader._make(_HEADER.unpack_from(buf, pos))


def pack_header_into(buf: bytearray, pos: int, header: BatchHeader) -> None:
    """Write ``header`` at ``pos`` as it stands (the CRC field is not recomputed)."""
    _HEADER.pack_into(buf, pos, *header)


def seal_crc(buf: bytearray, pos: int = 0) -> int:
    """Compute the CRC32C of the batch at ``pos`` (sized by its batchLength) and store it."""
    size = _LEN.unpack_from(buf, pos)[1] + LOG_OVERHEAD
    crc = compute_crc(buf, pos, size)
    _CRC.pack_into(buf, pos + 17, crc)
    return crc


def peek_size(buf: bytes | bytearray | memoryview, pos: int = 0) -> int | None:
    """Total size of the batch at ``pos``, or None when fewer than 12 bytes remain."""
    if len(buf) - pos < LOG_OVERHEAD:
        return None
    return _LEN.unpack_from(buf, pos)[1] + LOG_OVERHEAD


def compute_crc(buf: bytes | bytearray | memoryview, pos: int, size: int) -> int:
    return crc32c.crc32c(memoryview(buf)[pos + CRC_START : pos + size])


def validate(buf: bytes | bytearray | memoryview) -> list[BatchHeader]:
    """Check that ``buf`` is whole v2 batches with correct CRCs, returning their headers.

    Raises CorruptRecordError on a short, oversized, non-v2 or CRC-mismatching batch.
    """
    view = memoryview(buf)
    end = len(view)
    pos = 0
    headers: list[BatchHeader] = []
    while pos < end:
        if end - pos < HEADER_SIZE:
            raise CorruptRecordError(f"truncated batch header at byte {pos}")
        header = parse_header(view, pos)
        if header.magic != MAGIC_V2:
            raise UnsupportedMagicError(f"message format v{header.magic} is not supported")
        size = header.size
        if header.batch_length < HEADER_SIZE - LOG_OVERHEAD or pos + size > end:
            raise CorruptRecordError(f"batch length {header.batch_length} at byte {pos} is invalid")
        if compute_crc(view, pos, size) != header.crc:
            raise CorruptRecordError(f"CRC mismatch in batch at byte {pos}")
        if header.last_offset_delta < 0 or header.record_count < 0:
            raise CorruptRecordError(f"negative record count in batch at byte {pos}")
        headers.append(header)
        pos += size
    return headers


def valid_prefix(buf: bytes | bytearray | memoryview) -> tuple[int, list[BatchHeader]]:
    """Length of the longest prefix of whole, CRC-valid v2 batches, and their headers.

    Recovery uses it to find where a torn or corrupt tail starts.
    """
    view = memoryview(buf)
    end = len(view)
    pos = 0
    headers: list[BatchHeader] = []
    while end - pos >= HEADER_SIZE:
        header = parse_header(view, pos)
        size = header.size
        if (
            header.magic != MAGIC_V2
            or header.batch_length < HEADER_SIZE - LOG_OVERHEAD
            or pos + size > end
            or compute_crc(view, pos, size) != header.crc
        ):
            break
        headers.append(header)
        pos += size
    return pos, headers


def assign_offsets(
    buf: bytearray,
    headers: list[BatchHeader],
    base_offset: int,
    leader_epoch: int = 0,
    append_time: int | None = None,
) -> int:
    """Rewrite base offsets (and epoch, and LogAppendTime) of validated batches in ``buf``.

    Returns the offset after the last record. Base offset and epoch lie outside the CRC; the
    max timestamp and attributes do not, so LogAppendTime recomputes each batch's CRC.
    """
    pos = 0
    offset = base_offset
    for header in headers:
        _OFFSET.pack_into(buf, pos, offset)
        _EPOCH.pack_into(buf, pos + 12, leader_epoch)
        if append_time is not None:
            _ATTR.pack_into(buf, pos + 21, header.attributes | TIMESTAMP_TYPE_MASK)
            _MAX_TS.pack_into(buf, pos + 35, append_time)
            _CRC.pack_into(buf, pos + 17, compute_crc(buf, pos, header.size))
        offset += header.last_offset_delta + 1
        pos += header.size
    return offset
