"""Hand-written ShareFetch response encoding is byte-identical to kio's writer."""

from __future__ import annotations

import datetime
import io
import uuid

from kio.schema.errors import ErrorCode
from kio.schema.response_header.v1 import ResponseHeader
from kio.serial import entity_writer

from dari.protocol.kafka import RequestHeader, response_module
from dari.protocol.kafka.share_fetch import ShareFetchPartition, encode_share_fetch_response

TOPIC = uuid.UUID(int=7)


def kio_frame(correlation_id: int, partitions: list[ShareFetchPartition]) -> bytes:
    m = response_module(78, 1)
    parts = tuple(
        m.PartitionData(
            partition_index=p.index,
            error_code=ErrorCode(p.error_code),
            error_message=p.error_message,
            acknowledge_error_code=p.acknowledge_error_code,
            acknowledge_error_message=p.acknowledge_error_message,
            current_leader=m.LeaderIdAndEpoch(leader_id=-1, leader_epoch=-1),
            records=bytes(p.records),
            acquired_records=tuple(
                m.AcquiredRecords(first_offset=a, last_offset=b, delivery_count=c)
                for a, b, c in p.acquired
            ),
        )
        for p in partitions
    )
    response = m.ShareFetchResponse(
        throttle_time=datetime.timedelta(0),
        error_code=ErrorCode.none,
        error_message=None,
        acquisition_lock_timeout=datetime.timedelta(milliseconds=30000),
        responses=(m.ShareFetchableTopicResponse(topic_id=TOPIC, partitions=parts),),
        node_endpoints=(m.NodeEndpoint(node_id=0, host="h", port=9092, rack=None),),
    )
    buf = io.BytesIO()
    entity_writer(ResponseHeader)(buf, ResponseHeader(correlation_id=correlation_id))
    entity_writer(type(response))(buf, response)
    body = buf.getvalue()
    return len(body).to_bytes(4, "big") + body


def test_matches_kio() -> None:
    partitions = [
        ShareFetchPartition(0, records=b"batch-bytes" * 3, acquired=[(0, 4, 1), (7, 9, 2)]),
        ShareFetchPartition(
            1, acknowledge_error_code=121, acknowledge_error_message="invalid record state"
        ),
        ShareFetchPartition(2, records=memoryview(b"x" * 200), acquired=[(5, 5, 3)]),
    ]
    header = RequestHeader(78, 1, 42, "c")
    chunks = encode_share_fetch_response(
        header, 0, None, 30000, [(TOPIC, partitions)], [(0, "h", 9092)]
    )
    assert b"".join(bytes(c) for c in chunks) == kio_frame(42, partitions)
    assert any(isinstance(c, memoryview) for c in chunks)  # records are not copied
