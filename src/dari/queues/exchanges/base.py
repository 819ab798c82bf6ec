"""The exchange-type interface and the registry of types by name.

An exchange type owns the routing index of *one* exchange: the vhost creates an instance per
exchange and tells it about every binding added or removed; ``route`` then answers which
destinations a message reaches, without touching the vhost. New kinds plug in with
``register_exchange_type``, as RabbitMQ's ``rabbit_exchange_type`` behaviour does.

Instances are owned by one ``VirtualHost`` and are not safe across threads.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, TypeVar

from dari.queues.bindings import Binding, Destination
from dari.queues.errors import UnknownExchangeType

Headers = Mapping[str, Any] | None


class ExchangeType(ABC):
    """Routing index of one exchange."""

    #: the type name clients send in ``exchange.declare``
    name: ClassVar[str]
    description: ClassVar[str] = ""

    def validate_binding(self, binding: Binding) -> str | None:
        """Return why ``binding`` is invalid for this type (406 text), or None if it is fine."""
        return None

    @abstractmethod
    def add_binding(self, binding: Binding) -> None:
        """Index a binding; the vhost never adds the same binding twice."""

    @abstractmethod
    def remove_binding(self, binding: Binding) -> None:
        """Forget a binding previously added."""

    @abstractmethod
    def route(self, routing_key: str, headers: Headers) -> Iterable[Destination]:
        """Destinations a message with this key and these headers reaches (may repeat)."""


class RefCounts:
    """A multiset of destinations: several bindings may lead to one destination at one key."""

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts: dict[Destination, int] = {}

    def add(self, dest: Destination) -> None:
        self.counts[dest] = self.counts.get(dest, 0) + 1

    def remove(self, dest: Destination) -> None:
        n = self.counts.get(dest, 0)
        if n <= 1:
            self.counts.pop(dest, None)
        else:
            self.counts[dest] = n - 1

    def __bool__(self) -> bool:
        return bool(self.counts)

    def __len__(self) -> int:
        return len(self.counts)


_REGISTRY: dict[str, type[ExchangeType]] = {}

T = TypeVar("T", bound=type[ExchangeType])


def register_exchange_type(cls: T) -> T:
    """Class decorator: make ``cls`` declarable under ``cls.name``."""
    _REGISTRY[cls.name] = cls
    return cls


def unregister_exchange_type(name: str) -> None:
    _REGISTRY.pop(name, None)


def exchange_type(name: str) -> type[ExchangeType]:
    """The type registered as ``name``; unknown names fail as RabbitMQ's ``check_type`` does."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownExchangeType(f"unknown exchange type '{name}'") from None


def exchange_type_names() -> list[str]:
    return sorted(_REGISTRY)
