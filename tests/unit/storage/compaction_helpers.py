"""Helpers for the log cleaner tests: keyed batches, reading a log with offset gaps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dari.records import BatchHeader, Record, build_batch, iter_records, validate
from dari.storage import LogConfig, PartitionLog

Item = tuple[bytes | None, bytes | None]  # (key, value); value None = tombstone

COMPACT = LogConfig(
    cleanup_policy="compact",
    segment_bytes=1200,
    index_interval_bytes=64,
    retention_ms=-1,
    min_cleanable_dirty_ratio=0.01,
    delete_retention_ms=60_000,
)


def keyed_batch(items: Sequence[Item], timestamp: int, compression: int = 0, **kw) -> bytes:
    """One batch of keyed records with timestamps timestamp, timestamp+1, ..."""
    return build_batch(
        [(key, value, (), timestamp + i) for i, (key, value) in enumerate(items)],
        compression=compression,
        now_ms=timestamp,
        **kw,
    )


def append_batch(log: PartitionLog, batch: bytes) -> int:
    buf = bytearray(batch)
    return log.append(buf, validate(buf)).base_offset


@dataclass
class Written:
    """Everything appended: offset -> record as first stored."""

    records: dict[int, Record]

    def latest(self, until: int | None = None) -> dict[bytes, bytes | None]:
        """key -> newest value (None for a tombstone) among the records below ``until``."""
        out: dict[bytes, bytes | None] = {}
        for offset in sorted(self.records):
            record = self.records[offset]
            if (until is None or offset < until) and record.key is not None:
                out[record.key] = record.value
        return out


def write_updates(
    log: PartitionLog,
    rounds: int,
    keys: int,
    *,
    per_batch: int = 4,
    start_ts: int = 1_000,
    tombstone_every: int = 0,
    compression: int = 0,
    written: Written | None = None,
) -> Written:
    """``rounds`` updates of each of ``keys`` keys, batched ``per_batch`` records at a time;
    every ``tombstone_every``-th update is a tombstone."""
    written = written if written is not None else Written({})
    items: list[Item] = []
    n = 0
    for r in range(rounds):
        for k in range(keys):
            n += 1
            value = None if tombstone_every and n % tombstone_every == 0 else b"v%d-%d" % (k, r)
            items.append((b"key-%d" % k, value))
    for i in range(0, len(items), per_batch):
        chunk = items[i : i + per_batch]
        ts = start_ts + i
        batch = keyed_batch(chunk, ts, compression)
        base = append_batch(log, batch)
        for record in iter_records(batch):
            written.records[base + record.offset] = Record(
                base + record.offset, record.timestamp, record.key, record.value, record.headers
            )
    return written


def read_log(log: PartitionLog, max_bytes: int = 1 << 20) -> tuple[list[BatchHeader], list[Record]]:
    """Every batch header and record from the log start to the log end, stepping over gaps
    (batches hold offsets, compacted ones with holes)."""
    headers: list[BatchHeader] = []
    records: list[Record] = []
    start = log.log_start_offset
    for header, batch in log.iter_batches(start, max_bytes):
        headers.append(header)
        records.extend(r for r in iter_records(batch) if r.offset >= start)
    return headers, records


def as_map(records: Sequence[Record]) -> dict[bytes, bytes | None]:
    out: dict[bytes, bytes | None] = {}
    for record in records:
        if record.key is not None:
            out[record.key] = record.value
    return out


def assert_original(records: Sequence[Record], written: Written) -> None:
    """Each record read back is the one written at its offset, in increasing offset order."""
    previous = -1
    for record in records:
        assert record.offset > previous
        previous = record.offset
        original = written.records[record.offset]
        assert (record.key, record.value, record.timestamp) == (
            original.key,
            original.value,
            original.timestamp,
        )


def temp_files(path) -> list[str]:
    return sorted(
        p.name for p in path.iterdir() if p.name.endswith((".cleaned", ".swap", ".deleted"))
    )
