"""Hand-written per-message codecs agree with pamqp and pika in both directions."""

from __future__ import annotations

from decimal import Decimal

import pika.frame
import pika.spec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import body as pbody
from pamqp import commands
from pamqp import frame as pframe
from pamqp import header as pheader

from dari.protocol.amqp import (
    Ack,
    ContentHeader,
    FrameError,
    FrameReader,
    Nack,
    Properties,
    Publish,
    Reject,
    encode_ack,
    encode_content_header,
    encode_deliver,
    encode_get_ok,
    encode_nack,
    encode_return,
)
from dari.protocol.amqp.fastpath import decode_ack, decode_nack, decode_publish, decode_reject

# pamqp validates exchange names against this alphabet.
names = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC0123456789-_.:", max_size=40)
any_names = st.text(max_size=60).filter(lambda s: len(s.encode()) <= 255)
# pamqp reads longlong as signed; real delivery tags stay far below 2**63.
tags = st.integers(min_value=0, max_value=2**63 - 1)


def frames_of(data: bytes) -> list[tuple[int, int, bytes]]:
    reader = FrameReader(frame_max=0)
    reader.feed(data)
    out = []
    while (frame := reader.next_frame()) is not None:
        out.append((frame[0], frame[1], bytes(frame[2])))
    return out


def pamqp_frames(data: bytes) -> list:
    out, pos = [], 0
    while pos < len(data):
        used, channel, value = pframe.unmarshal(data[pos:])
        out.append((channel, value))
        pos += used
    return out


def payload(data: bytes) -> bytes:
    """Payload of a single encoded frame."""
    [(_t, _c, p)] = frames_of(data)
    return p


@settings(max_examples=150, deadline=None)
@given(names, any_names, st.booleans(), st.booleans())
def test_publish_encoded_by_pamqp_decodes(exchange, routing_key, mandatory, immediate):
    method = commands.Basic.Publish(
        exchange=exchange, routing_key=routing_key, mandatory=mandatory, immediate=immediate
    )
    decoded = decode_publish(payload(pframe.marshal(method, 1)))
    assert decoded == Publish(exchange, routing_key, mandatory, immediate)


@settings(max_examples=100, deadline=None)
@given(any_names, any_names, st.booleans())
def test_publish_encoded_by_pika_decodes(exchange, routing_key, mandatory):
    data = pika.frame.Method(
        3, pika.spec.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=mandatory)
    ).marshal()
    assert decode_publish(payload(data)) == Publish(exchange, routing_key, mandatory, False)


def test_publish_names_that_are_not_utf8_survive_a_round_trip():
    method = b"\x00\x3c\x00\x28\x00\x00\x02\xff\xfe\x01k\x00"
    publish = decode_publish(method)
    out = encode_deliver(1, "c", 1, False, publish.exchange, publish.routing_key, b"", b"", 0)
    assert b"\x02\xff\xfe\x01k" in out


@pytest.mark.parametrize("cut", range(4, 12))
def test_truncated_publish_is_a_frame_error(cut):
    method = pframe.marshal(commands.Basic.Publish(exchange="ex", routing_key="rk"), 1)
    with pytest.raises(FrameError):
        decode_publish(payload(method)[:cut])


@settings(max_examples=100, deadline=None)
@given(tags, st.booleans(), st.booleans())
def test_ack_nack_reject_from_pamqp_and_pika(tag, multiple, requeue):
    assert decode_ack(payload(pframe.marshal(commands.Basic.Ack(tag, multiple), 1))) == Ack(
        tag, multiple
    )
    assert decode_nack(
        payload(pframe.marshal(commands.Basic.Nack(tag, multiple, requeue), 1))
    ) == Nack(tag, multiple, requeue)
    assert decode_reject(payload(pframe.marshal(commands.Basic.Reject(tag, requeue), 1))) == Reject(
        tag, requeue
    )
    pika_nack = pika.frame.Method(1, pika.spec.Basic.Nack(tag, multiple, requeue)).marshal()
    assert decode_nack(payload(pika_nack)) == Nack(tag, multiple, requeue)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 65535), tags, st.booleans())
def test_confirms_decode_in_pamqp(channel, tag, multiple):
    [(ch, ack)] = pamqp_frames(encode_ack(channel, tag, multiple))
    assert (ch, ack.name, ack.delivery_tag, ack.multiple) == (channel, "Basic.Ack", tag, multiple)
    [(ch, nack)] = pamqp_frames(encode_nack(channel, tag, multiple, requeue=False))
    assert (nack.name, nack.delivery_tag, nack.multiple, nack.requeue) == (
        "Basic.Nack",
        tag,
        multiple,
        False,
    )


def test_truncated_ack_is_a_frame_error():
    with pytest.raises(FrameError):
        decode_ack(b"\x00\x3c\x00\x50\x00\x00")


# -- content header (forwarded) --------------------------------------------------------------


