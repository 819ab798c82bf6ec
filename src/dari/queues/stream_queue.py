"""RabbitMQ stream queues over a one-partition dari topic: one copy of the data, two protocols.

A queue declared with ``x-queue-type=stream`` is the topic named by ``topic_name`` (the queue
name in vhost ``/``; ``<vhost>.<queue>`` elsewhere, a ``/`` in the vhost name written ``_``),
made or opened through the Kafka side's ``TopicManager``. A publish appends one record per
message to its partition (``Message.to_stream_record``: the AMQP layout with ``x-amqp-*``
headers, the AMQP headers as plain record headers, the timestamp property as the record
timestamp), so Kafka clients fetch what AMQP clients publish, and AMQP consumers read what Kafka
producers produce (``Message.from_record``). A binding with ``x-record-key: routing-key`` makes
the routing key of the messages it routes the record key, so keyed partitioning and compaction
work on AMQP traffic.

Stream semantics as RabbitMQ has them: consumers never remove anything; each reads from its own
offset (``x-stream-offset``: ``first``, ``last``, ``next`` — the default —, an offset, or a
timestamp) and gets the offset of every delivery in its ``x-stream-offset`` header. Acks only
give prefetch credit back; nothing is requeued or redelivered. A consumer that caught up waits
for the partition's next append (any protocol's) through the partition's ``AppendWaiters``.
Retention is the topic's: ``x-max-age``, ``x-max-length-bytes`` and
``x-stream-max-segment-size-bytes`` become ``retention.ms``, ``retention.bytes`` and
``segment.bytes``.
"""

from __future__ import annotations

import asyncio
import bisect
import datetime
import re
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

from dari.message import (
    EXCHANGE_HEADER,
    PROPERTIES_HEADER,
    ROUTING_KEY_HEADER,
    STREAM_VISIBLE_FLAGS,
    Field,
    Message,
)
from dari.queues.errors import FeatureNotImplemented, PreconditionFailed, resource
from dari.queues.queue import Consumer, Delivery, PublishResult, QueueArguments
from dari.queues.queue_store import encode_message_batch
from dari.queues.values import type_name
from dari.records import (
    CONTROL_MASK,
    BatchHeader,
    HeaderLayout,
    LayoutMismatchError,
    Record,
    decode_records,
    iter_batches,
    records_section,
)
from dari.records.builder import NewRecord, build_batch
from dari.storage import FlushScheduler, LogClosedError, OffsetOutOfRangeError, PartitionLog

STREAM = "stream"
OFFSET_HEADER = "x-stream-offset"
RECORD_KEY_ARGUMENT = "x-record-key"  # binding argument: what becomes the record key
_RECORD_KEY_SOURCES = ("routing-key",)
_READ_BYTES = 1 << 18  # a consumer's read-ahead: the log bytes one read decodes at most
_WAIT_SECONDS = 30.0  # a caught-up consumer's wait for an append, before it looks again
_TOPIC_NAME = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")
_MAX_AGE = re.compile(r"^([0-9]+)([YMDhms])$")
_UNIT_MS = {
    "Y": 365 * 86_400_000, "M": 30 * 86_400_000, "D": 86_400_000,
    "h": 3_600_000, "m": 60_000, "s": 1000,
}
# Queue arguments a stream refuses, as RabbitMQ's stream queue type does.
_UNSUPPORTED = (
    "x-max-priority", "x-message-ttl", "x-expires", "x-max-length", "x-overflow",
    "x-dead-letter-exchange", "x-dead-letter-routing-key", "x-single-active-consumer",
    "x-queue-mode",
)
_LONG = struct.Struct(">q")
# The record headers of an AMQP message (``Message.to_record``), matched as raw bytes.
_AMQP_LAYOUT = HeaderLayout((EXCHANGE_HEADER, ROUTING_KEY_HEADER, PROPERTIES_HEADER))
_SHARED_BYTES = 8 << 20  # log bytes of recent reads kept for other consumers (if any)
_SHAPES_LIMIT = 1024  # distinct header lists of Kafka records remembered (cleared beyond)
# An offset-header template: head, tail, delivery mode, priority, expiration.
_Template = tuple[bytes, bytes, int, int | None, str | None]
# What a Kafka record's headers make of its message: exchange, routing key, template.
_KafkaShape = tuple[str, str | None, _Template | None]
# A Kafka record's headers, key and timestamp second: what its message's properties depend on.
_ShapeKey = tuple[tuple[tuple[bytes, bytes | None], ...], bytes | None, int]
_REFUSED = PublishResult(False)
_MAX_BATCH_BYTES = 1 << 20  # a turn's publishes are appended in batches of at most this
_BATCH_OVERHEAD = 61  # a v2 batch header
_RECORD_OVERHEAD = 64  # a record's framing and its three x-amqp-* header names, about


