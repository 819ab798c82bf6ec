"""Share-group figures: consume msg/s with 1 and 3 ShareConsumers beside a classic group.

``python -m bench.share_bench [--records 200000] [--size 100] [--partitions 1]``
(or ``python -m bench --only share``)

One topic is filled once; then, each in a new group reading from the start:
1. a classic consumer group member (``subscribe``, auto commit) reads every record;
2. one ShareConsumer (implicit acknowledgement: each poll accepts the previous one's records);
3. three ShareConsumers, one thread each, sharing the same partitions.
Each figure is records delivered per second from the first poll until the last record arrived
(the share figures include acquiring and acknowledging every record, journalled to disk).
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer, ShareConsumer
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from bench.groups_bench import start_broker

TIMEOUT_S = 600.0


def fill(bootstrap: str, topic: str, partitions: int, records: int, size: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions)])[topic].result(timeout=30)
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.num.messages": 10000}
    )
    value = b"x" * size
    for i in range(records):
        while True:
            try:
                producer.produce(topic, value=value, partition=i % partitions)
                break
            except BufferError:
                producer.poll(0.1)
    producer.flush(60)


def classic(bootstrap: str, topic: str, records: int) -> float:
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"classic-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
        }
    )
    c.subscribe([topic])
    got, start = 0, None
    deadline = time.monotonic() + TIMEOUT_S
    while got < records and time.monotonic() < deadline:
        for msg in c.consume(1000, 0.5):
            if msg.error() is None:
                start = start or time.perf_counter()
                got += 1
    elapsed = time.perf_counter() - (start or time.perf_counter())
    c.close()
    return got / elapsed if elapsed else 0.0


def earliest_group(bootstrap: str) -> str:
    group = f"share-{uuid.uuid4().hex[:6]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    entry = ConfigEntry(
        "share.auto.offset.reset", "earliest", incremental_operation=AlterConfigOpType.SET
    )
    resource = ConfigResource(ResourceType.GROUP, group, incremental_configs=[entry])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)
    return group


def shared(bootstrap: str, topic: str, records: int, consumers: int) -> tuple[float, list[int]]:
    group = earliest_group(bootstrap)
    counts = [0] * consumers
    first: list[float] = []
    done = threading.Event()

    def run(index: int) -> None:
        c = ShareConsumer({"bootstrap.servers": bootstrap, "group.id": group})
        c.subscribe([topic])
        while not done.is_set():
            got = sum(1 for m in c.poll(0.5) if m.error() is None)
            if got:
                if not first:
                    first.append(time.perf_counter())
                counts[index] += got
                if sum(counts) >= records:
                    done.set()
        c.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(consumers)]
    for t in threads:
        t.start()
    done.wait(TIMEOUT_S)
    end = time.perf_counter()
    done.set()
    for t in threads:
        t.join(60)
    elapsed = end - first[0] if first else 0.0
    return (sum(counts) / elapsed if elapsed else 0.0), counts


def run(records: int, size: int, partitions: int) -> None:
    with tempfile.TemporaryDirectory(prefix="dari-share-bench-") as tmp:
        proc, bootstrap = start_broker(Path(tmp))
        try:
            topic = "share-bench"
            fill(bootstrap, topic, partitions, records, size)
            rows = [("classic group, 1 consumer", classic(bootstrap, topic, records), "")]
            for n in (1, 3):
                rate, counts = shared(bootstrap, topic, records, n)
                rows.append((f"share group, {n} ShareConsumer(s)", rate, str(counts)))
        finally:
            proc.terminate()
            proc.wait(30)
    print(f"\n{records} records of {size} B on {partitions} partition(s)")
    print(f"{'reader':36} {'msg/s':>10}  records per consumer")
    for name, rate, detail in rows:
        print(f"{name:36} {rate:10.0f}  {detail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.share_bench", description=__doc__)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="20,000 records")
    args = parser.parse_args(argv)
    run(20_000 if args.quick else args.records, args.size, args.partitions)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
