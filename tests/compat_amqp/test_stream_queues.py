"""Stream queues are Kafka topics: what pika publishes to a stream queue confluent-kafka fetches,
what confluent-kafka produces pika consumes from first / an offset / a timestamp, a stream
survives a restart, and RabbitMQ's refusals come with its reply codes. Needs dari's Kafka
listener beside the AMQP one (skipped against an external broker)."""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Iterator
from typing import Any

import aio_pika
import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import ChannelClosedByBroker, ConnectionClosedByBroker

from broker import Broker
from compat_kafka.clients import Sent, consume_range, produce_all, producer, watermarks

from .amqp_clients import (
    WAIT_S,
    assert_channel_closed,
    assert_connection_closed,
    connect,
    persistent,
)
from .conftest import EXTERNAL_SKIP_REASON, EXTERNAL_URL, AmqpServer

STREAM = {"x-queue-type": "stream"}
COUNT = 1000

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


def read_stream(
    ch: BlockingChannel, queue: str, count: int, offset: Any = "first", prefetch: int = 100
) -> list[tuple[bytes, str, Any]]:
    """(body, routing key, properties) of `count` deliveries from `offset`, each acked."""
    ch.basic_qos(prefetch_count=prefetch)
    out: list[tuple[bytes, str, Any]] = []
    deadline = time.monotonic() + WAIT_S
    for method, props, body in ch.consume(
        queue, arguments={"x-stream-offset": offset}, inactivity_timeout=0.2
    ):
        if method is not None:
            out.append((body, method.routing_key, props))
            ch.basic_ack(method.delivery_tag)
        if len(out) >= count:
            break
        assert time.monotonic() < deadline, f"read {len(out)} of {count} from {queue}"
    ch.cancel()
    return out


def test_pika_publishes_kafka_fetches(ch: BlockingChannel, kafka: str, name: str) -> None:
    exchange = f"{name}-x"
    ch.exchange_declare(exchange, "topic", durable=True)
    ch.queue_declare(name, durable=True, arguments=STREAM)
    ch.queue_bind(name, exchange, "orders.#")
    ch.confirm_delivery()
    before = int(time.time() * 1000)
    for i in range(COUNT):
        ch.basic_publish(exchange, f"orders.{i % 7}", f"m{i}".encode(), persistent())
    after = int(time.time() * 1000)
    records = consume_range(kafka, name, start=0, count=COUNT)
    assert [r.value for r in records] == [f"m{i}".encode() for i in range(COUNT)]
    assert [r.offset for r in records] == list(range(COUNT))
    for i, record in enumerate(records):
        headers = dict(record.headers)
        assert headers["x-amqp-routing-key"] == f"orders.{i % 7}".encode()
        assert headers["x-amqp-exchange"] == exchange.encode()
        assert before - 1000 <= record.timestamp <= after + 1000
    assert watermarks(kafka, name) == (0, COUNT)
    # and AMQP reads the same data back, offsets in the x-stream-offset header
    got = read_stream(ch, name, COUNT)
    assert [b for b, _rk, _p in got] == [f"m{i}".encode() for i in range(COUNT)]
    assert [p.headers["x-stream-offset"] for _b, _rk, p in got] == list(range(COUNT))
    assert got[3][1] == "orders.3" and got[3][2].delivery_mode == 2


def test_kafka_produces_pika_consumes(ch: BlockingChannel, kafka: str, name: str) -> None:
    ch.queue_declare(name, durable=True, arguments=STREAM)
    base = (int(time.time()) - 10_000) * 1000
    produce_all(
        producer(kafka), name,
        (Sent(f"k{i}".encode(), f"v{i}".encode(), (("h", b"x"),), base + i * 1000)
         for i in range(COUNT)),
    )
    want = [f"v{i}".encode() for i in range(COUNT)]
    got = read_stream(ch, name, COUNT, "first")
    assert [b for b, _rk, _p in got] == want
    assert got[5][1] == "k5"
    assert got[5][2].headers == {"h": "x", "x-record-key": "k5", "x-stream-offset": 5}
    assert got[5][2].timestamp == (base + 5 * 1000) // 1000
    from_offset = read_stream(ch, name, COUNT - 600, 600)
    assert [b for b, _rk, _p in from_offset] == want[600:]
    at = datetime.datetime.fromtimestamp((base + 700 * 1000) / 1000, datetime.UTC)
    from_time = read_stream(ch, name, COUNT - 700, at)
    assert [b for b, _rk, _p in from_time] == want[700:]
    last = read_stream(ch, name, 1, "last")
    assert last[0][2].headers["x-stream-offset"] >= 0


