"""One partition of a topic: its log, its idempotent-producer state and its waiting fetches.

``Partition.append`` applies Kafka's produce rules in Kafka's order (size, batch validation,
keyless records on compacted topics, producer sequences), appends, and wakes the fetches that
wait for data; it answers with a plain ``AppendResult`` that the protocol encodes. Refusals are
values, not exceptions, because a produce answers every partition it names and the hot path
should not pay for raising. Reads, offset look-ups and DeleteRecords go through here too, so a
protocol handler never touches the log directly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import NamedTuple

from dari.records import iter_records
from dari.records.batch import BatchHeader, CorruptRecordError, UnsupportedMagicError, validate
from dari.storage import LogClosedError, LogConfig, LogStore, PartitionLog
from dari.storage import OffsetOutOfRangeError as LogOffsetOutOfRange
from dari.streams.errors import (
    AppendError,
    OffsetOutOfRangeError,
    PolicyViolationError,
    ProducerStateError,
    UnknownTopicError,
)
from dari.streams.producer_state import ProducerStates
from dari.streams.waiters import AppendWaiters

log = logging.getLogger(__name__)

_KEYLESS_LIMIT = 3  # Kafka's message names at most the first three refused records


class RecordError(NamedTuple):
    """One refused record: its position among the records of the append (from 0)."""

    index: int
    message: str


class AppendResult(NamedTuple):
    """What became of one partition's records; -1 means "not applicable" for the offsets."""

    error: AppendError | None
    base_offset: int
    log_append_time: int
    log_start_offset: int
    message: str | None = None
    record_errors: tuple[RecordError, ...] = ()


