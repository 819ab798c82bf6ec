"""Work off one topic partition with per-record acknowledgement (KIP-932's share partition).

A ``SharePartition`` is the in-flight state of one (share group, topic, partition). Consumers
*acquire* records with a lock that times out, then *acknowledge* them: accept (done), release
(delivered again, delivery count + 1) or reject (archived, never delivered again). Kafka share
groups (``server/kafka_share.py``) and AMQP queues over a topic both sit on this object; it
knows neither protocol, does no I/O and reads no clock (``now_ms`` is passed in).

State, compactly: the share-partition start offset (SPSO, below which every record is done),
the end offset (SPEO, the first offset never acquired) and, between them, a sorted list of
*runs*: maximal spans of offsets with one state, delivery count, lock holder and deadline. A
fetch of 500 records is one run, accepting them all changes that run, so the cost follows the
number of distinct spans, not of records; records at or above SPEO have no state at all, so a
100k-record backlog costs nothing until acquired. ``SPEO - SPSO`` is bounded by
``max_in_flight`` (Kafka's ``group.share.partition.max.record.locks``).

Interface (stable; used by the AMQP queues over topics as well):

* ``SharePartition(start_offset, *, max_in_flight=2000, delivery_limit=5,
  lock_duration_ms=30000, keep_archived=False)``
* ``acquire(member_id, max_records, now_ms, end_offset) -> list[AcquiredRange]``: the
  lowest available offsets first (released ones, then new ones up to ``end_offset``, which is
  the high watermark or the end of what the caller read), locked until
  ``now_ms + lock_duration_ms``; delivery counts are incremented.
* ``next_offset(end_offset) -> int | None``: where the next ``acquire`` would start (the
  caller reads the log from there); None when nothing is acquirable.
* ``acknowledge(member_id, first, last, kind, now_ms) -> ShareAckError | None`` with
  ``AcknowledgeType`` GAP/ACCEPT/RELEASE/REJECT; all of ``[first, last]`` must be acquired by
  ``member_id`` (else ``INVALID_RECORD_STATE``, nothing changes);
  ``acknowledge_each(member_id, first, types, now_ms)`` takes one type per offset.
* ``release_member(member_id) -> bool``: a member left; its records are available again.
* ``expire_locks(now_ms) -> bool`` and ``next_deadline_ms() -> int | None``: lock timeouts.
  Release, expiry and ``release_member`` archive a record whose delivery count reached
  ``delivery_limit`` instead of making it available.
* ``drain_archived() -> list[tuple[int, int]]``: with ``keep_archived=True``, the inclusive
  ranges archived by REJECT or by the delivery limit since the last call (to dead-letter).
* ``advance_log_start(offset)`` (retention, DeleteRecords), ``reset(offset)``
  (AlterShareGroupOffsets), ``start_offset`` / ``end_offset`` / ``in_flight`` / ``acquired``.
* ``on_available``: called (no arguments) when records became acquirable again through
  release, expiry, ``release_member`` or ``reset``; appends wake waiters on their own.
* ``on_change``: called with the partition on its first change after ``mark_clean()``; the
  state store uses it to journal ``encode_state()`` once per loop turn (``decode_state``
  restores it; acquired records come back available with their delivery counts).

Owned by the event loop thread of the broker; not thread-safe.
"""

from __future__ import annotations

import struct
from bisect import bisect_right
from collections.abc import Callable, Sequence
from enum import IntEnum
from typing import NamedTuple

DEFAULT_MAX_IN_FLIGHT = 2000
DEFAULT_DELIVERY_LIMIT = 5
DEFAULT_LOCK_DURATION_MS = 30_000

_HEAD = struct.Struct(">qqI")  # spso, speo, number of runs
_RUN = struct.Struct(">qIBH")  # first, length, state, delivery count
_NO_DEADLINE = 1 << 62


class AcknowledgeType(IntEnum):
    """KIP-932's acknowledgement types, with their wire values."""

    GAP = 0
    ACCEPT = 1
    RELEASE = 2
    REJECT = 3


class RecordState(IntEnum):
    """Kafka's record states (the values its share state records use)."""

    AVAILABLE = 0
    ACQUIRED = 1
    ACKNOWLEDGED = 2
    ARCHIVED = 4


class ShareAckError(IntEnum):
    """Why an acknowledgement was refused; each protocol maps it to its own code."""

    INVALID_RECORD_STATE = 1


class AcquiredRange(NamedTuple):
    """Records ``first_offset..last_offset`` (inclusive) acquired with this delivery count."""

    first_offset: int
    last_offset: int
    delivery_count: int


