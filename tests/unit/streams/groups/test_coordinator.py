"""The group coordinator's rebalance protocol and offsets, driven with an injected clock."""

from __future__ import annotations

import pytest

from dari.streams.groups.coordinator import GroupCoordinator
from dari.streams.groups.messages import (
    CommitOffset,
    CommitRequest,
    GroupError,
    JoinRequest,
    JoinResult,
    SyncRequest,
    SyncResult,
)
from dari.streams.groups.offsets import LoadedState, java_string_hash, partition_for
from dari.streams.groups.timers import ManualClock

E = GroupError
SESSION = 10_000
REBALANCE = 30_000
DELAY = 3_000


def make(clock: ManualClock, **kwargs) -> GroupCoordinator:
    return GroupCoordinator(
        clock, offsets_partitions=50, initial_rebalance_delay_ms=DELAY, **kwargs
    )


def join_req(member_id: str = "", *, group: str = "g", meta: bytes = b"m", **kwargs) -> JoinRequest:
    base = dict(
        group_id=group,
        member_id=member_id,
        protocol_type="consumer",
        protocols=[("range", meta)],
        session_timeout_ms=SESSION,
        rebalance_timeout_ms=REBALANCE,
        client_id="c",
    )
    base.update(kwargs)
    return JoinRequest(**base)


class Harness:
    """A coordinator, its clock, and every record it asked to append (in order)."""

    def __init__(self, **kwargs) -> None:
        self.clock = ManualClock()
        self.coordinator = make(self.clock, **kwargs)
        self.records: list = []

    def call(self, outcome):
        self.records.extend(outcome.records)
        return outcome.response

    def advance(self, ms: int) -> None:
        self.clock.advance(ms)
        self.records.extend(self.coordinator.run_timers())

    def join(self, member_id: str = "", **kwargs):
        return self.call(self.coordinator.join(join_req(member_id, **kwargs)))

    def join_new(self, **kwargs):
        """KIP-394: the first join hands out a member id, the second one uses it."""
        first = self.join("", **kwargs).value
        assert first.error is E.MEMBER_ID_REQUIRED
        assert first.member_id.startswith("c-")
        return first.member_id, self.join(first.member_id, **kwargs)

    def sync(self, member_id: str, generation: int, assignments=None, group: str = "g", **kw):
        request = SyncRequest(group, generation, member_id, assignments or {}, **kw)
        return self.call(self.coordinator.sync(request))

    def heartbeat(self, member_id: str, generation: int, group: str = "g", instance=None):
        return self.call(self.coordinator.heartbeat(group, generation, member_id, instance))

    def state(self, group: str = "g") -> str:
        return self.coordinator.groups[group].state.value


def stable_group(h: Harness, count: int) -> tuple[list[str], JoinResult]:
    """Members joined and synced; returns their ids and the leader's join result."""
    ids, pending = [], []
    for _ in range(count):
        member_id, deferred = h.join_new()
        ids.append(member_id)
        pending.append(deferred)
    h.advance(DELAY)
    if count > 1:
        assert not pending[0].done, "members joined during the delay extend it once"
        h.advance(DELAY)
    results = [d.value for d in pending]
    assert all(r.error is E.NONE for r in results)
    leader = next(r for r in results if r.leader == r.member_id)
    generation = leader.generation
    syncs = [h.sync(m, generation) for m in ids if m != leader.member_id]
    assignments = {m: f"assign-{m}".encode() for m in ids}
    syncs.append(h.sync(leader.member_id, generation, assignments))
    assert all(s.value.error is E.NONE for s in syncs)
    return ids, leader


