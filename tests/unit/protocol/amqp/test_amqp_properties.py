"""The one basic-properties codec: parse, lazy ContentHeader, full decode and encode agree with
pamqp, pika and each other."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import commands
from pamqp import frame as pframe
from pamqp import header as pheader

from dari.protocol.amqp import FrameError
from dari.protocol.amqp.framing import FrameReader
from dari.protocol.amqp.properties import (
    EMPTY_PROPERTIES,
    ContentHeader,
    Properties,
    decode_properties,
    encode_content_header,
    encode_properties,
    headers_table,
    parse_properties,
    typed_headers,
)
from dari.protocol.amqp.table import Field

_HEAD = b"\x00\x3c\x00\x00" + bytes(8)  # class 60, weight 0, body size 0


def pamqp_frames(data: bytes) -> list:
    out, pos = [], 0
    while pos < len(data):
        used, channel, value = pframe.unmarshal(data[pos:])
        out.append((channel, value))
        pos += used
    return out


def payload(data: bytes) -> bytes:
    """Payload of a single encoded frame."""
    reader = FrameReader(frame_max=0)
    reader.feed(data)
    frame = reader.next_frame()
    assert frame is not None and reader.next_frame() is None
    return bytes(frame[2])


# -- parse_properties: the fields a queue acts on ---------------------------------------------


def test_properties_parse_the_fields_the_queue_needs() -> None:
    raw = encode_properties(
        content_type="application/json", delivery_mode=2, priority=7, expiration="1500"
    )
    assert parse_properties(raw) == (2, 7, "1500")
    assert parse_properties(memoryview(raw)) == (2, 7, "1500")
    assert parse_properties(EMPTY_PROPERTIES) == (0, None, None)


def test_properties_with_headers_table_and_timestamp_are_walked() -> None:
    table = b"\x00\x00\x00\x06" + b"\x01aS\x00\x00\x00"  # not decoded: only skipped
    timestamp = (1_700_000_000).to_bytes(8, "big")
    raw = b"\x30\x40" + table + b"\x01" + timestamp  # headers, delivery_mode, timestamp
    assert parse_properties(raw) == (1, None, None)


def test_a_continuation_flags_word_without_flags_is_accepted() -> None:
    assert parse_properties(b"\x10\x01\x00\x00\x02") == (2, None, None)
    assert ContentHeader(_HEAD + b"\x10\x01\x00\x00\x02").delivery_mode == 2


MALFORMED = [
    b"",  # shorter than the flags word
    b"\x10",
    b"\x10\x00",  # delivery_mode flagged, missing
    b"\x80\x00\x05ab",  # content_type truncated
    b"\x01\x00\x04ab",  # expiration truncated
    b"\x00\x00x",  # trailing bytes
    b"\x00\x02",  # unknown flag bit
    b"\x20\x00\x00\x00\x00\x09",  # headers longer than the properties
    b"\x00\x01\x80\x00",  # flags beyond the basic class
    b"\x00\x01\x00",  # truncated continuation word
]


@pytest.mark.parametrize("raw", MALFORMED)
def test_malformed_properties_raise_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError):
        parse_properties(raw)


@pytest.mark.parametrize("raw", [b"\x00\x3c\x00\x00", *(_HEAD + raw for raw in MALFORMED)])
def test_malformed_content_headers_are_frame_errors(raw: bytes) -> None:
    with pytest.raises(FrameError):
        ContentHeader(raw)


# -- ContentHeader: a received header frame ---------------------------------------------------

short = st.text(max_size=20)
pamqp_properties = st.builds(
    commands.Basic.Properties,
    content_type=st.none() | short,
    content_encoding=st.none() | short,
    headers=st.none() | st.dictionaries(st.text(min_size=1, max_size=8), st.integers(0, 10**6)),
    delivery_mode=st.none() | st.sampled_from([1, 2]),
    priority=st.none() | st.integers(0, 255),
    correlation_id=st.none() | short,
    reply_to=st.none() | short,
    expiration=st.none() | st.integers(0, 10**9).map(str),
    message_id=st.none() | short,
    message_type=st.none() | short,
    user_id=st.none() | short,
    app_id=st.none() | short,
)


def _empty_to_none(value):
    return None if value in ("", {}) else value


@settings(max_examples=200, deadline=None)
@given(pamqp_properties, st.integers(0, 2**40))
def test_content_header_from_pamqp(props, body_size):
    raw = payload(pframe.marshal(pheader.ContentHeader(0, body_size, props), 1))
    header = ContentHeader(raw)
    assert (header.class_id, header.body_size, header.raw) == (60, body_size, raw)
    assert header.delivery_mode == props.delivery_mode
    assert header.priority == props.priority
    assert header.expiration == _empty_to_none(props.expiration)
    assert header.reply_to == _empty_to_none(props.reply_to)
    assert header.correlation_id == _empty_to_none(props.correlation_id)
    assert header.message_id == _empty_to_none(props.message_id)
    assert header.user_id == _empty_to_none(props.user_id)
    assert (header.headers or None) == _empty_to_none(props.headers)
    full = header.properties()
    assert full.type == _empty_to_none(props.message_type)
    assert full.app_id == _empty_to_none(props.app_id)
    # Re-encoding the decoded properties reproduces the bytes.
    assert encode_content_header(body_size, full) == raw
    # The readers of bare property bytes agree with the header.
    assert decode_properties(header.raw_properties) == full
    assert parse_properties(header.raw_properties) == (
        header.delivery_mode or 0, header.priority, header.expiration
    )
    assert headers_table(header.raw_properties) == header.headers


@settings(max_examples=100, deadline=None)
@given(
    st.builds(
        Properties,
        content_type=st.none() | short,
        headers=st.none() | st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=5)),
        delivery_mode=st.none() | st.sampled_from([1, 2]),
        priority=st.none() | st.integers(0, 9),
        correlation_id=st.none() | short.filter(bool),
        timestamp=st.none() | st.integers(0, 2**32),
        type=st.none() | short.filter(bool),
    ),
    st.integers(0, 10**6),
)
def test_encoded_content_header_decodes_in_pamqp(props, body_size):
    raw = encode_content_header(body_size, props)
    [(_ch, header)] = pamqp_frames(b"\x02\x00\x01" + len(raw).to_bytes(4, "big") + raw + b"\xce")
    assert header.body_size == body_size
    assert header.properties.delivery_mode == props.delivery_mode
    assert header.properties.priority == props.priority
    assert header.properties.content_type == props.content_type
    assert header.properties.correlation_id == props.correlation_id
    assert header.properties.message_type == props.type
    assert (header.properties.headers or None) == (props.headers or None)


# -- encode_properties / decode_properties ----------------------------------------------------


def test_encode_takes_properties_or_fields_and_fields_replace() -> None:
    assert encode_properties() == EMPTY_PROPERTIES == encode_properties(Properties())
    assert encode_properties(delivery_mode=2, expiration="5") == encode_properties(
        Properties(delivery_mode=2, expiration="5")
    )
    full = Properties(content_type="a/b", delivery_mode=2, expiration="60000")
    assert encode_properties(full, expiration=None) == encode_properties(
        content_type="a/b", delivery_mode=2
    )
    with pytest.raises(TypeError):
        encode_properties(no_such_property=1)


def test_encode_is_in_flag_order_whatever_the_fields_order() -> None:
    raw = encode_properties(expiration="9", content_type="t", delivery_mode=1)
    assert raw == b"\x91\x00" + b"\x01t" + b"\x01" + b"\x019"


def test_decode_then_encode_keeps_a_decoded_table_byte_for_byte() -> None:
    entries = b"\x01nl" + (5).to_bytes(8, "big") + b"\x01xV"  # a 64-bit 5, a void
    raw = b"\x20\x00" + len(entries).to_bytes(4, "big") + entries
    props = decode_properties(raw)
    assert props.headers == {"n": 5, "x": None}
    assert encode_properties(props) == raw
    assert decode_properties(EMPTY_PROPERTIES) == Properties()


def test_headers_with_wire_types() -> None:
    raw = encode_properties(headers={"n": Field("l", 5), "s": "text"})
    assert typed_headers(raw) == {"n": Field("l", 5), "s": Field("S", b"text")}
    assert headers_table(raw) == {"n": 5, "s": "text"}
    assert typed_headers(EMPTY_PROPERTIES) == {} and headers_table(EMPTY_PROPERTIES) is None
