"""The expiry timer hands AMQPBroker.tick the clock's time, in milliseconds, on every beat."""

from __future__ import annotations

import asyncio
from pathlib import Path

from dari.message import Message, encode_properties
from dari.queues.broker import AMQPBroker, User
from dari.server.amqp_expiry import expire_forever
from dari.storage import FlushScheduler, LogConfig


async def test_expire_forever_ticks_the_broker_with_the_clock(tmp_path: Path) -> None:
    # The queues' own clock stands still, so only a tick from the timer's clock expires.
    broker = AMQPBroker(
        tmp_path, FlushScheduler(), LogConfig(), {"g": User("g", "g")}, clock=lambda: 1_000.0
    )
    now = [1_000.0]
    broker.load()
    queue = broker.declare_queue(
        "/", "q", passive=False, durable=False, exclusive_owner=None, auto_delete=False,
        arguments={"x-message-ttl": 500},
    )
    queue.publish(Message.from_amqp("", "q", encode_properties(), b"m"))
    task = asyncio.create_task(expire_forever(broker, interval_s=0, clock=lambda: now[0]))
    try:
        for _ in range(3):
            await asyncio.sleep(0)
        assert queue.message_count == 1  # ticked, but the TTL has not passed
        now[0] = 1_000.5
        for _ in range(3):
            await asyncio.sleep(0)
        assert queue.message_count == 0
    finally:
        task.cancel()
        broker.close()
