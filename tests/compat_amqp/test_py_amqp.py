"""py-amqp (kombu's and Celery's transport) on the points where it is stricter than pika:
it dispatches every method in arrival order, so it sees what a broker sends ahead of a reply."""

from __future__ import annotations

import contextlib
from urllib.parse import urlsplit

import amqp
import pika
import pytest

from .amqp_clients import WAIT_S, channel, get_all


def py_amqp_connection(url: str) -> amqp.Connection:
    parts = urlsplit(url)
    conn = amqp.Connection(
        host=f"{parts.hostname}:{parts.port or 5672}",
        userid=parts.username or "guest",
        password=parts.password or "guest",
        connect_timeout=10,
    )
    conn.connect()
    return conn


def test_queue_delete_is_answered_before_its_consumers_are_cancelled(
    amqp_url: str, name: str
) -> None:
    conn = py_amqp_connection(amqp_url)
    try:
        ch = conn.channel()
        ch.queue_declare(name)
        events: list[str] = []
        ch.basic_consume(
            name, callback=lambda m: None, on_cancel=lambda tag: events.append("cancel")
        )
        ch.queue_delete(name)
        events.append("delete-ok")
        if "cancel" not in events:
            with contextlib.suppress(TimeoutError):
                conn.drain_events(timeout=WAIT_S)  # the cancel notification, after the reply
        assert events == ["delete-ok", "cancel"], (
            f"saw {events}: a basic.cancel ahead of queue.delete-ok makes py-amqp (and so kombu "
            f"and Celery) raise ConsumerCancelled inside queue_delete()"
        )
    finally:
        conn.collect()


def test_publish_with_immediate_is_not_implemented(amqp_url: str, name: str) -> None:
    conn = py_amqp_connection(amqp_url)
    try:
        ch = conn.channel()
        ch.queue_declare(name, exclusive=True)
        ch.basic_publish(amqp.Message("x"), routing_key=name, immediate=True)
        with pytest.raises(amqp.exceptions.AMQPNotImplementedError) as exc:
            ch.queue_declare(name, passive=True)  # the next synchronous call sees the close
        assert exc.value.reply_code == 540
        assert exc.value.reply_text == "NOT_IMPLEMENTED - immediate=true"
        assert exc.value.method_name == "Basic.publish"
    finally:
        conn.collect()


def test_priority_queue_delivers_higher_priorities_first(amqp_url: str, name: str) -> None:
    with channel(amqp_url) as ch:
        ch.queue_declare(name, exclusive=True, arguments={"x-max-priority": 10})
        ch.confirm_delivery()
        for body, priority in ((b"low", 1), (b"none", None), (b"high", 9), (b"mid", 5),
                               (b"capped", 200)):  # fmt: skip
            ch.basic_publish("", name, body, pika.BasicProperties(priority=priority))
        got = [g.body for g in get_all(ch, name)]
        assert got == [b"capped", b"high", b"mid", b"low", b"none"], (
            "highest priority first; a priority above x-max-priority counts as the maximum, "
            "no priority as 0"
        )
