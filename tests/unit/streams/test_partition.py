"""Kafka's produce rules on one Partition: a real PartitionLog in a temporary directory and real
record batches from ``dari.records``, no sockets."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from dari.records import build_batch, iter_batches, iter_records
from dari.storage import LogConfig, PartitionLog
from dari.streams.errors import (
    AppendError,
    OffsetOutOfRangeError,
    PolicyViolationError,
)
from dari.streams.partition import Partition, wait_for_append
from dari.streams.producer_state import ProducerStates
from dari.streams.waiters import AppendWaiters

PID = 42


class Broker:
    """One partition as a broker holds it; ``restart`` closes and reopens it from disk."""

    def __init__(self, directory: Path, config: LogConfig) -> None:
        self.directory = directory
        self.config = config
        self.open()

    def open(self) -> None:
        self.states = ProducerStates()
        self.waiters = AppendWaiters()
        self.log = PartitionLog.open(self.directory, self.config)
        self.partition = Partition("t", 0, self.log, self.states, self.waiters)

    def close(self, snapshot: bool = True) -> None:
        if snapshot:
            self.states.snapshot_all(closing=True)
        self.log.close()

    def restart(self, snapshot: bool = True) -> Partition:
        self.close(snapshot)
        self.open()
        return self.partition


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "t-0", LogConfig(retention_ms=-1))
    yield b
    b.close()


@pytest.fixture
def compacted(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "c-0", LogConfig(retention_ms=-1, cleanup_policy="compact"))
    yield b
    b.close()


def records(count: int, start: int = 0) -> list[tuple[bytes, bytes]]:
    return [(b"k%d" % i, b"v%d" % i) for i in range(start, start + count)]


def idempotent(count: int, sequence: int, epoch: int = 0, pid: int = PID) -> bytes:
    return build_batch(
        records(count, sequence), producer_id=pid, producer_epoch=epoch, base_sequence=sequence
    )


def stored_values(partition: Partition) -> list[bytes | None]:
    data = partition.read(partition.log_start_offset, 1 << 20)
    return [r.value for _header, batch in iter_batches(data) for r in iter_records(batch)]


# -- offsets and validation -----------------------------------------------------------------
def test_appends_get_consecutive_offsets(broker: Broker) -> None:
    p = broker.partition
    first = p.append(build_batch(records(3)))
    second = p.append(memoryview(build_batch(records(2, 3))))
    assert (first.error, first.base_offset, first.log_start_offset) == (None, 0, 0)
    assert (second.error, second.base_offset) == (None, 3)
    assert first.log_append_time == -1  # CreateTime topic
    assert p.high_watermark == 5
    assert stored_values(p) == [b"v0", b"v1", b"v2", b"v3", b"v4"]


def test_log_append_time_is_reported(tmp_path: Path) -> None:
    b = Broker(tmp_path / "t-0", LogConfig(retention_ms=-1, log_append_time=True))
    try:
        result = b.partition.append(build_batch(records(1)))
        assert result.error is None and result.log_append_time > 0
    finally:
        b.close()


@pytest.mark.parametrize("payload", [None, b""])
def test_no_batches_is_an_invalid_record(broker: Broker, payload: bytes | None) -> None:
    result = broker.partition.append(payload)
    assert result.error is AppendError.INVALID_RECORD
    assert (result.base_offset, result.log_start_offset) == (-1, 0)


def test_oversized_and_corrupt_batches_are_refused(tmp_path: Path) -> None:
    b = Broker(tmp_path / "t-0", LogConfig(retention_ms=-1, max_message_bytes=200))
    try:
        big = build_batch([(b"k", b"x" * 500)])
        assert b.partition.append(big).error is AppendError.MESSAGE_TOO_LARGE
        corrupt = bytearray(build_batch(records(1)))
        corrupt[-1] ^= 0xFF  # the CRC no longer matches
        result = b.partition.append(bytes(corrupt))
        assert result.error is AppendError.CORRUPT_RECORD and result.message
        old_magic = bytearray(build_batch(records(1)))
        old_magic[16] = 1
        assert b.partition.append(bytes(old_magic)).error is AppendError.UNSUPPORTED_FORMAT
        assert b.partition.high_watermark == 0
    finally:
        b.close()


# -- idempotent producers -------------------------------------------------------------------
def test_a_retried_batch_is_acknowledged_with_its_original_offset(broker: Broker) -> None:
    p = broker.partition
    p.append(build_batch(records(2)))  # a non-idempotent producer moves the offsets on
    first = p.append(idempotent(3, 0))
    again = p.append(idempotent(3, 0))
    assert (first.error, first.base_offset) == (None, 2)
    assert (again.error, again.base_offset) == (None, 2)
    assert p.high_watermark == 5  # stored once
    assert p.append(idempotent(1, 3)).base_offset == 5


def test_a_sequence_gap_is_out_of_order(broker: Broker) -> None:
    p = broker.partition
    assert p.append(idempotent(2, 0)).error is None
    gap = p.append(idempotent(1, 5))
    assert gap.error is AppendError.OUT_OF_ORDER_SEQUENCE
    assert "expected 2" in (gap.message or "")
    unknown = p.append(idempotent(1, 7, pid=PID + 1))  # a new producer must start at 0
    assert unknown.error is AppendError.OUT_OF_ORDER_SEQUENCE
    assert p.high_watermark == 2


def test_batches_of_one_request_must_be_in_sequence(broker: Broker) -> None:
    p = broker.partition
    in_order = idempotent(2, 0) + idempotent(2, 2)
    assert p.append(in_order).error is None
    out_of_order = idempotent(1, 4) + idempotent(1, 9)
    assert p.append(out_of_order).error is AppendError.OUT_OF_ORDER_SEQUENCE
    assert p.high_watermark == 4


def test_an_older_epoch_is_fenced(broker: Broker) -> None:
    p = broker.partition
    assert p.append(idempotent(1, 0, epoch=3)).error is None
    assert p.append(idempotent(1, 1, epoch=2)).error is AppendError.INVALID_PRODUCER_EPOCH
    assert p.append(idempotent(1, 0, epoch=4)).error is None  # a new epoch restarts at 0


@pytest.mark.parametrize("snapshot", [True, False], ids=["snapshot", "replay"])
def test_restart_recovers_producer_state(broker: Broker, snapshot: bool) -> None:
    p = broker.partition
    assert p.append(idempotent(3, 0)).base_offset == 0
    assert p.append(idempotent(2, 3)).base_offset == 3
    p = broker.restart(snapshot=snapshot)
    again = p.append(idempotent(2, 3))
    assert (again.error, again.base_offset) == (None, 3)
    assert p.append(idempotent(1, 9)).error is AppendError.OUT_OF_ORDER_SEQUENCE
    assert p.append(idempotent(1, 5)).base_offset == 5


# -- compacted topics -----------------------------------------------------------------------
def test_keyless_records_are_refused_on_a_compacted_topic(compacted: Broker) -> None:
    p = compacted.partition
    batch = build_batch([(b"a", b"1"), (None, b"2"), (b"c", b"3")]) + build_batch(
        [(None, b"4"), (b"e", b"5")]
    )
    result = p.append(batch)
    assert result.error is AppendError.INVALID_RECORD
    assert [e.index for e in result.record_errors] == [1, 3]
    assert "without key in topic partition t-0" in result.record_errors[0].message
    assert result.message is not None and "2 record errors" in result.message
    assert p.high_watermark == 0
    assert p.append(build_batch(records(2))).error is None


def test_keyless_records_are_fine_without_compaction(broker: Broker) -> None:
    assert broker.partition.append(build_batch([(None, b"no key")])).error is None


# -- waiting fetches ------------------------------------------------------------------------
async def test_an_append_wakes_a_waiting_fetch(broker: Broker) -> None:
    p = broker.partition
    waiting = asyncio.ensure_future(wait_for_append([p], 30))
    await asyncio.sleep(0)
    assert not waiting.done()
    p.append(build_batch(records(1)))
    await asyncio.wait_for(waiting, 1)


async def test_a_refused_append_wakes_nobody(broker: Broker) -> None:
    p = broker.partition
    waiting = asyncio.ensure_future(wait_for_append([p], 30))
    await asyncio.sleep(0)
    p.append(b"")
    await asyncio.sleep(0.01)
    assert not waiting.done()
    waiting.cancel()


async def test_waiting_times_out(broker: Broker) -> None:
    await asyncio.wait_for(wait_for_append([broker.partition], 0.01), 1)


# -- reads and DeleteRecords ----------------------------------------------------------------
def test_reads_outside_the_log_raise(broker: Broker) -> None:
    p = broker.partition
    p.append(build_batch(records(2)))
    assert p.read(2, 1000) == b""
    with pytest.raises(OffsetOutOfRangeError):
        p.read(3, 1000)


def test_delete_records_moves_the_log_start(broker: Broker) -> None:
    p = broker.partition
    p.append(build_batch(records(4)))
    assert p.delete_records(3) == 3
    assert p.log_start_offset == 3
    with pytest.raises(OffsetOutOfRangeError):
        p.delete_records(5)
    with pytest.raises(OffsetOutOfRangeError):
        p.read(1, 1000)


def test_delete_records_is_refused_on_a_compacted_topic(compacted: Broker) -> None:
    compacted.partition.append(build_batch(records(2)))
    with pytest.raises(PolicyViolationError):
        compacted.partition.delete_records(1)
