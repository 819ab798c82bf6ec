"""The log cleaner: newest record per key, offsets kept, tombstones, thresholds, batch metadata."""

from __future__ import annotations

from dataclasses import replace

import pytest
from compaction_helpers import (
    COMPACT,
    Written,
    append_batch,
    as_map,
    assert_original,
    keyed_batch,
    read_log,
    temp_files,
    write_updates,
)

from dari.records import (
    Codec,
    ControlType,
    build_batch,
    build_control_batch,
    iter_batches,
    validate,
)
from dari.storage import LogCleaner, LogConfig, PartitionLog
from dari.storage.loader import (
    CLEAN_SHUTDOWN_FILE,
    Checkpoint,
    read_checkpoint,
    read_cleaner_checkpoint,
    write_checkpoint,
)

NOW = 2_000_000_000  # ms, after the FakeClock's start; record timestamps are far older


def roll(log: PartitionLog) -> None:
    """Close the active segment so everything written is cleanable."""
    assert log.roll_if_due(log.segments[-1].rolling_ms + log.config.roll_ms)


def closed_records(log: PartitionLog, records):
    active = log.segments[-1].base_offset
    return [r for r in records if r.offset < active]


# ---- configuration -------------------------------------------------------------------------------


def test_cleanup_policy_and_compaction_configs():
    config = LogConfig.from_topic_configs(
        {
            "cleanup.policy": "delete, compact",
            "delete.retention.ms": "1000",
            "min.cleanable.dirty.ratio": "0.25",
            "min.compaction.lag.ms": "50",
            "max.compaction.lag.ms": "5000",
            "segment.ms": "9000",
        }
    )
    assert config.cleanup_policy == "compact,delete"
    assert config.compact and config.delete
    assert (config.delete_retention_ms, config.min_cleanable_dirty_ratio) == (1000, 0.25)
    assert (config.min_compaction_lag_ms, config.max_compaction_lag_ms) == (50, 5000)
    assert config.roll_ms == 5000  # the cleaner never touches the active segment
    described = config.to_topic_configs()
    assert described["cleanup.policy"] == "compact,delete"
    assert described["min.cleanable.dirty.ratio"] == "0.25"
    assert LogConfig.from_topic_configs(described) == config
    default = LogConfig()
    assert (default.cleanup_policy, default.compact, default.delete) == ("delete", False, True)
    assert default.delete_retention_ms == 86_400_000
    assert default.max_compaction_lag_ms == (1 << 63) - 1
    assert default.roll_ms == default.segment_ms
    compact_only = LogConfig.from_topic_configs({"cleanup.policy": "compact"})
    assert compact_only.compact and not compact_only.delete


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("cleanup.policy", "shred"),
        ("cleanup.policy", "compact,,delete"),
        ("cleanup.policy", ""),
        ("min.cleanable.dirty.ratio", "1.5"),
        ("min.cleanable.dirty.ratio", "half"),
        ("delete.retention.ms", "-1"),
        ("min.compaction.lag.ms", "x"),
    ],
)
def test_bad_compaction_configs_name_the_config(name, value):
    with pytest.raises(ValueError, match=name):
        LogConfig.from_topic_configs({name: value})


# ---- the newest record per key -------------------------------------------------------------------


def test_cleaning_keeps_the_newest_record_per_key_at_its_original_offset(tmp_path, clock):
    path = tmp_path / "t-0"
    log = PartitionLog.open(path, COMPACT, clock)
    written = write_updates(log, rounds=40, keys=12, tombstone_every=9)
    end, segments_before, size_before = log.log_end_offset, len(log.segments), log.size_bytes
    cleaner = LogCleaner()
    assert cleaner.needs_cleaning(log, NOW)

    stats = cleaner.clean(log, NOW)

    assert stats.cleaned and stats.records_removed > 0
    assert log.log_end_offset == end
    assert log.size_bytes < size_before / 4
    _, records = read_log(log)
    assert_original(records, written)  # offsets and contents unchanged
    assert as_map(records) == written.latest()  # tombstones still there: first seen just now
    active = log.segments[-1].base_offset
    closed = closed_records(log, records)
    assert len({r.key for r in closed}) == len(closed)  # one record per key in the cleaned part
    assert {r.key: r.value for r in closed} == written.latest(until=active)
    assert log.cleaner_checkpoint.clean_offset == active
    assert temp_files(path) == []
    # The segment count stays bounded: a second pass merges the small cleaned segments.
    cleaner.clean(log, NOW, force=True)
    assert len(log.segments) <= 3 < segments_before
    for segment in log.segments[:-1]:
        assert segment.size <= COMPACT.segment_bytes
    _, again = read_log(log)
    assert again == records
    assert sorted(p.name for p in path.glob("*.log")) == [
        f"{s.base_offset:020d}.log" for s in log.segments
    ]


