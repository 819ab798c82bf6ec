"""Field tables: agree with pamqp on ordinary values, keep exact bytes where pamqp would not."""

from __future__ import annotations

import struct
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import decode as pdecode
from pamqp import encode as pencode

from dari.protocol.amqp import (
    AMQPError,
    Field,
    Table,
    decode_table,
    decode_table_typed,
    encode_table,
    type_class,
)
from dari.protocol.amqp.table import decode_array, encode_value

keys = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12
).filter(lambda k: len(k.encode()) <= 128)

# Values pamqp encodes and decodes back to equal values (its integer narrowing is invisible
# at the value level): bool, int, str, nested tables and arrays, None. pamqp 3.3 cannot encode
# -128..-1 (it packs them as an unsigned octet), so those are left out.
plain_values = st.recursive(
    st.booleans()
    | st.integers(min_value=0, max_value=2**63 - 1)
    | st.integers(min_value=-(2**63), max_value=-129)
    | st.text(max_size=20)
    | st.none(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=12,
)
plain_tables = st.dictionaries(keys, plain_values, max_size=6)


@settings(max_examples=200, deadline=None)
@given(plain_tables)
def test_pamqp_encoded_tables_decode_to_the_same_values(table):
    raw = pencode.field_table(table)
    decoded, end = decode_table(raw)
    assert end == len(raw)
    assert decoded == table
    assert decoded.raw == raw


@settings(max_examples=200, deadline=None)
@given(plain_tables)
def test_our_tables_decode_in_pamqp_to_the_same_values(table):
    raw = encode_table(table)
    used, decoded = pdecode.field_table(raw)
    assert used == len(raw)
    assert decoded == table


typed_leaf = st.one_of(
    st.builds(Field, st.just("t"), st.integers(0, 255)),
    st.builds(Field, st.just("b"), st.integers(-128, 127)),
    st.builds(Field, st.just("B"), st.integers(0, 255)),
    st.builds(Field, st.just("s"), st.integers(-(2**15), 2**15 - 1)),
    st.builds(Field, st.just("u"), st.integers(0, 2**16 - 1)),
    st.builds(Field, st.just("I"), st.integers(-(2**31), 2**31 - 1)),
    st.builds(Field, st.just("i"), st.integers(0, 2**32 - 1)),
    st.builds(Field, st.just("l"), st.integers(-(2**63), 2**63 - 1)),
    st.builds(Field, st.just("L"), st.integers(-(2**63), 2**63 - 1)),
    st.builds(Field, st.just("f"), st.floats(width=32, allow_nan=False)),
    st.builds(Field, st.just("d"), st.floats(allow_nan=False)),
    st.builds(Field, st.just("T"), st.integers(0, 2**64 - 1)),
    st.builds(Field, st.just("S"), st.binary(max_size=20)),
    st.builds(Field, st.just("x"), st.binary(max_size=20)),
    st.builds(
        Field,
        st.just("D"),
        st.builds(
            lambda scale, unscaled: Decimal((0, tuple(int(c) for c in str(unscaled)), -scale)),
            st.integers(0, 255),
            st.integers(0, 2**32 - 1),
        ),
    ),
    st.just(Field("V", None)),
)
typed_values = st.recursive(
    typed_leaf,
    lambda children: (
        st.builds(Field, st.just("A"), st.lists(children, max_size=4))
        | st.builds(Field, st.just("F"), st.dictionaries(keys, children, max_size=4))
    ),
    max_leaves=15,
)
typed_tables = st.dictionaries(keys, typed_values, max_size=8)


@settings(max_examples=300, deadline=None)
@given(typed_tables)
def test_typed_decode_reencodes_byte_for_byte(table):
    raw = encode_table(table)
    typed, end = decode_table_typed(raw)
    assert end == len(raw)
    assert encode_table(typed) == raw
    plain, _ = decode_table(raw)
    assert encode_table(plain) == raw  # via Table.raw
    assert encode_table(plain.typed()) == raw


@pytest.mark.parametrize(
    ("field", "narrowed_by_pamqp"),
    [
        (Field("l", 5), b"b"),  # a long-long that fits in a byte
        (Field("L", 300), b"s"),
        (Field("i", 7), b"b"),  # unsigned 32-bit
        (Field("d", 1.5), b"f"),  # pamqp writes floats as 32-bit 'f'
        (Field("I", 70000), b"I"),
        (Field("u", 1), b"b"),
    ],
)
def test_tables_pamqp_would_narrow_are_preserved(field, narrowed_by_pamqp):
    raw = encode_table({"k": field})
    assert raw[6:7] == field.tag.encode()
    typed, _ = decode_table_typed(raw)
    assert typed["k"] == field
    plain, _ = decode_table(raw)
    assert encode_table(plain) == raw
    # pamqp re-encodes the decoded value with another (narrower or different) type.
    _used, pamqp_value = pdecode.field_table(raw)
    assert pencode.field_table(pamqp_value)[6:7] == narrowed_by_pamqp


def test_plain_values_of_each_type():
    raw = encode_table(
        {
            "bool": True,
            "int": 5,
            "big": 2**40,
            "float": 0.1,
            "str": "héllo",
            "bin": b"\x00\xff",
            "dec": Decimal("12.34"),
            "nested": {"a": [1, "x", None]},
            "void": None,
            "ts": Field("T", 1_700_000_000),
            "bad-utf8": Field("S", b"\xff\xfe"),
        }
    )
    table, _ = decode_table(raw)
    assert table == {
        "bool": True,
        "int": 5,
        "big": 2**40,
        "float": 0.1,
        "str": "héllo",
        "bin": b"\x00\xff",
        "dec": Decimal("12.34"),
        "nested": {"a": [1, "x", None]},
        "void": None,
        "ts": 1_700_000_000,
        "bad-utf8": b"\xff\xfe",
    }
    assert isinstance(table["nested"], Table)
    typed = table.typed()
    assert typed["int"] == Field("I", 5) and typed["big"] == Field("l", 2**40)
    assert typed["float"] == Field("d", 0.1)


def test_insertion_order_is_kept_and_not_sorted():
    raw = encode_table({"b": 1, "a": 2})
    assert list(decode_table(raw)[0]) == ["b", "a"]


def test_table_is_read_only():
    table, _ = decode_table(encode_table({"a": 1}))
    with pytest.raises(TypeError):
        table["b"] = 2
    with pytest.raises(TypeError):
        table.update(b=2)
    copy = dict(table)
    copy["b"] = 2
    assert decode_table(encode_table(copy))[0] == {"a": 1, "b": 2}


def test_type_class_groups_integers_and_floats():
    assert {type_class(t) for t in "bBsuIilL"} == {"int"}
    assert type_class("f") == type_class("d") == "float"
    assert type_class("S") == "S"


def test_boolean_octet_other_than_one_is_true_and_preserved():
    raw = b"\x00\x00\x00\x04\x01kt\x02"
    assert decode_table(raw)[0] == {"k": True}
    assert encode_table(decode_table_typed(raw)[0]) == raw


def test_arrays_decode():
    raw = encode_value([1, "a", 2.5])[1:]
    assert decode_array(raw)[0] == [1, "a", 2.5]
    assert decode_array(raw, typed=True)[0] == [Field("I", 1), Field("S", b"a"), Field("d", 2.5)]


@pytest.mark.parametrize(
    "raw",
    [
        b"\x00\x00\x00\x05\x01kS\x00",  # truncated long string
        b"\x00\x00\x00\x03\x01kZ",  # unknown type
        b"\x00\x00\x00\x09\x01k",  # length beyond the buffer
        b"\x00\x00\x00\x03\x05k",  # key longer than the table
        b"\x00\x00\x00\x04\x01kI\x00",  # truncated integer
        b"\x00\x00",  # truncated length
    ],
)
def test_malformed_tables_raise_amqp_errors(raw):
    with pytest.raises(AMQPError) as info:
        decode_table(raw)
    assert info.value.reply_code == 502
    with pytest.raises(AMQPError):
        decode_table_typed(raw)


def test_deep_nesting_is_refused_without_recursion_error():
    raw = b"V"
    for _ in range(500):
        raw = b"A" + struct.pack(">I", len(raw)) + raw
    table = struct.pack(">I", len(raw) + 2) + b"\x01k" + raw
    with pytest.raises(AMQPError, match="nested too deeply"):
        decode_table(table)


def test_encoding_rejects_unsupported_values():
    with pytest.raises(TypeError):
        encode_table({"k": object()})
    with pytest.raises(ValueError):
        encode_table({"k" * 256: 1})
