"""Direct exchange: a message reaches the bindings whose key equals its routing key."""

from __future__ import annotations

from collections.abc import Iterable

from dari.queues.bindings import Binding, Destination
from dari.queues.exchanges.base import ExchangeType, Headers, RefCounts, register_exchange_type


@register_exchange_type
class DirectExchange(ExchangeType):
    name = "direct"
    description = "AMQP direct exchange, as per the AMQP specification"

    __slots__ = ("_by_key",)

    def __init__(self) -> None:
        self._by_key: dict[str, RefCounts] = {}

    def add_binding(self, binding: Binding) -> None:
        refs = self._by_key.get(binding.routing_key)
        if refs is None:
            refs = self._by_key[binding.routing_key] = RefCounts()
        refs.add(binding.destination)

    def remove_binding(self, binding: Binding) -> None:
        refs = self._by_key.get(binding.routing_key)
        if refs is None:
            return
        refs.remove(binding.destination)
        if not refs:
            del self._by_key[binding.routing_key]

    def route(self, routing_key: str, headers: Headers) -> Iterable[Destination]:
        refs = self._by_key.get(routing_key)
        return refs.counts.keys() if refs is not None else ()
