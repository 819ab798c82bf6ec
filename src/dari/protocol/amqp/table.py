"""AMQP 0-9-1 field tables and arrays, decoded without losing their wire types.

RabbitMQ's field types (``rabbit_binary_parser``, the 0-9-1 errata): ``t`` bool, ``b``/``B``
signed/unsigned 8-bit, ``s``/``u`` 16-bit, ``I``/``i`` 32-bit, ``l``/``L`` 64-bit (both
signed, as RabbitMQ reads them), ``f`` float32, ``d`` float64, ``D`` decimal (scale octet +
32-bit value), ``S`` long string, ``x`` byte array, ``T`` timestamp (u64 seconds), ``F``
table, ``A`` array, ``V`` void.

Two decoded views exist because the broker needs both:

* plain values (``decode_table``) for *reading* arguments such as ``x-message-ttl`` or
  ``x-match``: integers as ``int``, ``S`` as ``str`` (``bytes`` when not UTF-8), ``x`` as
  ``bytes``, ``T`` as ``int`` seconds, ``D`` as ``Decimal``; nested tables are ``Table``;
* typed values (``decode_table_typed``): every value as ``Field(tag, value)``, so that it
  re-encodes to exactly the same bytes (a 64-bit ``l`` holding 5 stays ``l``, a double stays
  a double) and so that headers-exchange matching can compare by type class.

A decoded ``Table`` keeps the bytes it came from in ``.raw``; ``encode_table`` writes those
bytes back verbatim, which is how client tables are forwarded byte-for-byte.
"""

from __future__ import annotations

import datetime
import struct
from decimal import Decimal
from typing import Any, NamedTuple

from dari.protocol.amqp.errors import AMQPError, ReplyCode

__all__ = [
    "INTEGER_TAGS",
    "Field",
    "Table",
    "decode_array",
    "decode_table",
    "decode_table_typed",
    "encode_array",
    "encode_table",
    "encode_value",
    "skip_table",
    "type_class",
]


class Field(NamedTuple):
    """A table value with its one-letter wire type (``Field("l", 5)``)."""

    tag: str
    value: Any


INTEGER_TAGS = frozenset("bBsuIilL")
_FIXED = {
    "b": struct.Struct(">b"),
    "B": struct.Struct(">B"),
    "s": struct.Struct(">h"),
    "u": struct.Struct(">H"),
    "I": struct.Struct(">i"),
    "i": struct.Struct(">I"),
    "l": struct.Struct(">q"),
    "L": struct.Struct(">q"),
    "f": struct.Struct(">f"),
    "d": struct.Struct(">d"),
    "T": struct.Struct(">Q"),
}
_U32 = struct.Struct(">I")
_DECIMAL = struct.Struct(">BI")
_I32_MIN, _I32_MAX = -(2**31), 2**31 - 1


def type_class(tag: str) -> str:
    """Type family for value comparison (RabbitMQ ``rabbit_misc:type_class``): all integer
    widths compare as one ``"int"``, floats as ``"float"``; other tags stand for themselves."""
    if tag in INTEGER_TAGS:
        return "int"
    if tag in "fd":
        return "float"
    return tag


class Table(dict):
    """A decoded field table (plain values) that remembers its wire bytes in ``raw``.

    Read-only: mutate a ``dict(table)`` copy instead, so ``raw`` can never go stale.
    """

    __slots__ = ("raw",)

    def __init__(self, items: Any = (), raw: bytes | None = None) -> None:
        super().__init__(items)
        self.raw = raw

    def typed(self) -> dict[str, Field]:
        """The same table with wire types (exact re-encoding)."""
        if self.raw is None:
            return {k: _infer(v) for k, v in self.items()}
        return decode_table_typed(self.raw)[0]

    def _readonly(self, *_args: Any, **_kwargs: Any) -> None:
        raise TypeError("Table is read-only; copy it with dict(table)")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _readonly  # type: ignore[assignment]

    def __ior__(self, _other: Any) -> Table:  # type: ignore[override]
        raise TypeError("Table is read-only; copy it with dict(table)")

    def __reduce__(self) -> tuple[Any, ...]:
        return (Table, (dict(self), self.raw))


