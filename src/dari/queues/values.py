"""Decoded AMQP field values as RabbitMQ names their types in error texts and compares them."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

# RabbitMQ's names of field value types by wire tag (rabbit_binary_parser: 'L' is also long)
FIELD_TYPES = {
    "t": "bool", "b": "byte", "B": "unsignedbyte", "s": "short", "u": "unsignedshort",
    "I": "signedint", "i": "unsignedint", "l": "long", "L": "long", "f": "float",
    "d": "double", "D": "decimal", "S": "longstr", "x": "binary", "T": "timestamp",
    "F": "table", "A": "array", "V": "void",
}


def type_name(table: Mapping[str, Any], key: str) -> str:
    """RabbitMQ's type name of ``table[key]``: from its wire tag when ``table`` is a decoded
    field table that kept its bytes (pika sends small ints as signedint, not long), else
    inferred from the Python value."""
    typed = getattr(table, "typed", None)
    if typed is not None:
        field = typed().get(key)
        if field is not None:
            return FIELD_TYPES.get(field.tag, field.tag)
    return amqp_type(table[key])


def amqp_type(value: Any) -> str:
    """RabbitMQ's type name of a decoded field value ("longstr", "long", "table", ...)."""
    if isinstance(value, str | bytes | bytearray):
        return "longstr"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "long"
    if isinstance(value, float):
        return "double"
    if isinstance(value, Decimal):
        return "decimal"
    if isinstance(value, _dt.datetime):
        return "timestamp"
    if isinstance(value, Mapping):
        return "table"
    if isinstance(value, list | tuple):
        return "array"
    if value is None:
        return "void"
    return type(value).__name__
