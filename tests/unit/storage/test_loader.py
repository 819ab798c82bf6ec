"""Recovery: torn tails, corrupt batches, broken or missing indexes, leftover files."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from storage_helpers import append, make_batch, read_all

from dari.records import Codec, validate
from dari.storage import LogConfig, PartitionLog
from dari.storage.loader import CLEAN_SHUTDOWN_FILE, Checkpoint, read_checkpoint, write_checkpoint

CONFIG = LogConfig(index_interval_bytes=64, retention_ms=-1)


def simulate_crash(path: Path, recovery_point: int | None = None) -> None:
    """Make a cleanly closed log look like the process died (optionally before rolled segments
    were flushed, by moving the recovery point back)."""
    (path / CLEAN_SHUTDOWN_FILE).unlink()
    if recovery_point is not None:
        checkpoint = read_checkpoint(path)
        write_checkpoint(path, Checkpoint(checkpoint.log_start_offset, recovery_point))


def build_log(path: Path, batches: list[bytes], config: LogConfig = CONFIG) -> list[int]:
    """Append each batch separately, close; return the batches' end positions in the file."""
    log = PartitionLog.open(path, config)
    ends, total = [], 0
    for batch in batches:
        append(log, batch)
        total += len(batch)
        ends.append(total)
    log.close()
    return ends


def test_truncating_the_last_batch_at_every_byte(tmp_path):
    original = tmp_path / "original"
    batches = [make_batch(i % 4 + 1, value=b"z" * 30) for i in range(12)]
    ends = build_log(original, batches)
    last_start, total = ends[-2], ends[-1]
    for cut in range(last_start, total + 1):
        path = tmp_path / f"cut-{cut}"
        shutil.copytree(original, path)
        os.truncate(path / "00000000000000000000.log", cut)
        simulate_crash(path)
        log = PartitionLog.open(path, CONFIG)
        kept = total if cut == total else last_start
        expected_end = sum(i % 4 + 1 for i in range(12 if cut == total else 11))
        assert (path / "00000000000000000000.log").stat().st_size == kept
        assert log.log_end_offset == expected_end
        assert log.truncated_bytes == cut - kept
        assert read_all(log) == list(range(expected_end))
        # Appends continue right after the recovered prefix.
        assert append(log, make_batch(1)).base_offset == expected_end
        log.close()
        shutil.rmtree(path)


def test_corrupt_batch_in_the_middle_of_the_active_segment(tmp_path):
    path = tmp_path / "t-0"
    batches = [make_batch(2) for _ in range(10)]
    ends = build_log(path, batches)
    log_file = path / "00000000000000000000.log"
    data = bytearray(log_file.read_bytes())
    data[ends[4] + 40] ^= 0xFF  # inside batch 5 (CRC-covered)
    log_file.write_bytes(data)
    simulate_crash(path)
    log = PartitionLog.open(path, CONFIG)
    assert log.log_end_offset == 10
    assert log_file.stat().st_size == ends[4]


def test_corruption_in_an_unflushed_closed_segment_drops_later_segments(tmp_path):
    path = tmp_path / "t-0"
    config = LogConfig(segment_bytes=400, index_interval_bytes=64, retention_ms=-1)
    build_log(path, [make_batch(2) for _ in range(20)], config)
    logs = sorted(path.glob("*.log"))
    assert len(logs) >= 3
    data = bytearray(logs[1].read_bytes())
    data[-5] ^= 0x01  # the last batch of the second segment
    logs[1].write_bytes(data)
    simulate_crash(path, recovery_point=0)
    log = PartitionLog.open(path, config)
    second = log.segments[1]
    assert len(log.segments) == 2  # everything after the corruption is unreachable
    assert log.log_end_offset == second.next_offset
    assert read_all(log) == list(range(log.log_end_offset))
    assert sorted(path.glob("*.log")) == logs[:2]


def test_flushed_closed_segments_are_not_rescanned(tmp_path):
    path = tmp_path / "t-0"
    config = LogConfig(segment_bytes=400, retention_ms=-1)
    log = PartitionLog.open(path, config)
    for _ in range(20):
        append(log, make_batch(2))
    log.flush()  # fsyncs rolled segments and moves the recovery point to the active one
    active_base = log.segments[-1].base_offset
    assert read_checkpoint(path).recovery_point == active_base
    log.close()
    simulate_crash(path)
    log = PartitionLog.open(path, config)
    assert log.recovered_segments == 1
    assert read_all(log) == list(range(40))