def test_caught_up_consumer_gets_new_kafka_records(
    ch: BlockingChannel, kafka: str, name: str
) -> None:
    ch.queue_declare(name, durable=True, arguments=STREAM)
    ch.basic_publish("", name, b"old")
    ch.basic_qos(prefetch_count=10)
    got: list[bytes] = []
    deadline = time.monotonic() + WAIT_S
    produced = False
    for method, _props, body in ch.consume(name, inactivity_timeout=0.2):  # "next"
        if method is not None:
            got.append(body)
            ch.basic_ack(method.delivery_tag)
        elif not produced:
            produce_all(producer(kafka), name, [Sent(None, b"new", (), None)])
            produced = True
        if got:
            break
        assert time.monotonic() < deadline, "no delivery of the Kafka record"
    ch.cancel()
    assert got == [b"new"]


def test_stream_survives_restart(own_broker: Broker, name: str) -> None:
    conn = connect(own_broker.amqp_url)
    ch = conn.channel()
    ch.queue_declare(name, durable=True, arguments={**STREAM, "x-max-age": "7D"})
    ch.confirm_delivery()
    for i in range(200):
        ch.basic_publish("", name, f"m{i}".encode(), persistent())
    conn.close()
    own_broker.restart()
    conn = connect(own_broker.amqp_url)
    try:
        ch = conn.channel()
        ok = ch.queue_declare(name, durable=True, arguments={**STREAM, "x-max-age": "7D"})
        assert ok.method.message_count == 200
        got = read_stream(ch, name, 200)
        assert [b for b, _rk, _p in got] == [f"m{i}".encode() for i in range(200)]
        assert watermarks(own_broker.bootstrap, name) == (0, 200)
    finally:
        if conn.is_open:
            conn.close()


def test_consume_without_prefetch_is_refused(ch: BlockingChannel, name: str) -> None:
    ch.queue_declare(name, durable=True, arguments=STREAM)
    with pytest.raises(ChannelClosedByBroker) as exc:
        ch.basic_consume(name, lambda *a: None)
        ch.connection.process_data_events(time_limit=1)
    assert_channel_closed(exc, 406, "PRECONDITION_FAILED", ch)
    assert "consumer prefetch count is not set for 'queue" in exc.value.reply_text


def test_consume_with_no_ack_is_refused(ch: BlockingChannel, name: str) -> None:
    ch.queue_declare(name, durable=True, arguments=STREAM)
    ch.basic_qos(prefetch_count=10)
    with pytest.raises(ConnectionClosedByBroker) as exc:
        ch.basic_consume(name, lambda *a: None, auto_ack=True)
        ch.connection.process_data_events(time_limit=1)
    assert_connection_closed(exc, 540, "NOT_IMPLEMENTED", ch.connection)
    assert "automatic acknowledgement not supported by stream queues" in exc.value.reply_text


def test_global_prefetch_is_refused(ch: BlockingChannel, name: str) -> None:
    ch.queue_declare(name, durable=True, arguments=STREAM)
    ch.basic_qos(prefetch_count=10)
    ch.basic_qos(prefetch_count=100, global_qos=True)
    with pytest.raises(ConnectionClosedByBroker) as exc:
        ch.basic_consume(name, lambda *a: None)
        ch.connection.process_data_events(time_limit=1)
    assert_connection_closed(exc, 540, "NOT_IMPLEMENTED", ch.connection)
    assert exc.value.reply_text.endswith("does not support global qos")


