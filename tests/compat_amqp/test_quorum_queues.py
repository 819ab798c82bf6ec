"""Quorum queues (x-queue-type=quorum) through pika and aio-pika: RabbitMQ 4's declare refusals
and texts, x-delivery-count and x-delivery-limit with dead-lettering, dead-letter strategies,
qos, and what survives a restart."""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
import pika
import pytest
from aio_pika.exceptions import ChannelPreconditionFailed
from pika.exceptions import ChannelClosedByBroker

from broker import Broker

from .amqp_clients import (
    WAIT_S,
    assert_channel_closed,
    channel,
    connect,
    consume,
    get_one,
    pump_until,
    queue_depth,
    settle,
    wait_until,
)

QUORUM = {"x-queue-type": "quorum"}


def where(name: str) -> str:
    return f"queue '{name}' in vhost '/'"


def refused(url: str, text: str, name: str, **kw: Any) -> None:
    """queue.declare of `name` closes the channel with 406 and exactly `text`."""
    with channel(url) as ch:
        with pytest.raises(ChannelClosedByBroker) as exc:
            ch.queue_declare(name, **kw)
        assert_channel_closed(exc, 406, "PRECONDITION_FAILED", ch)
        assert exc.value.reply_text == f"PRECONDITION_FAILED - {text}"


# ---- declare -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "problem"),
    [
        ({"durable": False}, "invalid property 'non-durable' for {}"),
        ({"durable": True, "exclusive": True}, "invalid property 'exclusive-owner' for {}"),
        ({"durable": True, "auto_delete": True}, "invalid property 'auto-delete' for {}"),
        ({"durable": True, "arguments": {**QUORUM, "x-max-priority": 10}},
         "invalid arg 'x-max-priority' for {} of queue type rabbit_quorum_queue"),
        ({"durable": True, "arguments": {**QUORUM, "x-queue-mode": "lazy"}},
         "invalid arg 'x-queue-mode' for {} of queue type rabbit_quorum_queue"),
        ({"durable": True, "arguments": {**QUORUM, "x-dead-letter-strategy": "never"}},
         "invalid arg 'x-dead-letter-strategy' for {}: invalid_dlx_strategy"),
        ({"durable": True, "arguments": {"x-queue-type": "turbo"}},
         "invalid arg 'x-queue-type' for {}: \"unsupported queue type 'turbo'\""),
    ],
)
def test_declare_refusals_match_rabbitmq(
    amqp_url: str, name: str, kw: dict[str, Any], problem: str
) -> None:
    kw.setdefault("arguments", dict(QUORUM))
    refused(amqp_url, problem.format(where(name)), name, **kw)
    with channel(amqp_url) as ch:
        with pytest.raises(ChannelClosedByBroker) as exc:
            ch.queue_declare(name, passive=True)
        assert exc.value.reply_code == 404, "a refused declare creates nothing"


def test_server_named_quorum_queue_is_refused(amqp_url: str) -> None:
    refused(
        amqp_url, "Cannot declare a server-named queue for type rabbit_quorum_queue", "",
        durable=True, arguments=QUORUM,
    )


def test_redeclare_with_another_queue_type_is_inequivalent(amqp_url: str, name: str) -> None:
    with channel(amqp_url) as ch:
        ok = ch.queue_declare(name, durable=True, arguments=QUORUM)
        assert (ok.method.message_count, ok.method.consumer_count) == (0, 0)
        ch.basic_publish("", name, b"one")
        ch.basic_publish("", name, b"two")
        wait_until(lambda: queue_depth(ch, name), lambda n: n == 2, "two ready messages")
        ok = ch.queue_declare(name, durable=True, arguments=QUORUM)
        assert (ok.method.message_count, ok.method.consumer_count) == (2, 0)
    refused(
        amqp_url,
        f"inequivalent arg 'x-queue-type' for {where(name)}: received 'classic' but current "
        "is 'quorum'",
        name, durable=True,
    )
    refused(
        amqp_url,
        f"inequivalent arg 'x-delivery-limit' for {where(name)}: received the value '3' of "
        "type 'signedint' but current is none",
        name, durable=True, arguments={**QUORUM, "x-delivery-limit": 3},
    )
    with channel(amqp_url) as ch:
        ch.queue_declare(f"{name}-c", durable=True)
    refused(
        amqp_url,
        f"inequivalent arg 'x-queue-type' for {where(name + '-c')}: received 'quorum' but "
        "current is 'classic'",
        f"{name}-c", durable=True, arguments=QUORUM,
    )
    with channel(amqp_url) as ch:
        ch.queue_delete(name)
        ch.queue_delete(f"{name}-c")


