"""parse_request / encode_response against kio's independent encoding of the same messages."""

from __future__ import annotations

import datetime
import io
import struct

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from kio.schema.request_header.v1 import RequestHeader as KioHeaderV1
from kio.schema.request_header.v2 import RequestHeader as KioHeaderV2
from kio.serial import entity_reader, entity_writer
from kio.static.primitive import Records, TZAware

from dari.protocol.kafka import (
    FUTURE_APIS,
    SUPPORTED_APIS,
    ApiKey,
    ErrorCode,
    InvalidRequestError,
    ProduceRequestData,
    RequestHeader,
    UnknownApiError,
    UnsupportedVersionError,
    api_versions_response,
    build,
    encode_api_versions_fallback,
    encode_response,
    millis,
    parse_request,
    request_class,
    response_class,
    response_module,
)
from dari.protocol.kafka.apis import decodable_range
from dari.protocol.kafka.guard import prepare

# The wire carries epoch milliseconds, so any zone round-trips to the same instant, but an
# aware datetime in a repeated (DST fold) hour never compares equal to one in another zone
# (PEP 495): draw the round-tripped timestamps in UTC.
st.register_type_strategy(
    TZAware,
    st.integers(0, 253_402_300_799).map(
        lambda s: TZAware.parse(datetime.datetime.fromtimestamp(s, tz=datetime.UTC))
    ),
)

st.register_type_strategy(Records, st.binary(max_size=64).map(Records))


def kio_request(api_key: int, version: int, body: object, correlation_id=7, client_id="cli"):
    """Request frame (without size prefix) encoded by kio, header included."""
    cls = request_class(api_key, version)
    header_cls = KioHeaderV2 if cls.__flexible__ else KioHeaderV1
    buf = io.BytesIO()
    entity_writer(header_cls)(
        buf,
        header_cls(
            request_api_key=api_key,
            request_api_version=version,
            correlation_id=correlation_id,
            client_id=client_id,
        ),
    )
    entity_writer(cls)(buf, body)
    return buf.getvalue()


def kio_reads_back(api_key: int, version: int, body: object) -> bool:
    """kio's strategies can draw values its own reader rejects (e.g. an int64 duration beyond
    datetime.timedelta's range); such draws say nothing about our codec."""
    cls = request_class(api_key, version)
    buf = io.BytesIO()
    entity_writer(cls)(buf, body)
    try:
        entity_reader(cls)(buf.getvalue(), 0)
    except ValueError:
        return False
    return True


def as_kio_produce(data: ProduceRequestData) -> tuple:
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


def kio_produce_tuple(body) -> tuple:
    return (
        body.transactional_id,
        body.acks,
        millis(body.timeout),
        [
            (
                t.name,
                [
                    (p.index, None if p.records is None else bytes(p.records))
                    for p in t.partition_data
                ],
            )
            for t in body.topic_data
        ],
    )


def all_versions(apis):
    for key in sorted(apis):
        low, high = decodable_range(key, apis)
        for version in range(low, high + 1):
            yield pytest.param(key, version, id=f"{ApiKey(key).name}-v{version}")


@pytest.mark.parametrize(("api_key", "version"), list(all_versions(SUPPORTED_APIS)))
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_supported_requests_round_trip(api_key, version, data):
    cls = request_class(api_key, version)
    body = data.draw(st.from_type(cls))
    assume(kio_reads_back(api_key, version, body))
    client_id = data.draw(st.none() | st.text(max_size=20))
    frame = kio_request(api_key, version, body, correlation_id=12345, client_id=client_id)
    header, parsed = parse_request(memoryview(frame))
    assert header == RequestHeader(api_key, version, 12345, client_id)
    if api_key == ApiKey.PRODUCE:
        assert as_kio_produce(parsed) == kio_produce_tuple(body)
    else:
        assert parsed == body


