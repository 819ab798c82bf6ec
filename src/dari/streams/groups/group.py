"""One classic consumer group: its members, generation and state machine.

States and legal transitions are Kafka's (``GroupMetadata.validPreviousStates``)::

    Empty --------------> PreparingRebalance <---------------+
      ^                      |         ^                     |
      |  (join completes     v         | (member joins,      |
      |   with no members) CompletingRebalance  leaves, dies)|
      +----------------------+         |                     |
                                       v                     |
                                    Stable ------------------+
    any state ----> Dead (group deleted, or expired with no offsets)

Owned by the coordinator (event loop thread); not thread-safe.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dari.streams.groups.offsets import GroupRecord, MemberRecord


class GroupState(enum.Enum):
    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


_VALID_PREVIOUS: dict[GroupState, frozenset[GroupState]] = {
    GroupState.EMPTY: frozenset({GroupState.PREPARING_REBALANCE}),
    GroupState.PREPARING_REBALANCE: frozenset(
        {GroupState.STABLE, GroupState.COMPLETING_REBALANCE, GroupState.EMPTY}
    ),
    GroupState.COMPLETING_REBALANCE: frozenset({GroupState.PREPARING_REBALANCE}),
    GroupState.STABLE: frozenset({GroupState.COMPLETING_REBALANCE}),
    GroupState.DEAD: frozenset(GroupState),
}


class IllegalTransitionError(RuntimeError):
    """A bug: the coordinator tried a transition Kafka's state machine does not allow."""


@dataclass
class Member:
    """A group member as the coordinator tracks it between requests."""

    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    protocol_type: str
    protocols: list[tuple[str, bytes]]  # (name, metadata) in the member's order of preference
    assignment: bytes = b""
    # The pending JoinGroup / SyncGroup answer, called once with the result.
    join_callback: Callable[[Any], None] | None = None
    sync_callback: Callable[[Any], None] | None = None
    is_new: bool = False

    @property
    def awaiting_join(self) -> bool:
        return self.join_callback is not None

    @property
    def awaiting_sync(self) -> bool:
        return self.sync_callback is not None

    def protocol_names(self) -> list[str]:
        return [name for name, _ in self.protocols]

    def metadata_for(self, protocol: str) -> bytes:
        for name, metadata in self.protocols:
            if name == protocol:
                return metadata
        raise KeyError(protocol)

    def matches(self, protocols: list[tuple[str, bytes]]) -> bool:
        return self.protocols == protocols

    def to_record(self, protocol: str | None) -> MemberRecord:
        subscription = b""
        if protocol is not None:
            try:
                subscription = self.metadata_for(protocol)
            except KeyError:
                subscription = b""
        return MemberRecord(
            self.member_id,
            self.group_instance_id,
            self.client_id,
            self.client_host,
            self.rebalance_timeout_ms,
            self.session_timeout_ms,
            subscription,
            self.assignment,
        )