def test_join_sync_heartbeat_happy_path():
    h = Harness()
    member_a, join_a = h.join_new()
    member_b, join_b = h.join_new(meta=b"meta-b")
    assert not join_a.done and h.state() == "PreparingRebalance"
    h.advance(DELAY - 1)
    assert not join_a.done, "the initial rebalance delay holds the first join back"
    h.advance(1)
    assert not join_a.done, "b joined during the delay, so it is extended once"
    h.advance(DELAY)
    a, b = join_a.value, join_b.value
    assert (a.error, b.error) == (E.NONE, E.NONE)
    assert a.generation == b.generation == 1
    assert a.leader == b.leader == member_a
    assert a.protocol == "range"
    assert {(m.member_id, m.metadata) for m in a.members} == {
        (member_a, b"m"),
        (member_b, b"meta-b"),
    }
    assert b.members == ()  # only the leader sees the members
    assert h.state() == "CompletingRebalance"

    follower_sync = h.sync(member_b, 1)
    assert not follower_sync.done, "followers wait for the leader's assignment"
    leader_sync = h.sync(member_a, 1, {member_a: b"pa", member_b: b"pb"})
    assert leader_sync.value == SyncResult(E.NONE, b"pa", "consumer", "range")
    assert follower_sync.value.assignment == b"pb"
    assert h.state() == "Stable"
    assert h.heartbeat(member_a, 1) is E.NONE
    assert h.heartbeat(member_b, 0) is E.ILLEGAL_GENERATION
    assert h.heartbeat("nobody", 1) is E.UNKNOWN_MEMBER_ID
    # the group metadata record was written when the group became stable
    state = LoadedState().apply_all((k, v) for _, k, v in h.records)
    record = state.groups["g"]
    assert (record.generation, record.leader, record.protocol) == (1, member_a, "range")
    assert {m.member_id: m.assignment for m in record.members} == {member_a: b"pa", member_b: b"pb"}


def test_kip394_unknown_member_id_and_old_versions():
    h = Harness()
    first = h.join("").value
    assert first.error is E.MEMBER_ID_REQUIRED and first.member_id
    assert h.state() == "Empty"
    # the pending id expires if the client never comes back with it
    h.advance(SESSION)
    assert h.join(first.member_id).value.error is E.UNKNOWN_MEMBER_ID
    # JoinGroup v0-3 clients get a member id straight away
    deferred = h.join("", require_known_member_id=False)
    h.advance(DELAY)
    assert deferred.value.error is E.NONE and deferred.value.member_id.startswith("c-")


def test_invalid_join_requests():
    h = Harness()
    assert h.join("", group="").value.error is E.INVALID_GROUP_ID
    assert h.join("", session_timeout_ms=10).value.error is E.INVALID_SESSION_TIMEOUT
    _ids, _ = stable_group(h, 1)
    other = h.join("", protocol_type="connect").value
    assert other.error is E.INCONSISTENT_GROUP_PROTOCOL
    other = h.join("", protocols=[("roundrobin", b"")]).value
    assert other.error is E.INCONSISTENT_GROUP_PROTOCOL


def test_new_member_triggers_rebalance_and_heartbeats_say_so():
    h = Harness()
    (a,), leader = stable_group(h, 1)
    _b, join_b = h.join_new()
    assert h.state() == "PreparingRebalance"
    assert h.heartbeat(a, leader.generation) is E.REBALANCE_IN_PROGRESS
    assert not join_b.done
    join_a = h.join(a)  # the existing member rejoins: everyone is in, no waiting
    assert join_a.value.generation == join_b.value.generation == leader.generation + 1
    assert h.state() == "CompletingRebalance"
    # a heartbeat of the old generation is now illegal
    assert h.heartbeat(a, leader.generation) is E.ILLEGAL_GENERATION


def test_protocol_selection_prefers_common_protocol():
    h = Harness()
    _, d1 = h.join_new(protocols=[("cooperative-sticky", b"1"), ("range", b"1r")])
    _, d2 = h.join_new(protocols=[("range", b"2r"), ("cooperative-sticky", b"2")])
    _, d3 = h.join_new(protocols=[("cooperative-sticky", b"3"), ("roundrobin", b"3rr")])
    h.advance(DELAY)
    h.advance(DELAY)
    assert d1.value.protocol == d2.value.protocol == d3.value.protocol == "cooperative-sticky"
    leader = next(d.value for d in (d1, d2, d3) if d.value.members)
    assert sorted(m.metadata for m in leader.members) == [b"1", b"2", b"3"]


