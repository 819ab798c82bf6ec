"""__consumer_offsets record formats, the timers, and replay through real partition logs."""

from __future__ import annotations

import struct

from dari.storage import LogConfig, LogStore
from dari.streams.groups.coordinator import GroupCoordinator
from dari.streams.groups.messages import CommitOffset, CommitRequest, JoinRequest, SyncRequest
from dari.streams.groups.offsets import (
    GroupRecord,
    LoadedState,
    MemberRecord,
    OffsetAndMetadata,
    decode_group_value,
    decode_key,
    decode_offset_value,
    group_key,
    group_value,
    offset_key,
    offset_value,
)
from dari.streams.groups.offsets_log import OffsetsLog
from dari.streams.groups.timers import ManualClock, Timers
from dari.streams.topics import TopicManager


def test_offset_commit_key_and_value_match_kafka_layout():
    key = offset_key("grp", "orders", 7)
    assert key == struct.pack(">hh3sh6si", 1, 3, b"grp", 6, b"orders", 7)
    assert decode_key(key) == ("grp", "orders", 7)
    value = offset_value(OffsetAndMetadata(42, 5, "meta", 1_700_000_000_000))
    assert value == struct.pack(">hqih4sq", 3, 42, 5, 4, b"meta", 1_700_000_000_000)
    assert decode_offset_value(value) == OffsetAndMetadata(42, 5, "meta", 1_700_000_000_000)


def test_older_offset_value_versions_decode():
    v0 = struct.pack(">hqh2sq", 0, 9, 2, b"md", 123)
    assert decode_offset_value(v0) == OffsetAndMetadata(9, -1, "md", 123)
    v1 = struct.pack(">hqh0sqq", 1, 9, 0, b"", 123, 456)
    assert decode_offset_value(v1) == OffsetAndMetadata(9, -1, "", 123, 456)


def test_group_metadata_round_trip():
    assert group_key("grp") == struct.pack(">hh3s", 2, 3, b"grp")
    record = GroupRecord(
        "consumer",
        4,
        "range",
        "m-1",
        1_700_000_000_000,
        (
            MemberRecord("m-1", None, "c1", "/127.0.0.1", 300_000, 10_000, b"sub", b"asg"),
            MemberRecord("m-2", "inst-2", "c2", "/10.0.0.2", 60_000, 6_000, b"", b""),
        ),
    )
    assert decode_group_value(group_value(record)) == record
    assert decode_key(group_key("grp")) == "grp"


def test_loaded_state_last_record_wins_and_tombstones_delete():
    k = offset_key("g", "t", 0)
    records = [
        (k, offset_value(OffsetAndMetadata(1))),
        (k, offset_value(OffsetAndMetadata(2))),
        (offset_key("g", "t", 1), offset_value(OffsetAndMetadata(5))),
        (offset_key("g", "t", 1), None),
        (group_key("g"), group_value(GroupRecord("consumer", 1, None, None, 0))),
        (group_key("gone"), group_value(GroupRecord("consumer", 1, None, None, 0))),
        (group_key("gone"), None),
        (b"\x00\x09junk", b"x"),
    ]
    state = LoadedState().apply_all(records)
    assert state.offsets == {"g": {("t", 0): OffsetAndMetadata(2)}}
    assert set(state.groups) == {"g"}
    assert state.skipped == 1


def test_timers_fire_in_deadline_order_and_can_be_replaced():
    clock = ManualClock()
    timers = Timers(clock)
    fired: list[str] = []
    timers.schedule("a", 100, lambda: fired.append("a"))
    timers.schedule("b", 50, lambda: fired.append("b"))
    timers.schedule("a", 200, lambda: fired.append("a2"))  # replaces the first "a"
    timers.schedule("c", 10, lambda: fired.append("c"))
    timers.cancel("c")
    assert timers.next_deadline() == clock() + 50
    clock.advance(150)
    assert timers.run_due() == 1 and fired == ["b"]
    clock.advance(50)
    timers.run_due()
    assert fired == ["b", "a2"] and timers.next_deadline() is None


def test_commits_replay_from_real_partition_logs(tmp_path):
    """Records appended to __consumer_offsets rebuild the same coordinator after a restart."""
    clock = ManualClock()

    def open_log():
        store = LogStore(tmp_path)
        topics = TopicManager(store, LogConfig(), 1)
        topics.load()
        offsets_log = OffsetsLog(topics, 5, 1 << 20)
        offsets_log.ensure()
        return store, topics, offsets_log

    store, topics, offsets_log = open_log()
    topic = topics.get("__consumer_offsets")
    assert topic is not None and len(topic.partitions) == 5
    assert topic.configs["cleanup.policy"] == "compact"
    coordinator = GroupCoordinator(clock, offsets_partitions=5, initial_rebalance_delay_ms=0)
    join = coordinator.join(
        JoinRequest("g", "", "consumer", [("range", b"sub")], 10_000, 10_000, "inst")
    )
    offsets_log.append(join.records)
    clock.advance(0)
    offsets_log.append(coordinator.run_timers())
    member = join.response.value.member_id
    sync = coordinator.sync(SyncRequest("g", 1, member, {member: b"assignment"}))
    offsets_log.append(sync.records)
    for i in range(100):
        commit = CommitRequest("g", 1, member, [CommitOffset("t", i % 3, i)])
        offsets_log.append(coordinator.commit(commit).records)
    simple = CommitRequest("other", -1, "", [CommitOffset("t", 0, 9)])
    offsets_log.append(coordinator.commit(simple).records)
    topics.close()
    store.close()

    store, topics, offsets_log = open_log()
    state = offsets_log.load()
    rebuilt = GroupCoordinator(clock, offsets_partitions=5)
    rebuilt.restore(state)
    assert rebuilt.offsets == coordinator.offsets
    assert {o.offset for o in rebuilt.offsets["g"].values()} == {97, 98, 99}
    group = rebuilt.groups["g"]
    assert (group.state.value, group.generation, group.leader) == ("Stable", 1, member)
    assert group.members[member].assignment == b"assignment"
    assert group.static_members == {"inst": member}
    topics.close()
    store.close()
