"""The share-partition ack-state machine: acquisition, locks, acknowledgements, delivery limit,
SPSO movement and its encoded state, driven directly with explicit times."""

from __future__ import annotations

from dari.streams.share.partition import (
    AcknowledgeType,
    AcquiredRange,
    RecordState,
    ShareAckError,
    SharePartition,
)

ACCEPT = AcknowledgeType.ACCEPT
RELEASE = AcknowledgeType.RELEASE
REJECT = AcknowledgeType.REJECT
GAP = AcknowledgeType.GAP


def test_acquire_takes_new_records_up_to_the_end_offset() -> None:
    sp = SharePartition(0)
    assert sp.acquire("a", 500, 0, 10) == [AcquiredRange(0, 9, 1)]
    assert sp.end_offset == 10
    assert sp.acquired == 10
    assert sp.acquire("b", 500, 0, 10) == []
    assert sp.next_offset(10) is None
    assert sp.acquire("b", 5, 0, 20) == [AcquiredRange(10, 14, 1)]


def test_members_share_one_partition_without_overlap() -> None:
    sp = SharePartition(0)
    a = sp.acquire("a", 3, 0, 9)
    b = sp.acquire("b", 3, 0, 9)
    c = sp.acquire("c", 3, 0, 9)
    assert a == [AcquiredRange(0, 2, 1)]
    assert b == [AcquiredRange(3, 5, 1)]
    assert c == [AcquiredRange(6, 8, 1)]
    assert sp.acknowledge("b", 3, 5, ACCEPT) is None
    assert sp.start_offset == 0
    assert sp.acknowledge("a", 0, 2, ACCEPT) is None
    assert sp.start_offset == 6
    assert sp.acknowledge("c", 6, 8, ACCEPT) is None
    assert sp.start_offset == 9
    assert sp.in_flight == 0


def test_only_the_lock_holder_may_acknowledge() -> None:
    sp = SharePartition(0)
    sp.acquire("a", 5, 0, 5)
    assert sp.acknowledge("b", 0, 4, ACCEPT) == ShareAckError.INVALID_RECORD_STATE
    assert sp.acknowledge("a", 3, 7, ACCEPT) == ShareAckError.INVALID_RECORD_STATE
    assert sp.acknowledge("a", 2, 2, ACCEPT) is None
    assert sp.acknowledge("a", 2, 2, ACCEPT) == ShareAckError.INVALID_RECORD_STATE
    # A refused batch changes nothing, even for its records the member does hold.
    assert sp.acknowledge("a", 1, 2, ACCEPT) == ShareAckError.INVALID_RECORD_STATE
    assert sp.state_of(1) == (RecordState.ACQUIRED, 1)


def test_release_comes_back_first_with_a_higher_delivery_count() -> None:
    sp = SharePartition(0)
    woken: list[int] = []
    sp.on_available = lambda: woken.append(1)
    sp.acquire("a", 10, 0, 10)
    assert sp.acknowledge("a", 0, 3, ACCEPT) is None
    assert sp.acknowledge("a", 4, 5, RELEASE) is None
    assert woken == [1]
    assert sp.start_offset == 4
    assert sp.next_offset(20) == 4
    assert sp.acquire("b", 10, 0, 20) == [
        AcquiredRange(4, 5, 2),
        AcquiredRange(10, 17, 1),
    ]


def test_per_record_acknowledgements_split_and_merge_runs() -> None:
    sp = SharePartition(0)
    sp.acquire("a", 100, 0, 100)
    for offset in range(0, 100, 2):
        assert sp.acknowledge("a", offset, offset, ACCEPT) is None
    assert sp.start_offset == 1
    for offset in range(1, 100, 2):
        assert sp.acknowledge("a", offset, offset, ACCEPT) is None
    assert sp.start_offset == 100
    assert sp.in_flight == 0


def test_lock_timeout_makes_records_available_again() -> None:
    sp = SharePartition(0, lock_duration_ms=1000)
    sp.acquire("a", 5, 100, 5)
    assert sp.next_deadline_ms() == 1100
    assert sp.expire_locks(1099) is False
    assert sp.expire_locks(1100) is True
    assert sp.next_deadline_ms() is None
    assert sp.acknowledge("a", 0, 4, ACCEPT) == ShareAckError.INVALID_RECORD_STATE
    assert sp.acquire("b", 5, 2000, 5) == [AcquiredRange(0, 4, 2)]


def test_delivery_limit_archives_a_poison_record() -> None:
    sp = SharePartition(0, delivery_limit=3, keep_archived=True)
    for attempt in range(1, 4):
        assert sp.acquire("a", 1, 0, 2) == [AcquiredRange(0, 0, attempt)]
        assert sp.acknowledge("a", 0, 0, RELEASE) is None
    assert sp.state_of(0) is None  # archived and passed: SPSO moved over it
    assert sp.start_offset == 1
    assert sp.drain_archived() == [(0, 0)]
    assert sp.drain_archived() == []
    assert sp.acquire("a", 5, 0, 2) == [AcquiredRange(1, 1, 1)]


def test_expiry_at_the_delivery_limit_archives() -> None:
    sp = SharePartition(0, delivery_limit=1, lock_duration_ms=10, keep_archived=True)
    sp.acquire("a", 3, 0, 3)
    assert sp.expire_locks(10) is False
    assert sp.drain_archived() == [(0, 2)]
    assert sp.start_offset == 3