def test_classic_queue_refuses_quorum_arguments(amqp_url: str, name: str) -> None:
    refused(
        amqp_url,
        f"invalid arg 'x-delivery-limit' for {where(name)} of queue type rabbit_classic_queue",
        name, durable=True, arguments={"x-delivery-limit": 5},
    )


# ---- delivery count and limit --------------------------------------------------------------


def delivery_count(got: Any) -> Any:
    return (got.properties.headers or {}).get("x-delivery-count")


def test_reject_counts_nack_does_not_and_the_limit_dead_letters(
    amqp_url: str, name: str
) -> None:
    dlq = f"{name}-dlq"
    with channel(amqp_url) as ch:
        ch.queue_declare(dlq, durable=True)
        ch.queue_declare(name, durable=True, arguments={
            **QUORUM, "x-delivery-limit": 2, "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": dlq,
        })
        ch.confirm_delivery()
        ch.basic_publish("", name, b"poison", properties=pika.BasicProperties(headers={"a": 1}))
        first = get_one(ch, name)
        assert first is not None and not first.redelivered and delivery_count(first) is None
        ch.basic_nack(first.delivery_tag, requeue=True)  # a return: not a failed delivery
        got = get_one(ch, name)
        assert got is not None and got.redelivered and delivery_count(got) is None
        assert got.properties.headers["x-acquired-count"] == 1
        for expected in (1, 2):
            ch.basic_reject(got.delivery_tag, requeue=True)
            wait_until(lambda: queue_depth(ch, name), lambda n: n == 1, "the requeued message")
            got = get_one(ch, name)
            assert got is not None and got.redelivered
            assert delivery_count(got) == expected
            assert got.properties.headers["a"] == 1, "the publisher's headers stay"
        ch.basic_reject(got.delivery_tag, requeue=True)  # the third failure: over the limit
        wait_until(lambda: queue_depth(ch, dlq), lambda n: n == 1, "the dead-lettered message")
        assert queue_depth(ch, name) == 0
        dead = get_one(ch, dlq, auto_ack=True)
        assert dead is not None and dead.body == b"poison"
        headers = dead.properties.headers
        assert headers["x-first-death-reason"] == "delivery_limit"
        assert headers["x-death"][0]["reason"] == "delivery_limit"
        assert headers["x-death"][0]["queue"] == name
        ch.queue_delete(name)
        ch.queue_delete(dlq)


def test_a_closed_consumer_channel_counts_as_a_failed_delivery(
    amqp_url: str, name: str
) -> None:
    conn = connect(amqp_url)
    try:
        ch = conn.channel()
        ch.queue_declare(name, durable=True, arguments={**QUORUM, "x-delivery-limit": 1})
        ch.basic_publish("", name, b"crashy")
        for expected in (None, 1):
            consumer = conn.channel()
            got = consume(consumer, name, 1, ack=False)
            assert delivery_count(got[0]) == expected
            consumer.close()  # unacked: back to the queue, one more failed delivery
        wait_until(lambda: queue_depth(ch, name), lambda n: n == 0, "the dropped message")
        settle(conn)
        assert get_one(ch, name) is None, "over the limit without a DLX: dropped"
        ch.queue_delete(name)
    finally:
        conn.close()


def test_default_delivery_limit_is_twenty(amqp_url: str, name: str) -> None:
    with channel(amqp_url) as ch:
        ch.queue_declare(name, durable=True, arguments=QUORUM)
        ch.basic_publish("", name, b"m")
        seen = []
        for _ in range(25):
            wait_until(lambda: queue_depth(ch, name), lambda n: n <= 1, "settled queue")
            got = get_one(ch, name)
            if got is None:
                break
            seen.append(delivery_count(got))
            ch.basic_reject(got.delivery_tag, requeue=True)
        assert seen == [None, *range(1, 21)], "delivered 21 times, then dropped"
        ch.queue_delete(name)


