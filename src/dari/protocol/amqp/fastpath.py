"""Hand-written codecs for the per-message methods: publish, deliver, get-ok, return, ack,
nack, reject.

pamqp spends ~13 µs to unmarshal one publish+header+body and ~13 µs to marshal one deliver;
these struct-based codecs do each in about a microsecond, which is what lets one core reach
RabbitMQ-class message rates. Every other method goes through ``dari.protocol.amqp.methods``.

The content header is *not* re-encoded on the way through the broker: ``ContentHeader.raw``
holds the header frame payload exactly as the publisher sent it and ``encode_deliver`` (and
friends) forward it byte-for-byte; only the fields the broker needs are parsed, on demand.
The content header and property codec is ``dari.protocol.amqp.properties``; its names are
re-exported here, where the connection and the package import them from.
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

from dari.protocol.amqp.errors import FrameError
from dari.protocol.amqp.framing import FRAME_OVERHEAD
from dari.protocol.amqp.properties import (
    BASIC_CLASS,
    ContentHeader,
    Properties,
    encode_content_header,
    encode_properties,
)

__all__ = [
    "ACK",
    "BASIC_CLASS",
    "DELIVER",
    "GET_OK",
    "NACK",
    "PUBLISH",
    "REJECT",
    "RETURN",
    "Ack",
    "ContentHeader",
    "DeliverEncoder",
    "Nack",
    "Properties",
    "Publish",
    "Reject",
    "decode_ack",
    "decode_nack",
    "decode_publish",
    "decode_reject",
    "encode_ack",
    "encode_content_header",
    "encode_deliver",
    "encode_get_ok",
    "encode_nack",
    "encode_properties",
    "encode_return",
]

# Method indexes: class_id << 16 | method_id, as read by one ">I" from a method payload.
PUBLISH = 0x003C0028
RETURN = 0x003C0032
DELIVER = 0x003C003C
GET_OK = 0x003C0047
ACK = 0x003C0050
REJECT = 0x003C005A
NACK = 0x003C0078

_HEAD = struct.Struct(">BHI")
_U8 = struct.Struct(">B")
_TAG_BITS = struct.Struct(">QB")
_METHOD_TAG_BITS = struct.Struct(">IQB")
_HEAD12 = struct.Struct(">HHQ")  # content header: class id, weight, body size
_DELIVER_HEAD = struct.Struct(">BHIIB")  # frame head + method index + consumer-tag length
_MAX_BODY_SIZE = 2**63 - 1


class Publish(NamedTuple):
    """basic.publish (its content arrives with it in ``ContentReceived``)."""

    exchange: str
    routing_key: str
    mandatory: bool = False
    immediate: bool = False


class Ack(NamedTuple):
    """basic.ack (from a consumer) — or, encoded by us, a publisher confirm."""

    delivery_tag: int
    multiple: bool = False


class Nack(NamedTuple):
    """basic.nack (RabbitMQ extension)."""

    delivery_tag: int
    multiple: bool = False
    requeue: bool = True


class Reject(NamedTuple):
    """basic.reject."""

    delivery_tag: int
    requeue: bool = True


def _truncated(what: str, index: int) -> FrameError:
    return FrameError(f"truncated {what}", class_id=index >> 16, method_id=index & 0xFFFF)


def _name(payload: Any, pos: int, what: str, index: int) -> tuple[str, int]:
    n = payload[pos]
    end = pos + 1 + n
    if end > len(payload):
        raise _truncated(what, index)
    return str(payload[pos + 1 : end], "utf-8", "surrogateescape"), end


def decode_publish(payload: Any) -> Publish:
    """basic.publish from a method payload (starting with the class/method ids)."""
    data = bytes(payload)
    try:
        n = data[6]  # after 4 bytes of ids and the 2-byte ticket
        pos = 7 + n
        exchange = data[7:pos].decode("utf-8", "surrogateescape")
        n = data[pos]
        end = pos + 1 + n
        routing_key = data[pos + 1 : end].decode("utf-8", "surrogateescape")
        bits = data[end]
    except IndexError:
        raise _truncated("basic.publish", PUBLISH) from None
    return Publish(exchange, routing_key, bool(bits & 1), bool(bits & 2))


def _tag_bits(payload: Any, index: int, what: str) -> tuple[int, int]:
    try:
        return _TAG_BITS.unpack_from(payload, 4)
    except struct.error:
        raise _truncated(what, index) from None


def decode_ack(payload: Any) -> Ack:
    tag, bits = _tag_bits(payload, ACK, "basic.ack")
    return Ack(tag, bool(bits & 1))


def decode_nack(payload: Any) -> Nack:
    tag, bits = _tag_bits(payload, NACK, "basic.nack")
    return Nack(tag, bool(bits & 1), bool(bits & 2))


def decode_reject(payload: Any) -> Reject:
    tag, bits = _tag_bits(payload, REJECT, "basic.reject")
    return Reject(tag, bool(bits & 1))


# -- outbound messages ----------------------------------------------------------------------


def _content_frames(
    parts: list[Any], channel: int, header: Any, body: Any, frame_max: int
) -> bytes:
    if type(header) is not bytes:
        header = header.raw if isinstance(header, ContentHeader) else bytes(header)
    parts.append(_HEAD.pack(2, channel, len(header)))
    parts.append(header)
    parts.append(b"\xce")
    size = len(body)
    chunk = frame_max - FRAME_OVERHEAD if frame_max else size
    if size <= chunk:
        if size:
            parts.append(_HEAD.pack(3, channel, size))
            parts.append(body)
            parts.append(b"\xce")
    else:
        view = memoryview(body)
        for start in range(0, size, chunk):
            piece = view[start : start + chunk]
            parts.append(_HEAD.pack(3, channel, len(piece)))
            parts.append(piece)
            parts.append(b"\xce")
    return b"".join(parts)


def _b(value: str | bytes) -> bytes:
    return value.encode("utf-8", "surrogateescape") if type(value) is str else value  # type: ignore[return-value]


def encode_deliver(
    channel: int,
    consumer_tag: str | bytes,
    delivery_tag: int,
    redelivered: bool,
    exchange: str | bytes,
    routing_key: str | bytes,
    header: ContentHeader | bytes,
    body: bytes | bytearray | memoryview,
    frame_max: int,
) -> bytes:
    """basic.deliver + the content header (a received ``ContentHeader`` or a header payload;
    its properties are forwarded byte-for-byte) + body frames of at most ``frame_max`` bytes
    each (0 = unlimited). Names may be given pre-encoded as bytes. One delivery through the
    ``DeliverEncoder`` the channels use."""
    raw = header.raw if isinstance(header, ContentHeader) else bytes(header)
    parts: list[bytes] = []
    DeliverEncoder(channel, consumer_tag, frame_max).add(
        parts, delivery_tag, redelivered, exchange, routing_key, raw[12:], body
    )
    return b"".join(parts)


_TAG_REDELIVERED = struct.Struct(">QB")
_HEADER_FRAME_HEAD = struct.Struct(">BHIHHQ")  # frame head + class, weight, body size
_BODY_FRAME_HEAD = struct.Struct(">BBHI")  # the previous frame's end + a body frame head
_ROUTES_MAX = 1024


class DeliverEncoder:
    """basic.deliver + content frames for one consumer, appended to a list of byte strings.

    A consumer receives thousands of messages per second with the same consumer tag, on the
    same channel, mostly from the same exchange and routing key: those parts are encoded once
    (per distinct exchange and routing key, in a small cache) and each message costs three
    ``struct`` packs. The properties are the raw bytes the publisher sent. Channels get one
    per consumer from ``AMQPConnection.deliver_encoder`` and send each batch's frames through
    ``AMQPConnection.send_deliveries``, so the connection's state checks apply to them. Owned
    by one channel; not thread-safe.
    """

    __slots__ = ("_chunk", "_routes", "channel", "consumer_tag", "frame_max")

    def __init__(self, channel: int, consumer_tag: str | bytes, frame_max: int) -> None:
        self.channel = channel
        self.consumer_tag = _b(consumer_tag)
        if len(self.consumer_tag) > 255:
            raise ValueError("short string longer than 255 bytes")
        self.frame_max = frame_max
        self._chunk = frame_max - FRAME_OVERHEAD if frame_max else _MAX_BODY_SIZE
        # (exchange, routing key) -> (method frame head + consumer tag, names + frame end)
        self._routes: dict[tuple[str | bytes, str | bytes], tuple[bytes, bytes]] = {}

    def _route(self, exchange: str | bytes, routing_key: str | bytes) -> tuple[bytes, bytes]:
        ex, rk = _b(exchange), _b(routing_key)
        if len(ex) > 255 or len(rk) > 255:
            raise ValueError("short string longer than 255 bytes")
        ctag = self.consumer_tag
        size = 4 + 1 + len(ctag) + 8 + 1 + 1 + len(ex) + 1 + len(rk)
        head = _DELIVER_HEAD.pack(1, self.channel, size, DELIVER, len(ctag)) + ctag
        names = b"".join((_U8.pack(len(ex)), ex, _U8.pack(len(rk)), rk, b"\xce"))
        if len(self._routes) >= _ROUTES_MAX:
            self._routes.clear()
        route = self._routes[(exchange, routing_key)] = (head, names)
        return route

    def add(
        self,
        parts: list[bytes],
        delivery_tag: int,
        redelivered: bool,
        exchange: str | bytes,
        routing_key: str | bytes,
        properties: bytes,
        body: bytes | bytearray | memoryview,
    ) -> None:
        """Append one delivery's frames to ``parts``; ``properties`` are the raw property
        bytes (property flags onwards) of the content header."""
        route = self._routes.get((exchange, routing_key)) or self._route(exchange, routing_key)
        channel = self.channel
        size = len(body)
        if 0 < size <= self._chunk:
            parts += (
                route[0],
                _TAG_REDELIVERED.pack(delivery_tag, redelivered),
                route[1],
                _HEADER_FRAME_HEAD.pack(2, channel, 12 + len(properties), BASIC_CLASS, 0, size),
                properties,
                _BODY_FRAME_HEAD.pack(0xCE, 3, channel, size),
                body,
                b"\xce",
            )
            return
        parts += (route[0], _TAG_REDELIVERED.pack(delivery_tag, redelivered), route[1])
        header = _HEAD12.pack(BASIC_CLASS, 0, size) + properties
        parts.append(_content_frames([], channel, header, body, self.frame_max))


def encode_get_ok(
    channel: int,
    delivery_tag: int,
    redelivered: bool,
    exchange: str | bytes,
    routing_key: str | bytes,
    message_count: int,
    header: ContentHeader | bytes,
    body: bytes | bytearray | memoryview,
    frame_max: int,
) -> bytes:
    """basic.get-ok + content (see ``encode_deliver``)."""
    ex, rk = _b(exchange), _b(routing_key)
    if len(ex) > 255 or len(rk) > 255:
        raise ValueError("short string longer than 255 bytes")
    size = 4 + 8 + 1 + 1 + len(ex) + 1 + len(rk) + 4
    parts = [
        _HEAD.pack(1, channel, size),
        _METHOD_TAG_BITS.pack(GET_OK, delivery_tag, 1 if redelivered else 0),
        _U8.pack(len(ex)),
        ex,
        _U8.pack(len(rk)),
        rk,
        struct.pack(">I", message_count),
        b"\xce",
    ]
    return _content_frames(parts, channel, header, body, frame_max)


def encode_return(
    channel: int,
    reply_code: int,
    reply_text: str | bytes,
    exchange: str | bytes,
    routing_key: str | bytes,
    header: ContentHeader | bytes,
    body: bytes | bytearray | memoryview,
    frame_max: int,
) -> bytes:
    """basic.return (an unroutable mandatory message) + content."""
    text, ex, rk = _b(reply_text)[:255], _b(exchange), _b(routing_key)
    if len(ex) > 255 or len(rk) > 255:
        raise ValueError("short string longer than 255 bytes")
    size = 4 + 2 + 1 + len(text) + 1 + len(ex) + 1 + len(rk)
    parts = [
        _HEAD.pack(1, channel, size),
        struct.pack(">IHB", RETURN, reply_code, len(text)),
        text,
        _U8.pack(len(ex)),
        ex,
        _U8.pack(len(rk)),
        rk,
        b"\xce",
    ]
    return _content_frames(parts, channel, header, body, frame_max)


_ACK_FRAME = struct.Struct(">BHIIQBB")


def encode_ack(channel: int, delivery_tag: int, multiple: bool = False) -> bytes:
    """basic.ack frame (a publisher confirm when sent by the broker)."""
    return _ACK_FRAME.pack(1, channel, 13, ACK, delivery_tag, 1 if multiple else 0, 0xCE)


def encode_nack(
    channel: int, delivery_tag: int, multiple: bool = False, requeue: bool = False
) -> bytes:
    """basic.nack frame (a negative publisher confirm when sent by the broker)."""
    bits = (1 if multiple else 0) | (2 if requeue else 0)
    return _ACK_FRAME.pack(1, channel, 13, NACK, delivery_tag, bits, 0xCE)
