"""Idempotent-producer state: per partition, the last batches of each producer id and epoch.

Kafka's rules (ProducerStateManager / ProducerAppendInfo): a batch whose sequence range equals one
of the producer's last five batches is a retry — acknowledged with its original offset, not
stored again; a batch must otherwise continue the sequence exactly; an older epoch is fenced.
The state is rebuilt from the log's batch headers, starting from a snapshot written on close and
periodically, so idempotence holds across restarts without scanning whole logs.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from dataclasses import dataclass, field

from dari.records.batch import BatchHeader
from dari.storage import PartitionLog
from dari.storage.files import atomic_write
from dari.streams.errors import AppendError, ProducerStateError

log = logging.getLogger(__name__)

CACHED_BATCHES = 5  # Kafka's NUM_BATCHES_TO_RETAIN, matching max.in.flight for idempotence
INT32_MAX = (1 << 31) - 1
SNAPSHOT_FILE = "producer-state.json"


@dataclass(slots=True)
class BatchMeta:
    first_seq: int
    last_seq: int
    base_offset: int
    last_offset: int


@dataclass(slots=True)
class ProducerEntry:
    epoch: int
    batches: deque[BatchMeta] = field(default_factory=lambda: deque(maxlen=CACHED_BATCHES))

    @property
    def last_seq(self) -> int:
        return self.batches[-1].last_seq if self.batches else -1


def _next_seq(seq: int) -> int:
    return 0 if seq == INT32_MAX else seq + 1


class PartitionProducerState:
    """Producer entries of one partition log; owned by the event loop thread."""

    def __init__(self, plog: PartitionLog) -> None:
        self.plog = plog
        self.producers: dict[int, ProducerEntry] = {}
        self.end_offset = 0  # the log offset up to which ``producers`` reflects the log
        self.dirty = False

    # -- checking and recording appends ----------------------------------------------------
    def check(self, header: BatchHeader) -> BatchMeta | None:
        """Validate one idempotent batch; return the stored duplicate's metadata for a retry.

        Raises ProducerStateError for a fenced epoch or a sequence gap.
        """
        entry = self.producers.get(header.producer_id)
        first = header.base_sequence
        last = (first + header.last_offset_delta) & INT32_MAX
        if entry is None:
            if first != 0:
                raise ProducerStateError(
                    AppendError.OUT_OF_ORDER_SEQUENCE,
                    f"producer {header.producer_id} is unknown here and its first sequence is "
                    f"{first}, not 0",
                )
            return None
        if header.producer_epoch < entry.epoch:
            raise ProducerStateError(
                AppendError.INVALID_PRODUCER_EPOCH,
                f"producer {header.producer_id} epoch {header.producer_epoch} is older than "
                f"the current epoch {entry.epoch}",
            )
        if header.producer_epoch > entry.epoch:
            if first != 0:
                raise ProducerStateError(
                    AppendError.OUT_OF_ORDER_SEQUENCE,
                    f"a new epoch of producer {header.producer_id} must start at sequence 0",
                )
            return None
        for batch in entry.batches:
            if batch.first_seq == first and batch.last_seq == last:
                return batch
        if first != _next_seq(entry.last_seq):
            raise ProducerStateError(
                AppendError.OUT_OF_ORDER_SEQUENCE,
                f"producer {header.producer_id} sent sequence {first}, expected "
                f"{_next_seq(entry.last_seq)}",
            )
        return None

    def check_append(self, headers: list[BatchHeader]) -> int | None:
        """Check the idempotent batches of one produce to this partition: the base offset of
        the stored original if they are a retry, else None. Raises ProducerStateError.

        Only the first batch is matched against the stored ones; the others must continue
        its sequence, from the same producer and epoch.
        """
        first = headers[0]
        duplicate = self.check(first)
        if duplicate is not None:
            return duplicate.base_offset
        expected = first.base_sequence + first.last_offset_delta + 1
        for batch in headers[1:]:
            same_producer = (batch.producer_id, batch.producer_epoch) == (
                first.producer_id,
                first.producer_epoch,
            )
            if not same_producer or batch.base_sequence != expected & INT32_MAX:
                raise ProducerStateError(
                    AppendError.OUT_OF_ORDER_SEQUENCE,
                    "batches of one request are not in sequence",
                )
            expected = batch.base_sequence + batch.last_offset_delta + 1
        return None

    def record_append(self, headers: list[BatchHeader], base_offset: int) -> None:
        """Remember the batches of one append stored from ``base_offset`` on."""
        offset = base_offset
        for batch in headers:
            self.record(batch, offset)
            offset += batch.last_offset_delta + 1

    def record(self, header: BatchHeader, base_offset: int) -> None:
        """Remember a batch stored at ``base_offset`` (after the append)."""
        entry = self.producers.get(header.producer_id)
        if entry is None or header.producer_epoch != entry.epoch:
            entry = ProducerEntry(header.producer_epoch)
            self.producers[header.producer_id] = entry
        first = header.base_sequence
        entry.batches.append(
            BatchMeta(
                first,
                (first + header.last_offset_delta) & INT32_MAX,
                base_offset,
                base_offset + header.last_offset_delta,
            )
        )
        self.end_offset = base_offset + header.last_offset_delta + 1
        self.dirty = True

    # -- rebuilding ------------------------------------------------------------------------
    def load(self) -> None:
        """Start from the snapshot (if it is not ahead of the log) and replay the tail."""
        path = self.plog.directory / SNAPSHOT_FILE
        try:
            snapshot = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            snapshot = None
        if snapshot and snapshot["end_offset"] <= self.plog.log_end_offset:
            self.end_offset = snapshot["end_offset"]
            for pid, item in snapshot["producers"].items():
                entry = ProducerEntry(item["epoch"])
                entry.batches.extend(BatchMeta(*b) for b in item["batches"])
                self.producers[int(pid)] = entry
        else:
            self.end_offset = self.plog.log_start_offset
        self._replay()
        self.dirty = False

    def _replay(self) -> None:
        """Record the batches appended after the snapshot (written since, or lost in a crash)."""
        start = max(self.end_offset, self.plog.log_start_offset)
        end = self.plog.log_end_offset
        for header, _batch in self.plog.iter_batches(start):
            if header.base_offset >= end:
                break
            if header.producer_id >= 0 and header.base_offset >= start:
                self.record(header, header.base_offset)
        self.end_offset = end

    def snapshot(self) -> None:
        """Write the state atomically; cheap enough to call on close and periodically."""
        data = {
            "end_offset": self.end_offset,
            "producers": {
                str(pid): {
                    "epoch": entry.epoch,
                    "batches": [
                        [b.first_seq, b.last_seq, b.base_offset, b.last_offset]
                        for b in entry.batches
                    ],
                }
                for pid, entry in self.producers.items()
            },
        }
        atomic_write(self.plog.directory / SNAPSHOT_FILE, json.dumps(data), fsync=True)
        self.dirty = False


class ProducerStates:
    """Lazily loaded producer state of every partition that sees idempotent batches; owned by
    the event loop thread (``snapshot_all`` runs there too), not thread-safe."""

    def __init__(self) -> None:
        self._states: dict[int, PartitionProducerState] = {}

    def get(self, plog: PartitionLog) -> PartitionProducerState:
        state = self._states.get(id(plog))
        if state is None or state.plog is not plog:
            state = PartitionProducerState(plog)
            state.load()
            self._states[id(plog)] = state
        return state

    def forget(self, plog: PartitionLog) -> None:
        """Drop a deleted partition's state, so no snapshot is written into its removed
        directory."""
        self._states.pop(id(plog), None)

    def snapshot_all(self, closing: bool = False) -> None:
        for state in list(self._states.values()):
            if state.dirty and (closing or not state.plog.closed):
                try:
                    state.snapshot()
                except OSError as exc:
                    log.warning("cannot snapshot producers of %s: %s", state.plog.directory, exc)
