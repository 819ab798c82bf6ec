"""Topics and their partitions: the Kafka-model catalogue on top of the log store.

A topic is a name, a stable id, a partition count and its config overrides; each partition is
one PartitionLog in ``<data-dir>/<topic>-<n>``, wrapped in the ``Partition`` that applies the
produce rules to it. The catalogue persists one small JSON file per
topic under ``<data-dir>/.meta/topics`` (written atomically) so topics, ids and configs survive
restarts. Owned by the event loop thread; not thread-safe.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dari.storage import LogConfig, LogStore, PartitionLog, atomic_write
from dari.streams.errors import (
    InvalidConfigError,
    InvalidPartitionsError,
    InvalidReplicationFactorError,
    InvalidTopicError,
    TopicExistsError,
    UnknownTopicError,
)
from dari.streams.partition import Partition
from dari.streams.producer_state import ProducerStates
from dari.streams.topic_configs import check_topic_configs
from dari.streams.waiters import AppendWaiters

log = logging.getLogger(__name__)

MAX_TOPIC_NAME = 249
_LEGAL_NAME = re.compile(r"^[a-zA-Z0-9._-]+$")


def check_topic_name(name: str) -> None:
    """Kafka's rules: 1..249 of ``[a-zA-Z0-9._-]``, not ``.`` or ``..``."""
    if not name or name in {".", ".."}:
        raise InvalidTopicError(f"topic name {name!r} is illegal")
    if len(name) > MAX_TOPIC_NAME:
        raise InvalidTopicError(f"topic name is longer than {MAX_TOPIC_NAME} characters")
    if not _LEGAL_NAME.match(name):
        raise InvalidTopicError(
            f"topic name {name!r} is illegal, it contains a character other than "
            "ASCII alphanumerics, '.', '_' and '-'"
        )


@dataclass
class Topic:
    """One topic; owned by its ``TopicManager`` on the event loop thread.

    ``partitions`` are the logs, in index order (the offsets log appends to them directly);
    ``partition(index)`` is the ``Partition`` through which clients produce and read.
    """

    name: str
    topic_id: uuid.UUID
    configs: dict[str, str]
    log_config: LogConfig
    partitions: list[PartitionLog] = field(default_factory=list)
    _rules: list[Partition] = field(default_factory=list, repr=False)  # kept by TopicManager

    @property
    def is_internal(self) -> bool:
        return self.name.startswith("__")

    def partition(self, index: int) -> Partition | None:
        """The partition at ``index``, or None outside the topic."""
        rules = self._rules
        return rules[index] if 0 <= index < len(rules) else None


