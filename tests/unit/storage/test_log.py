"""PartitionLog: append/read, indexes, timestamps, rolls, restart, DeleteRecords, truncation."""

from __future__ import annotations

import itertools
import os
import random
import threading

import pytest
from compaction_helpers import COMPACT, write_updates
from storage_helpers import (
    FakeClock,
    append,
    batch_base_offsets,
    make_batch,
    read_all,
    record_offsets,
)

from dari.records import (
    TIMESTAMP_TYPE_MASK,
    Codec,
    iter_batch_records,
    iter_batches,
    parse_header,
    validate,
)
from dari.storage import (
    LogCleaner,
    LogClosedError,
    LogConfig,
    OffsetOutOfRangeError,
    PartitionLog,
)
from dari.storage.segment import segment_name


def open_log(path, clock=None, **config) -> PartitionLog:
    kwargs = {} if clock is None else {"clock": clock}
    return PartitionLog.open(path, LogConfig(**config), **kwargs)


def test_append_assigns_contiguous_offsets_and_reads_back_across_rolls(tmp_path):
    log = open_log(tmp_path / "t-0", segment_bytes=1500, index_interval_bytes=100)
    written = bytearray()
    expected_next = 0
    rng = random.Random(7)
    for _ in range(120):
        count = rng.randint(1, 6)
        buf = bytearray(make_batch(count))
        info = log.append(buf, validate(buf))
        assert (info.base_offset, info.last_offset) == (expected_next, expected_next + count - 1)
        assert info.log_append_time == -1
        expected_next += count
        written += buf
    assert log.log_end_offset == expected_next
    assert len(log.segments) > 5
    # Exactly Kafka's file layout, and the files hold the appended bytes unchanged.
    on_disk = b""
    for segment in log.segments:
        for suffix in (".log", ".index", ".timeindex"):
            assert (tmp_path / "t-0" / (segment_name(segment.base_offset) + suffix)).exists()
        on_disk += segment.log_path.read_bytes()
        assert segment.size <= 1500
    assert on_disk == written
    assert log.size_bytes == len(written)
    assert read_all(log) == list(range(expected_next))


def test_segment_base_offsets_follow_previous_segment_end(tmp_path):
    log = open_log(tmp_path / "t-0", segment_bytes=600)
    for _ in range(30):
        append(log, make_batch(4))
    segments = log.segments
    for previous, current in itertools.pairwise(segments):
        assert current.base_offset == previous.next_offset


def test_read_from_the_middle_of_a_batch_returns_the_whole_batch(tmp_path):
    log = open_log(tmp_path / "t-0")
    append(log, make_batch(10), make_batch(10))
    data = log.read(15, 1 << 20)
    assert batch_base_offsets(data) == [10]
    assert record_offsets(data) == list(range(10, 20))


def test_read_returns_whole_batches_within_max_bytes_but_at_least_one(tmp_path):
    log = open_log(tmp_path / "t-0", index_interval_bytes=128)
    big = make_batch(50, value=b"x" * 100)
    for _ in range(5):
        append(log, make_batch(2), big)
    one = log.read(0, 1)  # smaller than any batch: still one whole batch
    assert len(list(iter_batches(one))) == 1
    big_at = log.read(2, 10)
    assert len(big_at) == len(big)
    for max_bytes in (200, 1000, 6000, 9000, 20000):
        data = log.read(0, max_bytes)
        batches = list(iter_batches(data))  # strict: raises on a partial batch
        assert len(data) <= max_bytes or len(batches) == 1
        # Greedy: the next batch would not have fitted.
        following = log.read(batches[-1][0].next_offset, 1 << 20)
        if following:
            assert len(data) + len(next(iter_batches(following))[1]) > max_bytes


def test_sparse_index_finds_every_offset_across_many_segments(tmp_path):
    log = open_log(tmp_path / "t-0", segment_bytes=3000, index_interval_bytes=64)
    rng = random.Random(3)
    for _ in range(300):
        append(log, make_batch(rng.randint(1, 4), value=b"y" * rng.randint(0, 60)))
    assert len(log.segments) > 10
    for segment in log.segments[:-1]:  # rolled segments have their index files complete
        index = segment.offset_index
        assert len(index) > 0
        assert index.path.stat().st_size == 8 * len(index)
    for offset in range(log.log_end_offset):
        data = log.read(offset, 1)
        (header, _), *rest = iter_batches(data)
        assert not rest
        assert header.base_offset <= offset <= header.last_offset