def test_offset_for_timestamp_after_cleaning(tmp_path, clock):
    log = PartitionLog.open(tmp_path / "t-0", COMPACT, clock)
    write_updates(log, rounds=20, keys=5)
    LogCleaner().clean(log, NOW, force=True)
    _, records = read_log(log)
    for target in range(900, 1_000 + 110):
        expected = next(((r.offset, r.timestamp) for r in records if r.timestamp >= target), None)
        assert log.offset_for_timestamp(target) == expected, target
    newest = max(records, key=lambda r: (r.timestamp, -r.offset))
    assert log.max_timestamp() == (newest.offset, newest.timestamp)


def test_a_restart_after_cleaning_finds_valid_indexes(tmp_path, clock):
    path = tmp_path / "t-0"
    log = PartitionLog.open(path, COMPACT, clock)
    written = write_updates(log, rounds=30, keys=8, tombstone_every=5)
    cleaner = LogCleaner()
    cleaner.clean(log, NOW)
    cleaner.clean(log, NOW, force=True)
    _, records = read_log(log)
    checkpoint = log.cleaner_checkpoint
    end = log.log_end_offset
    log.close()

    reopened = PartitionLog.open(path, COMPACT, clock)  # clean shutdown: indexes are only checked
    assert reopened.recovered_segments == 0
    assert reopened.cleaner_checkpoint == checkpoint == read_cleaner_checkpoint(path)
    assert read_log(reopened)[1] == records
    assert all(s.compacted for s in reopened.segments[:-1])
    # Appends continue at the same log end.
    assert append_batch(reopened, keyed_batch([(b"key-0", b"new")], 5_000)) == end
    reopened.close()

    # After a crash every segment is re-validated batch by batch: gaps are fine, nothing is cut.
    (path / CLEAN_SHUTDOWN_FILE).unlink()
    state = read_checkpoint(path)
    write_checkpoint(path, Checkpoint(state.log_start_offset, 0))
    crashed = PartitionLog.open(path, COMPACT, clock)
    assert crashed.recovered_segments == len(crashed.segments)
    assert crashed.truncated_bytes == 0
    _, after = read_log(crashed)
    assert after[:-1] == records and after[-1].value == b"new"
    assert_original(after[:-1], written)
    for record in after:
        assert crashed.offset_for_timestamp(record.timestamp)[1] <= record.timestamp
    crashed.close()


# ---- tombstones ----------------------------------------------------------------------------------


def test_tombstones_stay_for_delete_retention_ms_after_the_cleaning_that_saw_them(tmp_path, clock):
    config = replace(COMPACT, delete_retention_ms=60_000)
    log = PartitionLog.open(tmp_path / "t-0", config, clock)
    written = Written({})
    write_updates(log, rounds=10, keys=6, written=written)
    items = [(b"key-%d" % k, None) for k in (1, 3)]
    append_batch(log, keyed_batch(items, 2_000))
    write_updates(log, rounds=3, keys=2, start_ts=3_000, written=Written({}))  # others move on
    roll(log)  # everything is in closed segments now
    cleaner = LogCleaner()

    assert cleaner.clean(log, NOW).cleaned
    _, records = read_log(log)
    tombstones = {r.key for r in records if r.value is None}
    assert tombstones == {b"key-3"}  # key-1 was written again after its tombstone
    assert not cleaner.needs_cleaning(log, NOW + 59_999)
    stats = cleaner.clean(log, NOW + 59_999, force=True)
    assert stats.tombstones_removed == 0
    assert b"key-3" in as_map(read_log(log)[1])

    assert cleaner.needs_cleaning(log, NOW + 60_000)  # the tombstone expired: a pass is due
    stats = cleaner.clean(log, NOW + 60_000)
    assert stats.tombstones_removed == 1
    final = as_map(read_log(log)[1])
    assert b"key-3" not in final  # and every older value of key-3 went before it
    assert final[b"key-1"] == b"v1-2"
    assert log.cleaner_checkpoint.marks == ()
    assert not cleaner.needs_cleaning(log, NOW + 10**9)


