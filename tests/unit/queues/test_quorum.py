"""Quorum queues through AMQPBroker: RabbitMQ 4's declare refusals and texts, redeclare
equivalence, the delivery limit and counts, dead-lettering with reason delivery_limit, and
messages (transient ones too) recovered from a real data directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dari.message import Message, encode_properties
from dari.queues.broker import AMQPBroker, User
from dari.queues.consumers import Delivery, PrefetchConsumer
from dari.queues.errors import PreconditionFailed, ResourceLocked
from dari.queues.queue import Queue, requeue
from dari.queues.quorum import (
    ACQUIRED_COUNT_HEADER,
    DEFAULT_DELIVERY_LIMIT,
    DELIVERY_COUNT_HEADER,
    QuorumQueue,
    check_consume_arguments,
    delivery_limit,
)
from dari.storage import FlushScheduler, LogConfig

Q = "queue 'q' in vhost '/'"
QUORUM = {"x-queue-type": "quorum"}


def make_broker(data_dir: Path) -> AMQPBroker:
    broker = AMQPBroker(
        data_dir, FlushScheduler(), LogConfig(), {"guest": User("guest", "guest", True, ("*",))}
    )
    broker.load()
    return broker


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[AMQPBroker]:
    b = make_broker(tmp_path)
    yield b
    b.close()


def declare(broker: AMQPBroker, name: str = "q", **kw: Any) -> Queue:
    options: dict[str, Any] = {
        "passive": False, "durable": True, "exclusive_owner": None, "auto_delete": False,
        "arguments": dict(QUORUM),
    }
    options.update(kw)
    return broker.declare_queue("/", name, **options)


def msg(body: bytes, routing_key: str = "q", **props: Any) -> Message:
    return Message.from_amqp("", routing_key, encode_properties(**props), body)


def refused(broker: AMQPBroker, text: str, **kw: Any) -> None:
    with pytest.raises(PreconditionFailed) as info:
        declare(broker, **kw)
    assert info.value.reply_text == text
    assert broker.vhost("/").get_queue(kw.get("name", "q")) is None


# ---- declare ---------------------------------------------------------------------------------


def test_quorum_declare_makes_a_durable_quorum_queue(broker: AMQPBroker) -> None:
    q = declare(broker)
    assert isinstance(q, QuorumQueue)
    assert q.durable and q.store is not None
    assert q.delivery_limit == DEFAULT_DELIVERY_LIMIT == 20
    assert not isinstance(declare(broker, "c", arguments={}), QuorumQueue)


@pytest.mark.parametrize(
    ("kw", "text"),
    [
        ({"durable": False}, f"invalid property 'non-durable' for {Q}"),
        ({"exclusive_owner": object()}, f"invalid property 'exclusive-owner' for {Q}"),
        ({"auto_delete": True}, f"invalid property 'auto-delete' for {Q}"),
        ({"auto_delete": True, "durable": False}, f"invalid property 'auto-delete' for {Q}"),
    ],
)
def test_quorum_properties_are_refused_as_rabbitmq_refuses_them(
    broker: AMQPBroker, kw: dict[str, Any], text: str
) -> None:
    refused(broker, text, **kw)


@pytest.mark.parametrize(
    "key", ["x-max-priority", "x-queue-mode", "x-max-age", "x-queue-version",
            "x-stream-max-segment-size-bytes", "x-initial-cluster-size"],
)
def test_arguments_of_other_queue_types_are_refused_by_name(
    broker: AMQPBroker, key: str
) -> None:
    value: Any = "7D" if key == "x-max-age" else "lazy" if key == "x-queue-mode" else 5
    refused(
        broker,
        f"invalid arg '{key}' for {Q} of queue type rabbit_quorum_queue",
        arguments={**QUORUM, key: value},
    )


def test_argument_values_are_checked_before_foreign_arguments(broker: AMQPBroker) -> None:
    refused(
        broker,
        f"invalid arg 'x-max-length' for {Q}: {{value_negative,-1}}",
        arguments={**QUORUM, "x-max-priority": 5, "x-max-length": -1},
    )


@pytest.mark.parametrize(
    ("arguments", "text"),
    [
        ({"x-dead-letter-strategy": "sometimes"},
         f"invalid arg 'x-dead-letter-strategy' for {Q}: invalid_dlx_strategy"),
        ({"x-dead-letter-strategy": 1},
         f"invalid arg 'x-dead-letter-strategy' for {Q}: {{unacceptable_type,long}}"),
        ({"x-quorum-initial-group-size": 0},
         f"invalid arg 'x-quorum-initial-group-size' for {Q}: {{value_zero,0}}"),
        ({"x-quorum-initial-group-size": -3},
         f"invalid arg 'x-quorum-initial-group-size' for {Q}: {{value_negative,-3}}"),
        ({"x-queue-leader-locator": "random"},
         f"invalid arg 'x-queue-leader-locator' for {Q}: invalid_queue_locator_arg"),
        ({"x-overflow": "sideways"}, f"invalid arg 'x-overflow' for {Q}: invalid_overflow"),
    ],
)
def test_quorum_argument_values_are_validated(
    broker: AMQPBroker, arguments: dict[str, Any], text: str
) -> None:
    refused(broker, text, arguments={**QUORUM, **arguments})


def test_accepted_and_ignored_arguments(broker: AMQPBroker) -> None:
    q = declare(broker, arguments={
        **QUORUM, "x-quorum-initial-group-size": 3, "x-queue-leader-locator": "balanced",
        "x-max-in-memory-length": 10, "x-consumer-timeout": 60000,
        "x-member-placement-tag": "zone-a", "x-delayed-retry-type": "failed",
    })
    assert isinstance(q, QuorumQueue)


def test_unknown_queue_type_is_refused_first(broker: AMQPBroker) -> None:
    refused(
        broker,
        f"invalid arg 'x-queue-type' for {Q}: \"unsupported queue type 'fast'\"",
        arguments={"x-queue-type": "fast", "x-max-length": -1},
    )


def test_server_named_quorum_queues_are_refused(broker: AMQPBroker) -> None:
    with pytest.raises(PreconditionFailed) as info:
        declare(broker, "")
    assert info.value.reply_text == (
        "Cannot declare a server-named queue for type rabbit_quorum_queue"
    )


def test_classic_queues_refuse_quorum_arguments(broker: AMQPBroker) -> None:
    refused(
        broker,
        f"invalid arg 'x-delivery-limit' for {Q} of queue type rabbit_classic_queue",
        arguments={"x-delivery-limit": 3},
    )


def test_overflow_reject_publish_dlx_acts_as_drop_head(broker: AMQPBroker) -> None:
    q = declare(broker, arguments={**QUORUM, "x-overflow": "reject-publish-dlx",
                                   "x-max-length": 1})
    assert q.args.overflow == "drop-head"
    assert q.publish(msg(b"1")).accepted and q.publish(msg(b"2")).accepted
    delivery = q.get(no_ack=True)
    assert delivery is not None and delivery.message.body == b"2"


@pytest.mark.parametrize(
    ("overflow", "strategy"),
    [("reject-publish", "at-least-once"), ("drop-head", "at-most-once"), (None, "at-most-once")],
)
def test_at_least_once_needs_reject_publish(
    broker: AMQPBroker, overflow: str | None, strategy: str
) -> None:
    arguments = {**QUORUM, "x-dead-letter-exchange": "dlx",
                 "x-dead-letter-strategy": "at-least-once"}
    if overflow is not None:
        arguments["x-overflow"] = overflow
    q = declare(broker, arguments=arguments)
    assert isinstance(q, QuorumQueue) and q.dead_letter_strategy == strategy


# ---- redeclare ---------------------------------------------------------------------------------


def test_redeclare_compares_the_queue_type(broker: AMQPBroker) -> None:
    declare(broker, "c", arguments={})
    with pytest.raises(PreconditionFailed) as info:
        declare(broker, "c")
    assert info.value.reply_text == (
        "inequivalent arg 'x-queue-type' for queue 'c' in vhost '/': received 'quorum' but "
        "current is 'classic'"
    )
    assert declare(broker, "c", arguments={"x-queue-type": "classic"}) is not None
    declare(broker)
    with pytest.raises(PreconditionFailed) as info:
        declare(broker, arguments={})
    assert info.value.reply_text == (
        f"inequivalent arg 'x-queue-type' for {Q}: received 'classic' but current is 'quorum'"
    )


def test_redeclare_compares_quorum_arguments(broker: AMQPBroker) -> None:
    declare(broker, arguments={**QUORUM, "x-delivery-limit": 5})
    with pytest.raises(PreconditionFailed) as info:
        declare(broker, arguments={**QUORUM, "x-delivery-limit": 6})
    assert info.value.reply_text == (
        f"inequivalent arg 'x-delivery-limit' for {Q}: received '6' but current is '5'"
    )
    with pytest.raises(PreconditionFailed, match="inequivalent arg 'x-dead-letter-strategy'"):
        declare(broker, arguments={**QUORUM, "x-delivery-limit": 5,
                                   "x-dead-letter-strategy": "at-most-once"})
    with pytest.raises(PreconditionFailed, match="inequivalent arg 'durable'"):
        declare(broker, durable=False, arguments={**QUORUM, "x-delivery-limit": 5})


# ---- delivery limit and counts ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "limit"), [(None, 20), (0, 0), (3, 3), (-1, None), ("x", 20), (True, 20)]
)
def test_delivery_limit_values(value: Any, limit: int | None) -> None:
    assert delivery_limit({} if value is None else {"x-delivery-limit": value}) == limit


def counts(delivery: Delivery) -> tuple[Any, Any]:
    headers = delivery.message.headers or {}
    return headers.get(DELIVERY_COUNT_HEADER), headers.get(ACQUIRED_COUNT_HEADER)


def test_failed_deliveries_count_returns_do_not(broker: AMQPBroker) -> None:
    q = declare(broker)
    q.publish(msg(b"m", headers={"app": "kept"}))
    first = q.get()
    assert first is not None and not first.redelivered and counts(first) == (None, None)
    q.return_all([first])  # basic.nack requeue=true
    second = q.get()
    assert second is not None and second.redelivered and counts(second) == (None, 1)
    requeue([second])  # basic.reject requeue=true, or a closed channel
    third = q.get()
    assert third is not None and counts(third) == (1, 2)
    assert third.message.headers is not None and third.message.headers["app"] == "kept"
    assert list(third.message.typed_headers()) == sorted(third.message.typed_headers())
    assert third.message.typed_headers()[DELIVERY_COUNT_HEADER].tag == "l"
    assert third.message.offset == first.message.offset  # still the stored message
    assert q.ack(third)
    assert q.message_count == 0 and q.unacked_count == 0


def test_a_message_over_the_delivery_limit_is_dead_lettered(broker: AMQPBroker) -> None:
    vhost = broker.vhost("/")
    vhost.declare_exchange("dlx", "fanout")
    dlq = declare(broker, "dlq")
    vhost.bind_queue("dlq", "dlx")
    q = declare(broker, arguments={**QUORUM, "x-delivery-limit": 1,
                                   "x-dead-letter-exchange": "dlx"})
    q.publish(msg(b"poison"))
    for _ in range(2):
        delivery = q.get()
        assert delivery is not None
        q.reject(delivery, requeue=True)
    assert q.message_count == 0 and q.unacked_count == 0
    dead = dlq.get(no_ack=True)
    assert dead is not None and dead.message.body == b"poison"
    headers = dead.message.headers or {}
    assert headers["x-first-death-reason"] == "delivery_limit"
    assert headers["x-death"][0]["reason"] == "delivery_limit"
    assert headers["x-death"][0]["queue"] == "q"
    assert headers[DELIVERY_COUNT_HEADER] == 2


def test_without_dead_letter_exchange_the_message_is_dropped(broker: AMQPBroker) -> None:
    q = declare(broker, arguments={**QUORUM, "x-delivery-limit": 0})
    q.publish(msg(b"poison"))
    delivery = q.get()
    assert delivery is not None
    q.reject(delivery, requeue=True)
    assert q.message_count == 0 and q.get() is None


def test_a_negative_delivery_limit_is_no_limit(broker: AMQPBroker) -> None:
    q = declare(broker, arguments={**QUORUM, "x-delivery-limit": -1})
    q.publish(msg(b"m"))
    for _ in range(DEFAULT_DELIVERY_LIMIT + 5):
        delivery = q.get()
        assert delivery is not None
        q.reject(delivery, requeue=True)
    delivery = q.get()
    assert delivery is not None and counts(delivery)[0] == DEFAULT_DELIVERY_LIMIT + 5


def test_basic_get_on_single_active_consumer_queue_is_refused(broker: AMQPBroker) -> None:
    q = declare(broker, arguments={**QUORUM, "x-single-active-consumer": True})
    with pytest.raises(ResourceLocked) as info:
        q.get()
    assert info.value.reply_text == (
        f"cannot obtain access to locked {Q}. basic.get operations are not supported by "
        "quorum queues with single active consumer"
    )


# ---- persistence --------------------------------------------------------------------------------


def test_transient_messages_and_the_type_survive_a_restart(tmp_path: Path) -> None:
    broker = make_broker(tmp_path)
    q = declare(broker, arguments={**QUORUM, "x-delivery-limit": 4})
    classic = declare(broker, "c", arguments={})
    for i in range(3):
        result = q.publish(msg(b"t%d" % i, delivery_mode=1))
        assert result.offset >= 0, "a quorum queue stores even transient messages"
        classic.publish(msg(b"t", delivery_mode=1))
    q.flush()
    broker.close()

    again = make_broker(tmp_path)
    try:
        q2 = again.get_queue("/", "q")
        assert isinstance(q2, QuorumQueue) and q2.delivery_limit == 4
        assert q2.message_count == 3
        assert again.get_queue("/", "c").message_count == 0
        got = [q2.get(no_ack=True) for _ in range(3)]
        assert [d.message.body for d in got if d is not None] == [b"t0", b"t1", b"t2"]
        assert all(d is not None and d.message.delivery_mode == 1 for d in got)
    finally:
        again.close()


# ---- consumers --------------------------------------------------------------------------------


class Sink:
    """A consumer recording what it got."""

    def __init__(self, tag: str, prefetch: int = 1, priority: int = 0) -> None:
        self.got: list[Delivery] = []
        self.consumer = PrefetchConsumer(tag, self.got.append, prefetch=prefetch,
                                         priority=priority)

    def ack_all(self, queue: Queue) -> None:
        for d in self.got:
            if queue.ack(d):
                self.consumer.settle()
        queue.dispatch()


def test_single_active_consumer_goes_by_priority_after_quiescing(broker: AMQPBroker) -> None:
    q = declare(broker, arguments={**QUORUM, "x-single-active-consumer": True})
    for i in range(6):
        q.publish(msg(b"%d" % i))
    low, equal = Sink("low"), Sink("equal")
    q.add_consumer(low.consumer)
    q.add_consumer(equal.consumer)
    assert [len(low.got), len(equal.got)] == [1, 0], "the first of equal priority is active"
    high = Sink("high", priority=5)
    q.add_consumer(high.consumer)
    assert len(high.got) == 0, "the active consumer still holds a message: it quiesces"
    low.ack_all(q)
    assert [len(low.got), len(high.got)] == [1, 1], "then the higher priority takes over"
    q.cancel_consumer(high.consumer)
    q.requeue_all(high.got)
    assert len(low.got) == 2 and low.got[-1].redelivered, "back to the earliest registered"
    assert len(equal.got) == 0


def test_single_active_consumer_of_higher_priority_takes_over_an_idle_one(
    broker: AMQPBroker,
) -> None:
    q = declare(broker, arguments={**QUORUM, "x-single-active-consumer": True})
    low, high = Sink("low"), Sink("high", priority=1)
    q.add_consumer(low.consumer)
    q.add_consumer(high.consumer)
    q.publish(msg(b"x"))
    assert (len(low.got), len(high.got)) == (0, 1)


@pytest.mark.parametrize(
    ("arguments", "text"),
    [
        ({"x-stream-offset": "first"},
         f"invalid arg 'x-stream-offset' for {Q} of queue type rabbit_quorum_queue"),
        ({"x-priority": "high"}, f"invalid arg 'x-priority' for {Q}: \"expected integer, got "
                                 "longstr\""),
        ({"x-consumer-timeout": -1}, f"invalid arg 'x-consumer-timeout' for {Q}: "
                                     "{value_negative,-1}"),
    ],
)
def test_consume_arguments_are_checked(
    broker: AMQPBroker, arguments: dict[str, Any], text: str
) -> None:
    q = declare(broker)
    with pytest.raises(PreconditionFailed) as info:
        check_consume_arguments(q, arguments)
    assert info.value.reply_text == text
    check_consume_arguments(q, {"x-priority": -3, "x-consumer-timeout": 1000})
