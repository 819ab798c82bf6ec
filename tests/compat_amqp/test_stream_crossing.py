"""One log read both ways: what AMQP routes into a stream Kafka consumers read with its values,
headers and timestamps; what Kafka produces AMQP consumers read from first, an offset and a
timestamp; across SIGTERM and SIGKILL restarts nothing is lost and nothing duplicated. Also the
crossings around it: a binding that keys records by routing key, typed AMQP headers that survive
a trip through a Kafka client, and a Kafka DeleteTopics that deletes the stream queue."""

from __future__ import annotations

import asyncio
import datetime
import time
from typing import Any

import aio_pika
import pika
import pytest
from confluent_kafka.admin import AdminClient

from broker import Broker
from compat_kafka.clients import Sent, consume_range, produce_all, producer, watermarks

from .amqp_clients import WAIT_S, connect, persistent
from .conftest import EXTERNAL_SKIP_REASON, EXTERNAL_URL, AmqpServer

STREAM = {"x-queue-type": "stream"}
COUNT = 10_000
BASE_S = 1_700_000_000  # AMQP timestamps (seconds) of the published messages start here

pytestmark = pytest.mark.skipif(bool(EXTERNAL_URL), reason=EXTERNAL_SKIP_REASON)


def publish_through_topic_exchange(url: str, stream: str, exchange: str) -> None:
    conn = connect(url)
    try:
        ch = conn.channel()
        ch.exchange_declare(exchange, "topic", durable=True)
        ch.queue_declare(stream, durable=True, arguments=STREAM)
        ch.queue_bind(stream, exchange, "orders.#")
        ch.confirm_delivery()
        for i in range(COUNT):
            props = pika.BasicProperties(
                delivery_mode=2, timestamp=BASE_S + i, content_type="text/plain",
                headers={"n": i, "trace": f"t-{i}"},
            )
            ch.basic_publish(exchange, f"orders.eu.{i % 5}", f"amqp-{i}".encode(), props)
    finally:
        conn.close()


async def read_with_aio_pika(url: str, stream: str, offset: Any, count: int) -> list[Any]:
    """(body, x-stream-offset, headers, timestamp) of ``count`` deliveries from ``offset``."""
    connection = await aio_pika.connect_robust(url)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=500)
        queue = await channel.declare_queue(stream, durable=True, arguments=STREAM)
        got: list[Any] = []
        async with asyncio.timeout(WAIT_S * 2), queue.iterator(
            arguments={"x-stream-offset": offset}
        ) as it:
            async for message in it:
                await message.ack()
                got.append(
                    (message.body, message.headers["x-stream-offset"], message.headers,
                     message.timestamp)
                )
                if len(got) == count:
                    break
        return got
    finally:
        await connection.close()


def test_ten_thousand_each_way_across_restarts(own_broker: Broker, name: str) -> None:
    stream, exchange = name, f"{name}-x"
    publish_through_topic_exchange(own_broker.amqp_url, stream, exchange)
    own_broker.restart()  # SIGTERM

    records = consume_range(own_broker.bootstrap, stream, start=0, count=COUNT)
    assert [r.offset for r in records] == list(range(COUNT))
    assert [r.value for r in records] == [f"amqp-{i}".encode() for i in range(COUNT)]
    assert [r.timestamp for r in records] == [(BASE_S + i) * 1000 for i in range(COUNT)]
    for i in (0, 1, 4_321, COUNT - 1):
        headers = dict(records[i].headers)
        assert headers["n"] == str(i).encode() and headers["trace"] == f"t-{i}".encode()
        assert headers["x-amqp-routing-key"] == f"orders.eu.{i % 5}".encode()
        assert headers["x-amqp-exchange"] == exchange.encode()

    kafka_base_ms = (int(time.time()) - 50_000) * 1000
    produce_all(
        producer(own_broker.bootstrap, acks="all"), stream,
        (Sent(f"k{i}".encode(), f"kafka-{i}".encode(), (("src", b"kafka"),),
              kafka_base_ms + i * 1000) for i in range(COUNT)),
    )
    own_broker.kill()  # SIGKILL: the acknowledged records must all be there
    own_broker.restart()
    assert watermarks(own_broker.bootstrap, stream) == (0, 2 * COUNT)

    url = own_broker.amqp_url
    everything = asyncio.run(read_with_aio_pika(url, stream, "first", 2 * COUNT))
    assert [offset for _b, offset, _h, _t in everything] == list(range(2 * COUNT))
    want = [f"amqp-{i}".encode() for i in range(COUNT)] + [
        f"kafka-{i}".encode() for i in range(COUNT)
    ]
    assert [body for body, _o, _h, _t in everything] == want
    _b, _o, headers, stamp = everything[COUNT + 7]
    assert headers["src"] == "kafka" and headers["x-record-key"] == "k7"
    assert stamp == datetime.datetime.fromtimestamp(kafka_base_ms / 1000 + 7, datetime.UTC)
    _b, _o, headers, stamp = everything[3]
    assert headers["n"] == 3 and headers["trace"] == "t-3"  # typed again on the AMQP side
    assert stamp == datetime.datetime.fromtimestamp(BASE_S + 3, datetime.UTC)

    from_offset = asyncio.run(read_with_aio_pika(url, stream, COUNT + 2_500, COUNT - 2_500))
    assert [body for body, _o, _h, _t in from_offset] == want[COUNT + 2_500 :]
    at = datetime.datetime.fromtimestamp(kafka_base_ms / 1000 + 6_000, datetime.UTC)
    from_time = asyncio.run(read_with_aio_pika(url, stream, at, COUNT - 6_000))
    assert [body for body, _o, _h, _t in from_time] == want[COUNT + 6_000 :]