def test_basic_get_is_refused(ch: BlockingChannel, name: str) -> None:
    ch.queue_declare(name, durable=True, arguments=STREAM)
    with pytest.raises(ConnectionClosedByBroker) as exc:
        ch.basic_get(name)
    assert_connection_closed(exc, 540, "NOT_IMPLEMENTED", ch.connection)
    assert "basic.get not supported by stream queues" in exc.value.reply_text


def test_bad_stream_offset_type_is_refused(ch: BlockingChannel, name: str) -> None:
    ch.queue_declare(name, durable=True, arguments=STREAM)
    ch.basic_qos(prefetch_count=10)
    with pytest.raises(ChannelClosedByBroker) as exc:
        ch.basic_consume(name, lambda *a: None, arguments={"x-stream-offset": True})
        ch.connection.process_data_events(time_limit=1)
    assert_channel_closed(exc, 406, "PRECONDITION_FAILED", ch)
    assert "failed consuming from stream queue" in exc.value.reply_text


@pytest.mark.parametrize(
    ("kw", "text"),
    [
        ({"arguments": {**STREAM, "x-max-priority": 10}},
         "invalid arg 'x-max-priority' for queue '{q}' in vhost '/' of queue type "
         "rabbit_stream_queue"),
        ({"arguments": {"x-queue-type": "nosuch"}},
         "invalid arg 'x-queue-type' for queue '{q}' in vhost '/': "
         "\"unsupported queue type 'nosuch'\""),
        ({"arguments": STREAM, "exclusive": True},
         "invalid property 'exclusive-owner' for queue '{q}' in vhost '/'"),
        ({"arguments": STREAM, "auto_delete": True},
         "invalid property 'auto-delete' for queue '{q}' in vhost '/'"),
    ],
)
def test_declare_refusals(ch: BlockingChannel, name: str, kw: dict[str, Any], text: str) -> None:
    options: dict[str, Any] = {"durable": True, **kw}
    with pytest.raises(ChannelClosedByBroker) as exc:
        ch.queue_declare(name, **options)
    assert_channel_closed(exc, 406, "PRECONDITION_FAILED", ch)
    assert exc.value.reply_text == "PRECONDITION_FAILED - " + text.format(q=name)


def test_pika_confirms_on_stream(amqp: AmqpServer, name: str) -> None:
    params = pika.URLParameters(amqp.url)
    conn = pika.BlockingConnection(params)
    try:
        ch = conn.channel()
        ch.queue_declare(name, durable=True, arguments=STREAM)
        ch.confirm_delivery()
        ch.basic_publish("", name, b"x", persistent(), mandatory=True)  # raises unless acked
        assert ch.queue_declare(name, passive=True).method.message_count == 1
    finally:
        conn.close()


async def test_aio_pika_consumes_a_kafka_made_topic_from_first(
    amqp_url: str, kafka: str, name: str
) -> None:
    records = (Sent(None, f"r{i}".encode(), (), None) for i in range(300))
    produce_all(producer(kafka), name, records)  # the topic is auto-created by Kafka
    connection = await aio_pika.connect_robust(amqp_url)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=50)
        queue = await channel.declare_queue(name, durable=True, arguments=STREAM)
        got: list[tuple[bytes, int]] = []
        async with asyncio.timeout(WAIT_S), queue.iterator(
            arguments={"x-stream-offset": "first"}
        ) as it:
            async for message in it:
                await message.ack()
                got.append((message.body, message.headers["x-stream-offset"]))
                if len(got) == 300:
                    break
        assert got == [(f"r{i}".encode(), i) for i in range(300)]
    finally:
        await connection.close()


def test_confirmed_stream_messages_survive_sigkill(own_broker: Broker, name: str) -> None:
    conn = connect(own_broker.amqp_url)
    ch = conn.channel()
    ch.queue_declare(name, durable=True, arguments=STREAM)
    ch.confirm_delivery()
    for i in range(300):
        ch.basic_publish("", name, f"m{i}".encode(), persistent())
    own_broker.kill()
    own_broker.restart()
    records = consume_range(own_broker.bootstrap, name, start=0)
    assert [r.value for r in records] == [f"m{i}".encode() for i in range(300)]
