"""``__consumer_offsets`` on the log engine: create it, append coordinator records, replay it.

The topic is an ordinary compacted topic (readable with any consumer); only the coordinator
writes to it. Appends build one RecordBatch v2 per partition per call and go through the same
``PartitionLog.append`` as produced data. Owned by the event loop thread, except ``load``,
which runs in a worker thread at start before anything else touches the topic.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator

from dari.records import build_batch, iter_key_values, validate
from dari.storage import PartitionLog
from dari.streams.groups.messages import OffsetsRecord
from dari.streams.groups.offsets import OFFSETS_TOPIC, LoadedState
from dari.streams.topics import Topic, TopicManager

log = logging.getLogger(__name__)

READ_CHUNK = 4 << 20


class OffsetsLog:
    """The coordinator's persistence: one partition log per offsets partition."""

    def __init__(self, topics: TopicManager, partitions: int, segment_bytes: int) -> None:
        self.topics = topics
        self.wanted_partitions = partitions
        self.segment_bytes = segment_bytes
        self.topic: Topic | None = None

    def ensure(self) -> Topic:
        """Open the topic, creating it (compacted) if this data directory has none yet."""
        topic = self.topics.get(OFFSETS_TOPIC)
        if topic is None:
            configs = {"cleanup.policy": "compact", "segment.bytes": str(self.segment_bytes)}
            topic = self.topics.create(OFFSETS_TOPIC, self.wanted_partitions, configs)
        elif len(topic.partitions) != self.wanted_partitions:
            # Group -> partition mapping must not change under existing data: keep what is there.
            log.warning(
                "%s has %d partitions, not the configured %d; keeping %d",
                OFFSETS_TOPIC,
                len(topic.partitions),
                self.wanted_partitions,
                len(topic.partitions),
            )
        self.topic = topic
        return topic

    @property
    def partitions(self) -> int:
        assert self.topic is not None
        return len(self.topic.partitions)

    def append(self, records: Iterable[OffsetsRecord]) -> list[tuple[PartitionLog, int]]:
        """Append records (one batch per partition); returns (log, end offset) per log written."""
        assert self.topic is not None
        by_partition: dict[int, list[tuple[bytes, bytes | None]]] = {}
        for partition, key, value in records:
            by_partition.setdefault(partition, []).append((key, value))
        written = []
        now_ms = time.time_ns() // 1_000_000
        for partition, items in by_partition.items():
            plog = self.topic.partitions[partition]
            buf = bytearray(build_batch(items, now_ms=now_ms))
            plog.append(buf, validate(buf))
            written.append((plog, plog.log_end_offset))
        return written

    def load(self) -> LoadedState:
        """Replay every partition: the last record of each key wins, tombstones delete."""
        assert self.topic is not None
        state = LoadedState()
        for plog in self.topic.partitions:
            state.add_all(read_records(plog))
        return state.build()


def read_records(plog: PartitionLog) -> Iterator[tuple[bytes | None, bytes | None]]:
    """(key, value) of every record in the log, in offset order."""
    start = plog.log_start_offset
    return iter_key_values(plog.iter_batches(start, READ_CHUNK), start)
