"""The durable store of one queue: a log of its persistent messages plus a log of its acks.

``<dir>/messages`` holds each persistent message as one record (see ``Message.to_record``), the
record timestamp being the enqueue time (so TTLs survive a restart). ``<dir>/acks`` holds the
acknowledgement state as records of two kinds:

* ``D`` (delta): the ranges acknowledged since the previous record, one record per event-loop
  turn that acknowledged anything;
* ``S`` (snapshot): the whole ``AckRanges`` state, written when the deltas since the last
  snapshot outweigh it, on every open and on close. Everything before the latest snapshot is
  dropped with ``delete_records`` so closed ack segments are deleted and the ack log stays
  bounded. A snapshot written by ``close`` is marked *clean* and records where the
  never-delivered messages start.

Replaying the acks log (latest snapshot, then the deltas after it) rebuilds the ack state, so
after a crash exactly the messages without a persisted ack come back. Once the mark-delete
position passes a closed segment of the messages log, ``delete_records`` moves the log start
there and the segment's files go.

Publishes and acks of one turn are buffered and written by ``flush_pending`` as one append per
log. With a running event loop it is scheduled with ``loop.call_soon`` on the first write of a
turn, so it runs after the callbacks already queued (the rest of the socket read that caused
the publishes); without a loop (tests, tools) the caller calls it. Owned by the event loop
thread; not safe across threads (the ``FlushScheduler`` fsyncs the logs in worker threads,
which ``PartitionLog`` supports).
"""

from __future__ import annotations

import asyncio
import shutil
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

from dari.message import (
    EXCHANGE_HEADER,
    PROPERTIES_HEADER,
    ROUTING_KEY_HEADER,
    Message,
    parse_properties,
)
from dari.queues.ack_ranges import AckRanges, decode_runs, encode_runs, merge_runs, runs
from dari.records import (
    BatchHeader,
    HeaderLayout,
    LayoutMismatchError,
    NewRecord,
    build_batch,
    decode_records,
    iter_batches,
    iter_key_values,
    iter_records,
    pack_batch,
    records_section,
    validate,
    write_varint,
)
from dari.storage import FlushScheduler, LogConfig, PartitionLog

MESSAGES_DIR = "messages"
ACKS_DIR = "acks"
_SNAPSHOT = b"S"
_DELTA = b"D"
_SNAPSHOT_HEAD = struct.Struct(">qB")  # next_deliver, clean
_MAX_BATCH_BYTES = 1 << 20
_RECORD_OVERHEAD = 80  # record framing + the three header names, roughly


def message_log_config(base: LogConfig | None = None) -> LogConfig:
    """The messages log's settings: no time/size retention (only acks delete messages)."""
    base = base if base is not None else LogConfig(segment_bytes=64 << 20)
    return replace(base, retention_ms=-1, retention_bytes=-1, cleanup_policy="delete")


def ack_log_config() -> LogConfig:
    """The acks log's settings: small segments so compaction frees space quickly."""
    return LogConfig(segment_bytes=1 << 20, retention_ms=-1, retention_bytes=-1, flush="os")


