"""Compacted topics through real clients: the newest value per key survives with its offset,
tombstones vanish after delete.retention.ms, keyless records are refused."""

from __future__ import annotations

import contextlib
import time

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition

from broker import Broker
from compat_kafka.clients import (
    Record,
    Sent,
    consumer,
    create_topic,
    produce_all,
    producer,
    to_record,
    wait_until,
)

KEYS, UPDATES = 40, 25
DELETED = {f"key-{i}" for i in range(0, KEYS, 4)}


def _read_to_end(bootstrap: str, topic: str) -> list[Record]:
    """Every record from the start to the end of partition 0 (a compacted log has gaps)."""
    c = consumer(bootstrap, **{"enable.partition.eof": True})
    try:
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        out: list[Record] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for msg in c.consume(num_messages=1000, timeout=0.5):
                if msg.error() is None:
                    out.append(to_record(msg))
                elif msg.error().code() == KafkaError._PARTITION_EOF:
                    return out
                else:
                    raise AssertionError(f"consumer error: {msg.error()}")
        raise AssertionError(f"no end of partition within 30 s after {len(out)} records")
    finally:
        c.close()


def _compacted_broker(make_broker) -> Broker:
    return make_broker(
        settings={
            "log.cleaner.backoff.ms": 200,
            "log.retention.check.interval.ms": 200,  # segment.ms rolls happen here
        }
    )


def test_compaction_keeps_newest_value_per_key_with_its_offset(make_broker, topic: str) -> None:
    broker = _compacted_broker(make_broker)
    create_topic(
        broker.bootstrap,
        topic,
        config={
            "cleanup.policy": "compact",
            "segment.bytes": "4096",
            "segment.ms": "300",
            "min.cleanable.dirty.ratio": "0.01",
            "delete.retention.ms": "1000",
        },
    )
    sent = [
        Sent(key=f"key-{k}".encode(), value=f"v{u}-{k}".encode(), headers=(), timestamp=None)
        for u in range(UPDATES)
        for k in range(KEYS)
    ]
    tombstones = [Sent(key=k.encode(), value=None, headers=(), timestamp=None) for k in DELETED]
    reports = produce_all(producer(broker.bootstrap, acks="all"), topic, sent + tombstones)
    total = len(reports)
    newest: dict[bytes, tuple[int, bytes | None]] = {}
    for report in reports:
        newest[report.key()] = (report.offset(), report.value())
    expected = {
        key: entry for key, entry in newest.items() if entry[1] is not None
    }

    def survivors() -> list[Record]:
        return _read_to_end(broker.bootstrap, topic)

    # Wait until the cleaner has removed every overwritten value and every tombstone.
    got = wait_until(
        survivors,
        lambda records: len(records) == len(expected),
        "compaction down to the newest value of each live key",
        timeout=60,
    )
    assert {r.key: (r.offset, r.value) for r in got} == expected, "newest values, same offsets"
    assert [r.offset for r in got] == sorted(r.offset for r in got)
    assert max(r.offset for r in got) < total
    # Offsets keep counting where they were: a new record gets the next offset, not a reused one.
    (after,) = produce_all(
        producer(broker.bootstrap),
        topic,
        [Sent(key=b"key-new", value=b"fresh", headers=(), timestamp=None)],
    )
    assert after.offset() == total


def test_keyless_record_is_refused_on_a_compacted_topic(make_broker, topic: str) -> None:
    broker = _compacted_broker(make_broker)
    create_topic(broker.bootstrap, topic, config={"cleanup.policy": "compact"})
    try:
        produce_all(
            producer(broker.bootstrap, acks="all", retries=0),
            topic,
            [Sent(key=None, value=b"no key", headers=(), timestamp=None)],
        )
    except (AssertionError, KafkaException) as exc:
        assert "INVALID_RECORD" in str(exc) or "without key" in str(exc), str(exc)
    else:
        raise AssertionError("a keyless record was accepted by a compacted topic")


def test_consumer_offsets_stays_small_under_heavy_committing(make_broker, topic: str) -> None:
    broker = make_broker(
        settings={"log.cleaner.backoff.ms": 200, "offsets.topic.segment.bytes": 16384}
    )
    create_topic(broker.bootstrap, topic)
    c = consumer(broker.bootstrap, **{"group.id": f"{topic}-group"})
    commits = 3000
    try:
        for offset in range(1, commits + 1):
            c.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
    finally:
        c.close()

    def offsets_bytes() -> int:
        total = 0
        for path in broker.data_dir.glob("__consumer_offsets-*/*.log"):
            with contextlib.suppress(FileNotFoundError):  # the cleaner swaps segments meanwhile
                total += path.stat().st_size
        return total

    # Each commit record is ~100 bytes: without cleaning the topic would hold ~300 KB.
    size = wait_until(offsets_bytes, lambda n: n < 64 * 1024, "__consumer_offsets compaction")
    assert size < 64 * 1024
    c = consumer(broker.bootstrap, **{"group.id": f"{topic}-group"})
    try:
        (committed,) = c.committed([TopicPartition(topic, 0)], timeout=10)
        assert committed.offset == commits, "the newest commit survives cleaning"
    finally:
        c.close()