def test_a_binding_keys_records_by_routing_key(amqp: AmqpServer, name: str) -> None:
    assert amqp.broker is not None
    conn = connect(amqp.url)
    try:
        ch = conn.channel()
        ch.exchange_declare(f"{name}-x", "direct", durable=True)
        ch.queue_declare(name, durable=True, arguments=STREAM)
        ch.queue_bind(name, f"{name}-x", "acct-1", arguments={"x-record-key": "routing-key"})
        ch.queue_bind(name, f"{name}-x", "acct-2", arguments={"x-record-key": "routing-key"})
        ch.confirm_delivery()
        for key in ("acct-1", "acct-2", "acct-1"):
            ch.basic_publish(f"{name}-x", key, b"x", persistent())
        ch.basic_publish("", name, b"unkeyed", persistent())  # the default exchange: no key
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            ch.queue_bind(name, f"{name}-x", "k", arguments={"x-record-key": "nope"})
        assert refused.value.reply_code == 406
    finally:
        conn.close()
    records = consume_range(amqp.broker.bootstrap, name, start=0, count=4)
    assert [r.key for r in records] == [b"acct-1", b"acct-2", b"acct-1", None]


def test_typed_headers_survive_a_trip_through_a_kafka_client(
    amqp: AmqpServer, name: str
) -> None:
    """A Kafka client copies records (value, key, headers) from one stream to another; an
    AMQP consumer of the second gets the original message, typed headers and all."""
    assert amqp.broker is not None
    source, target = f"{name}-a", f"{name}-b"
    headers = {"int": 7, "neg": -3, "flag": True, "nested": {"a": [1, "two"]}, "text": "ü"}
    props = pika.BasicProperties(
        delivery_mode=2, headers=headers, priority=4, correlation_id="c-1", timestamp=BASE_S,
    )
    conn = connect(amqp.url)
    try:
        ch = conn.channel()
        for stream in (source, target):
            ch.queue_declare(stream, durable=True, arguments=STREAM)
        ch.confirm_delivery()
        ch.basic_publish("", source, b"payload", props)
        (record,) = consume_range(amqp.broker.bootstrap, source, start=0, count=1)
        produce_all(
            producer(amqp.broker.bootstrap), target,
            [Sent(record.key, record.value or b"", record.headers, record.timestamp)],
        )
        ch.basic_qos(prefetch_count=10)
        method, got, body = next(
            ch.consume(target, arguments={"x-stream-offset": "first"}, inactivity_timeout=WAIT_S)
        )
        assert method is not None, "nothing delivered from the copied stream"
        ch.basic_ack(method.delivery_tag)
        ch.cancel()
    finally:
        conn.close()
    assert body == b"payload" and method.routing_key == source
    assert got.headers == {**headers, "x-stream-offset": 0}
    assert (got.priority, got.correlation_id, got.timestamp) == (4, "c-1", BASE_S)


def test_kafka_delete_topics_deletes_the_stream_queue(amqp: AmqpServer, name: str) -> None:
    assert amqp.broker is not None
    conn = connect(amqp.url)
    try:
        ch = conn.channel()
        ch.queue_declare(name, durable=True, arguments=STREAM)
        ch.basic_qos(prefetch_count=10)
        cancelled: list[str] = []
        ch.basic_consume(
            name, lambda *a: None, arguments={"x-stream-offset": "first"},
        )
        ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
        admin = AdminClient({"bootstrap.servers": amqp.broker.bootstrap})
        admin.delete_topics([name], operation_timeout=10)[name].result(timeout=WAIT_S)
        deadline = time.monotonic() + WAIT_S
        while not cancelled:
            assert time.monotonic() < deadline, "the consumer was not cancelled"
            conn.process_data_events(time_limit=0.2)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as gone:
            ch.queue_declare(name, passive=True)
        assert gone.value.reply_code == 404
    finally:
        if conn.is_open:
            conn.close()
