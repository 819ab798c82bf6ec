"""Headers exchange: routes on message headers, following RabbitMQ's rules exactly.

The binding argument ``x-match`` picks the rule: ``all`` (the default when absent), ``any``,
``all-with-x`` or ``any-with-x``. Plain ``all``/``any`` ignore binding arguments whose names start
with ``x-``; the ``-with-x`` variants compare them too (only ``x-match`` itself is skipped). A
binding argument whose value is void (``None``) only requires the header to be present. Other
values must be equal *and of the same kind*: ``1`` does not match ``1.0`` or ``True``, as Erlang's
``=:=`` decides in RabbitMQ. ``all`` with nothing to compare matches; ``any`` does not.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from dari.queues.bindings import Binding, Destination
from dari.queues.exchanges.base import ExchangeType, Headers, register_exchange_type
from dari.queues.values import amqp_type

X_MATCH = "x-match"
_MODES = ("all", "any", "all-with-x", "any-with-x")
_ABSENT = object()


def _erlang_repr(value: Any) -> str:
    """How RabbitMQ's ``~tp`` prints a decoded field value in its error texts."""
    if isinstance(value, str):
        return f'<<"{value}">>'
    if isinstance(value, bytes | bytearray):
        return f'<<"{bytes(value).decode(errors="replace")}">>'
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "undefined"
    return repr(value)


def same_value(a: Any, b: Any) -> bool:
    """Equality of decoded AMQP values that also requires the same kind of value."""
    if isinstance(a, bytes | bytearray):
        a = _as_text(a)
    if isinstance(b, bytes | bytearray):
        b = _as_text(b)
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, Mapping):
        return (
            isinstance(b, Mapping)
            and a.keys() == b.keys()
            and all(same_value(a[k], b[k]) for k in a)
        )
    if isinstance(a, list | tuple):
        return (
            isinstance(b, list | tuple)
            and len(a) == len(b)
            and all(same_value(x, y) for x, y in zip(a, b, strict=True))
        )
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    return type(a) is type(b) and a == b


def _as_text(value: bytes | bytearray) -> str | bytes:
    try:
        return bytes(value).decode()
    except UnicodeDecodeError:
        return bytes(value)


class _Matcher:
    """One binding's compiled test: the (key, value) pairs to check and whether all must hold."""

    __slots__ = ("destination", "match_all", "pairs")

    def __init__(self, binding: Binding) -> None:
        args = binding.arguments
        mode = args.get(X_MATCH, "all")
        if isinstance(mode, bytes | bytearray):
            mode = _as_text(mode)
        with_x = mode in ("all-with-x", "any-with-x")
        self.match_all = mode not in ("any", "any-with-x")
        self.destination = binding.destination
        self.pairs: tuple[tuple[str, Any], ...] = tuple(
            (k, v) for k, v in args.items() if k != X_MATCH and (with_x or not k.startswith("x-"))
        )

    def matches(self, headers: Mapping[str, Any]) -> bool:
        if self.match_all:
            for key, want in self.pairs:
                got = headers.get(key, _ABSENT)
                if got is _ABSENT or (want is not None and not same_value(got, want)):
                    return False
            return True
        for key, want in self.pairs:
            got = headers.get(key, _ABSENT)
            if got is not _ABSENT and (want is None or same_value(got, want)):
                return True
        return False


@register_exchange_type
class HeadersExchange(ExchangeType):
    name = "headers"
    description = "AMQP headers exchange, as per the AMQP specification"

    __slots__ = ("_matchers",)

    def __init__(self) -> None:
        self._matchers: dict[Binding, _Matcher] = {}

    def validate_binding(self, binding: Binding) -> str | None:
        mode = binding.arguments.get(X_MATCH, _ABSENT)
        if mode is _ABSENT:
            return None
        if isinstance(mode, bytes | bytearray):
            mode = _as_text(mode)
        if isinstance(mode, str):
            if mode in _MODES:
                return None
            return (
                f"Invalid x-match field value {_erlang_repr(mode)}; "
                "expected all, any, all-with-x, or any-with-x"
            )
        return (
            f"Invalid x-match field type {amqp_type(mode)} (value {_erlang_repr(mode)}); "
            "expected longstr"
        )

    def add_binding(self, binding: Binding) -> None:
        self._matchers[binding] = _Matcher(binding)

    def remove_binding(self, binding: Binding) -> None:
        self._matchers.pop(binding, None)

    def route(self, routing_key: str, headers: Headers) -> Iterable[Destination]:
        hdrs: Mapping[str, Any] = headers or {}
        return [m.destination for m in self._matchers.values() if m.matches(hdrs)]
