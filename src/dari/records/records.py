"""Decode the records inside RecordBatch v2 batches.

The hot path never comes here: it moves whole batches. Compaction, internal topics and tests do,
so decoding is careful about bounds (any malformed byte raises CorruptRecordError) and reasonably
fast (one copy of the records section, varints decoded with plain integer loops).

Record layout (varints are zigzag-encoded)::

    length varint, attributes int8, timestampDelta varlong, offsetDelta varint,
    keyLength varint, key, valueLength varint, value,
    headerCount varint, [headerKeyLength varint, headerKey, headerValueLength varint, value]...
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from dari.records.batch import (
    HEADER_SIZE,
    LOG_OVERHEAD,
    MAGIC_V2,
    BatchHeader,
    CorruptRecordError,
    UnsupportedMagicError,
    parse_header,
)
from dari.records.compression import decompress

Buffer = bytes | bytearray | memoryview
Headers = tuple[tuple[str, bytes | None], ...]

_MAX_VARINT_SHIFT = 63  # a varlong has at most 10 bytes of 7 bits


@dataclass(frozen=True, slots=True)
class Record:
    """One decoded record with absolute offset and timestamp."""

    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: Headers = ()


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """Decode the zigzag varint at ``pos``; returns (value, position after it).

    Raises IndexError when the data ends inside the varint.
    """
    byte = data[pos]
    pos += 1
    if byte < 0x80:  # the common one-byte case
        return (byte >> 1) ^ -(byte & 1), pos
    result = byte & 0x7F
    shift = 7
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
        if shift > _MAX_VARINT_SHIFT:
            raise CorruptRecordError(f"varint longer than 10 bytes ending at byte {pos}")


def _read_bytes(data: bytes, pos: int, end: int) -> tuple[bytes | None, int]:
    """A length-prefixed byte string (length -1 means null) that must end by ``end``."""
    length, pos = read_varint(data, pos)
    if length < 0:
        if length != -1:
            raise CorruptRecordError(f"negative length {length}")
        return None, pos
    stop = pos + length
    if stop > end:
        raise CorruptRecordError("field overruns its record")
    return data[pos:stop], stop


def _decode_record(
    data: bytes, pos: int, base_offset: int, base_timestamp: int, fixed_timestamp: int | None
) -> tuple[Record, int]:
    length, pos = read_varint(data, pos)
    end = pos + length
    if length < 0 or end > len(data):
        raise CorruptRecordError(f"record length {length} overruns the batch")
    pos += 1  # record attributes: unused in v2
    timestamp_delta, pos = read_varint(data, pos)
    offset_delta, pos = read_varint(data, pos)
    key, pos = _read_bytes(data, pos, end)
    value, pos = _read_bytes(data, pos, end)
    header_count, pos = read_varint(data, pos)
    if header_count < 0:
        raise CorruptRecordError(f"negative header count {header_count}")
    headers: list[tuple[str, bytes | None]] = []
    for _ in range(header_count):
        raw_key, pos = _read_bytes(data, pos, end)
        if raw_key is None:
            raise CorruptRecordError("null header key")
        header_value, pos = _read_bytes(data, pos, end)
        try:
            headers.append((raw_key.decode(), header_value))
        except UnicodeDecodeError as exc:
            raise CorruptRecordError("header key is not UTF-8") from exc
    if pos != end:
        raise CorruptRecordError(f"record length {length} does not match its fields")
    timestamp = base_timestamp + timestamp_delta if fixed_timestamp is None else fixed_timestamp
    return Record(base_offset + offset_delta, timestamp, key, value, tuple(headers)), end


def records_section(batch: Buffer, header: BatchHeader | None = None) -> bytes:
    """The uncompressed records bytes of the batch at the start of ``batch``."""
    view = memoryview(batch)
    if header is None:
        if len(view) < HEADER_SIZE:
            raise CorruptRecordError(f"batch of {len(view)} bytes is shorter than its header")
        header = parse_header(view)
    if header.magic != MAGIC_V2:
        raise UnsupportedMagicError(f"message format v{header.magic} is not supported")
    if header.batch_length < HEADER_SIZE - LOG_OVERHEAD or header.size > len(view):
        raise CorruptRecordError(f"batch length {header.batch_length} is invalid")
    body = view[HEADER_SIZE : header.size]
    if header.compression and body:  # an empty batch has no compressed frame at all
        return decompress(header.compression, body)
    return bytes(body)


def iter_records(batch: Buffer) -> Iterator[Record]:
    """Decode the records of the one v2 batch at the start of ``batch`` (CRC is not checked).

    Header and decompression errors raise at once; record errors when iteration reaches them.
    LogAppendTime batches give every record the batch's max timestamp, as Kafka does.
    """
    view = memoryview(batch)
    if len(view) < HEADER_SIZE:
        raise CorruptRecordError(f"batch of {len(view)} bytes is shorter than its header")
    header = parse_header(view)
    return _iter_records(records_section(view, header), header)


def _iter_records(data: bytes, header: BatchHeader) -> Iterator[Record]:
    base_offset = header.base_offset
    base_timestamp = header.base_timestamp
    fixed_timestamp = header.max_timestamp if header.log_append_time else None
    pos = 0
    try:
        for _ in range(header.record_count):
            record, pos = _decode_record(data, pos, base_offset, base_timestamp, fixed_timestamp)
            yield record
    except IndexError:
        raise CorruptRecordError(f"records end inside record at byte {pos}") from None
    if pos != len(data):
        raise CorruptRecordError(
            f"batch declares {header.record_count} records but has {len(data) - pos} extra bytes"
        )


def iter_batches(buf: Buffer, *, strict: bool = True) -> Iterator[tuple[BatchHeader, memoryview]]:
    """Walk consecutive batches, yielding each header with a view of its bytes.

    A truncated last batch raises CorruptRecordError, or ends the walk when ``strict`` is false
    (fetch responses may legitimately end with a partial batch).
    """
    view = memoryview(buf)
    end = len(view)
    pos = 0
    while pos < end:
        if end - pos < HEADER_SIZE:
            if strict:
                raise CorruptRecordError(f"truncated batch header at byte {pos}")
            return
        header = parse_header(view, pos)
        if header.batch_length < HEADER_SIZE - LOG_OVERHEAD:
            raise CorruptRecordError(f"batch length {header.batch_length} at byte {pos} is invalid")
        if pos + header.size > end:
            if strict:
                raise CorruptRecordError(f"truncated batch at byte {pos}")
            return
        yield header, view[pos : pos + header.size]
        pos += header.size


def iter_batch_records(buf: Buffer, *, strict: bool = True) -> Iterator[tuple[BatchHeader, Record]]:
    """Every record of every batch in ``buf``, paired with its batch header."""
    for header, batch in iter_batches(buf, strict=strict):
        for record in _iter_records(records_section(batch, header), header):
            yield header, record
