"""Property: after cleaning, the log still says what the writes said, key by key."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from compaction_helpers import COMPACT, Written, append_batch, as_map, assert_original, read_log
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from storage_helpers import FakeClock

from dari.records import Codec, Record, build_batch, iter_records
from dari.storage import LogCleaner, PartitionLog

RETENTION = 1_000_000
write = st.tuples(st.integers(0, 7), st.one_of(st.none(), st.binary(min_size=1, max_size=12)))
step = st.one_of(
    st.lists(write, min_size=1, max_size=6).map(lambda batch: ("append", batch)),
    st.just(("clean", None)),
    st.just(("roll", None)),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(step, min_size=1, max_size=40),
    codec=st.sampled_from([Codec.NONE, Codec.GZIP]),
    segment_bytes=st.integers(150, 800),
)
def test_cleaning_preserves_the_newest_value_of_every_key(steps, codec, segment_bytes):
    tmp = Path(tempfile.mkdtemp())
    try:
        clock = FakeClock()
        config = replace(COMPACT, segment_bytes=segment_bytes, delete_retention_ms=RETENTION)
        log = PartitionLog.open(tmp / "p-0", config, clock)
        cleaner = LogCleaner()
        written = Written({})
        expected: dict[bytes, bytes | None] = {}
        now = 2_000_000_000
        for kind, batch in steps:
            now += 10
            if kind == "append":
                items = [(b"k%d" % key, value, (), now) for key, value in batch]
                data = build_batch(items, compression=codec, now_ms=now)
                base = append_batch(log, data)
                for record in iter_records(data):
                    offset = base + record.offset
                    written.records[offset] = Record(offset, now, record.key, record.value)
                for key, value in batch:
                    expected[b"k%d" % key] = value
            elif kind == "clean":
                cleaner.clean(log, now, force=True)  # well before any tombstone expires
            else:
                log.roll_if_due(log.segments[-1].rolling_ms + config.roll_ms)
            _, records = read_log(log)
            assert_original(records, written)
            assert as_map(records) == expected

        # Everything closed and cleaned: one record per key, tombstones included.
        log.roll_if_due(log.segments[-1].rolling_ms + config.roll_ms)
        cleaner.clean(log, now, force=True)
        _, records = read_log(log)
        assert_original(records, written)
        assert as_map(records) == expected
        keyed = [r.key for r in records]
        assert len(keyed) == len(set(keyed))
        end = log.log_end_offset

        # Long after the last cleaning saw them, tombstones are gone; so is everything they hid.
        later = now + RETENTION
        cleaner.clean(log, later, force=True)
        _, records = read_log(log)
        assert_original(records, written)
        assert as_map(records) == {k: v for k, v in expected.items() if v is not None}
        assert log.log_end_offset == end
        log.close()
        reopened = PartitionLog.open(tmp / "p-0", config, clock)
        assert read_log(reopened)[1] == records
        reopened.close()
    finally:
        shutil.rmtree(tmp)