def _bad(text: str) -> AMQPError:
    return AMQPError(ReplyCode.SYNTAX_ERROR, f"malformed field table: {text}")


def _shortstr(buf: Any, pos: int) -> tuple[str, int]:
    n = buf[pos]
    end = pos + 1 + n
    if end > len(buf):
        raise _bad("truncated field name")
    return bytes(buf[pos + 1 : end]).decode("utf-8", "surrogateescape"), end


def _longstr_bytes(buf: Any, pos: int) -> tuple[bytes, int]:
    (n,) = _U32.unpack_from(buf, pos)
    end = pos + 4 + n
    if end > len(buf):
        raise _bad("truncated long string")
    return bytes(buf[pos + 4 : end]), end


_MAX_DEPTH = 64  # nesting limit, so hostile input cannot exhaust the stack


def _value(buf: Any, pos: int, typed: bool, depth: int) -> tuple[Any, int]:
    """Decode one tagged value at ``pos``; return (value or Field, end)."""
    tag = chr(buf[pos])
    pos += 1
    fixed = _FIXED.get(tag)
    if fixed is not None:
        (value,) = fixed.unpack_from(buf, pos)
        end = pos + fixed.size
    elif tag == "S":
        raw, end = _longstr_bytes(buf, pos)
        if typed:
            value = raw
        else:
            try:
                value = raw.decode("utf-8")
            except UnicodeDecodeError:
                value = raw
    elif tag == "t":
        value = buf[pos] != 0
        if typed:
            value = buf[pos]  # keep the octet: RabbitMQ reads any non-zero as true
        end = pos + 1
    elif tag == "x":
        value, end = _longstr_bytes(buf, pos)
    elif tag == "F":
        entries, _start, end = _decode_entries(buf, pos, typed, depth + 1)
        value = dict(entries) if typed else Table(entries, bytes(buf[pos:end]))
    elif tag == "A":
        value, end = _decode_values(buf, pos, typed, depth + 1)
    elif tag == "D":
        scale, unscaled = _DECIMAL.unpack_from(buf, pos)
        value = Decimal((0, tuple(int(c) for c in str(unscaled)), -scale))
        end = pos + 5
    elif tag == "V":
        value, end = None, pos
    else:
        raise _bad(f"unknown field type {tag!r}")
    return (Field(tag, value) if typed else value), end


def _decode_entries(
    buf: Any, offset: int, typed: bool, depth: int = 0
) -> tuple[list[tuple[str, Any]], int, int]:
    if depth > _MAX_DEPTH:
        raise _bad("tables nested too deeply")
    try:
        (length,) = _U32.unpack_from(buf, offset)
        start = offset + 4
        end = start + length
        if end > len(buf):
            raise _bad("table longer than its container")
        view = memoryview(buf)[:end]
        pos = start
        entries = []
        while pos < end:
            key, pos = _shortstr(view, pos)
            value, pos = _value(view, pos, typed, depth)
            entries.append((key, value))
        if pos != end:
            raise _bad("entries overrun the table length")
    except (struct.error, IndexError, ValueError) as exc:
        raise _bad(str(exc)) from None
    return entries, start, end


def decode_table(buf: Any, offset: int = 0) -> tuple[Table, int]:
    """Decode the length-prefixed table at ``offset``; return (Table, end offset)."""
    entries, _start, end = _decode_entries(buf, offset, typed=False)
    return Table(entries, bytes(memoryview(buf)[offset:end])), end


def decode_table_typed(buf: Any, offset: int = 0) -> tuple[dict[str, Field], int]:
    """Decode the table at ``offset`` keeping wire types; return (dict of Field, end)."""
    entries, _start, end = _decode_entries(buf, offset, typed=True)
    return dict(entries), end


def decode_array(buf: Any, offset: int = 0, *, typed: bool = False) -> tuple[list[Any], int]:
    """Decode the length-prefixed field array at ``offset``; return (values, end offset)."""
    return _decode_values(buf, offset, typed, 0)


