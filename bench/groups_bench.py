"""Consumer-group figures: rebalance time, group vs manual consumption, coordinator replay.

``python bench/groups_bench.py [--members 10] [--partitions 30] [--records 100000]
[--size 1024] [--commits 1000000]``

1. Rebalance: confluent consumers (one thread each) join one group on a 30-partition topic one
   after another; for each join, the time from ``subscribe`` until every member holds a
   non-empty, disjoint share covering all partitions. Existing members learn of a rebalance on
   their next heartbeat, so the figure depends on ``heartbeat.interval.ms`` (printed).
2. Throughput: one consumer reads the same data as a group member (subscribe) and with manual
   assignment (assign), in MB/s of record values.
3. Replay: 1,000,000 offset commits are written straight into ``__consumer_offsets`` through the
   storage API, then the coordinator state is rebuilt from them (read + decode + restore).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from dari.records import build_batch, validate
from dari.storage import LogConfig, LogStore
from dari.streams.groups.coordinator import GroupCoordinator
from dari.streams.groups.offsets import OffsetAndMetadata, offset_key, offset_value, partition_for
from dari.streams.groups.offsets_log import OffsetsLog
from dari.streams.groups.timers import wall_clock_ms
from dari.streams.topics import TopicManager

HEARTBEAT_MS = 250
_READY = re.compile(r"dari ready kafka=(\S+):(\d+)")


def start_broker(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    log_path = workdir / "broker.log"
    out = open(log_path, "wb")  # noqa: SIM115 (kept open for the broker's lifetime)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dari",
            "serve",
            "--data-dir",
            str(workdir / "data"),
            "--kafka",
            "127.0.0.1:0",
            "--amqp",
            "127.0.0.1:0",
            "--log-level",
            "warning",
            "--set",
            "group.initial.rebalance.delay.ms=0",
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        match = _READY.search(log_path.read_text(errors="replace"))
        if match:
            return proc, f"{match[1]}:{match[2]}"
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"broker did not start:\n{log_path.read_text()[-2000:]}")


class Member(threading.Thread):
    """One group consumer polling in its own thread; publishes its current assignment."""

    def __init__(self, bootstrap: str, group: str, topic: str, index: int) -> None:
        super().__init__(daemon=True)
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "client.id": f"m{index:02d}",
                "session.timeout.ms": 10_000,
                "heartbeat.interval.ms": HEARTBEAT_MS,
                "enable.auto.commit": False,
            }
        )
        self.topic = topic
        self.owned: frozenset[int] = frozenset()
        self.stopping = threading.Event()

    def run(self) -> None:
        self.consumer.subscribe([self.topic])
        while not self.stopping.is_set():
            self.consumer.poll(0.02)
            self.owned = frozenset(tp.partition for tp in self.consumer.assignment())
        self.consumer.close()


def bench_rebalance(bootstrap: str, topic: str, partitions: int, count: int) -> list[float]:
    members: list[Member] = []
    times = []
    try:
        for index in range(count):
            member = Member(bootstrap, "bench-rebalance", topic, index)
            started = time.perf_counter()
            member.start()
            members.append(member)
            while True:
                owned = [m.owned for m in members]
                covered = frozenset().union(*owned)
                if (
                    all(owned)
                    and sum(map(len, owned)) == partitions
                    and covered == frozenset(range(partitions))
                ):
                    break
                if time.perf_counter() - started > 60:
                    raise RuntimeError(f"no balanced assignment for {index + 1} members")
                time.sleep(0.002)
            times.append(time.perf_counter() - started)
    finally:
        for m in members:
            m.stopping.set()
        for m in members:
            m.join(10)
    return times


def fill(bootstrap: str, topic: str, records: int, size: int) -> None:
    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 20,
            "batch.size": 1 << 20,
            "compression.type": "none",
        }
    )
    value = b"x" * size
    for i in range(records):
        while True:
            try:
                p.produce(topic, value, key=str(i).encode())
                break
            except BufferError:
                p.poll(0.01)
    p.flush(120)


def consume_all(bootstrap: str, topic: str, partitions: int, total: int, group: bool) -> float:
    """MB/s of values read until ``total`` records arrived."""
    config = {
        "bootstrap.servers": bootstrap,
        "group.id": f"bench-{group}-{time.time_ns()}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "fetch.max.bytes": 50 << 20,
        "max.partition.fetch.bytes": 4 << 20,
    }
    c = Consumer(config)
    if group:
        c.subscribe([topic])
    else:
        c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got = size = 0
    started = time.perf_counter()
    while got < total:
        for msg in c.consume(10_000, 1.0):
            if msg.error() is None:
                got += 1
                size += len(msg.value())
            elif msg.error().code() != KafkaError._PARTITION_EOF:
                raise RuntimeError(msg.error())
    elapsed = time.perf_counter() - started
    c.close()
    return size / elapsed / 1e6


def bench_replay(workdir: Path, commits: int) -> tuple[float, float, int, int]:
    """Write ``commits`` commits into __consumer_offsets, then time the rebuild."""
    groups, topics, parts = 1000, 10, 10  # 100,000 keys; each committed commits/100,000 times
    store = LogStore(workdir / "replay")
    topics_manager = TopicManager(store, LogConfig(segment_bytes=100 << 20), 1)
    topics_manager.load()
    offsets_log = OffsetsLog(topics_manager, 50, 100 << 20)
    topic = offsets_log.ensure()
    pending: dict[int, list[tuple[bytes, bytes]]] = {}
    started = time.perf_counter()
    now = wall_clock_ms()
    written = 0
    round_ = 0
    while written < commits:
        for g in range(groups):
            group = f"group-{g}"
            partition = partition_for(group, 50)
            batch = pending.setdefault(partition, [])
            for t in range(topics):
                for p in range(parts):
                    value = OffsetAndMetadata(round_ * 1000 + p, 0, "", now)
                    batch.append((offset_key(group, f"topic-{t}", p), offset_value(value)))
                    written += 1
            if len(batch) >= 500:
                buf = bytearray(build_batch(batch, now_ms=now))
                topic.partitions[partition].append(buf, validate(buf))
                pending[partition] = []
            if written >= commits:
                break
        round_ += 1
    for partition, batch in pending.items():
        if batch:
            buf = bytearray(build_batch(batch, now_ms=now))
            topic.partitions[partition].append(buf, validate(buf))
    write_s = time.perf_counter() - started
    started = time.perf_counter()
    state = offsets_log.load()
    coordinator = GroupCoordinator(wall_clock_ms, offsets_partitions=50)
    coordinator.restore(state)
    replay_s = time.perf_counter() - started
    keys = sum(len(o) for o in coordinator.offsets.values())
    topics_manager.close()
    store.close()
    return write_s, replay_s, state.records, keys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--partitions", type=int, default=30)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--commits", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        proc, bootstrap = start_broker(workdir)
        try:
            client = AdminClient({"bootstrap.servers": bootstrap})
            topic = "bench-groups"
            client.create_topics([NewTopic(topic, args.partitions, 1)])[topic].result(30)
            times = bench_rebalance(bootstrap, topic, args.partitions, args.members)
            print(
                f"\nRebalance ({args.partitions} partitions, heartbeat.interval.ms={HEARTBEAT_MS},"
                " group.initial.rebalance.delay.ms=0)"
            )
            print(f"{'members':>8} {'join -> all assigned (ms)':>27}")
            for n, t in enumerate(times, 1):
                print(f"{n:>8} {t * 1000:>27.0f}")
            fill(bootstrap, topic, args.records, args.size)
            mb = args.records * args.size / 1e6
            manual = consume_all(bootstrap, topic, args.partitions, args.records, group=False)
            grouped = consume_all(bootstrap, topic, args.partitions, args.records, group=True)
            print(
                f"\nThroughput ({args.records:,} records x {args.size} B = {mb:.0f} MB, "
                "one consumer)"
            )
            print(f"{'mode':>10} {'MB/s':>8}")
            print(f"{'assign':>10} {manual:>8.1f}")
            print(f"{'subscribe':>10} {grouped:>8.1f}")
        finally:
            proc.terminate()
            proc.wait(10)
        write_s, replay_s, records, keys = bench_replay(workdir, args.commits)
        print(
            f"\nCoordinator replay from __consumer_offsets ({records:,} commit records, "
            f"{keys:,} distinct keys, 50 partitions)"
        )
        print(f"{'write (s)':>10} {'replay (s)':>11} {'records/s':>12}")
        print(f"{write_s:>10.2f} {replay_s:>11.2f} {records / replay_s:>12,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
