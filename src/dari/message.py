"""The protocol-neutral message, and its lossless conversions to and from a Kafka record.

One ``Message`` serves both protocols: its body, headers, key and timestamp, and the AMQP
properties it came with. Those are kept as the raw *property bytes* of the AMQP content header
(flags word and property list), forwarded to consumers byte-for-byte; only the fields a queue
acts on (delivery mode, priority, expiration) are parsed out, once per distinct property block
(cached). Headers are decoded on demand (``headers``, ``typed_headers``) and rewritten by
``replace_properties``. This module is the one bridge between the neutral message and the AMQP
wire properties (``dari.protocol.amqp.properties``): the queues domain reads and rewrites a
message through these methods and imports no codec.

A Kafka record holds a message in one of two shapes:

* **An AMQP message** (what a queue writes): ``value = body``, no key, and three record headers
  ``x-amqp-exchange``, ``x-amqp-routing-key`` and ``x-amqp-properties`` (the raw property
  bytes). It reads back identical (with its ``offset``); nothing else of the record is part of
  it (its timestamp is the queue's business, reported beside the message by the log readers).
* **Any other record** (no ``x-amqp-properties``, e.g. from a Kafka producer): the message
  keeps the ``record`` it was read from, so its ``key``, ``timestamp`` and headers survive and
  ``to_record`` gives the same record back (a null value included). Seen from AMQP it comes
  from exchange "" with the key as routing key (``x-amqp-exchange`` and
  ``x-amqp-routing-key`` headers, if present, name them instead); its record headers are its
  AMQP **headers table**, each value a long string (``S``; a null value is void ``V``; of a
  repeated name the last one; names longer than 255 bytes, which AMQP cannot carry, are left
  out), plus its key, if any, as ``x-record-key`` (``KEY_HEADER``); its timestamp is the
  ``timestamp`` property (seconds), and it has no other property (delivery mode 0:
  transient). A null value is an empty body. A message whose properties are rewritten
  (``replace_properties``) is an AMQP message.

What a stream (a topic) stores of an AMQP message, ``to_stream_record``, is the first shape
made readable for Kafka consumers too: the AMQP headers follow the three ``x-amqp-*`` headers
as plain record headers (text as UTF-8, numbers and booleans as their text, tables and arrays
as JSON, byte arrays as they are), the ``timestamp`` property becomes the record timestamp,
and a binding may make the routing key the record key. Reading it back, ``x-amqp-properties``
alone decides the AMQP side, so typed values survive the round trip exactly.

Names are UTF-8 with ``surrogateescape`` in both directions, so any bytes survive.
"""
from __future__ import annotations

import json
import struct
from typing import Any, NamedTuple

from dari.protocol.amqp.properties import (
    BASIC_CLASS,
    EMPTY_PROPERTIES,
    decode_properties,
    encode_properties,
    headers_table,
    parse_properties,
    typed_headers,
)
from dari.protocol.amqp.table import Field, Table
from dari.records.builder import NewRecord
from dari.records.records import Record

__all__ = [
    "EMPTY_PROPERTIES",
    "EXCHANGE_HEADER",
    "KEY_HEADER",
    "PERSISTENT",
    "PROPERTIES_HEADER",
    "ROUTING_KEY_HEADER",
    "Field",
    "Message",
    "encode_properties",
    "header_marker",
    "parse_properties",
    "record_headers_table",
]

EXCHANGE_HEADER = "x-amqp-exchange"
ROUTING_KEY_HEADER = "x-amqp-routing-key"
PROPERTIES_HEADER = "x-amqp-properties"
KEY_HEADER = "x-record-key"
PERSISTENT = 2
# property flag bits whose fields a stream record carries outside x-amqp-properties too
STREAM_VISIBLE_FLAGS = (1 << 13) | (1 << 6)  # headers, timestamp
_AMQP_HEADER_PREFIX = "x-amqp-"

_CONTENT_HEAD = struct.Struct(">HHQ")
_MAX_HEADER_NAME = 255  # an AMQP field name is a short string