class AppendOutcome(Protocol):
    error: object | None  # None when appended
    base_offset: int


class Waiters(Protocol):
    async def wait_any(self, keys: Iterable[object], timeout: float) -> None: ...


class StreamPartition(Protocol):
    """What a stream needs of its topic's partition (``streams.partition.Partition``; the
    queues domain does not import the Kafka model, the server hands it over)."""

    log: PartitionLog
    waiters: Waiters
    before_append: Callable[[], None] | None  # run before any append to the partition

    @property
    def high_watermark(self) -> int: ...

    @property
    def log_start_offset(self) -> int: ...

    def append(self, records: bytes) -> AppendOutcome: ...

    def offset_for_timestamp(self, timestamp_ms: int) -> tuple[int, int] | None: ...


class StreamTopics(Protocol):
    """The topics stream queues live on, as the server wires them from ``TopicManager``:
    ``open`` makes the one-partition topic ``name`` with ``configs`` unless it exists (and
    raises PreconditionFailed when the catalogue refuses it), ``delete`` removes it if any,
    ``on_delete`` reports deletions made by either protocol (a stream goes with its topic)."""

    def open(self, name: str, configs: Mapping[str, str]) -> StreamPartition: ...

    def delete(self, name: str) -> None: ...

    def on_delete(self, listener: Callable[[str], None]) -> None:
        """Have ``listener(topic name)`` called after any deletion of a topic."""


def check_topic_name(name: str, where: str) -> None:
    """406 unless ``name`` can be a topic (Kafka's rule: 1..249 of ``[a-zA-Z0-9._-]``)."""
    if not _TOPIC_NAME.match(name) or name in {".", ".."}:
        raise PreconditionFailed(
            f"cannot declare stream {where}: '{name}' is not a legal topic name "
            "(1 to 249 of ASCII alphanumerics, '.', '_' and '-')"
        )


def topic_name(vhost: str, queue: str) -> str:
    """The topic a stream queue is: its name in vhost ``/``, ``<vhost>.<queue>`` elsewhere
    (``/`` in the vhost name becomes ``_``)."""
    return queue if vhost == "/" else f"{vhost.replace('/', '_')}.{queue}"


def is_stream(arguments: Mapping[str, Any] | None) -> bool:
    """True if declare ``arguments`` ask for a stream queue."""
    value = (arguments or {}).get("x-queue-type")
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value == STREAM


def max_age_ms(text: str) -> int | None:
    """RabbitMQ's x-max-age ("7D", "12h", "30m", "10s", "1Y", "1M") in ms; None if malformed."""
    match = _MAX_AGE.match(text)
    if match is None:
        return None
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


def check_declare(
    name: str,
    vhost: str,
    *,
    durable: bool,
    exclusive: bool,
    auto_delete: bool,
    arguments: Mapping[str, Any],
) -> dict[str, str]:
    """RabbitMQ's refusals of a stream declaration (406), in its order; returns the topic
    configs the arguments map to."""
    where = resource("queue", name, vhost)
    for key in _UNSUPPORTED:
        if key in arguments:
            raise PreconditionFailed(
                f"invalid arg '{key}' for {where} of queue type rabbit_stream_queue"
            )
    if auto_delete:
        raise PreconditionFailed(f"invalid property 'auto-delete' for {where}")
    if exclusive:
        raise PreconditionFailed(f"invalid property 'exclusive-owner' for {where}")
    if not durable:
        raise PreconditionFailed(f"invalid property 'non-durable' for {where}")
    configs: dict[str, str] = {}
    age = arguments.get("x-max-age")
    if age is not None:
        text = age.decode("utf-8", "replace") if isinstance(age, bytes) else age
        ms = max_age_ms(text) if isinstance(text, str) else None
        if ms is None:
            raise PreconditionFailed(f"invalid arg 'x-max-age' for {where}: {{invalid,{text}}}")
        configs["retention.ms"] = str(ms)
    for key, config in (
        ("x-max-length-bytes", "retention.bytes"),
        ("x-stream-max-segment-size-bytes", "segment.bytes"),
    ):
        value = arguments.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise PreconditionFailed(
                f'invalid arg \'{key}\' for {where}: "expected integer, got '
                f'{type_name(arguments, key)}"'
            )
        if value < 0:
            raise PreconditionFailed(f"invalid arg '{key}' for {where}: {{value_negative,{value}}}")
        configs[config] = str(value)
    return configs


