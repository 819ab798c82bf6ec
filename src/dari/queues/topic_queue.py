"""AMQP queues over Kafka topics: competing consumers with per-message acks on a share group.

A queue declared with ``x-topic`` = a topic name works that topic off (all its partitions) as a
queue while the records stay in the topic for Kafka consumers. Which records are taken, by
whom, how often and whether they are done is not the queue's own state: it is the acquisition
state of the share group (Kafka's KIP-932) named by ``group_name`` — the queue name in vhost
``/``, ``<vhost>.<queue>`` elsewhere — so AMQP consumers of the queue and Kafka
``ShareConsumer``s of that group compete for the same records. The queues domain does not
import the Kafka model: it reaches the topic through the ``TopicShares`` interface declared
here, which the server implements (``server/amqp_topic_queues.py``).

Mapping to the share group:

* a delivery is an acquired record (one ``acquire`` per partition per dispatch, as many as the
  consumers' prefetch credit allows); ``no_ack`` consumers accept on delivery;
* ``basic.ack`` → ACCEPT; ``basic.nack``/``reject`` with ``requeue`` (and a closed channel) →
  RELEASE, redelivered later with ``redelivered`` set and RabbitMQ's ``x-delivery-count``
  header (deliveries before this one); without ``requeue`` → REJECT (archived), dead-lettered
  through ``x-dead-letter-exchange`` with reason ``rejected``;
* ``x-delivery-limit`` = n allows n redeliveries, as in RabbitMQ's quorum queues (the share
  group's delivery limit is n + 1 deliveries); a record released past it is archived and
  dead-lettered with reason ``delivery_limit``;
* ``x-topic-offset`` (``first``, the default, or ``last``) is where a new group starts (Kafka's
  ``share.auto.offset.reset`` earliest / latest);
* ``queue.purge`` archives every record not acquired; ``queue.delete`` deletes the group's
  state, never the topic.

A publish routed to the queue appends one record to the topic (``Message.to_record``'s AMQP
layout), on the partition Kafka's keyed partitioner picks for the routing key. Records
produced by Kafka clients are delivered with body = value, the record headers as the headers
table (``Message.from_record``), the record key as routing key and ``x-record-key`` header,
``x-stream-partition``/``x-stream-offset`` headers and the record timestamp (seconds) as the
timestamp property; AMQP messages are delivered with their own properties, unchanged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from dari.message import (
    EXCHANGE_HEADER,
    PROPERTIES_HEADER,
    ROUTING_KEY_HEADER,
    Field,
    Message,
    encode_properties,
    parse_properties,
    record_headers_table,
)
from dari.queues.errors import AccessRefused, PreconditionFailed, resource
from dari.queues.queue import (
    REJECTED,
    Consumer,
    DeadLetter,
    Delivery,
    PublishResult,
    QueueArguments,
)
from dari.queues.queue_store import encode_message_batch
from dari.queues.stream_queue import topic_name
from dari.queues.values import type_name
from dari.records import (
    BatchHeader,
    HeaderLayout,
    LayoutMismatchError,
    decode_records,
    iter_batches,
    records_section,
)
from dari.records.builder import build_batch
from dari.records.records import Record, iter_records
from dari.storage import FlushScheduler, LogClosedError, PartitionLog

TOPIC_ARG = "x-topic"
START_ARG = "x-topic-offset"
DELIVERY_LIMIT_ARG = "x-delivery-limit"
DELIVERY_COUNT_HEADER = "x-delivery-count"
PARTITION_HEADER = "x-stream-partition"
OFFSET_HEADER = "x-stream-offset"
DELIVERY_LIMIT = "delivery_limit"  # the x-death reason of a record past its delivery limit
QUEUE_TYPE = "topic"
START_POSITIONS = {"first": "first", "earliest": "first", "last": "last", "latest": "last"}

_MAX_ACQUIRE = 1024  # records one dispatch round acquires at most (no_ack consumers)
_READ_BYTES = 1 << 20  # how much of the log one read takes at most
_MIN_READ_BYTES = 16 << 10
_WAIT_SECONDS = 1.0  # a waiting consumer looks again this often (released or expired locks)
# Queue arguments a topic queue refuses: the topic's retention, not the queue, bounds it.
_UNSUPPORTED = (
    "x-max-priority", "x-message-ttl", "x-max-length", "x-max-length-bytes", "x-overflow",
    "x-single-active-consumer", "x-queue-mode", "x-stream-offset", "x-max-age",
)
_AMQP_LAYOUT = HeaderLayout((EXCHANGE_HEADER, ROUTING_KEY_HEADER, PROPERTIES_HEADER))
# an acquired record ready to deliver: (message, partition, offset, redelivered)
_Acquired = tuple[Message, "SharedPartition", int, bool]
_REFUSED = PublishResult(False)
_ACCEPTED = PublishResult(True)


# ---- what the queue needs of the Kafka side ---------------------------------------------------


class Acquired(Protocol):
    """A run of records acquired together: ``first_offset..last_offset`` (inclusive), each
    delivered ``delivery_count`` times counting this delivery."""

    first_offset: int
    last_offset: int
    delivery_count: int


class AppendOutcome(Protocol):
    error: object | None  # None when appended
    base_offset: int


class SharedPartition(Protocol):
    """One partition of the topic with the share group's acquisition state of it. Records the
    queue acquires stay acquired until it settles them (no lock timeout for AMQP)."""

    index: int
    log: PartitionLog

    def append(self, records: bytes) -> AppendOutcome: ...

    def read(self, offset: int, max_bytes: int) -> bytes | memoryview: ...

    def acquire(self, max_records: int) -> Sequence[Acquired]: ...

    def accept(self, offsets: Sequence[int]) -> None: ...

    def release(self, offsets: Sequence[int]) -> list[int]:
        """Make ``offsets`` available again; returns those archived instead, having reached
        the delivery limit."""
        ...

    def reject(self, offsets: Sequence[int]) -> None: ...

    @property
    def available(self) -> int:
        """Records neither acquired, acknowledged nor archived (may be approximate)."""
        ...

    def purge(self) -> int:
        """Archive every available record up to the high watermark; returns how many."""
        ...


class SharedTopic(Protocol):
    """A topic worked off by one share group; ``partitions`` grow with the topic."""

    @property
    def partitions(self) -> Sequence[SharedPartition]: ...

    def partition_for(self, routing_key: str) -> SharedPartition:
        """Where a publish with ``routing_key`` goes (Kafka's keyed partitioner)."""
        ...

    async def wait_for_records(self, timeout: float) -> None:
        """Return once records may have become available, or after ``timeout`` seconds."""
        ...

    def delete(self) -> None:
        """Delete the share group's state on this topic (the topic stays)."""
        ...

    def close(self) -> None: ...


class TopicShares(Protocol):
    """The topics queues are declared over, with their share groups, as the server wires them.

    ``open`` raises NotFound for a missing topic it does not create; with ``create`` false
    (a queue recovered at start) a missing topic is no error: the queue has no partitions
    until it exists. ``delivery_limit`` is the share group's limit of deliveries per record
    (None: the group's default)."""

    def open(
        self, topic: str, group: str, *, start: str, delivery_limit: int | None,
        create: bool = True,
    ) -> SharedTopic: ...


# ---- declaration ------------------------------------------------------------------------------


def is_topic_queue(arguments: Mapping[str, Any] | None) -> bool:
    """True if declare ``arguments`` ask for a queue over a topic."""
    return TOPIC_ARG in (arguments or {})


def group_name(vhost: str, queue: str) -> str:
    """The share group a topic queue is: its name in vhost ``/``, ``<vhost>.<queue>``
    elsewhere (``/`` in the vhost name becomes ``_``), as stream queues name their topics."""
    return topic_name(vhost, queue)


def parse_declare(
    name: str,
    vhost: str,
    *,
    durable: bool,
    exclusive: bool,
    auto_delete: bool,
    arguments: Mapping[str, Any],
) -> tuple[str, str, int | None, QueueArguments]:
    """Validate a topic queue declaration (406 on refusal, worded as RabbitMQ words its quorum
    and stream queues' refusals); returns (topic, start, share delivery limit or None, the
    queue arguments the broker reads: its dead-letter exchange and routing key)."""
    where = resource("queue", name, vhost)
    for key in _UNSUPPORTED:
        if key in arguments:
            raise PreconditionFailed(f"invalid arg '{key}' for {where} of queue type {QUEUE_TYPE}")
    queue_type = arguments.get("x-queue-type")
    if isinstance(queue_type, bytes):
        queue_type = queue_type.decode("utf-8", "replace")
    if queue_type not in (None, "classic", "quorum"):
        raise PreconditionFailed(
            f"invalid arg 'x-queue-type' for {where}: a queue over a topic cannot be of "
            f"type '{queue_type}'"
        )
    if auto_delete:
        raise PreconditionFailed(f"invalid property 'auto-delete' for {where}")
    if exclusive:
        raise PreconditionFailed(f"invalid property 'exclusive-owner' for {where}")
    if not durable:
        raise PreconditionFailed(f"invalid property 'non-durable' for {where}")
    topic = _text_arg(arguments, TOPIC_ARG, where)
    if not _legal_topic(topic):
        raise PreconditionFailed(
            f"invalid arg '{TOPIC_ARG}' for {where}: '{topic}' is not a legal topic name "
            "(1 to 249 of ASCII alphanumerics, '.', '_' and '-', not internal)"
        )
    start_text = "first"
    if arguments.get(START_ARG) is not None:
        start_text = _text_arg(arguments, START_ARG, where)
    start = START_POSITIONS.get(start_text)
    if start is None:
        raise PreconditionFailed(
            f"invalid arg '{START_ARG}' for {where}: {{invalid_offset,{start_text}}}"
        )
    limit = arguments.get(DELIVERY_LIMIT_ARG)
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise PreconditionFailed(
                f"invalid arg '{DELIVERY_LIMIT_ARG}' for {where}: \"expected integer, got "
                f"{type_name(arguments, DELIVERY_LIMIT_ARG)}\""
            )
        if limit < 0:
            raise PreconditionFailed(
                f"invalid arg '{DELIVERY_LIMIT_ARG}' for {where}: {{value_negative,{limit}}}"
            )
    general = {
        k: v for k, v in arguments.items() if k not in (TOPIC_ARG, START_ARG, "x-queue-type")
    }
    parsed = QueueArguments.parse(general, name, vhost)
    return topic, start, None if limit is None else limit + 1, parsed


def _text_arg(arguments: Mapping[str, Any], key: str, where: str) -> str:
    value = arguments.get(key)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if not isinstance(value, str):
        raise PreconditionFailed(
            f"invalid arg '{key}' for {where}: {{unacceptable_type,{type_name(arguments, key)}}}"
        )
    return value


def _legal_topic(name: str) -> bool:
    if not 0 < len(name) <= 249 or name in {".", ".."} or name.startswith("__"):
        return False
    return all(c.isascii() and (c.isalnum() or c in "._-") for c in name)


# ---- the queue --------------------------------------------------------------------------------


class _Held:
    """One unsettled delivery: where its record is and the delivery itself."""

    __slots__ = ("delivery", "offset", "partition")

    def __init__(self, partition: SharedPartition, offset: int, delivery: Delivery) -> None:
        self.partition = partition
        self.offset = offset
        self.delivery = delivery


class TopicQueue:
    """A queue over a topic's share group; see the module docstring. Made by the broker's queue
    factory, owned by the event loop thread (not thread-safe). It offers the interface the
    channel and the broker use of ``Queue``.
    """

    durable = True
    auto_delete = False
    exclusive_owner: object | None = None
    exclusive = False
    store = None  # the topic's logs are flushed with the topics, not as a queue store

    def __init__(
        self,
        name: str,
        vhost: str,
        arguments: Mapping[str, Any],
        args: QueueArguments,
        topic: SharedTopic,
        *,
        dead_letter: DeadLetter | None = None,
        flusher: FlushScheduler | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.vhost = vhost
        self.arguments: Mapping[str, Any] = (
            arguments if hasattr(arguments, "typed") else dict(arguments)
        )
        self.args = args
        self.topic = topic
        self.dead_letter = dead_letter
        self._flusher = flusher
        self._clock = clock
        self._consumers: list[Consumer] = []
        self._next_consumer = 0
        self._next_partition = 0
        self._exclusive_consumer: Consumer | None = None
        self._held: dict[int, _Held] = {}  # position -> unsettled delivery
        self._next_position = 0
        self._appended: dict[int, tuple[PartitionLog, int]] = {}  # last append per partition
        # partition index -> (first offset, next offset, records) of the last batch read
        self._batches: dict[int, tuple[int, int, list[Record | Message]]] = {}
        self._round_robin = 0  # partition of the next publish without a routing key
        self._dispatching = False
        self._watcher: asyncio.Task[None] | None = None
        self.deleted = False
        self.last_used_ms = int(clock() * 1000)

    # ---- what the broker and the channel read ------------------------------------------------

    @property
    def where(self) -> str:
        return resource("queue", self.name, self.vhost)

    @property
    def message_count(self) -> int:
        """Records ready for delivery (approximate: the share state's count)."""
        return sum(p.available for p in self.topic.partitions)

    @property
    def consumer_count(self) -> int:
        return len(self._consumers)

    @property
    def consumers(self) -> list[Consumer]:
        return list(self._consumers)

    @property
    def unacked(self) -> list[Delivery]:
        return [held.delivery for held in self._held.values()]

    @property
    def unacked_count(self) -> int:
        return len(self._held)

    def touch(self) -> None:
        self.last_used_ms = int(self._clock() * 1000)

    def unused_expired(self, now_ms: int) -> bool:
        expires = self.args.expires
        return (
            expires is not None
            and not self._consumers
            and now_ms - self.last_used_ms >= expires
        )

    def next_expiry_ms(self) -> int | None:
        return None

    def expire(self, now_ms: int | None = None) -> int:
        return 0

    def check_exclusive(self, owner: object) -> None:
        """Topic queues are never exclusive."""

    # ---- publish ------------------------------------------------------------------------------

    def publish(self, message: Message, dispatch: bool = True) -> PublishResult:
        """Append ``message`` as one record to the partition its routing key picks; unless the
        topic's flush policy is "os", the confirm waits for ``wait_durable``."""
        if self.deleted:
            return _REFUSED
        if not self.topic.partitions:  # the topic was deleted under the queue
            return _REFUSED
        partition = self._partition_for(message.routing_key)
        now = int(self._clock() * 1000)
        if message.record is None:
            batch = encode_message_batch([(message, now)])
        else:
            batch = build_batch((message.to_record(now),), now_ms=now)
        try:
            result = partition.append(batch)
        except LogClosedError:  # the topic was deleted under the queue (by a Kafka client)
            return _REFUSED
        if result.error is not None:
            return _REFUSED
        self._appended[partition.index] = (partition.log, result.base_offset)
        if dispatch and self._consumers:
            self.dispatch()
        if partition.log.config.flush == "os":  # durable once written: confirm now
            return _ACCEPTED
        return PublishResult(True, result.base_offset)

    def _partition_for(self, routing_key: str) -> SharedPartition:
        if routing_key:
            return self.topic.partition_for(routing_key)
        partitions = self.topic.partitions  # no key: round-robin, as Kafka spreads null keys
        self._round_robin = (self._round_robin + 1) % len(partitions)
        return partitions[self._round_robin]

    async def wait_durable(self, offset: int) -> None:
        """Wait until this queue's appends so far are durable per the topic's flush policy
        (the offsets of several partitions do not compare, so all of them are waited for)."""
        if self._flusher is None or offset < 0:
            return
        waits = list(self._appended.values())
        for plog, last in waits:
            await self._flusher.durable(plog, last + 1)

    def flush(self) -> None:
        """Appends go to the log at once; nothing is buffered here."""

    # ---- consumers ----------------------------------------------------------------------------

    def add_consumer(self, consumer: Consumer) -> None:
        """basic.consume: 403 if an exclusive consumer is in the way; then dispatch."""
        if self._exclusive_consumer is not None or (consumer.exclusive and self._consumers):
            raise AccessRefused(f"{self.where} in exclusive use")
        self._consumers.append(consumer)
        if consumer.exclusive:
            self._exclusive_consumer = consumer
        self.touch()
        self.dispatch()

    def cancel_consumer(self, consumer: Consumer | str) -> Consumer | None:
        """basic.cancel; its unsettled deliveries stay outstanding (the channel's)."""
        for i, member in enumerate(self._consumers):
            if member is consumer or (isinstance(consumer, str) and member.tag == consumer):
                del self._consumers[i]
                if self._exclusive_consumer is member:
                    self._exclusive_consumer = None
                self.touch()
                if not self._consumers and self._watcher is not None:
                    self._watcher.cancel()
                return member
        return None

    def dispatch(self) -> int:
        """Acquire as many records as the consumers have credit for and share them out,
        round-robin in contiguous runs; returns how many were delivered. Consumers left with
        credit wait for records to become available."""
        if self._dispatching or not self._consumers or self.deleted:
            return 0
        self._dispatching = True
        delivered = 0
        starved = False
        try:
            while True:
                takers = self._takers()
                if not takers:
                    break
                want = min(sum(room for _c, room in takers), _MAX_ACQUIRE)
                acquired = self._acquire(want)
                if not acquired:
                    starved = True
                    break
                delivered += self._share_out(takers, acquired)
                if len(acquired) < want:
                    starved = True
                    break
        finally:
            self._dispatching = False
        if starved:
            self._watch()
        return delivered

    def _takers(self) -> list[tuple[Consumer, int]]:
        """Consumers with credit, starting with the next in turn (each round starts one
        further), those with the least room first: so that an even split of any number of
        records up to their total room always places them all."""
        consumers = self._consumers
        count = len(consumers)
        start = self._next_consumer % count if count else 0
        self._next_consumer = start + 1
        out = []
        for i in range(count):
            consumer = consumers[(start + i) % count]
            room = consumer.room()
            if room > 0:
                out.append((consumer, min(room, _MAX_ACQUIRE)))
        out.sort(key=_room)  # stable: the turn order stays among equal rooms
        return out

    def _share_out(self, takers: list[tuple[Consumer, int]], acquired: list[_Acquired]) -> int:
        """Deliver ``acquired`` to ``takers``, an even split capped by each one's room."""
        held = self._held
        at = 0
        total = len(acquired)
        left = len(takers)
        for consumer, room in takers:
            if at >= total:
                break
            share = min(room, -(-(total - at) // left))  # an even split of what is left
            left -= 1
            if consumer not in self._consumers:  # cancelled by an earlier delivery
                continue
            tag = consumer.tag
            no_ack = consumer.no_ack
            batch: list[Delivery] = []
            accepted: dict[int, tuple[SharedPartition, list[int]]] = {}
            for message, partition, offset, redelivered in acquired[at : at + share]:
                position = self._next_position
                self._next_position = position + 1
                delivery = Delivery(message, self, position, redelivered, tag, 0, None)
                if no_ack:
                    accepted.setdefault(partition.index, (partition, []))[1].append(offset)
                else:
                    held[position] = _Held(partition, offset, delivery)
                batch.append(delivery)
            at += share
            for partition, offsets in accepted.values():
                partition.accept(offsets)
            consumer.deliver_many(batch)
        if at < total:  # consumers went during the deliveries: give the rest back
            self._give_back(acquired[at:])
        return at

    def _give_back(self, undelivered: list[_Acquired]) -> None:
        by_partition: dict[int, tuple[SharedPartition, list[int], dict[int, Message]]] = {}
        for message, partition, offset, _redelivered in undelivered:
            entry = by_partition.setdefault(partition.index, (partition, [], {}))
            entry[1].append(offset)
            entry[2][offset] = message
        for partition, offsets, messages in by_partition.values():
            for offset in partition.release(sorted(offsets)):
                self._dead_letter(messages[offset], DELIVERY_LIMIT)

    def _acquire(self, want: int) -> list[_Acquired]:
        """Up to ``want`` records from the partitions (the first in turn first), as messages
        ready to deliver with (partition, offset, redelivered)."""
        partitions = self.topic.partitions
        count = len(partitions)
        out: list[_Acquired] = []
        start = self._next_partition % count if count else 0
        self._next_partition = start + 1
        for i in range(count):
            partition = partitions[(start + i) % count]
            ranges = partition.acquire(want - len(out))
            if ranges:
                self._read_acquired(partition, ranges, out)
            if len(out) >= want:
                break
        return out

    def _read_acquired(
        self,
        partition: SharedPartition,
        ranges: Sequence[Acquired],
        out: list[_Acquired],
    ) -> None:
        """The records of ``ranges`` read from the log; acquired offsets that hold no record
        (compacted away, control batches) are accepted at once."""
        gaps: list[int] = []
        index = partition.index
        for run in ranges:
            offset, last, count = run.first_offset, run.last_offset, run.delivery_count
            redelivered = count > 1
            while offset <= last:
                cached = self._batches.get(index)
                if cached is None or not cached[0] <= offset < cached[1]:
                    cached = self._read_batches(partition, offset, last)
                    if cached is None:  # gone from the log (retention, deleted topic)
                        break
                _first, end, records = cached
                for record in records:
                    at = record.offset
                    if at < offset:
                        continue
                    if at > last:
                        break
                    if at > offset:
                        gaps.extend(range(offset, at))
                    message = self._message(record, index, count)
                    out.append((message, partition, at, redelivered))
                    offset = at + 1
                end = min(end, last + 1)
                if end > offset:  # offsets of the batch without a record
                    gaps.extend(range(offset, end))
                    offset = end
            if offset <= last:
                gaps.extend(range(offset, last + 1))
        if gaps:
            partition.accept(gaps)

    def _read_batches(
        self, partition: SharedPartition, offset: int, last: int
    ) -> tuple[int, int, list[Record | Message]] | None:
        """The records of the batches read from ``offset`` on, up to about ``last``, as one
        (first offset, next offset, records) span; the last batch read is kept, since
        consumers with a small prefetch take a producer's large batch in several pieces and
        decoding it once is the cost that counts."""
        want = last - offset + 1
        data = partition.read(offset, min(_READ_BYTES, max(_MIN_READ_BYTES, want * 256)))
        if not data:
            return None
        records: list[Record | Message] = []
        first = end = offset
        tail: tuple[int, int, list[Record | Message]] | None = None
        for header, batch in iter_batches(data):
            if header.base_offset > last and records:
                break
            decoded = [] if header.is_control else _decode_batch(header, batch)
            records.extend(decoded)
            end = header.next_offset
            tail = (header.base_offset, header.next_offset, decoded)
        if end <= offset:
            return None
        if tail is not None and tail[1] > last + 1:
            self._batches[partition.index] = tail
        return first, end, records

    def _message(self, record: Record | Message, partition: int, delivery_count: int) -> Message:
        """The AMQP message a record is delivered as (see the module docstring)."""
        if type(record) is Message:  # decoded by the AMQP layout already
            message = record
        else:
            assert isinstance(record, Record)
            for name, _value in record.headers:
                if name == PROPERTIES_HEADER:
                    break
            else:  # no AMQP properties: a record a Kafka client produced
                return _kafka_message(record, partition, delivery_count)
            message = Message.from_record(record)
        if delivery_count > 1:
            headers = message.typed_headers()
            headers[DELIVERY_COUNT_HEADER] = Field("l", delivery_count - 1)
            message = message.replace_properties(headers=headers)._replace(offset=record.offset)
        return message

    def _watch(self) -> None:
        """Look again once records may be available (an append of either protocol, a release
        by a Kafka consumer, an expired lock)."""
        if self._watcher is not None or self.deleted:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (unit tests): publishes dispatch by themselves
            return
        self._watcher = loop.create_task(self._wait_for_records())

    async def _wait_for_records(self) -> None:
        try:
            while self._consumers and not self.deleted:
                await self.topic.wait_for_records(_WAIT_SECONDS)
                takers = self._takers()
                if not takers:
                    return  # every consumer's window is full: its acks dispatch it
                self.dispatch()
        finally:
            self._watcher = None

    # ---- basic.get, acks ----------------------------------------------------------------------

    def get(self, no_ack: bool = False) -> Delivery | None:
        """basic.get: one acquired record, or None when nothing is available."""
        self.touch()
        if self.deleted:
            return None
        acquired = self._acquire(1)
        if not acquired:
            return None
        message, partition, offset, redelivered = acquired[0]
        position = self._next_position
        self._next_position = position + 1
        delivery = Delivery(message, self, position, redelivered, None, 0, None)
        if no_ack:
            partition.accept([offset])
        else:
            self._held[position] = _Held(partition, offset, delivery)
        return delivery

    def ack(self, delivery: Delivery) -> bool:
        """basic.ack: ACCEPT; False if the delivery was not outstanding."""
        held = self._held.pop(delivery.position, None)
        if held is None:
            return False
        held.partition.accept([held.offset])
        return True

    def ack_many(self, deliveries: Iterable[Delivery]) -> int:
        """basic.ack multiple=true: one ACCEPT per partition; returns how many were
        outstanding."""
        taken = self._take(deliveries)
        for partition, offsets, _held in taken.values():
            partition.accept(offsets)
        return sum(len(offsets) for _p, offsets, _h in taken.values())

    def reject(self, delivery: Delivery, requeue: bool) -> bool:
        """basic.reject / basic.nack of one delivery: RELEASE, or REJECT (archived) and
        dead-lettered with reason "rejected"."""
        if requeue:
            return self.requeue_all((delivery,)) == 1
        held = self._held.pop(delivery.position, None)
        if held is None:
            return False
        held.partition.reject([held.offset])
        self._dead_letter(held.delivery.message, REJECTED)
        return True

    nack = reject

    def requeue_all(self, deliveries: Iterable[Delivery]) -> int:
        """RELEASE outstanding deliveries (nack with requeue, basic.recover, a closed channel);
        records past the delivery limit are archived and dead-lettered. Then dispatch."""
        taken = self._take(deliveries)
        count = 0
        for partition, offsets, held in taken.values():
            count += len(offsets)
            archived = partition.release(offsets)
            if archived:
                by_offset = {h.offset: h for h in held}
                for offset in archived:
                    found = by_offset.get(offset)
                    if found is not None:
                        self._dead_letter(found.delivery.message, DELIVERY_LIMIT)
        if count:
            self.dispatch()
        return count

    def _take(
        self, deliveries: Iterable[Delivery]
    ) -> dict[int, tuple[SharedPartition, list[int], list[_Held]]]:
        """Remove outstanding deliveries, grouped by partition index, offsets in order."""
        pop = self._held.pop
        out: dict[int, tuple[SharedPartition, list[int], list[_Held]]] = {}
        for delivery in deliveries:
            held = pop(delivery.position, None)
            if held is None:
                continue
            entry = out.get(held.partition.index)
            if entry is None:
                entry = out[held.partition.index] = (held.partition, [], [])
            entry[1].append(held.offset)
            entry[2].append(held)
        for _partition, offsets, _held in out.values():
            offsets.sort()
        return out

    def _dead_letter(self, message: Message, reason: str) -> None:
        if self.dead_letter is not None and self.args.dead_letter_exchange is not None:
            self.dead_letter(self, message, reason)  # type: ignore[arg-type]

    # ---- purge, delete, close -----------------------------------------------------------------

    def purge(self) -> int:
        """queue.purge: archive every record not acquired (acquired ones stay outstanding)."""
        return sum(p.purge() for p in self.topic.partitions)

    def delete(self) -> int:
        """queue.delete: consumers are cancelled and the share group's state is deleted; the
        topic and its records stay."""
        if self.deleted:
            return 0
        count = self.message_count
        self.deleted = True
        consumers, self._consumers = self._consumers, []
        self._exclusive_consumer = None
        self._held.clear()
        if self._watcher is not None:
            self._watcher.cancel()
        self.topic.delete()
        for consumer in consumers:
            consumer.cancelled()
        return count

    def close(self) -> None:
        """Broker shutdown: the share state is kept for the next start."""
        if self._watcher is not None:
            self._watcher.cancel()
        if not self.deleted:
            self.topic.close()

    def __repr__(self) -> str:
        return (
            f"TopicQueue({self.name!r}, unacked={len(self._held)}, "
            f"consumers={len(self._consumers)})"
        )


def _decode_batch(header: BatchHeader, batch: memoryview) -> list[Record | Message]:
    """One batch's records: AMQP messages straight from the layout every AMQP publish writes
    (no generic ``Record`` built, as the durable queues read their logs), else ``Record``s."""
    try:
        rows = decode_records(records_section(batch, header), header, layout=_AMQP_LAYOUT)
    except LayoutMismatchError:
        return list(iter_records(batch))
    out: list[Record | Message] = []
    for offset, _timestamp, _key, body, (exchange, routing_key, properties) in rows:
        delivery_mode, priority, expiration = parse_properties(properties)
        out.append(Message(
            exchange.decode("utf-8", "surrogateescape"),
            routing_key.decode("utf-8", "surrogateescape"),
            b"" if body is None else body,
            properties, delivery_mode, priority, expiration, offset,
        ))
    return out


def _room(taker: tuple[Consumer, int]) -> int:
    return taker[1]


def _kafka_message(record: Record, partition: int, delivery_count: int) -> Message:
    """A record a Kafka client produced, as AMQP consumers get it: its headers as the headers
    table (long strings, as ``Message.from_record`` has them), the key, partition and offset
    headers (and ``x-delivery-count`` on a redelivery), its timestamp (seconds) as the
    timestamp property; the routing key is the key, as stream queues have it."""
    headers = record_headers_table(record)
    exchange = routing_key = b""
    for name, value in record.headers:
        if name == EXCHANGE_HEADER:
            exchange = value or b""
        elif name == ROUTING_KEY_HEADER:
            routing_key = value or b""
    if not routing_key and record.key is not None:
        routing_key = record.key
    headers[PARTITION_HEADER] = Field("l", partition)
    headers[OFFSET_HEADER] = Field("l", record.offset)
    if delivery_count > 1:
        headers[DELIVERY_COUNT_HEADER] = Field("l", delivery_count - 1)
    timestamp = record.timestamp // 1000 if record.timestamp >= 0 else None
    value = record.value
    return Message(
        _text(exchange), _text(routing_key), b"" if value is None else bytes(value),
        encode_properties(headers=headers, timestamp=timestamp), 0, None, None, record.offset,
    )


def _text(data: bytes | memoryview) -> str:
    return bytes(data).decode("utf-8", "surrogateescape") if data else ""
