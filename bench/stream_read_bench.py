"""Per-delivery CPU cost of a stream queue's read path, without sockets or channels.

``python -m bench.stream_read_bench [--messages 200000] [--size 100] [--prefetch 1000]
[--consumers 1] [--kafka] [--per-batch 1] [--profile]``

Publishes ``--messages`` AMQP messages (one batch each, as ``StreamQueue.publish`` appends
them; ``--per-batch N`` packs N per batch instead, to see what batching appends would buy) or,
with ``--kafka``, Kafka-shaped records in batches of 500, to a stream queue on a real data
directory, then lets ``--consumers`` consumers read
the whole stream from its first offset: each dispatch fills the consumer's prefetch window,
and the window is given back in full after every batch of deliveries (what a client acking
with ``multiple`` once per read does). What is timed is ``StreamQueue.dispatch`` alone: log
reads, record decoding, ``x-stream-offset`` headers and ``Delivery`` objects. Quiet enough to
compare two commits (run one with ``PYTHONPATH=<other tree>/src``).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from pathlib import Path

from dari.message import Message, encode_properties
from dari.queues.queue import Delivery
from dari.queues.queue_store import encode_message_batch
from dari.queues.stream_queue import StreamQueue
from dari.records import build_batch
from dari.records.builder import NewRecord
from dari.server.amqp_streams import TopicStreams
from dari.storage import LogConfig, LogStore
from dari.streams.topics import TopicManager


class CountingConsumer:
    """A consumer with a prefetch window that counts what it is given; one thread."""

    no_ack = False
    priority = 0
    exclusive = False

    def __init__(self, tag: str, prefetch: int) -> None:
        self.tag = tag
        self.prefetch = prefetch
        self.credit = prefetch
        self.count = 0
        self.last: Delivery | None = None

    def room(self) -> int:
        return self.credit

    def deliver_many(self, deliveries: list[Delivery]) -> None:
        self.credit -= len(deliveries)
        self.count += len(deliveries)
        self.last = deliveries[-1]

    def cancelled(self) -> None:
        pass


def fill(queue: StreamQueue, count: int, size: int, kafka: bool, per_batch: int) -> None:
    body = b"x" * size
    if kafka:
        for start in range(0, count, 500):
            n = min(500, count - start)
            records = [NewRecord(b"k", body, (("h", b"v"),), None) for _ in range(n)]
            queue.partition.append(build_batch(records, now_ms=int(time.time() * 1000)))
        return
    props = encode_properties(delivery_mode=2, content_type="application/octet-stream")
    message = Message.from_amqp("", queue.name, props, body)
    if per_batch > 1:
        now = int(time.time() * 1000)
        for start in range(0, count, per_batch):
            n = min(per_batch, count - start)
            queue.partition.append(encode_message_batch([(message, now)] * n))
        return
    for _ in range(count):
        queue.publish(message, dispatch=False)


def run(messages: int, size: int, prefetch: int, consumers: int, kafka: bool,
        per_batch: int, profile: bool) -> float:
    """Deliveries per second over all consumers."""
    with tempfile.TemporaryDirectory(prefix="dari-stream-read-") as tmp:
        store = LogStore(Path(tmp))
        topics = TopicManager(store, LogConfig(flush="os"))
        topics.load()
        try:
            partition = TopicStreams(topics).open("s", {})
            queue = StreamQueue("s", "/", {"x-queue-type": "stream"}, partition)
            fill(queue, messages, size, kafka, per_batch)
            readers = [CountingConsumer(f"c{i}", prefetch) for i in range(consumers)]
            for reader in readers:
                queue.add_consumer(reader, queue.start_offset("first"))
                reader.credit = prefetch
            profiler = cProfile.Profile() if profile else None
            t0 = time.perf_counter()
            if profiler:
                profiler.enable()
            while any(r.count < messages for r in readers):
                for r in readers:
                    r.credit = prefetch
                if not queue.dispatch():
                    raise RuntimeError("dispatch delivered nothing before the end")
            if profiler:
                profiler.disable()
            elapsed = time.perf_counter() - t0
            last = readers[0].last
            assert last is not None and last.position == messages - 1, last
            if profiler:
                pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
            return consumers * messages / elapsed
        finally:
            topics.close()
            store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stream_read_bench",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--prefetch", type=int, default=1000)
    parser.add_argument("--consumers", type=int, default=1)
    parser.add_argument("--kafka", action="store_true", help="Kafka-shaped records")
    parser.add_argument("--per-batch", type=int, default=1,
                        help="AMQP messages per appended batch (default 1, as publish does)")
    parser.add_argument("--repeat", type=int, default=3, help="runs; the best one is shown")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    best = 0.0
    for _ in range(1 if args.profile else args.repeat):
        rate = run(args.messages, args.size, args.prefetch, args.consumers, args.kafka,
                   args.per_batch, args.profile)
        best = max(best, rate)
    kind = "Kafka records" if args.kafka else f"AMQP messages ({args.per_batch} per batch)"
    print(f"{args.messages:,} {kind} of {args.size} B, {args.consumers} consumer(s), prefetch "
          f"{args.prefetch}: {best:,.0f} deliveries/s ({1e6 / best:.2f} us each)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
