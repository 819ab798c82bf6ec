"""The share-group coordinator: membership by heartbeat, sessions, and the share partitions.

Protocol-neutral, synchronous, time passed in: ``heartbeat`` answers KIP-932's
ShareGroupHeartbeat (join with epoch 0 and a member id the client made up, heartbeats, leave
with epoch -1), ``expire`` removes members whose session timed out and releases expired record
locks, ``share_partition`` creates a partition's ack state on first use (its start offset from
``share.auto.offset.reset``) and journals it through the ``ShareStateStore``. Groups with stored
state come back Empty after a restart; their members rejoin.

Owned by the broker on the event loop thread; not thread-safe.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from dari.streams.partition import Partition
from dari.streams.share.group import (
    Assignment,
    PartitionKey,
    ShareGroup,
    ShareGroupState,
    ShareMember,
)
from dari.streams.share.group_configs import GroupConfigs, by_duration_ms
from dari.streams.share.partition import AcknowledgeType, ShareAckError, SharePartition
from dari.streams.share.sessions import ShareSession, ShareSessions
from dari.streams.share.state_store import ShareStateStore
from dari.streams.topics import Topic, TopicManager

log = logging.getLogger(__name__)

ASSIGNOR = "simple"
PROTOCOL_TYPE = "share"
LEAVE_EPOCH = -1


class ShareGroupError(Exception):
    """A refused group request; ``code`` is the Kafka error name (lower case)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class HeartbeatRequest:
    group_id: str
    member_id: str
    member_epoch: int
    rack_id: str | None
    subscribed: tuple[str, ...] | None
    client_id: str
    client_host: str


@dataclass(frozen=True, slots=True)
class HeartbeatResult:
    member_id: str
    member_epoch: int
    heartbeat_interval_ms: int
    assignment: Assignment | None  # None: unchanged


@dataclass(frozen=True, slots=True)
class AckBatch:
    first_offset: int
    last_offset: int
    types: tuple[int, ...]  # one type for the whole range, or one per offset


