"""TopicShareGroups: the share-group state AMQP queues over topics acquire from. Kafka's keyed
partitioner, AMQP locks that never lapse beside Kafka members' locks that do, releases
archived at the delivery limit, purge around held records, partitions added and topics
deleted and made again. Real topics and share journals in a temporary directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka.partitioner.default import murmur2 as kafka_python_murmur2

from dari.config import DEFAULTS
from dari.queues.errors import PreconditionFailed
from dari.records import build_batch
from dari.server.amqp_topic_queues import (
    AMQP_MEMBER,
    SharedTopicGroup,
    TopicShareGroups,
    murmur2,
    partition_for_key,
)
from dari.storage import LogConfig, LogStore
from dari.streams.share.coordinator import ShareCoordinator
from dari.streams.share.group_configs import GroupConfigs
from dari.streams.share.partition import RecordState
from dari.streams.share.state_store import ShareStateStore
from dari.streams.topics import TopicManager


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class Env:
    def __init__(self, data_dir: Path) -> None:
        self.store = LogStore(data_dir)
        self.topics = TopicManager(self.store, LogConfig(flush="os"))
        self.data_dir = data_dir
        self.clock = Clock()
        self.open_groups()

    def open_groups(self) -> None:
        self.shares = ShareStateStore(self.data_dir / ".meta" / "share")
        configs = GroupConfigs(self.data_dir / ".meta" / "group_configs.json", DEFAULTS)
        self.coordinator = ShareCoordinator(self.topics, self.shares, configs)
        self.coordinator.load()
        self.groups = TopicShareGroups(self.topics, self.coordinator, clock=self.clock)

    def open(self, topic: str = "t", limit: int | None = None) -> SharedTopicGroup:
        return self.groups.open(topic, "g", start="first", delivery_limit=limit)

    def produce(self, topic: str, count: int, partition: int = 0) -> None:
        values = [f"v{i}".encode() for i in range(count)]
        assert self.topics.partition(topic, partition).append(build_batch(values)).error is None

    def close(self) -> None:
        self.shares.close()
        self.topics.close()
        self.store.close()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path / "data")
    yield e
    e.close()


def test_murmur2_is_kafkas() -> None:
    for key in (b"", b"a", b"ab", b"abc", b"abcd", b"orders.eu", bytes(range(200))):
        assert murmur2(key) & 0xFFFFFFFF == kafka_python_murmur2(key)
    # Kafka's own UtilsTest vectors (signed, as Java has them)
    assert murmur2(b"21") == -973932308
    assert murmur2(b"foobar") == -790332482
    assert murmur2(b"a-little-bit-long-string") == -985981536
    assert murmur2(b"a-little-bit-longer-string") == -1486304829
    expected = (kafka_python_murmur2(b"orders.eu") & 0x7FFFFFFF) % 7
    assert partition_for_key(b"orders.eu", 7) == expected


def test_a_missing_topic_is_created_with_the_default_partitions(env: Env) -> None:
    group = env.open("fresh")
    assert env.topics.get("fresh") is not None and len(group.partitions) == 1


def test_amqp_locks_never_lapse_but_kafka_members_do(env: Env) -> None:
    group = env.open()
    env.produce("t", 10)
    (part,) = group.partitions
    kafka = part.share.acquire("kafka-member", 4, int(env.clock() * 1000), 10)
    assert [(r.first_offset, r.last_offset) for r in kafka] == [(0, 3)]
    mine = part.acquire(3)
    assert [(r.first_offset, r.last_offset, r.delivery_count) for r in mine] == [(4, 6, 1)]
    env.clock.now += 3600  # the Kafka member's 30 s lock lapsed long ago; ours holds
    env.coordinator.expire(int(env.clock() * 1000))  # the share service's sweep
    again = part.acquire(100)
    assert [(r.first_offset, r.last_offset, r.delivery_count) for r in again] == [
        (0, 3, 2), (7, 9, 1)
    ]
    assert part.share.state_of(5) == (RecordState.ACQUIRED, 1)
    assert part.available == 0


def test_delivery_limit_below_kafkas_bounds_is_refused(env: Env) -> None:
    with pytest.raises(PreconditionFailed, match=r"share\.delivery\.count\.limit"):
        env.open(limit=1)


def test_release_returns_what_the_delivery_limit_archived(env: Env) -> None:
    group = env.open(limit=2)
    env.produce("t", 3)
    (part,) = group.partitions
    assert len(part.acquire(3)) == 1
    assert part.release([0, 1, 2]) == []
    part.acquire(3)
    assert part.release([0, 2]) == [0, 2]  # second delivery: at the limit
    assert part.share.state_of(1) == (RecordState.ACQUIRED, 2)
    part.accept([1])
    assert part.available == 0 and part.share.start_offset == 3


def test_purge_leaves_held_records_outstanding(env: Env) -> None:
    group = env.open()
    env.produce("t", 10)
    (part,) = group.partitions
    part.acquire(2)
    assert part.purge() == 8
    assert part.available == 0
    assert part.share.state_of(1) == (RecordState.ACQUIRED, 1)
    part.accept([0, 1])
    assert part.share.start_offset == 10
    env.produce("t", 1)
    assert part.available == 1 and part.purge() == 1


def test_partitions_added_by_kafka_clients_are_worked_off(env: Env) -> None:
    group = env.open()
    assert len(group.partitions) == 1
    env.topics.add_partitions("t", 3)
    env.produce("t", 2, partition=2)
    assert [p.index for p in group.partitions] == [0, 1, 2]
    assert group.partitions[2].available == 2
    assert group.partition_for("k") is group.partitions[partition_for_key(b"k", 3)]


def test_a_deleted_topic_leaves_no_partitions_until_it_is_made_again(env: Env) -> None:
    group = env.open()
    env.produce("t", 5)
    (part,) = group.partitions
    part.acquire(5)
    part.accept([0, 1, 2, 3, 4])
    env.topics.delete("t")
    assert group.partitions == []
    env.topics.create("t", 2)
    env.produce("t", 3, partition=1)
    assert [p.available for p in group.partitions] == [0, 3]  # a new topic: from its start


def test_a_recovered_queue_waits_for_its_missing_topic(env: Env) -> None:
    group = env.groups.open("later", "g", start="first", delivery_limit=None, create=False)
    assert env.topics.get("later") is None and group.partitions == []
    env.topics.create("later", 1)
    assert len(group.partitions) == 1


def test_state_survives_reopening_the_store(env: Env, tmp_path: Path) -> None:
    group = env.open()
    env.produce("t", 6)
    (part,) = group.partitions
    part.acquire(6)
    part.accept([0, 1, 2])
    part.release([3])
    env.shares.close()
    env.open_groups()
    (part,) = env.open().partitions
    ranges = part.acquire(10)
    # the released record and those held when the store closed, each delivered once before
    assert [(r.first_offset, r.last_offset, r.delivery_count) for r in ranges] == [(3, 5, 2)]
    assert part.share.state_of(3) == (RecordState.ACQUIRED, 2)
    assert AMQP_MEMBER != ""