# ---- dead-letter strategy, TTL ---------------------------------------------------------------


def test_at_least_once_dead_lettering_of_expired_messages(amqp_url: str, name: str) -> None:
    """Celery's delayed-delivery queues: quorum, reject-publish, a TTL and at-least-once."""
    target = f"{name}-target"
    with channel(amqp_url) as ch:
        ch.exchange_declare(f"{name}-x", "topic", durable=True)
        ch.queue_declare(target, durable=True, arguments=QUORUM)
        ch.queue_bind(target, f"{name}-x", "#.job")
        ch.queue_declare(name, durable=True, arguments={
            **QUORUM, "x-overflow": "reject-publish", "x-message-ttl": 200,
            "x-dead-letter-exchange": f"{name}-x", "x-dead-letter-strategy": "at-least-once",
        })
        ch.exchange_declare(f"{name}-in", "topic", durable=True)
        ch.queue_bind(name, f"{name}-in", "#")
        ch.confirm_delivery()
        ch.basic_publish(f"{name}-in", "1.0.job", b"later",
                         properties=pika.BasicProperties(delivery_mode=2))
        assert queue_depth(ch, target) == 0
        wait_until(lambda: queue_depth(ch, target), lambda n: n == 1, "the expired message")
        got = get_one(ch, target, auto_ack=True)
        assert got is not None and got.body == b"later"
        assert got.properties.headers["x-death"][0]["reason"] == "expired"
        for q in (name, target):
            ch.queue_delete(q)
        ch.exchange_delete(f"{name}-x")
        ch.exchange_delete(f"{name}-in")


def test_reject_publish_at_max_length_nacks(amqp_url: str, name: str) -> None:
    with channel(amqp_url) as ch:
        ch.queue_declare(name, durable=True, arguments={
            **QUORUM, "x-overflow": "reject-publish", "x-max-length": 1,
        })
        ch.confirm_delivery()
        ch.basic_publish("", name, b"1")
        with pytest.raises(pika.exceptions.NackError):
            ch.basic_publish("", name, b"2")
        assert queue_depth(ch, name) == 1
        ch.queue_delete(name)


# ---- consumers -------------------------------------------------------------------------------


def test_global_qos_is_a_per_consumer_window_on_quorum_queues(
    amqp_url: str, name: str
) -> None:
    conn = connect(amqp_url)
    try:
        ch = conn.channel()
        ch.queue_declare(name, durable=True, arguments=QUORUM)
        ch.queue_declare(f"{name}-2", durable=True, arguments=QUORUM)
        for i in range(10):
            ch.basic_publish("", name, b"%d" % i)
            ch.basic_publish("", f"{name}-2", b"%d" % i)
        ch.basic_qos(prefetch_count=2, global_qos=True)
        got: list[str] = []
        for queue in (name, f"{name}-2"):
            ch.basic_consume(queue, lambda _c, m, _p, _b: got.append(m.routing_key))
        pump_until(conn, lambda: len(got) >= 4, "two deliveries per consumer")
        settle(conn)
        assert sorted(got) == sorted([name, name, f"{name}-2", f"{name}-2"]), (
            "each quorum consumer has its own window of 2 (RabbitMQ 4 has no global qos)"
        )
        ch.close()
        ch = conn.channel()
        ch.queue_delete(name)
        ch.queue_delete(f"{name}-2")
    finally:
        conn.close()


def test_basic_get_on_single_active_consumer_quorum_queue(amqp_url: str, name: str) -> None:
    with channel(amqp_url) as ch:
        ch.queue_declare(name, durable=True, arguments={**QUORUM, "x-single-active-consumer": True})
        with pytest.raises(ChannelClosedByBroker) as exc:
            ch.basic_get(name)
        assert_channel_closed(exc, 405, "RESOURCE_LOCKED", ch)
        assert exc.value.reply_text == (
            f"RESOURCE_LOCKED - cannot obtain access to locked {where(name)}. basic.get "
            "operations are not supported by quorum queues with single active consumer"
        )
    with channel(amqp_url) as ch:
        ch.queue_delete(name)


