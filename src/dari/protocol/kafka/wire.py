"""Kafka primitive types on memoryviews, for the hand-written Produce and Fetch paths.

Readers take ``(view, pos)`` and return ``(value, new_pos)``; running past the end raises
``struct.error`` or ``IndexError``, which the callers turn into InvalidRequestError.
"""

from __future__ import annotations

import struct

INT16 = struct.Struct(">h")
INT32 = struct.Struct(">i")
INT64 = struct.Struct(">q")


def read_uvarint(view: memoryview, pos: int) -> tuple[int, int]:
    """Unsigned LEB128 varint (at most 5 bytes, as Kafka's uvarint)."""
    byte = view[pos]
    if byte < 0x80:
        return byte, pos + 1
    value = byte & 0x7F
    shift = 7
    while True:
        pos += 1
        byte = view[pos]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos + 1
        shift += 7
        if shift > 28:
            raise ValueError("unsigned varint is longer than 5 bytes")


def uvarint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def skip_tagged_fields(view: memoryview, pos: int) -> int:
    """Skip a tagged-field section (we read none of the optional tags we might be sent)."""
    count, pos = read_uvarint(view, pos)
    for _ in range(count):
        _tag, pos = read_uvarint(view, pos)
        size, pos = read_uvarint(view, pos)
        pos += size
        if pos > len(view):
            raise ValueError("tagged field runs past the end of the request")
    return pos


def _text(view: memoryview, start: int, end: int) -> str:
    if end > len(view):
        raise ValueError("string runs past the end of the request")
    return str(view[start:end], "utf-8")


def read_string(view: memoryview, pos: int) -> tuple[str | None, int]:
    """Legacy nullable string: int16 length, -1 for null."""
    (length,) = INT16.unpack_from(view, pos)
    pos += 2
    if length < 0:
        if length != -1:
            raise ValueError(f"invalid string length {length}")
        return None, pos
    return _text(view, pos, pos + length), pos + length


def read_compact_string(view: memoryview, pos: int) -> tuple[str | None, int]:
    """Compact nullable string: uvarint length + 1, 0 for null."""
    length, pos = read_uvarint(view, pos)
    if length == 0:
        return None, pos
    end = pos + length - 1
    return _text(view, pos, end), end


def read_bytes(view: memoryview, pos: int) -> tuple[memoryview | None, int]:
    """Legacy nullable bytes as a slice of ``view`` (no copy)."""
    (length,) = INT32.unpack_from(view, pos)
    pos += 4
    if length < 0:
        if length != -1:
            raise ValueError(f"invalid bytes length {length}")
        return None, pos
    end = pos + length
    if end > len(view):
        raise ValueError("bytes run past the end of the request")
    return view[pos:end], end


def read_compact_bytes(view: memoryview, pos: int) -> tuple[memoryview | None, int]:
    length, pos = read_uvarint(view, pos)
    if length == 0:
        return None, pos
    end = pos + length - 1
    if end > len(view):
        raise ValueError("bytes run past the end of the request")
    return view[pos:end], end


def read_array_length(view: memoryview, pos: int) -> tuple[int, int]:
    """Legacy array length; a null (-1) array is rejected where a list is required."""
    (count,) = INT32.unpack_from(view, pos)
    if count < 0:
        raise ValueError(f"invalid array length {count}")
    return count, pos + 4


def read_compact_array_length(view: memoryview, pos: int) -> tuple[int, int]:
    count, pos = read_uvarint(view, pos)
    if count == 0:
        raise ValueError("null array where a list is required")
    return count - 1, pos


def string(value: str | None) -> bytes:
    if value is None:
        return b"\xff\xff"
    data = value.encode()
    return INT16.pack(len(data)) + data


def compact_string(value: str | None) -> bytes:
    if value is None:
        return b"\x00"
    data = value.encode()
    return uvarint(len(data) + 1) + data
