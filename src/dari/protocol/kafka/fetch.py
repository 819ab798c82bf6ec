"""Fetch response encoding, by hand, as a list of buffers for ``transport.writelines``.

Record bytes read from the log are placed in the output list as they are (bytes or
memoryview, e.g. a slice of an mmap or a cached segment tail); only the small framing
around them is built here.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass

from dari.protocol.kafka import wire
from dari.protocol.kafka.codec import RequestHeader

__all__ = ["FETCH_VERSIONS", "FetchPartitionResult", "encode_fetch_response"]

FETCH_VERSIONS = range(4, 17)
_FIRST_FLEXIBLE = 12
_FIRST_TOPIC_ID = 13
_I32 = wire.INT32
_I16 = wire.INT16
_PARTITION_HEAD = struct.Struct(">ihqq")  # index, error, high watermark, last stable offset
_I64 = wire.INT64
_ABORTED = struct.Struct(">qq")
_HEADER = struct.Struct(">ii")  # size, correlation id


@dataclass(slots=True)
class FetchPartitionResult:
    index: int
    error_code: int
    high_watermark: int
    last_stable_offset: int
    log_start_offset: int
    records: bytes | memoryview | None
    preferred_read_replica: int = -1
    # (producer_id, first_offset) pairs; None for read_uncommitted fetches.
    aborted_transactions: list[tuple[int, int]] | None = None


def encode_fetch_response(
    header: RequestHeader,
    throttle_ms: int,
    error_code: int,
    session_id: int,
    topics: list[tuple[str | uuid.UUID, list[FetchPartitionResult]]],
) -> list[bytes | memoryview]:
    """Encode a whole FetchResponse v4..v16 frame (size, header, body) as a buffer list.

    Topics are named by string up to v12 and by topic id (UUID) from v13.
    """
    version = header.api_version
    if version not in FETCH_VERSIONS:
        raise ValueError(f"cannot encode FetchResponse v{version}")
    flexible = version >= _FIRST_FLEXIBLE
    by_id = version >= _FIRST_TOPIC_ID
    if flexible:
        array_len = _compact_len
        nullable_len = _compact_nullable_len
        string = wire.compact_string
    else:
        array_len = _I32.pack
        nullable_len = _I32.pack
        string = wire.string
    with_start_offset = version >= 5
    with_replica = version >= 11

    chunks: list[bytes | memoryview] = []
    out = bytearray(_HEADER.pack(0, header.correlation_id))
    if flexible:
        out += b"\x00"  # response header v1: no tagged fields
    out += _I32.pack(throttle_ms)
    if version >= 7:
        out += _I16.pack(error_code)
        out += _I32.pack(session_id)
    out += array_len(len(topics))
    for topic, partitions in topics:
        if by_id:
            if not isinstance(topic, uuid.UUID):
                raise TypeError(f"FetchResponse v{version} names topics by UUID, got {topic!r}")
            out += topic.bytes
        else:
            if not isinstance(topic, str):
                raise TypeError(f"FetchResponse v{version} names topics by name, got {topic!r}")
            out += string(topic)
        out += array_len(len(partitions))
        for p in partitions:
            out += _PARTITION_HEAD.pack(
                p.index, p.error_code, p.high_watermark, p.last_stable_offset
            )
            if with_start_offset:
                out += _I64.pack(p.log_start_offset)
            aborted = p.aborted_transactions
            if aborted is None:
                out += nullable_len(-1)
            else:
                out += array_len(len(aborted))
                for producer_id, first_offset in aborted:
                    out += _ABORTED.pack(producer_id, first_offset)
                    if flexible:
                        out += b"\x00"
            if with_replica:
                out += _I32.pack(p.preferred_read_replica)
            records = p.records
            if records is None:
                out += nullable_len(-1)
            else:
                size = records.nbytes if isinstance(records, memoryview) else len(records)
                out += nullable_len(size)
                if size:
                    chunks.append(bytes(out))
                    chunks.append(records)
                    out = bytearray()
            if flexible:
                out += b"\x00"
        if flexible:
            out += b"\x00"
    if flexible:
        out += b"\x00"
    chunks.append(bytes(out))
    total = sum(c.nbytes if isinstance(c, memoryview) else len(c) for c in chunks)
    first = bytearray(chunks[0])
    _I32.pack_into(first, 0, total - 4)
    chunks[0] = bytes(first)
    return chunks


def _compact_len(count: int) -> bytes:
    return wire.uvarint(count + 1)


def _compact_nullable_len(count: int) -> bytes:
    return wire.uvarint(count + 1) if count >= 0 else b"\x00"
