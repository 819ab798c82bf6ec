"""Message: the AMQP property API and the lossless record conversions in both directions."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dari.message import Field, Message, encode_properties, header_marker
from dari.protocol.amqp.properties import ContentHeader
from dari.records import build_batch, iter_records
from dari.records.builder import NewRecord
from dari.records.records import Record


def _stored(record: NewRecord, offset: int = 0) -> Record:
    return next(iter_records(build_batch([record], base_offset=offset, now_ms=999)))


def _roundtrip(record: NewRecord, offset: int = 0) -> Message:
    return Message.from_record(_stored(record, offset))


# -- AMQP message -> record -> message --------------------------------------------------------


def test_message_record_roundtrip_is_lossless() -> None:
    props = encode_properties(delivery_mode=2, expiration="60000", content_type="text/plain")
    message = Message.from_amqp("amq.topic", "a.b.ünï", props, b"\x00body\xff")
    back = _roundtrip(message.to_record(1234), offset=42)
    assert back == message.with_offset(42)
    assert back.properties == props  # the raw bytes, byte-for-byte
    assert back.persistent and back.ttl_ms() == 60000


def test_amqp_message_record_has_the_three_headers_and_no_key() -> None:
    message = Message.from_amqp("ex", "rk", encode_properties(priority=3), b"b")
    record = message.to_record(7)
    assert record.key is None and record.value == b"b" and record.timestamp == 7
    assert record.headers == (
        ("x-amqp-exchange", b"ex"),
        ("x-amqp-routing-key", b"rk"),
        ("x-amqp-properties", message.properties),
    )


def test_empty_body_and_names_roundtrip() -> None:
    message = Message("", "", b"")
    assert _roundtrip(message.to_record()) == message.with_offset(0)
    assert (message.key, message.timestamp, message.record) == (None, None, None)


def test_names_that_are_not_utf8_roundtrip() -> None:
    message = Message("\udcff", "k\udcfe", b"x")
    assert _roundtrip(message.to_record(1)) == message.with_offset(0)


# -- Kafka record -> message -> record --------------------------------------------------------


def test_kafka_record_becomes_a_message_with_its_headers_as_amqp_headers() -> None:
    back = _roundtrip(NewRecord(b"key-1", b"payload", (("trace", b"x"),), 5_000), offset=5)
    assert (back.exchange, back.routing_key, back.body) == ("", "key-1", b"payload")
    assert (back.key, back.timestamp, back.offset) == (b"key-1", 5_000, 5)
    assert back.record is not None and back.record.headers == (("trace", b"x"),)
    assert back.headers == {"trace": "x", "x-record-key": "key-1"}
    assert back.typed_headers() == {"trace": Field("S", b"x"), "x-record-key": Field("S", b"key-1")}
    assert back.delivery_mode == 0 and back.priority is None and back.expiration is None
    seen = ContentHeader(back.amqp_header())  # what a consumer gets
    assert seen.headers == {"trace": "x", "x-record-key": "key-1"} and seen.timestamp == 5


def test_kafka_record_without_headers_or_key_has_only_its_timestamp() -> None:
    back = _roundtrip(NewRecord(None, b"v", (), 7_999))
    assert back.properties == encode_properties(timestamp=7) and back.headers is None
    assert (back.routing_key, back.key, back.timestamp) == ("", None, 7_999)


@pytest.mark.parametrize(
    "record",
    [
        NewRecord(b"k", b"v", (("a", b"1"), ("b", None), ("a", b"\xff\x00")), 1_700_000_000_123),
        NewRecord(None, None, (), 1),
        NewRecord(b"", b"", (("x-amqp-exchange", b"ex"), ("n" * 300, b"long")), 2),
        NewRecord(b"\xff\xfe", b"bin", (("h", b""),), 3),
    ],
)
def test_kafka_record_message_record_keeps_key_value_headers_and_timestamp(
    record: NewRecord,
) -> None:
    original = _stored(record)
    again = _stored(Message.from_record(original).to_record())
    assert (again.key, again.value, again.headers, again.timestamp) == (
        original.key, original.value, original.headers, original.timestamp,
    )


@settings(max_examples=100, deadline=None)
@given(
    st.none() | st.binary(max_size=20),
    st.none() | st.binary(max_size=50),
    st.lists(st.tuples(st.text(max_size=10), st.none() | st.binary(max_size=10)), max_size=5),
    st.integers(0, 2**41),
)
def test_any_kafka_record_survives_the_message(key, value, headers, timestamp) -> None:
    original = _stored(NewRecord(key, value, tuple(headers), timestamp))
    message = Message.from_record(original)
    again = _stored(message.to_record())
    assert (again.key, again.value, again.headers, again.timestamp) == (
        original.key, original.value, original.headers, original.timestamp,
    )
    want = {name: Field("V", None) if data is None else Field("S", data) for name, data in headers}
    if key is not None:
        want["x-record-key"] = Field("S", key)
    assert message.typed_headers() == want


def test_kafka_headers_in_the_amqp_view() -> None:
    """Repeated names: the last value; null: void; names AMQP cannot carry are left out;
    x-amqp-exchange/-routing-key name the exchange and routing key instead."""
    record = NewRecord(
        b"k",
        b"v",
        (
            ("a", b"1"),
            ("b", None),
            ("a", b"2"),
            ("n" * 256, b"too long"),
            ("x-amqp-exchange", b"ex"),
            ("x-amqp-routing-key", b"rk"),
        ),
    )
    back = _roundtrip(record)
    assert back.typed_headers() == {
        "a": Field("S", b"2"), "b": Field("V", None), "x-record-key": Field("S", b"k"),
    }
    assert (back.exchange, back.routing_key) == ("ex", "rk")


# -- AMQP message -> stream record (what Kafka consumers read) -------------------------------


def test_stream_record_shows_amqp_headers_and_timestamp_to_kafka() -> None:
    headers = {"s": "text", "n": 42, "t": True, "b": b"\x00\xff", "f": {"a": [1, "x"]}, "v": None}
    props = encode_properties(headers=headers, timestamp=1_700_000_000, delivery_mode=2)
    message = Message.from_amqp("ex", "rk", props, b"body")
    record = message.to_stream_record(5, key=b"rk")
    assert (record.key, record.value, record.timestamp) == (b"rk", b"body", 1_700_000_000_000)
    assert record.headers[:3] == message.to_record().headers[:3]
    assert dict(record.headers[3:]) == {
        "s": b"text", "n": b"42", "t": b"true", "b": b"\x00\xff", "f": b'{"a":[1,"x"]}', "v": None,
    }
    back = _roundtrip(record, offset=3)
    assert back == message.with_offset(3)  # typed AMQP values survive exactly
    assert back.typed_headers() == message.typed_headers()


def test_stream_record_of_a_plain_message_is_its_record() -> None:
    message = Message.from_amqp("ex", "rk", encode_properties(delivery_mode=2), b"b")
    assert message.to_stream_record(9) == message.to_record(9)


def test_stream_record_leaves_x_amqp_headers_inside_the_properties() -> None:
    props = encode_properties(headers={"x-amqp-exchange": "spoof", "ok": "1"})
    record = Message.from_amqp("ex", "rk", props, b"").to_stream_record(1)
    assert [name for name, _ in record.headers].count("x-amqp-exchange") == 1
    assert record.headers[-1] == ("ok", b"1")


def test_an_explicit_timestamp_overrides_the_records_own() -> None:
    message = _roundtrip(NewRecord(b"k", b"v", (), 10))
    assert message.to_record().timestamp == 10
    assert message.to_record(20).timestamp == 20


# -- AMQP properties through the message --------------------------------------------------------


def test_amqp_header_matches_the_protocol_codec() -> None:
    props = encode_properties(delivery_mode=2, priority=1)
    message = Message.from_amqp("", "q", props, b"12345")
    header = ContentHeader(message.amqp_header())
    assert header.body_size == 5
    assert header.raw_properties == props
    assert header.delivery_mode == 2 and header.priority == 1


def test_headers_plain_and_typed() -> None:
    props = encode_properties(headers={"n": Field("l", 5), "s": "text"})
    message = Message.from_amqp("", "q", props, b"")
    assert message.headers == {"n": 5, "s": "text"}
    assert message.typed_headers() == {"n": Field("l", 5), "s": Field("S", b"text")}
    assert Message("", "q", b"").headers is None and Message("", "q", b"").typed_headers() == {}


def test_replace_properties_rewrites_only_what_is_named() -> None:
    props = encode_properties(
        content_type="a/b", delivery_mode=2, expiration="100", headers={"keep": "me"}
    )
    message = Message.from_amqp("ex", "rk", props, b"body").with_offset(9)
    new = message.replace_properties(headers={**message.typed_headers(), "n": 1}, expiration=None)
    assert (new.exchange, new.routing_key, new.body, new.offset) == ("ex", "rk", b"body", -1)
    assert new.properties == encode_properties(
        content_type="a/b", delivery_mode=2, headers={"keep": "me", "n": 1}
    )
    assert (new.delivery_mode, new.expiration) == (2, None)
    assert message.replace_properties().properties == props, "untouched fields kept verbatim"


def test_a_rewritten_kafka_message_becomes_an_amqp_message() -> None:
    message = _roundtrip(NewRecord(b"k", b"v", (("h", b"1"),), 5))
    new = message.replace_properties(priority=4)
    assert new.record is None and new.key is None and new.timestamp is None
    assert new.headers == {"h": "1", "x-record-key": "k"} and new.priority == 4
    assert _roundtrip(new.to_record()) == new.with_offset(0)


def test_header_marker_rules_a_header_out() -> None:
    with_cc = encode_properties(headers={"CC": ["a"]})
    assert header_marker("CC") in with_cc
    assert header_marker("CC") not in encode_properties(headers={"C": "C"})