def test_records_without_a_key_are_kept(tmp_path, clock):
    log = PartitionLog.open(tmp_path / "t-0", COMPACT, clock)
    for i in range(30):
        append_batch(log, keyed_batch([(None, b"plain-%d" % i), (b"k", b"%d" % i)], 1_000 + i))
    LogCleaner().clean(log, NOW, force=True)
    _, records = read_log(log)
    closed = closed_records(log, records)
    active = log.segments[-1].base_offset
    assert [r.value for r in closed if r.key is None] == [
        b"plain-%d" % i for i in range(30) if 2 * i < active
    ]
    assert sum(1 for r in closed if r.key == b"k") == 1


# ---- when to clean -------------------------------------------------------------------------------


def test_min_cleanable_dirty_ratio_is_respected(tmp_path, clock):
    config = replace(COMPACT, min_cleanable_dirty_ratio=0.5, segment_bytes=600)
    log = PartitionLog.open(tmp_path / "t-0", config, clock)
    written = write_updates(log, rounds=10, keys=40)  # distinct keys: cleaning keeps most
    cleaner = LogCleaner()
    assert cleaner.dirty_ratio(log, NOW) == 1.0
    assert cleaner.clean(log, NOW).cleaned
    assert cleaner.dirty_ratio(log, NOW) == 0.0
    assert not cleaner.needs_cleaning(log, NOW)
    # A little new data: below the ratio, nothing happens.
    write_updates(log, rounds=1, keys=16, start_ts=5_000, written=written)
    ratio = cleaner.dirty_ratio(log, NOW)
    assert 0 < ratio <= 0.5
    assert not cleaner.needs_cleaning(log, NOW)
    before = [(s.base_offset, s.size) for s in log.segments]
    assert not cleaner.clean(log, NOW).cleaned
    assert [(s.base_offset, s.size) for s in log.segments] == before
    # More: above the ratio.
    write_updates(log, rounds=3, keys=40, start_ts=6_000, written=written)
    assert cleaner.dirty_ratio(log, NOW) > 0.5
    assert cleaner.needs_cleaning(log, NOW)
    assert cleaner.clean(log, NOW).cleaned
    _, records = read_log(log)
    assert_original(records, written)
    assert as_map(records) == written.latest()


def test_min_compaction_lag_keeps_recent_segments_dirty(tmp_path, clock):
    config = replace(COMPACT, min_compaction_lag_ms=100_000)
    log = PartitionLog.open(tmp_path / "t-0", config, clock)
    written = write_updates(log, rounds=10, keys=5, start_ts=1_000)
    boundary = log.log_end_offset
    roll(log)
    write_updates(log, rounds=10, keys=5, start_ts=NOW - 50_000, written=written)  # recent
    cleaner = LogCleaner()
    cleaner.clean(log, NOW, force=True)
    _, records = read_log(log)
    assert_original(records, written)
    old = [r for r in records if r.offset < boundary]
    recent = [r for r in records if r.offset >= boundary]
    assert len(old) == 5  # compacted
    assert [r.offset for r in recent] == list(range(boundary, log.log_end_offset))  # untouched
    assert log.cleaner_checkpoint.clean_offset == boundary
    # Once the lag has passed, the rest is cleaned too.
    cleaner.clean(log, NOW + 100_000)
    _, records = read_log(log)
    assert as_map(records) == written.latest()
    assert len(closed_records(log, records)) == len({r.key for r in closed_records(log, records)})


