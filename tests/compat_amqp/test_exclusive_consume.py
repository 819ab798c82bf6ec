"""A basic.consume the queue refuses because it is in exclusive use gets no consume-ok.

RabbitMQ checks exclusive use before it answers: the client sees only the 403 channel.close,
so aio-pika/aiormq never believe in a consumer that does not exist. Observed on the wire with
a raw client; pika and aio-pika see the refusal as the failure of their consume call.
"""

from __future__ import annotations

import aio_pika
import aiormq
import pytest
from pamqp import commands
from pika.exceptions import ChannelClosedByBroker

from .amqp_clients import assert_channel_closed, channel
from .conftest import AmqpServer
from .raw_amqp import RawConnection


async def _ignore(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    pass


def _refused(close: commands.Channel.Close, queue: str) -> None:
    assert (close.reply_code, close.class_id, close.method_id) == (403, 60, 20)
    assert close.reply_text == f"ACCESS_REFUSED - queue '{queue}' in vhost '/' in exclusive use"


def test_consume_beside_an_exclusive_consumer_gets_no_consume_ok(amqp: AmqpServer, name: str):
    with channel(amqp.url) as owner:
        owner.queue_declare(name, auto_delete=True)
        owner.basic_consume(name, lambda *_: None, exclusive=True)
        raw = RawConnection(amqp)
        try:
            raw.open_channel(1)
            raw.send(commands.Basic.Consume(queue=name, consumer_tag="late"), 1)
            frames = raw.until(commands.Channel.Close)
            assert [type(f) for f in frames] == [commands.Channel.Close], frames
            _refused(frames[0], name)
            raw.send(commands.Channel.CloseOk(), 1)
            # The connection is still usable: a new channel sees the queue in use once.
            raw.open_channel(2)
            raw.send(commands.Queue.Declare(queue=name, passive=True), 2)
            assert raw.expect(commands.Queue.DeclareOk).consumer_count == 1
        finally:
            raw.close()


def test_exclusive_consume_beside_another_consumer_gets_no_consume_ok(
    amqp: AmqpServer, name: str
):
    with channel(amqp.url) as first:
        first.queue_declare(name, auto_delete=True)
        first.basic_consume(name, lambda *_: None)
        raw = RawConnection(amqp)
        try:
            raw.open_channel(1)
            raw.send(commands.Basic.Consume(queue=name, consumer_tag="x", exclusive=True), 1)
            frames = raw.until(commands.Channel.Close)
            assert [type(f) for f in frames] == [commands.Channel.Close], frames
            _refused(frames[0], name)
        finally:
            raw.close()


def test_pika_consume_fails_with_the_403(amqp: AmqpServer, name: str):
    with channel(amqp.url) as owner, channel(amqp.url) as other:
        owner.queue_declare(name, auto_delete=True)
        owner.basic_consume(name, lambda *_: None, exclusive=True)
        with pytest.raises(ChannelClosedByBroker) as exc:
            other.basic_consume(name, lambda *_: None)
        assert_channel_closed(exc, 403, "ACCESS_REFUSED", other)
        assert not other.consumer_tags


async def test_aio_pika_consume_fails_and_leaves_no_consumer(amqp: AmqpServer, name: str):
    owner = await aio_pika.connect(amqp.url)
    other = await aio_pika.connect(amqp.url)
    try:
        owner_channel = await owner.channel()
        queue = await owner_channel.declare_queue(name, auto_delete=True)
        await queue.consume(_ignore, exclusive=True)
        other_channel = await other.channel()
        same = await other_channel.get_queue(name, ensure=False)
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await same.consume(_ignore)
        assert other_channel.is_closed
        assert not other.is_closed
    finally:
        await other.close()
        await owner.close()
