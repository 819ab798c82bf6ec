"""The share-group coordinator over real topics and real state files: membership by heartbeat,
epochs, the simple assignor, session timeouts, share partitions and their offsets."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dari.config import DEFAULTS
from dari.records import build_batch
from dari.storage import LogConfig, LogStore
from dari.streams.errors import InvalidConfigError
from dari.streams.share.coordinator import HeartbeatRequest, ShareCoordinator, ShareGroupError
from dari.streams.share.group_configs import GroupConfigs, by_duration_ms
from dari.streams.share.partition import AcknowledgeType
from dari.streams.share.state_store import ShareStateStore
from dari.streams.topics import TopicManager

SESSION_MS = DEFAULTS["group.share.session.timeout.ms"]


class World:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = LogStore(root / "data")
        self.topics = TopicManager(self.store, LogConfig(retention_ms=-1))
        self.topics.load()
        self.open()

    def open(self) -> None:
        self.state = ShareStateStore(self.root / "share")
        self.configs = GroupConfigs(self.root / "group_configs.json", DEFAULTS)
        self.coordinator = ShareCoordinator(
            self.topics, self.state, self.configs, is_classic_group=lambda g: g == "classic"
        )
        self.coordinator.load()

    def reopen(self) -> None:
        self.state.close()
        self.open()

    def close(self) -> None:
        self.state.close()
        self.topics.close()
        self.store.close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.close()


def beat(
    coordinator: ShareCoordinator,
    member: str,
    epoch: int,
    topics: tuple[str, ...] | None = ("t",),
    group: str = "g",
    now: int = 0,
):
    return coordinator.heartbeat(
        HeartbeatRequest(group, member, epoch, None, topics, "client", "/127.0.0.1"), now
    )


def produce(world: World, topic: str, count: int) -> None:
    partition = world.topics.partition(topic, 0)
    for i in range(count):
        assert partition.append(build_batch([(None, str(i).encode())])).error is None


def test_members_join_and_every_member_gets_every_partition(world: World) -> None:
    topic = world.topics.create("t", 2)
    a = beat(world.coordinator, "a", 0)
    assert a.member_epoch == 1
    assert a.assignment == {topic.topic_id: (0, 1)}
    assert a.heartbeat_interval_ms == 5000
    b = beat(world.coordinator, "b", 0)
    assert b.member_epoch == 2
    assert b.assignment == {topic.topic_id: (0, 1)}
    steady = beat(world.coordinator, "a", 1, None)
    assert (steady.member_epoch, steady.assignment) == (1, None)
    group = world.coordinator.group("g")
    assert group is not None and group.state.value == "Stable"


def test_new_partitions_bump_the_member_epoch(world: World) -> None:
    world.topics.create("t", 1)
    beat(world.coordinator, "a", 0)
    world.topics.add_partitions("t", 3)
    again = beat(world.coordinator, "a", 1, None)
    assert again.member_epoch == 2
    assert again.assignment is not None and list(again.assignment.values()) == [(0, 1, 2)]
    # The previous epoch is still accepted (its answer may have been lost), older ones fenced.
    assert beat(world.coordinator, "a", 1, None).member_epoch == 2
    with pytest.raises(ShareGroupError) as fenced:
        beat(world.coordinator, "a", 7, None)
    assert fenced.value.code == "fenced_member_epoch"


def test_heartbeat_refusals(world: World) -> None:
    c = world.coordinator
    for member, epoch, topics, code in [
        ("", 0, ("t",), "invalid_request"),
        ("a", 0, None, "invalid_request"),
        ("a", -2, ("t",), "invalid_request"),
        ("a", 3, None, "unknown_member_id"),
        ("a", -1, None, "unknown_member_id"),
    ]:
        with pytest.raises(ShareGroupError) as refused:
            beat(c, member, epoch, topics)
        assert refused.value.code == code
    with pytest.raises(ShareGroupError) as classic:
        beat(c, "a", 0, group="classic")
    assert classic.value.code == "group_id_not_found"
    assert str(classic.value) == "Group classic is not a share group."


def test_a_timed_out_member_loses_its_records(world: World) -> None:
    topic = world.topics.create("t", 1)
    produce(world, "t", 5)
    world.configs.replace("g", {"share.auto.offset.reset": "earliest"}, False)
    beat(world.coordinator, "a", 0, now=0)
    share = world.coordinator.share_partition("g", topic, 0, 0)
    assert share.acquire("a", 5, 0, 5)
    assert world.coordinator.next_deadline_ms() == min(SESSION_MS, 30_000)
    world.coordinator.expire(SESSION_MS)
    assert world.coordinator.group("g").members == {}
    assert share.acquired == 0
    assert share.next_offset(5) == 0


def test_leave_keeps_the_records_for_the_final_acknowledgement(world: World) -> None:
    topic = world.topics.create("t", 1)
    produce(world, "t", 2)
    world.configs.replace("g", {"share.auto.offset.reset": "earliest"}, False)
    beat(world.coordinator, "a", 0)
    share = world.coordinator.share_partition("g", topic, 0, 0)
    share.acquire("a", 2, 0, 2)
    assert beat(world.coordinator, "a", -1, None).member_epoch == -1
    assert share.acknowledge("a", 0, 1, AcknowledgeType.ACCEPT) is None
    assert share.start_offset == 2


def test_the_start_offset_follows_share_auto_offset_reset(world: World) -> None:
    topic = world.topics.create("t", 1)
    produce(world, "t", 4)
    assert world.coordinator.share_partition("latest", topic, 0, 0).start_offset == 4
    world.configs.replace("early", {"share.auto.offset.reset": "earliest"}, False)
    assert world.coordinator.share_partition("early", topic, 0, 0).start_offset == 0
    world.configs.replace("dur", {"share.auto.offset.reset": "by_duration:PT1H"}, False)
    # Every record was written "now" (wall clock), within the last hour.
    now = int(time.time() * 1000)
    assert world.coordinator.share_partition("dur", topic, 0, now).start_offset == 0


def test_state_and_groups_survive_a_reopen(world: World) -> None:
    topic = world.topics.create("t", 1)
    produce(world, "t", 10)
    world.configs.replace("g", {"share.auto.offset.reset": "earliest"}, False)
    share = world.coordinator.share_partition("g", topic, 0, 0)
    share.acquire("a", 10, 0, 10)
    share.acknowledge("a", 0, 5, AcknowledgeType.ACCEPT)
    world.reopen()
    group = world.coordinator.group("g")
    assert group is not None and group.state.value == "Empty"
    again = world.coordinator.share_partition("g", topic, 0, 0)
    assert (again.start_offset, again.end_offset, again.acquired) == (6, 10, 0)


def test_delete_group_and_offsets(world: World) -> None:
    topic = world.topics.create("t", 1)
    produce(world, "t", 3)
    world.coordinator.share_partition("g", topic, 0, 0)
    beat(world.coordinator, "a", 0)
    assert world.coordinator.delete_group("g") == "non_empty_group"
    with pytest.raises(ShareGroupError):
        world.coordinator.reset_offset("g", topic, 0, 1)
    beat(world.coordinator, "a", -1, None)
    world.coordinator.reset_offset("g", topic, 0, 1)
    assert world.coordinator.start_offsets("g")[(topic.topic_id, 0)].start_offset == 1
    world.coordinator.delete_offsets("g", topic)
    assert world.coordinator.start_offsets("g") == {}
    assert world.coordinator.delete_group("g") is None
    assert world.coordinator.delete_group("g") == "group_id_not_found"
    world.reopen()
    assert world.coordinator.group("g") is None


def test_state_of_a_deleted_topic_is_dropped(world: World) -> None:
    topic = world.topics.create("t", 1)
    world.coordinator.share_partition("g", topic, 0, 0)
    world.state.flush_pending()
    world.topics.delete("t")
    world.coordinator.drop_unknown_topics()
    assert world.coordinator.start_offsets("g") == {}
    world.reopen()
    assert world.coordinator.start_offsets("g") == {}


def test_group_configs_are_checked_against_the_broker_bounds(world: World) -> None:
    configs = world.configs
    with pytest.raises(InvalidConfigError):
        configs.check("share.record.lock.duration.ms", "1000")
    with pytest.raises(InvalidConfigError):
        configs.check("share.auto.offset.reset", "sometimes")
    with pytest.raises(InvalidConfigError):
        configs.check("no.such.config", "1")
    assert configs.check("share.record.lock.duration.ms", "20000") == "20000"
    assert configs.value("g", "share.delivery.count.limit") == "5"
    configs.replace("g", {"share.delivery.count.limit": "3"}, False)
    assert GroupConfigs(configs.path, DEFAULTS).int_value("g", "share.delivery.count.limit") == 3
    assert by_duration_ms("by_duration:P1DT2H3M4.5S") == ((26 * 60 + 3) * 60 + 4.5) * 1000
    assert by_duration_ms("by_duration:P") is None
