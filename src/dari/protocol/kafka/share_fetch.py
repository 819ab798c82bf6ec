"""ShareFetch response encoding, by hand, as a list of buffers for ``transport.writelines``.

Like ``fetch``: record batches read from the log go into the output list as they are; only the
framing around them (and the AcquiredRecords ranges that tell the client which of their
records it holds) is built here. ShareFetch v1 is flexible throughout.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass, field

from dari.protocol.kafka import wire
from dari.protocol.kafka.codec import RequestHeader

__all__ = ["SHARE_FETCH_VERSIONS", "ShareFetchPartition", "encode_share_fetch_response"]

SHARE_FETCH_VERSIONS = range(1, 2)
_HEADER = struct.Struct(">ii")  # size, correlation id
_PARTITION = struct.Struct(">ih")  # index, error code
_LEADER = struct.Struct(">ii")
_ACQUIRED = struct.Struct(">qqh")
_I16 = wire.INT16
_I32 = wire.INT32
_NO_TAGS = b"\x00"


@dataclass(slots=True)
class ShareFetchPartition:
    index: int
    error_code: int = 0
    error_message: str | None = None
    acknowledge_error_code: int = 0
    acknowledge_error_message: str | None = None
    records: bytes | memoryview = b""
    # (first offset, last offset, delivery count)
    acquired: list[tuple[int, int, int]] = field(default_factory=list)
    leader: tuple[int, int] = (-1, -1)


def encode_share_fetch_response(
    header: RequestHeader,
    error_code: int,
    error_message: str | None,
    lock_timeout_ms: int,
    topics: list[tuple[uuid.UUID, list[ShareFetchPartition]]],
    node_endpoints: list[tuple[int, str, int]] = (),  # type: ignore[assignment]
) -> list[bytes | memoryview]:
    """Encode a whole ShareFetchResponse v1 frame (size, header, body) as a buffer list."""
    if header.api_version not in SHARE_FETCH_VERSIONS:
        raise ValueError(f"cannot encode ShareFetchResponse v{header.api_version}")
    chunks: list[bytes | memoryview] = []
    out = bytearray(_HEADER.pack(0, header.correlation_id))
    out += _NO_TAGS  # response header v1
    out += _I32.pack(0)  # throttle
    out += _I16.pack(error_code)
    out += wire.compact_string(error_message)
    out += _I32.pack(lock_timeout_ms)
    out += wire.uvarint(len(topics) + 1)
    for topic_id, partitions in topics:
        out += topic_id.bytes
        out += wire.uvarint(len(partitions) + 1)
        for p in partitions:
            out += _PARTITION.pack(p.index, p.error_code)
            out += wire.compact_string(p.error_message)
            out += _I16.pack(p.acknowledge_error_code)
            out += wire.compact_string(p.acknowledge_error_message)
            out += _LEADER.pack(*p.leader)
            out += _NO_TAGS
            records = p.records
            size = records.nbytes if isinstance(records, memoryview) else len(records)
            # Never null: librdkafka reads the length as an array count and fails on -1.
            out += wire.uvarint(size + 1)
            if size:
                chunks.append(bytes(out))
                chunks.append(records)
                out = bytearray()
            out += wire.uvarint(len(p.acquired) + 1)
            for first, last, count in p.acquired:
                out += _ACQUIRED.pack(first, last, count)
                out += _NO_TAGS
            out += _NO_TAGS
        out += _NO_TAGS
    out += wire.uvarint(len(node_endpoints) + 1)
    for node_id, host, port in node_endpoints:
        out += _I32.pack(node_id)
        out += wire.compact_string(host)
        out += _I32.pack(port)
        out += wire.compact_string(None)  # rack
        out += _NO_TAGS
    out += _NO_TAGS
    chunks.append(bytes(out))
    total = sum(c.nbytes if isinstance(c, memoryview) else len(c) for c in chunks)
    first = bytearray(chunks[0])
    _I32.pack_into(first, 0, total - 4)
    chunks[0] = bytes(first)
    return chunks
