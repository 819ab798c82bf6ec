"""Share sessions: which partitions a member fetches from, and the session epoch.

KIP-932: a ShareFetch with epoch 0 opens a session (its partitions are the whole set), a
positive epoch must be the next one and adds or forgets partitions incrementally, -1 closes
it (after its acknowledgements). ShareAcknowledge uses the same epochs but cannot open one.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from dari.streams.share.group import PartitionKey

FINAL_EPOCH = -1
INITIAL_EPOCH = 0


class SessionError(enum.Enum):
    SHARE_SESSION_NOT_FOUND = "share_session_not_found"
    INVALID_SHARE_SESSION_EPOCH = "invalid_share_session_epoch"


@dataclass(slots=True)
class ShareSession:
    """One member's session on this broker: the next epoch it must send, its partitions."""

    group_id: str
    member_id: str
    epoch: int = 1
    partitions: dict[PartitionKey, None] = field(default_factory=dict)  # ordered set
    owner: object = None  # what the session lives on (the protocol's connection)


class ShareSessions:
    """Every open share session of the broker, by (group, member).

    Owned by the event loop thread; not thread-safe. Closing or replacing a session is the
    caller's cue to release the member's records (``ShareCoordinator`` does).
    """

    def __init__(self) -> None:
        self._sessions: dict[tuple[str, str], ShareSession] = {}

    def get(self, group_id: str, member_id: str) -> ShareSession | None:
        return self._sessions.get((group_id, member_id))

    def open(self, group_id: str, member_id: str) -> tuple[ShareSession, ShareSession | None]:
        """A new session (epoch 0); also returns the one it replaces, if any."""
        old = self._sessions.get((group_id, member_id))
        session = ShareSession(group_id, member_id)
        self._sessions[(group_id, member_id)] = session
        return session, old

    def use(
        self, group_id: str, member_id: str, epoch: int
    ) -> tuple[ShareSession | None, SessionError | None]:
        """The session a request with ``epoch`` (> 0 or -1) continues. A wrong epoch drops
        the session, as Kafka does, so the client starts again at epoch 0."""
        session = self._sessions.get((group_id, member_id))
        if session is None:
            return None, SessionError.SHARE_SESSION_NOT_FOUND
        if epoch != FINAL_EPOCH and epoch != session.epoch:
            return None, SessionError.INVALID_SHARE_SESSION_EPOCH
        return session, None

    def close(self, session: ShareSession) -> None:
        self._sessions.pop((session.group_id, session.member_id), None)

    def of_group(self, group_id: str) -> list[ShareSession]:
        return [s for (g, _m), s in self._sessions.items() if g == group_id]

    def owned_by(self, owner: object) -> list[ShareSession]:
        return [s for s in self._sessions.values() if s.owner is owner]