def test_content_header_from_pika_with_exotic_header_types_is_kept_verbatim():
    props = pika.spec.BasicProperties(
        content_type="text/plain",
        delivery_mode=2,
        headers={
            "big": 2**40,
            "small": 3,
            "pi": Decimal("3.14"),
            "raw": b"\x00\xff",
            "nested": {"a": [1, "b"]},
        },
        expiration="60000",
        reply_to="amq.rabbitmq.reply-to",
        correlation_id="c-1",
        message_id="m-1",
        priority=5,
        timestamp=1_700_000_000,
    )
    raw = payload(pika.frame.Header(1, 11, props).marshal())
    header = ContentHeader(raw)
    assert header.raw == raw
    assert header.persistent and header.priority == 5 and header.expiration == "60000"
    assert header.reply_to == "amq.rabbitmq.reply-to" and header.timestamp == 1_700_000_000
    assert header.headers == {
        "big": 2**40,
        "small": 3,
        "pi": Decimal("3.14"),
        "raw": b"\x00\xff",
        "nested": {"a": [1, "b"]},
    }
    # A deliver forwards the exact header bytes; pika decodes the same properties back.
    out = encode_deliver(1, "ctag", 1, False, "", "q", header, b"hello world", 131072)
    pos, decoded = 0, []
    while pos < len(out):
        used, frame = pika.frame.decode_frame(out[pos:])
        decoded.append(frame)
        pos += used
    assert decoded[1].properties.headers == props.headers
    assert decoded[1].properties.correlation_id == "c-1"
    assert decoded[2].fragment == b"hello world"


# -- deliver / get-ok / return ----------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 65535),
    names,
    tags,
    st.booleans(),
    names,
    any_names,
    st.binary(max_size=3000),
    st.sampled_from([0, 4096, 5000, 131072]),
)
def test_deliver_decodes_in_pamqp(channel, ctag, tag, redelivered, exchange, rk, body, frame_max):
    props = commands.Basic.Properties(content_type="a/b", delivery_mode=2, headers={"x": 1})
    header = payload(pframe.marshal(pheader.ContentHeader(0, len(body), props), channel))
    out = encode_deliver(channel, ctag, tag, redelivered, exchange, rk, header, body, frame_max)
    frames = pamqp_frames(out)
    assert all(ch == channel for ch, _ in frames)
    deliver, content_header, *bodies = (value for _, value in frames)
    assert (deliver.consumer_tag, deliver.delivery_tag, deliver.redelivered) == (
        ctag,
        tag,
        redelivered,
    )
    assert (deliver.exchange, deliver.routing_key) == (exchange, rk)
    assert content_header.properties == props and content_header.body_size == len(body)
    assert b"".join(b.value for b in bodies) == body
    limit = frame_max - 8 if frame_max else len(body)
    assert all(0 < len(b.value) <= limit for b in bodies)
    assert len(bodies) == (-(-len(body) // limit) if body else 0)


@settings(max_examples=60, deadline=None)
@given(tags, st.booleans(), names, any_names, st.integers(0, 2**32 - 1), st.binary(max_size=500))
def test_get_ok_decodes_in_pamqp(tag, redelivered, exchange, rk, count, body):
    header = encode_content_header(len(body), Properties(message_id="m"))
    out = encode_get_ok(2, tag, redelivered, exchange, rk, count, header, body, 4096)
    get_ok, content_header, *bodies = (value for _, value in pamqp_frames(out))
    assert get_ok.name == "Basic.GetOk"
    assert (get_ok.delivery_tag, get_ok.redelivered, get_ok.exchange) == (
        tag,
        redelivered,
        exchange,
    )
    assert (get_ok.routing_key, get_ok.message_count) == (rk, count)
    assert content_header.properties.message_id == "m"
    assert b"".join(b.value for b in bodies) == body


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([312, 313]), names, names, any_names, st.binary(max_size=500))
def test_return_decodes_in_pamqp_and_pika(code, text, exchange, rk, body):
    header = encode_content_header(len(body), Properties())
    out = encode_return(1, code, text, exchange, rk, header, body, 131072)
    returned, _header, *bodies = (value for _, value in pamqp_frames(out))
    assert (returned.reply_code, returned.reply_text) == (code, text)
    assert (returned.exchange, returned.routing_key) == (exchange, rk)
    assert b"".join(b.value for b in bodies) == body
    used, frame = pika.frame.decode_frame(out)
    assert frame.method.reply_code == code and used < len(out)


def test_pamqp_body_frames_are_forwarded_through_a_deliver():
    body = bytes(range(256)) * 100
    header = payload(pframe.marshal(pheader.ContentHeader(0, len(body)), 1))
    out = encode_deliver(1, b"c", 9, True, b"ex", b"rk", header, memoryview(body), 4096)
    frames = frames_of(out)
    assert [t for t, _, _ in frames] == [1, 2] + [3] * 7
    assert b"".join(p for t, _, p in frames if t == 3) == body
    assert (
        pframe.marshal(pbody.ContentBody(body[:4088]), 1)
        == out[sum(len(p) + 8 for _, _, p in frames[:2]) :][: 4088 + 8]
    )