def test_session_expiry_removes_member_and_rebalances():
    h = Harness()
    (a, b), leader = stable_group(h, 2)
    generation = leader.generation
    answers = []
    for _ in range(3):  # a keeps heartbeating, b went silent
        h.advance(SESSION // 2)
        answers.append(h.heartbeat(a, generation))
    assert answers == [E.NONE, E.REBALANCE_IN_PROGRESS, E.REBALANCE_IN_PROGRESS]
    assert h.state() == "PreparingRebalance", "b's session expired"
    assert b not in h.coordinator.groups["g"].members
    rejoin = h.join(a)
    assert rejoin.value.error is E.NONE and rejoin.value.generation == generation + 1
    assert [m.member_id for m in rejoin.value.members] == [a]


def test_rebalance_timeout_evicts_members_that_do_not_rejoin():
    h = Harness()
    (a, b, c), leader = stable_group(h, 3)
    _, join_d = h.join_new()
    join_a = h.join(a)
    # b and c keep heartbeating (so their sessions stay alive) but never rejoin
    for _ in range(REBALANCE // 5_000):
        h.advance(5_000)
        for m in (b, c):
            h.heartbeat(m, leader.generation)
    assert join_a.done and join_d.done
    assert join_a.value.generation == leader.generation + 1
    assert set(h.coordinator.groups["g"].members) == {a, join_d.value.member_id}
    assert h.heartbeat(b, leader.generation) is E.UNKNOWN_MEMBER_ID


def test_members_that_never_sync_are_removed():
    h = Harness()
    (a, b), _leader = stable_group(h, 2)
    join_a, join_b = h.join(a), h.join(b)
    generation = join_a.value.generation
    leader_id = join_a.value.leader
    follower = b if leader_id == a else a
    h.sync(leader_id, generation, {a: b"x", b: b"y"})
    for _ in range(REBALANCE // 5_000):  # both stay alive, but the follower never syncs
        h.advance(5_000)
        for m in (a, b):
            h.heartbeat(m, generation)
    assert follower not in h.coordinator.groups["g"].members
    assert h.state() == "PreparingRebalance"
    assert join_b.done


def test_leave_group_batched_and_unknown():
    h = Harness()
    (a, b, c), _leader = stable_group(h, 3)
    result = h.call(h.coordinator.leave("g", [(a, None), ("ghost", None)]))
    assert result.error is E.NONE
    assert [e for _, _, e in result.members] == [E.NONE, E.UNKNOWN_MEMBER_ID]
    assert h.state() == "PreparingRebalance"
    join_b = h.join(b)
    assert not join_b.done
    result = h.call(h.coordinator.leave("g", [(c, None)]))
    assert join_b.value.error is E.NONE  # c left: everyone remaining has joined
    assert [m.member_id for m in join_b.value.members] == [b]
    missing = h.call(h.coordinator.leave("nope", [(a, None)]))
    assert missing.members[0][2] is E.UNKNOWN_MEMBER_ID


def test_last_member_leaving_empties_group():
    h = Harness()
    (a,), leader = stable_group(h, 1)
    h.call(h.coordinator.leave("g", [(a, None)]))
    h.advance(REBALANCE)
    group = h.coordinator.groups["g"]
    assert group.state.value == "Empty" and group.generation == leader.generation + 1


def test_static_member_rejoins_without_rebalance_and_fences_old_id():
    h = Harness()
    ja = h.join("", group_instance_id="i-a")
    jb = h.join("", group_instance_id="i-b", meta=b"b")
    h.advance(DELAY)
    h.advance(DELAY)
    a, b = ja.value, jb.value
    assert a.error is E.NONE and b.error is E.NONE, "static members skip MEMBER_ID_REQUIRED"
    leader = a if a.leader == a.member_id else b
    follower = b if leader is a else a
    h.sync(follower.member_id, 1)
    h.sync(leader.member_id, 1, {a.member_id: b"pa", b.member_id: b"pb"})
    assert h.state() == "Stable"
    # the follower restarts: same instance id, same metadata, no member id
    meta = b"b" if follower is b else b"m"
    instance = "i-b" if follower is b else "i-a"
    again = h.join("", group_instance_id=instance, meta=meta).value
    assert again.error is E.NONE
    assert again.member_id != follower.member_id
    assert again.generation == 1 and h.state() == "Stable", "no rebalance"
    synced = h.sync(again.member_id, 1, group_instance_id=instance).value
    assert synced.assignment == (b"pb" if follower is b else b"pa")
    assert h.heartbeat(follower.member_id, 1, instance=instance) is E.FENCED_INSTANCE_ID
    # changed metadata does rebalance
    h.join("", group_instance_id=instance, meta=b"changed")
    assert h.state() == "PreparingRebalance"


def test_static_leader_rejoin_old_client_acts_as_follower():
    h = Harness()
    ja = h.join("", group_instance_id="i-a")
    h.advance(DELAY)
    a = ja.value
    h.sync(a.member_id, 1, {a.member_id: b"pa"})
    again = h.join("", group_instance_id="i-a").value
    assert again.error is E.NONE and again.leader != again.member_id
    assert h.sync(again.member_id, 1).value.assignment == b"pa"
    v9 = h.join("", group_instance_id="i-a", supports_skip_assignment=True).value
    assert v9.leader == v9.member_id and v9.skip_assignment and len(v9.members) == 1


def test_commit_and_fetch_offsets_for_members_and_simple_consumers():
    h = Harness()
    (a,), leader = stable_group(h, 1)
    commit = CommitRequest("g", leader.generation, a, [CommitOffset("t", 0, 42, 3, "meta")])
    assert h.call(h.coordinator.commit(commit)) == {("t", 0): E.NONE}
    stale = CommitRequest("g", leader.generation - 1, a, [CommitOffset("t", 0, 1)])
    assert h.call(h.coordinator.commit(stale)) == {("t", 0): E.ILLEGAL_GENERATION}
    outsider = CommitRequest("g", -1, "", [CommitOffset("t", 0, 1)])
    assert h.call(h.coordinator.commit(outsider)) == {("t", 0): E.UNKNOWN_MEMBER_ID}
    fetched = h.call(h.coordinator.fetch_offsets("g", [("t", [0, 1])]))
    assert [(f.partition, f.offset, f.leader_epoch, f.metadata) for f in fetched] == [
        (0, 42, 3, "meta"),
        (1, -1, -1, ""),
    ]
    # assign() + commit with a group id and no membership creates an Empty group
    simple = CommitRequest("simple", -1, "", [CommitOffset("t", 2, 7)])
    assert h.call(h.coordinator.commit(simple)) == {("t", 2): E.NONE}
    assert h.state("simple") == "Empty"
    assert [f.offset for f in h.call(h.coordinator.fetch_offsets("simple", None))] == [7]
    unknown = CommitRequest("fresh", 5, "m", [CommitOffset("t", 0, 1)])
    assert h.call(h.coordinator.commit(unknown)) == {("t", 0): E.ILLEGAL_GENERATION}


def test_commit_rules_during_rebalance():
    h = Harness(max_metadata_bytes=10)
    (a, b), leader = stable_group(h, 2)
    gen = leader.generation
    h.join_new()  # PreparingRebalance: the current generation may still commit
    ok = CommitRequest(
        "g", gen, a, [CommitOffset("t", 0, 5), CommitOffset("t", 1, 6, -1, "x" * 11)]
    )
    assert h.call(h.coordinator.commit(ok)) == {
        ("t", 0): E.NONE,
        ("t", 1): E.OFFSET_METADATA_TOO_LARGE,
    }
    h.join(a), h.join(b)
    assert h.state() == "CompletingRebalance"
    late = CommitRequest("g", gen + 1, a, [CommitOffset("t", 0, 9)])
    assert h.call(h.coordinator.commit(late)) == {("t", 0): E.REBALANCE_IN_PROGRESS}


def test_unknown_partitions_are_refused():
    h = Harness(partition_exists=lambda topic, partition: topic == "t" and partition < 2)
    commit = CommitRequest("s", -1, "", [CommitOffset("t", 1, 5), CommitOffset("t", 2, 5)])
    assert h.call(h.coordinator.commit(commit)) == {
        ("t", 1): E.NONE,
        ("t", 2): E.UNKNOWN_TOPIC_OR_PARTITION,
    }


def test_describe_list_delete_groups():
    h = Harness()
    (a, b), _ = stable_group(h, 2)
    h.call(h.coordinator.commit(CommitRequest("simple", -1, "", [CommitOffset("t", 0, 1)])))
    (described, missing) = h.call(h.coordinator.describe(["g", "missing"]))
    assert (described.state, described.protocol_type, described.protocol) == (
        "Stable",
        "consumer",
        "range",
    )
    assert {m.member_id: m.assignment for m in described.members} == {
        a: f"assign-{a}".encode(),
        b: f"assign-{b}".encode(),
    }
    assert (missing.error, missing.state) == (E.NONE, "Dead")
    listed = h.call(h.coordinator.list_groups())
    assert {(g.group_id, g.state) for g in listed} == {("g", "Stable"), ("simple", "Empty")}
    assert [g.group_id for g in h.call(h.coordinator.list_groups(["empty"]))] == ["simple"]
    assert h.call(h.coordinator.list_groups((), ["consumer"])) == []
    deleted = h.call(h.coordinator.delete_groups(["g", "simple", "missing"]))
    assert deleted == {
        "g": E.NON_EMPTY_GROUP,
        "simple": E.NONE,
        "missing": E.GROUP_ID_NOT_FOUND,
    }
    assert "simple" not in h.coordinator.groups
    state = LoadedState().apply_all((k, v) for _, k, v in h.records)
    assert "simple" not in state.offsets


def test_offset_delete_respects_subscriptions():
    h = Harness()
    subscription = (
        (0).to_bytes(2, "big")
        + (1).to_bytes(4, "big")
        + (1).to_bytes(2, "big")
        + b"t"
        + (0).to_bytes(4, "big", signed=True)
    )
    _, d = h.join_new(meta=subscription)
    h.advance(DELAY)
    member = d.value.member_id
    h.sync(member, 1, {member: b""})
    commits = [CommitOffset("t", 0, 1), CommitOffset("other", 0, 2)]
    h.call(h.coordinator.commit(CommitRequest("g", 1, member, commits)))
    error, results = h.call(h.coordinator.delete_offsets("g", [("t", 0), ("other", 0)]))
    assert error is E.NONE
    assert results == {("t", 0): E.GROUP_SUBSCRIBED_TO_TOPIC, ("other", 0): E.NONE}
    assert [f.topic for f in h.call(h.coordinator.fetch_offsets("g", None))] == ["t"]
    assert h.call(h.coordinator.delete_offsets("none", []))[0] is E.GROUP_ID_NOT_FOUND


def test_offsets_of_empty_groups_expire():
    h = Harness(offsets_retention_ms=60_000)
    h.call(h.coordinator.commit(CommitRequest("s", -1, "", [CommitOffset("t", 0, 1)])))
    h.clock.advance(59_999)
    assert h.coordinator.expire_offsets() == []
    h.clock.advance(1)
    records = h.coordinator.expire_offsets()
    assert [value for _, _, value in records] == [None, None]  # offset and group tombstones
    assert "s" not in h.coordinator.groups


def test_replay_rebuilds_identical_state():
    h = Harness()
    (a, _b), leader = stable_group(h, 2)
    commits = [CommitOffset("t", p, 100 + p, 0, f"m{p}") for p in range(3)]
    h.call(h.coordinator.commit(CommitRequest("g", leader.generation, a, commits)))
    h.call(
        h.coordinator.commit(CommitRequest("g", leader.generation, a, [CommitOffset("t", 0, 7)]))
    )
    h.call(h.coordinator.commit(CommitRequest("s", -1, "", [CommitOffset("u", 0, 1)])))
    h.call(h.coordinator.commit(CommitRequest("gone", -1, "", [CommitOffset("u", 0, 1)])))
    h.call(h.coordinator.delete_groups(["gone"]))
    assert all(0 <= partition < 50 for partition, _, _ in h.records)

    rebuilt = make(h.clock)
    rebuilt.restore(LoadedState().apply_all((k, v) for _, k, v in h.records))

    def snapshot(c: GroupCoordinator):
        groups = {
            gid: (g.state.value, g.generation, g.protocol, g.leader, g.to_record().members)
            for gid, g in c.groups.items()
        }
        return groups, c.offsets

    assert snapshot(rebuilt) == snapshot(h.coordinator)
    assert rebuilt.offsets["g"][("t", 0)].offset == 7
    # members of the rebuilt group keep their generation and can heartbeat at once
    assert rebuilt.heartbeat("g", leader.generation, a).response is E.NONE
    # members that do not come back expire and the group rebalances
    h.clock.advance(SESSION)
    rebuilt.run_timers()
    assert rebuilt.groups["g"].state.value in ("PreparingRebalance", "Empty")


@pytest.mark.parametrize(
    ("text", "java_hash"),
    [("", 0), ("abc", 96354), ("hello", 99162322), ("Hello World", -862545276)],
)
def test_java_string_hash(text, java_hash):
    assert java_string_hash(text) == java_hash


def test_partition_for_uses_utils_abs():
    # "Hello World" hashes negative: Kafka masks the sign bit instead of negating
    assert partition_for("Hello World", 50) == (-862545276 & 0x7FFFFFFF) % 50
    assert partition_for("abc", 50) == 96354 % 50
    # characters outside the BMP count as two UTF-16 units, as in Java
    assert java_string_hash("\U0001f600") == (0xD83D * 31 + 0xDE00)