def test_read_out_of_range(tmp_path):
    log = open_log(tmp_path / "t-0")
    assert log.read(0, 100) == b""
    append(log, make_batch(3))
    assert log.read(3, 100) == b""
    with pytest.raises(OffsetOutOfRangeError) as excinfo:
        log.read(4, 100)
    assert (excinfo.value.log_start_offset, excinfo.value.log_end_offset) == (0, 3)
    with pytest.raises(OffsetOutOfRangeError):
        log.read(-1, 100)


def _brute_force_for_timestamp(log: PartitionLog, target: int):
    data = b"".join(bytes(s.log_path.read_bytes()) for s in log.segments)
    for _, record in iter_batch_records(data):
        if record.offset >= log.log_start_offset and record.timestamp >= target:
            return record.offset, record.timestamp
    return None


@pytest.mark.parametrize("compression", [Codec.NONE, Codec.GZIP])
def test_offset_for_timestamp_matches_a_full_scan(tmp_path, compression):
    log = open_log(tmp_path / "t-0", segment_bytes=1200, index_interval_bytes=100)
    rng = random.Random(11)
    ts = 10_000
    for _ in range(80):
        # Mostly increasing, sometimes jumping back (producers' clocks disagree).
        ts += rng.randint(-40, 100)
        append(
            log,
            make_batch(
                rng.randint(1, 5), timestamp=ts, step=rng.randint(0, 7), compression=compression
            ),
        )
    assert len(log.segments) > 3
    for target in [0, 9_000, *range(9_900, ts + 200, 37), ts + 10_000]:
        assert log.offset_for_timestamp(target) == _brute_force_for_timestamp(log, target)
    assert log.offset_for_timestamp(ts + 10_000) is None


def test_max_timestamp(tmp_path):
    log = open_log(tmp_path / "t-0", segment_bytes=500)
    assert log.max_timestamp() == (-1, -1)
    append(log, make_batch(3, timestamp=100))
    append(log, make_batch(3, timestamp=900, step=5))  # records 3..5: 900, 905, 910
    append(log, make_batch(3, timestamp=300))
    append(log, make_batch(3, timestamp=910, step=0))  # ties do not win
    assert log.max_timestamp() == (5, 910)
    log.close()
    assert open_log(tmp_path / "t-0", segment_bytes=500).max_timestamp() == (5, 910)


def test_log_append_time_rewrites_timestamps_and_crc(tmp_path, clock):
    log = open_log(tmp_path / "t-0", clock, log_append_time=True)
    info = append(log, make_batch(3, timestamp=5), make_batch(2, timestamp=6))
    now_ms = int(clock() * 1000)
    assert info.log_append_time == now_ms
    data = log.read(0, 1 << 20)
    headers = validate(data)  # CRCs were recomputed
    assert all(h.attributes & TIMESTAMP_TYPE_MASK for h in headers)
    assert all(h.max_timestamp == now_ms for h in headers)
    assert {r.timestamp for _, r in iter_batch_records(data)} == {now_ms}
    assert log.offset_for_timestamp(now_ms) == (0, now_ms)


def test_leader_epoch_is_written(tmp_path):
    log = open_log(tmp_path / "t-0")
    buf = bytearray(make_batch(2))
    log.append(buf, validate(buf), leader_epoch=7)
    assert parse_header(log.read(0, 100)).partition_leader_epoch == 7


def test_segment_ms_rolls_by_time(tmp_path, clock):
    log = open_log(tmp_path / "t-0", clock, segment_ms=1000)
    assert not log.roll_if_due()  # an empty segment never rolls
    append(log, make_batch(1))
    clock.advance_ms(999)
    assert not log.roll_if_due()
    append(log, make_batch(1))
    clock.advance_ms(1)
    assert log.roll_if_due()
    assert [s.base_offset for s in log.segments] == [0, 2]
    append(log, make_batch(1))
    clock.advance_ms(1000)
    append(log, make_batch(1))  # the append itself rolls the overdue segment
    assert [s.base_offset for s in log.segments] == [0, 2, 3]


