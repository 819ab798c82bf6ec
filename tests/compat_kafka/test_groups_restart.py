"""Committed offsets live in __consumer_offsets: they survive restarts and crashes, can be
reset by admin tools, and the records are readable like any topic's."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

from broker import Broker

from .clients import Sent, admin, consume_range, create_topic, produce_all, producer
from .groups_helpers import (
    FAST_GROUPS,
    FREE_AMQP,
    assigned,
    group_consumer,
    java_hash_partition,
    poll_until,
)

PARTITIONS = 2
COUNT = 200
BASE_TS = 1_700_000_000_000


def produce(bootstrap: str, topic: str) -> None:
    produce_all(
        producer(bootstrap),
        topic,
        (Sent(None, f"{i}".encode(), (), BASE_TS + i * 1000, i % PARTITIONS) for i in range(COUNT)),
    )


def consume_in_group(bootstrap: str, topic: str, group: str, want: int) -> list:
    """Join ``group``, read ``want`` records, commit what was read, leave."""
    c = group_consumer(bootstrap, group)
    got: list = []
    try:
        c.subscribe([topic])
        poll_until([c], lambda: len(got) >= want, f"{want} records", sink=got)
        got = [m for _, m in got][:want]
        last: dict[int, int] = {}
        for m in got:
            last[m.partition()] = max(last.get(m.partition(), -1), m.offset())
        c.commit(
            offsets=[TopicPartition(topic, p, o + 1) for p, o in last.items()], asynchronous=False
        )
    finally:
        c.close()
    return got


def first_offsets_after_rejoin(
    bootstrap: str, topic: str, group: str, partitions: set[int] | None = None
) -> dict[int, int]:
    """First offset the group reads from each of ``partitions`` (default: all) after joining."""
    wanted = set(range(PARTITIONS)) if partitions is None else partitions
    c = group_consumer(bootstrap, group)
    first: dict[int, int] = {}
    try:
        c.subscribe([topic])
        received: list = []
        poll_until(
            [c],
            lambda: (
                len(assigned(c)) == PARTITIONS and {m.partition() for _, m in received} >= wanted
            ),
            "records from every partition",
            sink=received,
        )
        for _, m in received:
            first.setdefault(m.partition(), m.offset())
    finally:
        c.close()
    return first


@pytest.mark.parametrize(
    ("stop", "settings"),
    [("terminate", {}), ("kill", {"log.flush.policy": "always"})],
)
def test_group_resumes_from_committed_offsets_after_restart(
    make_broker, topic: str, stop: str, settings: dict
) -> None:
    broker: Broker = make_broker(settings={**FAST_GROUPS, **settings}, **FREE_AMQP)
    create_topic(broker.bootstrap, topic, PARTITIONS)
    produce(broker.bootstrap, topic)
    group = f"g-{uuid.uuid4().hex[:8]}"
    got = consume_in_group(broker.bootstrap, topic, group, 120)
    committed = {}
    for m in got:
        committed[m.partition()] = max(committed.get(m.partition(), 0), m.offset() + 1)

    # the commit is a record in the group's partition of __consumer_offsets
    records = consume_range(broker.bootstrap, "__consumer_offsets", java_hash_partition(group))
    assert any(r.key and group.encode() in r.key and topic.encode() in r.key for r in records)

    if stop == "kill":
        broker.kill()
        broker.start()
    else:
        broker.restart()
    client = admin(broker.bootstrap)
    request = [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in range(2)])]
    result = client.list_consumer_group_offsets(request)[group].result(timeout=30)
    assert {tp.partition: tp.offset for tp in result.topic_partitions} == committed
    unfinished = {p for p, offset in committed.items() if offset < COUNT // PARTITIONS}
    assert unfinished, "the first consumer read every partition to its end"
    first = first_offsets_after_rejoin(broker.bootstrap, topic, group, unfinished)
    assert first == {p: committed[p] for p in unfinished}, "resumed at the committed offsets"


def test_reset_offsets_to_earliest_and_to_a_timestamp_replays(make_broker, topic: str) -> None:
    broker: Broker = make_broker(settings=FAST_GROUPS, **FREE_AMQP)
    create_topic(broker.bootstrap, topic, PARTITIONS)
    produce(broker.bootstrap, topic)
    group = f"g-{uuid.uuid4().hex[:8]}"
    consume_in_group(broker.bootstrap, topic, group, COUNT)
    client = admin(broker.bootstrap)

    # confluent: alter the (now empty) group's offsets back to the start
    reset = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p, 0) for p in range(2)])
    client.alter_consumer_group_offsets([reset])[group].result(timeout=30)
    assert first_offsets_after_rejoin(broker.bootstrap, topic, group) == {0: 0, 1: 0}

    # kafka-python: reset to the records at or after a timestamp
    from kafka.admin import KafkaAdminClient
    from kafka.protocol.consumer import OffsetTimestamp
    from kafka.structs import TopicPartition as KTopicPartition

    consume_in_group(broker.bootstrap, topic, group, COUNT)
    kadmin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        when = OffsetTimestamp(BASE_TS + 100 * 1000)  # record 100: offset 50 of each partition
        specs = {KTopicPartition(topic, p): when for p in range(2)}
        kadmin.reset_group_offsets(group, specs)
        offsets = kadmin.list_group_offsets({group: None})[group]
        assert {tp.partition: meta.offset for tp, meta in offsets.items()} == {0: 50, 1: 50}
    finally:
        kadmin.close()
    assert first_offsets_after_rejoin(broker.bootstrap, topic, group) == {0: 50, 1: 50}
