"""Hand-written codecs for the per-message methods: publish, content header, deliver,
get-ok, return, ack, nack, reject.

pamqp spends ~13 µs to unmarshal one publish+header+body and ~13 µs to marshal one deliver;
these struct-based codecs do each in about a microsecond, which is what lets one core reach
RabbitMQ-class message rates. Every other method goes through ``dari.protocol.amqp.methods``.

The content header is *not* re-encoded on the way through the broker: ``ContentHeader.raw``
holds the header frame payload exactly as the publisher sent it and ``encode_deliver`` (and
friends) forward it byte-for-byte; only the fields the broker needs are parsed, on demand.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, NamedTuple

from dari.protocol.amqp.errors import FrameError
from dari.protocol.amqp.framing import FRAME_OVERHEAD
from dari.protocol.amqp.table import Table, decode_table, encode_table

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

BASIC_CLASS = 60
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
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_TAG_BITS = struct.Struct(">QB")
_METHOD_TAG_BITS = struct.Struct(">IQB")
_CONTENT_HEAD = struct.Struct(">HHQH")
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


# -- content header -----------------------------------------------------------------------

# (name, flag bit, kind) in wire order; kinds: s = shortstr, o = octet, q = u64, t = table
_PROPERTIES = (
    ("content_type", 1 << 15, "s"),
    ("content_encoding", 1 << 14, "s"),
    ("headers", 1 << 13, "t"),
    ("delivery_mode", 1 << 12, "o"),
    ("priority", 1 << 11, "o"),
    ("correlation_id", 1 << 10, "s"),
    ("reply_to", 1 << 9, "s"),
    ("expiration", 1 << 8, "s"),
    ("message_id", 1 << 7, "s"),
    ("timestamp", 1 << 6, "q"),
    ("type", 1 << 5, "s"),
    ("user_id", 1 << 4, "s"),
    ("app_id", 1 << 3, "s"),
    ("cluster_id", 1 << 2, "s"),
)
_KNOWN_FLAGS = sum(bit for _n, bit, _k in _PROPERTIES)
_KIND = {name: kind for name, _bit, kind in _PROPERTIES}
_PLANS: dict[int, tuple[tuple[str, str], ...]] = {}  # flags -> present (name, kind)


@dataclass(frozen=True, slots=True)
class Properties:
    """All basic properties, for building a new content header (e.g. when dead-lettering
    adds ``x-death``); ``headers`` may be a decoded ``Table`` (written back verbatim) or any
    mapping (encoded with ``encode_table``)."""

    content_type: str | None = None
    content_encoding: str | None = None
    headers: Any = None
    delivery_mode: int | None = None
    priority: int | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    expiration: str | None = None
    message_id: str | None = None
    timestamp: int | None = None
    type: str | None = None
    user_id: str | None = None
    app_id: str | None = None
    cluster_id: str | None = None


_HEAD12 = struct.Struct(">HHQ")
# property bytes (flags onwards) -> (flags, spans) of headers already validated once
_LAYOUTS: dict[bytes, tuple[int, dict[str, tuple[int, int]] | None]] = {}
_LAYOUTS_MAX = 4096


class ContentHeader:
    """A received content header: the raw frame payload plus lazily parsed fields.

    ``raw`` (bytes) is what gets forwarded to consumers. ``class_id``, ``body_size`` and
    ``flags`` are read on construction, which also walks the property list once to validate
    it (a malformed header raises ``FrameError``) and records where each field lies; values
    are decoded on first access. ``headers`` decodes the table on first access and may raise
    ``AMQPError`` (502) if its contents are malformed. Immutable once built; no thread-safety
    concerns beyond that.
    """

    __slots__ = (
        "_headers", "_spans", "body_size", "class_id", "flags", "raw", "raw_properties", "weight",
    )

    def __init__(self, raw: bytes | bytearray | memoryview) -> None:
        self.raw = raw if type(raw) is bytes else bytes(raw)
        # the property flags and values (what a message stores and consumers get)
        self.raw_properties = self.raw[12:]
        # Publishers mostly repeat one property block: reuse its validated layout.
        cached = _LAYOUTS.get(self.raw_properties)
        if cached is not None:
            self.class_id, self.weight, self.body_size = _HEAD12.unpack_from(self.raw, 0)
            self.flags, self._spans = cached
            self._headers = _UNSET
            return
        try:
            self.class_id, self.weight, self.body_size, flags = _CONTENT_HEAD.unpack_from(
                self.raw, 0
            )
        except struct.error:
            raise FrameError("truncated content header") from None
        pos = 14
        word = flags
        while word & 1:
            # A continuation word: basic has only 14 properties, so it must carry no flags.
            if pos + 2 > len(self.raw):
                raise FrameError("truncated content header property flags")
            (word,) = _U16.unpack_from(self.raw, pos)
            pos += 2
            if word & 0xFFFE:
                raise FrameError("content header property flags beyond the basic class")
        flags &= 0xFFFE
        if flags & ~_KNOWN_FLAGS:
            raise FrameError("content header with unknown property flags")
        self.flags = flags
        self._headers: Any = _UNSET
        if flags:
            self._spans: dict[str, tuple[int, int]] | None = self._scan(pos)
        else:
            self._spans = None
            if pos != len(self.raw):
                raise FrameError("trailing bytes after content header properties")
        if len(_LAYOUTS) < _LAYOUTS_MAX:
            _LAYOUTS[self.raw_properties] = (self.flags, self._spans)

    def _scan(self, pos: int) -> dict[str, tuple[int, int]]:
        """Offsets (start, end) of each present property's value."""
        raw = self.raw
        spans = {}
        plan = _PLANS.get(self.flags)
        if plan is None:
            plan = _PLANS[self.flags] = tuple(
                (name, kind) for name, bit, kind in _PROPERTIES if self.flags & bit
            )
        try:
            for name, kind in plan:
                if kind == "s":
                    start = pos + 1
                    end = start + raw[pos]
                elif kind == "o":
                    start, end = pos, pos + 1
                elif kind == "q":
                    start, end = pos, pos + 8
                else:
                    start, end = pos, pos + 4 + _U32.unpack_from(raw, pos)[0]
                spans[name] = (start, end)
                pos = end
        except (IndexError, struct.error):
            raise FrameError("truncated content header properties") from None
        if pos != len(raw):
            raise FrameError(
                "truncated content header properties"
                if pos > len(raw)
                else "trailing bytes after content header properties"
            )
        return spans

    def _get(self, name: str) -> Any:
        spans = self._spans
        if spans is None or name not in spans:
            return None
        start, end = spans[name]
        kind = _KIND[name]
        if kind == "o":
            return self.raw[start]
        if kind == "q":
            return _U64.unpack_from(self.raw, start)[0]
        return self.raw[start:end].decode("utf-8", "surrogateescape")

    @property
    def delivery_mode(self) -> int | None:
        return self._get("delivery_mode")

    @property
    def persistent(self) -> bool:
        return self._get("delivery_mode") == 2

    @property
    def priority(self) -> int | None:
        return self._get("priority")

    @property
    def expiration(self) -> str | None:
        return self._get("expiration")

    @property
    def reply_to(self) -> str | None:
        return self._get("reply_to")

    @property
    def correlation_id(self) -> str | None:
        return self._get("correlation_id")

    @property
    def message_id(self) -> str | None:
        return self._get("message_id")

    @property
    def user_id(self) -> str | None:
        return self._get("user_id")

    @property
    def timestamp(self) -> int | None:
        return self._get("timestamp")

    @property
    def content_type(self) -> str | None:
        return self._get("content_type")

    @property
    def headers(self) -> Table | None:
        """The headers table (plain values; ``.typed()`` for wire types), or None."""
        if self._headers is _UNSET:
            span = self._spans.get("headers") if self._spans else None
            self._headers = decode_table(self.raw, span[0])[0] if span else None
        return self._headers

    def properties(self) -> Properties:
        """Every property decoded (headers included)."""
        values = {name: self._get(name) for name, _bit, kind in _PROPERTIES if kind != "t"}
        return Properties(headers=self.headers, **values)

    def __repr__(self) -> str:
        return (
            f"ContentHeader(class_id={self.class_id}, body_size={self.body_size}, raw={self.raw!r})"
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ContentHeader) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)


_UNSET = object()


def _shortstr(value: str | bytes) -> bytes:
    data = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else bytes(value)
    if len(data) > 255:
        raise ValueError(f"short string longer than 255 bytes: {value!r}")
    return _U8.pack(len(data)) + data


def encode_properties(props: Properties) -> bytes:
    """Property flags and values as they follow class/weight/body-size in a header frame."""
    flags = 0
    parts = [b""]
    for name, bit, kind in _PROPERTIES:
        value = getattr(props, name)
        if value is None:
            continue
        flags |= bit
        if kind == "s":
            parts.append(_shortstr(value))
        elif kind == "o":
            parts.append(_U8.pack(value))
        elif kind == "q":
            parts.append(_U64.pack(value))
        else:
            parts.append(encode_table(value))
    parts[0] = _U16.pack(flags)
    return b"".join(parts)


def encode_content_header(body_size: int, props: Properties, class_id: int = BASIC_CLASS) -> bytes:
    """A content header frame *payload* (wrap it with ``ContentHeader`` to forward it)."""
    return struct.pack(">HHQ", class_id, 0, body_size) + encode_properties(props)


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