def test_stream_consumer_arguments_are_refused(amqp_url: str, name: str) -> None:
    with channel(amqp_url) as ch:
        ch.queue_declare(name, durable=True, arguments=QUORUM)
        with pytest.raises(ChannelClosedByBroker) as exc:
            ch.basic_consume(name, lambda *_: None, arguments={"x-stream-offset": "first"})
            ch.connection.process_data_events(time_limit=1)
        assert_channel_closed(exc, 406, "PRECONDITION_FAILED", ch)
        assert exc.value.reply_text == (
            f"PRECONDITION_FAILED - invalid arg 'x-stream-offset' for {where(name)} of queue "
            "type rabbit_quorum_queue"
        )
    with channel(amqp_url) as ch:
        ch.queue_delete(name)


def test_single_active_consumer_prefers_the_higher_priority(amqp_url: str, name: str) -> None:
    conn = connect(amqp_url)
    try:
        ch = conn.channel()
        ch.queue_declare(name, durable=True, arguments={
            **QUORUM, "x-single-active-consumer": True,
        })
        got: dict[str, list[bytes]] = {"low": [], "high": []}
        ch.basic_qos(prefetch_count=1)
        for tag, priority in (("low", 0), ("high", 10)):
            ch.basic_consume(
                name, lambda c, m, _p, b: (got[m.consumer_tag].append(b),
                                           c.basic_ack(m.delivery_tag)),
                consumer_tag=tag, arguments={"x-priority": priority},
            )
        for i in range(5):
            ch.basic_publish("", name, b"%d" % i)
        pump_until(conn, lambda: len(got["high"]) == 5, "all messages at the high consumer")
        assert got["low"] == []
        ch.close()
        ch = conn.channel()
        ch.queue_delete(name)
    finally:
        conn.close()


# ---- aio-pika --------------------------------------------------------------------------------


async def test_aio_pika_declare_refusal_and_redelivery_count(amqp_url: str, name: str) -> None:
    conn = await aio_pika.connect_robust(amqp_url, timeout=10)
    async with conn:
        ch = await conn.channel()
        with pytest.raises(ChannelPreconditionFailed, match="invalid property 'non-durable'"):
            await ch.declare_queue(name, durable=False, arguments=QUORUM)
        ch = await conn.channel(publisher_confirms=True)
        queue = await ch.declare_queue(name, durable=True, arguments={
            **QUORUM, "x-delivery-limit": 1,
        })
        await ch.default_exchange.publish(aio_pika.Message(b"job"), routing_key=name)
        counts = []
        async with asyncio.timeout(WAIT_S), queue.iterator() as it:
            async for message in it:
                counts.append(message.headers.get("x-delivery-count"))
                await message.reject(requeue=True)
                if len(counts) == 2:
                    break
        assert counts == [None, 1]
        result = await asyncio.wait_for(queue.declare(), WAIT_S)
        for _ in range(100):
            if result.message_count == 0:
                break
            await asyncio.sleep(0.05)
            result = await queue.declare()
        assert result.message_count == 0, "over the delivery limit: dropped"
        await queue.delete()


# ---- restart -----------------------------------------------------------------------------------


def test_quorum_messages_even_transient_survive_sigkill(own_broker: Broker, name: str) -> None:
    url = own_broker.amqp_url
    with channel(url) as ch:
        ch.queue_declare(name, durable=True, arguments={**QUORUM, "x-delivery-limit": 3})
        ch.confirm_delivery()
        for i in range(5):
            ch.basic_publish(
                "", name, b"t%d" % i, properties=pika.BasicProperties(delivery_mode=1)
            )
    own_broker.kill()
    own_broker.start()
    with channel(url) as ch:
        ok = ch.queue_declare(name, durable=True, arguments={**QUORUM, "x-delivery-limit": 3})
        assert ok.method.message_count == 5
        bodies = [g.body for g in consume(ch, name, 5)]
        assert bodies == [b"t%d" % i for i in range(5)]
    refused(
        url,
        f"inequivalent arg 'x-queue-type' for {where(name)}: received 'classic' but current "
        "is 'quorum'",
        name, durable=True,
    )
