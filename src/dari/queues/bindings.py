"""Bindings: the edges from a source exchange to a destination queue or exchange.

A binding is identified, as in RabbitMQ, by (source, destination, routing key, arguments); two
bindings that differ only in their arguments are distinct and route independently. Arguments are
plain decoded AMQP field tables (``dict``), so the identity uses a canonical, hashable form that
keeps value types apart (``1``, ``1.0`` and ``True`` are different values on the wire).
"""

from __future__ import annotations

import enum
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple


class DestinationKind(enum.Enum):
    QUEUE = "queue"
    EXCHANGE = "exchange"


class Destination(NamedTuple):
    """Where a binding points; exchange types return these from ``route``."""

    kind: DestinationKind
    name: str

    @classmethod
    def queue(cls, name: str) -> Destination:
        return cls(DestinationKind.QUEUE, name)

    @classmethod
    def exchange(cls, name: str) -> Destination:
        return cls(DestinationKind.EXCHANGE, name)


def canonical(value: Any) -> Hashable:
    """A hashable form of a decoded AMQP value that is equal only for equal values of one type."""
    if isinstance(value, Mapping):
        return ("table", tuple(sorted((str(k), canonical(v)) for k, v in value.items())))
    if isinstance(value, list | tuple):
        return ("array", tuple(canonical(v) for v in value))
    if isinstance(value, bytes | bytearray | memoryview):
        # AMQP long strings are bytes; a str and its UTF-8 encoding are the same wire value.
        try:
            return ("str", bytes(value).decode())
        except UnicodeDecodeError:
            return ("bytes", bytes(value))
    if isinstance(value, bool):
        return ("bool", value)
    return (type(value).__name__, value)


@dataclass(frozen=True, slots=True)
class Binding:
    """One binding; equal and hashable by (source, destination, routing_key, arguments)."""

    source: str
    destination: Destination
    routing_key: str = ""
    arguments: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    args_key: Hashable = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # A read-only copy: the identity must not change under a caller who reuses the dict.
        object.__setattr__(self, "arguments", MappingProxyType(dict(self.arguments)))
        object.__setattr__(self, "args_key", canonical(self.arguments))

    @property
    def destination_kind(self) -> DestinationKind:
        return self.destination.kind


@dataclass(slots=True)
class Deletions:
    """What one operation removed: bindings, and exchanges that went with them (auto-delete).

    The caller persists these (durable ones) and emits events; the lists are in removal order.
    """

    bindings: list[Binding] = field(default_factory=list)
    exchanges: list[Any] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.bindings or self.exchanges)
