"""pika's BlockingConnection: the everyday queue operations a RabbitMQ application relies on."""

from __future__ import annotations

import pika
import pytest
from pika.exceptions import UnroutableError

from .amqp_clients import (
    channel,
    connect,
    consume,
    get_all,
    get_one,
    pump_until,
    queue_depth,
    settle,
)


def test_declare_publish_consume_ack_round_trip(amqp_url: str, name: str) -> None:
    with channel(amqp_url) as ch:
        ok = ch.queue_declare(name, exclusive=True)
        assert (ok.method.queue, ok.method.message_count, ok.method.consumer_count) == (name, 0, 0)
        ch.confirm_delivery()  # counts are exact only once the broker has taken every publish
        headers = {"s": "v", "i": 7, "neg": -3, "b": True, "list": [1, "a"], "nested": {"k": 1}}
        props = pika.BasicProperties(
            content_type="application/json",
            content_encoding="utf-8",
            headers=headers,
            delivery_mode=2,
            priority=5,
            correlation_id="corr-1",
            reply_to="replies",
            expiration="60000",
            message_id="msg-1",
            timestamp=1_700_000_000,
            type="order.created",
            user_id="guest",
            app_id="tests",
        )
        bodies = [b"", b"x" * 200_000, *(f"m{i}".encode() for i in range(50))]
        for body in bodies:
            ch.basic_publish("", name, body, properties=props)
        assert queue_depth(ch, name) == len(bodies)

        got = consume(ch, name, len(bodies))
        ch.close()  # acks are asynchronous; a close is answered only after they are processed
        assert [g.body for g in got] == bodies, "bodies (empty and multi-frame included) in order"
        assert all(not g.redelivered for g in got)
        p = got[1].properties
        assert (p.content_type, p.content_encoding, p.delivery_mode, p.priority) == (
            "application/json",
            "utf-8",
            2,
            5,
        )
        assert (p.correlation_id, p.reply_to, p.expiration, p.message_id) == (
            "corr-1",
            "replies",
            "60000",
            "msg-1",
        )
        assert (p.timestamp, p.type, p.user_id, p.app_id) == (
            1_700_000_000,
            "order.created",
            "guest",
            "tests",
        )
        assert p.headers == headers, "header table types survive the round trip"
        again = ch.connection.channel()
        assert queue_depth(again, name) == 0, "acked messages must leave the queue"


def test_unacked_messages_return_to_the_queue_when_the_channel_closes(
    amqp_url: str, name: str
) -> None:
    conn = connect(amqp_url)
    try:
        keeper = conn.channel()
        keeper.queue_declare(name, exclusive=True)
        keeper.confirm_delivery()
        for i in range(3):
            keeper.basic_publish("", name, f"m{i}".encode())
        ch = conn.channel()
        got = consume(ch, name, 3, ack=False)
        assert [g.body for g in got] == [b"m0", b"m1", b"m2"]
        assert queue_depth(keeper, name) == 0, "delivered-unacked messages are not ready"
        ch.close()
        again = get_all(keeper, name)
        assert [g.body for g in again] == [b"m0", b"m1", b"m2"], "requeued in original order"
        assert all(g.redelivered for g in again), "requeued messages carry redelivered=true"
    finally:
        conn.close()


def test_nack_requeue_and_reject(amqp_url: str, name: str) -> None:
    with channel(amqp_url) as ch:
        ch.queue_declare(name, exclusive=True)
        for body in (b"a", b"b", b"c", b"d"):
            ch.basic_publish("", name, body)

        a = get_one(ch, name)
        assert a is not None and a.body == b"a" and not a.redelivered
        ch.basic_nack(a.delivery_tag, requeue=True)
        a2 = get_one(ch, name)
        assert a2 is not None and a2.body == b"a", "nack+requeue puts it back at the head"
        assert a2.redelivered, "a requeued message is flagged redelivered"
        ch.basic_reject(a2.delivery_tag, requeue=False)  # dropped (no dead-letter exchange)

        b = get_one(ch, name)
        c = get_one(ch, name)
        assert b is not None and c is not None and (b.body, c.body) == (b"b", b"c")
        ch.basic_nack(c.delivery_tag, multiple=True, requeue=False)  # drops b and c together
        d = get_one(ch, name)
        assert d is not None and d.body == b"d"
        ch.basic_reject(d.delivery_tag, requeue=True)
        assert [(g.body, g.redelivered) for g in get_all(ch, name)] == [(b"d", True)]
        assert get_one(ch, name) is None, "rejected without requeue must be gone"


