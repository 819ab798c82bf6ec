"""Plain requests and results of the group coordinator, free of any wire format.

``GroupError`` values are the lower-case names Kafka gives its error codes, so a protocol
adapter maps them by name. JoinGroup and SyncGroup answer through a ``Deferred`` because their
answer waits for other members (a rebalance); everything else answers at once.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


class GroupError(enum.Enum):
    NONE = "none"
    UNKNOWN_MEMBER_ID = "unknown_member_id"
    MEMBER_ID_REQUIRED = "member_id_required"
    REBALANCE_IN_PROGRESS = "rebalance_in_progress"
    ILLEGAL_GENERATION = "illegal_generation"
    INCONSISTENT_GROUP_PROTOCOL = "inconsistent_group_protocol"
    GROUP_ID_NOT_FOUND = "group_id_not_found"
    NON_EMPTY_GROUP = "non_empty_group"
    FENCED_INSTANCE_ID = "fenced_instance_id"
    COORDINATOR_NOT_AVAILABLE = "coordinator_not_available"
    NOT_COORDINATOR = "not_coordinator"
    INVALID_SESSION_TIMEOUT = "invalid_session_timeout"
    INVALID_GROUP_ID = "invalid_group_id"
    GROUP_SUBSCRIBED_TO_TOPIC = "group_subscribed_to_topic"
    OFFSET_METADATA_TOO_LARGE = "offset_metadata_too_large"
    UNKNOWN_TOPIC_OR_PARTITION = "unknown_topic_or_partition"


# (partition of __consumer_offsets, key, value or None for a tombstone)
OffsetsRecord = tuple[int, bytes, bytes | None]


class Deferred(Generic[T]):
    """A result that may arrive later; callbacks run synchronously when it does.

    Deliberately not an asyncio future: the domain stays free of the event loop, and tests
    read ``value`` straight after the call that completed it.
    """

    __slots__ = ("_callbacks", "_done", "_value")

    def __init__(self) -> None:
        self._done = False
        self._value: T | None = None
        self._callbacks: list[Callable[[T], None]] = []

    @property
    def done(self) -> bool:
        return self._done

    @property
    def value(self) -> T:
        if not self._done:
            raise RuntimeError("result not available yet")
        return self._value  # type: ignore[return-value]

    def complete(self, value: T) -> None:
        if self._done:
            return
        self._done, self._value = True, value
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(value)

    def add_callback(self, callback: Callable[[T], None]) -> None:
        if self._done:
            callback(self._value)  # type: ignore[arg-type]
        else:
            self._callbacks.append(callback)


@dataclass(slots=True)
class Outcome(Generic[T]):
    """What a coordinator call decided: the answer, and the records to append for it."""

    response: T
    records: list[OffsetsRecord] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class JoinRequest:
    group_id: str
    member_id: str
    protocol_type: str
    protocols: list[tuple[str, bytes]]
    session_timeout_ms: int
    rebalance_timeout_ms: int
    group_instance_id: str | None = None
    client_id: str = ""
    client_host: str = ""
    require_known_member_id: bool = True  # JoinGroup v4+ (KIP-394)
    supports_skip_assignment: bool = False  # JoinGroup v9+ (KIP-814)


@dataclass(frozen=True, slots=True)
class JoinMember:
    member_id: str
    group_instance_id: str | None
    metadata: bytes


@dataclass(frozen=True, slots=True)
class JoinResult:
    error: GroupError
    member_id: str = ""
    generation: int = -1
    protocol_type: str | None = None
    protocol: str | None = None
    leader: str = ""
    members: tuple[JoinMember, ...] = ()
    skip_assignment: bool = False


@dataclass(frozen=True, slots=True)
class SyncRequest:
    group_id: str
    generation: int
    member_id: str
    assignments: dict[str, bytes]
    group_instance_id: str | None = None
    protocol_type: str | None = None
    protocol: str | None = None


@dataclass(frozen=True, slots=True)
class SyncResult:
    error: GroupError
    assignment: bytes = b""
    protocol_type: str | None = None
    protocol: str | None = None


@dataclass(frozen=True, slots=True)
class LeaveResult:
    error: GroupError
    members: tuple[tuple[str, str | None, GroupError], ...] = ()


@dataclass(frozen=True, slots=True)
class CommitOffset:
    topic: str
    partition: int
    offset: int
    leader_epoch: int = -1
    metadata: str | None = ""


@dataclass(frozen=True, slots=True)
class CommitRequest:
    group_id: str
    generation: int
    member_id: str
    offsets: list[CommitOffset]
    group_instance_id: str | None = None


@dataclass(frozen=True, slots=True)
class FetchedOffset:
    topic: str
    partition: int
    offset: int  # -1 when nothing is committed
    leader_epoch: int = -1
    metadata: str = ""
    error: GroupError = GroupError.NONE


@dataclass(frozen=True, slots=True)
class DescribedMember:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    metadata: bytes
    assignment: bytes


@dataclass(frozen=True, slots=True)
class DescribedGroup:
    group_id: str
    error: GroupError
    state: str
    protocol_type: str
    protocol: str
    members: tuple[DescribedMember, ...] = ()


@dataclass(frozen=True, slots=True)
class ListedGroup:
    group_id: str
    protocol_type: str
    state: str