class QueueStore:
    """See the module docstring. ``ranges`` is the live ack state (in memory, ahead of disk
    by at most one turn). ``recovered_clean`` tells whether the last run ended with
    ``close``; ``next_deliver`` is then the first offset never delivered (messages below it
    were delivered before and come back redelivered), else it is the log end: after a crash
    every recovered message counts as possibly delivered, as RabbitMQ's classic queues do.
    """

    def __init__(
        self,
        messages: PartitionLog,
        acks: PartitionLog,
        *,
        directory: Path | None = None,
        flush_scheduler: FlushScheduler | None = None,
        clock: Callable[[], float] = time.time,
        snapshot_min_bytes: int = 64 << 10,
    ) -> None:
        self.messages = messages
        self.acks = acks
        self.directory = directory
        self.flush_scheduler = flush_scheduler
        self._clock = clock
        self._snapshot_min_bytes = snapshot_min_bytes
        self._pending: list[tuple[Message, int]] = []  # (message, enqueue ms)
        self._pending_bytes = 0
        self._pending_acks: list[tuple[int, int]] = []  # acked this turn, as ranges
        self._scheduled = False
        self._delta_bytes = 0
        self._snapshot_bytes = 0
        self.snapshots_written = 0
        self.ranges, self.recovered_clean, self.next_deliver = self._load()
        self._write_snapshot(clean=False)  # from now on a crash must be detectable

    @classmethod
    def open(
        cls,
        directory: Path,
        config: LogConfig | None = None,
        *,
        flush_scheduler: FlushScheduler | None = None,
        clock: Callable[[], float] = time.time,
        snapshot_min_bytes: int = 64 << 10,
    ) -> QueueStore:
        """Open (create or recover) the store in ``directory``; ``config`` sets the messages
        log's segment size and flush policy (retention is always off)."""
        directory = Path(directory)
        messages = PartitionLog.open(directory / MESSAGES_DIR, message_log_config(config), clock)
        acks = PartitionLog.open(directory / ACKS_DIR, ack_log_config(), clock)
        return cls(
            messages,
            acks,
            directory=directory,
            flush_scheduler=flush_scheduler,
            clock=clock,
            snapshot_min_bytes=snapshot_min_bytes,
        )

    @property
    def logs(self) -> tuple[PartitionLog, PartitionLog]:
        """Both logs, for the FlushScheduler's provider and maintenance."""
        return self.messages, self.acks

    # ---- recovery -------------------------------------------------------------------------------

    def _load(self) -> tuple[AckRanges, bool, int]:
        ranges = AckRanges(0)
        clean = False
        next_deliver = -1
        start = self.acks.log_start_offset
        for key, value in iter_key_values(self.acks.iter_batches(start), start):
            value = value or b""
            if key == _SNAPSHOT:
                next_deliver, flag = _SNAPSHOT_HEAD.unpack_from(value, 0)
                ranges = AckRanges.decode(memoryview(value)[_SNAPSHOT_HEAD.size :])
                clean = bool(flag)
            elif key == _DELTA:
                for start, end in decode_runs(value):
                    ranges.add_range(start, end)
                clean = False
        log = self.messages
        # The ack log can be ahead of a messages log that lost its unsynced tail: acks of
        # offsets that no longer exist must not hide the messages appended there next.
        ranges.clip(log.log_end_offset)
        ranges.add_range(0, log.log_start_offset)
        if not clean or not 0 <= next_deliver <= log.log_end_offset:
            clean = False
            next_deliver = log.log_end_offset
        return ranges, clean, next_deliver

    def iter_unacked(self, start: int = 0) -> Iterator[tuple[int, Message]]:
        """(enqueue timestamp ms, message) of every message without an ack from offset
        ``start`` on, in log order. Messages still buffered for this turn's append are written
        first, so a queue can read back what it paged out moments ago."""
        if self._pending:
            self.flush_pending()
        log = self.messages
        start = max(start, log.log_start_offset, self.ranges.mark_delete)
        for run_start, run_end in self.ranges.unacked_runs(start, log.log_end_offset):
            for header, batch in log.iter_batches(run_start):
                if header.base_offset >= run_end:
                    break
                yield from batch_messages(header, batch, run_start, run_end)

    # ---- writes ---------------------------------------------------------------------------------

    @property
    def next_offset(self) -> int:
        """The offset the next appended message gets."""
        return self.messages.log_end_offset + len(self._pending)

    def append(self, message: Message, timestamp_ms: int) -> int:
        """Buffer ``message`` for this turn's append; returns the offset it will have."""
        offset = self.messages.log_end_offset + len(self._pending)
        self._pending.append((message, timestamp_ms))
        self._pending_bytes += len(message.body) + len(message.properties) + _RECORD_OVERHEAD
        if not self._scheduled:
            self._schedule()
        return offset

    def ack(self, offset: int) -> None:
        """Acknowledge one message (in memory now, on disk with this turn's flush)."""
        if self.ranges.add(offset):
            self._pending_acks.append((offset, offset + 1))
            if not self._scheduled:
                self._schedule()

    def ack_range(self, start: int, end: int) -> None:
        """Acknowledge every message in [start, end) (a purge of paged-out messages)."""
        if start < end and self.ranges.add_range(start, end):
            self._pending_acks.append((start, end))
            if not self._scheduled:
                self._schedule()

    def ack_many(self, offsets: list[int]) -> None:
        for start, end in runs(offsets):
            if self.ranges.add_range(start, end):
                self._pending_acks.append((start, end))
        if self._pending_acks and not self._scheduled:
            self._schedule()

    def _schedule(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop: the caller flushes
        loop.call_soon(self.flush_pending)
        self._scheduled = True

    def flush_pending(self) -> None:
        """Write the buffered messages (one append) and acks (one record), then compact the
        ack log and trim fully-acknowledged message segments when due."""
        self._scheduled = False
        if self.messages.closed:
            return
        if self._pending:
            self._append_messages()
        if self._pending_acks:
            data = encode_runs(merge_runs(self._pending_acks))
            self._pending_acks = []
            self._append_ack_record(_DELTA, data)
            self._delta_bytes += len(data)
            if self._delta_bytes > max(self._snapshot_min_bytes, self._snapshot_bytes):
                self._write_snapshot(clean=False)
            self._trim_messages()

    def _append_messages(self) -> None:
        pending, self._pending = self._pending, []
        self._pending_bytes = 0
        parts: list[bytes] = []
        chunk: list[tuple[Message, int]] = []
        size = 0
        for item in pending:
            chunk.append(item)
            size += len(item[0].body) + _RECORD_OVERHEAD
            if size >= _MAX_BATCH_BYTES:
                parts.append(encode_message_batch(chunk))
                chunk, size = [], 0
        if chunk:
            parts.append(encode_message_batch(chunk))
        buf = bytearray(b"".join(parts))
        expected = self.messages.log_end_offset
        info = self.messages.append(buf, validate(buf))
        if info.base_offset != expected:  # pragma: no cover - we are the only writer
            raise RuntimeError(f"queue log appended at {info.base_offset}, expected {expected}")

    def _append_ack_record(self, kind: bytes, value: bytes) -> int:
        buf = bytearray(build_batch([NewRecord(kind, value)], now_ms=int(self._clock() * 1000)))
        return self.acks.append(buf, validate(buf)).base_offset

    def _write_snapshot(self, clean: bool, next_deliver: int = -1) -> None:
        value = _SNAPSHOT_HEAD.pack(next_deliver, int(clean)) + self.ranges.encode()
        offset = self._append_ack_record(_SNAPSHOT, value)
        self.acks.delete_records(offset)  # older records are superseded
        self._snapshot_bytes = len(value)
        self._delta_bytes = 0
        self.snapshots_written += 1

    def _trim_messages(self) -> None:
        log = self.messages
        mark = min(self.ranges.mark_delete, log.log_end_offset)
        if mark <= log.log_start_offset:
            return
        segments = log.segments
        if len(segments) > 1 and segments[1].base_offset <= mark:
            log.delete_records(mark)

    # ---- durability -----------------------------------------------------------------------------

    async def wait_durable(self, upto_offset: int) -> None:
        """Return once every message below ``upto_offset`` is on disk as the messages log's
        flush policy requires (at once under "os"). Appends what is still buffered first."""
        log = self.messages
        if self._pending and upto_offset > log.log_end_offset:
            self.flush_pending()
        if log.flushed_offset >= upto_offset or log.config.flush == "os":
            return
        if self.flush_scheduler is not None:
            await self.flush_scheduler.durable(log, upto_offset)
        else:
            await asyncio.get_running_loop().run_in_executor(None, log.flush)

    # ---- lifecycle ------------------------------------------------------------------------------

    def close(self, next_deliver: int | None = None) -> None:
        """Flush, write a clean snapshot (with where never-delivered messages start) and close
        both logs."""
        if self.messages.closed:
            return
        self.flush_pending()
        if next_deliver is None:
            next_deliver = self.messages.log_end_offset
        self._write_snapshot(clean=True, next_deliver=next_deliver)
        self.messages.close()
        self.acks.close()

    def delete(self) -> None:
        """Remove both logs (and the store's directory when opened with ``open``)."""
        self._pending = []
        self._pending_acks = []
        self.messages.delete()
        self.acks.delete()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __repr__(self) -> str:
        return (
            f"QueueStore({self.messages.directory.parent.name}, "
            f"messages=[{self.messages.log_start_offset}, {self.messages.log_end_offset}), "
            f"acks={self.ranges!r})"
        )


def iter_messages(data: bytes) -> Iterator[tuple[int, int, Message]]:
    """(offset, timestamp, message) of every record in ``data`` (whole batches of a queue's
    messages log, as ``encode_message_batch`` writes them)."""
    for header, batch in iter_batches(data):
        for timestamp, message in batch_messages(header, batch):
            yield message.offset, timestamp, message


def batch_messages(
    header: BatchHeader, batch: memoryview, start: int = 0, end: int = 1 << 63
) -> Iterator[tuple[int, Message]]:
    """(timestamp, message) of the records of one batch of a queue's messages log with
    offsets in [start, end) (``Message.offset`` is the record's offset).

    The read-back path of a paged queue and recovery: the records are decoded with the header
    layout this store writes known (``_LAYOUT``), so no generic ``Record`` is built; a batch
    written otherwise (a Kafka producer's, say) goes through the generic reader. Messages are
    yielded one by one, not collected: a consumer dropping each keeps the cyclic GC's young
    generation small, which measurably speeds up reading back a long queue."""
    try:
        rows = decode_records(records_section(batch, header), header, layout=_LAYOUT)
    except LayoutMismatchError:
        for r in iter_records(batch):
            if start <= r.offset < end:
                yield r.timestamp, Message.from_record(r)
        return
    for offset, timestamp, _key, body, (exchange, routing_key, properties) in rows:
        if not start <= offset < end:
            continue
        delivery_mode, priority, expiration = parse_properties(properties)
        message = Message(
            exchange.decode("utf-8", "surrogateescape"),
            routing_key.decode("utf-8", "surrogateescape"),
            b"" if body is None else body,
            properties, delivery_mode, priority, expiration, offset,
        )
        yield timestamp, message


_LAYOUT = HeaderLayout((EXCHANGE_HEADER, ROUTING_KEY_HEADER, PROPERTIES_HEADER))
_EXCHANGE_KEY, _ROUTING_KEY_KEY, _PROPERTIES_KEY = _LAYOUT.prefixes


def encode_message_batch(items: list[tuple[Message, int]]) -> bytes:
    """One v2 batch holding ``items`` (message, timestamp ms) as ``Message.to_record`` would
    (the same bytes ``build_batch`` makes), its records encoded directly: this is the durable
    publish path."""
    records = bytearray()
    base_ts = items[0][1]
    max_ts = base_ts
    for delta, (message, timestamp) in enumerate(items):
        if timestamp > max_ts:
            max_ts = timestamp
        exchange = message.exchange.encode("utf-8", "surrogateescape")
        routing_key = message.routing_key.encode("utf-8", "surrogateescape")
        body = message.body
        properties = message.properties
        rec = bytearray(b"\x00")
        write_varint(rec, timestamp - base_ts)
        write_varint(rec, delta)
        rec += b"\x01"  # null key
        write_varint(rec, len(body))
        rec += body
        rec += b"\x06"  # three headers
        rec += _EXCHANGE_KEY
        write_varint(rec, len(exchange))
        rec += exchange
        rec += _ROUTING_KEY_KEY
        write_varint(rec, len(routing_key))
        rec += routing_key
        rec += _PROPERTIES_KEY
        write_varint(rec, len(properties))
        rec += properties
        write_varint(records, len(rec))
        records += rec
    return pack_batch(
        records,
        record_count=len(items),
        last_offset_delta=len(items) - 1,
        base_timestamp=base_ts,
        max_timestamp=max_ts,
    )
