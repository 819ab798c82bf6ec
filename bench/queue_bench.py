"""Throughput of the AMQP queue domain alone (no network, no codec): publish + deliver + ack.

``python bench/queue_bench.py [--messages 200000] [--batch 500] [--dir /path/on/disk]``

Each "turn" publishes ``--batch`` messages of 100 bytes (as one socket read's worth of
basic.publish would), a consumer with a prefetch of the same size receives them through
``Queue.dispatch``, acks them (multiple=true), settles its credit and the queue writes the
turn's messages and acks (``flush``: one append per log per turn). Scenarios:

  transient        non-durable queue, delivery_mode=1 (memory only)
  durable os       durable queue, persistent messages, flush policy "os" (page cache)
  durable always   as above, confirms wait for the group-committed fsync of every turn
  publish only     durable os, no consumer: the log append path alone
  quorum           a quorum queue (flush "os") fed transient messages, which it stores anyway
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

from dari.message import Message, encode_properties
from dari.queues.consumers import Delivery, PrefetchConsumer
from dari.queues.queue import Queue
from dari.queues.queue_store import QueueStore
from dari.queues.quorum import QuorumQueue
from dari.storage import FlushScheduler, LogConfig

BODY = b"x" * 100


def _message(persistent: bool) -> Message:
    props = encode_properties(content_type="text/plain", delivery_mode=2 if persistent else 1)
    return Message.from_amqp("", "bench", props, BODY)


async def _run(
    queue: Queue, message: Message, total: int, batch: int, consume: bool, wait_durable: bool
) -> float:
    got: list[Delivery] = []
    consumer = PrefetchConsumer("bench", got.append, prefetch=batch)
    if consume:
        queue.add_consumer(consumer)
    start = time.perf_counter()
    done = 0
    while done < total:
        last = None
        for _ in range(batch):
            last = queue.publish(message)
        if consume:
            queue.ack_many(got)
            consumer.settle(len(got))
            got.clear()
            queue.dispatch()
        queue.flush()
        if wait_durable and last is not None and last.offset >= 0:
            await queue.wait_durable(last.offset)
        done += batch
    return time.perf_counter() - start


async def scenario(name: str, directory: Path, total: int, batch: int) -> dict:
    scheduler = FlushScheduler()
    store = None
    if name == "transient":
        queue = Queue("bench")
        message = _message(False)
    else:
        policy = "always" if name == "durable always" else "os"
        store = QueueStore.open(
            directory / name.replace(" ", "-"), LogConfig(flush=policy), flush_scheduler=scheduler
        )
        if name == "quorum":
            queue = QuorumQueue(
                "bench", durable=True, store=store, arguments={"x-queue-type": "quorum"}
            )
        else:
            queue = Queue("bench", durable=True, store=store)
        message = _message(name != "quorum")
    consume = name != "publish only"
    elapsed = await _run(queue, message, total, batch, consume, name == "durable always")
    if consume:
        assert queue.message_count == 0 and queue.unacked_count == 0
    queue.close()
    await scheduler.aclose()
    return {
        "scenario": name,
        "messages": total,
        "seconds": elapsed,
        "msg_s": total / elapsed,
        "fsyncs": scheduler.rounds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="dari-queue-bench-", dir=args.dir))
    try:
        rows = []
        for name in ("transient", "durable os", "durable always", "publish only", "quorum"):
            total = args.messages if name != "durable always" else args.messages // 2
            rows.append(asyncio.run(scenario(name, root, total, args.batch)))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"{'scenario':<16} {'messages':>10} {'seconds':>8} {'msg/s':>10} {'fsyncs':>7}")
    for row in rows:
        print(
            f"{row['scenario']:<16} {row['messages']:>10} {row['seconds']:>8.2f} "
            f"{row['msg_s']:>10,.0f} {row['fsyncs']:>7}"
        )


if __name__ == "__main__":
    main()
