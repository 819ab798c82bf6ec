"""Fanout exchange: every bound destination gets a copy; keys and headers are ignored."""

from __future__ import annotations

from collections.abc import Iterable

from dari.queues.bindings import Binding, Destination
from dari.queues.exchanges.base import ExchangeType, Headers, RefCounts, register_exchange_type


@register_exchange_type
class FanoutExchange(ExchangeType):
    name = "fanout"
    description = "AMQP fanout exchange, as per the AMQP specification"

    __slots__ = ("_refs",)

    def __init__(self) -> None:
        self._refs = RefCounts()

    def add_binding(self, binding: Binding) -> None:
        self._refs.add(binding.destination)

    def remove_binding(self, binding: Binding) -> None:
        self._refs.remove(binding.destination)

    def route(self, routing_key: str, headers: Headers) -> Iterable[Destination]:
        return self._refs.counts.keys()
