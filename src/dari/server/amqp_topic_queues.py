"""The topics AMQP queues over topics work off: ``queues.topic_queue.TopicShares`` over the
Kafka side's ``TopicManager`` and share-group coordinator (``streams.share``).

A queue's share group is a Kafka share group: its ``SharePartition``s are the coordinator's
(one per partition of the topic, journaled under the group's name), so acknowledgements
survive restarts and Kafka ``ShareConsumer``s of that group id work on the very same records.
The queue's ``x-topic-offset`` and ``x-delivery-limit`` become the group's configs
``share.auto.offset.reset`` and ``share.delivery.count.limit`` (checked against the broker's
bounds as Kafka checks them). The AMQP side is one member of the group (``AMQP_MEMBER``): which
AMQP consumer holds which record is the queue's own business. Its records are acquired with a
lock that never lapses — an AMQP delivery is outstanding until its channel settles it or
closes — while Kafka members' locks do.

Publishes pick a partition with Kafka's default keyed partitioner (murmur2 of the key,
``toPositive(hash) % partitions``), the routing key being the key.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from dari.queues.errors import NotFound, PreconditionFailed
from dari.storage import LogClosedError, PartitionLog
from dari.streams.errors import InvalidConfigError, OffsetOutOfRangeError, StreamsError
from dari.streams.partition import AppendResult, Partition
from dari.streams.share.coordinator import ShareCoordinator
from dari.streams.share.partition import (
    AcknowledgeType,
    AcquiredRange,
    RecordState,
    SharePartition,
)
from dari.streams.topics import Topic, TopicManager

AMQP_MEMBER = "amqp"  # the member the AMQP side acquires as (Kafka member ids are UUIDs)
_PURGE_MEMBER = "amqp-purge"
_RESET = "share.auto.offset.reset"
_LIMIT = "share.delivery.count.limit"
# AMQP acquisitions are made "a century from now": their locks never run out, and the share
# service's lock timer stays a plain (if distant) deadline.
_CENTURY_MS = 100 * 365 * 86_400_000
_KEY_CACHE = 4096  # routing keys whose partition is remembered


def murmur2(data: bytes) -> int:
    """Kafka's ``Utils.murmur2`` (a signed 32-bit result), which its default partitioner
    applies to record keys."""
    m = 0x5BD1E995
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    end = length & ~3
    for i in range(0, end, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    extra = length & 3
    if extra == 3:
        h ^= data[end + 2] << 16
    if extra >= 2:
        h ^= data[end + 1] << 8
    if extra >= 1:
        h ^= data[end]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for_key(key: bytes, partitions: int) -> int:
    """Kafka's keyed partition choice: ``toPositive(murmur2(key)) % partitions``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class SharedTopicPartition:
    """One topic partition and the group's ``SharePartition`` of it, as a topic queue uses
    them (``queues.topic_queue.SharedPartition``); owned by its ``SharedTopicGroup``.

    The ``SharePartition`` is looked up in the coordinator on each use: Kafka's admin APIs
    (DeleteShareGroupOffsets, a deleted topic) may replace it."""

    __slots__ = ("_group", "_key", "index", "log", "partition", "topic")

    def __init__(self, group: SharedTopicGroup, topic: Topic, partition: Partition) -> None:
        self._group = group
        self.topic = topic
        self.partition = partition
        self.index = partition.index
        self.log: PartitionLog = partition.log
        self._key = (topic.topic_id, partition.index)

    @property
    def share(self) -> SharePartition:
        group = self._group
        coordinator = group.owner.coordinator
        known = coordinator.group(group.group_id)
        share = known.partitions.get(self._key) if known is not None else None
        if share is None:
            now = int(group.owner.clock() * 1000)
            share = coordinator.share_partition(group.group_id, self.topic, self.index, now)
        return share

    def append(self, records: bytes) -> AppendResult:
        return self.partition.append(records)

    def read(self, offset: int, max_bytes: int) -> bytes | memoryview:
        """Batches from ``offset``; b"" when it left the log (retention) or the topic went."""
        try:
            return self.partition.read(offset, max_bytes)
        except (OffsetOutOfRangeError, StreamsError, LogClosedError):
            return b""

    def acquire(self, max_records: int) -> list[AcquiredRange]:
        plog = self.log
        if plog.closed:
            return []
        share = self.share
        share.advance_log_start(plog.log_start_offset)
        now = int(self._group.owner.clock() * 1000) + _CENTURY_MS
        return share.acquire(AMQP_MEMBER, max_records, now, plog.log_end_offset)

    def accept(self, offsets: Sequence[int]) -> None:
        self._acknowledge(offsets, AcknowledgeType.ACCEPT)

    def reject(self, offsets: Sequence[int]) -> None:
        self._acknowledge(offsets, AcknowledgeType.REJECT)

    def release(self, offsets: Sequence[int]) -> list[int]:
        """RELEASE ``offsets``; those that reached the delivery limit are archived instead
        (below the share start offset afterwards, or in state ARCHIVED) and returned."""
        share = self.share
        self._acknowledge(offsets, AcknowledgeType.RELEASE, share)
        archived = []
        for offset in offsets:
            state = share.state_of(offset)
            if state is None or state[0] == RecordState.ARCHIVED:
                archived.append(offset)
        return archived

    def _acknowledge(
        self, offsets: Sequence[int], kind: AcknowledgeType, share: SharePartition | None = None
    ) -> None:
        """One acknowledgement per run of consecutive offsets (``offsets`` ascending). An
        offset no longer held (its state was reset, or deleted with the topic) is skipped."""
        if not offsets:
            return
        acknowledge = (share or self.share).acknowledge
        first = last = offsets[0]
        for offset in offsets[1:]:
            if offset == last + 1:
                last = offset
                continue
            acknowledge(AMQP_MEMBER, first, last, kind)
            first = last = offset
        acknowledge(AMQP_MEMBER, first, last, kind)

    @property
    def available(self) -> int:
        """Records not acquired, acknowledged or archived."""
        if self.log.closed:
            return 0
        share = self.share
        share.advance_log_start(self.log.log_start_offset)
        return max(0, share.lag(self.log.log_end_offset) - share.acquired)

    def purge(self) -> int:
        """Archive every available record; acquired ones stay outstanding."""
        if self.log.closed:
            return 0
        share = self.share
        end = self.log.log_end_offset
        share.advance_log_start(self.log.log_start_offset)
        if not share.acquired:
            count = share.lag(end)
            share.reset(end)
            return count
        count = 0
        while True:
            now = int(self._group.owner.clock() * 1000) + _CENTURY_MS
            ranges = share.acquire(_PURGE_MEMBER, 1 << 30, now, end)
            if not ranges:
                return count
            for run in ranges:
                share.acknowledge(_PURGE_MEMBER, run.first_offset, run.last_offset,
                                  AcknowledgeType.GAP)
                count += run.last_offset - run.first_offset + 1


