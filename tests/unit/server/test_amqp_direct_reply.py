"""Direct reply-to driven through channels without sockets (the ``Host`` of
test_amqp_channel): the pseudo-queue consumer, the reply_to rewrite, replies from another
connection, and RabbitMQ's errors."""

from __future__ import annotations

from typing import Any

from pamqp import body as pbody
from pamqp import commands
from pamqp import frame as pframe
from pamqp import header as pheader
from test_amqp_channel import (  # the channel test harness; its fixtures too
    Host,
    broker,
    channel_close,
    data_dir,
    declare,
    host,
    publish,
)

from dari.queues.broker import AMQPBroker
from dari.queues.direct_reply import REPLY_PREFIX, REPLY_QUEUE

__all__ = ["broker", "data_dir", "host"]  # fixtures used by name


def reply_consumer(host: Host, tag: str = "replies", channel: int = 1) -> None:
    host.feed(channel, commands.Basic.Consume(queue=REPLY_QUEUE, consumer_tag=tag, no_ack=True))
    assert host.methods() == [commands.Basic.ConsumeOk(tag)]


def request(host: Host, queue: str, body: bytes, channel: int = 1, **properties: Any) -> None:
    host.feed_bytes(publish(channel, queue, body, reply_to=REPLY_QUEUE, **properties))


def received(host: Host) -> list[tuple[Any, Any, bytes]]:
    """(basic.deliver, its properties, body) of each delivery written since the last call."""
    out: list[tuple[Any, Any, bytes]] = []
    for _channel, value in host.replies():
        if isinstance(value, commands.Basic.Deliver):
            out.append((value, None, b""))
        elif isinstance(value, pheader.ContentHeader):
            out[-1] = (out[-1][0], value.properties, b"")
        elif out and not isinstance(value, commands.Basic.Deliver):
            deliver, props, body = out[-1]
            out[-1] = (deliver, props, body + value.value)
    return out


def reply_name_of_request(server: Host, queue: str = "rpc") -> str:
    """The server side gets the request and reads the rewritten reply_to."""
    server.feed(1, commands.Basic.Get(queue=queue, no_ack=True))
    frames = server.replies()
    [head] = [v for _c, v in frames if isinstance(v, pheader.ContentHeader)]
    return head.properties.reply_to


async def test_rpc_round_trip_across_connections(host: Host, broker: AMQPBroker):
    server = Host(broker)
    server.open(1)
    declare(server, "rpc")
    reply_consumer(host)
    request(host, "rpc", b"ping", correlation_id="c1", content_type="text/plain")
    assert host.replies() == []
    server.feed(1, commands.Basic.Get(queue="rpc", no_ack=True))
    frames = server.replies()
    [head] = [v for _c, v in frames if isinstance(v, pheader.ContentHeader)]
    reply_to = head.properties.reply_to
    assert reply_to.startswith(REPLY_PREFIX) and len(reply_to) > len(REPLY_PREFIX) + 20
    # the other properties are kept as they were
    assert (head.properties.correlation_id, head.properties.content_type) == ("c1", "text/plain")
    server.feed_bytes(publish(1, reply_to, b"pong", correlation_id="c1"))
    assert server.replies() == []
    [(deliver, props, body)] = received(host)
    assert (deliver.consumer_tag, deliver.delivery_tag, deliver.exchange, deliver.routing_key) == (
        "replies", 1, "", reply_to
    )
    assert (props.correlation_id, body) == ("c1", b"pong")
    # no ack expected: nothing is unacked, and a second reply takes the next tag
    server.feed_bytes(publish(1, reply_to, b"again"))
    [(deliver, _props, body)] = received(host)
    assert (deliver.delivery_tag, body) == (2, b"again")
    assert host.channels[1].unacked.entries == {}


