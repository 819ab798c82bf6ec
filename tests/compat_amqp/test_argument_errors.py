"""Queue and exchange arguments RabbitMQ refuses, refused with RabbitMQ's exact reply texts
(the texts here are RabbitMQ 3.10's; pika encodes small ints as signedint)."""

from __future__ import annotations

from typing import Any

import pika
import pytest

from .amqp_clients import connect

QUEUE_CASES: list[tuple[dict[str, Any], str]] = [
    ({"x-max-length": "10"}, "'x-max-length' for Q: \"expected integer, got longstr\""),
    ({"x-max-length": -1}, "'x-max-length' for Q: {value_negative,-1}"),
    ({"x-message-ttl": -5}, "'x-message-ttl' for Q: {value_negative,-5}"),
    ({"x-expires": 0}, "'x-expires' for Q: {value_zero,0}"),
    ({"x-expires": "x"}, "'x-expires' for Q: \"expected integer, got longstr\""),
    ({"x-dead-letter-routing-key": "rk"},
     "'x-dead-letter-routing-key' for Q: routing_key_but_no_dlx_defined"),
    ({"x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": 7},
     "'x-dead-letter-routing-key' for Q: {unacceptable_type,signedint}"),
    ({"x-single-active-consumer": "yes"},
     "'x-single-active-consumer' for Q: {unacceptable_type,longstr}"),
    ({"x-overflow": "foo"}, "'x-overflow' for Q: invalid_overflow"),
    ({"x-overflow": 3}, "'x-overflow' for Q: {unacceptable_type,signedint}"),
    ({"x-max-priority": 300}, "'x-max-priority' for Q: {max_value_exceeded,300}"),
    ({"x-max-priority": "9"}, "'x-max-priority' for Q: \"expected integer, got longstr\""),
    ({"x-max-length-bytes": True}, "'x-max-length-bytes' for Q: \"expected integer, got bool\""),
    ({"x-queue-type": "stream2"}, "'x-queue-type' for Q: \"unsupported queue type 'stream2'\""),
    ({"x-queue-mode": "lazy2"}, "'x-queue-mode' for Q: \"unsupported queue mode 'lazy2'\""),
]


def _refusal(conn: pika.BlockingConnection, declare) -> tuple[int, str]:
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        declare(ch)
    return info.value.reply_code, info.value.reply_text


@pytest.mark.parametrize(("arguments", "text"), QUEUE_CASES)
def test_bad_queue_argument(amqp_url: str, name: str, arguments, text: str) -> None:
    conn = connect(amqp_url)
    try:
        refusal = _refusal(conn, lambda ch: ch.queue_declare(name, arguments=arguments))
        where = f"queue '{name}' in vhost '/'"
        assert refusal == (406, "PRECONDITION_FAILED - invalid arg " + text.replace("Q", where))
    finally:
        conn.close()


def test_dead_letter_exchange_of_another_type(amqp_url: str, name: str) -> None:
    conn = connect(amqp_url)
    try:
        refusal = _refusal(
            conn, lambda ch: ch.queue_declare(name, arguments={"x-dead-letter-exchange": 5})
        )
        assert refusal == (
            406,
            "PRECONDITION_FAILED - invalid type 'signedint' for arg 'x-dead-letter-exchange' "
            f"in queue '{name}' in vhost '/'",
        )
    finally:
        conn.close()


def test_alternate_exchange_of_another_type(amqp_url: str, name: str) -> None:
    conn = connect(amqp_url)
    try:
        refusal = _refusal(
            conn,
            lambda ch: ch.exchange_declare(name, "direct", arguments={"alternate-exchange": 5}),
        )
        assert refusal == (
            406,
            "PRECONDITION_FAILED - invalid type 'signedint' for arg 'alternate-exchange' in "
            f"exchange '{name}' in vhost '/'",
        )
    finally:
        conn.close()


def test_redeclare_without_an_argument_names_the_current_value_and_type(
    amqp_url: str, name: str
) -> None:
    conn = connect(amqp_url)
    try:
        conn.channel().queue_declare(name, arguments={"x-max-length": 10})
        refusal = _refusal(conn, lambda ch: ch.queue_declare(name))
        assert refusal == (
            406,
            f"PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue '{name}' in vhost "
            "'/': received none but current is the value '10' of type 'signedint'",
        )
        conn.channel().queue_delete(name)
    finally:
        conn.close()