def test_max_compaction_lag_forces_a_pass_below_the_dirty_ratio(tmp_path, clock):
    config = replace(COMPACT, min_cleanable_dirty_ratio=1.0, max_compaction_lag_ms=30_000)
    log = PartitionLog.open(tmp_path / "t-0", config, clock)
    write_updates(log, rounds=10, keys=4)
    cleaner = LogCleaner()
    rolled_at = int(clock() * 1000)
    assert not cleaner.needs_cleaning(log, rolled_at)  # a ratio of 1.0 is never exceeded
    assert cleaner.needs_cleaning(log, rolled_at + 30_001)
    # The active segment rolls by max.compaction.lag.ms too, so it can be cleaned in time.
    active = log.segments[-1]
    assert log.roll_if_due(active.rolling_ms + 30_000)


def test_delete_policy_logs_are_not_cleaned_and_compact_logs_keep_old_data(tmp_path, clock):
    delete_log = PartitionLog.open(tmp_path / "d-0", replace(COMPACT, cleanup_policy="delete"))
    write_updates(delete_log, rounds=10, keys=3)
    cleaner = LogCleaner()
    assert not cleaner.needs_cleaning(delete_log, NOW)
    assert not cleaner.clean(delete_log, NOW, force=True).cleaned

    timed = replace(COMPACT, retention_ms=1000, retention_bytes=100)
    compact_log = PartitionLog.open(tmp_path / "c-0", timed, clock)
    write_updates(compact_log, rounds=40, keys=3)
    assert len(compact_log.segments) > 2
    assert compact_log.apply_retention(NOW) == 0  # retention.* needs "delete" in the policy
    both_config = replace(timed, cleanup_policy="compact,delete")
    both = PartitionLog.open(tmp_path / "b-0", both_config, clock)
    write_updates(both, rounds=40, keys=3)
    segments = len(both.segments)
    assert both.apply_retention(NOW) == segments - 1


# ---- batch metadata ------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", [Codec.GZIP, Codec.ZSTD, Codec.LZ4, Codec.SNAPPY])
def test_compressed_batches_are_rebuilt_with_their_codec(tmp_path, clock, codec):
    log = PartitionLog.open(tmp_path / "t-0", replace(COMPACT, segment_bytes=800), clock)
    written = write_updates(log, rounds=30, keys=6, per_batch=5, compression=codec)
    stats = LogCleaner().clean(log, NOW)
    assert stats.batches_rewritten > 0
    headers, records = read_log(log)
    assert_original(records, written)
    assert as_map(records) == written.latest()
    assert {h.compression for h in headers} == {codec}
    for segment in log.segments:
        raw = segment.read(segment.base_offset, 1 << 20) if segment.size else b""
        validate(bytes(raw))  # CRCs of rebuilt batches are right


def test_batch_metadata_and_control_batches_survive(tmp_path, clock):
    log = PartitionLog.open(tmp_path / "t-0", COMPACT, clock)
    producer = {"producer_id": 7, "producer_epoch": 3}
    first = build_batch(
        [(b"a", b"1", (), 1_000), (b"b", b"1", (), 1_001), (b"c", b"1", (), 1_002)],
        base_sequence=0,
        is_transactional=True,
        partition_leader_epoch=5,
        now_ms=1_000,
        **producer,
    )
    append_batch(log, first)  # offsets 0-2
    marker = build_control_batch(ControlType.COMMIT, **producer, now_ms=1_003)
    append_batch(log, marker)  # offset 3
    other = build_batch(
        [(b"a", b"2", (), 1_004), (b"b", b"2", (), 1_005)],
        producer_id=9,
        producer_epoch=0,
        base_sequence=0,
        now_ms=1_004,
    )
    append_batch(log, other)  # offsets 4-5: supersedes a and b
    again = build_batch([(b"c", b"2", (), 1_006)], base_sequence=3, now_ms=1_006, **producer)
    append_batch(log, again)  # offset 6: supersedes c (same producer, later batch)
    appended_time = build_batch(
        [(b"d", b"1"), (b"d", b"2")], timestamp_type_log_append=True, now_ms=1_010
    )
    append_batch(log, appended_time)  # offsets 7-8
    roll(log)
    LogCleaner().clean(log, NOW)

    headers, records = read_log(log)
    records = [r for r in records if r.offset != 3]  # the marker's control record
    assert [(r.offset, r.key, r.value) for r in records] == [
        (4, b"a", b"2"),
        (5, b"b", b"2"),
        (6, b"c", b"2"),
        (8, b"d", b"2"),
    ]
    by_base = {h.base_offset: h for h in headers}
    # The first batch lost every record and is not its producer's last: gone.
    assert 0 not in by_base
    control = by_base[3]
    assert control.is_control and control.is_transactional
    data = bytes(log.read(3, 1 << 20))
    stored = next(iter_batches(data))[1].tobytes()
    assert stored[16:] == marker[16:]  # byte for byte after the broker-owned offset and epoch
    kept = by_base[7]
    assert kept.log_append_time and kept.max_timestamp == 1_010
    assert kept.last_offset_delta == 1 and kept.record_count == 1
    assert records[-1].timestamp == 1_010


