"""confluent-kafka (librdkafka 2.x) against dari: acks levels, every compression codec, timestamp
lookups, the admin API and explicit partitions."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import NewTopic

from broker import Broker

from .clients import (
    Record,
    Sent,
    admin,
    consume_range,
    consumer,
    create_topic,
    produce_all,
    producer,
    watermarks,
)

N = 2000
BASE_TS = 1_700_000_000_000  # explicit CreateTime, far from "now" so the broker cannot invent it


def make_records(n: int, tag: str, partition: int = 0) -> list[Sent]:
    return [
        Sent(
            key=f"{tag}-key-{i}".encode() if i % 10 else None,  # every tenth record has no key
            value=(f"{tag}-value-{i}-" + "payload " * (i % 17)).encode(),
            headers=(("idx", str(i).encode()), ("tag", tag.encode()), ("empty", b"")),
            timestamp=BASE_TS + i * 10,
            partition=partition,
        )
        for i in range(n)
    ]


def assert_round_trip(got: list[Record], sent: list[Sent], first_offset: int = 0) -> None:
    assert len(got) == len(sent), f"read {len(got)} records, produced {len(sent)}"
    for i, (rec, want) in enumerate(zip(got, sent, strict=True)):
        where = f"record {i} (offset {rec.offset})"
        assert rec.offset == first_offset + i, f"{where}: expected offset {first_offset + i}"
        assert rec.key == want.key, f"{where}: key {rec.key!r} != {want.key!r}"
        assert rec.value == want.value, f"{where}: value {rec.value!r} != {want.value!r}"
        assert rec.headers == want.headers, f"{where}: headers {rec.headers!r}"
        assert rec.timestamp == want.timestamp, f"{where}: timestamp {rec.timestamp}"


@pytest.mark.parametrize("acks", ["0", "1", "all"])
def test_produce_with_acks_and_read_back(module_broker: Broker, topic: str, acks: str) -> None:
    sent = make_records(N, f"acks{acks}")
    reports = produce_all(producer(module_broker.bootstrap, acks=acks), topic, sent)
    if acks != "0":  # with acks=0 the broker sends no response, so no offsets are reported
        offsets = sorted(m.offset() for m in reports)
        assert offsets == list(range(N)), f"delivery offsets not 0..{N - 1}: {offsets[:10]}..."
    got = consume_range(module_broker.bootstrap, topic)
    assert_round_trip(got, sent)
    assert watermarks(module_broker.bootstrap, topic) == (0, N)


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compressed_batches_round_trip(module_broker: Broker, topic: str, codec: str) -> None:
    sent = make_records(N, codec)
    p = producer(module_broker.bootstrap, acks="all", **{"compression.type": codec})
    reports = produce_all(p, topic, sent)
    assert sorted(m.offset() for m in reports) == list(range(N))
    got = consume_range(module_broker.bootstrap, topic)
    assert_round_trip(got, sent)
    # A fetch that starts in the middle of a compressed batch must still begin at that offset.
    middle = consume_range(module_broker.bootstrap, topic, start=N // 2 + 3, count=5)
    assert [r.offset for r in middle] == list(range(N // 2 + 3, N // 2 + 8))
    assert [r.value for r in middle] == [s.value for s in sent[N // 2 + 3 : N // 2 + 8]]


def test_offsets_for_times_seeks_to_first_offset_at_or_after(
    module_broker: Broker, topic: str
) -> None:
    sent = make_records(N, "times")  # timestamps BASE_TS + 10 * offset
    produce_all(producer(module_broker.bootstrap, acks="all"), topic, sent)
    c = consumer(module_broker.bootstrap)
    try:
        cases = {
            BASE_TS - 5_000: 0,  # before everything: the first record
            BASE_TS: 0,
            BASE_TS + 10 * 777: 777,  # exact hit inside a batch
            BASE_TS + 10 * 1234 + 5: 1235,  # between two records: the later one
            BASE_TS + 10 * (N - 1): N - 1,
        }
        for ts, want in cases.items():
            [tp] = c.offsets_for_times([TopicPartition(topic, 0, ts)], timeout=10)
            assert tp.error is None, f"offsets_for_times({ts}) error: {tp.error}"
            assert tp.offset == want, f"offsets_for_times({ts}) = {tp.offset}, expected {want}"
        [tp] = c.offsets_for_times([TopicPartition(topic, 0, BASE_TS + 10 * N + 1)], timeout=10)
        assert tp.offset in (-1, N), f"timestamp after the last record gave offset {tp.offset}"
    finally:
        c.close()
    # Seek to a looked-up offset and consume from there.
    c = consumer(module_broker.bootstrap)
    try:
        [tp] = c.offsets_for_times([TopicPartition(topic, 0, BASE_TS + 10 * 1500)], timeout=10)
    finally:
        c.close()
    got = consume_range(module_broker.bootstrap, topic, start=tp.offset)
    assert_round_trip(got, sent[1500:], first_offset=1500)


def test_admin_create_topics_and_explicit_partitions(module_broker: Broker, topic: str) -> None:
    create_topic(module_broker.bootstrap, topic, partitions=3)
    meta = admin(module_broker.bootstrap).list_topics(timeout=10)
    assert topic in meta.topics, f"created topic missing from metadata: {sorted(meta.topics)}"
    tmeta = meta.topics[topic]
    assert tmeta.error is None, f"topic metadata error: {tmeta.error}"
    assert sorted(tmeta.partitions) == [0, 1, 2]
    broker_ids = set(meta.brokers)
    for pmeta in tmeta.partitions.values():
        assert pmeta.leader in broker_ids, f"partition {pmeta.id} leader {pmeta.leader} unknown"

    per_partition = {p: make_records(300 + 50 * p, f"p{p}", partition=p) for p in range(3)}
    reports = produce_all(
        producer(module_broker.bootstrap, acks="all"),
        topic,
        [rec for recs in per_partition.values() for rec in recs],
    )
    for p, sent in per_partition.items():
        offsets = sorted(m.offset() for m in reports if m.partition() == p)
        assert offsets == list(range(len(sent))), f"partition {p} delivery offsets {offsets[:5]}"
        assert watermarks(module_broker.bootstrap, topic, p) == (0, len(sent))
        assert_round_trip(consume_range(module_broker.bootstrap, topic, partition=p), sent)


def test_create_existing_topic_is_rejected(module_broker: Broker, topic: str) -> None:
    create_topic(module_broker.bootstrap, topic, partitions=2)
    client = admin(module_broker.bootstrap)
    futures = client.create_topics(
        [NewTopic(topic, num_partitions=2, replication_factor=1)], request_timeout=15
    )
    with pytest.raises(KafkaException) as info:
        futures[topic].result(timeout=30)
    assert info.value.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS, str(info.value)


def test_auto_created_topic_has_one_partition(module_broker: Broker, topic: str) -> None:
    produce_all(producer(module_broker.bootstrap), topic, make_records(3, "auto"))
    meta = admin(module_broker.bootstrap).list_topics(topic=topic, timeout=10)
    assert sorted(meta.topics[topic].partitions) == [0]
