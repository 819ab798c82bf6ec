"""RabbitMQ quorum queues (``x-queue-type=quorum``) on one node: their declare rules and queue.

A quorum queue is a durable queue of dari's queue store that behaves as RabbitMQ 4.3's quorum
queue wherever a client can tell the difference from a classic queue (replication is not
here: one node holds the only copy):

* Declare: only durable, not exclusive, not auto-delete, never server-named; only the
  arguments RabbitMQ's quorum type takes (``QUORUM_ARGUMENTS``), the others of RabbitMQ's
  queue types refused by name (``x-max-priority``, ``x-queue-mode``, ``x-max-age``…), each
  with RabbitMQ's 406 text. Redeclares compare the quorum type's arguments.
* Every message is stored and survives a restart, even one published transient (its
  ``delivery_mode`` property is delivered as published).
* Poison messages: a delivery that fails — ``basic.reject`` with requeue, or a channel that
  closes holding it — counts in ``x-delivery-count``; a message returned without failing
  (``basic.nack`` with requeue, ``basic.recover``) does not, but every return counts in
  ``x-acquired-count``. Over ``x-delivery-limit`` (20 when unset, unlimited when negative)
  the message is dropped or dead-lettered with reason ``delivery_limit``.
* ``x-overflow=reject-publish-dlx`` is accepted and acts as ``drop-head``;
  ``x-dead-letter-strategy=at-least-once`` needs ``x-overflow=reject-publish`` and otherwise
  falls back to at-most-once (both with a warning in the log, as RabbitMQ does).
* Single active consumer goes by consumer priority (a higher-priority consumer takes over
  once the active one has settled what it holds); ``basic.get`` on such a queue is refused
  (405).
* Consumers: ``basic.qos global=true`` is taken as ``global=false`` (RabbitMQ 4 has no global
  qos for quorum queues); stream consumer arguments are refused.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from dari.message import Field, Message
from dari.queues.errors import PreconditionFailed, ResourceLocked, resource
from dari.queues.queue import Consumer, Delivery, Queue, QueueArguments
from dari.queues.values import type_name

log = logging.getLogger(__name__)

QUORUM = "quorum"
QUORUM_TYPE = "rabbit_quorum_queue"  # how RabbitMQ names the type in reply texts
CLASSIC_TYPE = "rabbit_classic_queue"
DEFAULT_DELIVERY_LIMIT = 20
DELIVERY_LIMIT = "delivery_limit"  # the x-death reason
DELIVERY_COUNT_HEADER = "x-delivery-count"
ACQUIRED_COUNT_HEADER = "x-acquired-count"
AT_MOST_ONCE, AT_LEAST_ONCE = "at-most-once", "at-least-once"

# The queue arguments of each RabbitMQ queue type (its ``capabilities()``): a declare may
# carry only its own type's; one of another type's is refused by name.
QUORUM_ARGUMENTS = (
    "x-dead-letter-exchange", "x-dead-letter-routing-key", "x-dead-letter-strategy",
    "x-expires", "x-max-length", "x-max-length-bytes", "x-max-in-memory-length",
    "x-max-in-memory-bytes", "x-overflow", "x-single-active-consumer", "x-queue-type",
    "x-quorum-initial-group-size", "x-member-placement-tag", "x-delivery-limit",
    "x-message-ttl", "x-queue-leader-locator", "x-consumer-disconnected-timeout",
    "x-consumer-timeout", "x-delayed-retry-type", "x-delayed-retry-min", "x-delayed-retry-max",
)
CLASSIC_ARGUMENTS = (
    "x-expires", "x-message-ttl", "x-dead-letter-exchange", "x-dead-letter-routing-key",
    "x-max-length", "x-max-length-bytes", "x-max-priority", "x-overflow", "x-queue-mode",
    "x-queue-version", "x-single-active-consumer", "x-queue-type", "x-queue-master-locator",
    "x-queue-leader-locator",
)
_STREAM_ARGUMENTS = (
    "x-max-length-bytes", "x-queue-type", "x-max-age", "x-stream-max-segment-size-bytes",
    "x-stream-filter-size-bytes", "x-initial-cluster-size", "x-queue-leader-locator",
)
_KNOWN_ARGUMENTS = frozenset(QUORUM_ARGUMENTS + CLASSIC_ARGUMENTS + _STREAM_ARGUMENTS)
_NOT_QUORUM = _KNOWN_ARGUMENTS - frozenset(QUORUM_ARGUMENTS)
_NOT_CLASSIC = _KNOWN_ARGUMENTS - frozenset(CLASSIC_ARGUMENTS)
_DLX_STRATEGIES = (AT_MOST_ONCE, AT_LEAST_ONCE)
_LEADER_LOCATORS = ("client-local", "balanced")
# consumer arguments: a quorum queue takes these, and refuses the stream type's
_STREAM_CONSUMER_ARGUMENTS = frozenset(
    ("x-stream-offset", "x-stream-filter", "x-stream-match-unfiltered")
)
_NON_NEGATIVE = (
    "x-max-in-memory-length", "x-max-in-memory-bytes", "x-consumer-timeout",
    "x-consumer-disconnected-timeout",
)


def is_quorum(arguments: Mapping[str, Any] | None) -> bool:
    """True if declare ``arguments`` ask for a quorum queue."""
    value = (arguments or {}).get("x-queue-type")
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value == QUORUM


def server_named_refusal() -> PreconditionFailed:
    """406 for a quorum declare without a name (RabbitMQ names only classic queues)."""
    return PreconditionFailed(f"Cannot declare a server-named queue for type {QUORUM_TYPE}")


def check_classic_arguments(name: str, vhost: str, arguments: Mapping[str, Any]) -> None:
    """406 for an argument only other queue types take (``x-delivery-limit``, ``x-max-age``…)
    on a classic queue, as RabbitMQ 4 refuses it."""
    _refuse_foreign(resource("queue", name, vhost), arguments, _NOT_CLASSIC, CLASSIC_TYPE)


def check_declare(
    name: str,
    vhost: str,
    *,
    durable: bool,
    exclusive: bool,
    auto_delete: bool,
    arguments: Mapping[str, Any],
) -> None:
    """RabbitMQ's refusals of a quorum declaration (406), in its order: argument values
    (``rabbit_amqqueue:check_declare_arguments``), arguments of other queue types, then the
    auto-delete, exclusive and non-durable properties (``rabbit_queue_type_util``)."""
    where = resource("queue", name, vhost)
    QueueArguments.parse(_without(arguments, _NOT_QUORUM), name, vhost)
    _check_quorum_values(where, arguments)
    _refuse_foreign(where, arguments, _NOT_QUORUM, QUORUM_TYPE)
    if auto_delete:
        raise PreconditionFailed(f"invalid property 'auto-delete' for {where}")
    if exclusive:
        raise PreconditionFailed(f"invalid property 'exclusive-owner' for {where}")
    if not durable:
        raise PreconditionFailed(f"invalid property 'non-durable' for {where}")


def check_consume_arguments(queue: Queue, arguments: Mapping[str, Any]) -> None:
    """basic.consume arguments on a quorum queue, checked as RabbitMQ checks them (406):
    ``x-priority`` an integer, ``x-consumer-timeout`` a non-negative one, no stream
    consumer arguments."""
    where = resource("queue", queue.name, queue.vhost)
    for key, minimum in (("x-priority", None), ("x-consumer-timeout", 0)):
        value = arguments.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise PreconditionFailed(
                f"invalid arg '{key}' for {where}: \"expected integer, got "
                f"{type_name(arguments, key)}\""
            )
        if minimum is not None and value < minimum:
            raise PreconditionFailed(f"invalid arg '{key}' for {where}: {{value_negative,{value}}}")
    _refuse_foreign(where, arguments, _STREAM_CONSUMER_ARGUMENTS, QUORUM_TYPE)


def delivery_limit(arguments: Mapping[str, Any]) -> int | None:
    """The effective x-delivery-limit: 20 unless an integer is given; None (no limit) for a
    negative one, as RabbitMQ 4 reads it."""
    value = arguments.get("x-delivery-limit")
    if isinstance(value, bool) or not isinstance(value, int):
        return DEFAULT_DELIVERY_LIMIT
    return None if value < 0 else value


def dead_letter_strategy(arguments: Mapping[str, Any], overflow: str, where: str) -> str:
    """The effective x-dead-letter-strategy: at-least-once only with reject-publish."""
    value = _text(arguments.get("x-dead-letter-strategy"))
    if value != AT_LEAST_ONCE:
        return AT_MOST_ONCE
    if overflow != "reject-publish":
        log.warning(
            "Falling back to dead-letter-strategy at-most-once for %s because configured "
            "dead-letter-strategy at-least-once is incompatible with effective overflow "
            "strategy %s. To enable dead-letter-strategy at-least-once, set overflow strategy "
            "to reject-publish.", where, overflow,
        )
        return AT_MOST_ONCE
    return AT_LEAST_ONCE


class QuorumQueue(Queue):
    """A quorum queue on this node; see the module docstring. Made by the broker's queue
    factory (always with a durable store), owned by the event loop thread (not thread-safe).
    """

    persists_all = True

    def __init__(self, name: str, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self._single_active: Consumer | None = None
        where = resource("queue", name, self.vhost)
        if self.args.overflow == "reject-publish-dlx":
            log.warning("Invalid overflow strategy 'reject-publish-dlx' for quorum queue: %s",
                        where)
            self.args = replace(self.args, overflow="drop-head")
        self.delivery_limit = delivery_limit(self.arguments)
        self.dead_letter_strategy = dead_letter_strategy(
            self.arguments, self.args.overflow, where
        )

    def get(self, no_ack: bool = False) -> Delivery | None:
        """basic.get; 405 on a single-active-consumer queue, as RabbitMQ refuses it."""
        if self.args.single_active_consumer:
            raise ResourceLocked(
                f"cannot obtain access to locked {resource('queue', self.name, self.vhost)}. "
                "basic.get operations are not supported by quorum queues with single active "
                "consumer"
            )
        return super().get(no_ack)

    def _pick(self) -> tuple[Consumer, int] | None:
        """With x-single-active-consumer the active consumer is the one of highest priority
        (the earliest registered among equals); a higher-priority consumer that arrives takes
        over once the active one has no unacknowledged message left, and until then neither
        gets any (RabbitMQ's quiescing consumer). Otherwise as in a classic queue."""
        if not self.args.single_active_consumer:
            return super()._pick()
        arrivals = self._arrivals
        if not arrivals:
            self._single_active = None
            return None
        best = max(arrivals, key=_priority)  # the first of the highest priority
        active = self._single_active
        if active is None or not any(c is active for c in arrivals):
            active = best
        elif _priority(best) > _priority(active):
            tag = active.tag
            if any(d.consumer_tag == tag for d in self._unacked.values()):
                return None  # quiescing: it finishes what it has first
            active = best
        self._single_active = active
        room = active.room()
        return (active, room) if room > 0 else None

    def requeue_all(self, deliveries: Iterable[Delivery]) -> int:
        """Failed deliveries back in place, each with its delivery count one higher; those
        over the delivery limit are dropped or dead-lettered instead."""
        return self._return(deliveries, failed=True)

    def return_all(self, deliveries: Iterable[Delivery]) -> int:
        """Deliveries returned without failing (nack, recover): back in place, their delivery
        count unchanged."""
        return self._return(deliveries, failed=False)

    def _return(self, deliveries: Iterable[Delivery], failed: bool) -> int:
        unacked = self._unacked
        limit = self.delivery_limit
        back: list[Delivery] = []
        for delivery in deliveries:
            if delivery.position not in unacked:
                continue
            message, count = _counted(delivery.message, failed)
            if limit is not None and count > limit:
                del unacked[delivery.position]
                self._discard(message, DELIVERY_LIMIT)
                continue
            back.append(delivery._replace(message=message))
        if not back:
            self.dispatch()
            return 0
        return super().requeue_all(back)


# ---- helpers ------------------------------------------------------------------------------------


def _counted(message: Message, failed: bool) -> tuple[Message, int]:
    """``message`` as it goes back to the queue: one more acquisition, and one more failed
    delivery when ``failed``; headers in key order, as RabbitMQ writes them. Returns it and
    its delivery count."""
    headers = message.typed_headers()
    acquired = _count(headers.get(ACQUIRED_COUNT_HEADER)) + 1
    delivered = _count(headers.get(DELIVERY_COUNT_HEADER)) + int(failed)
    headers[ACQUIRED_COUNT_HEADER] = Field("l", acquired)
    if delivered:
        headers[DELIVERY_COUNT_HEADER] = Field("l", delivered)
    ordered = dict(sorted(headers.items(), key=lambda kv: kv[0].encode("utf-8", "replace")))
    counted = message.replace_properties(headers=ordered).with_offset(message.offset)
    return counted, delivered


def _priority(consumer: Consumer) -> int:
    return getattr(consumer, "priority", 0) or 0


def _count(field: Field | None) -> int:
    if field is None or isinstance(field.value, bool) or not isinstance(field.value, int):
        return 0
    return max(field.value, 0)


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return value if isinstance(value, str) else None


def _without(arguments: Mapping[str, Any], keys: frozenset[str]) -> Mapping[str, Any]:
    """``arguments`` less ``keys``; a decoded field table stays one (its wire types name the
    value types in error texts) when nothing is to be left out."""
    if not any(key in arguments for key in keys):
        return arguments
    typed = getattr(arguments, "typed", None)
    kept = {k: v for k, v in arguments.items() if k not in keys}
    if typed is None:
        return kept
    return _TypedSubset(kept, {k: f for k, f in typed().items() if k in kept})


class _TypedSubset(dict[str, Any]):
    """Part of a decoded field table that still answers ``typed()`` for error texts."""

    def __init__(self, values: Mapping[str, Any], fields: Mapping[str, Field]) -> None:
        super().__init__(values)
        self._fields = dict(fields)

    def typed(self) -> dict[str, Field]:
        return self._fields


def _refuse_foreign(
    where: str, arguments: Mapping[str, Any], foreign: frozenset[str], type_module: str
) -> None:
    for key in arguments:  # in the client's order, as RabbitMQ checks them
        if key in foreign:
            raise PreconditionFailed(f"invalid arg '{key}' for {where} of queue type {type_module}")


def _check_quorum_values(where: str, arguments: Mapping[str, Any]) -> None:
    """The validators of ``rabbit_amqqueue:declare_args`` for arguments only quorum queues
    take (the shared ones are ``QueueArguments.parse``'s)."""

    def bad(key: str, reason: str) -> PreconditionFailed:
        return PreconditionFailed(f"invalid arg '{key}' for {where}: {reason}")

    def integer(key: str) -> int | None:
        value = arguments.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad(key, f'"expected integer, got {type_name(arguments, key)}"')
        if value < 0:
            raise bad(key, f"{{value_negative,{value}}}")
        return value

    def choice(key: str, allowed: tuple[str, ...], invalid: str) -> None:
        value = arguments.get(key)
        if value is None:
            return
        if not isinstance(value, str | bytes):
            raise bad(key, f"{{unacceptable_type,{type_name(arguments, key)}}}")
        if _text(value) not in allowed:
            raise bad(key, invalid)

    choice("x-dead-letter-strategy", _DLX_STRATEGIES, "invalid_dlx_strategy")
    for key in _NON_NEGATIVE:
        integer(key)
    if integer("x-quorum-initial-group-size") == 0:
        raise bad("x-quorum-initial-group-size", "{value_zero,0}")
    choice("x-queue-leader-locator", _LEADER_LOCATORS, "invalid_queue_locator_arg")
    tag = arguments.get("x-member-placement-tag")
    if tag is not None:
        if not isinstance(tag, str | bytes):
            raise bad(
                "x-member-placement-tag",
                f"{{unacceptable_type,{type_name(arguments, 'x-member-placement-tag')}}}",
            )
        if not tag:
            raise bad("x-member-placement-tag", "invalid_member_placement_tag_arg")
