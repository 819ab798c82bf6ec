"""The protocol-neutral message, and its lossless conversion to and from a Kafka record.

An AMQP message is kept as the publisher sent it: the raw content-header *property bytes*
(property flags followed by the property list) are forwarded to consumers byte-for-byte, and
only the few fields the queue acts on (delivery mode, priority, expiration) are parsed out.

As a Kafka record a message is ``value = body`` with three record headers carrying the exchange,
the routing key and the raw property bytes, so a message written to a log by a queue reads back
identical, and a record produced by a Kafka client becomes a plain AMQP message.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import NamedTuple

from dari.records.builder import NewRecord
from dari.records.records import Record

EXCHANGE_HEADER = "x-amqp-exchange"
ROUTING_KEY_HEADER = "x-amqp-routing-key"
PROPERTIES_HEADER = "x-amqp-properties"
EMPTY_PROPERTIES = b"\x00\x00"  # property flags word with no property present
PERSISTENT = 2
BASIC_CLASS_ID = 60

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_CONTENT_HEAD = struct.Struct(">HHQ")

# The basic class's properties in flag order (bit 15 first): s = shortstr, t = table,
# o = octet, q = 64-bit timestamp.
_PROPERTY_KINDS = "sstoossssqssss"
_DELIVERY_MODE, _PRIORITY, _EXPIRATION = 3, 4, 7


class Message(NamedTuple):
    """One message as a queue stores and delivers it; immutable and shareable between queues.

    A NamedTuple rather than a frozen dataclass: one is built per published message, and a
    frozen dataclass's ``__init__`` costs about three times as much. ``properties`` are the
    raw AMQP property bytes; ``delivery_mode`` (2 = persistent),
    ``priority`` and ``expiration`` (per-message TTL in ms, as the string AMQP carries) are
    parsed from them. ``offset`` is the record offset in a durable queue's log, -1 elsewhere.
    """

    exchange: str
    routing_key: str
    body: bytes
    properties: bytes = EMPTY_PROPERTIES
    delivery_mode: int = 0
    priority: int | None = None
    expiration: str | None = None
    offset: int = -1

    @classmethod
    def from_amqp(cls, exchange: str, routing_key: str, properties: bytes, body: bytes) -> Message:
        """A message from what basic.publish carried; raises ValueError on malformed
        property bytes."""
        delivery_mode, priority, expiration = parse_properties(properties)
        return cls(exchange, routing_key, body, properties, delivery_mode, priority, expiration)

    @property
    def persistent(self) -> bool:
        return self.delivery_mode == PERSISTENT

    @property
    def size(self) -> int:
        """Body bytes: what x-max-length-bytes counts, as RabbitMQ does."""
        return len(self.body)

    def with_offset(self, offset: int) -> Message:
        return self._replace(offset=offset)

    def amqp_header(self) -> bytes:
        """The whole content-header frame payload (class, weight, body size, properties)."""
        return _CONTENT_HEAD.pack(BASIC_CLASS_ID, 0, len(self.body)) + self.properties

    def ttl_ms(self) -> int | None:
        """The per-message TTL; None when absent or not a non-negative integer (RabbitMQ
        refuses such a publish; the channel layer decides, the queue just ignores it)."""
        text = self.expiration
        if text is None:
            return None
        try:
            value = int(text)
        except ValueError:
            return None
        return value if value >= 0 else None

    # ---- Kafka records ------------------------------------------------------------------------

    def to_record(self, timestamp_ms: int | None = None) -> NewRecord:
        """The record this message is stored as (no key; body as value)."""
        return NewRecord(
            None,
            self.body,
            (
                (EXCHANGE_HEADER, self.exchange.encode("utf-8", "surrogateescape")),
                (ROUTING_KEY_HEADER, self.routing_key.encode("utf-8", "surrogateescape")),
                (PROPERTIES_HEADER, self.properties),
            ),
            timestamp_ms,
        )

    @classmethod
    def from_record(cls, record: Record) -> Message:
        """The message a record holds. Records from Kafka producers (no AMQP headers) become
        messages with the record key as routing key and no properties."""
        exchange = routing_key = None
        properties = None
        for name, value in record.headers:
            if name == EXCHANGE_HEADER:
                exchange = value
            elif name == ROUTING_KEY_HEADER:
                routing_key = value
            elif name == PROPERTIES_HEADER:
                properties = value
        if routing_key is None:
            routing_key = record.key
        props = EMPTY_PROPERTIES if properties is None else bytes(properties)
        delivery_mode, priority, expiration = parse_properties(props)
        return cls(
            _text(exchange),
            _text(routing_key),
            b"" if record.value is None else bytes(record.value),
            props,
            delivery_mode,
            priority,
            expiration,
            record.offset,
        )


def _text(data: bytes | None) -> str:
    return "" if data is None else bytes(data).decode("utf-8", "surrogateescape")


_PARSED: dict[bytes, tuple[int, int | None, str | None]] = {}
_PARSED_MAX = 4096


def parse_properties(raw: bytes | bytearray | memoryview) -> tuple[int, int | None, str | None]:
    """(delivery_mode, priority, expiration) from raw basic property bytes.

    delivery_mode is 0 when absent. Raises ValueError when the bytes are not a well-formed
    property list. Messages mostly repeat a few property blocks (every message read back from
    a queue's log goes through here), so results are cached by the bytes.
    """
    key = raw if type(raw) is bytes else bytes(raw)
    parsed = _PARSED.get(key)
    if parsed is None:
        parsed = _parse_properties(key)
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        _PARSED[key] = parsed
    return parsed


def _parse_properties(raw: bytes) -> tuple[int, int | None, str | None]:
    if len(raw) < 2:
        raise ValueError("property bytes shorter than the flags word")
    (flags,) = _U16.unpack_from(raw, 0)
    pos = 2
    word = flags
    while word & 1:  # continuation flag words (none are defined for the basic class)
        if pos + 2 > len(raw):
            raise ValueError("truncated property flags")
        (word,) = _U16.unpack_from(raw, pos)
        pos += 2
    if not flags & 0xFFFE:
        if pos != len(raw):
            raise ValueError("trailing bytes after the property flags")
        return 0, None, None
    delivery_mode = 0
    priority: int | None = None
    expiration: str | None = None
    try:
        for index, kind in enumerate(_PROPERTY_KINDS):
            if not flags & (1 << (15 - index)):
                continue
            if kind == "s":
                end = pos + 1 + raw[pos]
                if index == _EXPIRATION:
                    expiration = bytes(raw[pos + 1 : end]).decode("utf-8", "surrogateescape")
            elif kind == "o":
                end = pos + 1
                if index == _DELIVERY_MODE:
                    delivery_mode = raw[pos]
                elif index == _PRIORITY:
                    priority = raw[pos]
            elif kind == "q":
                end = pos + 8
            else:
                end = pos + 4 + _U32.unpack_from(raw, pos)[0]
            if end > len(raw):
                raise ValueError(f"property {index} overruns the property bytes")
            pos = end
    except (IndexError, struct.error):
        raise ValueError("truncated property list") from None
    if pos != len(raw):
        raise ValueError("trailing bytes after the property list")
    return delivery_mode, priority, expiration


def encode_properties(
    *,
    delivery_mode: int | None = None,
    priority: int | None = None,
    expiration: str | None = None,
    content_type: str | None = None,
    extra: Sequence[tuple[int, bytes]] = (),
) -> bytes:
    """Raw property bytes for a few common fields (tests, tools and bridged messages).

    ``extra`` adds already-encoded values as (property index, bytes) pairs.
    """
    values: dict[int, bytes] = dict(extra)
    if content_type is not None:
        data = content_type.encode()
        values[0] = bytes([len(data)]) + data
    if delivery_mode is not None:
        values[_DELIVERY_MODE] = bytes([delivery_mode])
    if priority is not None:
        values[_PRIORITY] = bytes([priority])
    if expiration is not None:
        data = expiration.encode()
        values[_EXPIRATION] = bytes([len(data)]) + data
    flags = 0
    for index in values:
        flags |= 1 << (15 - index)
    return _U16.pack(flags) + b"".join(values[i] for i in sorted(values))
