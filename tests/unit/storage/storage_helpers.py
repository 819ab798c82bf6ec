"""Helpers for storage tests: real batches (dari.records.builder), a settable clock."""

from __future__ import annotations

from dataclasses import dataclass

from dari.records import build_batch, iter_batch_records, iter_batches, validate
from dari.storage import AppendInfo, PartitionLog


def make_batch(
    count: int = 3,
    *,
    value: bytes = b"v" * 20,
    timestamp: int = 1_000,
    step: int = 1,
    compression: int = 0,
) -> bytes:
    """A v2 batch of ``count`` records with timestamps timestamp, timestamp+step, ..."""
    return build_batch(
        [(None, value + b"%d" % i, (), timestamp + i * step) for i in range(count)],
        compression=compression,
        now_ms=timestamp,
    )


def append(log: PartitionLog, *batches: bytes) -> AppendInfo:
    buf = bytearray(b"".join(batches))
    return log.append(buf, validate(buf))


def record_offsets(data: bytes | memoryview) -> list[int]:
    return [record.offset for _, record in iter_batch_records(bytes(data))]


def batch_base_offsets(data: bytes | memoryview) -> list[int]:
    return [header.base_offset for header, _ in iter_batches(bytes(data))]


def read_all(log: PartitionLog) -> list[int]:
    """Every record offset from log start to log end, reading segment by segment."""
    offsets: list[int] = []
    offset = log.log_start_offset
    while offset < log.log_end_offset:
        data = log.read(offset, 1 << 20)
        assert data, f"no data at {offset}"
        got = [o for o in record_offsets(data) if o >= offset]
        offsets.extend(got)
        offset = got[-1] + 1
    return offsets


@dataclass
class FakeClock:
    now: float = 1_000_000.0  # seconds

    def __call__(self) -> float:
        return self.now

    def advance_ms(self, ms: int) -> None:
        self.now += ms / 1000