class _Reader:
    """One consumer's position in the stream, and what was read ahead for it: one log read
    decodes up to ``_READ_BYTES`` of records at once into deliveries, which later dispatches
    hand out as the consumer's credit allows. Owned by its ``StreamQueue`` (event loop)."""

    __slots__ = ("ahead", "at", "consumer", "offset")

    def __init__(self, consumer: Consumer, offset: int) -> None:
        self.consumer = consumer
        self.offset = offset  # the next offset to read from the log
        self.ahead: list[Delivery] = []  # read, not delivered yet: ahead[at:]
        self.at = 0

    def caught_up(self, end: int) -> bool:
        return self.at >= len(self.ahead) and self.offset >= end

    def drop_ahead(self) -> None:
        self.ahead = []
        self.at = 0


class StreamQueue:
    """A stream queue over ``partition``; see the module docstring. Made by the broker's queue
    factory, owned by the event loop thread (not thread-safe). It offers the interface the
    channel and the broker use of ``Queue``; what a stream cannot do raises RabbitMQ's error.
    """

    durable = True
    auto_delete = False
    exclusive_owner: object | None = None
    exclusive = False
    store = None  # the topic's log is flushed with the topics, not as a queue store
    unacked_count = 0  # acks only give credit back: nothing is held for them

    def __init__(
        self,
        name: str,
        vhost: str,
        arguments: Mapping[str, Any],
        partition: StreamPartition,
        flusher: FlushScheduler | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.vhost = vhost
        self.arguments: Mapping[str, Any] = (
            arguments if hasattr(arguments, "typed") else dict(arguments)
        )
        self.args = QueueArguments(queue_type=STREAM)
        self.partition = partition
        self._flusher = flusher
        self._clock = clock
        self._readers: list[_Reader] = []
        self._dispatching = False
        self._watcher: asyncio.Task[None] | None = None
        self._offset_headers = OffsetHeaders()
        self._keyed_sources: dict[str, int] = {}  # exchange -> bindings keying by routing key
        # this turn's publishes: (record or plain message, timestamp ms), appended together
        self._pending: list[tuple[NewRecord | Message, int]] = []
        self._pending_bytes = 0
        self._failed_from = -1  # the first offset a failed append had promised (-1: none)
        partition.before_append = self._append_pending
        self._kafka_shapes: dict[_ShapeKey, _KafkaShape] = {}
        # Recent reads (start offset -> end offset, deliveries, log bytes), which consumers at
        # the same offset share: readers that start together stay on the same boundaries.
        self._chunks: dict[int, tuple[int, list[Delivery], int]] = {}
        self._shared_bytes = 0
        self.deleted = False
        self.last_used_ms = int(clock() * 1000)

    # ---- what the broker and the channel read ------------------------------------------------

    @property
    def where(self) -> str:
        return resource("queue", self.name, self.vhost)

    @property
    def message_count(self) -> int:
        """Messages in the stream (RabbitMQ counts the whole log for a stream)."""
        partition = self.partition
        return partition.high_watermark + len(self._pending) - partition.log_start_offset

    @property
    def consumer_count(self) -> int:
        return len(self._readers)

    @property
    def consumers(self) -> list[Consumer]:
        return [r.consumer for r in self._readers]

    @property
    def unacked(self) -> list[Delivery]:
        return []  # nothing is outstanding: acks only give credit back

    def touch(self) -> None:
        self.last_used_ms = int(self._clock() * 1000)

    def unused_expired(self, now_ms: int) -> bool:
        return False

    def next_expiry_ms(self) -> int | None:
        return None

    def expire(self, now_ms: int | None = None) -> int:
        return 0

    def check_exclusive(self, owner: object) -> None:
        """Streams are never exclusive."""

    def binding_changed(self, source: str, arguments: Mapping[str, Any], added: bool) -> None:
        """Count the bindings from ``source`` that make the routing key the record key
        (``x-record-key: routing-key``); called by the vhost before it adds a binding (a bad
        value refuses it with 406) and after it removes one."""
        value = arguments.get(RECORD_KEY_ARGUMENT)
        if value is None:
            return
        if value not in _RECORD_KEY_SOURCES:
            raise PreconditionFailed(
                f"invalid arg '{RECORD_KEY_ARGUMENT}' for binding to {self.where}: "
                f"{value!r} (expected 'routing-key')"
            )
        count = self._keyed_sources.get(source, 0) + (1 if added else -1)
        if count > 0:
            self._keyed_sources[source] = count
        else:
            self._keyed_sources.pop(source, None)

    # ---- publish ------------------------------------------------------------------------------

    def publish(self, message: Message, dispatch: bool = True) -> PublishResult:
        """Buffer ``message`` for this turn's append (at once without an event loop); the
        confirm waits for ``wait_durable(offset)``."""
        if self.deleted:
            return _REFUSED
        now = int(self._clock() * 1000)
        # A plain AMQP message takes the durable queues' direct encoder (the same bytes
        # build_batch makes); one with headers, a timestamp or a record key shows them to
        # Kafka consumers (Message.to_stream_record), and a Kafka record keeps itself.
        keyed = message.exchange in self._keyed_sources
        item: NewRecord | Message = message
        if (
            message.record is not None
            or keyed
            or int.from_bytes(message.properties[:2], "big") & STREAM_VISIBLE_FLAGS
        ):
            key = message.routing_key.encode("utf-8", "surrogateescape") if keyed else None
            item = message.to_stream_record(now, key)
        size = len(message.body) + len(message.properties) + _RECORD_OVERHEAD
        if size > self._max_batch_bytes():
            return _REFUSED  # the topic's max.message.bytes: it can never be stored
        partition = self.partition
        pending = self._pending
        offset = partition.high_watermark + len(pending)
        pending.append((item, now))
        self._pending_bytes += size
        scheduled = len(pending) > 1 or self._schedule()
        if not scheduled or self._pending_bytes >= _MAX_BATCH_BYTES:
            self._append_pending()
        return PublishResult(True, offset)

    def _schedule(self) -> bool:
        """Append this turn's publishes at the end of the turn; False without an event loop."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        loop.call_soon(self._append_pending)
        return True

    def _max_batch_bytes(self) -> int:
        return min(_MAX_BATCH_BYTES, self.partition.log.config.max_message_bytes - _BATCH_OVERHEAD)

    def _append_pending(self) -> None:
        """Append the buffered publishes, as few batches as the size limit allows (also run by
        the partition before any other append, so the offsets promised stay exact)."""
        pending, self._pending = self._pending, []
        self._pending_bytes = 0
        if not pending or self.deleted:
            return
        partition = self.partition
        first = partition.high_watermark
        limit = self._max_batch_bytes()
        for batch in _stream_batches(pending, limit):
            try:
                result = partition.append(batch)
            except LogClosedError:  # the topic was deleted under the queue (by a Kafka client)
                result = None
            if result is None or result.error is not None:
                if self._failed_from < 0:
                    self._failed_from = first
                return
        if self._readers:
            self.dispatch()

    async def wait_durable(self, offset: int) -> None:
        """Wait until the record at ``offset`` is durable per the topic's flush policy;
        raises if its append failed (the channel then nacks)."""
        if offset < 0:
            return
        if self._pending and offset >= self.partition.high_watermark:
            self._append_pending()
        if 0 <= self._failed_from <= offset:
            raise LogClosedError(f"the append to {self.where} failed")
        if self._flusher is not None and self.partition.log.config.flush != "os":
            await self._flusher.durable(self.partition.log, offset + 1)

    def flush(self) -> None:
        """Append this turn's buffered publishes now."""
        if self._pending:
            self._append_pending()

    # ---- consumers ----------------------------------------------------------------------------

    def check_consume(self, no_ack: bool, prefetch: int, global_prefetch: int = 0) -> None:
        """RabbitMQ's refusals of a stream consumer, in its order: no consumer prefetch (406;
        a global one alone does not count), automatic acks, a global prefetch (both 540)."""
        if not prefetch:
            raise PreconditionFailed(f"consumer prefetch count is not set for '{self.where}'")
        if no_ack:
            raise FeatureNotImplemented(
                f"automatic acknowledgement not supported by stream queues {self.where}"
            )
        if global_prefetch:
            raise FeatureNotImplemented(f"{self.where} does not support global qos")

    def start_offset(self, spec: Any, arguments: Mapping[str, Any] | None = None) -> int:
        """The offset a consumer's ``x-stream-offset`` names; 406 for a value of a wrong type
        or an unknown word."""
        partition = self.partition
        start, end = partition.log_start_offset, partition.high_watermark
        if spec is None:
            return end
        if isinstance(spec, bytes):
            spec = spec.decode("utf-8", "replace")
        if isinstance(spec, datetime.datetime):
            if spec.tzinfo is None:
                spec = spec.replace(tzinfo=datetime.UTC)
            return self._offset_at(int(spec.timestamp()) * 1000)
        if isinstance(spec, str):
            if spec == "first":
                return start
            if spec == "next":
                return end
            if spec == "last":
                return self._last_batch_offset()
            age = max_age_ms(spec)  # RabbitMQ also takes an interval: that much back in time
            if age is not None:
                return self._offset_at(int(self._clock() * 1000) - age)
            raise self._refuse_offset("invalid_max_age")
        elif isinstance(spec, int) and not isinstance(spec, bool):
            if arguments is not None and type_name(arguments, OFFSET_HEADER) == "timestamp":
                return self._offset_at(spec * 1000)
            return min(max(spec, start), end)
        raise self._refuse_offset(f"{{invalid_offset_arg,{spec!r}}}")

    def _refuse_offset(self, reason: str) -> PreconditionFailed:
        return PreconditionFailed(f"failed consuming from stream {self.where}: {reason}")

    def _offset_at(self, timestamp_ms: int) -> int:
        found = self.partition.offset_for_timestamp(timestamp_ms)
        return self.partition.high_watermark if found is None else found[0]

    def _last_batch_offset(self) -> int:
        """The first offset of the last batch (RabbitMQ's "last chunk")."""
        plog = self.partition.log
        start, end = plog.log_start_offset, plog.log_end_offset
        if end == start:
            return end
        filled = [s for s in plog.segments if s.size]
        last = start
        for header, _batch in plog.iter_batches(max(filled[-1].base_offset, start)):
            last = header.base_offset
        return max(last, start)

    def add_consumer(self, consumer: Consumer, offset: int | None = None) -> None:
        """basic.consume from ``offset`` (default: ``next``); then dispatch."""
        if offset is None:
            offset = self.partition.high_watermark
        self._readers.append(_Reader(consumer, offset))
        self.touch()
        self.dispatch()

    def cancel_consumer(self, consumer: Consumer | str) -> Consumer | None:
        for i, reader in enumerate(self._readers):
            member = reader.consumer
            if member is consumer or (isinstance(consumer, str) and member.tag == consumer):
                del self._readers[i]
                self.touch()
                if not self._readers and self._watcher is not None:
                    self._watcher.cancel()
                return member
        return None

    def dispatch(self) -> int:
        """Deliver to every consumer with credit from its own offset; returns how many. A
        consumer that caught up waits for the next append."""
        if self._dispatching or not self._readers or self.deleted:
            return 0
        self._dispatching = True
        delivered = 0
        caught_up = False
        partition = self.partition
        try:
            end = partition.high_watermark
            start = partition.log_start_offset
            closed = partition.log.closed
            for reader in list(self._readers):
                consumer = reader.consumer
                if reader.at < len(reader.ahead):
                    if closed:  # the topic was deleted under the queue: nothing more to read
                        reader.drop_ahead()
                        reader.offset = 1 << 62
                    elif reader.ahead[reader.at].position < start:
                        self._skip_to(reader, start)  # retention moved the start past it
                while True:
                    room = consumer.room()
                    if room <= 0:
                        break
                    ahead, at = reader.ahead, reader.at
                    if at >= len(ahead):
                        if reader.offset >= end:
                            caught_up = True
                            break
                        before = reader.offset
                        if not self._read(reader):
                            if reader.offset == before:  # nothing readable there (yet)
                                break
                            continue
                        ahead, at = reader.ahead, 0
                    if at or len(ahead) > room:
                        batch = ahead[at : at + room]
                        at += len(batch)
                        if at < len(ahead):
                            reader.at = at
                        else:
                            reader.drop_ahead()
                    else:
                        batch = ahead
                        reader.drop_ahead()
                    consumer.deliver_many(batch)
                    delivered += len(batch)
                    if reader not in self._readers:  # cancelled by the delivery
                        break
        finally:
            self._dispatching = False
        if caught_up:
            self._watch()
        return delivered

    @staticmethod
    def _skip_to(reader: _Reader, start: int) -> None:
        """Drop read-ahead deliveries below the log start, as a fresh read would skip them."""
        ahead = reader.ahead
        at = bisect.bisect_left(ahead, start, reader.at, len(ahead), key=_position)
        if at >= len(ahead):
            reader.drop_ahead()
            reader.offset = max(reader.offset, start)
        else:
            reader.at = at

    def _read(self, reader: _Reader) -> bool:
        """Read ahead from ``reader``'s offset (up to ``_READ_BYTES`` of the log), moving the
        offset past what was read; False if it found no deliveries.

        The records of each batch are decoded at once (``decode_records``); records in the
        AMQP layout (what AMQP publishes append) are matched against it without building
        header pairs, and their ``x-stream-offset`` header is spliced into a template of
        their property bytes (``OffsetHeaders``): a delivery costs one ``Message`` and one
        ``Delivery``. Other records (a Kafka producer's) go through ``_kafka_rows``."""
        partition = self.partition
        shared = self._chunks.get(reader.offset)
        if (
            shared is not None
            and not partition.log.closed
            and reader.offset >= partition.log_start_offset
        ):
            return self._reuse(reader, *shared)
        try:
            data = partition.log.read(reader.offset, _READ_BYTES)
        except OffsetOutOfRangeError:  # retention moved the start past the reader
            reader.offset = partition.log_start_offset
            return False
        except LogClosedError:  # the topic was deleted under the queue: nothing more to read
            reader.offset = 1 << 62
            return False
        tag = reader.consumer.tag
        entry_for = self._offset_headers.entry
        pack = _LONG.pack
        decode, section_of, layout = decode_records, records_section, _AMQP_LAYOUT
        new_message, new_delivery = Message, Delivery  # locals: the loop runs per record
        out: list[Delivery] = []
        append = out.append
        offset = reader.offset
        for header, batch in iter_batches(data):
            # BatchHeader fields by index (base_offset, attributes, last_offset_delta): the
            # properties cost a call each, per batch (a batch per message, as AMQP appends).
            next_offset = header[0] + header[6] + 1
            if next_offset <= offset or header[5] & CONTROL_MASK:
                offset = max(offset, next_offset)
                continue
            section = section_of(batch, header)
            try:
                rows = decode(section, header, layout=layout)
            except LayoutMismatchError:
                self._kafka_rows(section, header, offset, tag, out)
                offset = next_offset
                continue
            for position, timestamp, _key, body, (exchange, routing_key, properties) in rows:
                if position < offset:
                    continue
                entry = entry_for(properties)
                if entry is None:  # no template for these properties: encode them fully
                    message = _with_offset_header(
                        Message.from_amqp(_text(exchange), _text(routing_key), properties,
                                          b"" if body is None else body),
                        position,
                    )
                else:
                    head, tail, delivery_mode, priority, expiration = entry
                    message = new_message(
                        exchange.decode("utf-8", "surrogateescape"),
                        routing_key.decode("utf-8", "surrogateescape"),
                        b"" if body is None else body, head + pack(position) + tail,
                        delivery_mode, priority, expiration, position,
                    )
                append(new_delivery(message, self, position, False, tag, timestamp, None))
            offset = next_offset
        if len(self._readers) > 1:
            if out:
                self._share(reader.offset, offset, out, len(data))
        elif self._chunks:  # a consumer alone again: nobody to share with
            self._chunks.clear()
            self._shared_bytes = 0
        reader.offset = offset
        reader.ahead = out
        reader.at = 0
        return bool(out)

    def _share(self, start: int, end: int, read: list[Delivery], size: int) -> None:
        """Keep a read for the other consumers, within ``_SHARED_BYTES`` of log (oldest
        reads go first, and reads every consumer is past)."""
        chunks = self._chunks
        low = min(r.offset for r in self._readers)
        for key in [k for k, chunk in chunks.items() if chunk[0] <= low]:
            self._shared_bytes -= chunks.pop(key)[2]
        while chunks and self._shared_bytes + size > _SHARED_BYTES:
            self._shared_bytes -= chunks.pop(next(iter(chunks)))[2]
        chunks[start] = (end, read, size)
        self._shared_bytes += size

    def _reuse(self, reader: _Reader, end: int, read: list[Delivery], _size: int) -> bool:
        """Read ahead from a chunk another consumer read at the same offset: its messages
        are shared (immutable), only the deliveries are this consumer's."""
        tag = reader.consumer.tag
        new_delivery = Delivery
        reader.ahead = [
            new_delivery(d[0], self, d[2], False, tag, d[5], None) for d in read
        ]
        reader.at = 0
        reader.offset = end
        return True

    def _kafka_rows(
        self, section: bytes, header: BatchHeader, offset: int, tag: str, out: list[Delivery]
    ) -> None:
        """Deliveries of the records of a batch not in the AMQP layout (``Message.from_record``
        semantics), at or after ``offset``; the message each distinct header list makes is
        worked out once (``_kafka_shapes``)."""
        shapes = self._kafka_shapes
        pack = _LONG.pack
        for position, timestamp, key, value, pairs in decode_records(section, header):
            if position < offset:
                continue
            headers = tuple(pairs)
            # the key (header x-record-key) and the second (timestamp property) shape the
            # properties too: records of one producer mostly share them within a second
            cache_key = (headers, key, timestamp // 1000)
            shape = shapes.get(cache_key)
            if shape is None:
                shape = self._kafka_shape(cache_key, timestamp)
            exchange, routing_key, entry = shape
            if routing_key is None:  # the record key is the routing key
                routing_key = _text(key)
            body = b"" if value is None else value
            if entry is None:
                record = Record(position, timestamp, key, value, _named(headers))
                message = _with_offset_header(Message.from_record(record), position)
            else:
                head, tail, delivery_mode, priority, expiration = entry
                message = Message(
                    exchange, routing_key, body, head + pack(position) + tail, delivery_mode,
                    priority, expiration, position,
                )
            out.append(Delivery(message, self, position, False, tag, timestamp, None))

    def _kafka_shape(self, cache_key: _ShapeKey, timestamp: int) -> _KafkaShape:
        """Exchange, routing key (None: the record key) and offset-header template of a
        record with these headers, key and timestamp, as ``Message.from_record`` reads it."""
        headers, key, _second = cache_key
        named = _named(headers)
        message = Message.from_record(Record(0, timestamp, key, None, named))
        has_key = any(name == ROUTING_KEY_HEADER for name, _value in named)
        shape = (
            message.exchange,
            message.routing_key if has_key else None,
            self._offset_headers.entry(message.properties),
        )
        if len(self._kafka_shapes) >= _SHAPES_LIMIT:
            self._kafka_shapes.clear()
        self._kafka_shapes[cache_key] = shape
        return shape

    def _watch(self) -> None:
        """Wake the consumers on the partition's next append (of either protocol)."""
        if self._watcher is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (unit tests): publishes dispatch by themselves
            return
        self._watcher = loop.create_task(self._wait_for_appends())

    async def _wait_for_appends(self) -> None:
        partition = self.partition
        try:
            while self._readers and not self.deleted:
                await partition.waiters.wait_any([partition.log], _WAIT_SECONDS)
                self.dispatch()
                end = partition.high_watermark
                if not any(r.caught_up(end) for r in self._readers):
                    return  # every consumer has a backlog: its acks dispatch it
        finally:
            self._watcher = None

    # ---- basic.get, acks ----------------------------------------------------------------------

    def get(self, no_ack: bool = False) -> Delivery | None:
        raise FeatureNotImplemented(f"basic.get not supported by stream queues {self.where}")

    def ack(self, delivery: Delivery) -> bool:
        """Acks never delete from a stream; the channel gives the credit back."""
        return True

    def ack_many(self, deliveries: Iterable[Delivery]) -> int:
        if isinstance(deliveries, list):  # what the channel passes: nothing to walk
            return len(deliveries)
        return sum(1 for _ in deliveries)

    def reject(self, delivery: Delivery, requeue: bool) -> bool:
        return True

    nack = reject

    def requeue_all(self, deliveries: Iterable[Delivery]) -> int:
        """Streams are not redelivered: a requeue only settles (and frees credit)."""
        self.dispatch()
        return 0

    # ---- purge, delete, close -----------------------------------------------------------------

    def purge(self) -> int:
        return 0

    def delete(self) -> int:
        """queue.delete: consumers are cancelled; the broker deletes the topic."""
        if self.deleted:
            return 0
        count = self.message_count
        self.deleted = True
        self._pending = []
        self.partition.before_append = None
        readers, self._readers = self._readers, []
        if self._watcher is not None:
            self._watcher.cancel()
        for reader in readers:
            reader.consumer.cancelled()
        return count

    def close(self) -> None:
        """Broker shutdown: append what this turn buffered; the topic manager closes the log."""
        self.flush()
        self.partition.before_append = None
        if self._watcher is not None:
            self._watcher.cancel()

    def __repr__(self) -> str:
        return f"StreamQueue({self.name!r}, end={self.partition.high_watermark})"


def _stream_batches(
    pending: list[tuple[NewRecord | Message, int]], limit: int
) -> Iterator[bytes]:
    """The batches holding ``pending`` in order: runs of plain AMQP messages through the
    direct encoder, records through ``build_batch``, each batch at most about ``limit``."""
    run: list[Any] = []
    plain = True
    size = 0
    for item, timestamp in pending:
        is_plain = isinstance(item, Message)
        grows = (
            len(item.body) + len(item.properties) if is_plain
            else len(item.value or b"") + sum(len(v or b"") + len(k) for k, v in item.headers)
        ) + _RECORD_OVERHEAD
        if run and (is_plain is not plain or size + grows > limit):
            yield _encode_run(run, plain)
            run, size = [], 0
        plain = is_plain
        run.append((item, timestamp))
        size += grows
    if run:
        yield _encode_run(run, plain)


def _encode_run(run: list[Any], plain: bool) -> bytes:
    if plain:
        return encode_message_batch(run)
    return build_batch([record for record, _ts in run], now_ms=run[0][1])


class OffsetHeaders:
    """Adds the ``x-stream-offset`` header (a long) to delivered messages.

    Decoding and re-encoding the properties of every delivery would cost more than the rest of
    the delivery; but messages of a stream mostly share their property bytes, and for equal
    property bytes the result differs only in the header's eight value bytes. So each distinct
    property block is encoded once, with a marker value, and later deliveries splice their
    offset into that template (``entry``: head, tail and the parsed delivery mode, priority
    and expiration, which the header does not change). Owned by one ``StreamQueue`` (event
    loop thread).
    """

    __slots__ = ("_templates",)

    _MARKER = 0x5A17_C0DE_0FF5_E7ED
    _LIMIT = 1024  # distinct property blocks remembered (cleared beyond)

    def __init__(self) -> None:
        self._templates: dict[bytes, _Template | None] = {}

    def entry(self, properties: bytes) -> _Template | None:
        """The template for ``properties``; None when the marker was ambiguous (such
        properties are encoded in full for each delivery)."""
        try:
            return self._templates[properties]
        except KeyError:
            return self._template(properties)

    def add(self, message: Message, offset: int) -> Message:
        """``message`` with ``x-stream-offset: offset`` in its headers table."""
        template = self.entry(message.properties)
        if template is None:
            return _with_offset_header(message, offset)
        head, tail = template[0], template[1]
        return message._replace(
            properties=head + _LONG.pack(offset) + tail, offset=offset, record=None
        )

    def _template(self, properties: bytes) -> _Template | None:
        probe = _with_offset_header(Message.from_amqp("", "", properties, b""), self._MARKER)
        encoded = probe.properties
        marker = _LONG.pack(self._MARKER)
        at = encoded.find(marker)
        template = None
        if at >= 0 and encoded.find(marker, at + 1) < 0:
            template = (
                encoded[:at], encoded[at + len(marker) :], probe.delivery_mode, probe.priority,
                probe.expiration,
            )
        if len(self._templates) >= self._LIMIT:
            self._templates.clear()
        self._templates[bytes(properties)] = template
        return template


def _with_offset_header(message: Message, offset: int) -> Message:
    """``message`` with its stream offset in the ``x-stream-offset`` header (a long)."""
    headers = message.typed_headers()
    headers[OFFSET_HEADER] = Field("l", offset)
    return message.replace_properties(headers=headers)


def _position(delivery: Delivery) -> int:
    return delivery.position


def _text(data: bytes | None) -> str:
    return "" if data is None else data.decode("utf-8", "surrogateescape")


def _named(headers: Iterable[tuple[bytes, bytes | None]]) -> tuple[tuple[str, bytes | None], ...]:
    """Record headers with their names as text (as ``Message.from_record`` reads them)."""
    return tuple((name.decode("utf-8", "surrogateescape"), value) for name, value in headers)
