"""The one record writer: build RecordBatch v2 batches.

``build_batch`` serves tests, internal topics, transaction markers and compaction; producers
build their own batches, so it is not on the produce path and favours a forgiving input format
over speed. ``pack_batch`` wraps an already encoded records section in its header (a queue's
durable publish path encodes its records itself). Each record given to ``build_batch`` may be

* a ``NewRecord`` or a plain tuple in its field order: ``(key, value)``, ``(key, value, headers)``,
  ``(key, value, headers, timestamp)``, ``(key, value, headers, timestamp, offset_delta)``;
* a bare ``bytes``/``str`` value (no key, no headers);
* a decoded ``Record``, keeping its timestamp and its offset relative to ``base_offset``
  (what compaction needs to rewrite a batch without renumbering it).

``str`` keys, values and header values are encoded as UTF-8. Headers are a sequence of
(key, value) pairs or a mapping.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from enum import IntEnum
from typing import NamedTuple

from dari.records.batch import (
    CONTROL_MASK,
    HEADER_SIZE,
    LOG_OVERHEAD,
    MAGIC_V2,
    TIMESTAMP_TYPE_MASK,
    TRANSACTIONAL_MASK,
    BatchHeader,
    pack_header_into,
    seal_crc,
)
from dari.records.compression import Codec, UnsupportedCompressionError, compress
from dari.records.records import Record
from dari.records.varint import write_varint

BytesLike = bytes | bytearray | memoryview
HeaderValue = BytesLike | str | None
HeadersInput = Sequence[tuple[str | bytes, HeaderValue]] | Mapping[str, HeaderValue]


class NewRecord(NamedTuple):
    """A record to put in a batch.

    A ``None`` timestamp means the batch's ``now_ms``; a ``None`` offset_delta, its index.
    """

    key: BytesLike | str | None = None
    value: BytesLike | str | None = None
    headers: HeadersInput = ()
    timestamp: int | None = None
    offset_delta: int | None = None


RecordInput = NewRecord | tuple | Record | BytesLike | str


class ControlType(IntEnum):
    """The type field in a control record's key (transaction markers)."""

    ABORT = 0
    COMMIT = 1


def _as_bytes(data: BytesLike | str | None) -> bytes | None:
    if data is None or isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode()
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    raise TypeError(f"expected bytes, str or None, not {type(data).__name__}")


def _write_field(out: bytearray, data: bytes | None) -> None:
    if data is None:
        write_varint(out, -1)
    else:
        write_varint(out, len(data))
        out += data


def _normalise(item: RecordInput, base_offset: int) -> NewRecord:
    if isinstance(item, NewRecord):
        return item
    if isinstance(item, Record):
        return NewRecord(
            item.key, item.value, item.headers, item.timestamp, item.offset - base_offset
        )
    if isinstance(item, tuple):
        return NewRecord(*item)
    return NewRecord(value=item)


def _header_pairs(headers: HeadersInput) -> Iterable[tuple[str | bytes, HeaderValue]]:
    return headers.items() if isinstance(headers, Mapping) else headers


def _encode_record(
    out: bytearray, record: NewRecord, timestamp_delta: int, offset_delta: int
) -> None:
    body = bytearray(b"\x00")  # record attributes: unused in v2
    write_varint(body, timestamp_delta)
    write_varint(body, offset_delta)
    _write_field(body, _as_bytes(record.key))
    _write_field(body, _as_bytes(record.value))
    pairs = list(_header_pairs(record.headers))
    write_varint(body, len(pairs))
    for header_key, header_value in pairs:
        _write_field(body, _as_bytes(header_key))
        _write_field(body, _as_bytes(header_value))
    write_varint(out, len(body))
    out += body


