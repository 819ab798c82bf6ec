"""aio-pika's robust connection: the asyncio client most Python services use against RabbitMQ."""

from __future__ import annotations

import asyncio

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
from aio_pika.exceptions import DeliveryError
from pamqp.commands import Basic

from broker import Broker

from .amqp_clients import WAIT_S


async def take(
    queue: AbstractQueue, count: int, *, ack: bool = True
) -> list[AbstractIncomingMessage]:
    """Consume exactly `count` messages through basic.consume, within WAIT_S."""
    out: list[AbstractIncomingMessage] = []
    async with asyncio.timeout(WAIT_S), queue.iterator() as it:
        async for message in it:
            out.append(message)
            if ack:
                await message.ack()
            if len(out) == count:
                break
    return out


async def test_declare_bind_publish_confirm_consume_ack(amqp_url: str, name: str) -> None:
    conn = await aio_pika.connect_robust(amqp_url, timeout=10)
    async with conn:
        ch = await conn.channel(publisher_confirms=True)
        exchange = await ch.declare_exchange(
            f"{name}-x", aio_pika.ExchangeType.TOPIC, auto_delete=True
        )
        queue = await ch.declare_queue(name, exclusive=True)
        await queue.bind(exchange, routing_key="orders.#")
        for i in range(100):
            confirmation = await exchange.publish(
                aio_pika.Message(
                    f"m{i}".encode(),
                    headers={"i": i},
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    content_type="text/plain",
                ),
                routing_key=f"orders.eu.{i}",
            )
            assert isinstance(confirmation, Basic.Ack), f"publish {i} confirmed by {confirmation!r}"
        got = await take(queue, 100)
        assert [m.body for m in got] == [f"m{i}".encode() for i in range(100)]
        assert [m.headers["i"] for m in got] == list(range(100))
        assert {m.routing_key for m in got[:1]} == {"orders.eu.0"}
        assert all(m.delivery_mode == aio_pika.DeliveryMode.PERSISTENT for m in got)
        assert all(m.content_type == "text/plain" and not m.redelivered for m in got)
        await ch.close()
        ch = await conn.channel()
        declared = await ch.declare_queue(name, passive=True)
        assert declared.declaration_result.message_count == 0, "acked messages are gone"


async def test_get_nack_requeue_and_reject(amqp_url: str, name: str) -> None:
    conn = await aio_pika.connect_robust(amqp_url, timeout=10)
    async with conn:
        ch = await conn.channel(publisher_confirms=True)
        queue = await ch.declare_queue(name, exclusive=True)
        for body in (b"a", b"b"):
            await ch.default_exchange.publish(aio_pika.Message(body), routing_key=name)

        first = await queue.get(timeout=10)
        assert (first.body, first.redelivered) == (b"a", False)
        await first.nack(requeue=True)
        again = await queue.get(timeout=10)
        assert (again.body, again.redelivered) == (b"a", True), "nack+requeue redelivers it"
        await again.reject(requeue=False)
        second = await queue.get(timeout=10)
        assert second.body == b"b"
        await second.reject(requeue=True)
        last = await queue.get(timeout=10, no_ack=True)
        assert (last.body, last.redelivered) == (b"b", True)
        assert await queue.get(fail=False, timeout=10) is None, "queue must be empty now"


async def test_qos_prefetch_bounds_in_flight_messages(amqp_url: str, name: str) -> None:
    conn = await aio_pika.connect_robust(amqp_url, timeout=10)
    async with conn:
        ch = await conn.channel(publisher_confirms=True)
        await ch.set_qos(prefetch_count=2)
        queue = await ch.declare_queue(name, exclusive=True)
        for i in range(6):
            await ch.default_exchange.publish(aio_pika.Message(f"m{i}".encode()), routing_key=name)
        held: list[AbstractIncomingMessage] = []
        two = asyncio.Event()

        async def hold(message: AbstractIncomingMessage) -> None:
            held.append(message)
            if len(held) >= 2:
                two.set()

        tag = await queue.consume(hold)
        async with asyncio.timeout(WAIT_S):
            await two.wait()
        await asyncio.sleep(0.3)  # room for a wrongly sent third delivery to show up
        assert [m.body for m in held] == [b"m0", b"m1"], "prefetch 2: two unacked at most"
        await held[0].ack()
        async with asyncio.timeout(WAIT_S):
            while len(held) < 3:
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)
        assert [m.body for m in held] == [b"m0", b"m1", b"m2"], "one ack frees one slot"
        await queue.cancel(tag)


async def test_mandatory_unroutable_publish_raises_delivery_error(amqp_url: str, name: str) -> None:
    conn = await aio_pika.connect_robust(amqp_url, timeout=10)
    async with conn:
        ch = await conn.channel(publisher_confirms=True, on_return_raises=True)
        with pytest.raises(DeliveryError) as exc:
            await ch.default_exchange.publish(
                aio_pika.Message(b"returned"), routing_key=f"{name}-nowhere", mandatory=True
            )
        returned = exc.value.message
        assert returned is not None and returned.body == b"returned"
        frame = exc.value.frame
        assert (frame.reply_code, frame.reply_text) == (312, "NO_ROUTE"), repr(frame)


async def test_exchange_to_exchange_binding(amqp_url: str, name: str) -> None:
    conn = await aio_pika.connect_robust(amqp_url, timeout=10)
    async with conn:
        ch = await conn.channel(publisher_confirms=True)
        source = await ch.declare_exchange(f"{name}-src", aio_pika.ExchangeType.DIRECT)
        dest = await ch.declare_exchange(f"{name}-dst", aio_pika.ExchangeType.FANOUT)
        await dest.bind(source, routing_key="hop")
        queue = await ch.declare_queue(name, exclusive=True)
        await queue.bind(dest)
        await source.publish(aio_pika.Message(b"through"), routing_key="hop")
        await source.publish(aio_pika.Message(b"not bound"), routing_key="other")
        got = await take(queue, 1)
        assert [m.body for m in got] == [b"through"]
        assert await queue.get(fail=False, timeout=10) is None
        await dest.unbind(source, routing_key="hop")
        await source.delete()
        await dest.delete()


async def test_robust_connection_recovers_topology_after_broker_restart(
    own_broker: Broker, name: str
) -> None:
    conn = await aio_pika.connect_robust(own_broker.amqp_url, timeout=10, reconnect_interval=0.2)
    async with conn:
        ch = await conn.channel(publisher_confirms=True)
        queue = await ch.declare_queue(name, durable=True)
        await ch.default_exchange.publish(
            aio_pika.Message(b"before", delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=name,
        )
        reconnected = asyncio.Event()
        conn.reconnect_callbacks.add(lambda *_: reconnected.set())

        await asyncio.to_thread(own_broker.restart)  # SIGTERM, then start on the same port
        async with asyncio.timeout(WAIT_S):
            await reconnected.wait()

        await ch.default_exchange.publish(
            aio_pika.Message(b"after", delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=name,
        )
        got = await take(queue, 2)
        assert [m.body for m in got] == [b"before", b"after"], (
            "the persistent message survives and the restored channel publishes and consumes"
        )
