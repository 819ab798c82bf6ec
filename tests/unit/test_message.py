"""Message: property parsing and the lossless record conversion."""

from __future__ import annotations

import pytest

from dari.message import EMPTY_PROPERTIES, Message, encode_properties, parse_properties
from dari.records import build_batch, iter_records
from dari.records.builder import NewRecord


def _roundtrip(record: NewRecord, offset: int = 0) -> Message:
    return Message.from_record(next(iter_records(build_batch([record], base_offset=offset))))


def test_properties_parse_the_fields_the_queue_needs() -> None:
    raw = encode_properties(
        content_type="application/json", delivery_mode=2, priority=7, expiration="1500"
    )
    assert parse_properties(raw) == (2, 7, "1500")
    assert parse_properties(EMPTY_PROPERTIES) == (0, None, None)


def test_properties_with_headers_table_and_timestamp_are_walked() -> None:
    table = b"\x00\x00\x00\x06" + b"\x01aS\x00\x00\x00\x00"[:6]
    timestamp = (1_700_000_000).to_bytes(8, "big")
    raw = encode_properties(delivery_mode=1, extra=[(2, table), (9, timestamp)])
    assert parse_properties(raw) == (1, None, None)


@pytest.mark.parametrize("raw", [b"", b"\x10", b"\x10\x00", b"\x01\x00\x04ab", b"\x00\x00x"])
def test_malformed_properties_raise(raw: bytes) -> None:
    with pytest.raises(ValueError):
        parse_properties(raw)


def test_message_record_roundtrip_is_lossless() -> None:
    props = encode_properties(delivery_mode=2, expiration="60000", content_type="text/plain")
    message = Message.from_amqp("amq.topic", "a.b.ünï", props, b"\x00body\xff")
    back = _roundtrip(message.to_record(1234), offset=42)
    assert back == message.with_offset(42)
    assert back.properties == props  # the raw bytes, byte-for-byte
    assert back.persistent and back.ttl_ms() == 60000


def test_empty_body_and_names_roundtrip() -> None:
    message = Message("", "", b"")
    assert _roundtrip(message.to_record()) == message.with_offset(0)


def test_kafka_record_without_amqp_headers_becomes_a_plain_message() -> None:
    back = _roundtrip(NewRecord(b"key-1", b"payload", (("trace", b"x"),)), offset=5)
    assert (back.exchange, back.routing_key, back.body) == ("", "key-1", b"payload")
    assert back.properties == EMPTY_PROPERTIES and back.delivery_mode == 0
    assert back.offset == 5


def test_amqp_header_matches_the_protocol_codec() -> None:
    fastpath = pytest.importorskip("dari.protocol.amqp.fastpath")
    props = encode_properties(delivery_mode=2, priority=1)
    message = Message.from_amqp("", "q", props, b"12345")
    header = fastpath.ContentHeader(message.amqp_header())
    assert header.body_size == 5
    assert header.raw_properties == props
    assert header.delivery_mode == 2 and header.priority == 1
