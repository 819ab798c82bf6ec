"""Hand-written Fetch response encoding is byte-identical to kio's, without copying records."""

from __future__ import annotations

import datetime
import io
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kio.schema.errors import ErrorCode
from kio.schema.response_header.v0 import ResponseHeader as HeaderV0
from kio.schema.response_header.v1 import ResponseHeader as HeaderV1
from kio.serial import entity_writer

from dari.protocol.kafka import (
    FetchPartitionResult,
    RequestHeader,
    encode_fetch_response,
    response_class,
    response_module,
)

VERSIONS = range(4, 17)


def kio_frame(version, correlation_id, throttle_ms, error_code, session_id, topics) -> bytes:
    module = response_module(1, version)
    response_cls = response_class(1, version)
    partition_fields = module.PartitionData.__dataclass_fields__
    response_fields = response_cls.__dataclass_fields__
    responses = []
    for topic, partitions in topics:
        parts = []
        for p in partitions:
            kwargs = dict(
                partition_index=p.index,
                error_code=ErrorCode(p.error_code),
                high_watermark=p.high_watermark,
                last_stable_offset=p.last_stable_offset,
                aborted_transactions=None
                if p.aborted_transactions is None
                else tuple(
                    module.AbortedTransaction(producer_id=a, first_offset=b)
                    for a, b in p.aborted_transactions
                ),
                records=None if p.records is None else bytes(p.records),
            )
            if "log_start_offset" in partition_fields:
                kwargs["log_start_offset"] = p.log_start_offset
            if "preferred_read_replica" in partition_fields:
                kwargs["preferred_read_replica"] = p.preferred_read_replica
            parts.append(module.PartitionData(**kwargs))
        key = "topic_id" if version >= 13 else "topic"
        responses.append(module.FetchableTopicResponse(**{key: topic, "partitions": tuple(parts)}))
    kwargs = dict(
        throttle_time=datetime.timedelta(milliseconds=throttle_ms), responses=tuple(responses)
    )
    if "error_code" in response_fields:
        kwargs["error_code"] = ErrorCode(error_code)
        kwargs["session_id"] = session_id
    response = response_cls(**kwargs)
    buf = io.BytesIO()
    header_cls = HeaderV1 if response_cls.__flexible__ else HeaderV0
    entity_writer(header_cls)(buf, header_cls(correlation_id=correlation_id))
    entity_writer(response_cls)(buf, response)
    body = buf.getvalue()
    return len(body).to_bytes(4, "big") + body


partitions_strategy = st.lists(
    st.builds(
        FetchPartitionResult,
        index=st.integers(0, 2**31 - 1),
        error_code=st.sampled_from([0, 1, 3, 6, 74]),
        high_watermark=st.integers(-1, 2**62),
        last_stable_offset=st.integers(-1, 2**62),
        log_start_offset=st.integers(-1, 2**62),
        records=st.none() | st.binary(max_size=200) | st.binary(max_size=50).map(memoryview),
        preferred_read_replica=st.integers(-1, 5),
        aborted_transactions=st.none()
        | st.lists(st.tuples(st.integers(0, 2**40), st.integers(0, 2**40)), max_size=3),
    ),
    max_size=4,
)


@pytest.mark.parametrize("version", VERSIONS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    throttle_ms=st.integers(0, 2**31 - 1),
    error_code=st.sampled_from([0, 70]),
    session_id=st.integers(0, 2**31 - 1),
)
def test_fetch_response_is_byte_equal_to_kio(version, data, throttle_ms, error_code, session_id):
    topic_key = st.uuids() if version >= 13 else st.text(max_size=20)
    topics = data.draw(st.lists(st.tuples(topic_key, partitions_strategy), max_size=3))
    header = RequestHeader(1, version, 31337, "consumer")
    chunks = encode_fetch_response(header, throttle_ms, error_code, session_id, topics)
    if version < 7:
        error_code, session_id = 0, 0  # not on the wire before v7
    expected = kio_frame(version, 31337, throttle_ms, error_code, session_id, topics)
    assert b"".join(chunks) == expected


@pytest.mark.parametrize("version", [4, 11, 12, 16])
def test_records_are_passed_through_without_copying(version):
    stored = bytearray(b"R" * 1000)
    records = memoryview(stored)[100:600]
    topic = uuid.uuid4() if version >= 13 else "events"
    partition = FetchPartitionResult(0, 0, 10, 10, 0, records)
    chunks = encode_fetch_response(
        RequestHeader(1, version, 1, None), 0, 0, 0, [(topic, [partition])]
    )
    assert any(chunk is records for chunk in chunks)
    total = sum(len(c) for c in chunks)
    assert int.from_bytes(bytes(chunks[0][:4]), "big") == total - 4


def test_topic_identity_must_match_version():
    partition = FetchPartitionResult(0, 0, 0, 0, 0, None)
    with pytest.raises(TypeError):
        encode_fetch_response(RequestHeader(1, 13, 1, None), 0, 0, 0, [("name", [partition])])
    with pytest.raises(TypeError):
        encode_fetch_response(RequestHeader(1, 12, 1, None), 0, 0, 0, [(uuid.uuid4(), [partition])])
    with pytest.raises(ValueError):
        encode_fetch_response(RequestHeader(1, 17, 1, None), 0, 0, 0, [])
