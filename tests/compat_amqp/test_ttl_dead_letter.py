"""Per-queue and per-message TTL, max-length and dead-lettering, as RabbitMQ applications use."""

from __future__ import annotations

import time

import pika

from .amqp_clients import channel


def _wait_for_message(ch, queue: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        method, props, body = ch.basic_get(queue, auto_ack=True)
        if method is not None:
            return method, props, body
        time.sleep(0.05)
    raise AssertionError(f"no message arrived in {queue} within {timeout} s")


def test_expired_messages_are_dead_lettered(amqp_url: str, name: str) -> None:
    with channel(amqp_url) as ch:
        ch.queue_declare(f"{name}-dlq", exclusive=True)
        ch.queue_declare(
            name,
            exclusive=True,
            arguments={
                "x-message-ttl": 200,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": f"{name}-dlq",
            },
        )
        ch.basic_publish("", name, b"short-lived", pika.BasicProperties(headers={"k": "v"}))
        _method, props, body = _wait_for_message(ch, f"{name}-dlq")
        assert body == b"short-lived"
        assert props.headers["k"] == "v", "dead-lettering keeps the properties"
        assert ch.basic_get(name, auto_ack=True)[0] is None, "expired message left the queue"


def test_per_message_expiration(amqp_url: str, name: str) -> None:
    with channel(amqp_url) as ch:
        ch.queue_declare(name, exclusive=True)
        ch.basic_publish("", name, b"gone", pika.BasicProperties(expiration="100"))
        ch.basic_publish("", name, b"stays")
        time.sleep(0.3)
        _method, _props, body = _wait_for_message(ch, name)
        assert body == b"stays"
        assert ch.basic_get(name, auto_ack=True)[0] is None


def test_max_length_drops_head_into_dead_letter_queue(amqp_url: str, name: str) -> None:
    with channel(amqp_url) as ch:
        ch.queue_declare(f"{name}-dlq", exclusive=True)
        ch.queue_declare(
            name,
            exclusive=True,
            arguments={
                "x-max-length": 2,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": f"{name}-dlq",
            },
        )
        for body in (b"1", b"2", b"3"):
            ch.basic_publish("", name, body)
        bodies = [_wait_for_message(ch, name)[2], _wait_for_message(ch, name)[2]]
        assert bodies == [b"2", b"3"]
        assert _wait_for_message(ch, f"{name}-dlq")[2] == b"1"