class Message(NamedTuple):
    """One message as a queue stores and delivers it; immutable and shareable between queues.

    A NamedTuple rather than a frozen dataclass: one is built per published message, and a
    frozen dataclass's ``__init__`` costs about three times as much. ``properties`` are the
    raw AMQP property bytes; ``delivery_mode`` (2 = persistent), ``priority`` and
    ``expiration`` (per-message TTL in ms, as the string AMQP carries) are parsed from them.
    ``offset`` is the record offset in a durable queue's log, -1 elsewhere. ``record`` is
    the Kafka record a message was read from when that record is not an AMQP message (see
    the module docstring), None for an AMQP message.
    """

    exchange: str
    routing_key: str
    body: bytes
    properties: bytes = EMPTY_PROPERTIES
    delivery_mode: int = 0
    priority: int | None = None
    expiration: str | None = None
    offset: int = -1
    record: Record | None = None

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

    @property
    def key(self) -> bytes | None:
        """The Kafka record key (None for an AMQP message)."""
        return None if self.record is None else self.record.key

    @property
    def timestamp(self) -> int | None:
        """The Kafka record timestamp in ms (None for an AMQP message)."""
        return None if self.record is None else self.record.timestamp

    def with_offset(self, offset: int) -> Message:
        return self._replace(offset=offset)

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

    # ---- AMQP properties ----------------------------------------------------------------------

    def amqp_header(self) -> bytes:
        """The whole content-header frame payload (class, weight, body size, properties)."""
        return _CONTENT_HEAD.pack(BASIC_CLASS, 0, len(self.body)) + self.properties

    @property
    def headers(self) -> Table | None:
        """The AMQP headers table as plain values (what a headers exchange routes on), or
        None without one. Decoded on each access; raises ``AMQPError`` (502) if malformed."""
        return headers_table(self.properties)

    def typed_headers(self) -> dict[str, Field]:
        """The AMQP headers with their wire types, ``{name: Field(tag, value)}`` (empty without
        a headers table), in wire order: what re-encodes to exactly the same bytes."""
        return typed_headers(self.properties)

    def replace_properties(self, **fields: Any) -> Message:
        """This message with AMQP properties replaced (a ``None`` value removes one), e.g.
        ``replace_properties(headers=typed, expiration=None)``; ``headers`` may map names to
        plain values or to ``Field``s, which keep their wire type. The others are kept
        byte-for-byte. The result is a new AMQP message, not stored anywhere yet (offset -1, no
        record identity)."""
        properties = encode_properties(decode_properties(self.properties), **fields)
        return Message.from_amqp(self.exchange, self.routing_key, properties, self.body)

    # ---- Kafka records ------------------------------------------------------------------------

    def to_record(self, timestamp_ms: int | None = None) -> NewRecord:
        """The record this message is stored as, timestamped ``timestamp_ms`` (default: the
        message's own ``timestamp``; None lets the batch stamp it)."""
        record = self.record
        if record is not None:
            value = None if record.value is None and not self.body else self.body
            return NewRecord(
                record.key,
                value,
                record.headers,
                record.timestamp if timestamp_ms is None else timestamp_ms,
            )
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

    def to_stream_record(self, timestamp_ms: int, key: bytes | None = None) -> NewRecord:
        """The record a stream (a topic) stores this message as: ``to_record`` with the AMQP
        headers repeated as plain record headers, the ``timestamp`` property (if any) as the
        record timestamp and ``key`` as the record key (module docstring)."""
        if self.record is not None:
            return self.to_record(timestamp_ms)
        properties = self.properties
        headers = [
            (EXCHANGE_HEADER, self.exchange.encode("utf-8", "surrogateescape")),
            (ROUTING_KEY_HEADER, self.routing_key.encode("utf-8", "surrogateescape")),
            (PROPERTIES_HEADER, properties),
        ]
        timestamp = timestamp_ms
        flags = int.from_bytes(properties[:2], "big")
        if flags & STREAM_VISIBLE_FLAGS:
            props = decode_properties(properties)
            if props.timestamp is not None:
                timestamp = props.timestamp * 1000
            for name, value in (props.headers or {}).items():
                if not name.startswith(_AMQP_HEADER_PREFIX):
                    headers.append((name, _header_bytes(value)))
        return NewRecord(key, self.body, tuple(headers), timestamp)

    @classmethod
    def from_record(cls, record: Record) -> Message:
        """The message a record holds (either shape of the module docstring)."""
        exchange = routing_key = properties = None
        for name, value in record.headers:
            if name == EXCHANGE_HEADER:
                exchange = value
            elif name == ROUTING_KEY_HEADER:
                routing_key = value
            elif name == PROPERTIES_HEADER:
                properties = value
        if routing_key is None:
            routing_key = record.key
        body = b"" if record.value is None else bytes(record.value)
        if properties is not None:
            props = bytes(properties)
            delivery_mode, priority, expiration = parse_properties(props)
            return cls(
                _text(exchange), _text(routing_key), body, props, delivery_mode, priority,
                expiration, record.offset,
            )
        return cls(
            _text(exchange), _text(routing_key), body, _record_properties(record),
            0, None, None, record.offset, record,
        )


def header_marker(name: str) -> bytes:
    """How a header named ``name`` shows in property bytes: a substring test with it is a
    cheap way to rule the header out for certain (a hit still needs ``typed_headers``)."""
    data = name.encode("utf-8", "surrogateescape")
    return bytes((len(data),)) + data


def _text(data: bytes | None) -> str:
    return "" if data is None else bytes(data).decode("utf-8", "surrogateescape")


def record_headers_table(record: Record) -> dict[str, Field]:
    """The AMQP headers table of a Kafka record that is not an AMQP message: its headers as
    long strings (null: void; the last of a repeated name; names AMQP cannot carry left out)
    and its key as ``x-record-key``."""
    table = {
        name: Field("V", None) if value is None else Field("S", bytes(value))
        for name, value in record.headers
        if name not in (EXCHANGE_HEADER, ROUTING_KEY_HEADER)
        and len(name.encode("utf-8", "surrogateescape")) <= _MAX_HEADER_NAME
    }
    if record.key is not None:
        table[KEY_HEADER] = Field("S", bytes(record.key))
    return table


def _record_properties(record: Record) -> bytes:
    """AMQP property bytes for a Kafka record: its headers (and key) as the headers table, its
    timestamp as the timestamp property."""
    table = record_headers_table(record)
    timestamp = record.timestamp // 1000 if record.timestamp >= 0 else None
    if not table:
        return encode_properties(timestamp=timestamp) if timestamp is not None else EMPTY_PROPERTIES
    return encode_properties(headers=table, timestamp=timestamp)


def _header_bytes(value: Any) -> bytes | None:
    """An AMQP header value as a Kafka consumer reads it (module docstring)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, bool):
        return b"true" if value else b"false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=_json_value, separators=(",", ":")).encode()
    return str(value).encode()


def _json_value(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)