def test_a_producers_last_batch_is_kept_empty(tmp_path, clock):
    log = PartitionLog.open(tmp_path / "t-0", COMPACT, clock)
    producer = {"producer_id": 11, "producer_epoch": 2}
    append_batch(log, build_batch([(b"x", b"1")], base_sequence=0, now_ms=1_000, **producer))
    append_batch(
        log, build_batch([(b"x", b"2"), (b"y", b"1")], base_sequence=1, now_ms=1_001, **producer)
    )
    append_batch(log, build_batch([(b"x", b"3"), (b"y", b"2")], now_ms=1_002))  # no producer
    roll(log)
    LogCleaner().clean(log, NOW)
    headers, records = read_log(log)
    assert [(r.offset, r.value) for r in records] == [(3, b"3"), (4, b"2")]
    empty = headers[0]
    assert (empty.base_offset, empty.record_count, empty.last_offset_delta) == (1, 0, 1)
    assert (empty.producer_id, empty.producer_epoch, empty.base_sequence) == (11, 2, 1)


def test_truncation_below_the_clean_offset_clamps_the_checkpoint(tmp_path, clock):
    path = tmp_path / "t-0"
    log = PartitionLog.open(path, COMPACT, clock)
    write_updates(log, rounds=20, keys=4)
    LogCleaner().clean(log, NOW)
    clean_offset = log.cleaner_checkpoint.clean_offset
    assert clean_offset > 40
    log.truncate_to(20)
    assert log.cleaner_checkpoint.clean_offset <= log.log_end_offset <= 20
    assert read_cleaner_checkpoint(path) == log.cleaner_checkpoint
    write_updates(log, rounds=5, keys=4, start_ts=9_000)
    log.close()
    reopened = PartitionLog.open(path, COMPACT, clock)
    assert reopened.truncated_bytes == 0
    _, records = read_log(reopened)
    assert [r.offset for r in records] == sorted({r.offset for r in records})
    reopened.close()


def test_the_batch_ending_the_log_is_kept_empty_when_its_tombstone_expires(tmp_path, clock):
    log = PartitionLog.open(tmp_path / "t-0", COMPACT, clock)
    write_updates(log, rounds=5, keys=3)
    tail = append_batch(log, keyed_batch([(b"key-0", None)], 9_000))
    roll(log)  # the active segment is now empty
    cleaner = LogCleaner()
    cleaner.clean(log, NOW)
    assert cleaner.clean(log, NOW + COMPACT.delete_retention_ms).tombstones_removed == 1
    assert log.log_end_offset == tail + 1
    headers, records = read_log(log)
    assert b"key-0" not in as_map(records)
    last = headers[-1]
    assert (last.base_offset, last.record_count, last.next_offset) == (tail, 0, tail + 1)
    data = log.read(tail, 1 << 20)  # a consumer at the tail still gets a batch to step over
    assert next(iter_batches(bytes(data)))[0].next_offset == log.log_end_offset
