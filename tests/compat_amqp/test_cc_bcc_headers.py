"""Sender-selected distribution: the CC and BCC headers add routing keys; BCC is never delivered."""

from __future__ import annotations

from collections.abc import Iterator

import pika
import pytest

from .amqp_clients import wait_until


@pytest.fixture
def channel(amqp_url: str) -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        yield conn.channel()
    finally:
        conn.close()


def _queues(ch, name: str, exchange: str = "") -> list[str]:
    if exchange:
        ch.exchange_declare(exchange, "direct", auto_delete=True)
    queues = [f"{name}-{i}" for i in range(3)]
    for q in queues:
        ch.queue_declare(q, auto_delete=False, arguments={"x-expires": 60_000})
        if exchange:
            ch.queue_bind(q, exchange, q)
    return queues


def _get(ch, queue: str) -> tuple[str, dict, bytes] | None:
    method, props, body = ch.basic_get(queue, auto_ack=True)
    return None if method is None else (method.routing_key, props.headers, body)


def _wait_count(ch, queue: str, count: int) -> None:
    wait_until(
        lambda: ch.queue_declare(queue, passive=True).method.message_count,
        lambda n: n >= count,
        f"{count} message(s) in {queue}",
    )


def test_cc_and_bcc_route_copies_and_bcc_is_stripped(channel, name: str) -> None:
    a, b, c = _queues(channel, name, exchange=f"{name}-x")
    headers = {"CC": [b], "BCC": [c], "x": 1}
    channel.basic_publish(f"{name}-x", a, b"m1", pika.BasicProperties(headers=headers))
    for q in (a, b, c):
        _wait_count(channel, q, 1)
    expected = (a, {"CC": [b], "x": 1}, b"m1")
    assert [_get(channel, q) for q in (a, b, c)] == [expected] * 3


def test_cc_works_through_the_default_exchange(channel, name: str) -> None:
    a, b, c = _queues(channel, name)
    channel.basic_publish("", a, b"m2", pika.BasicProperties(headers={"CC": [b]}))
    for q in (a, b):
        _wait_count(channel, q, 1)
    assert _get(channel, a) == _get(channel, b) == (a, {"CC": [b]}, b"m2")
    assert _get(channel, c) is None


def test_non_string_cc_entries_are_ignored(channel, name: str) -> None:
    a, b, _c = _queues(channel, name)
    channel.basic_publish("", a, b"m3", pika.BasicProperties(headers={"CC": [b, 5]}))
    for q in (a, b):
        _wait_count(channel, q, 1)
    assert _get(channel, b) == (a, {"CC": [b, 5]}, b"m3")


def test_cc_that_is_not_an_array_is_406(channel, name: str) -> None:
    a, b, _c = _queues(channel, name)
    channel.basic_publish("", a, b"m4", pika.BasicProperties(headers={"CC": b}))
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        channel.queue_declare(a, passive=True)
    assert info.value.reply_code == 406
    assert info.value.reply_text == (
        'PRECONDITION_FAILED - invalid message: {unacceptable_type_in_header,"CC",longstr}'
    )