class SharedTopicGroup:
    """A topic worked off by one share group (``queues.topic_queue.SharedTopic``); made by
    ``TopicShareGroups.open``, owned by the queue over it (event loop thread).

    The topic is looked up by name on use: while it does not exist (deleted by a Kafka
    client, or missing when the broker recovered the queue) the queue has no partitions;
    a topic made again under the name is worked off from its start (``x-topic-offset``)."""

    def __init__(self, owner: TopicShareGroups, topic: str, group_id: str) -> None:
        self.owner = owner
        self.name = topic
        self.group_id = group_id
        self._topic: Topic | None = None
        self._partitions: list[SharedTopicPartition] = []
        self._key_partitions: dict[str, SharedTopicPartition] = {}
        self.deleted = False

    @property
    def partitions(self) -> Sequence[SharedTopicPartition]:
        """The partitions of the topic now (partitions added by Kafka clients included)."""
        current = self.owner.topics.get(self.name)
        if current is not self._topic:
            self._topic = current
            self._partitions = []
            self._key_partitions.clear()
        if current is not None and len(self._partitions) != len(current.partitions):
            self._grow(current)
        return self._partitions

    def _grow(self, topic: Topic) -> None:
        if self.deleted:
            return
        for index in range(len(self._partitions), len(topic.partitions)):
            partition = topic.partition(index)
            assert partition is not None
            shared = SharedTopicPartition(self, topic, partition)
            shared.share  # noqa: B018  (the group's state of it starts now, where it should)
            self._partitions.append(shared)
        self._key_partitions.clear()

    def partition_for(self, routing_key: str) -> SharedTopicPartition:
        found = self._key_partitions.get(routing_key)
        if found is not None:
            return found
        partitions = self.partitions
        if not partitions:
            raise NotFound(f"no topic '{self.name}'")
        key = routing_key.encode("utf-8", "surrogateescape")
        found = partitions[partition_for_key(key, len(partitions))]
        if len(self._key_partitions) >= _KEY_CACHE:
            self._key_partitions.clear()
        self._key_partitions[routing_key] = found
        return found

    async def wait_for_records(self, timeout: float) -> None:
        """Until an append to the topic or a release in the group (Kafka's or ours)."""
        partitions = self.partitions
        if not partitions:  # no topic (now): nothing can wake us but time
            await asyncio.sleep(timeout)
            return
        keys: list[object] = [p.log for p in partitions]
        keys += [p.share for p in partitions]  # the share service wakes fetches by these
        await self.owner.topics.waiters.wait_any(keys, timeout)

    def delete(self) -> None:
        """Delete the group and its state (unless Kafka members still use it); the topic
        stays."""
        self.deleted = True
        self._partitions = []
        self._key_partitions.clear()
        self.owner.coordinator.delete_group(self.group_id)

    def close(self) -> None:
        """The coordinator's store journals the state; it is closed with the broker."""


