"""Consume throughput of a queue over a topic (``x-topic``) in the domain alone: no network.

``python bench/topic_queue_bench.py [--records 100000] [--prefetch 100] [--dir /path]``

A topic is filled first, as Kafka producers fill it (batches of ``--batch`` records of 100
bytes, or AMQP messages published one by one to the queue), then one consumer with a prefetch
of ``--prefetch`` works it off: each turn it takes what ``TopicQueue.dispatch`` delivered,
acks it (multiple=true: one ACCEPT per partition), settles its credit and dispatches again —
what the channel does once per socket read. Acquisition, log reads, record decoding and the
AMQP message built per delivery are all in the figure. Scenarios:

  kafka records     records produced by Kafka clients (headers added per delivery)
  amqp messages     AMQP messages published to the queue (delivered with their properties)
  kafka, 4 parts    kafka records over four partitions
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from dari.config import DEFAULTS
from dari.message import Message, encode_properties
from dari.queues.consumers import Delivery, PrefetchConsumer
from dari.queues.queue import QueueArguments
from dari.queues.topic_queue import TopicQueue
from dari.records import build_batch
from dari.records.builder import NewRecord
from dari.server.amqp_topic_queues import TopicShareGroups
from dari.storage import LogConfig, LogStore
from dari.streams.share.coordinator import ShareCoordinator
from dari.streams.share.group_configs import GroupConfigs
from dari.streams.share.state_store import ShareStateStore
from dari.streams.topics import TopicManager

BODY = b"x" * 100


def scenario(name: str, directory: Path, total: int, batch: int, prefetch: int) -> dict:
    store = LogStore(directory)
    topics = TopicManager(store, LogConfig(flush="os"))
    partitions = 4 if "4 parts" in name else 1
    topics.create("bench", partitions)
    shares = ShareStateStore(directory / ".meta" / "share")
    configs = GroupConfigs(directory / "group_configs.json", DEFAULTS)
    shared = TopicShareGroups(topics, ShareCoordinator(topics, shares, configs)).open(
        "bench", "bench", start="first", delivery_limit=None
    )
    queue = TopicQueue("bench", "/", {"x-topic": "bench"}, QueueArguments(), shared)
    if name.startswith("kafka"):
        records = [NewRecord(b"key", BODY, (("h", b"v"),)) for _ in range(batch)]
        for i in range(total // batch):
            topics.partition("bench", i % partitions).append(build_batch(records))
    else:
        props = encode_properties(content_type="text/plain", delivery_mode=2)
        message = Message.from_amqp("", "bench", props, BODY)
        for _ in range(total):
            queue.publish(message)
    got: list[Delivery] = []
    consumer = PrefetchConsumer("bench", got.append, prefetch=prefetch)
    start = time.perf_counter()
    queue.add_consumer(consumer)
    done = 0
    while done < total:
        if not got:
            raise AssertionError(f"stalled after {done} of {total}")
        done += len(got)
        queue.ack_many(got)
        consumer.settle(len(got))
        got.clear()
        shares.flush_pending()
        queue.dispatch()
    elapsed = time.perf_counter() - start
    assert queue.message_count == 0 and queue.unacked_count == 0
    shares.close()
    topics.close()
    store.close()
    return {"scenario": name, "records": total, "seconds": elapsed, "msg_s": total / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--prefetch", type=int, default=100)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="topicq-bench-", dir=args.dir))
    try:
        print(f"{'scenario':<18}{'records':>10}{'prefetch':>10}{'msg/s':>12}")
        for i, name in enumerate(("kafka records", "amqp messages", "kafka, 4 parts")):
            row = scenario(name, base / str(i), args.records, args.batch, args.prefetch)
            print(f"{name:<18}{row['records']:>10}{args.prefetch:>10}{row['msg_s']:>12,.0f}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