class TopicManager:
    """Creates, opens, alters and deletes topics; maps names and ids to their partitions.

    Each ``Partition`` it hands out shares the manager's ``producer_states`` (snapshotted by
    the broker) and ``waiters`` (woken by every append, the offsets log's included).
    """

    def __init__(
        self,
        store: LogStore,
        defaults: LogConfig,
        default_partitions: int = 1,
        *,
        producer_states: ProducerStates | None = None,
        waiters: AppendWaiters | None = None,
    ) -> None:
        self.store = store
        self.defaults = defaults
        self.default_partitions = default_partitions
        self.producer_states = producer_states if producer_states is not None else ProducerStates()
        self.waiters = waiters if waiters is not None else AppendWaiters()
        self.topics: dict[str, Topic] = {}
        self.by_id: dict[uuid.UUID, Topic] = {}
        self._meta_dir = store.data_dir / ".meta" / "topics"
        # called with a topic's name once it is deleted, by whichever protocol: what is built
        # on a topic (an AMQP stream queue) goes with it
        self.deletion_listeners: list[Callable[[str], None]] = []

    # -- lifecycle -----------------------------------------------------------------------
    def load(self) -> None:
        """Open every topic recorded in the catalogue (recovering its logs)."""
        self._meta_dir.mkdir(parents=True, exist_ok=True)
        for meta_file in sorted(self._meta_dir.glob("*.json")):
            meta = json.loads(meta_file.read_text())
            configs = {str(k): str(v) for k, v in meta.get("configs", {}).items()}
            topic = Topic(
                name=meta["name"],
                topic_id=uuid.UUID(meta["topic_id"]),
                configs=configs,
                log_config=LogConfig.from_topic_configs(configs, self.defaults),
            )
            for index in range(int(meta["partitions"])):
                self._open_partition(topic, index)
            self._register(topic)
        if self.topics:
            log.info("opened %d topics", len(self.topics))

    def close(self) -> None:
        for topic in self.topics.values():
            for partition in topic._rules:
                partition.close()

    # -- queries ---------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Topic]:
        return iter(self.topics.values())

    def get(self, name: str) -> Topic | None:
        return self.topics.get(name)

    def partition(self, name: str, index: int) -> Partition:
        topic = self.topics.get(name)
        found = topic.partition(index) if topic is not None else None
        if found is None:
            raise UnknownTopicError(f"unknown topic or partition {name}-{index}")
        return found

    def all_logs(self) -> list[PartitionLog]:
        return [p for topic in self.topics.values() for p in topic.partitions]

    # -- changes ---------------------------------------------------------------------------
    def validate_configs(
        self, configs: Mapping[str, str | None], current: Mapping[str, str] | None = None
    ) -> tuple[dict[str, str], LogConfig]:
        """(overrides as applied, their log config) if Kafka's catalogue accepts ``configs``,
        else raise InvalidConfigError with Kafka's message. ``current`` are the topic's stored
        overrides, which are not checked again."""
        checked = check_topic_configs(configs, current)
        try:
            return checked, LogConfig.from_topic_configs(checked, self.defaults)
        except ValueError as exc:
            raise InvalidConfigError(str(exc)) from None

    def create(
        self,
        name: str,
        partitions: int = -1,
        configs: Mapping[str, str | None] | None = None,
        validate_only: bool = False,
        replication_factor: int = -1,
    ) -> Topic:
        """Checks come in Kafka's order: name, existence, configs, then partitions and
        replication factor (1, or -1 for the default, on a single broker)."""
        check_topic_name(name)
        if name in self.topics:
            raise TopicExistsError(f"topic '{name}' already exists")
        checked, log_config = self.validate_configs(configs or {})
        count = self.default_partitions if partitions == -1 else partitions
        if count < 1:
            raise InvalidPartitionsError("number of partitions must be larger than 0")
        if replication_factor not in (-1, 1):
            raise InvalidReplicationFactorError(
                "replication factor must be 1 (or -1 for the default) on a single broker"
            )
        topic = Topic(name, uuid.uuid4(), checked, log_config)
        if validate_only:
            return topic
        self._save(topic, count)
        for index in range(count):
            self._open_partition(topic, index)
        self._register(topic)
        log.info("created topic %s with %d partitions", name, count)
        return topic

    def add_partitions(self, name: str, count: int, validate_only: bool = False) -> None:
        topic = self.topics.get(name)
        if topic is None:
            raise UnknownTopicError(f"topic '{name}' does not exist")
        current = len(topic.partitions)
        if count <= current:
            raise InvalidPartitionsError(
                f"topic currently has {current} partitions, {count} would not be an increase"
            )
        if validate_only:
            return
        self._save(topic, count)
        for index in range(current, count):
            self._open_partition(topic, index)

    def alter_configs(self, name: str, configs: Mapping[str, str]) -> None:
        """Replace the topic's overrides; running logs pick the change up at once."""
        topic = self.topics.get(name)
        if topic is None:
            raise UnknownTopicError(f"topic '{name}' does not exist")
        new_configs, log_config = self.validate_configs(configs, topic.configs)
        topic.configs = new_configs
        topic.log_config = log_config
        for partition in topic.partitions:
            partition.config = log_config
        self._save(topic, len(topic.partitions))

    def delete(self, name: str) -> Topic:
        topic = self.topics.pop(name, None)
        if topic is None:
            raise UnknownTopicError(f"topic '{name}' does not exist")
        self.by_id.pop(topic.topic_id, None)
        (self._meta_dir / f"{name}.json").unlink(missing_ok=True)
        for partition in topic._rules:
            partition.delete(self.store)
        log.info("deleted topic %s", name)
        for listener in self.deletion_listeners:
            listener(name)
        return topic

    # -- internals -------------------------------------------------------------------------
    def _register(self, topic: Topic) -> None:
        self.topics[topic.name] = topic
        self.by_id[topic.topic_id] = topic

    def _open_partition(self, topic: Topic, index: int) -> None:
        plog = self.store.open_log(f"{topic.name}-{index}", topic.log_config)
        topic.partitions.append(plog)
        topic._rules.append(Partition(topic.name, index, plog, self.producer_states, self.waiters))

    def _save(self, topic: Topic, partitions: int) -> None:
        self._meta_dir.mkdir(parents=True, exist_ok=True)
        meta = {
            "name": topic.name,
            "topic_id": str(topic.topic_id),
            "partitions": partitions,
            "configs": topic.configs,
        }
        atomic_write(self._meta_dir / f"{topic.name}.json", json.dumps(meta).encode())


def remove_orphan_dirs(data_dir: Path, known: set[str]) -> None:
    """Delete partition directories left behind by a delete interrupted by a crash."""
    for path in data_dir.iterdir():
        name, sep, index = path.name.rpartition("-")
        if path.is_dir() and sep and index.isdigit() and f"{name}-{index}" not in known:
            log.warning("removing orphaned partition directory %s", path)
            shutil.rmtree(path, ignore_errors=True)
