"""channel_max limits how many channels are open at once, not which numbers they get.

RabbitMQ (rabbit_reader) accepts any channel number from 1 to 65535 while fewer channels than
the negotiated channel_max are open; one more closes the connection with 530 NOT_ALLOWED and
the text below, raised by "operation none".
"""

from __future__ import annotations

import pika
import pytest
from pamqp import commands
from pika.exceptions import ConnectionClosedByBroker

from .amqp_clients import assert_connection_closed, get_one, parameters
from .conftest import AmqpServer
from .raw_amqp import RawConnection


def test_pika_may_use_channel_65535_on_a_fresh_connection(amqp: AmqpServer, name: str):
    conn = pika.BlockingConnection(parameters(amqp.url))
    try:
        ch = conn.channel(channel_number=65535)
        ch.queue_declare(name, auto_delete=True)
        ch.basic_publish("", name, b"high")
        got = get_one(ch, name, auto_ack=True)
        assert got is not None and got.body == b"high"
        ch.queue_delete(name)
    finally:
        conn.close()


def test_one_channel_more_than_channel_max_is_530(amqp: AmqpServer):
    params = parameters(amqp.url)
    params.channel_max = 2
    conn = pika.BlockingConnection(params)
    conn.channel(channel_number=40000)
    conn.channel(channel_number=7)
    with pytest.raises(ConnectionClosedByBroker) as exc:
        conn.channel(channel_number=3)
    assert_connection_closed(exc, 530, "NOT_ALLOWED", conn)
    assert exc.value.reply_text == (
        "NOT_ALLOWED - number of channels opened (2) has reached the negotiated channel_max (2)"
    )


def test_a_closed_channel_frees_its_place(amqp: AmqpServer):
    raw = RawConnection(amqp, channel_max=1)
    try:
        raw.open_channel(65535)
        raw.send(commands.Channel.Close(200, "done", 0, 0), 65535)
        raw.expect(commands.Channel.CloseOk)
        raw.open_channel(2)
        raw.send(commands.Channel.Open(), 3)
        close = raw.expect(commands.Connection.Close)
        assert (close.reply_code, close.class_id, close.method_id) == (530, 0, 0)
        assert "number of channels opened (1)" in close.reply_text
    finally:
        raw.close()