class Partition:
    """The rules of one topic partition around its ``PartitionLog``.

    Created and owned by ``TopicManager``; used on the event loop thread only (not
    thread-safe). ``producer_states`` and ``waiters`` are the broker-wide registries, keyed by
    this partition's log, so the periodic producer-state snapshot and appends made outside
    Kafka's produce path (the offsets log) keep working.
    """

    __slots__ = ("_producer_states", "before_append", "index", "log", "topic", "waiters")

    def __init__(
        self,
        topic: str,
        index: int,
        plog: PartitionLog,
        producer_states: ProducerStates,
        waiters: AppendWaiters,
    ) -> None:
        self.topic = topic
        self.index = index
        self.log = plog
        self.waiters = waiters
        self._producer_states = producer_states
        # Appends buffered elsewhere for this partition (an AMQP stream queue's turn) are
        # written by this hook before any other append, so the offsets they were promised hold.
        self.before_append: Callable[[], None] | None = None

    def __repr__(self) -> str:
        return f"Partition({self.topic}-{self.index})"

    # -- state -----------------------------------------------------------------------------
    @property
    def log_start_offset(self) -> int:
        return self.log.log_start_offset

    @property
    def high_watermark(self) -> int:
        """The offset after the last record consumers may read (one broker: the log end)."""
        return self.log.log_end_offset

    @property
    def config(self) -> LogConfig:
        return self.log.config

    @property
    def size_bytes(self) -> int:
        return self.log.size_bytes

    # -- produce ---------------------------------------------------------------------------
    def append(self, records: memoryview | bytes | None) -> AppendResult:
        """Validate and append the record batches of one produce request to this partition."""
        if self.before_append is not None:
            self.before_append()
        plog = self.log
        if records is None or len(records) == 0:
            return AppendResult(AppendError.INVALID_RECORD, -1, -1, plog.log_start_offset)
        if len(records) > plog.config.max_message_bytes:
            return AppendResult(AppendError.MESSAGE_TOO_LARGE, -1, -1, plog.log_start_offset)
        try:
            headers = validate(records)
        except UnsupportedMagicError as exc:
            return self._refuse(AppendError.UNSUPPORTED_FORMAT, str(exc), logging.WARNING)
        except CorruptRecordError as exc:
            return self._refuse(AppendError.CORRUPT_RECORD, str(exc), logging.WARNING)
        if plog.config.compact:
            refusal = self._check_keys(records, headers)
            if refusal is not None:
                return refusal
        state = None
        if headers[0].producer_id >= 0:
            state = self._producer_states.get(plog)
            try:
                duplicate = state.check_append(headers)
            except ProducerStateError as exc:
                return self._refuse(exc.reason, str(exc))
            if duplicate is not None:  # a retry of a stored batch: acknowledge, don't store
                return AppendResult(None, duplicate, -1, plog.log_start_offset)
        info = plog.append(bytearray(records), headers)
        if state is not None:
            state.record_append(headers, info.base_offset)
        self.waiters.notify(plog)
        return AppendResult(None, info.base_offset, info.log_append_time, plog.log_start_offset)

    def _refuse(
        self,
        error: AppendError,
        message: str,
        level: int = logging.INFO,
        record_errors: tuple[RecordError, ...] = (),
    ) -> AppendResult:
        log.log(level, "produce to %s-%d refused: %s", self.topic, self.index, message)
        return AppendResult(error, -1, -1, self.log.log_start_offset, message, record_errors)

    def _check_keys(
        self, records: memoryview | bytes, headers: list[BatchHeader]
    ) -> AppendResult | None:
        """Kafka refuses records without a key on compacted topics: the cleaner could never
        decide which of them is the latest. Every such record is named by its index."""
        refused: list[RecordError] = []
        keyless = (
            "Compacted topic cannot accept message without key in topic partition "
            f"{self.topic}-{self.index}."
        )
        view = memoryview(records)
        pos = index = 0
        for header in headers:
            if header.is_control:
                pos += header.size
                continue
            try:
                for record in iter_records(view[pos : pos + header.size]):
                    if record.key is None:
                        refused.append(RecordError(index, keyless))
                    index += 1
            except CorruptRecordError as exc:
                return self._refuse(AppendError.INVALID_RECORD, str(exc))
            pos += header.size
        if not refused:
            return None
        shown = ", ".join(
            f"RecordError(batchIndex={e.index}, message='{e.message}')"
            for e in refused[:_KEYLESS_LIMIT]
        )
        message = (
            f"One or more records have been rejected due to {len(refused)} record errors in "
            f"total, and only showing the first three errors at most: [{shown}]"
        )
        return self._refuse(AppendError.INVALID_RECORD, message, record_errors=tuple(refused))

    # -- reads -----------------------------------------------------------------------------
    def read(self, offset: int, max_bytes: int) -> bytes | memoryview:
        """Whole batches from the one holding ``offset``, up to ``max_bytes`` but at least one
        batch; b"" at the high watermark. Raises OffsetOutOfRangeError."""
        try:
            return self.log.read(offset, max_bytes)
        except LogOffsetOutOfRange as exc:
            raise OffsetOutOfRangeError(str(exc)) from None

    def offset_for_timestamp(self, timestamp_ms: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record at or after ``timestamp_ms``, if any."""
        return self.log.offset_for_timestamp(timestamp_ms)

    def max_timestamp(self) -> tuple[int, int]:
        """(offset, timestamp) of the record with the largest timestamp; (-1, -1) if none."""
        return self.log.max_timestamp()

    # -- removal ---------------------------------------------------------------------------
    def delete_records(self, before_offset: int) -> int:
        """Make ``before_offset`` the log start offset (DeleteRecords); returns the new one.

        Raises PolicyViolationError unless the topic's cleanup policy includes "delete",
        OffsetOutOfRangeError past the high watermark, UnknownTopicError once deleted.
        """
        if not self.log.config.delete:
            raise PolicyViolationError(
                f"Records of partition {self.topic}-{self.index} can not be deleted due to "
                "the configured policy"
            )
        try:
            return self.log.delete_records(before_offset)
        except LogOffsetOutOfRange as exc:
            raise OffsetOutOfRangeError(str(exc)) from None
        except LogClosedError as exc:
            raise UnknownTopicError(str(exc)) from None

    def close(self) -> None:
        self.log.close()

    def delete(self, store: LogStore) -> None:
        """Remove the partition: its producer state first, so no snapshot writes into the
        removed directory, then its log from ``store`` (so a topic created again under the
        same name gets a new log, not this closed one)."""
        self._producer_states.forget(self.log)
        store.remove_log(self.log.directory.name)


async def wait_for_append(partitions: Sequence[Partition], timeout: float) -> None:
    """Return after the first append to any of ``partitions``, or after ``timeout`` seconds."""
    if partitions:
        await partitions[0].waiters.wait_any([p.log for p in partitions], timeout)
