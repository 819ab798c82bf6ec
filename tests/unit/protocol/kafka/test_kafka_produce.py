"""Hand-written Produce decode/encode agree with kio's schema-driven codec."""

from __future__ import annotations

import datetime
import io
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kio.schema.errors import ErrorCode
from kio.serial import entity_reader, entity_writer
from kio.serial.readers import tz_aware_from_i64
from kio.static.primitive import Records

from dari.protocol.kafka import (
    InvalidRequestError,
    PartitionResult,
    UnsupportedVersionError,
    decode_produce,
    encode_produce_response,
    millis,
    parse_request,
    request_class,
    response_class,
    response_module,
)
from dari.protocol.kafka.codec import RequestHeader, encode_response

st.register_type_strategy(Records, st.binary(max_size=64).map(Records))
VERSIONS = range(3, 11)


def kio_bytes(cls, value) -> bytes:
    buf = io.BytesIO()
    entity_writer(cls)(buf, value)
    return buf.getvalue()


def kio_request(version, transactional_id, acks, timeout_ms, topics):
    module = __import__(f"kio.schema.produce.v{version}.request", fromlist=["x"])
    return module.ProduceRequest(
        transactional_id=transactional_id,
        acks=acks,
        timeout=datetime.timedelta(milliseconds=timeout_ms),
        topic_data=tuple(
            module.TopicProduceData(
                name=name,
                partition_data=tuple(
                    module.PartitionProduceData(index=i, records=r) for i, r in parts
                ),
            )
            for name, parts in topics
        ),
    )


def summary(data):
    return (
        data.transactional_id,
        data.acks,
        data.timeout_ms,
        [
            (
                t.name,
                [(p.index, None if p.records is None else bytes(p.records)) for p in t.partitions],
            )
            for t in data.topics
        ],
    )


topics_strategy = st.lists(
    st.tuples(
        st.text(max_size=30),
        st.lists(
            st.tuples(
                st.integers(-(2**31), 2**31 - 1),
                st.none() | st.binary(max_size=300),
            ),
            max_size=4,
        ),
    ),
    max_size=4,
)


@pytest.mark.parametrize("version", VERSIONS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    transactional_id=st.none() | st.text(max_size=20),
    acks=st.sampled_from([-1, 0, 1]),
    timeout_ms=st.integers(0, 2**31 - 1),
    topics=topics_strategy,
)
def test_decode_produce_agrees_with_kio(version, transactional_id, acks, timeout_ms, topics):
    request = kio_request(version, transactional_id, acks, timeout_ms, topics)
    body = kio_bytes(type(request), request)
    ours = decode_produce(version, memoryview(body))
    theirs, _ = entity_reader(type(request))(body, 0)
    assert summary(ours) == (
        transactional_id,
        acks,
        timeout_ms,
        [
            (name, [(i, None if r is None else bytes(r)) for i, r in parts])
            for name, parts in topics
        ],
    )
    assert ours.timeout_ms == millis(theirs.timeout)
    assert [
        (t.name, [(p.index, p.records) for p in t.partition_data]) for t in theirs.topic_data
    ] == [
        (t.name, [(p.index, None if p.records is None else bytes(p.records)) for p in t.partitions])
        for t in ours.topics
    ]


@pytest.mark.parametrize("version", VERSIONS)
def test_records_are_slices_of_the_frame_not_copies(version):
    batch = bytes(range(200))
    request = kio_request(version, None, -1, 1000, [("orders", [(0, batch), (1, None)])])
    frame = bytearray(
        struct.pack(">hhih", 0, version, 1, 1) + b"c" + (b"\x00" if version >= 9 else b"")
    ) + kio_bytes(type(request), request)
    view = memoryview(frame)
    header, data = parse_request(view)
    assert header == RequestHeader(0, version, 1, "c")
    records = data.topics[0].partitions[0].records
    assert bytes(records) == batch
    assert records.obj is frame  # a view into the received frame
    assert data.topics[0].partitions[1].records is None


