"""One share group: its members, epochs and assignment (KIP-932's simple assignor).

Every member gets every partition of the topics it subscribes to; several members share a
partition and the share partitions decide who gets which record. The group epoch moves on
every change of membership, subscriptions or topic metadata; a member's epoch moves to the
group epoch when its assignment changes, which is how the client learns of a new assignment.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field

from dari.streams.share.partition import SharePartition

Assignment = dict[uuid.UUID, tuple[int, ...]]  # topic id -> partitions
PartitionKey = tuple[uuid.UUID, int]


class ShareGroupState(enum.Enum):
    EMPTY = "Empty"
    STABLE = "Stable"
    DEAD = "Dead"


@dataclass(slots=True)
class ShareMember:
    """One member as its heartbeats describe it."""

    member_id: str
    client_id: str
    client_host: str
    rack_id: str | None
    subscribed: tuple[str, ...]
    epoch: int = 0
    previous_epoch: int = -1
    assignment: Assignment = field(default_factory=dict)
    deadline_ms: int = 0


@dataclass(slots=True)
class ShareGroup:
    """A share group's membership and its share partitions.

    Owned by ``ShareCoordinator`` on the event loop thread; not thread-safe.
    """

    group_id: str
    epoch: int = 0
    assignment_epoch: int = 0
    members: dict[str, ShareMember] = field(default_factory=dict)
    partitions: dict[PartitionKey, SharePartition] = field(default_factory=dict)

    @property
    def state(self) -> ShareGroupState:
        return ShareGroupState.STABLE if self.members else ShareGroupState.EMPTY

    def subscribed_topics(self) -> set[str]:
        out: set[str] = set()
        for member in self.members.values():
            out.update(member.subscribed)
        return out