def _decode_values(buf: Any, offset: int, typed: bool, depth: int) -> tuple[list[Any], int]:
    if depth > _MAX_DEPTH:
        raise _bad("arrays nested too deeply")
    try:
        (length,) = _U32.unpack_from(buf, offset)
        start = offset + 4
        end = start + length
        if end > len(buf):
            raise _bad("array longer than its container")
        view = memoryview(buf)[:end]
        pos = start
        values = []
        while pos < end:
            value, pos = _value(view, pos, typed, depth)
            values.append(value)
    except (struct.error, IndexError, ValueError) as exc:
        raise _bad(str(exc)) from None
    return values, end


def skip_table(buf: Any, offset: int = 0) -> int:
    """End offset of the table at ``offset``, checking only that its length fits."""
    try:
        (length,) = _U32.unpack_from(buf, offset)
    except struct.error:
        raise _bad("truncated table length") from None
    end = offset + 4 + length
    if end > len(buf):
        raise _bad("table longer than its container")
    return end


# -- encoding -----------------------------------------------------------------------------


def _infer(value: Any) -> Field:
    """Wire type for a plain Python value (32-bit ``I`` when it fits, like most clients)."""
    if isinstance(value, Field):
        return value
    if isinstance(value, bool):
        return Field("t", value)
    if isinstance(value, int):
        return Field("I" if _I32_MIN <= value <= _I32_MAX else "l", value)
    if isinstance(value, float):
        return Field("d", value)
    if isinstance(value, str):
        return Field("S", value)
    if isinstance(value, bytes | bytearray | memoryview):
        return Field("x", bytes(value))
    if isinstance(value, Decimal):
        return Field("D", value)
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.UTC)
        return Field("T", int(value.timestamp()))
    if isinstance(value, dict):
        return Field("F", value)
    if isinstance(value, list | tuple):
        return Field("A", value)
    if value is None:
        return Field("V", None)
    raise TypeError(f"cannot encode {type(value).__name__} in a field table")


def _encode_decimal(value: Decimal) -> bytes:
    sign, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int) or sign:
        raise TypeError(f"decimal {value} is not a finite non-negative value")
    unscaled = int("".join(map(str, digits)) or "0")
    scale = -exponent
    if scale < 0:
        unscaled *= 10**-scale
        scale = 0
    return _DECIMAL.pack(scale, unscaled)


def encode_value(value: Any) -> bytes:
    """One tagged value (a ``Field`` keeps its tag; plain values are inferred)."""
    tag, v = _infer(value)
    fixed = _FIXED.get(tag)
    if fixed is not None:
        return tag.encode() + fixed.pack(v)
    if tag in "Sx":
        raw = v.encode("utf-8", "surrogateescape") if isinstance(v, str) else bytes(v)
        return tag.encode() + _U32.pack(len(raw)) + raw
    if tag == "t":
        return b"t" + bytes((int(v) & 0xFF if not isinstance(v, bool) else int(v),))
    if tag == "F":
        return b"F" + encode_table(v)
    if tag == "A":
        return b"A" + encode_array(v)
    if tag == "D":
        return b"D" + _encode_decimal(v)
    if tag == "V":
        return b"V"
    raise TypeError(f"unknown field type {tag!r}")


def encode_table(table: Any) -> bytes:
    """A length-prefixed table from a mapping (or None). A decoded ``Table`` is written back
    from its ``raw`` bytes; other mappings keep insertion order (RabbitMQ does not sort)."""
    if table is None:
        return b"\x00\x00\x00\x00"
    raw = getattr(table, "raw", None)
    if raw is not None:
        return raw
    parts = []
    for key, value in table.items():
        name = key.encode("utf-8", "surrogateescape") if isinstance(key, str) else bytes(key)
        if len(name) > 255:
            raise ValueError(f"field name longer than 255 bytes: {key!r}")
        parts.append(bytes((len(name),)))
        parts.append(name)
        parts.append(encode_value(value))
    body = b"".join(parts)
    return _U32.pack(len(body)) + body


def encode_array(values: Any) -> bytes:
    """A length-prefixed field array."""
    body = b"".join(encode_value(v) for v in values)
    return _U32.pack(len(body)) + body
