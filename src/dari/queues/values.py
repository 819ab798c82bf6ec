"""Decoded AMQP field values as RabbitMQ names their types in error texts and compares them."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from decimal import Decimal
from typing import Any


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
