"""Direct reply-to (``amq.rabbitmq.reply-to``) with real clients (pika, aio-pika, kombu): RPC
round trips across connections, and RabbitMQ's errors for the misuses clients run into."""

from __future__ import annotations

import asyncio

import aio_pika
import kombu
import pika
import pytest
from aio_pika.patterns import RPC
from pika.exceptions import ChannelClosedByBroker

from .amqp_clients import WAIT_S, assert_channel_closed, connect, pump_until, settle

REPLY_QUEUE = "amq.rabbitmq.reply-to"


def test_pika_rpc_round_trip(amqp_url: str, name: str) -> None:
    client, server = connect(amqp_url), connect(amqp_url)
    try:
        sch = server.channel()
        sch.queue_declare(name, auto_delete=True)
        ch = client.channel()
        replies: list[tuple[str, pika.BasicProperties, bytes]] = []
        tag = ch.basic_consume(
            REPLY_QUEUE, lambda _c, m, p, b: replies.append((m.consumer_tag, p, b)),
            auto_ack=True,
        )
        for i in range(3):
            ch.basic_publish(
                "", name, b"ping %d" % i,
                pika.BasicProperties(reply_to=REPLY_QUEUE, correlation_id=f"c{i}"),
            )
        ch.queue_declare(name, passive=True)  # a round trip: the requests are routed
        for _ in range(3):
            method, props, body = sch.basic_get(name, auto_ack=True)
            assert method is not None, "the request reached the server's queue"
            assert props.reply_to.startswith(REPLY_QUEUE + ".")
            assert props.reply_to != REPLY_QUEUE
            # the responder may check that the requester is still there
            ok = sch.queue_declare(props.reply_to, passive=True).method
            assert (ok.message_count, ok.consumer_count) == (0, 1)
            sch.basic_publish(
                "", props.reply_to, body.replace(b"ping", b"pong"),
                pika.BasicProperties(correlation_id=props.correlation_id),
            )
        pump_until(client, lambda: len(replies) == 3, "three replies")
        assert [(t, p.correlation_id, b) for t, p, b in replies] == [
            (tag, f"c{i}", b"pong %d" % i) for i in range(3)
        ]
    finally:
        client.close()
        server.close()


def test_passive_declare_of_the_pseudo_queue(amqp_url: str) -> None:
    conn = connect(amqp_url)
    try:
        ok = conn.channel().queue_declare(REPLY_QUEUE, passive=True).method
        assert (ok.queue, ok.message_count) == (REPLY_QUEUE, 0)
    finally:
        conn.close()


def test_reply_consumer_with_manual_ack_is_406(amqp_url: str) -> None:
    conn = connect(amqp_url)
    try:
        ch = conn.channel()
        with pytest.raises(ChannelClosedByBroker) as exc:
            ch.basic_consume(REPLY_QUEUE, lambda *_a: None, auto_ack=False)
        assert_channel_closed(exc, 406, "PRECONDITION_FAILED", ch)
        assert exc.value.reply_text == "PRECONDITION_FAILED - reply consumer cannot acknowledge"
    finally:
        conn.close()


def test_request_without_a_reply_consumer_is_406(amqp_url: str, name: str) -> None:
    conn = connect(amqp_url)
    try:
        ch = conn.channel()
        ch.queue_declare(name, auto_delete=True)
        ch.basic_publish("", name, b"ping", pika.BasicProperties(reply_to=REPLY_QUEUE))
        with pytest.raises(ChannelClosedByBroker) as exc:
            ch.queue_declare(name, passive=True)
        assert_channel_closed(exc, 406, "PRECONDITION_FAILED", ch)
        assert exc.value.reply_text == "PRECONDITION_FAILED - fast reply consumer does not exist"
    finally:
        conn.close()