def test_restart_keeps_offsets_contiguous(tmp_path, clock):
    path = tmp_path / "t-0"
    log = open_log(path, clock, segment_bytes=700)
    for _ in range(20):
        append(log, make_batch(3))
    log.close()
    log = open_log(path, clock, segment_bytes=700)
    assert log.recovered_segments == 0  # clean shutdown: nothing rescanned
    assert log.log_end_offset == 60
    assert append(log, make_batch(2)).base_offset == 60
    log.close()
    log = open_log(path, clock, segment_bytes=700)
    assert read_all(log) == list(range(62))
    assert log.offset_for_timestamp(1_001) == (1, 1_001)


def test_delete_records_advances_log_start_and_survives_restart(tmp_path):
    path = tmp_path / "t-0"
    log = open_log(path, segment_bytes=400)
    for _ in range(20):
        append(log, make_batch(2))
    first_files = len(list(path.glob("*.log")))
    assert log.delete_records(17) == 17
    assert log.delete_records(5) == 17  # never moves back
    assert len(list(path.glob("*.log"))) < first_files
    assert log.segments[0].base_offset <= 17 < log.segments[0].next_offset
    with pytest.raises(OffsetOutOfRangeError):
        log.read(16, 100)
    assert record_offsets(log.read(17, 1))[-1] == 17  # the batch holding 17 (starts at 16)
    with pytest.raises(OffsetOutOfRangeError):
        log.delete_records(41)
    log.close()
    log = open_log(path, segment_bytes=400)
    assert (log.log_start_offset, log.log_end_offset) == (17, 40)
    assert log.delete_records(40) == 40  # everything: the log is empty but keeps its offsets
    assert log.read(40, 100) == b""
    assert append(log, make_batch(1)).base_offset == 40
    assert [s.base_offset for s in log.segments] == [40]


def test_truncate_to_drops_whole_batches(tmp_path):
    path = tmp_path / "t-0"
    log = open_log(path, segment_bytes=500, index_interval_bytes=50)
    for _ in range(30):
        append(log, make_batch(3))
    assert log.truncate_to(50) == 48  # 50 is inside the batch 48..50
    assert read_all(log) == list(range(48))
    assert all(s.base_offset < 48 for s in log.segments)
    assert append(log, make_batch(3)).base_offset == 48
    assert log.truncate_to(0) == 0
    assert (log.log_start_offset, log.log_end_offset, log.size_bytes) == (0, 0, 0)
    append(log, make_batch(1))
    log.close()
    assert read_all(open_log(path)) == [0]


def test_flush_makes_everything_durable(tmp_path):
    log = open_log(tmp_path / "t-0", segment_bytes=300)
    assert log.flushed_offset == 0
    for _ in range(10):
        append(log, make_batch(2))
    assert log.flushed_offset < log.log_end_offset and log.is_dirty
    log.flush()
    assert log.flushed_offset == log.log_end_offset == 20
    assert not log.is_dirty
    rounds = log.flush_count
    log.flush()
    assert log.flush_count == rounds  # nothing to do: no fsync


def test_flush_in_a_thread_while_appending_and_deleting(tmp_path):
    log = open_log(tmp_path / "t-0", segment_bytes=400, retention_bytes=2000)
    stop = threading.Event()
    errors: list[BaseException] = []

    def flusher():
        while not stop.is_set():
            try:
                log.flush()
            except BaseException as exc:
                errors.append(exc)
                return

    thread = threading.Thread(target=flusher)
    thread.start()
    try:
        for i in range(400):
            append(log, make_batch(2))
            if i % 20 == 0:
                log.apply_retention()
    finally:
        stop.set()
        thread.join()
    assert not errors
    log.flush()
    assert log.flushed_offset == log.log_end_offset == 800
    assert read_all(log) == list(range(log.log_start_offset, 800))


def test_closed_log_rejects_appends(tmp_path):
    log = open_log(tmp_path / "t-0")
    log.close()
    with pytest.raises(LogClosedError):
        append(log, make_batch(1))


