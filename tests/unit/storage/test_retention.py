"""Retention deletes whole closed segments by size and by age, and moves the log start."""

from __future__ import annotations

import pytest
from storage_helpers import append, make_batch, read_all

from dari.storage import LogConfig, OffsetOutOfRangeError, PartitionLog, maintain


def log_files(path) -> list[str]:
    return sorted(p.name for p in path.glob("*.log"))


def test_retention_by_bytes_deletes_oldest_closed_segments(tmp_path):
    path = tmp_path / "t-0"
    log = PartitionLog.open(
        path, LogConfig(segment_bytes=1000, retention_bytes=2500, retention_ms=-1)
    )
    for _ in range(60):
        append(log, make_batch(3))
    segments_before = len(log.segments)
    assert log.size_bytes > 2500
    deleted = log.apply_retention()
    assert deleted == segments_before - len(log.segments) > 0
    # Kafka's rule: delete while what remains stays >= retention.bytes.
    assert log.size_bytes >= 2500
    assert log.size_bytes - log.segments[0].size < 2500
    assert log.size_bytes == sum(p.stat().st_size for p in path.glob("*.log"))
    assert len(log_files(path)) == len(log.segments)
    assert len(list(path.glob("*.index"))) == len(log.segments)
    assert log.log_start_offset == log.segments[0].base_offset > 0
    with pytest.raises(OffsetOutOfRangeError):
        log.read(0, 100)
    assert read_all(log) == list(range(log.log_start_offset, 180))
    assert log.apply_retention() == 0


def test_retention_never_deletes_the_active_segment(tmp_path):
    log = PartitionLog.open(tmp_path / "t-0", LogConfig(retention_bytes=0))
    append(log, make_batch(3))
    assert log.apply_retention() == 0
    assert log.read(0, 100)


def test_retention_by_time_uses_record_timestamps(tmp_path, clock):
    path = tmp_path / "t-0"
    config = LogConfig(segment_bytes=600, retention_ms=60_000)
    log = PartitionLog.open(path, config, clock)
    start_ms = int(clock() * 1000)
    for i in range(20):  # one batch per second of (fake) time
        append(log, make_batch(2, timestamp=start_ms + i * 1000))
        clock.advance_ms(1000)
    old_segments = log.segments
    assert len(old_segments) > 3
    assert log.apply_retention() == 0  # nothing older than a minute yet
    # Ten seconds after retention.ms has passed for the first ~10 batches.
    now_ms = start_ms + 60_000 + 10_500
    deleted = log.apply_retention(now_ms)
    assert deleted > 0
    for segment in old_segments[:deleted]:
        assert segment.max_timestamp < now_ms - 60_000
        assert not segment.log_path.exists()
    assert log.segments[0].max_timestamp >= now_ms - 60_000
    assert log.log_start_offset == log.segments[0].base_offset
    # Far in the future everything closed goes; the active segment stays.
    log.apply_retention(now_ms + 3_600_000)
    assert len(log.segments) == 1
    assert log.log_start_offset == log.segments[0].base_offset
    log.close()
    reopened = PartitionLog.open(path, config, clock)
    assert reopened.log_start_offset == log.log_start_offset
    assert reopened.log_end_offset == 40


def test_retention_minus_one_keeps_everything(tmp_path, clock):
    log = PartitionLog.open(tmp_path / "t-0", LogConfig(segment_bytes=300, retention_ms=-1), clock)
    for _ in range(10):
        append(log, make_batch(2, timestamp=0))
    assert log.apply_retention(10**13) == 0
    assert read_all(log) == list(range(20))


def test_config_change_takes_effect_on_next_retention(tmp_path):
    log = PartitionLog.open(tmp_path / "t-0", LogConfig(segment_bytes=500, retention_ms=-1))
    for _ in range(20):
        append(log, make_batch(2))
    assert log.apply_retention() == 0
    log.config = LogConfig(segment_bytes=500, retention_ms=-1, retention_bytes=1)
    count = len(log.segments)
    assert log.apply_retention() == count - 1
    assert len(log.segments) == 1


def test_maintain_rolls_and_expires(tmp_path, clock):
    config = LogConfig(segment_ms=1000, retention_ms=5000)
    log = PartitionLog.open(tmp_path / "t-0", config, clock)
    append(log, make_batch(2, timestamp=int(clock() * 1000)))
    clock.advance_ms(2000)
    now_ms = int(clock() * 1000)
    assert maintain([log], now_ms) == 0  # rolled, but not yet expired
    assert len(log.segments) == 2
    assert maintain([log], now_ms + 10_000) == 1
    assert log.log_start_offset == 2
