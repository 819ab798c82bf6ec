"""Retention by size and by time: whole old segments leave the disk, the log start offset moves up,
and consumers below it are reset (or told so) the way librdkafka expects."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, TopicPartition

from broker import Broker

from .clients import (
    Sent,
    consume_range,
    consumer,
    create_topic,
    produce_all,
    producer,
    wait_until,
    watermarks,
)

SEGMENT_BYTES = 16 * 1024
RETENTION_BYTES = 64 * 1024
N = 3000  # ~250 bytes per record on disk: ~750 KB, dozens of segments
RETENTION_WAIT_S = 20.0

Factory = Callable[..., Broker]


@pytest.fixture
def retention_broker(make_broker: Factory) -> Broker:
    return make_broker(settings={"log.retention.check.interval.ms": 200})


def records(n: int) -> list[Sent]:
    return [
        Sent(
            key=f"k{i}".encode(), value=f"{i:08d}".encode() + b"." * 200, headers=(), timestamp=None
        )
        for i in range(n)
    ]


def produce_small_batches(broker: Broker, topic: str, sent: list[Sent]) -> None:
    # Small batches so that many segments roll (a batch never spans two segments).
    p = producer(broker.bootstrap, acks="all", **{"batch.size": 4096, "linger.ms": 1})
    reports = produce_all(p, topic, sent)
    assert sorted(m.offset() for m in reports) == list(range(len(sent)))


def segment_bases(partition_dir: Path) -> list[int]:
    return sorted(int(path.stem) for path in partition_dir.glob("*.log"))


def log_bytes(partition_dir: Path) -> int:
    return sum(path.stat().st_size for path in partition_dir.glob("*.log"))


def assert_consumers_below_start_are_reset(broker: Broker, topic: str, low: int, high: int) -> None:
    # auto.offset.reset=earliest: offset 0 is gone, so the consumer restarts at the log start.
    reset = {"auto.offset.reset": "earliest"}
    got = consume_range(broker.bootstrap, topic, start=0, count=high - low, timeout=15, **reset)
    assert got[0].offset == low, f"reset consumer began at {got[0].offset}, log start is {low}"
    assert [r.offset for r in got] == list(range(low, high))
    assert [int(r.value[:8]) for r in got] == list(range(low, high)), "wrong records after reset"

    # auto.offset.reset=error: librdkafka 2.x surfaces the broker's OFFSET_OUT_OF_RANGE as a
    # consumer error event with code _AUTO_OFFSET_RESET, "fetch failed due to requested offset not
    # available on the broker: Broker: Offset out of range (broker 0)".
    c = consumer(broker.bootstrap, **{"auto.offset.reset": "error"})
    try:
        c.assign([TopicPartition(topic, 0, 0)])

        def next_error() -> KafkaError | None:
            msg = c.poll(0.5)
            if msg is None:
                return None
            assert msg.error() is not None, f"got a record at offset {msg.offset()} below start"
            return msg.error()

        err = wait_until(next_error, lambda e: e is not None, "an offset-out-of-range error", 20)
    finally:
        c.close()
    assert err.code() == KafkaError._AUTO_OFFSET_RESET, (
        f"expected _AUTO_OFFSET_RESET, got {err.name()}: {err.str()}"
    )
    assert "Offset out of range" in err.str(), f"reset error not caused by range: {err.str()}"


def test_size_retention_deletes_old_segments(retention_broker: Broker, topic: str) -> None:
    broker = retention_broker
    create_topic(
        broker.bootstrap,
        topic,
        config={"segment.bytes": str(SEGMENT_BYTES), "retention.bytes": str(RETENTION_BYTES)},
    )
    produce_small_batches(broker, topic, records(N))
    pdir = broker.partition_dir(topic)
    assert pdir.is_dir(), f"no partition directory {pdir}"

    def state() -> tuple[int, list[int], int]:
        low, _ = watermarks(broker.bootstrap, topic)
        return low, segment_bases(pdir), log_bytes(pdir)

    def retained(s: tuple[int, list[int], int]) -> bool:
        low, bases, size = s
        return (
            low > 0 and bool(bases) and bases[0] == low and size <= RETENTION_BYTES + SEGMENT_BYTES
        )

    low, bases, size = wait_until(state, retained, "size retention", RETENTION_WAIT_S)
    assert 0 not in bases, "the first segment 00000000000000000000.log is still on disk"
    assert len(bases) >= 2, f"retention removed too much: segments {bases}"
    assert size >= RETENTION_BYTES - 2 * SEGMENT_BYTES, (
        f"only {size} bytes kept, retention.bytes is {RETENTION_BYTES}"
    )
    lo, hi = watermarks(broker.bootstrap, topic)
    assert (lo, hi) == (low, N)
    assert_consumers_below_start_are_reset(broker, topic, low, N)


def test_time_retention_deletes_expired_segments(retention_broker: Broker, topic: str) -> None:
    broker = retention_broker
    create_topic(
        broker.bootstrap,
        topic,
        config={"segment.bytes": str(SEGMENT_BYTES), "retention.ms": "1000"},
    )
    produce_small_batches(broker, topic, records(N // 2))
    pdir = broker.partition_dir(topic)

    def state() -> tuple[int, list[int]]:
        low, _ = watermarks(broker.bootstrap, topic)
        return low, segment_bases(pdir)

    # Once every closed segment has expired only the newest segment is left, and the log
    # starts where it begins.
    low, _ = wait_until(
        state,
        lambda s: s[0] > 0 and s[1] == [s[0]],
        "time retention to leave only the newest segment",
        RETENTION_WAIT_S,
    )
    assert low <= N // 2, f"log start {low} beyond the high watermark {N // 2}"
    assert watermarks(broker.bootstrap, topic)[1] == N // 2
    if low < N // 2:
        assert_consumers_below_start_are_reset(broker, topic, low, N // 2)
    # New records still append at the old high watermark, not at 0.
    more = [Sent(key=b"late", value=b"late", headers=(), timestamp=None)]
    [report] = produce_all(producer(broker.bootstrap, acks="all"), topic, more)
    assert report.offset() == N // 2


def test_retention_survives_restart(make_broker: Factory, topic: str) -> None:
    """The log start offset is derived from the files on disk, so a restart must keep it."""
    broker = make_broker(settings={"log.retention.check.interval.ms": 200})
    create_topic(
        broker.bootstrap,
        topic,
        config={"segment.bytes": str(SEGMENT_BYTES), "retention.bytes": str(RETENTION_BYTES)},
    )
    produce_small_batches(broker, topic, records(N // 2))
    low = wait_until(
        lambda: watermarks(broker.bootstrap, topic)[0], lambda v: v > 0, "log start to advance"
    )
    broker.terminate()
    broker.restart()
    lo, hi = watermarks(broker.bootstrap, topic)
    assert hi == N // 2, f"high watermark {hi} after restart"
    assert lo >= low, f"log start went back from {low} to {lo} after restart"
    got = consume_range(broker.bootstrap, topic)
    assert [int(r.value[:8]) for r in got] == list(range(lo, hi))