class TopicShareGroups:
    """Opens the share groups of AMQP queues over topics (``queues.topic_queue.TopicShares``);
    owned by the broker process (event loop thread), like the ``TopicManager`` and
    ``ShareCoordinator`` it wraps. A missing topic is created with the broker's default
    partition count when ``auto_create`` (``auto.create.topics.enable``), else refused."""

    def __init__(
        self,
        topics: TopicManager,
        coordinator: ShareCoordinator,
        *,
        auto_create: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.topics = topics
        self.coordinator = coordinator
        self.auto_create = auto_create
        self.clock = clock

    def open(
        self, topic: str, group: str, *, start: str, delivery_limit: int | None,
        create: bool = True,
    ) -> SharedTopicGroup:
        """The group over ``topic``; a missing topic is made (``auto_create`` and ``create``),
        refused with 404, or (``create`` false: a queue recovered at start) waited for."""
        if self.coordinator.is_classic_group(group):
            raise PreconditionFailed(
                f"cannot work topic '{topic}' off as share group '{group}': a consumer group "
                "has that name"
            )
        self._configure(group, start, delivery_limit)
        if create and self.topics.get(topic) is None:
            if not self.auto_create:
                raise NotFound(f"no topic '{topic}'")
            try:
                self.topics.create(topic)
            except StreamsError as exc:
                raise PreconditionFailed(f"cannot create topic '{topic}': {exc}") from None
        return SharedTopicGroup(self, topic, group)

    def _configure(self, group: str, start: str, delivery_limit: int | None) -> None:
        """The queue's arguments as the group's configs (written only when they change)."""
        configs = self.coordinator.configs
        current = configs.overrides(group)
        wanted = dict(current)
        wanted[_RESET] = "earliest" if start == "first" else "latest"
        if delivery_limit is not None:
            wanted[_LIMIT] = str(delivery_limit)
        if wanted == current:
            return
        try:
            configs.replace(group, wanted, validate_only=False)
        except InvalidConfigError as exc:
            raise PreconditionFailed(
                f"invalid arg 'x-delivery-limit' for share group '{group}': {exc}"
            ) from None
