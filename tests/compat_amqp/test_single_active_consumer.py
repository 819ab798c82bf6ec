"""x-single-active-consumer: of all consumers registered on a queue only the first gets messages;
when it goes, the next in registration order takes over, starting with what the first left
unacknowledged (redelivered)."""

from __future__ import annotations

import aio_pika
import pika
import pytest

from .test_competing_consumers import Worker

SAC = {"x-single-active-consumer": True}


async def publish(url: str, name: str, bodies: list[bytes]) -> None:
    conn = await aio_pika.connect_robust(url, timeout=10)
    async with conn:
        ch = await conn.channel(publisher_confirms=True)
        for body in bodies:
            await ch.default_exchange.publish(aio_pika.Message(body), routing_key=name)


async def test_only_the_first_consumer_receives(amqp_url: str, name: str) -> None:
    setup = await aio_pika.connect_robust(amqp_url, timeout=10)
    async with setup:
        ch = await setup.channel()
        queue = await ch.declare_queue(name, arguments=SAC)
        first_conn = await aio_pika.connect_robust(amqp_url, timeout=10)
        second_conn = await aio_pika.connect_robust(amqp_url, timeout=10)
        async with first_conn, second_conn:
            first = await Worker(first_conn, name, prefetch=100).start()
            first.auto_ack = True
            second = await Worker(second_conn, name, prefetch=100).start()
            second.auto_ack = True
            bodies = [f"m-{i}".encode() for i in range(20)]
            await publish(amqp_url, name, bodies)
            await first.wait_for(20, "the active consumer gets every message")
            assert first.bodies == bodies, "in queue order"
            assert second.received == [], "a standby consumer gets nothing"
            # aio-pika keeps the first declare-ok; ask the broker afresh on the bare channel
            underlay = await ch.get_underlay_channel()
            declare_ok = await underlay.queue_declare(name, passive=True)
            assert declare_ok.consumer_count == 2, "both are registered"
        await queue.delete(if_unused=False, if_empty=False)


async def test_next_consumer_takes_over_with_the_unacked_messages(
    amqp_url: str, name: str
) -> None:
    setup = await aio_pika.connect_robust(amqp_url, timeout=10)
    async with setup:
        ch = await setup.channel()
        queue = await ch.declare_queue(name, arguments=SAC)
        first_conn = await aio_pika.connect_robust(amqp_url, timeout=10)
        second_conn = await aio_pika.connect_robust(amqp_url, timeout=10)
        third_conn = await aio_pika.connect_robust(amqp_url, timeout=10)
        async with second_conn, third_conn:
            first = await Worker(first_conn, name, prefetch=3).start()  # never acks
            second = await Worker(second_conn, name, prefetch=100).start()
            second.auto_ack = True
            third = await Worker(third_conn, name, prefetch=100).start()
            third.auto_ack = True
            bodies = [f"m-{i}".encode() for i in range(10)]
            await publish(amqp_url, name, bodies)
            await first.wait_for(3, "the active consumer fills its prefetch window")
            assert second.received == [] and third.received == [], (
                "standby consumers get nothing while the active one is just busy"
            )
            await first_conn.close()
            await second.wait_for(10, "the next registered consumer takes everything")
            assert second.bodies == bodies, "the unacked ones first, back in their place"
            assert [m.redelivered for m in second.received] == [True] * 3 + [False] * 7
            assert third.received == []
        await queue.delete(if_unused=False, if_empty=False)


def test_redeclare_with_another_single_active_consumer_flag_is_406(
    amqp_url: str, name: str
) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        ch = conn.channel()
        ch.queue_declare(name, arguments=SAC)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
            ch.queue_declare(name, arguments={"x-single-active-consumer": False})
        assert info.value.reply_code == 406
        assert "x-single-active-consumer" in info.value.reply_text
        conn.channel().queue_delete(name)
    finally:
        conn.close()