def test_supported_ranges_match_the_advertising_rules():
    assert SUPPORTED_APIS[ApiKey.PRODUCE] == (0, 10)
    assert decodable_range(ApiKey.PRODUCE, SUPPORTED_APIS) == (3, 10)
    assert SUPPORTED_APIS[ApiKey.FETCH] == (4, 16)
    assert SUPPORTED_APIS[ApiKey.API_VERSIONS] == (0, 4)
    assert not set(SUPPORTED_APIS) & set(FUTURE_APIS)
    for apis in (SUPPORTED_APIS, FUTURE_APIS):
        for key in apis:
            low, high = decodable_range(key, apis)
            for version in range(low, high + 1):  # every advertised version is decodable
                assert request_class(key, version).__version__ == version
                assert response_class(key, version).__version__ == version


@pytest.mark.parametrize("version", [0, 1, 2])
def test_old_produce_versions_are_advertised_but_refused_with_header(version):
    frame = struct.pack(">hhih", 0, version, 99, 3) + b"abc" + b"\0" * 20
    with pytest.raises(UnsupportedVersionError) as info:
        parse_request(frame)
    err = info.value
    assert (err.api_key, err.api_version, err.error_code) == (0, version, 35)
    assert err.header == RequestHeader(0, version, 99, "abc")


def test_unknown_api_carries_header():
    frame = struct.pack(">hhih", 999, 0, 5, -1)
    with pytest.raises(UnknownApiError) as info:
        parse_request(frame)
    assert info.value.header == RequestHeader(999, 0, 5, None)


def test_unsupported_api_versions_request_gets_v0_fallback_response():
    frame = struct.pack(">hhih", 18, 9, 77, 1) + b"x" + b"\x00\x00"
    with pytest.raises(UnsupportedVersionError) as info:
        parse_request(frame)
    out = encode_api_versions_fallback(info.value.header)
    size, correlation_id = struct.unpack_from(">ii", out)
    assert (size, correlation_id) == (len(out) - 4, 77)
    response_cls = response_class(18, 0)
    body, used = entity_reader(response_cls)(out, 8)  # header v0: no tagged fields
    assert used == len(out) - 8
    assert body.error_code == ErrorCode.unsupported_version
    assert {a.api_key: (a.min_version, a.max_version) for a in body.api_keys} == SUPPORTED_APIS


@pytest.mark.parametrize(
    "frame",
    [
        b"\x00\x03\x00\x0c\x00\x00\x00\x01",  # no client id length
        b"\x00\x03\x00\x0c\x00\x00\x00\x01\x00\x05ab",  # client id runs past end
        b"\x00\x03\x00\x0c\x00\x00\x00\x01\xff\xff",  # flexible header without tag section
        b"\x00\x03\x00\x0c\x00\x00\x00\x01\xff\xff\x00\x05",  # body truncated
        b"\x00\x12\x00\x00\x00\x00\x00\x01\x00\x02\xff\xfe",  # client id not utf-8
    ],
)
def test_malformed_requests_raise_invalid_request(frame):
    with pytest.raises(InvalidRequestError):
        parse_request(frame)


def test_invalid_body_error_carries_header():
    with pytest.raises(InvalidRequestError) as info:
        parse_request(b"\x00\x03\x00\x0c\x00\x00\x00\x01\xff\xff\x00\x05")
    assert info.value.header == RequestHeader(3, 12, 1, None)


def decode_response(out: bytes, api_key: int, version: int, header_v1: bool):
    size, correlation_id = struct.unpack_from(">ii", out)
    assert size == len(out) - 4
    pos = 8
    if header_v1:
        assert out[pos] == 0  # empty tagged-field section
        pos += 1
    body, used = entity_reader(response_class(api_key, version))(out, pos)
    assert pos + used == len(out)
    return correlation_id, body


@pytest.mark.parametrize(("api_key", "version"), list(all_versions(SUPPORTED_APIS)))
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_encode_response_uses_the_right_header_version(api_key, version, data):
    cls = response_class(api_key, version)
    response = data.draw(st.from_type(cls))
    header = RequestHeader(api_key, version, 4242, "c")
    out = encode_response(header, response)
    header_v1 = cls.__flexible__ and api_key != ApiKey.API_VERSIONS
    assert decode_response(out, api_key, version, header_v1) == (4242, response)


