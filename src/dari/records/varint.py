"""Kafka's zigzag varints: the one encoder and decoder every record reader and writer uses.

Varint and varlong share the encoding; a varlong has at most 10 bytes of 7 bits.
"""

from __future__ import annotations

from dari.records.batch import CorruptRecordError

_MAX_VARINT_SHIFT = 63


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """Decode the zigzag varint at ``pos``; returns (value, position after it).

    Raises IndexError when the data ends inside the varint.
    """
    byte = data[pos]
    pos += 1
    if byte < 0x80:  # the common one-byte case
        return (byte >> 1) ^ -(byte & 1), pos
    result = byte & 0x7F
    shift = 7
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
        if shift > _MAX_VARINT_SHIFT:
            raise CorruptRecordError(f"varint longer than 10 bytes ending at byte {pos}")


def write_varint(out: bytearray, value: int) -> None:
    """Append ``value`` as a zigzag varint."""
    if 0 <= value < 64:  # one byte: the common case for lengths and deltas
        out.append(value << 1)
        return
    zigzag = (value << 1) ^ (value >> 63)
    while zigzag >= 0x80:
        out.append((zigzag & 0x7F) | 0x80)
        zigzag >>= 7
    out.append(zigzag)