def test_corrupt_and_missing_index_files_are_rebuilt(tmp_path):
    path = tmp_path / "t-0"
    config = LogConfig(segment_bytes=2000, index_interval_bytes=64, retention_ms=-1)
    build_log(path, [make_batch(3, timestamp=1000 + 3 * i) for i in range(60)], config)
    indexes = sorted(path.glob("*.index"))
    time_indexes = sorted(path.glob("*.timeindex"))
    good = {p: p.read_bytes() for p in indexes + time_indexes}
    assert all(good.values())
    indexes[0].write_bytes(good[indexes[0]][:-3])  # torn entry: bad size
    indexes[1].write_bytes(good[indexes[1]][8:16] + good[indexes[1]][:8])  # not increasing
    bogus_position = bytearray(good[indexes[2]])
    bogus_position[-4:] = (10**6).to_bytes(4, "big")  # beyond the log
    indexes[2].write_bytes(bogus_position)
    indexes[3].unlink()
    time_indexes[3].unlink()
    time_indexes[4].write_bytes(b"\xff" * 12)  # timestamp far ahead of the log
    log = PartitionLog.open(path, config)  # clean shutdown marker is present
    assert log.recovered_segments == 5
    for p, content in good.items():
        assert p.read_bytes() == content, p.name
    assert read_all(log) == list(range(180))
    for offset in range(180):
        assert log.offset_for_timestamp(1_000 + offset) == (offset, 1_000 + offset)


def test_leftover_temporary_files_are_removed(tmp_path):
    path = tmp_path / "t-0"
    build_log(path, [make_batch(2)])
    leftovers = [
        path / "00000000000000000000.log.cleaned",
        path / "00000000000000000000.log.swap",
        path / "00000000000000000100.log.deleted",
        path / "00000000000000000100.index",  # index whose log is gone
        path / "log-state.checkpoint.tmp",
    ]
    for leftover in leftovers:
        leftover.write_bytes(b"junk")
    log = PartitionLog.open(path, CONFIG)
    assert not any(p.exists() for p in leftovers)
    assert read_all(log) == [0, 1]


def test_empty_or_garbage_log_file_recovers_to_empty(tmp_path):
    path = tmp_path / "t-0"
    path.mkdir()
    (path / "00000000000000000000.log").write_bytes(os.urandom(500))
    log = PartitionLog.open(path, CONFIG)
    assert (log.log_start_offset, log.log_end_offset, log.size_bytes) == (0, 0, 0)
    assert append(log, make_batch(2)).base_offset == 0


# ---- property: recovery keeps exactly the complete, CRC-valid prefix ----------------------------

batch_specs = st.lists(
    st.tuples(
        st.integers(1, 5),  # records
        st.binary(max_size=60),  # value
        st.sampled_from([Codec.NONE, Codec.GZIP]),
    ),
    min_size=1,
    max_size=8,
)


def _make(specs) -> list[bytes]:
    return [
        make_batch(count, value=value, timestamp=1000 + i, compression=codec)
        for i, (count, value, codec) in enumerate(specs)
    ]


def _recovered(batches: list[bytes], mutate) -> tuple[bytes, PartitionLog, list[bytes]]:
    """Build a log from ``batches``, let ``mutate`` damage its .log bytes, crash, reopen."""
    tmp = Path(tempfile.mkdtemp())
    try:
        path = tmp / "p-0"
        build_log(path, batches)
        log_file = path / "00000000000000000000.log"
        stored = log_file.read_bytes()
        stored_batches, pos = [], 0
        for batch in batches:
            stored_batches.append(stored[pos : pos + len(batch)])
            pos += len(batch)
        log_file.write_bytes(mutate(stored))
        simulate_crash(path)
        log = PartitionLog.open(path, CONFIG)
        content = log_file.read_bytes()
        data = log.read(0, 1 << 30) if log.log_end_offset else b""
        assert bytes(data) == content
        log.close()
        return content, log, stored_batches
    finally:
        shutil.rmtree(tmp)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=batch_specs, cut_fraction=st.floats(0, 1))
def test_recovery_after_truncation_keeps_the_complete_prefix(specs, cut_fraction):
    batches = _make(specs)
    total = sum(map(len, batches))
    cut = round(total * cut_fraction)
    content, log, stored = _recovered(batches, lambda data: data[:cut])
    kept, end = [], 0
    for batch in stored:
        if end + len(batch) > cut:
            break
        kept.append(batch)
        end += len(batch)
    assert content == b"".join(kept)
    assert log.log_end_offset == sum(count for count, _, _ in specs[: len(kept)])
    validate(content)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=batch_specs, data=st.data())
def test_a_flipped_byte_drops_its_batch_and_all_after_it(specs, data):
    batches = _make(specs)
    victim = data.draw(st.integers(0, len(batches) - 1), label="victim batch")
    start = sum(map(len, batches[:victim]))
    # Every byte except the partition leader epoch (12..15), which Kafka's CRC does not cover.
    offset_in_batch = data.draw(
        st.integers(0, len(batches[victim]) - 1).filter(lambda i: not 12 <= i < 16),
        label="byte",
    )
    bit = data.draw(st.integers(0, 7), label="bit")

    def flip(stored: bytes) -> bytes:
        damaged = bytearray(stored)
        damaged[start + offset_in_batch] ^= 1 << bit
        return bytes(damaged)

    content, log, stored = _recovered(batches, flip)
    assert content == b"".join(stored[:victim])
    assert log.log_end_offset == sum(count for count, _, _ in specs[:victim])
