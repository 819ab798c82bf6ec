"""The group coordinator: Kafka's classic rebalance protocol and committed offsets.

Each call takes a plain request and returns an ``Outcome``: the answer (a ``Deferred`` for
JoinGroup/SyncGroup, which wait for the other members) and the ``__consumer_offsets`` records
the caller must append. Timeouts (sessions, rebalances, the initial join delay, members that
never sync) live in ``Timers`` under an injected clock; the caller fires them with
``run_timers`` and appends what they return. The state is rebuilt at start by ``restore``
from the records, so everything that must survive a restart goes through a record.

Owned by the event loop thread; not thread-safe.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable

from dari.streams.groups.group import Group, GroupState, Member
from dari.streams.groups.messages import (
    CommitRequest,
    Deferred,
    DescribedGroup,
    DescribedMember,
    FetchedOffset,
    GroupError,
    JoinMember,
    JoinRequest,
    JoinResult,
    LeaveResult,
    ListedGroup,
    OffsetsRecord,
    Outcome,
    SyncRequest,
    SyncResult,
)
from dari.streams.groups.offsets import (
    LoadedState,
    OffsetAndMetadata,
    group_key,
    group_value,
    offset_key,
    offset_value,
    partition_for,
)
from dari.streams.groups.timers import Clock, Timers

log = logging.getLogger(__name__)

E = GroupError
EMPTY, PREPARING, COMPLETING, STABLE, DEAD = (
    GroupState.EMPTY,
    GroupState.PREPARING_REBALANCE,
    GroupState.COMPLETING_REBALANCE,
    GroupState.STABLE,
    GroupState.DEAD,
)
CLASSIC = "classic"


class GroupCoordinator:
    """Every consumer group of this broker (a single node coordinates them all)."""

    def __init__(
        self,
        clock: Clock,
        *,
        offsets_partitions: int = 50,
        initial_rebalance_delay_ms: int = 3000,
        min_session_timeout_ms: int = 6000,
        max_session_timeout_ms: int = 1_800_000,
        offsets_retention_ms: int = 7 * 24 * 3600 * 1000,
        max_metadata_bytes: int = 4096,
        partition_exists: Callable[[str, int], bool] | None = None,
    ) -> None:
        self.clock = clock
        self.timers = Timers(clock)
        self.offsets_partitions = offsets_partitions
        self.initial_rebalance_delay_ms = initial_rebalance_delay_ms
        self.min_session_timeout_ms = min_session_timeout_ms
        self.max_session_timeout_ms = max_session_timeout_ms
        self.offsets_retention_ms = offsets_retention_ms
        self.max_metadata_bytes = max_metadata_bytes
        self.partition_exists = partition_exists or (lambda _topic, _partition: True)
        self.groups: dict[str, Group] = {}
        self.offsets: dict[str, dict[tuple[str, int], OffsetAndMetadata]] = {}
        self._outbox: list[OffsetsRecord] = []

    # -- plumbing --------------------------------------------------------------------------
    def _done(self, response: object) -> Outcome:
        records, self._outbox = self._outbox, []
        return Outcome(response, records)

    def run_timers(self) -> list[OffsetsRecord]:
        """Fire due timers; returns the records their consequences produced."""
        self.timers.run_due()
        records, self._outbox = self._outbox, []
        return records

    def partition_for(self, group_id: str) -> int:
        return partition_for(group_id, self.offsets_partitions)

    def _write_group(self, group: Group, tombstone: bool = False) -> None:
        value = None if tombstone else group_value(group.to_record())
        self._outbox.append((self.partition_for(group.group_id), group_key(group.group_id), value))

    def _write_offset(
        self, group_id: str, topic: str, partition: int, value: OffsetAndMetadata | None
    ) -> None:
        encoded = None if value is None else offset_value(value)
        key = offset_key(group_id, topic, partition)
        self._outbox.append((self.partition_for(group_id), key, encoded))

    def _timer(
        self, kind: str, group: Group, action: Callable[[], None], delay: int, member_id: str = ""
    ) -> None:
        """Schedule ``action`` unless the group has been replaced by then."""

        def fire() -> None:
            if self.groups.get(group.group_id) is group:
                action()

        self.timers.schedule((kind, group.group_id, member_id), delay, fire)

    def _cancel(self, kind: str, group: Group, member_id: str = "") -> None:
        self.timers.cancel((kind, group.group_id, member_id))

    # -- JoinGroup -------------------------------------------------------------------------
    def join(self, req: JoinRequest) -> Outcome[Deferred[JoinResult]]:
        answer: Deferred[JoinResult] = Deferred()
        error = self._check_join(req)
        if error is not None:
            answer.complete(JoinResult(error, member_id=req.member_id))
            return self._done(answer)
        group = self.groups.get(req.group_id)
        if group is None:
            if req.member_id:
                answer.complete(JoinResult(E.UNKNOWN_MEMBER_ID, member_id=req.member_id))
                return self._done(answer)
            group = self.groups[req.group_id] = Group(req.group_id, state_timestamp=self.clock())
        if group.is_(DEAD):
            answer.complete(JoinResult(E.COORDINATOR_NOT_AVAILABLE, member_id=req.member_id))
        elif not req.member_id:
            self._join_new_member(group, req, answer)
        else:
            self._join_known_member(group, req, answer)
        return self._done(answer)

    def _check_join(self, req: JoinRequest) -> GroupError | None:
        if not req.group_id:
            return E.INVALID_GROUP_ID
        if (
            not self.min_session_timeout_ms
            <= req.session_timeout_ms
            <= (self.max_session_timeout_ms)
        ):
            return E.INVALID_SESSION_TIMEOUT
        return None

    def _join_new_member(self, group: Group, req: JoinRequest, answer: Deferred) -> None:
        if not group.supports(req.protocol_type, req.protocols):
            answer.complete(JoinResult(E.INCONSISTENT_GROUP_PROTOCOL))
            return
        prefix = req.group_instance_id or req.client_id
        new_id = f"{prefix}-{uuid.uuid4()}"
        instance = req.group_instance_id
        if instance is not None:
            old_id = group.static_members.get(instance)
            if old_id is not None and old_id in group.members:
                self._replace_static_member(group, old_id, new_id, req, answer)
            else:
                self._add_member_and_rebalance(group, new_id, req, answer)
        elif req.require_known_member_id:
            group.pending_members.add(new_id)
            self._timer(
                "pending",
                group,
                lambda: self._expire_pending(group, new_id),
                req.session_timeout_ms,
                new_id,
            )
            answer.complete(JoinResult(E.MEMBER_ID_REQUIRED, member_id=new_id))
        else:
            self._add_member_and_rebalance(group, new_id, req, answer)

    def _join_known_member(self, group: Group, req: JoinRequest, answer: Deferred) -> None:
        member_id = req.member_id
        if not group.supports(req.protocol_type, req.protocols):
            answer.complete(JoinResult(E.INCONSISTENT_GROUP_PROTOCOL, member_id=member_id))
            return
        if member_id in group.pending_members:
            group.pending_members.discard(member_id)
            self._cancel("pending", group, member_id)
            self._add_member_and_rebalance(group, member_id, req, answer)
            return
        if group.is_static_member_fenced(req.group_instance_id, member_id):
            answer.complete(JoinResult(E.FENCED_INSTANCE_ID, member_id=member_id))
            return
        member = group.members.get(member_id)
        if member is None or group.is_(EMPTY):
            answer.complete(JoinResult(E.UNKNOWN_MEMBER_ID, member_id=member_id))
            return
        if group.is_(PREPARING):
            self._update_member_and_rebalance(group, member, req, answer)
        elif group.is_(COMPLETING):
            if member.matches(req.protocols):
                answer.complete(self._join_result(group, member_id))  # a retried join
            else:
                self._update_member_and_rebalance(group, member, req, answer)
        elif group.is_(STABLE):
            if member_id == group.leader or not member.matches(req.protocols):
                self._update_member_and_rebalance(group, member, req, answer)
            else:
                self._schedule_heartbeat(group, member)
                answer.complete(self._join_result(group, member_id))

    def _join_result(self, group: Group, member_id: str) -> JoinResult:
        members: tuple[JoinMember, ...] = ()
        if member_id == group.leader and group.protocol is not None:
            members = tuple(
                JoinMember(m.member_id, m.group_instance_id, m.metadata_for(group.protocol))
                for m in group.members.values()
            )
        return JoinResult(
            E.NONE,
            member_id=member_id,
            generation=group.generation,
            protocol_type=group.protocol_type,
            protocol=group.protocol,
            leader=group.leader or "",
            members=members,
        )

    def _add_member_and_rebalance(
        self, group: Group, member_id: str, req: JoinRequest, answer: Deferred
    ) -> None:
        member = Member(
            member_id=member_id,
            group_instance_id=req.group_instance_id,
            client_id=req.client_id,
            client_host=req.client_host,
            rebalance_timeout_ms=req.rebalance_timeout_ms,
            session_timeout_ms=req.session_timeout_ms,
            protocol_type=req.protocol_type,
            protocols=list(req.protocols),
            join_callback=answer.complete,
            is_new=True,
        )
        if group.is_(PREPARING) and group.initial_join:
            group.new_member_added = True
        group.add(member)
        self._maybe_prepare_rebalance(group, f"member {member_id} joined")

    def _update_member_and_rebalance(
        self, group: Group, member: Member, req: JoinRequest, answer: Deferred
    ) -> None:
        member.protocols = list(req.protocols)
        member.rebalance_timeout_ms = req.rebalance_timeout_ms
        member.session_timeout_ms = req.session_timeout_ms
        if member.join_callback is not None:  # a join still waiting on an older connection
            member.join_callback(JoinResult(E.REBALANCE_IN_PROGRESS, member_id=member.member_id))
        member.join_callback = answer.complete
        self._maybe_prepare_rebalance(group, f"member {member.member_id} rejoined")

    def _replace_static_member(
        self, group: Group, old_id: str, new_id: str, req: JoinRequest, answer: Deferred
    ) -> None:
        """A static member came back (e.g. restarted) under a new member id: it takes over the
        old member's place; Stable groups keep their assignment when nothing changed."""
        old = group.members[old_id]
        self._cancel("hb", group, old_id)
        if old.join_callback is not None:
            old.join_callback(JoinResult(E.FENCED_INSTANCE_ID, member_id=old_id))
            old.join_callback = None
        if old.sync_callback is not None:
            old.sync_callback(SyncResult(E.FENCED_INSTANCE_ID))
            old.sync_callback = None
        previous_leader = group.leader
        unchanged = group.protocol is not None and old.matches(req.protocols)
        member = group.replace_static_member(req.group_instance_id or "", old_id, new_id)
        member.client_id, member.client_host = req.client_id, req.client_host
        member.rebalance_timeout_ms = req.rebalance_timeout_ms
        member.session_timeout_ms = req.session_timeout_ms
        member.protocols = list(req.protocols)
        if group.is_(STABLE) and unchanged and group.select_protocol() == group.protocol:
            self._write_group(group)
            self._schedule_heartbeat(group, member)
            is_leader = group.leader == new_id
            result = self._join_result(group, new_id)
            if is_leader and req.supports_skip_assignment:
                result = JoinResult(
                    E.NONE,
                    new_id,
                    result.generation,
                    result.protocol_type,
                    result.protocol,
                    new_id,
                    result.members,
                    skip_assignment=True,
                )
            else:
                # Older clients would recompute an assignment a Stable group never hands out:
                # name the previous leader id so this member simply syncs as a follower.
                leader = previous_leader if is_leader else (group.leader or "")
                result = JoinResult(
                    E.NONE,
                    new_id,
                    result.generation,
                    result.protocol_type,
                    result.protocol,
                    leader or "",
                )
            answer.complete(result)
            return
        member.join_callback = answer.complete
        if group.is_(STABLE, COMPLETING):
            self._maybe_prepare_rebalance(group, f"static member {new_id} rejoined changed")
        else:
            self._try_complete_join(group)

    # -- rebalancing -----------------------------------------------------------------------
    def _maybe_prepare_rebalance(self, group: Group, reason: str) -> None:
        if group.is_(STABLE, COMPLETING, EMPTY):
            self._prepare_rebalance(group, reason)
        elif group.is_(PREPARING):
            self._try_complete_join(group)

    def _prepare_rebalance(self, group: Group, reason: str) -> None:
        if group.is_(COMPLETING):
            for member in group.members.values():
                member.assignment = b""
                if member.sync_callback is not None:
                    callback, member.sync_callback = member.sync_callback, None
                    callback(SyncResult(E.REBALANCE_IN_PROGRESS))
        self._cancel("sync", group)
        group.pending_sync.clear()
        rebalance_timeout = group.max_rebalance_timeout_ms()
        if group.is_(EMPTY):
            delay = min(self.initial_rebalance_delay_ms, rebalance_timeout)
            group.initial_join, group.new_member_added = True, False
            remaining = max(rebalance_timeout - delay, 0)
            self._timer("join", group, lambda: self._initial_join_expired(group, remaining), delay)
        else:
            group.initial_join = False
            self._timer("join", group, lambda: self._complete_join(group), rebalance_timeout)
        log.info(
            "group %s: preparing to rebalance (generation %d): %s",
            group.group_id,
            group.generation,
            reason,
        )
        group.transition(PREPARING, self.clock())
        self._try_complete_join(group)

    def _initial_join_expired(self, group: Group, remaining: int) -> None:
        if group.new_member_added and remaining > 0:
            group.new_member_added = False
            delay = min(self.initial_rebalance_delay_ms, remaining)
            rest = max(remaining - delay, 0)
            self._timer("join", group, lambda: self._initial_join_expired(group, rest), delay)
            return
        self._complete_join(group)

    def _try_complete_join(self, group: Group) -> None:
        if group.is_(PREPARING) and not group.initial_join and group.all_members_joined():
            self._cancel("join", group)
            self._complete_join(group)

    def _complete_join(self, group: Group) -> None:
        if not group.is_(PREPARING):
            return
        self._cancel("join", group)
        group.initial_join = False
        for member in [m for m in group.members.values() if not m.awaiting_join]:
            log.info(
                "group %s: removing member %s, it did not rejoin in time",
                group.group_id,
                member.member_id,
            )
            self._cancel("hb", group, member.member_id)
            group.remove(member.member_id)
        if group.leader is not None and group.leader not in group.members:
            group.leader = next(iter(group.members), None)
        group.generation += 1
        now = self.clock()
        if not group.members:
            group.protocol = None
            group.transition(EMPTY, now)
            self._write_group(group)
            log.info("group %s is empty at generation %d", group.group_id, group.generation)
            return
        group.protocol = group.select_protocol()
        group.transition(COMPLETING, now)
        group.pending_sync = set(group.members)
        generation = group.generation
        self._timer(
            "sync",
            group,
            lambda: self._expire_pending_sync(group, generation),
            group.max_rebalance_timeout_ms(),
        )
        log.info(
            "group %s: generation %d with %d members, protocol %s",
            group.group_id,
            generation,
            len(group.members),
            group.protocol,
        )
        for member in list(group.members.values()):
            callback, member.join_callback = member.join_callback, None
            member.is_new = False
            self._schedule_heartbeat(group, member)
            if callback is not None:
                callback(self._join_result(group, member.member_id))

    def _expire_pending_sync(self, group: Group, generation: int) -> None:
        if group.generation != generation or not group.is_(COMPLETING, STABLE):
            return
        laggards = [group.members[m] for m in list(group.pending_sync) if m in group.members]
        group.pending_sync.clear()
        if not laggards:
            return
        for member in laggards:
            log.info(
                "group %s: removing member %s, it did not sync in time",
                group.group_id,
                member.member_id,
            )
            self._cancel("hb", group, member.member_id)
            group.remove(member.member_id)
        self._maybe_prepare_rebalance(group, "members did not sync in time")

    def _expire_pending(self, group: Group, member_id: str) -> None:
        if member_id in group.pending_members:
            group.pending_members.discard(member_id)
            self._try_complete_join(group)

    # -- liveness --------------------------------------------------------------------------
    def _schedule_heartbeat(self, group: Group, member: Member) -> None:
        member_id = member.member_id
        self._timer(
            "hb",
            group,
            lambda: self._heartbeat_expired(group, member_id),
            member.session_timeout_ms,
            member_id,
        )

    def _heartbeat_expired(self, group: Group, member_id: str) -> None:
        member = group.members.get(member_id)
        if member is None:
            return
        if member.awaiting_join:
            return  # kept alive; join completion schedules the next expiry
        if member.awaiting_sync:
            self._schedule_heartbeat(group, member)  # the sync deadline decides
            return
        log.info("group %s: member %s session expired", group.group_id, member_id)
        self._remove_member_and_update_group(group, member)

    def _remove_member_and_update_group(self, group: Group, member: Member) -> None:
        if member.join_callback is not None:
            callback, member.join_callback = member.join_callback, None
            callback(JoinResult(E.UNKNOWN_MEMBER_ID))
        if member.sync_callback is not None:
            callback, member.sync_callback = member.sync_callback, None
            callback(SyncResult(E.REBALANCE_IN_PROGRESS))
        self._cancel("hb", group, member.member_id)
        group.remove(member.member_id)
        if group.is_(STABLE, COMPLETING):
            self._maybe_prepare_rebalance(group, f"member {member.member_id} left")
        elif group.is_(PREPARING):
            self._try_complete_join(group)

    def _check_member(
        self, group: Group, member_id: str, instance_id: str | None, generation: int | None
    ) -> GroupError | None:
        if group.is_(DEAD):
            return E.COORDINATOR_NOT_AVAILABLE
        if group.is_static_member_fenced(instance_id, member_id):
            return E.FENCED_INSTANCE_ID
        if member_id not in group.members:
            return E.UNKNOWN_MEMBER_ID
        if generation is not None and generation != group.generation:
            return E.ILLEGAL_GENERATION
        return None

    # -- SyncGroup -------------------------------------------------------------------------
    def sync(self, req: SyncRequest) -> Outcome[Deferred[SyncResult]]:
        answer: Deferred[SyncResult] = Deferred()
        group = self.groups.get(req.group_id)
        if not req.group_id:
            answer.complete(SyncResult(E.INVALID_GROUP_ID))
            return self._done(answer)
        if group is None:
            answer.complete(SyncResult(E.UNKNOWN_MEMBER_ID))
            return self._done(answer)
        error = self._check_member(group, req.member_id, req.group_instance_id, req.generation)
        if error is None and (
            (req.protocol_type is not None and req.protocol_type != group.protocol_type)
            or (req.protocol is not None and req.protocol != group.protocol)
        ):
            error = E.INCONSISTENT_GROUP_PROTOCOL
        if error is None and group.is_(EMPTY):
            error = E.UNKNOWN_MEMBER_ID
        if error is None and group.is_(PREPARING):
            error = E.REBALANCE_IN_PROGRESS
        if error is not None:
            answer.complete(SyncResult(error))
            return self._done(answer)
        member = group.members[req.member_id]
        group.pending_sync.discard(req.member_id)
        if not group.pending_sync:
            self._cancel("sync", group)
        self._schedule_heartbeat(group, member)
        if group.is_(STABLE):
            answer.complete(self._sync_result(group, member))
            return self._done(answer)
        if member.sync_callback is not None:
            member.sync_callback(SyncResult(E.REBALANCE_IN_PROGRESS))
        member.sync_callback = answer.complete
        if req.member_id == group.leader:
            for other in group.members.values():
                other.assignment = req.assignments.get(other.member_id, b"")
            self._write_group(group)
            group.transition(STABLE, self.clock())
            log.info("group %s is stable at generation %d", group.group_id, group.generation)
            for other in group.members.values():
                if other.sync_callback is not None:
                    callback, other.sync_callback = other.sync_callback, None
                    callback(self._sync_result(group, other))
        return self._done(answer)

    @staticmethod
    def _sync_result(group: Group, member: Member) -> SyncResult:
        return SyncResult(E.NONE, member.assignment, group.protocol_type, group.protocol)

    # -- Heartbeat -------------------------------------------------------------------------
    def heartbeat(
        self, group_id: str, generation: int, member_id: str, instance_id: str | None = None
    ) -> Outcome[GroupError]:
        if not group_id:
            return self._done(E.INVALID_GROUP_ID)
        group = self.groups.get(group_id)
        if group is None:
            return self._done(E.UNKNOWN_MEMBER_ID)
        if group.is_(EMPTY):
            return self._done(E.UNKNOWN_MEMBER_ID)
        error = self._check_member(group, member_id, instance_id, generation)
        if error is not None:
            return self._done(error)
        self._schedule_heartbeat(group, group.members[member_id])
        if group.is_(PREPARING):
            return self._done(E.REBALANCE_IN_PROGRESS)
        return self._done(E.NONE)

    # -- LeaveGroup ------------------------------------------------------------------------
    def leave(
        self, group_id: str, members: Iterable[tuple[str, str | None]]
    ) -> Outcome[LeaveResult]:
        members = list(members)
        if not group_id:
            return self._done(LeaveResult(E.INVALID_GROUP_ID))
        group = self.groups.get(group_id)
        if group is None:
            return self._done(
                LeaveResult(E.NONE, tuple((m, i, E.UNKNOWN_MEMBER_ID) for m, i in members))
            )
        if group.is_(DEAD):
            return self._done(LeaveResult(E.COORDINATOR_NOT_AVAILABLE))
        results = []
        for member_id, instance_id in members:
            results.append((member_id, instance_id, self._leave_one(group, member_id, instance_id)))
        return self._done(LeaveResult(E.NONE, tuple(results)))

    def _leave_one(self, group: Group, member_id: str, instance_id: str | None) -> GroupError:
        if instance_id is not None:
            if member_id and group.is_static_member_fenced(instance_id, member_id):
                return E.FENCED_INSTANCE_ID
            if not member_id:
                member_id = group.static_members.get(instance_id, "")
        if member_id in group.pending_members:
            group.pending_members.discard(member_id)
            self._cancel("pending", group, member_id)
            self._try_complete_join(group)
            return E.NONE
        member = group.members.get(member_id)
        if member is None:
            return E.UNKNOWN_MEMBER_ID
        log.info("group %s: member %s left", group.group_id, member_id)
        self._remove_member_and_update_group(group, member)
        return E.NONE

    # -- offsets ---------------------------------------------------------------------------
    def commit(self, req: CommitRequest) -> Outcome[dict[tuple[str, int], GroupError]]:
        keys = [(o.topic, o.partition) for o in req.offsets]
        group = self.groups.get(req.group_id)
        error: GroupError | None = None
        if group is None:
            if req.generation < 0:  # offsets only, no group management (assign() + commit)
                group = self.groups[req.group_id] = Group(
                    req.group_id, state_timestamp=self.clock()
                )
            else:
                error = E.ILLEGAL_GENERATION
        if group is not None and error is None:
            error = self._check_commit(group, req)
        if error is not None:
            return self._done(dict.fromkeys(keys, error))
        assert group is not None
        now = self.clock()
        results: dict[tuple[str, int], GroupError] = {}
        stored = self.offsets.setdefault(req.group_id, {})
        for item in req.offsets:
            key = (item.topic, item.partition)
            metadata = item.metadata or ""
            if len(metadata.encode()) > self.max_metadata_bytes:
                results[key] = E.OFFSET_METADATA_TOO_LARGE
                continue
            if not self.partition_exists(item.topic, item.partition):
                results[key] = E.UNKNOWN_TOPIC_OR_PARTITION
                continue
            value = OffsetAndMetadata(item.offset, item.leader_epoch, metadata, now)
            stored[key] = value
            self._write_offset(req.group_id, item.topic, item.partition, value)
            results[key] = E.NONE
        if not stored:
            del self.offsets[req.group_id]
        return self._done(results)

    def _check_commit(self, group: Group, req: CommitRequest) -> GroupError | None:
        if group.is_(DEAD):
            return E.COORDINATOR_NOT_AVAILABLE
        if group.is_static_member_fenced(req.group_instance_id, req.member_id):
            return E.FENCED_INSTANCE_ID
        if req.generation < 0 and group.is_(EMPTY):
            return None
        if group.is_(COMPLETING):
            return E.REBALANCE_IN_PROGRESS
        member = group.members.get(req.member_id)
        if member is None:
            return E.UNKNOWN_MEMBER_ID
        if req.generation != group.generation:
            return E.ILLEGAL_GENERATION
        self._schedule_heartbeat(group, member)
        return None

    def fetch_offsets(
        self, group_id: str, topics: list[tuple[str, list[int]]] | None
    ) -> Outcome[list[FetchedOffset]]:
        """Committed offsets of the given partitions (None: every committed partition)."""
        stored = self.offsets.get(group_id, {})
        if topics is None:
            wanted = sorted(stored)
        else:
            wanted = [(topic, p) for topic, partitions in topics for p in partitions]
        out = []
        for topic, partition in wanted:
            value = stored.get((topic, partition))
            if value is None:
                out.append(FetchedOffset(topic, partition, -1))
            else:
                out.append(
                    FetchedOffset(
                        topic, partition, value.offset, value.leader_epoch, value.metadata
                    )
                )
        return self._done(out)

    def delete_offsets(
        self, group_id: str, partitions: list[tuple[str, int]]
    ) -> Outcome[tuple[GroupError, dict[tuple[str, int], GroupError]]]:
        group = self.groups.get(group_id)
        if not group_id:
            return self._done((E.INVALID_GROUP_ID, {}))
        if group is None or group.is_(DEAD):
            return self._done((E.GROUP_ID_NOT_FOUND, {}))
        subscribed: set[str] = set()
        if not group.is_(EMPTY):
            found = group.subscribed_topics()
            if found is None:
                return self._done((E.NON_EMPTY_GROUP, {}))
            subscribed = found
        stored = self.offsets.get(group_id, {})
        results: dict[tuple[str, int], GroupError] = {}
        for topic, partition in partitions:
            if topic in subscribed:
                results[(topic, partition)] = E.GROUP_SUBSCRIBED_TO_TOPIC
                continue
            if not self.partition_exists(topic, partition):
                results[(topic, partition)] = E.UNKNOWN_TOPIC_OR_PARTITION
                continue
            if stored.pop((topic, partition), None) is not None:
                self._write_offset(group_id, topic, partition, None)
            results[(topic, partition)] = E.NONE
        if group_id in self.offsets and not stored:
            del self.offsets[group_id]
        return self._done((E.NONE, results))

    def expire_offsets(self) -> list[OffsetsRecord]:
        """Tombstone offsets past retention (Kafka's rules: an empty group's offsets expire
        ``offsets.retention`` after it became empty, a simple group's after their commit, and a
        stable consumer group's only for topics it no longer subscribes to). Groups left
        empty without offsets are removed."""
        now = self.clock()
        retention = self.offsets_retention_ms
        for group_id, group in list(self.groups.items()):
            stored = self.offsets.get(group_id, {})
            expired: list[tuple[str, int]] = []
            if group.is_(EMPTY):
                use_state = group.protocol_type is not None and group.state_timestamp >= 0
                for key, value in stored.items():
                    base = group.state_timestamp if use_state else value.commit_timestamp
                    if (value.expire_timestamp >= 0 and now >= value.expire_timestamp) or (
                        value.expire_timestamp < 0 and now - base >= retention
                    ):
                        expired.append(key)
            elif group.is_(STABLE):
                subscribed = group.subscribed_topics()
                if subscribed is not None:
                    expired = [
                        key
                        for key, value in stored.items()
                        if key[0] not in subscribed and now - value.commit_timestamp >= retention
                    ]
            for key in expired:
                del stored[key]
                self._write_offset(group_id, key[0], key[1], None)
            if expired:
                log.info("group %s: expired %d committed offsets", group_id, len(expired))
            if group_id in self.offsets and not stored:
                del self.offsets[group_id]
            if group.is_(EMPTY) and not stored and not group.members and not group.pending_members:
                group.transition(DEAD, now)
                del self.groups[group_id]
                self._write_group(group, tombstone=True)
        records, self._outbox = self._outbox, []
        return records

    # -- admin -----------------------------------------------------------------------------
    def describe(self, group_ids: Iterable[str]) -> Outcome[list[DescribedGroup]]:
        out = []
        for group_id in group_ids:
            group = self.groups.get(group_id)
            if not group_id:
                out.append(DescribedGroup(group_id, E.INVALID_GROUP_ID, "", "", ""))
            elif group is None:
                out.append(DescribedGroup(group_id, E.NONE, DEAD.value, "", ""))
            else:
                stable = group.is_(STABLE)
                members = tuple(
                    DescribedMember(
                        m.member_id,
                        m.group_instance_id,
                        m.client_id,
                        m.client_host,
                        m.metadata_for(group.protocol) if stable and group.protocol else b"",
                        m.assignment if stable else b"",
                    )
                    for m in group.members.values()
                )
                out.append(
                    DescribedGroup(
                        group_id,
                        E.NONE,
                        group.state.value,
                        group.protocol_type or "",
                        (group.protocol or "") if stable else "",
                        members,
                    )
                )
        return self._done(out)

    def list_groups(
        self, states: Iterable[str] = (), types: Iterable[str] = ()
    ) -> Outcome[list[ListedGroup]]:
        wanted_states = {s.lower() for s in states}
        wanted_types = {t.lower() for t in types}
        if wanted_types and CLASSIC not in wanted_types:
            return self._done([])
        out = [
            ListedGroup(g.group_id, g.protocol_type or "", g.state.value)
            for g in self.groups.values()
            if not g.is_(DEAD) and (not wanted_states or g.state.value.lower() in wanted_states)
        ]
        return self._done(out)

    def delete_groups(self, group_ids: Iterable[str]) -> Outcome[dict[str, GroupError]]:
        results: dict[str, GroupError] = {}
        for group_id in group_ids:
            group = self.groups.get(group_id)
            if not group_id:
                results[group_id] = E.INVALID_GROUP_ID
            elif group is None or group.is_(DEAD):
                results[group_id] = E.GROUP_ID_NOT_FOUND
            elif not group.is_(EMPTY) or group.members:
                results[group_id] = E.NON_EMPTY_GROUP
            else:
                for topic, partition in sorted(self.offsets.pop(group_id, {})):
                    self._write_offset(group_id, topic, partition, None)
                for member_id in list(group.pending_members):
                    self._cancel("pending", group, member_id)
                group.transition(DEAD, self.clock())
                del self.groups[group_id]
                self._write_group(group, tombstone=True)
                log.info("group %s deleted", group_id)
                results[group_id] = E.NONE
        return self._done(results)

    # -- restart ---------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Answer every waiting JoinGroup/SyncGroup with NOT_COORDINATOR (clients then look
        for the coordinator again) and drop all timers; the records already written stay."""
        for group in self.groups.values():
            for member in group.members.values():
                if member.join_callback is not None:
                    callback, member.join_callback = member.join_callback, None
                    callback(JoinResult(E.NOT_COORDINATOR, member_id=member.member_id))
                if member.sync_callback is not None:
                    callback, member.sync_callback = member.sync_callback, None
                    callback(SyncResult(E.NOT_COORDINATOR))
        self.timers = Timers(self.clock)

    def restore(self, state: LoadedState) -> None:
        """Rebuild groups and offsets from replayed ``__consumer_offsets`` records.

        Groups that had members come back Stable with those members; their session timers
        start now, so members that no longer exist expire and the group rebalances.
        """
        now = self.clock()
        self.offsets = {g: dict(o) for g, o in state.offsets.items() if o}
        for group_id, record in state.groups.items():
            group = Group(
                group_id,
                state_timestamp=record.current_state_timestamp,
                generation=record.generation,
                protocol_type=record.protocol_type or None,
                protocol=record.protocol,
            )
            for m in record.members:
                protocols = [(record.protocol, m.subscription)] if record.protocol else []
                group.add(
                    Member(
                        m.member_id,
                        m.group_instance_id,
                        m.client_id,
                        m.client_host,
                        m.rebalance_timeout_ms,
                        m.session_timeout_ms,
                        record.protocol_type,
                        protocols,
                        m.assignment,
                    )
                )
            group.leader = record.leader if record.leader in group.members else group.leader
            if group.members and record.protocol:
                group.state = STABLE
                for member in group.members.values():
                    self._schedule_heartbeat(group, member)
            else:
                group.members.clear()
                group.static_members.clear()
                group.leader = None
            self.groups[group_id] = group
        for group_id in self.offsets:
            if group_id not in self.groups:
                self.groups[group_id] = Group(group_id, state_timestamp=now)
        self._outbox = []