def test_reject_archives_and_gap_is_not_reported() -> None:
    sp = SharePartition(0, keep_archived=True)
    sp.acquire("a", 4, 0, 4)
    assert sp.acknowledge("a", 0, 0, GAP) is None
    assert sp.acknowledge("a", 1, 2, REJECT) is None
    assert sp.drain_archived() == [(1, 2)]
    assert sp.start_offset == 3
    # Without keep_archived nothing accumulates.
    quiet = SharePartition(0)
    quiet.acquire("a", 1, 0, 1)
    quiet.acknowledge("a", 0, 0, REJECT)
    assert quiet.drain_archived() == []


def test_release_member_frees_only_its_records() -> None:
    sp = SharePartition(0)
    sp.acquire("a", 2, 0, 6)
    sp.acquire("b", 2, 0, 6)
    assert sp.release_member("a") is True
    assert sp.release_member("a") is False
    assert sp.state_of(0) == (RecordState.AVAILABLE, 1)
    assert sp.state_of(2) == (RecordState.ACQUIRED, 1)
    assert sp.acquire("c", 10, 0, 6) == [AcquiredRange(0, 1, 2), AcquiredRange(4, 5, 1)]


def test_in_flight_limit_bounds_acquisition() -> None:
    sp = SharePartition(0, max_in_flight=10)
    assert sp.acquire("a", 100, 0, 1000) == [AcquiredRange(0, 9, 1)]
    assert sp.next_offset(1000) is None
    assert sp.acquire("b", 100, 0, 1000) == []
    sp.acknowledge("a", 0, 4, ACCEPT)
    assert sp.acquire("b", 100, 0, 1000) == [AcquiredRange(10, 14, 1)]


def test_log_start_skips_removed_records() -> None:
    sp = SharePartition(0)
    sp.acquire("a", 10, 0, 10)
    sp.advance_log_start(4)
    assert sp.start_offset == 4
    assert sp.acknowledge("a", 0, 3, ACCEPT) == ShareAckError.INVALID_RECORD_STATE
    assert sp.acknowledge("a", 4, 9, ACCEPT) is None
    sp.advance_log_start(50)
    assert (sp.start_offset, sp.end_offset) == (50, 50)
    assert sp.acquire("a", 5, 0, 60) == [AcquiredRange(50, 54, 1)]


def test_reset_forgets_everything_in_flight() -> None:
    sp = SharePartition(0)
    sp.acquire("a", 10, 0, 10)
    sp.reset(3)
    assert (sp.start_offset, sp.end_offset, sp.acquired) == (3, 3, 0)
    assert sp.acquire("a", 2, 0, 10) == [AcquiredRange(3, 4, 1)]


def test_encoded_state_releases_locks_and_keeps_counts() -> None:
    sp = SharePartition(0)
    sp.acquire("a", 10, 0, 10)
    sp.acknowledge("a", 2, 3, ACCEPT)
    sp.acknowledge("a", 5, 5, RELEASE)
    sp.acknowledge("a", 6, 6, REJECT)
    restored = SharePartition(0)
    restored.decode_state(sp.encode_state())
    assert (restored.start_offset, restored.end_offset) == (0, 10)
    assert restored.state_of(0) == (RecordState.AVAILABLE, 1)
    assert restored.state_of(2) == (RecordState.ACKNOWLEDGED, 1)
    assert restored.state_of(5) == (RecordState.AVAILABLE, 1)
    assert restored.state_of(6) == (RecordState.ARCHIVED, 1)
    assert restored.acquire("b", 3, 0, 10) == [AcquiredRange(0, 1, 2), AcquiredRange(4, 4, 2)]


def test_on_change_fires_once_until_marked_clean() -> None:
    sp = SharePartition(0)
    seen: list[SharePartition] = []
    sp.on_change = seen.append
    sp.acquire("a", 1, 0, 5)
    sp.acquire("a", 1, 0, 5)
    assert seen == [sp]
    sp.mark_clean()
    sp.acknowledge("a", 0, 0, ACCEPT)
    assert seen == [sp, sp]


def test_a_large_backlog_stays_compact() -> None:
    sp = SharePartition(0, max_in_flight=200_000)
    taken = sp.acquire("a", 100_000, 0, 100_000)
    assert taken == [AcquiredRange(0, 99_999, 1)]
    assert len(sp.encode_state()) < 100
    assert sp.acknowledge("a", 0, 99_999, ACCEPT) is None
    assert sp.start_offset == 100_000


def test_acknowledge_each_applies_one_type_per_offset_or_nothing() -> None:
    sp = SharePartition(0, keep_archived=True)
    sp.acquire("a", 5, 0, 5)
    assert sp.acknowledge_each("a", 3, [1, 1, 1]) == ShareAckError.INVALID_RECORD_STATE
    assert sp.acknowledge_each("a", 0, [1, 2, 3, 0, 1]) is None
    assert sp.state_of(1) == (RecordState.AVAILABLE, 1)
    assert sp.drain_archived() == [(2, 2)]
    assert sp.start_offset == 1


def test_acknowledging_records_that_left_the_log_skips_them() -> None:
    sp = SharePartition(0)
    sp.acquire("a", 10, 0, 10)
    sp.advance_log_start(4)
    assert sp.acknowledge("a", 0, 9, ACCEPT) is None
    assert sp.start_offset == 10
    sp.acquire("a", 4, 0, 14)
    sp.advance_log_start(12)
    assert sp.acknowledge_each("a", 10, [1, 1, 1, 3]) is None
    assert sp.start_offset == 14