@pytest.mark.parametrize("version", [9, 10])
def test_flexible_produce_skips_unknown_tagged_fields(version):
    # transactional_id null, acks 1, timeout 5, 1 topic "t" with one partition, every level
    # carrying an unknown tag (tag 7, 2 bytes).
    tag = b"\x01\x07\x02zz"
    body = (
        b"\x00"
        + struct.pack(">hi", 1, 5)
        + b"\x02"
        + b"\x02t"
        + b"\x02"
        + struct.pack(">i", 3)
        + b"\x04abc"
        + tag
        + tag
        + tag
    )
    data = decode_produce(version, memoryview(body))
    assert summary(data) == (None, 1, 5, [("t", [(3, b"abc")])])


@pytest.mark.parametrize("version", VERSIONS)
def test_truncated_produce_bodies_raise_invalid_request(version):
    request = kio_request(version, "tx", 1, 10, [("a", [(0, b"x" * 30)]), ("b", [(1, None)])])
    body = kio_bytes(type(request), request)
    for cut in range(len(body)):
        with pytest.raises(InvalidRequestError):
            decode_produce(version, memoryview(body[:cut]))


def test_negative_array_length_is_invalid():
    body = b"\xff\xff" + struct.pack(">hii", 1, 5, -1)
    with pytest.raises(InvalidRequestError):
        decode_produce(3, memoryview(body))


@pytest.mark.parametrize("version", [0, 2, 11])
def test_decode_produce_refuses_other_versions(version):
    with pytest.raises(UnsupportedVersionError):
        decode_produce(version, memoryview(b""))


def kio_response(version, topics, throttle_ms):
    module = response_module(0, version)
    extra = {}
    fields_of = module.PartitionProduceResponse.__dataclass_fields__
    responses = []
    for name, partitions in topics:
        parts = []
        for p in partitions:
            kwargs = dict(
                index=p.index, error_code=ErrorCode(p.error_code), base_offset=p.base_offset
            )
            kwargs["log_append_time"] = (
                None if p.log_append_time == -1 else tz_aware_from_i64(p.log_append_time)
            )
            if "log_start_offset" in fields_of:
                kwargs["log_start_offset"] = p.log_start_offset
            if "record_errors" in fields_of:
                kwargs["record_errors"] = tuple(
                    module.BatchIndexAndErrorMessage(
                        batch_index=index, batch_index_error_message=message
                    )
                    for index, message in p.record_errors
                )
                kwargs["error_message"] = p.error_message
            parts.append(module.PartitionProduceResponse(**kwargs))
        responses.append(module.TopicProduceResponse(name=name, partition_responses=tuple(parts)))
    return module.ProduceResponse(
        responses=tuple(responses),
        throttle_time=datetime.timedelta(milliseconds=throttle_ms),
        **extra,
    )


results_strategy = st.lists(
    st.tuples(
        st.text(max_size=20),
        st.lists(
            st.builds(
                PartitionResult,
                index=st.integers(0, 1000),
                error_code=st.sampled_from([0, 2, 3, 6, 10, 87]),
                base_offset=st.integers(-1, 2**62),
                log_append_time=st.just(-1) | st.integers(0, 2**42),
                log_start_offset=st.integers(-1, 2**62),
                error_message=st.none() | st.text(max_size=30),
                record_errors=st.lists(
                    st.tuples(st.integers(0, 2**31 - 1), st.none() | st.text(max_size=30)),
                    max_size=3,
                ).map(tuple),
            ),
            max_size=4,
        ),
    ),
    max_size=4,
)


@pytest.mark.parametrize("version", VERSIONS)
@settings(max_examples=40, deadline=None)
@given(topics=results_strategy, throttle_ms=st.integers(0, 10_000))
def test_encode_produce_response_is_byte_equal_to_kio(version, topics, throttle_ms):
    expected = kio_bytes(response_class(0, version), kio_response(version, topics, throttle_ms))
    assert encode_produce_response(version, topics, throttle_ms) == expected


def test_produce_response_frame_has_header_v1_when_flexible():
    body = encode_produce_response(9, [("t", [PartitionResult(0, 0, 42)])])
    out = encode_response(RequestHeader(0, 9, 5, None), body)
    assert out[4:9] == b"\x00\x00\x00\x05\x00"
    assert out[9:] == body
    assert request_class(0, 9).__flexible__