class ShareCoordinator:
    """See the module docstring."""

    def __init__(
        self,
        topics: TopicManager,
        store: ShareStateStore,
        configs: GroupConfigs,
        *,
        is_classic_group: Callable[[str], bool] = lambda _g: False,
        on_available: Callable[[SharePartition], None] | None = None,
    ) -> None:
        self.topics = topics
        self.store = store
        self.configs = configs
        self.is_classic_group = is_classic_group
        self.on_available = on_available
        self.groups: dict[str, ShareGroup] = {}
        self.sessions = ShareSessions()

    # -- start -----------------------------------------------------------------------------
    def load(self) -> None:
        """Bring back the groups with stored state (Empty) and their share partitions."""
        for group_id in self.store.group_ids():
            group = self.groups.setdefault(group_id, ShareGroup(group_id))
            journal = self.store.journal(group_id)
            for topic_id_bytes, index in journal.partitions():
                topic = self.topics.by_id.get(uuid.UUID(bytes=topic_id_bytes))
                if topic is None or not 0 <= index < len(topic.partitions):
                    journal.forget(topic_id_bytes, index)
                    continue
                self._new_partition(group, topic, index, 0)
        if self.groups:
            log.info("loaded %d share groups", len(self.groups))

    # -- groups ----------------------------------------------------------------------------
    def group(self, group_id: str) -> ShareGroup | None:
        return self.groups.get(group_id)

    def is_share_group(self, group_id: str) -> bool:
        return group_id in self.groups

    def _group_for_write(self, group_id: str) -> ShareGroup:
        if self.is_classic_group(group_id):
            raise ShareGroupError(
                "group_id_not_found", f"Group {group_id} is not a share group."
            )
        group = self.groups.get(group_id)
        if group is None:
            group = self.groups[group_id] = ShareGroup(group_id)
        return group

    # -- heartbeat -------------------------------------------------------------------------
    def heartbeat(self, req: HeartbeatRequest, now_ms: int) -> HeartbeatResult:
        """Join, heartbeat or leave; raises ShareGroupError with Kafka's code and message."""
        if not req.group_id:
            raise ShareGroupError("invalid_request", "GroupId can't be empty.")
        if not req.member_id:
            raise ShareGroupError("invalid_request", "MemberId can't be empty.")
        if req.member_epoch < LEAVE_EPOCH:
            raise ShareGroupError(
                "invalid_request", f"MemberEpoch is {req.member_epoch}, but must be >= -1."
            )
        if req.member_epoch == 0 and not req.subscribed:
            raise ShareGroupError(
                "invalid_request", "SubscribedTopicNames must be set in first request."
            )
        group = self._group_for_write(req.group_id)
        interval = self.configs.int_value(group.group_id, "share.heartbeat.interval.ms")
        if req.member_epoch == LEAVE_EPOCH:
            member = group.members.get(req.member_id)
            if member is None:
                raise ShareGroupError(
                    "unknown_member_id",
                    f"Member {req.member_id} is not a member of group {group.group_id}.",
                )
            # Leaving keeps the member's share session and records: the client sends its
            # final acknowledgements after the leave, and closing the session releases the rest.
            self.remove_member(group, req.member_id, release=False)
            return HeartbeatResult(req.member_id, LEAVE_EPOCH, interval, None)
        member = group.members.get(req.member_id)
        joined = req.member_epoch == 0
        if joined:
            if member is not None:  # a rejoin: its old records go back
                self._release_member(group, req.member_id)
            member = ShareMember(
                req.member_id,
                req.client_id,
                req.client_host,
                req.rack_id,
                tuple(req.subscribed or ()),
            )
            group.members[req.member_id] = member
            group.epoch += 1
            log.info("member %s joined share group %s", req.member_id, group.group_id)
        elif member is None:
            raise ShareGroupError(
                "unknown_member_id",
                f"Member {req.member_id} is not a member of group {group.group_id}.",
            )
        elif req.member_epoch not in (member.epoch, member.previous_epoch):
            raise ShareGroupError(
                "fenced_member_epoch",
                f"The share group member has a {_compare(req.member_epoch, member.epoch)} "
                f"member epoch ({req.member_epoch}) than the one known by the group "
                f"coordinator ({member.epoch}). The member must abandon all its partitions "
                "and rejoin.",
            )
        elif req.subscribed is not None and tuple(req.subscribed) != member.subscribed:
            member.subscribed = tuple(req.subscribed)
            group.epoch += 1
        if req.rack_id is not None:
            member.rack_id = req.rack_id
        member.deadline_ms = now_ms + self.configs.int_value(
            group.group_id, "share.session.timeout.ms"
        )
        target = self._target_assignment(member)
        changed = target != member.assignment
        if changed or joined:
            if changed and not joined:
                group.epoch += 1
            member.previous_epoch = member.epoch
            member.epoch = group.epoch
            member.assignment = target
            group.assignment_epoch = group.epoch
        send = changed or joined or req.subscribed is not None
        return HeartbeatResult(
            member.member_id, member.epoch, interval, dict(member.assignment) if send else None
        )

    def _target_assignment(self, member: ShareMember) -> Assignment:
        out: Assignment = {}
        for name in member.subscribed:
            topic = self.topics.get(name)
            if topic is not None and topic.partitions:
                out[topic.topic_id] = tuple(range(len(topic.partitions)))
        return out

    def remove_member(self, group: ShareGroup, member_id: str, release: bool = True) -> None:
        """The member left or timed out; with ``release`` its records and session go too."""
        if group.members.pop(member_id, None) is None:
            return
        group.epoch += 1
        if release:
            self._release_member(group, member_id)
        log.info("member %s left share group %s", member_id, group.group_id)

    def _release_member(self, group: ShareGroup, member_id: str) -> None:
        session = self.sessions.get(group.group_id, member_id)
        if session is not None:
            self.sessions.close(session)
        for share in group.partitions.values():
            share.release_member(member_id)

    # -- timers ----------------------------------------------------------------------------
    def expire(self, now_ms: int) -> None:
        """Remove members whose session timed out; release record locks that expired."""
        for group in list(self.groups.values()):
            for member in list(group.members.values()):
                if member.deadline_ms <= now_ms:
                    log.info(
                        "member %s of share group %s timed out", member.member_id, group.group_id
                    )
                    self.remove_member(group, member.member_id)
            for share in group.partitions.values():
                deadline = share.next_deadline_ms()
                if deadline is not None and deadline <= now_ms:
                    share.expire_locks(now_ms)

    def next_deadline_ms(self) -> int | None:
        deadlines: list[int] = []
        for group in self.groups.values():
            deadlines.extend(m.deadline_ms for m in group.members.values())
            for share in group.partitions.values():
                deadline = share.next_deadline_ms()
                if deadline is not None:
                    deadlines.append(deadline)
        return min(deadlines, default=None)

    # -- share partitions ------------------------------------------------------------------
    def share_partition(
        self, group_id: str, topic: Topic, index: int, now_ms: int
    ) -> SharePartition:
        """The ack state of ``topic``-``index`` for ``group_id``, created on first use."""
        group = self._group_for_write(group_id)
        share = group.partitions.get((topic.topic_id, index))
        if share is None:
            start = self._initial_offset(group_id, topic.partition(index), now_ms)
            share = self._new_partition(group, topic, index, start)
        self._apply_configs(group_id, share)
        return share

    def _new_partition(
        self, group: ShareGroup, topic: Topic, index: int, start: int
    ) -> SharePartition:
        share = SharePartition(start)
        share.dirty = True  # a new partition is stored even before its first acquisition
        self._apply_configs(group.group_id, share)
        if self.on_available is not None:
            callback = self.on_available
            share.on_available = lambda: callback(share)
        self.store.journal(group.group_id).attach(topic.topic_id.bytes, index, share)
        group.partitions[(topic.topic_id, index)] = share
        return share

    def _apply_configs(self, group_id: str, share: SharePartition) -> None:
        configs = self.configs
        share.lock_duration_ms = configs.int_value(group_id, "share.record.lock.duration.ms")
        share.delivery_limit = configs.int_value(group_id, "share.delivery.count.limit")
        share.max_in_flight = configs.int_value(group_id, "share.partition.max.record.locks")

    def _initial_offset(self, group_id: str, partition: Partition | None, now_ms: int) -> int:
        if partition is None:
            return 0
        policy = self.configs.value(group_id, "share.auto.offset.reset")
        if policy == "earliest":
            return partition.log_start_offset
        duration = by_duration_ms(policy)
        if duration is not None:
            found = partition.offset_for_timestamp(now_ms - duration)
            return found[0] if found is not None else partition.high_watermark
        return partition.high_watermark

    def acknowledge(
        self, group_id: str, member_id: str, topic: Topic, index: int, batches: Sequence[AckBatch],
        now_ms: int,
    ) -> ShareAckError | None:
        """Apply one partition's acknowledgement batches; the first refusal is returned."""
        group = self.groups.get(group_id)
        share = group.partitions.get((topic.topic_id, index)) if group is not None else None
        if share is None:
            return ShareAckError.INVALID_RECORD_STATE if batches else None
        error: ShareAckError | None = None
        for batch in batches:
            if len(batch.types) == 1:
                result = share.acknowledge(
                    member_id, batch.first_offset, batch.last_offset,
                    AcknowledgeType(batch.types[0]), now_ms,
                )
            else:
                result = share.acknowledge_each(
                    member_id, batch.first_offset, batch.types, now_ms
                )
            if result is not None and error is None:
                error = result
        return error

    def release(self, group_id: str, member_id: str, keys: Iterable[PartitionKey]) -> None:
        """Release what ``member_id`` holds in ``keys`` (partitions its session forgot)."""
        group = self.groups.get(group_id)
        if group is None:
            return
        for key in keys:
            share = group.partitions.get(key)
            if share is not None:
                share.release_member(member_id)

    def close_session(self, session: ShareSession) -> None:
        """A session ended (epoch -1, replaced, or its connection closed): release its
        member's records in the session's partitions."""
        self.sessions.close(session)
        self.release(session.group_id, session.member_id, list(session.partitions))

    def drop_unknown_topics(self) -> None:
        """Forget share partitions whose topic was deleted (or recreated with a new id)."""
        for group in self.groups.values():
            for key in [k for k in group.partitions if k[0] not in self.topics.by_id]:
                del group.partitions[key]
                self.store.journal(group.group_id).forget(key[0].bytes, key[1])

    # -- admin -----------------------------------------------------------------------------
    def list_groups(self, states: Iterable[str] = ()) -> list[tuple[str, str]]:
        """(group id, state) of every share group, filtered by state (case-insensitive)."""
        wanted = {s.lower() for s in states}
        return [
            (g.group_id, g.state.value)
            for g in self.groups.values()
            if not wanted or g.state.value.lower() in wanted
        ]

    def delete_group(self, group_id: str) -> str | None:
        """Delete an empty share group and its state; the Kafka error name, or None."""
        group = self.groups.get(group_id)
        if group is None:
            return "group_id_not_found"
        if group.members:
            return "non_empty_group"
        for session in self.sessions.of_group(group_id):
            self.sessions.close(session)
        del self.groups[group_id]
        self.store.delete_group(group_id)
        self.configs.forget(group_id)
        log.info("share group %s deleted", group_id)
        return None

    def start_offsets(self, group_id: str) -> dict[PartitionKey, SharePartition]:
        group = self.groups.get(group_id)
        return dict(group.partitions) if group is not None else {}

    def check_empty(self, group_id: str) -> ShareGroup:
        """The group for an offsets change, which Kafka allows only on an empty group."""
        group = self._group_for_write(group_id)
        if group.members:
            raise ShareGroupError(
                "non_empty_group",
                "The group is not empty.",
            )
        return group

    def reset_offset(self, group_id: str, topic: Topic, index: int, offset: int) -> None:
        """AlterShareGroupOffsets for one partition."""
        group = self.check_empty(group_id)
        share = group.partitions.get((topic.topic_id, index))
        if share is None:
            self._new_partition(group, topic, index, offset)
        else:
            share.reset(offset)

    def delete_offsets(self, group_id: str, topic: Topic) -> None:
        """DeleteShareGroupOffsets for a topic: its partitions start afresh when next used."""
        group = self.check_empty(group_id)
        journal = self.store.journal(group_id)
        for key in [k for k in group.partitions if k[0] == topic.topic_id]:
            del group.partitions[key]
            journal.forget(key[0].bytes, key[1])

    def state_of(self, group_id: str) -> ShareGroupState:
        group = self.groups.get(group_id)
        return ShareGroupState.DEAD if group is None else group.state


def _compare(sent: int, known: int) -> str:
    return "smaller" if sent < known else "larger"
