"""Work queues: prefetch=1 dispatches to whichever consumer is free, and a consumer that goes away
without acking has its messages redelivered (flagged) to the others."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from .amqp_clients import WAIT_S

GRACE_S = 0.3  # room for a delivery that must not happen to show up before asserting its absence


class Worker:
    """One consumer on its own connection; holds messages until told to ack."""

    def __init__(self, conn: AbstractRobustConnection, queue: str, prefetch: int) -> None:
        self.conn, self.queue_name, self.prefetch = conn, queue, prefetch
        self.received: list[AbstractIncomingMessage] = []
        self.auto_ack = False

    async def start(self) -> Worker:
        ch = await self.conn.channel()
        await ch.set_qos(prefetch_count=self.prefetch)
        queue = await ch.get_queue(self.queue_name, ensure=True)
        await queue.consume(self.on_message)
        return self

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        self.received.append(message)
        if self.auto_ack:
            await message.ack()

    @property
    def bodies(self) -> list[bytes]:
        return [m.body for m in self.received]

    async def wait_for(self, count: int, what: str) -> None:
        async with asyncio.timeout(WAIT_S):
            while len(self.received) < count:
                await asyncio.sleep(0.01)
        await asyncio.sleep(GRACE_S)
        assert len(self.received) == count, f"{what}: expected {count}, got {self.bodies}"


@asynccontextmanager
async def work_queue(url: str, name: str, count: int) -> AsyncIterator[list[bytes]]:
    """A shared queue holding `count` confirmed messages; deleted afterwards."""
    conn = await aio_pika.connect_robust(url, timeout=10)
    async with conn:
        ch = await conn.channel(publisher_confirms=True)
        queue = await ch.declare_queue(name)
        bodies = [f"job-{i}".encode() for i in range(count)]
        for body in bodies:
            await ch.default_exchange.publish(aio_pika.Message(body), routing_key=name)
        try:
            yield bodies
        finally:
            await queue.delete(if_unused=False, if_empty=False)


async def test_prefetch_one_gives_work_to_the_free_consumer(amqp_url: str, name: str) -> None:
    async with work_queue(amqp_url, name, 10) as bodies:
        busy_conn = await aio_pika.connect_robust(amqp_url, timeout=10)
        free_conn = await aio_pika.connect_robust(amqp_url, timeout=10)
        async with busy_conn, free_conn:
            busy = await Worker(busy_conn, name, prefetch=1).start()
            await busy.wait_for(1, "a prefetch=1 consumer holding an unacked message")
            free = Worker(free_conn, name, prefetch=1)
            free.auto_ack = True
            await free.start()
            await free.wait_for(9, "the free consumer takes every other job")
            assert len(busy.received) == 1, "the busy consumer gets nothing while it holds one"
            assert sorted(busy.bodies + free.bodies) == sorted(bodies), "each job exactly once"
            await busy.received[0].ack()


async def test_prefetch_one_alternates_between_consumers_as_they_ack(
    amqp_url: str, name: str
) -> None:
    async with work_queue(amqp_url, name, 6) as bodies:
        conn_a = await aio_pika.connect_robust(amqp_url, timeout=10)
        conn_b = await aio_pika.connect_robust(amqp_url, timeout=10)
        async with conn_a, conn_b:
            a = await Worker(conn_a, name, prefetch=1).start()
            b = await Worker(conn_b, name, prefetch=1).start()
            await a.wait_for(1, "consumer a's first job")
            await b.wait_for(1, "consumer b's first job")
            for step in (2, 3):
                await a.received[-1].ack()
                await a.wait_for(step, f"consumer a's job {step} after acking")
                assert len(b.received) == step - 1, "b is busy, so a's freed slot took the job"
                await b.received[-1].ack()
                await b.wait_for(step, f"consumer b's job {step} after acking")
            assert sorted(a.bodies + b.bodies) == sorted(bodies), "each job exactly once"
            assert not any(m.redelivered for m in a.received + b.received)
            await a.received[-1].ack()
            await b.received[-1].ack()


async def test_closed_consumer_unacked_messages_are_redelivered_to_another(
    amqp_url: str, name: str
) -> None:
    async with work_queue(amqp_url, name, 5) as bodies:
        leaving_conn = await aio_pika.connect_robust(amqp_url, timeout=10)
        staying_conn = await aio_pika.connect_robust(amqp_url, timeout=10)
        async with staying_conn:
            leaving = await Worker(leaving_conn, name, prefetch=3).start()
            await leaving.wait_for(3, "the leaving consumer's prefetch")
            staying = Worker(staying_conn, name, prefetch=10)
            staying.auto_ack = True
            await staying.start()
            await staying.wait_for(2, "the jobs nobody holds")
            assert not any(m.redelivered for m in staying.received)

            await leaving_conn.close()  # never acked its three
            await staying.wait_for(5, "the closed consumer's jobs")
            redelivered = [m.body for m in staying.received if m.redelivered]
            assert sorted(redelivered) == sorted(leaving.bodies), (
                "exactly the unacked jobs come back, each flagged redelivered"
            )
            assert sorted(staying.bodies) == sorted(bodies)


CRASHING_CONSUMER = textwrap.dedent(
    """
    import sys, pika
    conn = pika.BlockingConnection(pika.URLParameters(sys.argv[1]))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=int(sys.argv[3]))
    def on_message(ch, method, props, body):
        print(body.decode(), flush=True)
    ch.basic_consume(sys.argv[2], on_message)
    ch.start_consuming()
    """
)


async def test_killed_consumer_unacked_messages_are_redelivered(amqp_url: str, name: str) -> None:
    """A consumer process dies (SIGKILL: no close handshake, the socket just drops)."""
    async with work_queue(amqp_url, name, 4) as bodies:
        proc = subprocess.Popen(
            [sys.executable, "-c", CRASHING_CONSUMER, amqp_url, name, "3"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            lines: list[str] = []
            async with asyncio.timeout(WAIT_S):  # on timeout, kill() below ends the readline
                while len(lines) < 3 and (line := await asyncio.to_thread(proc.stdout.readline)):
                    lines.append(line.strip())
            assert len(lines) == 3, f"consumer printed {lines}; exit code {proc.poll()}"
        finally:
            proc.kill()
            proc.wait()
        conn = await aio_pika.connect_robust(amqp_url, timeout=10)
        async with conn:
            other = Worker(conn, name, prefetch=10)
            other.auto_ack = True
            await other.start()
            await other.wait_for(4, "every job after the consumer died")
            flagged = sorted(m.body for m in other.received if m.redelivered)
            assert flagged == sorted(s.encode() for s in lines), (
                "the dead consumer's unacked jobs are redelivered with redelivered=true"
            )
            assert sorted(other.bodies) == sorted(bodies)
