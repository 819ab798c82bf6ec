"""The rare methods (connection.*, channel.*, exchange.*, queue.*, basic.qos/consume/...,
confirm.*, tx.*): pamqp's command classes as the schema, our own field codec underneath.

pamqp's generated ``commands`` module supplies each method's class, field names, field types
and defaults; decoding and encoding walk those schemas with the codec of
``dari.protocol.amqp.table`` rather than pamqp's marshal/unmarshal because those

* narrow integers in tables on re-encoding and turn timestamps into datetimes,
* validate names against a regex stricter than RabbitMQ (``marshal`` would refuse to send a
  ``queue.declare-ok`` for a queue named ``"café"``), and
* raise assorted exceptions on malformed input, where we need one ``AMQPError``.

Decoded objects are ordinary pamqp command instances (``commands.Queue.Declare`` etc.);
their table fields (``arguments``, ``client_properties``) are read-only ``Table`` dicts.
"""

from __future__ import annotations

import struct
from typing import Any

from pamqp import commands

from dari.protocol.amqp.errors import AMQPError, FrameError, ReplyCode
from dari.protocol.amqp.framing import FRAME_METHOD, encode_frame
from dari.protocol.amqp.table import decode_table, encode_table

__all__ = [
    "METHODS",
    "commands",
    "decode_method",
    "encode_method",
    "method_ids",
    "method_payload",
]

METHODS: dict[int, type] = dict(commands.INDEX_MAPPING)
"""Method index (class_id << 16 | method_id) -> pamqp command class."""

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_INT = {"octet": _U8, "short": _U16, "long": _U32, "longlong": _U64, "timestamp": _U64}


def _schema(cls: type) -> tuple[tuple[str, str], ...]:
    return tuple((name, cls.amqp_type(name)) for name in cls.__slots__)  # type: ignore[attr-defined]


_SCHEMAS = {index: _schema(cls) for index, cls in METHODS.items()}


def method_ids(method: Any) -> tuple[int, int]:
    """(class_id, method_id) of a pamqp command instance or class."""
    return method.index >> 16, method.index & 0xFFFF


def decode_method(payload: bytes | bytearray | memoryview) -> Any:
    """A pamqp command object from a method frame payload (class id, method id, fields).

    Raises ``AMQPError``: 503 COMMAND_INVALID for an unknown class/method, 501 FRAME_ERROR for
    truncated fields (as RabbitMQ's ``decode_method_fields`` does), 502 for a bad table.
    """
    try:
        (index,) = _U32.unpack_from(payload, 0)
    except struct.error:
        raise FrameError("method frame shorter than its class and method ids") from None
    cls = METHODS.get(index)
    if cls is None:
        raise AMQPError(
            ReplyCode.COMMAND_INVALID,
            f"unknown method {index >> 16}.{index & 0xFFFF}",
            class_id=index >> 16,
            method_id=index & 0xFFFF,
        )
    method = cls.__new__(cls)
    pos, bit = 4, 8
    octet = 0
    try:
        for name, kind in _SCHEMAS[index]:
            if kind == "bit":
                if bit == 8:
                    octet = payload[pos]
                    pos += 1
                    bit = 0
                value: Any = bool(octet & (1 << bit))
                bit += 1
            else:
                bit = 8
                if kind == "shortstr":
                    end = pos + 1 + payload[pos]
                    if end > len(payload):
                        raise IndexError
                    value = str(payload[pos + 1 : end], "utf-8", "surrogateescape")
                    pos = end
                elif kind == "longstr":
                    (n,) = _U32.unpack_from(payload, pos)
                    end = pos + 4 + n
                    if end > len(payload):
                        raise IndexError
                    raw = bytes(payload[pos + 4 : end])
                    try:
                        value = raw.decode("utf-8")
                    except UnicodeDecodeError:
                        value = raw
                    pos = end
                elif kind == "table":
                    value, pos = decode_table(payload, pos)
                else:
                    codec = _INT[kind]
                    (value,) = codec.unpack_from(payload, pos)
                    pos += codec.size
            setattr(method, name, value)
    except (IndexError, struct.error):
        raise FrameError(
            f"truncated {cls.name}", class_id=index >> 16, method_id=index & 0xFFFF
        ) from None
    except AMQPError as exc:
        exc.class_id, exc.method_id = index >> 16, index & 0xFFFF
        raise
    return method


def _str(value: Any) -> bytes:
    if value is None:
        return b""
    return value.encode("utf-8", "surrogateescape") if isinstance(value, str) else bytes(value)


def method_payload(method: Any) -> bytes:
    """The method frame payload (ids + fields) of a pamqp command object. Field values are
    written as given: ``None`` means the zero value, tables keep their ``Table.raw`` bytes."""
    schema = _SCHEMAS.get(method.index)
    if schema is None:
        raise TypeError(f"not an AMQP method: {method!r}")
    parts = [_U32.pack(method.index)]
    octet, bit = 0, -1
    for name, kind in schema:
        value = getattr(method, name, None)
        if kind == "bit":
            if bit == -1 or bit == 8:
                if bit == 8:
                    parts.append(_U8.pack(octet))
                octet, bit = 0, 0
            if value:
                octet |= 1 << bit
            bit += 1
            continue
        if bit != -1:
            parts.append(_U8.pack(octet))
            octet, bit = 0, -1
        if kind == "shortstr":
            data = _str(value)
            if len(data) > 255:
                raise ValueError(f"{method.name}.{name} longer than 255 bytes")
            parts.append(_U8.pack(len(data)) + data)
        elif kind == "longstr":
            data = _str(value)
            parts.append(_U32.pack(len(data)) + data)
        elif kind == "table":
            parts.append(encode_table(value or None))
        else:
            parts.append(_INT[kind].pack(value or 0))
    if bit != -1:
        parts.append(_U8.pack(octet))
    return b"".join(parts)


def encode_method(channel: int, method: Any) -> bytes:
    """One method frame carrying a pamqp command object."""
    return encode_frame(FRAME_METHOD, channel, method_payload(method))