def test_basic_get_reports_remaining_count_and_empty(amqp_url: str, name: str) -> None:
    with channel(amqp_url) as ch:
        ch.queue_declare(name, exclusive=True)
        assert ch.basic_get(name) == (None, None, None), "get on an empty queue is get-empty"
        ch.confirm_delivery()
        for i in range(3):
            ch.basic_publish("", name, f"m{i}".encode())
        method, _props, body = ch.basic_get(name, auto_ack=False)
        assert (body, method.message_count, method.redelivered) == (b"m0", 2, False)
        ch.basic_ack(method.delivery_tag)
        method, _props, body = ch.basic_get(name, auto_ack=True)
        assert (body, method.message_count) == (b"m1", 1)
        assert queue_depth(ch, name) == 1


def test_ack_multiple_acks_everything_up_to_the_tag(amqp_url: str, name: str) -> None:
    conn = connect(amqp_url)
    try:
        ch = conn.channel()
        ch.queue_declare(name, exclusive=True)
        for i in range(10):
            ch.basic_publish("", name, f"m{i}".encode())
        got = consume(ch, name, 10, ack=False)
        ch.basic_ack(got[6].delivery_tag, multiple=True)  # m0..m6
        ch.close()  # m7..m9 were not acked: they come back
        ch = conn.channel()
        assert [g.body for g in get_all(ch, name)] == [b"m7", b"m8", b"m9"]
    finally:
        conn.close()


def test_qos_prefetch_count_limits_unacked_deliveries(amqp_url: str, name: str) -> None:
    with channel(amqp_url) as ch:
        ch.queue_declare(name, exclusive=True)
        ch.confirm_delivery()
        for i in range(10):
            ch.basic_publish("", name, f"m{i}".encode())
        ch.basic_qos(prefetch_count=3)
        delivered: list[int] = []
        ch.basic_consume(name, lambda c, m, p, b: delivered.append(m.delivery_tag))
        pump_until(ch.connection, lambda: len(delivered) >= 3, "the first 3 deliveries")
        settle(ch.connection)
        assert len(delivered) == 3, f"prefetch 3 allows 3 unacked deliveries, got {delivered}"
        assert queue_depth(ch, name) == 7

        ch.basic_ack(delivered[0])
        pump_until(ch.connection, lambda: len(delivered) >= 4, "a delivery after one ack")
        settle(ch.connection)
        assert len(delivered) == 4, f"one ack frees exactly one slot, got {delivered}"
        assert queue_depth(ch, name) == 6


def test_publisher_confirms_ack_each_publish(amqp_url: str, name: str) -> None:
    with channel(amqp_url) as ch:
        ch.queue_declare(name, exclusive=True)
        ch.confirm_delivery()
        for i in range(100):
            ch.basic_publish("", name, f"m{i}".encode(), mandatory=True)  # raises if nacked
        assert queue_depth(ch, name) == 100


def test_mandatory_unroutable_publish_is_returned_with_no_route(amqp_url: str, name: str) -> None:
    with channel(amqp_url) as ch:
        ch.confirm_delivery()
        with pytest.raises(UnroutableError) as exc:
            ch.basic_publish("", f"{name}-missing", b"lost", mandatory=True)
        [returned] = exc.value.messages
        assert returned.body == b"lost"
        assert returned.method.reply_code == 312
        assert returned.method.reply_text == "NO_ROUTE"
        assert returned.method.routing_key == f"{name}-missing"

        ch.basic_publish("", f"{name}-missing", b"dropped silently", mandatory=False)
        assert ch.is_open, "an unroutable non-mandatory publish is not an error"


def test_mandatory_return_without_confirms_reaches_the_return_callback(
    amqp_url: str, name: str
) -> None:
    with channel(amqp_url) as ch:
        ch.exchange_declare(f"{name}-x", "direct", auto_delete=True)
        ch.queue_declare(name, exclusive=True)
        ch.queue_bind(name, f"{name}-x", routing_key="bound")
        returned: list[tuple[int, str, str, bytes]] = []
        ch.add_on_return_callback(
            lambda c, m, p, b: returned.append((m.reply_code, m.reply_text, m.routing_key, b))
        )
        ch.basic_publish(f"{name}-x", "unbound", b"back to me", mandatory=True)
        ch.basic_publish(f"{name}-x", "bound", b"routed", mandatory=True)
        assert get_all(ch, name)[0].body == b"routed"  # a round trip: the return arrived before
        ch.connection.process_data_events(time_limit=0.2)
        assert returned == [(312, "NO_ROUTE", "unbound", b"back to me")]


def test_server_named_exclusive_queue_and_delete_reports_count(amqp_url: str, name: str) -> None:
    with channel(amqp_url) as ch:
        ok = ch.queue_declare("", exclusive=True)
        qname = ok.method.queue
        assert qname.startswith("amq.gen-"), f"server-named queues look like amq.gen-*: {qname}"
        ch.confirm_delivery()
        for _ in range(4):
            ch.basic_publish("", qname, b"x")
        assert ch.queue_purge(qname).method.message_count == 4
        ch.basic_publish("", qname, b"y")
        assert ch.queue_delete(qname).method.message_count == 1
