"""Queues over Kafka topics (``x-topic``): AMQP consumers work a topic off with per-message acks
while Kafka consumers still read every record. confluent-kafka produces, pika and aio-pika
consume as competing consumers with nack/requeue, rejects and a dead-letter exchange; acks
survive SIGTERM and SIGKILL. Needs dari's Kafka listener beside the AMQP one (skipped against
an external broker)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import aio_pika
import pika
import pytest
from confluent_kafka import AcknowledgeType, ShareConsumer
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import ChannelClosedByBroker

from broker import Broker
from compat_kafka.clients import (
    Sent,
    consume_range,
    create_topic,
    produce_all,
    producer,
    watermarks,
)

from .amqp_clients import (
    WAIT_S,
    Got,
    assert_channel_closed,
    connect,
    get_all,
    persistent,
    queue_depth,
)
from .conftest import EXTERNAL_SKIP_REASON, EXTERNAL_URL, AmqpServer

pytestmark = pytest.mark.skipif(bool(EXTERNAL_URL), reason=EXTERNAL_SKIP_REASON)


@pytest.fixture
def kafka(amqp: AmqpServer) -> str:
    assert amqp.broker is not None
    return amqp.broker.bootstrap


@pytest.fixture
def ch(amqp: AmqpServer) -> Iterator[BlockingChannel]:
    conn = connect(amqp.url)
    try:
        yield conn.channel()
    finally:
        if conn.is_open:
            conn.close()


def over(topic: str, **more: object) -> dict[str, object]:
    return {"x-topic": topic, **more}


def produce(bootstrap: str, topic: str, count: int, partitions: int = 1, start: int = 0) -> None:
    produce_all(
        producer(bootstrap), topic,
        (Sent(f"k{i}".encode(), f"v{i}".encode(), (("h", b"x"),), None, i % partitions)
         for i in range(start, start + count)),
    )


def take(
    ch: BlockingChannel, queue: str, count: int, *, ack: bool = True, prefetch: int = 100
) -> list[Got]:
    """`count` deliveries through basic.consume, acked one by one unless ack=False."""
    ch.basic_qos(prefetch_count=prefetch)
    out: list[Got] = []
    deadline = time.monotonic() + WAIT_S
    for method, props, body in ch.consume(queue, inactivity_timeout=0.1):
        if method is not None:
            out.append(Got(body, method.routing_key, method.exchange, method.redelivered,
                           method.delivery_tag, props))
            if ack:
                ch.basic_ack(method.delivery_tag)
        if len(out) >= count:
            break
        assert time.monotonic() < deadline, f"got {len(out)} of {count} from {queue}"
    ch.cancel()  # pika requeues what the generator buffered beyond `count` (nack requeue)
    return out


def test_declare_refusals_and_redeclare(ch: BlockingChannel, kafka: str, name: str) -> None:
    conn = ch.connection
    with pytest.raises(ChannelClosedByBroker) as exc:
        ch.queue_declare(name, durable=False, arguments=over(name))
    assert_channel_closed(exc, 406, "PRECONDITION_FAILED", ch)
    assert "invalid property 'non-durable'" in exc.value.reply_text
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as exc:
        ch.queue_declare(name, durable=True, arguments=over(name, **{"x-max-priority": 5}))
    assert_channel_closed(exc, 406, "PRECONDITION_FAILED", ch)
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as exc:
        ch.queue_declare(name, durable=True, arguments=over(name, **{"x-queue-type": "stream"}))
    assert_channel_closed(exc, 406, "PRECONDITION_FAILED", ch)
    ch = conn.channel()
    ok = ch.queue_declare(name, durable=True, arguments=over(name))  # makes the topic
    assert ok.method.message_count == 0
    assert watermarks(kafka, name) == (0, 0)
    with pytest.raises(ChannelClosedByBroker) as exc:
        ch.queue_declare(name, durable=True, arguments=over(f"{name}-other"))
    assert_channel_closed(exc, 406, "PRECONDITION_FAILED", ch)
    assert "inequivalent arg 'x-topic'" in exc.value.reply_text


def test_kafka_records_as_amqp_messages_with_nack_reject_and_dead_letters(
    ch: BlockingChannel, kafka: str, name: str
) -> None:
    dlx, dlq = f"{name}-dlx", f"{name}-dlq"
    ch.exchange_declare(dlx, "fanout", durable=True)
    ch.queue_declare(dlq, durable=True)
    ch.queue_bind(dlq, dlx)
    queue = f"{name}-q"
    create_topic(kafka, name, 1)
    stamp = (int(time.time()) - 3600) * 1000
    produce_all(producer(kafka), name, [
        Sent(b"key-0", b"v0", (("trace", b"t0"),), stamp),
        Sent(b"key-1", b"v1", (), stamp),
        Sent(None, b"v2", (), stamp),
    ])
    ok = ch.queue_declare(queue, durable=True, arguments=over(
        name, **{"x-dead-letter-exchange": dlx, "x-delivery-limit": 1}
    ))
    assert ok.method.message_count == 3
    ch.basic_qos(prefetch_count=1)
    seen: list[tuple[bytes, bool, object]] = []
    deadline = time.monotonic() + WAIT_S
    for method, props, body in ch.consume(queue, inactivity_timeout=0.1):
        assert time.monotonic() < deadline, f"deliveries so far: {seen}"
        if method is None:
            if len(seen) >= 4:
                break
            continue
        headers = props.headers or {}
        seen.append((body, method.redelivered, headers.get("x-delivery-count")))
        if body == b"v0":
            assert method.routing_key == "key-0"
            assert headers["trace"] == "t0" and headers["x-record-key"] == "key-0"
            assert headers["x-stream-partition"] == 0 and headers["x-stream-offset"] == 0
            assert props.timestamp == stamp // 1000
            ch.basic_ack(method.delivery_tag)
        elif body == b"v1":  # nacked until past the delivery limit: dead-lettered
            ch.basic_nack(method.delivery_tag, requeue=True)
        else:
            assert method.routing_key == "" and "x-record-key" not in headers
            ch.basic_reject(method.delivery_tag, requeue=False)
    ch.cancel()
    assert seen[0] == (b"v0", False, None)
    assert (b"v1", False, None) in seen and (b"v1", True, 1) in seen
    assert Counter(body for body, _r, _c in seen) == {b"v0": 1, b"v1": 2, b"v2": 1}
    dead = {}
    while len(dead) < 2:
        method, props, body = ch.basic_get(dlq, auto_ack=True)
        assert method is not None or time.monotonic() < deadline, f"dead letters: {dead}"
        if method is not None:
            dead[body] = props.headers["x-death"][0]
    assert dead[b"v1"]["reason"] == "delivery_limit" and dead[b"v1"]["queue"] == queue
    assert dead[b"v2"]["reason"] == "rejected"
    assert queue_depth(ch, queue) == 0
    # the records are all still in the topic for Kafka consumers
    assert [r.value for r in consume_range(kafka, name, start=0)] == [b"v0", b"v1", b"v2"]


def test_amqp_publishes_go_to_the_topic_and_back(
    ch: BlockingChannel, kafka: str, name: str
) -> None:
    create_topic(kafka, name, 3)
    exchange = f"{name}-x"
    ch.exchange_declare(exchange, "direct", durable=True)
    ch.queue_declare(name, durable=True, arguments=over(name))
    for key in ("a", "b", "c"):
        ch.queue_bind(name, exchange, key)
    ch.confirm_delivery()
    for i in range(30):
        ch.basic_publish(exchange, "abc"[i % 3], f"m{i}".encode(),
                         persistent(headers={"n": i}, message_id=f"id-{i}"))
    values: list[bytes | None] = []
    by_partition: dict[bytes, set[int]] = {}
    for p in range(3):
        for r in consume_range(kafka, name, partition=p, start=0):
            values.append(r.value)
            by_partition.setdefault(dict(r.headers)["x-amqp-routing-key"], set()).add(p)
    assert sorted(values) == sorted(f"m{i}".encode() for i in range(30))  # type: ignore[type-var]
    assert all(len(parts) == 1 for parts in by_partition.values())  # one key, one partition
    got = take(ch, name, 30)
    assert sorted(g.body for g in got) == sorted(f"m{i}".encode() for i in range(30))
    one = next(g for g in got if g.body == b"m4")
    assert one.exchange == exchange and one.routing_key == "b"
    assert one.properties.headers == {"n": 4} and one.properties.message_id == "id-4"
    assert one.properties.delivery_mode == 2


def test_closed_channel_releases_its_unacked_deliveries(
    amqp: AmqpServer, kafka: str, name: str
) -> None:
    produce(kafka, name, 20)
    first = connect(amqp.url)
    second = connect(amqp.url)
    try:
        a = first.channel()
        a.queue_declare(name, durable=True, arguments=over(name))
        held = take(a, name, 10, ack=False, prefetch=10)
        assert not any(g.redelivered for g in held)
        b = second.channel()
        assert queue_depth(b, name) == 10
        a.close()
        got = take(b, name, 20)
        assert sorted(g.body for g in got) == sorted(f"v{i}".encode() for i in range(20))
        again = {g.body for g in got if g.redelivered}
        assert again == {g.body for g in held}
        assert queue_depth(b, name) == 0
    finally:
        first.close()
        second.close()


def test_basic_get_purge_and_delete(ch: BlockingChannel, kafka: str, name: str) -> None:
    produce(kafka, name, 10)
    ch.queue_declare(name, durable=True, arguments=over(name))
    method, _props, body = ch.basic_get(name)
    assert method is not None and body == b"v0" and method.message_count == 9
    ch.basic_reject(method.delivery_tag, requeue=True)
    method, _props, body = ch.basic_get(name, auto_ack=True)
    assert body == b"v0" and method.redelivered
    assert ch.queue_purge(name).method.message_count == 9
    assert ch.basic_get(name) == (None, None, None)
    assert ch.queue_delete(name).method.message_count == 0
    assert watermarks(kafka, name) == (0, 10)  # the topic stays
    ch.queue_declare(name, durable=True, arguments=over(name))  # a new group: all again
    assert queue_depth(ch, name) == 10


async def test_three_aio_pika_consumers_share_3000_records(
    amqp: AmqpServer, kafka: str, name: str
) -> None:
    total = 3000
    create_topic(kafka, name, 3)
    produce(kafka, name, total, partitions=3)
    got: list[list[bytes]] = [[], [], []]
    done = asyncio.Event()
    connections = [await aio_pika.connect(amqp.url) for _ in range(3)]
    try:
        for index, connection in enumerate(connections):
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=50)
            queue = await channel.declare_queue(name, durable=True, arguments=over(name))

            async def on_message(
                message: aio_pika.abc.AbstractIncomingMessage, index: int = index
            ) -> None:
                got[index].append(message.body)
                await message.ack()
                if sum(len(g) for g in got) >= total:
                    done.set()

            await queue.consume(on_message)
        await asyncio.wait_for(done.wait(), 120)
        channel = await connections[0].channel()
        queue = await channel.declare_queue(name, passive=True)
        assert queue.declaration_result.message_count == 0
    finally:
        for connection in connections:
            await connection.close()
    everything = Counter(body for bodies in got for body in bodies)
    assert len(everything) == total and set(everything.values()) == {1}  # each exactly once
    assert all(got), f"a consumer got nothing: {[len(g) for g in got]}"
    assert sum(watermarks(kafka, name, p)[1] for p in range(3)) == total


def test_acks_survive_sigterm_and_sigkill(own_broker: Broker, name: str) -> None:
    produce(own_broker.bootstrap, name, 500)
    conn = connect(own_broker.amqp_url)
    ch = conn.channel()
    ch.queue_declare(name, durable=True, arguments=over(name))
    acked = {g.body for g in take(ch, name, 200)}
    conn.close()
    own_broker.restart()  # SIGTERM: every ack is kept
    conn = connect(own_broker.amqp_url)
    ch = conn.channel()
    assert queue_depth(ch, name) == 300
    more = take(ch, name, 100)
    assert not {g.body for g in more} & acked
    acked |= {g.body for g in more}
    held = {g.body for g in take(ch, name, 50, ack=False, prefetch=50)}
    own_broker.kill()
    own_broker.start()
    conn = connect(own_broker.amqp_url)
    ch = conn.channel()
    rest = get_all(ch, name)  # everything available after the restart, auto-acked
    bodies = Counter(g.body for g in rest)
    assert set(bodies.values()) == {1}
    never_acked = {f"v{i}".encode() for i in range(500)} - acked
    assert never_acked <= set(bodies), "a record nobody acked was lost"
    assert held <= {g.body for g in rest if g.redelivered}
    assert len(set(bodies) - never_acked) <= 100, "most acks must survive a SIGKILL"
    conn.close()


def test_pika_publish_confirms_over_a_topic_queue(ch: BlockingChannel, name: str) -> None:
    ch.queue_declare(name, durable=True, arguments=over(name))
    ch.confirm_delivery()
    for i in range(50):
        ch.basic_publish("", name, f"m{i}".encode(), pika.BasicProperties(delivery_mode=2))
    assert queue_depth(ch, name) == 50


def test_amqp_consumers_and_kafka_share_consumers_are_one_group(
    amqp: AmqpServer, kafka: str, name: str
) -> None:
    """A confluent-kafka ShareConsumer whose group.id is the queue's name competes with a pika
    consumer of the queue for the same records: each is accepted exactly once overall."""
    total = 3000
    create_topic(kafka, name, 2)
    produce(kafka, name, total, partitions=2)
    conn = connect(amqp.url)
    ch = conn.channel()
    ch.queue_declare(name, durable=True, arguments=over(name))  # group `name`, from first
    amqp_got: list[bytes] = []
    kafka_got: list[bytes] = []
    share = ShareConsumer({"bootstrap.servers": kafka, "group.id": name})
    try:
        share.subscribe([name])
        deadline = time.monotonic() + WAIT_S * 2
        while not kafka_got:  # the Kafka member is in before AMQP starts taking
            assert time.monotonic() < deadline, "the share consumer got nothing"
            kafka_got += [m.value() for m in share.poll(0.2) if m.error() is None]

        def on_message(channel: BlockingChannel, method: Any, _props: Any, body: bytes) -> None:
            amqp_got.append(body)
            channel.basic_ack(method.delivery_tag)

        ch.basic_qos(prefetch_count=5)
        ch.basic_consume(name, on_message)
        while len(amqp_got) + len(kafka_got) < total:
            assert time.monotonic() < deadline, (
                f"amqp {len(amqp_got)} + kafka {len(kafka_got)} of {total}"
            )
            kafka_got += [m.value() for m in share.poll(0.05) if m.error() is None]
            conn.process_data_events(time_limit=0.05)
        share.commit_sync()  # accepts what the last poll returned
    finally:
        share.close()
        conn.close()
    both = Counter(amqp_got + kafka_got)
    assert len(both) == total and set(both.values()) == {1}, "a record went to both or twice"
    assert amqp_got and kafka_got
    conn = connect(amqp.url)
    try:
        assert queue_depth(conn.channel(), name) == 0  # the share consumer's acks count too
    finally:
        conn.close()


def test_a_record_a_share_consumer_releases_goes_to_the_amqp_consumer(
    amqp: AmqpServer, kafka: str, name: str
) -> None:
    create_topic(kafka, name, 1)
    conn = connect(amqp.url)
    ch = conn.channel()
    ch.queue_declare(name, durable=True, arguments=over(name))
    produce(kafka, name, 1)
    share = ShareConsumer({
        "bootstrap.servers": kafka, "group.id": name, "share.acknowledgement.mode": "explicit",
    })
    try:
        share.subscribe([name])
        deadline = time.monotonic() + WAIT_S * 2
        polled: list[Any] = []
        while not polled:
            assert time.monotonic() < deadline, "the share consumer got nothing"
            polled = [m for m in share.poll(0.2) if m.error() is None]
        assert queue_depth(ch, name) == 0  # acquired by the Kafka member
        share.acknowledge(polled[0], AcknowledgeType.RELEASE)
        share.commit_sync()
        (got,) = take(ch, name, 1)
    finally:
        share.close()
        conn.close()
    assert got.body == b"v0" and got.redelivered
    assert got.properties.headers["x-delivery-count"] == 1
