"""Zigzag varints: the encoding every record reader and writer shares."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dari.records import CorruptRecordError, read_varint, write_varint


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_round_trip(value: int) -> None:
    out = bytearray(b"\xff")
    write_varint(out, value)
    assert read_varint(bytes(out) + b"tail", 1) == (value, len(out))


@pytest.mark.parametrize(
    ("value", "encoded"),
    [(0, b"\x00"), (-1, b"\x01"), (1, b"\x02"), (63, b"\x7e"), (64, b"\x80\x01")],
)
def test_zigzag_bytes(value: int, encoded: bytes) -> None:
    out = bytearray()
    write_varint(out, value)
    assert bytes(out) == encoded


def test_truncated_and_overlong_varints() -> None:
    with pytest.raises(IndexError):
        read_varint(b"\x80\x80", 0)
    with pytest.raises(CorruptRecordError):
        read_varint(b"\x80" * 11 + b"\x00", 0)
