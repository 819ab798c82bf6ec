"""A virtual host's routing model: exchanges, the binding table, and the names of its queues.

Queues themselves (storage, consumers, acks) live elsewhere; here a queue is an opaque handle with
a ``name`` (and optionally ``durable``) that the broker registers with ``add_queue`` and
withdraws with ``remove_queue``. This table is the one registry of a vhost's queues: the broker
(``queues.broker``) looks queues up here (``get_queue``, ``queue_table``) rather than keeping its
own copy. Everything else follows RabbitMQ's semantics and reply texts:
the nameless default exchange with its implicit bindings, the pre-declared ``amq.*`` exchanges,
declare equivalence, ``if_unused``, auto-delete exchanges (deleted when their last binding *as
source* goes, cascading through exchange-to-exchange bindings), internal exchanges, alternate
exchanges, and routing that follows exchange-to-exchange bindings with cycle protection.

A ``VirtualHost`` is owned by the event loop thread and is not safe across threads. Its methods
are plain and synchronous: they change in-memory state and return what changed (``Deletions``,
``created`` flags) so the caller can persist and announce it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

from dari.queues.bindings import Binding, Deletions, Destination, DestinationKind
from dari.queues.definitions import table_from_json, table_to_json
from dari.queues.errors import (
    AccessRefused,
    NotFound,
    PreconditionFailed,
    resource,
)
from dari.queues.exchanges import ExchangeType, exchange_type
from dari.queues.exchanges.base import Headers
from dari.queues.values import amqp_type, type_name

DEFAULT_EXCHANGE = ""
ALTERNATE_EXCHANGE = "alternate-exchange"
PREDECLARED_EXCHANGES: tuple[tuple[str, str], ...] = (
    ("amq.direct", "direct"),
    ("amq.fanout", "fanout"),
    ("amq.topic", "topic"),
    ("amq.headers", "headers"),
    ("amq.match", "headers"),
)
SNAPSHOT_VERSION = 1

_QUEUE = DestinationKind.QUEUE


@runtime_checkable
class QueueHandle(Protocol):
    """What the routing model needs of a queue: its name (``durable`` is read if present)."""

    @property
    def name(self) -> str: ...


@dataclass(frozen=True, slots=True)
class QueueRef:
    """A minimal queue handle, for tests and for tools that only need names."""

    name: str
    durable: bool = False


@dataclass(eq=False, slots=True)
class Exchange:
    """One exchange: its declared properties and the routing index of its type."""

    name: str
    type: str
    durable: bool = False
    auto_delete: bool = False
    internal: bool = False
    arguments: dict[str, Any] = field(default_factory=dict)
    router: ExchangeType = field(init=False, repr=False)
    alternate_exchange: str | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.router = exchange_type(self.type)()
        ae = self.arguments.get(ALTERNATE_EXCHANGE)
        self.alternate_exchange = _text(ae) if isinstance(ae, str | bytes) else None

    @property
    def is_default(self) -> bool:
        return self.name == DEFAULT_EXCHANGE

    def describe(self) -> dict[str, Any]:
        """JSON-able properties (the shape ``snapshot`` stores and ``restore`` reads)."""
        return {
            "name": self.name,
            "type": self.type,
            "durable": self.durable,
            "auto_delete": self.auto_delete,
            "internal": self.internal,
            "arguments": table_to_json(self.arguments),
        }


class VirtualHost:
    """Exchanges, bindings and queue handles of one vhost; see the module docstring.

    Owned by the broker's event loop (one instance per vhost); not safe across threads.
    """

    def __init__(self, name: str = "/") -> None:
        self.name = name
        self._exchanges: dict[str, Exchange] = {}
        self._queues: dict[str, QueueHandle] = {}
        # Read-only live view of the registry, for callers that look names up often.
        self.queue_table: Mapping[str, QueueHandle] = MappingProxyType(self._queues)
        self._by_source: dict[str, dict[Binding, None]] = {}
        self._by_destination: dict[Destination, dict[Binding, None]] = {}
        self._create(Exchange(DEFAULT_EXCHANGE, "direct", durable=True))
        for xname, xtype in PREDECLARED_EXCHANGES:
            self._create(Exchange(xname, xtype, durable=True))

    # ------------------------------------------------------------------ names in reply texts

    def _rs_exchange(self, name: str) -> str:
        return resource("exchange", name, self.name)

    def _rs_queue(self, name: str) -> str:
        return resource("queue", name, self.name)

    # ------------------------------------------------------------------ lookups

    def get_exchange(self, name: str) -> Exchange | None:
        return self._exchanges.get(name)

    def exchange(self, name: str) -> Exchange:
        """The exchange called ``name``, or 404 as RabbitMQ words it."""
        x = self._exchanges.get(name)
        if x is None:
            raise NotFound(f"no {self._rs_exchange(name)}")
        return x

    def exchanges(self) -> list[Exchange]:
        return list(self._exchanges.values())

    def get_queue(self, name: str) -> QueueHandle | None:
        return self._queues.get(name)

    def has_queue(self, name: str) -> bool:
        return name in self._queues

    def queues(self) -> list[QueueHandle]:
        return list(self._queues.values())

    # ------------------------------------------------------------------ exchanges

    def declare_exchange(
        self,
        name: str,
        type: str = "direct",
        *,
        passive: bool = False,
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> tuple[Exchange, bool]:
        """``exchange.declare``: returns the exchange and whether this call created it.

        Checks in RabbitMQ's order: passive (403 on the default exchange, 404 if missing);
        otherwise the type (406 unknown type), the default exchange (403), and then either
        equivalence with the existing exchange (406) or the reserved ``amq.`` prefix (403).
        """
        if passive:
            self._refuse_default(name)
            return self.exchange(name), False
        exchange_type(type)
        self._refuse_default(name)
        args = dict(arguments or {})
        existing = self._exchanges.get(name)
        if existing is not None:
            self._assert_equivalent(existing, type, durable, auto_delete, internal, args)
            return existing, False
        if name.startswith("amq."):
            raise AccessRefused(f"exchange name '{name}' contains reserved prefix 'amq.*'")
        ae = args.get(ALTERNATE_EXCHANGE)
        if ae is not None and not isinstance(ae, str | bytes):
            raise PreconditionFailed(
                f"invalid type '{type_name(arguments or {}, ALTERNATE_EXCHANGE)}' for arg "
                f"'{ALTERNATE_EXCHANGE}' "
                f"in {self._rs_exchange(name)}"
            )
        x = Exchange(name, type, durable, auto_delete, internal, args)
        self._create(x)
        return x, True

    def delete_exchange(self, name: str, *, if_unused: bool = False) -> Deletions:
        """``exchange.delete``: removes the exchange and every binding it is an end of.

        Deleting a missing exchange succeeds (RabbitMQ's ``ensure_deleted``). Removing the
        bindings that point *to* it may auto-delete their source exchanges in turn.
        """
        self._refuse_default(name)
        if name.startswith("amq."):
            raise AccessRefused(f"deletion of system {self._rs_exchange(name)} not allowed")
        out = Deletions()
        x = self._exchanges.get(name)
        if x is None:
            return out
        if if_unused and self._by_source.get(name):
            raise PreconditionFailed(f"{self._rs_exchange(name)} in use")
        self._delete(x, out)
        return out

    def _assert_equivalent(
        self,
        x: Exchange,
        type: str,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        args: Mapping[str, Any],
    ) -> None:
        for key, current, received in (
            ("type", x.type, type),
            ("durable", x.durable, durable),
            ("auto_delete", x.auto_delete, auto_delete),
            ("internal", x.internal, internal),
        ):
            if current != received:
                self._inequivalent(x.name, key, _plain_val(received), _plain_val(current))
        # RabbitMQ compares only this one argument of an exchange ("semantic equivalence").
        current_ae = x.arguments.get(ALTERNATE_EXCHANGE)
        received_ae = args.get(ALTERNATE_EXCHANGE)
        if current_ae is None and received_ae is None:
            return
        if current_ae is not None and received_ae is not None:
            if _type_class(current_ae) == _type_class(received_ae) and _same(
                current_ae, received_ae
            ):
                return
            self._inequivalent(
                x.name, ALTERNATE_EXCHANGE, _plain_val(received_ae), _plain_val(current_ae)
            )
            return
        self._inequivalent(
            x.name, ALTERNATE_EXCHANGE, _typed_val(received_ae), _typed_val(current_ae)
        )

    def _inequivalent(self, xname: str, key: str, received: str, current: str) -> None:
        raise PreconditionFailed(
            f"inequivalent arg '{key}' for {self._rs_exchange(xname)}: "
            f"received {received} but current is {current}"
        )

    @staticmethod
    def _refuse_default(name: str) -> None:
        if name == DEFAULT_EXCHANGE:
            raise AccessRefused("operation not permitted on the default exchange")

    def _create(self, x: Exchange) -> None:
        self._exchanges[x.name] = x
        self._by_source.setdefault(x.name, {})

    def _delete(self, x: Exchange, out: Deletions) -> None:
        if self._exchanges.get(x.name) is not x:
            return
        del self._exchanges[x.name]
        out.exchanges.append(x)
        doomed = list(self._by_source.get(x.name, ()))
        for b in doomed:  # _remove_bindings no longer finds x by name
            x.router.remove_binding(b)
        doomed.extend(self._by_destination.get(Destination.exchange(x.name), ()))
        self._remove_bindings(doomed, out)
        del self._by_source[x.name]

    # ------------------------------------------------------------------ queues

    def add_queue(self, queue: QueueHandle) -> None:
        """Make a queue routable (the default exchange reaches it by name) and bindable."""
        current = self._queues.get(queue.name)
        if current is not None and current is not queue:
            raise ValueError(f"a different queue is already registered as {queue.name!r}")
        self._queues[queue.name] = queue

    def remove_queue(self, name: str) -> Deletions:
        """Forget a deleted queue: drop its bindings, auto-deleting exchanges left unbound."""
        out = Deletions()
        if self._queues.pop(name, None) is None:
            return out
        doomed = list(self._by_destination.get(Destination.queue(name), {}))
        self._remove_bindings(doomed, out)
        return out

    # ------------------------------------------------------------------ bindings

    def bind_queue(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
    ) -> bool:
        """``queue.bind``; returns whether the binding is new (re-binding is a no-op)."""
        return self.add_binding(
            Binding(exchange, Destination.queue(queue), routing_key, dict(arguments or {}))
        )

    def unbind_queue(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
    ) -> Deletions:
        """``queue.unbind``; unbinding what is not bound succeeds and changes nothing."""
        return self.remove_binding(
            Binding(exchange, Destination.queue(queue), routing_key, dict(arguments or {}))
        )

    def bind_exchange(
        self,
        destination: str,
        source: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
    ) -> bool:
        """``exchange.bind`` (RabbitMQ extension): messages routed by source reach destination."""
        return self.add_binding(
            Binding(source, Destination.exchange(destination), routing_key, dict(arguments or {}))
        )

    def unbind_exchange(
        self,
        destination: str,
        source: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
    ) -> Deletions:
        return self.remove_binding(
            Binding(source, Destination.exchange(destination), routing_key, dict(arguments or {}))
        )

    def add_binding(self, binding: Binding) -> bool:
        """Add any binding: 403 for the default exchange, 404 for a missing end, 406 if invalid."""
        self._refuse_default_end(binding)
        source = self._exchanges.get(binding.source)
        if source is None:
            raise NotFound(f"no {self._rs_exchange(binding.source)}")
        if not self._exists(binding.destination):
            raise NotFound(f"no {self._rs_destination(binding.destination)}")
        problem = source.router.validate_binding(binding)
        if problem is not None:
            raise PreconditionFailed(problem)
        by_source = self._by_source[binding.source]
        if binding in by_source:
            return False
        watch = self._binding_watcher(binding)
        if watch is not None:  # may refuse the binding (406)
            watch(binding.source, binding.arguments, True)
        by_source[binding] = None
        self._by_destination.setdefault(binding.destination, {})[binding] = None
        source.router.add_binding(binding)
        return True

    def remove_binding(self, binding: Binding) -> Deletions:
        """Remove one binding; its source goes too if auto-delete and now without bindings."""
        self._refuse_default_end(binding)
        out = Deletions()
        self._remove_bindings([binding], out)
        return out

    def _binding_watcher(self, binding: Binding) -> Callable[[str, Any, bool], None] | None:
        """The destination queue's ``binding_changed`` hook, for queues whose stored form
        depends on how messages reach them (stream queues: ``x-record-key``)."""
        if binding.destination.kind is not _QUEUE or not binding.arguments:
            return None
        return getattr(self._queues.get(binding.destination.name), "binding_changed", None)

    def has_binding(self, binding: Binding) -> bool:
        if binding.source == DEFAULT_EXCHANGE:
            return _is_implicit(binding) and binding.destination.name in self._queues
        return binding in self._by_source.get(binding.source, ())

    def bindings(self) -> list[Binding]:
        """Every explicit binding (the default exchange's implicit ones are not stored)."""
        return [b for bs in self._by_source.values() for b in bs]

    def implicit_bindings(self) -> list[Binding]:
        """The default exchange's bindings, one per queue, as RabbitMQ lists them."""
        return [_implicit(name) for name in self._queues]

    def bindings_for_source(self, exchange: str) -> list[Binding]:
        if exchange == DEFAULT_EXCHANGE:
            return self.implicit_bindings()
        return list(self._by_source.get(exchange, ()))

    def bindings_for_destination(self, destination: Destination) -> list[Binding]:
        explicit = list(self._by_destination.get(destination, ()))
        if destination.kind is _QUEUE and destination.name in self._queues:
            return [_implicit(destination.name), *explicit]
        return explicit

    def _refuse_default_end(self, binding: Binding) -> None:
        if binding.source == DEFAULT_EXCHANGE or binding.destination == _DEFAULT_DEST:
            raise AccessRefused("operation not permitted on the default exchange")

    def _exists(self, dest: Destination) -> bool:
        if dest.kind is _QUEUE:
            return dest.name in self._queues
        return dest.name in self._exchanges

    def _rs_destination(self, dest: Destination) -> str:
        if dest.kind is _QUEUE:
            return self._rs_queue(dest.name)
        return self._rs_exchange(dest.name)

    def _remove_bindings(self, bindings: Iterable[Binding], out: Deletions) -> None:
        sources: dict[str, None] = {}
        for b in bindings:
            by_source = self._by_source.get(b.source)
            if by_source is None or b not in by_source:
                continue
            del by_source[b]
            by_dest = self._by_destination[b.destination]
            del by_dest[b]
            if not by_dest:
                del self._by_destination[b.destination]
            x = self._exchanges.get(b.source)
            if x is not None:
                x.router.remove_binding(b)
            watch = self._binding_watcher(b)
            if watch is not None:
                watch(b.source, b.arguments, False)
            out.bindings.append(b)
            sources[b.source] = None
        for name in sources:
            x = self._exchanges.get(name)
            if x is not None and x.auto_delete and not self._by_source.get(name):
                self._delete(x, out)

    # ------------------------------------------------------------------ routing

    def route(
        self,
        exchange: str,
        routing_key: str,
        headers: Headers = None,
        *,
        allow_internal: bool = False,
    ) -> list[QueueHandle]:
        """The queues a message published to ``exchange`` reaches, each once.

        Follows exchange-to-exchange bindings (each exchange is visited once, so cycles end) and
        an exchange's alternate exchange when the exchange itself routes nowhere. Publishing to a
        missing exchange is 404, to an internal one 403 (``allow_internal`` is for the broker's
        own re-publishing, e.g. dead-lettering). An empty list means unroutable.
        """
        x = self._exchanges.get(exchange)
        if x is None:
            raise NotFound(f"no {self._rs_exchange(exchange)}")
        if x.internal and not allow_internal:
            raise AccessRefused(f"cannot publish to internal {self._rs_exchange(exchange)}")
        queues = self._queues
        if exchange == DEFAULT_EXCHANGE:
            q = queues.get(routing_key)
            return [q] if q is not None else []
        exchanges = self._exchanges
        found: dict[str, QueueHandle] = {}
        seen = {exchange}
        work = [x]
        while work:
            x = work.pop()
            if x.name == DEFAULT_EXCHANGE:  # reached as someone's alternate exchange
                q = queues.get(routing_key)
                if q is not None:
                    found[routing_key] = q
                continue
            routed = False
            for kind, name in x.router.route(routing_key, headers):
                routed = True
                if kind is _QUEUE:
                    q = queues.get(name)
                    if q is not None:
                        found[name] = q
                elif name not in seen:
                    seen.add(name)
                    nxt = exchanges.get(name)
                    if nxt is not None:
                        work.append(nxt)
            if not routed:
                ae = x.alternate_exchange
                if ae is not None and ae not in seen:
                    seen.add(ae)
                    nxt = exchanges.get(ae)
                    if nxt is not None:
                        work.append(nxt)
        return list(found.values())

    # ------------------------------------------------------------------ persistence

    def snapshot(self) -> dict[str, Any]:
        """JSON-able state to persist: durable exchanges and bindings between durable ends."""
        exchanges = [
            x.describe() for x in self._exchanges.values() if x.durable and not x.is_default
        ]
        bindings = []
        for b in self.bindings():
            src = self._exchanges.get(b.source)
            if src is None or not src.durable or not self._is_durable(b.destination):
                continue
            bindings.append(
                {
                    "source": b.source,
                    "destination": b.destination.name,
                    "destination_kind": b.destination.kind.value,
                    "routing_key": b.routing_key,
                    "arguments": table_to_json(b.arguments),
                }
            )
        return {
            "version": SNAPSHOT_VERSION,
            "vhost": self.name,
            "exchanges": exchanges,
            "bindings": bindings,
        }

    def restore(self, data: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Recreate exchanges and bindings from ``snapshot()`` output.

        Register the recovered durable queues (``add_queue``) first. Records that cannot be
        restored (unknown exchange type, a missing end, an invalid binding) are skipped and
        returned so the caller can log them.
        """
        if data.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported vhost snapshot version {data.get('version')!r}")
        skipped: list[dict[str, Any]] = []
        for rec in data.get("exchanges", ()):
            name = rec["name"]
            if name in self._exchanges or name == DEFAULT_EXCHANGE:
                continue
            try:
                x = Exchange(
                    name,
                    rec["type"],
                    bool(rec.get("durable", True)),
                    bool(rec.get("auto_delete", False)),
                    bool(rec.get("internal", False)),
                    table_from_json(rec.get("arguments", {})),
                )
            except PreconditionFailed:
                skipped.append(dict(rec))
                continue
            self._create(x)
        for rec in data.get("bindings", ()):
            kind = DestinationKind(rec["destination_kind"])
            binding = Binding(
                rec["source"],
                Destination(kind, rec["destination"]),
                rec.get("routing_key", ""),
                table_from_json(rec.get("arguments", {})),
            )
            try:
                self.add_binding(binding)
            except (NotFound, PreconditionFailed, AccessRefused):
                skipped.append(dict(rec))
        return skipped

    def _is_durable(self, dest: Destination) -> bool:
        if dest.kind is _QUEUE:
            q = self._queues.get(dest.name)
            return q is not None and bool(getattr(q, "durable", False))
        x = self._exchanges.get(dest.name)
        return x is not None and x.durable


_DEFAULT_DEST = Destination.exchange(DEFAULT_EXCHANGE)


def _implicit(queue: str) -> Binding:
    return Binding(DEFAULT_EXCHANGE, Destination.queue(queue), queue)


def _is_implicit(binding: Binding) -> bool:
    return (
        binding.destination.kind is _QUEUE
        and binding.routing_key == binding.destination.name
        and not binding.arguments
    )


# ---------------------------------------------------------------------- reply-text values


def _text(value: str | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _type_class(value: Any) -> str:
    kind = amqp_type(value)
    return {"long": "int", "decimal": "int", "double": "float"}.get(kind, kind)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, str | bytes) and isinstance(b, str | bytes):
        return _text(a) == _text(b)
    return bool(a == b)


def _plain_val(value: Any) -> str:
    """RabbitMQ's ``val/1`` for a bare value: quoted, booleans as ``true``/``false``."""
    if isinstance(value, bool):
        return "'true'" if value else "'false'"
    if isinstance(value, str | bytes):
        return f"'{_text(value)}'"
    return f"'{value!r}'"


def _typed_val(value: Any) -> str:
    """RabbitMQ's ``val/1`` for a table entry, or ``none`` when the entry is absent."""
    if value is None:
        return "none"
    shown = _text(value) if isinstance(value, str | bytes) else repr(value)
    return f"the value '{shown}' of type '{amqp_type(value)}'"
