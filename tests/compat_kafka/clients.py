"""confluent-kafka helpers shared by the compatibility and crash tests.

Every wait here is a bounded poll loop: a test fails with a message saying what was still missing,
never because something took a moment longer than a fixed sleep.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from waiting import wait_until  # noqa: F401  (re-exported for the tests)

WAIT_S = 30.0


@dataclass(frozen=True)
class Record:
    """What a client reads back, in plain comparable form."""

    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp: int


@dataclass(frozen=True)
class Sent:
    """What a test produced, and where the broker said it went."""

    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    timestamp: int | None
    partition: int = 0


def producer(bootstrap: str, **config: object) -> Producer:
    return Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, **config})


def consumer(bootstrap: str, **config: object) -> Consumer:
    """An assign()-only consumer: a throwaway group id (required by the client), no commits."""
    base: dict[str, object] = {
        "bootstrap.servers": bootstrap,
        "group.id": f"test-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "error",
    }
    return Consumer({**base, **config})


def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


def create_topic(
    bootstrap: str, topic: str, partitions: int = 1, config: dict[str, str] | None = None
) -> None:
    client = admin(bootstrap)  # keep a reference: a collected client fails its futures
    futures = client.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1, config=config or {})],
        operation_timeout=10,
        request_timeout=15,
    )
    futures[topic].result(timeout=WAIT_S)


def produce_all(p: Producer, topic: str, records: Iterable[Sent]) -> list[Message]:
    """Produce and wait for every delivery report; fail on the first error, keep report order."""
    reports: list[Message] = []
    errors: list[str] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(f"{err} (value {msg.value()[:40]!r})")
        reports.append(msg)

    count = 0
    for rec in records:
        kwargs: dict[str, object] = {"value": rec.value, "partition": rec.partition}
        if rec.key is not None:
            kwargs["key"] = rec.key
        if rec.headers:
            kwargs["headers"] = list(rec.headers)
        if rec.timestamp is not None:
            kwargs["timestamp"] = rec.timestamp
        while True:
            try:
                p.produce(topic, on_delivery=on_delivery, **kwargs)
                break
            except BufferError:
                p.poll(0.05)
        count += 1
        p.poll(0)
    remaining = p.flush(WAIT_S)
    assert remaining == 0, f"{remaining} messages still undelivered after {WAIT_S:.0f} s"
    assert not errors, f"{len(errors)} delivery errors, first: {errors[0]}"
    assert len(reports) == count, f"{len(reports)} delivery reports for {count} messages"
    return reports


def to_record(msg: Message) -> Record:
    headers = tuple((k, v) for k, v in (msg.headers() or []))
    return Record(msg.offset(), msg.key(), msg.value(), headers, msg.timestamp()[1])


def consume_range(
    bootstrap: str,
    topic: str,
    partition: int = 0,
    start: int = OFFSET_BEGINNING,
    count: int | None = None,
    timeout: float = WAIT_S,
    **config: object,
) -> list[Record]:
    """Read `count` records (default: up to the high watermark) from one assigned partition."""
    c = consumer(bootstrap, **config)
    try:
        if count is None:
            low, high = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            first = low if start == OFFSET_BEGINNING else start
            count = max(high - first, 0)
        c.assign([TopicPartition(topic, partition, start)])
        out: list[Record] = []
        deadline = time.monotonic() + timeout
        while len(out) < count:
            assert time.monotonic() < deadline, (
                f"read {len(out)} of {count} records from {topic}[{partition}] starting at "
                f"{start} in {timeout:.0f} s (librdkafka logs protocol errors on stderr)"
            )
            for msg in c.consume(num_messages=1000, timeout=0.5):
                err = msg.error()
                if err is not None:
                    assert err.code() == KafkaError._PARTITION_EOF, f"consumer error: {err}"
                    continue
                out.append(to_record(msg))
        return out[:count]
    finally:
        c.close()


def watermarks(bootstrap: str, topic: str, partition: int = 0) -> tuple[int, int]:
    c = consumer(bootstrap)
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
    finally:
        c.close()