@pytest.mark.parametrize("version", range(5))
def test_api_versions_response_lists_supported_apis_with_header_v0(version):
    header = RequestHeader(18, version, 3, "rdkafka")
    out = encode_response(header, api_versions_response(version))
    correlation_id, body = decode_response(out, 18, version, header_v1=False)
    assert correlation_id == 3
    assert body.error_code == ErrorCode.none
    assert {a.api_key: (a.min_version, a.max_version) for a in body.api_keys} == SUPPORTED_APIS


def test_api_versions_v3_omits_default_tagged_fields():
    out = encode_response(RequestHeader(18, 3, 1, None), api_versions_response(3))
    entries = len(SUPPORTED_APIS)
    # header v0 (4) + error (2) + compact array (1) + entries * (6 + tags 1) + throttle (4)
    # + an empty top-level tag section (1): no finalized_features_epoch=-1 etc.
    assert len(out) - 4 == 4 + 2 + 1 + entries * 7 + 4 + 1
    assert out[-1] == 0


def test_encode_response_rejects_a_mismatched_body():
    with pytest.raises(TypeError):
        encode_response(RequestHeader(18, 2, 1, None), api_versions_response(3))


def test_encode_response_accepts_pre_encoded_body():
    out = encode_response(RequestHeader(3, 12, 9, None), b"BODY")
    assert out == struct.pack(">ii", 9, 9) + b"\x00BODY"
    out = encode_response(RequestHeader(3, 1, 9, None), b"BODY")
    assert out == struct.pack(">ii", 8, 9) + b"BODY"


def test_build_and_millis_hide_kio_value_types():
    module = response_module(0, 10)
    partition = build(
        module.PartitionProduceResponse,
        index=1,
        error_code=3,
        base_offset=10,
        log_append_time=1_700_000_000_123,
        record_errors=[],
    )
    assert partition.error_code is ErrorCode.unknown_topic_or_partition
    assert millis(partition.log_append_time) == 1_700_000_000_123
    assert (
        build(
            module.PartitionProduceResponse,
            index=0,
            error_code=0,
            base_offset=0,
            log_append_time=-1,
            record_errors=[],
        ).log_append_time
        is None
    )
    response = build(module.ProduceResponse, responses=[], throttle_time=250)
    assert millis(response.throttle_time) == 250
    assert millis(datetime.timedelta(days=1, milliseconds=5)) == 86_400_005
    assert millis(None) == -1


def test_every_request_schema_has_a_bounds_plan():
    for apis in (SUPPORTED_APIS, FUTURE_APIS):
        for key in apis:
            low, high = decodable_range(key, apis)
            for version in range(low, high + 1):
                prepare(request_class(key, version))


@pytest.mark.parametrize(
    ("version", "body"),
    [
        (12, b"\xff\xff\xff\xff\x0f\x00\x00\x00"),  # compact topics array of 2**32 - 2
        (12, b"\x02\x00" + b"\xff\xff\xff\xff\x0f"),  # compact topic name of ~2**32 bytes
        (1, b"\x7f\xff\xff\xff\x00\x00"),  # legacy topics array of 2**31 - 1
        (4, b"\x00\x00\x00\x01\x7f\xff\x41"),  # a topic name longer than the frame
    ],
)
def test_claimed_sizes_beyond_the_frame_are_rejected_before_decoding(version, body):
    # Without the bounds walk kio would try to allocate for the claimed count and abort.
    header = struct.pack(">hhih", 3, version, 1, -1) + (b"\x00" if version >= 9 else b"")
    with pytest.raises(InvalidRequestError):
        parse_request(header + body)


def test_unknown_tagged_field_is_an_invalid_request_not_a_crash():
    # Metadata v12 with an empty topic list followed by a tag kio does not know (tag 9).
    frame = struct.pack(">hhih", 3, 12, 1, -1) + b"\x00" + b"\x01\x00\x00" + b"\x01\x09\x01z"
    with pytest.raises(InvalidRequestError):
        parse_request(frame)