def test_reply_to_a_closed_channel_is_dropped(amqp_url: str, name: str) -> None:
    client, server = connect(amqp_url), connect(amqp_url)
    try:
        sch = server.channel()
        sch.queue_declare(name, auto_delete=True)
        ch = client.channel()
        replies: list[bytes] = []
        ch.basic_consume(REPLY_QUEUE, lambda _c, _m, _p, b: replies.append(b), auto_ack=True)
        ch.basic_publish("", name, b"ping", pika.BasicProperties(reply_to=REPLY_QUEUE))
        ch.close()
        method, props, _body = sch.basic_get(name, auto_ack=True)
        assert method is not None
        sch.confirm_delivery()
        # As in RabbitMQ, a reply name counts as routed: no basic.return even when mandatory,
        # and the confirm comes (basic_publish would raise UnroutableError or NackError).
        sch.basic_publish("", props.reply_to, b"late", mandatory=True)
        sch.basic_publish("", props.reply_to, b"late")
        settle(client)
        assert replies == []
        # the name is gone for good
        with pytest.raises(ChannelClosedByBroker) as exc:
            sch.queue_declare(props.reply_to, passive=True)
        assert_channel_closed(exc, 404, "NOT_FOUND", sch)
        # the client's other channels may still use direct reply-to
        ch2 = client.channel()
        ch2.basic_consume(REPLY_QUEUE, lambda _c, _m, _p, b: replies.append(b), auto_ack=True)
        ch2.basic_publish("", name, b"ping2", pika.BasicProperties(reply_to=REPLY_QUEUE))
        ch2.queue_declare(name, passive=True)  # a round trip: the request is routed
        sch = server.channel()
        method, props2, _body = sch.basic_get(name, auto_ack=True)
        assert method is not None and props2.reply_to != props.reply_to
        sch.basic_publish("", props2.reply_to, b"pong2")
        pump_until(client, lambda: replies == [b"pong2"], "the reply on the new channel")
    finally:
        client.close()
        server.close()


async def test_aio_pika_direct_reply_to(amqp_url: str, name: str) -> None:
    client = await aio_pika.connect_robust(amqp_url, timeout=10)
    server = await aio_pika.connect_robust(amqp_url, timeout=10)
    async with client, server:
        sch = await server.channel()
        requests = await sch.declare_queue(name, auto_delete=True)

        async def respond(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                assert message.reply_to and message.reply_to.startswith(REPLY_QUEUE + ".")
                await sch.default_exchange.publish(
                    aio_pika.Message(message.body.upper(), correlation_id=message.correlation_id),
                    routing_key=message.reply_to,
                )

        await requests.consume(respond)
        ch = await client.channel()
        reply_queue = await ch.declare_queue(REPLY_QUEUE, passive=True)
        got: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()
        await reply_queue.consume(got.put, no_ack=True)
        for i in range(5):
            await ch.default_exchange.publish(
                aio_pika.Message(b"hello %d" % i, reply_to=REPLY_QUEUE, correlation_id=str(i)),
                routing_key=name,
            )
        async with asyncio.timeout(WAIT_S):
            answers = [await got.get() for _ in range(5)]
        assert [(m.correlation_id, m.body) for m in answers] == [
            (str(i), b"HELLO %d" % i) for i in range(5)
        ]


async def test_aio_pika_rpc_pattern_across_connections(amqp_url: str, name: str) -> None:
    server = await aio_pika.connect_robust(amqp_url, timeout=10)
    client = await aio_pika.connect_robust(amqp_url, timeout=10)
    async with server, client:
        server_rpc = await RPC.create(await server.channel())

        async def multiply(*, x: int, y: int) -> int:
            return x * y

        await server_rpc.register(f"{name}-multiply", multiply, auto_delete=True)
        client_rpc = await RPC.create(await client.channel())
        async with asyncio.timeout(WAIT_S):
            results = [
                await client_rpc.call(f"{name}-multiply", kwargs={"x": i, "y": 7})
                for i in range(5)
            ]
        assert results == [i * 7 for i in range(5)]


def test_kombu_direct_reply_to(amqp_url: str, name: str) -> None:
    with (
        kombu.Connection(amqp_url, connect_timeout=10) as client,
        kombu.Connection(amqp_url, connect_timeout=10) as server,
    ):
        requests = kombu.Queue(name, auto_delete=True)
        replies: list[kombu.Message] = []
        ch = client.channel()
        reply_queue = kombu.Queue(REPLY_QUEUE, no_ack=True, no_declare=True)
        with kombu.Consumer(ch, [reply_queue], callbacks=[lambda _b, m: replies.append(m)]):
            kombu.Producer(ch).publish(
                {"ask": 6}, routing_key=name, declare=[requests], reply_to=REPLY_QUEUE,
                correlation_id="k1",
            )
            ch.queue_declare(queue=name, passive=True)  # a round trip: the request is routed
            request = requests(server.channel()).get(no_ack=True)
            assert request is not None
            reply_to = request.properties["reply_to"]
            assert reply_to.startswith(REPLY_QUEUE + ".")
            kombu.Producer(server.channel()).publish(
                {"answer": request.payload["ask"] * 7}, routing_key=reply_to,
                correlation_id=request.properties["correlation_id"],
            )
            client.drain_events(timeout=WAIT_S)
        [message] = replies
        assert (message.payload, message.properties["correlation_id"]) == ({"answer": 42}, "k1")
