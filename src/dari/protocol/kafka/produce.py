"""Produce request decoding and response encoding, by hand for the hot path.

Record batches stay memoryview slices of the received frame from the socket to the log
append, so a produce of N megabytes is never copied by the codec.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NamedTuple

from dari.protocol.kafka import wire
from dari.protocol.kafka.errors import InvalidRequestError, UnsupportedVersionError

__all__ = [
    "PRODUCE_VERSIONS",
    "PartitionResult",
    "ProducePartition",
    "ProduceRequestData",
    "ProduceTopic",
    "decode_produce",
    "encode_produce_response",
]

PRODUCE_VERSIONS = range(3, 11)
_FIRST_FLEXIBLE = 9
_ACKS_TIMEOUT = struct.Struct(">hi")
_PARTITION_HEAD = struct.Struct(">ihq")  # index, error_code, base_offset
_I64 = wire.INT64
_I32 = wire.INT32


@dataclass(slots=True)
class ProducePartition:
    index: int
    records: memoryview | None  # RecordBatch bytes, a slice of the request frame


@dataclass(slots=True)
class ProduceTopic:
    name: str
    partitions: list[ProducePartition]


@dataclass(slots=True)
class ProduceRequestData:
    transactional_id: str | None
    acks: int
    timeout_ms: int
    topics: list[ProduceTopic]


class PartitionResult(NamedTuple):
    """Outcome of appending to one partition; -1 means "not applicable" for the offsets.

    ``record_errors`` are (record index, message) pairs naming refused records (v8+). A
    NamedTuple, as one is built per partition of every produce.
    """

    index: int
    error_code: int
    base_offset: int
    log_append_time: int = -1
    log_start_offset: int = -1
    error_message: str | None = None
    record_errors: tuple[tuple[int, str | None], ...] = ()


def decode_produce(version: int, body: memoryview) -> ProduceRequestData:
    """Decode a ProduceRequest v3..v10 body (without the request header).

    Raises UnsupportedVersionError outside v3..v10 and InvalidRequestError on malformed bytes.
    """
    if version not in PRODUCE_VERSIONS:
        raise UnsupportedVersionError(0, version)
    view = body if isinstance(body, memoryview) else memoryview(body)
    try:
        if version >= _FIRST_FLEXIBLE:
            return _decode_flexible(view)
        return _decode_legacy(view)
    except (struct.error, IndexError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise InvalidRequestError(f"malformed ProduceRequest v{version}: {exc}") from exc


def _decode_legacy(view: memoryview) -> ProduceRequestData:
    read_string = wire.read_string
    read_bytes = wire.read_bytes
    read_array_length = wire.read_array_length
    transactional_id, pos = read_string(view, 0)
    acks, timeout_ms = _ACKS_TIMEOUT.unpack_from(view, pos)
    pos += 6
    topic_count, pos = read_array_length(view, pos)
    topics: list[ProduceTopic] = []
    for _ in range(topic_count):
        name, pos = read_string(view, pos)
        if name is None:
            raise ValueError("null topic name")
        partition_count, pos = read_array_length(view, pos)
        partitions: list[ProducePartition] = []
        for _ in range(partition_count):
            (index,) = _I32.unpack_from(view, pos)
            records, pos = read_bytes(view, pos + 4)
            partitions.append(ProducePartition(index, records))
        topics.append(ProduceTopic(name, partitions))
    return ProduceRequestData(transactional_id, acks, timeout_ms, topics)


def _decode_flexible(view: memoryview) -> ProduceRequestData:
    read_string = wire.read_compact_string
    read_bytes = wire.read_compact_bytes
    read_array_length = wire.read_compact_array_length
    skip_tags = wire.skip_tagged_fields
    transactional_id, pos = read_string(view, 0)
    acks, timeout_ms = _ACKS_TIMEOUT.unpack_from(view, pos)
    pos += 6
    topic_count, pos = read_array_length(view, pos)
    topics: list[ProduceTopic] = []
    for _ in range(topic_count):
        name, pos = read_string(view, pos)
        if name is None:
            raise ValueError("null topic name")
        partition_count, pos = read_array_length(view, pos)
        partitions: list[ProducePartition] = []
        for _ in range(partition_count):
            (index,) = _I32.unpack_from(view, pos)
            records, pos = read_bytes(view, pos + 4)
            partitions.append(ProducePartition(index, records))
            pos = skip_tags(view, pos)
        pos = skip_tags(view, pos)
        topics.append(ProduceTopic(name, partitions))
    skip_tags(view, pos)
    return ProduceRequestData(transactional_id, acks, timeout_ms, topics)


def encode_produce_response(
    version: int,
    topics: list[tuple[str, list[PartitionResult]]],
    throttle_ms: int = 0,
) -> bytes:
    """Encode a ProduceResponse v3..v10 body; pass it to codec.encode_response as is."""
    if version not in PRODUCE_VERSIONS:
        raise ValueError(f"cannot encode ProduceResponse v{version}")
    flexible = version >= _FIRST_FLEXIBLE
    with_start_offset = version >= 5
    with_record_errors = version >= 8
    if flexible:
        array_len = _compact_len
        string = wire.compact_string
        no_record_errors = b"\x01"
    else:
        array_len = _I32.pack
        string = wire.string
        no_record_errors = b"\x00\x00\x00\x00"
    out = bytearray(array_len(len(topics)))
    for name, partitions in topics:
        out += string(name)
        out += array_len(len(partitions))
        for p in partitions:
            out += _PARTITION_HEAD.pack(p.index, p.error_code, p.base_offset)
            out += _I64.pack(p.log_append_time)
            if with_start_offset:
                out += _I64.pack(p.log_start_offset)
            if with_record_errors:
                if p.record_errors:
                    out += array_len(len(p.record_errors))
                    for batch_index, message in p.record_errors:
                        out += _I32.pack(batch_index)
                        out += string(message)
                        if flexible:
                            out += b"\x00"
                else:
                    out += no_record_errors
                out += string(p.error_message)
            if flexible:
                out += b"\x00"
        if flexible:
            out += b"\x00"
    out += _I32.pack(throttle_ms)
    if flexible:
        out += b"\x00"
    return bytes(out)


def _compact_len(count: int) -> bytes:
    return wire.uvarint(count + 1)