async def test_reply_tags_follow_the_channels_other_deliveries(host: Host):
    declare(host, "q")
    host.feed_bytes(publish(1, "q", b"x"))
    host.feed(1, commands.Basic.Get(queue="q"))
    host.replies()  # delivery tag 1
    reply_consumer(host)
    request(host, "q", b"req")
    host.feed(1, commands.Basic.Get(queue="q", no_ack=True))
    [reply_to] = [
        v.properties.reply_to for _c, v in host.replies() if isinstance(v, pheader.ContentHeader)
    ]
    host.feed_bytes(publish(1, reply_to, b"pong"))
    [(deliver, _props, _body)] = received(host)
    assert deliver.delivery_tag == 3
    host.feed(1, commands.Basic.Ack(delivery_tag=1))  # the first get is still acknowledgeable
    assert host.replies() == []


async def test_a_generated_tag_and_nowait(host: Host, broker: AMQPBroker):
    host.feed(1, commands.Basic.Consume(queue=REPLY_QUEUE, no_ack=True))
    [ok] = host.methods()
    assert ok.consumer_tag.startswith("amq.ctag-")
    host.open(2)
    host.feed(2, commands.Basic.Consume(queue=REPLY_QUEUE, no_ack=True, nowait=True))
    assert host.methods() == []
    assert len(broker.direct_replies) == 2


async def test_reply_consumer_with_acks_is_406(host: Host, broker: AMQPBroker):
    host.feed(1, commands.Basic.Consume(queue=REPLY_QUEUE, consumer_tag="r", no_ack=False))
    close = channel_close(host.methods())
    assert (close.reply_code, close.class_id, close.method_id) == (406, 60, 20)
    assert close.reply_text == "PRECONDITION_FAILED - reply consumer cannot acknowledge"
    assert len(broker.direct_replies) == 0


async def test_second_reply_consumer_on_a_channel_is_406(host: Host):
    reply_consumer(host, "a")
    host.feed(1, commands.Basic.Consume(queue=REPLY_QUEUE, consumer_tag="b", no_ack=True))
    close = channel_close(host.methods())
    assert (close.reply_code, close.reply_text) == (
        406, "PRECONDITION_FAILED - reply consumer already set"
    )
    host.open(2)
    reply_consumer(host, "a", channel=2)
    host.feed(2, commands.Basic.Consume(queue=REPLY_QUEUE, consumer_tag="a", no_ack=True))
    close = channel_close(host.methods())  # the same tag again: still a channel error
    assert (close.reply_code, close.reply_text) == (
        406, "PRECONDITION_FAILED - reply consumer already set"
    )


async def test_reply_consumer_tag_cannot_be_reused(host: Host):
    declare(host, "q")
    reply_consumer(host, "r")
    host.feed(1, commands.Basic.Consume(queue="q", consumer_tag="r"))
    [close] = host.methods()
    assert isinstance(close, commands.Connection.Close)
    assert (close.reply_code, close.reply_text) == (
        530, "NOT_ALLOWED - attempt to reuse consumer tag 'r'"
    )


async def test_request_without_reply_consumer_is_406(host: Host):
    declare(host, "rpc")
    request(host, "rpc", b"ping")
    close = channel_close(host.methods())
    assert (close.reply_code, close.class_id, close.method_id) == (406, 60, 40)
    assert close.reply_text == "PRECONDITION_FAILED - fast reply consumer does not exist"


async def test_request_on_another_channel_than_the_consumer_is_406(host: Host):
    declare(host, "rpc")
    reply_consumer(host, channel=1)
    host.open(2)
    request(host, "rpc", b"ping", channel=2)
    close = channel_close(host.methods())
    assert close.reply_text == "PRECONDITION_FAILED - fast reply consumer does not exist"


async def test_only_the_exact_pseudo_queue_is_rewritten(host: Host, broker: AMQPBroker):
    declare(host, "rpc")
    host.feed_bytes(publish(1, "rpc", b"a", reply_to=REPLY_QUEUE + "-not"))
    host.feed_bytes(publish(1, "rpc", b"b", reply_to="plain", correlation_id=REPLY_QUEUE))
    assert host.methods() == []
    server = Host(broker)
    server.open(1)
    assert reply_name_of_request(server) == REPLY_QUEUE + "-not"
    assert reply_name_of_request(server) == "plain"