def test_delete_removes_the_directory(tmp_path):
    log = open_log(tmp_path / "t-0")
    append(log, make_batch(1))
    log.delete()
    assert os.listdir(tmp_path) == []


def test_clock_injection_drives_first_append_time(tmp_path):
    clock = FakeClock(now=50.0)
    log = open_log(tmp_path / "t-0", clock, segment_ms=10)
    append(log, make_batch(1))
    assert log.segments[-1].rolling_ms == 50_000


def test_retention_in_a_worker_thread_while_reading_and_appending(tmp_path):
    log = open_log(tmp_path / "t-0", segment_bytes=400, retention_bytes=1200, retention_ms=-1)
    stop = threading.Event()
    errors: list[BaseException] = []
    deleted = 0

    def retention():
        nonlocal deleted
        while not stop.is_set():
            try:
                deleted += log.apply_retention()
            except BaseException as exc:
                errors.append(exc)
                return

    thread = threading.Thread(target=retention)
    thread.start()
    reads = 0
    try:
        for _ in range(600):
            append(log, make_batch(2))
            start = log.log_start_offset
            try:
                data = log.read(start, 1 << 20)
            except OffsetOutOfRangeError:
                continue  # retention moved the start in between: a legitimate answer
            assert record_offsets(data)[-1] >= start
            reads += 1
    finally:
        stop.set()
        thread.join()
    assert not errors
    assert deleted > 0 and reads > 0
    assert log.size_bytes == sum(p.stat().st_size for p in (tmp_path / "t-0").glob("*.log"))
    assert read_all(log) == list(range(log.log_start_offset, 1200))


# ---- iter_batches: whole-log reads -----------------------------------------------------------


def test_iter_batches_of_an_empty_log_yields_nothing(tmp_path):
    log = open_log(tmp_path / "t-0")
    assert list(log.iter_batches(0)) == []
    log.delete_records(0)
    assert list(log.iter_batches(5)) == []


@pytest.mark.parametrize("chunk_bytes", [1, 300, 1 << 20])
def test_iter_batches_crosses_segments_from_inside_a_batch(tmp_path, chunk_bytes):
    log = open_log(tmp_path / "t-0", segment_bytes=700, index_interval_bytes=100)
    for _ in range(30):
        append(log, make_batch(3))  # offsets 3n .. 3n+2
    assert len(log.segments) > 3
    for start in (0, 1, 4, 44, 45, 89):
        batches = list(log.iter_batches(start, chunk_bytes))
        assert [h.base_offset for h, _ in batches] == list(range(start // 3 * 3, 90, 3))
        assert all(h.size == len(b) for h, b in batches)
        assert [o for _, b in batches for o in record_offsets(b) if o >= start] == list(
            range(start, 90)
        )
    assert list(log.iter_batches(90)) == []


def test_iter_batches_starts_at_the_log_start(tmp_path):
    log = open_log(tmp_path / "t-0", segment_bytes=700)
    for _ in range(30):
        append(log, make_batch(3))
    log.delete_records(40)
    first, *_ = log.iter_batches(0)
    assert first[0].base_offset == 39  # the batch holding the log start offset
    assert first[0].last_offset >= log.log_start_offset


def test_iter_batches_steps_over_the_gaps_of_a_compacted_log(tmp_path):
    log = PartitionLog.open(tmp_path / "t-0", COMPACT)
    written = write_updates(log, rounds=6, keys=5)
    assert log.roll_if_due(log.segments[-1].rolling_ms + log.config.roll_ms)
    assert LogCleaner().clean(log, 2_000_000_000, force=True).cleaned
    batches = list(log.iter_batches(0, 200))
    offsets = [o for _, b in batches for o in record_offsets(b)]
    assert len(offsets) < len(written.records)  # compaction left gaps
    assert offsets == sorted(offsets)
    latest = {}
    for offset in offsets:
        latest[written.records[offset].key] = written.records[offset].value
    assert latest == written.latest()
    middle = offsets[len(offsets) // 2] - 1  # maybe in a gap: starts at the next batch
    later = [o for _, b in log.iter_batches(middle) for o in record_offsets(b) if o >= middle]
    assert later == [o for o in offsets if o >= middle]
