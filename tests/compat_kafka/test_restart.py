"""A graceful stop and a restart on the same data dir lose nothing and continue the offsets."""

from __future__ import annotations

from broker import Broker

from .clients import (
    Sent,
    admin,
    consume_range,
    create_topic,
    produce_all,
    producer,
    watermarks,
)


def batch(start: int, n: int, tag: str, partition: int = 0) -> list[Sent]:
    return [
        Sent(
            key=f"{tag}-k{i}".encode(),
            value=f"{tag}-v{i}".encode() * (1 + i % 5),
            headers=(("i", str(i).encode()),),
            timestamp=1_600_000_000_000 + i,
            partition=partition,
        )
        for i in range(start, start + n)
    ]


def check(broker: Broker, topic: str, sent: list[Sent], partition: int = 0) -> None:
    got = consume_range(broker.bootstrap, topic, partition=partition)
    assert [r.offset for r in got] == list(range(len(sent))), "offsets not contiguous from 0"
    assert [(r.key, r.value, r.headers, r.timestamp) for r in got] == [
        (s.key, s.value, s.headers, s.timestamp) for s in sent
    ], "records read back differ from those produced"


def test_restart_keeps_data_and_continues_offsets(broker: Broker, topic: str) -> None:
    first = batch(0, 700, "before")
    reports = produce_all(producer(broker.bootstrap, acks="all"), topic, first)
    assert sorted(m.offset() for m in reports) == list(range(700))

    broker.terminate()
    broker.restart()

    assert watermarks(broker.bootstrap, topic) == (0, 700), "watermarks changed across restart"
    check(broker, topic, first)
    second = batch(700, 300, "after")
    reports = produce_all(producer(broker.bootstrap, acks="all"), topic, second)
    assert sorted(m.offset() for m in reports) == list(range(700, 1000)), (
        "offsets after restart must continue exactly where they stopped"
    )
    check(broker, topic, first + second)

    broker.terminate()  # a second cycle, on a log that now holds two sessions' segments
    broker.restart()
    third = batch(1000, 10, "again")
    reports = produce_all(producer(broker.bootstrap, acks="1"), topic, third)
    assert sorted(m.offset() for m in reports) == list(range(1000, 1010))
    check(broker, topic, first + second + third)


def test_restart_keeps_partition_count_and_per_partition_offsets(
    broker: Broker, topic: str
) -> None:
    create_topic(broker.bootstrap, topic, partitions=3)
    sent = {p: batch(0, 50 * (p + 1), f"p{p}", partition=p) for p in range(3)}
    produce_all(producer(broker.bootstrap), topic, [r for recs in sent.values() for r in recs])

    broker.terminate()
    broker.restart()

    meta = admin(broker.bootstrap).list_topics(topic=topic, timeout=10)
    assert sorted(meta.topics[topic].partitions) == [0, 1, 2], "partition count lost on restart"
    for p in range(3):
        more = batch(len(sent[p]), 5, f"p{p}-after", partition=p)
        reports = produce_all(producer(broker.bootstrap, acks="all"), topic, more)
        want = list(range(len(sent[p]), len(sent[p]) + 5))
        assert [m.offset() for m in reports] == want, f"partition {p} offsets after restart"
        check(broker, topic, sent[p] + more, partition=p)