@dataclass
class Group:
    group_id: str
    state: GroupState = GroupState.EMPTY
    state_timestamp: int = -1
    generation: int = 0
    protocol_type: str | None = None
    protocol: str | None = None
    leader: str | None = None
    members: dict[str, Member] = field(default_factory=dict)
    static_members: dict[str, str] = field(default_factory=dict)  # instance id -> member id
    pending_members: set[str] = field(default_factory=set)  # KIP-394 ids handed out, not joined
    pending_sync: set[str] = field(default_factory=set)  # joined this generation, not synced
    new_member_added: bool = False  # during the initial join delay
    initial_join: bool = False  # this rebalance started from Empty (delayed join)

    # -- state machine ---------------------------------------------------------------------
    def transition(self, target: GroupState, now_ms: int) -> None:
        if self.state not in _VALID_PREVIOUS[target]:
            raise IllegalTransitionError(
                f"group {self.group_id}: {self.state.value} -> {target.value} is not allowed"
            )
        self.state = target
        self.state_timestamp = now_ms

    def is_(self, *states: GroupState) -> bool:
        return self.state in states

    # -- membership ------------------------------------------------------------------------
    def add(self, member: Member) -> None:
        if not self.members:
            self.protocol_type = member.protocol_type
        self.members[member.member_id] = member
        if member.group_instance_id is not None:
            self.static_members[member.group_instance_id] = member.member_id
        if self.leader is None:
            self.leader = member.member_id

    def remove(self, member_id: str) -> Member | None:
        member = self.members.pop(member_id, None)
        if member is None:
            return None
        if (
            member.group_instance_id is not None
            and self.static_members.get(member.group_instance_id) == member_id
        ):
            del self.static_members[member.group_instance_id]
        self.pending_sync.discard(member_id)
        if self.leader == member_id:
            self.leader = next(iter(self.members), None)
        return member

    def is_static_member_fenced(self, instance_id: str | None, member_id: str) -> bool:
        """A static member id that no longer owns its instance id (a newer one replaced it)."""
        if instance_id is None:
            return False
        current = self.static_members.get(instance_id)
        return current is not None and current != member_id

    def replace_static_member(self, instance_id: str, old_id: str, new_id: str) -> Member:
        member = self.members.pop(old_id)
        member.member_id = new_id
        self.members[new_id] = member
        self.static_members[instance_id] = new_id
        if self.leader == old_id:
            self.leader = new_id
        if old_id in self.pending_sync:
            self.pending_sync.discard(old_id)
            self.pending_sync.add(new_id)
        return member

    # -- protocols -------------------------------------------------------------------------
    def candidate_protocols(self) -> set[str]:
        members = list(self.members.values())
        if not members:
            return set()
        common = set(members[0].protocol_names())
        for member in members[1:]:
            common &= set(member.protocol_names())
        return common

    def supports(self, protocol_type: str, protocols: list[tuple[str, bytes]]) -> bool:
        names = {name for name, _ in protocols}
        if not self.members:
            return bool(protocol_type) and bool(names)
        return self.protocol_type == protocol_type and bool(self.candidate_protocols() & names)

    def select_protocol(self) -> str:
        """Each member votes for its most preferred common protocol; most votes wins (ties go
        to the protocol preferred by the earliest member)."""
        candidates = self.candidate_protocols()
        votes: dict[str, int] = {}
        for member in self.members.values():
            choice = next(name for name in member.protocol_names() if name in candidates)
            votes[choice] = votes.get(choice, 0) + 1
        return max(votes, key=lambda name: votes[name])

    def all_members_joined(self) -> bool:
        return all(m.awaiting_join for m in self.members.values()) and not self.pending_members

    def max_rebalance_timeout_ms(self) -> int:
        return max((m.rebalance_timeout_ms for m in self.members.values()), default=0)

    def subscribed_topics(self) -> set[str] | None:
        """Topics of the consumer protocol subscriptions, None if they cannot be known."""
        if self.protocol_type != "consumer" or self.protocol is None:
            return None
        topics: set[str] = set()
        for member in self.members.values():
            try:
                found = parse_subscription_topics(member.metadata_for(self.protocol))
            except (KeyError, ValueError):
                return None
            topics.update(found)
        return topics

    def to_record(self) -> GroupRecord:
        return GroupRecord(
            protocol_type=self.protocol_type or "",
            generation=self.generation,
            protocol=self.protocol,
            leader=self.leader,
            current_state_timestamp=self.state_timestamp,
            members=tuple(m.to_record(self.protocol) for m in self.members.values()),
        )


def parse_subscription_topics(metadata: bytes) -> list[str]:
    """Topic names of a ConsumerProtocolSubscription (any version: the topics come first)."""
    if len(metadata) < 6:
        raise ValueError("subscription too short")
    pos = 2  # int16 version
    count = int.from_bytes(metadata[pos : pos + 4], "big", signed=True)
    pos += 4
    topics = []
    for _ in range(max(count, 0)):
        length = int.from_bytes(metadata[pos : pos + 2], "big", signed=True)
        pos += 2
        if length < 0 or pos + length > len(metadata):
            raise ValueError("malformed subscription")
        topics.append(metadata[pos : pos + length].decode())
        pos += length
    return topics