class _Run:
    """Offsets ``first..last`` (inclusive) in one state; the holder and deadline when acquired."""

    __slots__ = ("count", "deadline", "first", "last", "member", "state")

    def __init__(
        self,
        first: int,
        last: int,
        state: RecordState,
        count: int,
        member: str = "",
        deadline: int = _NO_DEADLINE,
    ) -> None:
        self.first = first
        self.last = last
        self.state = state
        self.count = count
        self.member = member
        self.deadline = deadline

    def copy_from(self, first: int, last: int) -> _Run:
        return _Run(first, last, self.state, self.count, self.member, self.deadline)

    def same(self, other: _Run) -> bool:
        return (
            self.state == other.state
            and self.count == other.count
            and self.member == other.member
            and self.deadline == other.deadline
        )

    def __repr__(self) -> str:
        return f"_Run({self.first}..{self.last} {self.state.name} x{self.count} {self.member!r})"


def _first(run: _Run) -> int:
    return run.first


_DONE = (RecordState.ACKNOWLEDGED, RecordState.ARCHIVED)


class SharePartition:
    """See the module docstring."""

    __slots__ = (
        "_archived",
        "_runs",
        "_speo",
        "_spso",
        "delivery_limit",
        "dirty",
        "keep_archived",
        "lock_duration_ms",
        "max_in_flight",
        "on_available",
        "on_change",
    )

    def __init__(
        self,
        start_offset: int,
        *,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
        lock_duration_ms: int = DEFAULT_LOCK_DURATION_MS,
        keep_archived: bool = False,
    ) -> None:
        self._spso = start_offset
        self._speo = start_offset
        self._runs: list[_Run] = []
        self._archived: list[tuple[int, int]] = []
        self.max_in_flight = max_in_flight
        self.delivery_limit = delivery_limit
        self.lock_duration_ms = lock_duration_ms
        self.keep_archived = keep_archived
        self.on_available: Callable[[], None] | None = None
        self.on_change: Callable[[SharePartition], None] | None = None
        self.dirty = False

    def __repr__(self) -> str:
        return f"SharePartition(spso={self._spso}, speo={self._speo}, runs={self._runs[:4]})"

    # -- state -----------------------------------------------------------------------------
    @property
    def start_offset(self) -> int:
        """SPSO: every record below it is acknowledged or archived (or gone from the log)."""
        return self._spso

    @property
    def end_offset(self) -> int:
        """SPEO: the first offset never acquired."""
        return self._speo

    @property
    def in_flight(self) -> int:
        return self._speo - self._spso

    @property
    def acquired(self) -> int:
        """How many records are locked by members now."""
        return sum(r.last - r.first + 1 for r in self._runs if r.state == RecordState.ACQUIRED)

    def state_of(self, offset: int) -> tuple[RecordState, int] | None:
        """(state, delivery count) of one in-flight offset; None outside [SPSO, SPEO)."""
        run = self._run_at(offset)
        return None if run is None else (run.state, run.count)

    def lag(self, high_watermark: int) -> int:
        """Records not yet done: in-flight ones not acknowledged/archived plus unread ones."""
        pending = sum(r.last - r.first + 1 for r in self._runs if r.state not in _DONE)
        return pending + max(0, high_watermark - self._speo)

    def next_offset(self, end_offset: int) -> int | None:
        """The first offset ``acquire`` would take, or None if nothing is acquirable."""
        for run in self._runs:
            if run.first >= end_offset:
                return None
            if run.state == RecordState.AVAILABLE:
                return run.first
        if self._speo < end_offset and self._speo - self._spso < self.max_in_flight:
            return self._speo
        return None

    # -- acquisition -----------------------------------------------------------------------
    def acquire(
        self, member_id: str, max_records: int, now_ms: int, end_offset: int
    ) -> list[AcquiredRange]:
        """Lock up to ``max_records`` available records below ``end_offset`` for
        ``member_id``, lowest offsets first; see the module docstring."""
        if max_records <= 0:
            return []
        deadline = now_ms + self.lock_duration_ms
        taken: list[AcquiredRange] = []
        left = max_records
        runs = self._runs
        i = 0
        while i < len(runs) and left > 0:
            run = runs[i]
            if run.first >= end_offset:
                break
            if run.state != RecordState.AVAILABLE:
                i += 1
                continue
            last = min(run.last, run.first + left - 1, end_offset - 1)
            if last < run.last:
                runs.insert(i + 1, run.copy_from(last + 1, run.last))
                run.last = last
            run.state = RecordState.ACQUIRED
            run.count += 1
            run.member = member_id
            run.deadline = deadline
            left -= last - run.first + 1
            _add_range(taken, run.first, last, run.count)
            i += 1
        room = self.max_in_flight - (self._speo - self._spso)
        count = min(left, end_offset - self._speo, room)
        if count > 0 and i >= len(runs):
            first = self._speo
            new = _Run(first, first + count - 1, RecordState.ACQUIRED, 1, member_id, deadline)
            runs.append(new)
            self._speo = first + count
            _add_range(taken, first, first + count - 1, 1)
        if taken:
            self._coalesce_all()
            self._changed()
        return taken

    def acknowledge(
        self, member_id: str, first: int, last: int, kind: AcknowledgeType, now_ms: int = 0
    ) -> ShareAckError | None:
        """Settle ``first..last`` (inclusive), all acquired by ``member_id``; see above.
        Offsets below SPSO that left the log meanwhile are skipped, as in Kafka."""
        first = self._clip(first, last)
        error = self.check_acquired(member_id, first, last)
        if error is not None:
            return error
        runs = self._runs
        lo = self._split(first)
        hi = self._split(last + 1)
        available = False
        for run in runs[lo:hi]:
            if kind == AcknowledgeType.ACCEPT:
                self._settle(run, RecordState.ACKNOWLEDGED)
            elif kind == AcknowledgeType.GAP:
                self._settle(run, RecordState.ARCHIVED)
            elif kind == AcknowledgeType.REJECT:
                self._archive(run)
            else:
                available |= self._release(run)
        self._after_change(available)
        return None

    def acknowledge_each(
        self, member_id: str, first: int, types: Sequence[int], now_ms: int = 0
    ) -> ShareAckError | None:
        """Settle ``first..first+len(types)-1`` with one type per offset, all or nothing
        (KIP-932's per-offset acknowledgement batches)."""
        last = first + len(types) - 1
        clipped = self._clip(first, last)
        types, first = types[clipped - first :], clipped
        error = self.check_acquired(member_id, first, last)
        if error is not None:
            return error
        start = 0
        while start < len(types):
            end = start
            while end + 1 < len(types) and types[end + 1] == types[start]:
                end += 1
            self.acknowledge(
                member_id, first + start, first + end, AcknowledgeType(types[start]), now_ms
            )
            start = end + 1
        return None

    def check_acquired(self, member_id: str, first: int, last: int) -> ShareAckError | None:
        """None if every offset of ``first..last`` is acquired by ``member_id``."""
        if first > last or first < self._spso or last >= self._speo:
            return ShareAckError.INVALID_RECORD_STATE
        runs = self._runs
        j = self._index_at(first)
        while j < len(runs) and runs[j].first <= last:
            run = runs[j]
            if run.state != RecordState.ACQUIRED or run.member != member_id:
                return ShareAckError.INVALID_RECORD_STATE
            j += 1
        return None

    def release_member(self, member_id: str) -> bool:
        """Make every record ``member_id`` holds available again (it left or its session
        closed); True if records became available."""
        touched = available = False
        for run in self._runs:
            if run.state == RecordState.ACQUIRED and run.member == member_id:
                touched = True
                available |= self._release(run)
        if touched:
            self._after_change(available)
        return available

    def expire_locks(self, now_ms: int) -> bool:
        """Release the records whose lock deadline passed; True if records became available."""
        touched = available = False
        for run in self._runs:
            if run.state == RecordState.ACQUIRED and run.deadline <= now_ms:
                touched = True
                available |= self._release(run)
        if touched:
            self._after_change(available)
        return available

    def next_deadline_ms(self) -> int | None:
        """The earliest lock deadline, or None when nothing is acquired."""
        deadline = min(
            (r.deadline for r in self._runs if r.state == RecordState.ACQUIRED),
            default=None,
        )
        return deadline

    def drain_archived(self) -> list[tuple[int, int]]:
        """Inclusive ranges archived by REJECT or the delivery limit since the last call
        (only collected with ``keep_archived``)."""
        out, self._archived = self._archived, []
        return out

    # -- offsets ---------------------------------------------------------------------------
    def advance_log_start(self, log_start_offset: int) -> None:
        """Records below ``log_start_offset`` left the log (retention, DeleteRecords): they
        are skipped, and their locks dropped."""
        if log_start_offset <= self._spso:
            return
        runs = self._runs
        if log_start_offset >= self._speo:
            runs.clear()
            self._speo = log_start_offset
        else:
            cut = self._split(log_start_offset)
            del runs[:cut]
        self._spso = log_start_offset
        self._advance()
        self._changed()

    def reset(self, offset: int) -> None:
        """Start over at ``offset`` (AlterShareGroupOffsets): nothing in flight."""
        self._runs.clear()
        self._spso = self._speo = offset
        self._changed()
        if self.on_available is not None:
            self.on_available()

    # -- persistence -----------------------------------------------------------------------
    def mark_clean(self) -> None:
        self.dirty = False

    def encode_state(self) -> bytes:
        """SPSO, SPEO and the runs; acquired records are stored as available (a restart
        releases every lock) with their delivery counts."""
        parts: list[bytes] = []
        prev: list[int] | None = None  # first, length, state, count
        flat: list[list[int]] = []
        for run in self._runs:
            state = RecordState.AVAILABLE if run.state == RecordState.ACQUIRED else run.state
            length = run.last - run.first + 1
            if prev is not None and prev[2] == state and prev[3] == run.count:
                prev[1] += length
                continue
            prev = [run.first, length, int(state), run.count]
            flat.append(prev)
        parts.append(_HEAD.pack(self._spso, self._speo, len(flat)))
        parts.extend(_RUN.pack(*entry) for entry in flat)
        return b"".join(parts)

    def decode_state(self, data: bytes | memoryview) -> None:
        """Replace this partition's state with one ``encode_state`` produced."""
        spso, speo, count = _HEAD.unpack_from(data, 0)
        runs: list[_Run] = []
        pos = _HEAD.size
        for _ in range(count):
            first, length, state, dcount = _RUN.unpack_from(data, pos)
            pos += _RUN.size
            runs.append(_Run(first, first + length - 1, RecordState(state), dcount))
        self._spso, self._speo, self._runs = spso, speo, runs
        self._advance()

    # -- internals -------------------------------------------------------------------------
    def _clip(self, first: int, last: int) -> int:
        """``first`` raised to SPSO when SPSO lies within ``first..last``."""
        return self._spso if first < self._spso <= last else first

    def _index_at(self, offset: int) -> int:
        """Index of the run holding ``offset`` (which lies in [SPSO, SPEO))."""
        return bisect_right(self._runs, offset, key=_first) - 1

    def _run_at(self, offset: int) -> _Run | None:
        if offset < self._spso or offset >= self._speo or not self._runs:
            return None
        i = self._index_at(offset)
        if i < 0:
            return None
        run = self._runs[i]
        return run if run.first <= offset <= run.last else None

    def _split(self, offset: int) -> int:
        """Make ``offset`` start a run; returns that run's index (len(runs) at SPEO)."""
        runs = self._runs
        if offset >= self._speo:
            return len(runs)
        i = self._index_at(offset)
        run = runs[i]
        if run.first == offset:
            return i
        runs.insert(i + 1, run.copy_from(offset, run.last))
        run.last = offset - 1
        return i + 1

    def _settle(self, run: _Run, state: RecordState) -> None:
        run.state = state
        run.member = ""
        run.deadline = _NO_DEADLINE

    def _archive(self, run: _Run) -> None:
        self._settle(run, RecordState.ARCHIVED)
        if self.keep_archived:
            self._archived.append((run.first, run.last))

    def _release(self, run: _Run) -> bool:
        """Give an acquired run back: available, or archived at the delivery limit."""
        if run.count >= self.delivery_limit:
            self._archive(run)
            return False
        self._settle(run, RecordState.AVAILABLE)
        return True

    def _after_change(self, available: bool) -> None:
        self._advance()
        self._coalesce_all()
        self._changed()
        if available and self.on_available is not None:
            self.on_available()

    def _advance(self) -> None:
        """Move SPSO over the leading acknowledged/archived runs."""
        runs = self._runs
        drop = 0
        while drop < len(runs) and runs[drop].state in _DONE:
            drop += 1
        if drop:
            del runs[:drop]
        self._spso = runs[0].first if runs else self._speo

    def _coalesce_all(self) -> None:
        runs = self._runs
        if len(runs) < 2:
            return
        out = [runs[0]]
        for run in runs[1:]:
            prev = out[-1]
            if prev.same(run):
                prev.last = run.last
            else:
                out.append(run)
        if len(out) != len(runs):
            self._runs = out

    def _changed(self) -> None:
        if not self.dirty:
            self.dirty = True
            if self.on_change is not None:
                self.on_change(self)


def _add_range(taken: list[AcquiredRange], first: int, last: int, count: int) -> None:
    if taken and taken[-1].last_offset + 1 == first and taken[-1].delivery_count == count:
        taken[-1] = AcquiredRange(taken[-1].first_offset, last, count)
    else:
        taken.append(AcquiredRange(first, last, count))