def build_batch(
    records: Iterable[RecordInput],
    *,
    base_offset: int = 0,
    compression: int = Codec.NONE,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    timestamp_type_log_append: bool = False,
    is_transactional: bool = False,
    is_control: bool = False,
    partition_leader_epoch: int = 0,
    now_ms: int | None = None,
    last_offset_delta: int | None = None,
) -> bytes:
    """Encode ``records`` as one v2 batch with a valid CRC32C.

    ``now_ms`` (default: the wall clock) fills in missing timestamps and, for LogAppendTime, is
    the batch's max timestamp. ``last_offset_delta`` defaults to the last record's offset delta;
    pass it to keep offsets a compacted batch no longer holds records for. An empty batch
    (Kafka writes those to keep producer state after compaction) requires it.
    """
    try:
        compression = Codec(compression)
    except ValueError:
        raise UnsupportedCompressionError(f"unknown compression codec {compression}") from None
    if now_ms is None:
        now_ms = time.time_ns() // 1_000_000
    items = [_normalise(item, base_offset) for item in records]

    body = bytearray()
    base_timestamp = max_timestamp = -1
    previous_delta = -1
    for index, record in enumerate(items):
        timestamp = now_ms if record.timestamp is None else record.timestamp
        offset_delta = index if record.offset_delta is None else record.offset_delta
        if offset_delta <= previous_delta:
            raise ValueError(f"offset deltas must increase: {offset_delta} after {previous_delta}")
        previous_delta = offset_delta
        if index == 0:
            base_timestamp = max_timestamp = timestamp
        max_timestamp = max(max_timestamp, timestamp)
        _encode_record(body, record, timestamp - base_timestamp, offset_delta)

    if last_offset_delta is None:
        if not items:
            raise ValueError("an empty batch needs an explicit last_offset_delta")
        last_offset_delta = previous_delta
    elif last_offset_delta < previous_delta:
        raise ValueError(f"last_offset_delta {last_offset_delta} is below a record's delta")
    if items and compression != Codec.NONE:
        body = bytearray(compress(compression, body))

    attributes = compression
    if timestamp_type_log_append:
        attributes |= TIMESTAMP_TYPE_MASK
        max_timestamp = now_ms
    if is_transactional:
        attributes |= TRANSACTIONAL_MASK
    if is_control:
        attributes |= CONTROL_MASK

    return pack_batch(
        body,
        record_count=len(items),
        last_offset_delta=last_offset_delta,
        base_timestamp=base_timestamp,
        max_timestamp=max_timestamp,
        attributes=attributes,
        base_offset=base_offset,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
        partition_leader_epoch=partition_leader_epoch,
    )


def rebuild_batch(header: BatchHeader, records: Iterable[RecordInput]) -> bytes:
    """``records`` (decoded from the batch ``header`` describes, e.g. the survivors of
    compaction) in a new batch that keeps that batch's offsets, producer id/epoch/sequence,
    leader epoch, codec, timestamp type and transactional flag."""
    return build_batch(
        records,
        base_offset=header.base_offset,
        compression=header.compression,
        producer_id=header.producer_id,
        producer_epoch=header.producer_epoch,
        base_sequence=header.base_sequence,
        timestamp_type_log_append=header.log_append_time,
        is_transactional=header.is_transactional,
        partition_leader_epoch=header.partition_leader_epoch,
        now_ms=header.max_timestamp,
        last_offset_delta=header.last_offset_delta,
    )


def pack_batch(
    records: BytesLike,
    *,
    record_count: int,
    last_offset_delta: int,
    base_timestamp: int,
    max_timestamp: int,
    attributes: int = 0,
    base_offset: int = 0,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    partition_leader_epoch: int = 0,
) -> bytes:
    """One v2 batch around an encoded (and, per ``attributes``, compressed) records section:
    the header packed in front, the CRC32C sealed. Every batch this broker writes is made
    here, whether by ``build_batch`` or by a caller's own fast record encoder."""
    header = BatchHeader(
        base_offset=base_offset,
        batch_length=HEADER_SIZE - LOG_OVERHEAD + len(records),
        partition_leader_epoch=partition_leader_epoch,
        magic=MAGIC_V2,
        crc=0,
        attributes=attributes,
        last_offset_delta=last_offset_delta,
        base_timestamp=base_timestamp,
        max_timestamp=max_timestamp,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
        record_count=record_count,
    )
    out = bytearray(HEADER_SIZE)
    pack_header_into(out, 0, header)
    out += records
    seal_crc(out)
    return bytes(out)


def build_control_batch(
    control_type: ControlType,
    *,
    producer_id: int,
    producer_epoch: int,
    coordinator_epoch: int = 0,
    base_offset: int = 0,
    partition_leader_epoch: int = 0,
    now_ms: int | None = None,
) -> bytes:
    """A transaction marker: one control record ending the producer's transaction."""
    key = (0).to_bytes(2, "big") + int(control_type).to_bytes(2, "big")
    value = (0).to_bytes(2, "big") + coordinator_epoch.to_bytes(4, "big", signed=True)
    return build_batch(
        [NewRecord(key, value)],
        base_offset=base_offset,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        is_transactional=True,
        is_control=True,
        partition_leader_epoch=partition_leader_epoch,
        now_ms=now_ms,
    )


def control_type(record: Record) -> ControlType:
    """The marker type of a record from a control batch."""
    if record.key is None or len(record.key) < 4:
        raise ValueError("not a control record key")
    return ControlType(int.from_bytes(record.key[2:4], "big", signed=True))
