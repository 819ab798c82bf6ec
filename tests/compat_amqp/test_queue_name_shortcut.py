"""The spec's queue-name shortcut (an empty queue name means the queue last declared on the
channel) and RabbitMQ's reserved ``amq.`` prefix for queue names."""

from __future__ import annotations

from collections.abc import Iterator

import pika
import pytest

from .amqp_clients import connect, wait_until


@pytest.fixture
def conn(amqp_url: str) -> Iterator[pika.BlockingConnection]:
    connection = connect(amqp_url)
    try:
        yield connection
    finally:
        connection.close()


def _declared(conn: pika.BlockingConnection):
    ch = conn.channel()
    return ch, ch.queue_declare("", exclusive=True).method.queue


def _count(ch, queue: str, count: int) -> None:
    wait_until(lambda: ch.queue_declare(queue, passive=True).method.message_count,
               lambda n: n == count, f"{count} message(s) in {queue}")


def test_empty_name_without_a_declared_queue_is_404(conn) -> None:
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        ch.queue_bind("", "amq.direct", "k")
    assert (info.value.reply_code, info.value.reply_text) == (
        404, "NOT_FOUND - no previously declared queue"
    )


def test_bind_get_purge_consume_by_empty_name(conn, name: str) -> None:
    ch, queue = _declared(conn)
    ch.queue_bind("", "amq.direct", name)
    ch.basic_publish("amq.direct", name, b"x")
    _count(ch, queue, 1)
    assert ch.basic_get("", auto_ack=True)[2] == b"x"
    ch.basic_publish("amq.direct", name, b"y")
    _count(ch, queue, 1)
    assert ch.queue_purge("").method.message_count == 1
    ch.queue_unbind("", "amq.direct", name)
    assert ch.basic_consume("", lambda *_a: None)


def test_empty_routing_key_binds_by_the_queue_name(conn) -> None:
    ch, queue = _declared(conn)
    ch.queue_bind("", "amq.direct", "")
    ch.basic_publish("amq.direct", queue, b"z")
    _count(ch, queue, 1)


def test_delete_by_empty_name(conn) -> None:
    ch, queue = _declared(conn)
    assert ch.queue_delete("").method.message_count == 0
    assert ch.queue_delete("").method.message_count == 0, "deleting it again is fine"
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        conn.channel().queue_declare(queue, passive=True)
    assert info.value.reply_code == 404, "the queue is gone"


def test_passive_declare_has_no_shortcut(conn) -> None:
    ch, _queue = _declared(conn)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        ch.queue_declare("", passive=True)
    assert (info.value.reply_code, info.value.reply_text) == (
        404, "NOT_FOUND - no queue '' in vhost '/'"
    )


def test_amq_prefix_is_reserved_even_for_an_existing_queue(conn) -> None:
    ch = conn.channel()
    queue = ch.queue_declare("", auto_delete=True).method.queue
    assert ch.queue_declare(queue, passive=True).method.queue == queue
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        ch.queue_declare(queue)
    assert (info.value.reply_code, info.value.reply_text) == (
        403, f"ACCESS_REFUSED - queue name '{queue}' contains reserved prefix 'amq.*'"
    )
    conn.channel().queue_delete(queue)