async def test_request_in_a_transaction_is_rewritten_at_publish(host: Host, broker: AMQPBroker):
    declare(host, "rpc")
    reply_consumer(host)
    host.feed(1, commands.Tx.Select())
    request(host, "rpc", b"ping")
    host.feed(1, commands.Tx.Commit())
    assert host.methods() == [commands.Tx.SelectOk(), commands.Tx.CommitOk()]
    server = Host(broker)
    server.open(1)
    assert reply_name_of_request(server).startswith(REPLY_PREFIX)


async def test_reply_to_a_closed_channel_is_dropped_even_when_mandatory(
    host: Host, broker: AMQPBroker
):
    server = Host(broker)
    server.open(1)
    declare(server, "rpc")
    reply_consumer(host)
    request(host, "rpc", b"ping")
    reply_to = reply_name_of_request(server)
    host.close_channel(1)
    assert len(broker.direct_replies) == 0
    server.feed(1, commands.Confirm.Select())
    server.methods()
    server.feed_bytes(
        pframe.marshal(commands.Basic.Publish(routing_key=reply_to, mandatory=True), 1)
        + pframe.marshal(pheader.ContentHeader(0, 4, commands.Basic.Properties()), 1)
        + pframe.marshal(pbody.ContentBody(b"late"), 1)
    )
    # as RabbitMQ: a reply name counts as routed, so no basic.return; confirmed at once
    assert server.methods() == [commands.Basic.Ack(delivery_tag=1, multiple=True)]
    assert host.replies() == []


async def test_cancel_forgets_the_reply_name(host: Host, broker: AMQPBroker):
    server = Host(broker)
    server.open(1)
    declare(server, "rpc")
    reply_consumer(host, "r")
    request(host, "rpc", b"ping")
    reply_to = reply_name_of_request(server)
    host.feed(1, commands.Basic.Cancel(consumer_tag="r"))
    assert host.methods() == [commands.Basic.CancelOk("r")]
    server.feed_bytes(publish(1, reply_to, b"late"))
    assert host.replies() == [] and server.replies() == []
    reply_consumer(host, "r2")  # a new one may be set, under a new name
    request(host, "rpc", b"ping")
    assert reply_name_of_request(server) not in (reply_to, "")


async def test_a_guessed_reply_name_delivers_nothing(host: Host):
    reply_consumer(host)
    host.feed_bytes(publish(1, REPLY_PREFIX + "guess", b"x"))
    host.feed_bytes(publish(1, REPLY_QUEUE, b"x"))  # the pseudo-queue itself is no queue
    assert host.replies() == []


async def test_declare_of_the_pseudo_queue_and_of_reply_names(host: Host, broker: AMQPBroker):
    host.feed(1, commands.Queue.Declare(queue=REPLY_QUEUE, passive=True))
    assert host.methods() == [commands.Queue.DeclareOk(REPLY_QUEUE, 0, 1)]
    host.feed(1, commands.Queue.Declare(queue=REPLY_QUEUE, durable=True))  # passive anyway
    assert host.methods() == [commands.Queue.DeclareOk(REPLY_QUEUE, 0, 1)]
    assert broker.queues("/") == []
    server = Host(broker)
    server.open(1)
    declare(server, "rpc")
    reply_consumer(host)
    request(host, "rpc", b"ping")
    reply_to = reply_name_of_request(server)
    server.feed(1, commands.Queue.Declare(queue=reply_to, passive=True))
    assert server.methods() == [commands.Queue.DeclareOk(reply_to, 0, 1)]
    host.close_channel(1)
    server.feed(1, commands.Queue.Declare(queue=reply_to, passive=True))
    close = channel_close(server.methods())
    assert (close.reply_code, close.class_id, close.method_id) == (404, 50, 10)
    assert close.reply_text == f"NOT_FOUND - no queue '{reply_to}' in vhost '/'"
