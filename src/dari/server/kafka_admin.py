"""Kafka admin APIs of a single broker: configs, cluster, DeleteRecords, epochs, log dirs.

DescribeConfigs / AlterConfigs / IncrementalAlterConfigs work on topic resources (the topic's
override set, validated against Kafka's catalogue of topic configs and ``LogConfig``) and
describe broker resources (the broker settings that carry Kafka names). Broker settings come
from ``dari.toml``, ``DARI_*`` variables and flags at start, so changing them dynamically is
refused with INVALID_REQUEST. DescribeCluster, DeleteRecords, OffsetForLeaderEpoch (one leader
epoch, 0, since a single broker never changes leader) and DescribeLogDirs (one log dir, the
data directory) complete what admin tools and librdkafka ask a broker.
"""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from dari.config import DEFAULTS, Settings
from dari.protocol.kafka.apis import ApiKey
from dari.protocol.kafka.codec import RequestHeader
from dari.protocol.kafka.errors import ErrorCode
from dari.server.kafka_handlers import (
    CLUSTER_OPERATIONS,
    NO_AUTHORIZED_OPERATIONS,
    ZERO,
    Handled,
    Response,
    ResponseBuilder,
)
from dari.streams.errors import (
    InvalidConfigError,
    InvalidTopicError,
    OffsetOutOfRangeError,
    PolicyViolationError,
    UnknownTopicError,
)
from dari.streams.share.group_configs import GROUP_CONFIGS, GroupConfigs
from dari.streams.topic_configs import (
    TOPIC_CONFIGS,
    ConfigType,
    TopicConfigKey,
    config_key,
    split_list,
)
from dari.streams.topics import Topic, TopicManager, check_topic_name

log = logging.getLogger(__name__)

NO_ERROR = ErrorCode.none
LEADER_EPOCH = 0  # a single broker leads every partition from its creation, in epoch 0


class ResourceType(IntEnum):
    TOPIC = 2
    BROKER = 4
    BROKER_LOGGER = 8
    CLIENT_METRICS = 16
    GROUP = 32


class ConfigSource(IntEnum):
    DYNAMIC_TOPIC_CONFIG = 1
    DYNAMIC_BROKER_CONFIG = 2
    DYNAMIC_DEFAULT_BROKER_CONFIG = 3
    STATIC_BROKER_CONFIG = 4
    DEFAULT_CONFIG = 5
    GROUP_CONFIG = 8


class AlterOp(IntEnum):
    SET = 0
    DELETE = 1
    APPEND = 2
    SUBTRACT = 3


class Refused(Exception):
    """A resource or partition the request cannot be applied to; carries the Kafka code."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


_L, _I, _S, _B = ConfigType.LONG, ConfigType.INT, ConfigType.STRING, ConfigType.BOOLEAN


@dataclass(frozen=True, slots=True)
class ConfigEntry:
    """One described config before it becomes the version's response entity."""

    name: str
    value: str | None
    source: ConfigSource
    read_only: bool
    type: ConfigType
    doc: str
    synonyms: tuple[tuple[str, str | None, ConfigSource], ...]


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# Broker configs (Kafka names) taken from dari settings of the same name, with their types.
_BROKER_SETTINGS: dict[str, tuple[ConfigType, str]] = {
    "num.partitions": (_I, "Partitions of topics created without a count."),
    "default.replication.factor": (_I, "Replication factor of auto-created topics."),
    "auto.create.topics.enable": (_B, "Whether producing to a missing topic creates it."),
    "message.max.bytes": (_I, "Largest record batch a topic accepts by default."),
    "socket.request.max.bytes": (_I, "Largest request the broker reads."),
    "log.segment.bytes": (_I, "Default segment.bytes of topics."),
    "log.roll.ms": (_L, "Default segment.ms of topics."),
    "log.retention.ms": (_L, "Default retention.ms of topics."),
    "log.retention.bytes": (_L, "Default retention.bytes of topics."),
    "log.retention.check.interval.ms": (_L, "How often retention and time-based rolls run."),
    "log.index.interval.bytes": (_I, "Default index.interval.bytes of topics."),
    "log.flush.policy": (_S, "Default flush.policy of topics (dari)."),
    "log.flush.interval.ms": (_L, "Default flush.ms of topics."),
    "log.message.timestamp.type": (_S, "Default message.timestamp.type of topics."),
}


class KafkaAdmin:
    """Admin API handlers of one broker; owned by the event loop thread (not thread-safe).

    ``table`` maps API keys to handlers with the signature of ``KafkaHandlers.table``.
    """

    API_KEYS = (
        ApiKey.DESCRIBE_CONFIGS,
        ApiKey.ALTER_CONFIGS,
        ApiKey.INCREMENTAL_ALTER_CONFIGS,
        ApiKey.DESCRIBE_CLUSTER,
        ApiKey.DELETE_RECORDS,
        ApiKey.OFFSET_FOR_LEADER_EPOCH,
        ApiKey.DESCRIBE_LOG_DIRS,
    )

    def __init__(
        self,
        topics: TopicManager,
        settings: Settings,
        *,
        node_id: int,
        cluster_id: str,
        advertised: Callable[[], tuple[str, int]],
    ) -> None:
        self.topics = topics
        self.settings = settings
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.advertised = advertised
        # Group configs (resource type GROUP, KIP-932's share.* keys); set by the broker.
        self.group_configs: GroupConfigs | None = None
        self.table: dict[int, Callable[[RequestHeader, Any], Handled]] = {
            ApiKey.DESCRIBE_CONFIGS: self.describe_configs,
            ApiKey.ALTER_CONFIGS: self.alter_configs,
            ApiKey.INCREMENTAL_ALTER_CONFIGS: self.incremental_alter_configs,
            ApiKey.DESCRIBE_CLUSTER: self.describe_cluster,
            ApiKey.DELETE_RECORDS: self.delete_records,
            ApiKey.OFFSET_FOR_LEADER_EPOCH: self.offset_for_leader_epoch,
            ApiKey.DESCRIBE_LOG_DIRS: self.describe_log_dirs,
        }
        assert set(self.table) == set(self.API_KEYS)

    # -- shared checks ---------------------------------------------------------------------
    def _topic(self, name: str) -> Topic:
        try:
            check_topic_name(name)
        except InvalidTopicError as exc:
            raise Refused(ErrorCode.invalid_topic_exception, str(exc)) from None
        topic = self.topics.get(name)
        if topic is None:
            raise Refused(
                ErrorCode.unknown_topic_or_partition, f"The topic '{name}' does not exist."
            )
        return topic

    def _check_broker(self, name: str) -> None:
        if name not in ("", str(self.node_id)):
            raise Refused(
                ErrorCode.invalid_request,
                f"Unexpected broker id, expected {self.node_id} or empty string, "
                f"but received {name}",
            )

    def _resource_type(self, value: int) -> ResourceType:
        try:
            kind = ResourceType(value)
        except ValueError:
            raise Refused(
                ErrorCode.invalid_request, f"Unsupported resource type: {value}"
            ) from None
        served = (ResourceType.TOPIC, ResourceType.BROKER)
        if self.group_configs is not None:
            served += (ResourceType.GROUP,)
        if kind not in served:
            raise Refused(ErrorCode.invalid_request, f"Unsupported resource type: {kind.name}")
        return kind

    # -- DescribeConfigs -------------------------------------------------------------------
    def describe_configs(self, header: RequestHeader, req: Any) -> Response:
        build = ResponseBuilder(header)
        docs = getattr(req, "include_documentation", False)  # v3+
        results = []
        for resource in req.resources:
            error, message, entries = NO_ERROR, None, []
            try:
                kind = self._resource_type(resource.resource_type)
                if kind is ResourceType.TOPIC:
                    entries = self.topic_config_entries(self._topic(resource.resource_name))
                elif kind is ResourceType.GROUP:
                    entries = self.group_config_entries(resource.resource_name)
                else:
                    self._check_broker(resource.resource_name)
                    # "" asks for the cluster-wide dynamic defaults, of which there are none.
                    entries = self.broker_config_entries() if resource.resource_name else []
            except Refused as exc:
                error, message = exc.code, str(exc)
            keys = resource.configuration_keys
            if keys:
                wanted = set(keys)
                entries = [e for e in entries if e.name in wanted]
            configs = tuple(
                self._describe_entry(build, entry, req.include_synonyms, docs)
                for entry in entries
            )
            results.append(
                build(
                    "DescribeConfigsResult",
                    error_code=error,
                    error_message=message,
                    resource_type=resource.resource_type,
                    resource_name=resource.resource_name,
                    configs=configs,
                )
            )
        return build(throttle_time=ZERO, results=tuple(results))

    @staticmethod
    def _describe_entry(
        build: ResponseBuilder, entry: ConfigEntry, synonyms: bool, docs: bool
    ) -> Any:
        return build(
            "DescribeConfigsResourceResult",
            name=entry.name,
            value=entry.value,
            read_only=entry.read_only,
            config_source=int(entry.source),
            is_sensitive=False,
            synonyms=tuple(
                build("DescribeConfigsSynonym", name=name, value=value, source=int(source))
                for name, value, source in entry.synonyms
            )
            if synonyms
            else (),
            config_type=int(entry.type),
            documentation=entry.doc if docs else None,
        )

    def topic_config_entries(self, topic: Topic) -> list[ConfigEntry]:
        """Every known topic config with its effective value, plus unknown overrides."""
        applied = self.topics.defaults.to_topic_configs()
        entries = []
        for key in TOPIC_CONFIGS.values():
            default, default_source, synonyms = self._topic_default(key, applied)
            if key.name in topic.configs:
                value = topic.configs[key.name]
                source = ConfigSource.DYNAMIC_TOPIC_CONFIG
                synonyms = ((key.name, value, source), *synonyms)
            else:
                value, source = default, default_source
            entries.append(
                ConfigEntry(key.name, value, source, False, key.type, key.doc, synonyms)
            )
        for name, value in sorted(topic.configs.items()):
            if name not in TOPIC_CONFIGS:
                source = ConfigSource.DYNAMIC_TOPIC_CONFIG
                entries.append(
                    ConfigEntry(name, value, source, False, _S, "", ((name, value, source),))
                )
        return entries

    def _topic_default(
        self, key: TopicConfigKey, applied: dict[str, str]
    ) -> tuple[str, ConfigSource, tuple[tuple[str, str | None, ConfigSource], ...]]:
        """(default value, its source, synonyms) of a topic config on this broker."""
        default_source = ConfigSource.DEFAULT_CONFIG
        broker = key.broker
        if broker is None:
            return key.default, default_source, ((key.name, key.default, default_source),)
        if broker not in DEFAULTS:
            return key.default, default_source, ((broker, key.default, default_source),)
        value = applied.get(key.name, _text(self.settings[broker]))
        factory = _text(DEFAULTS[broker])
        if self.settings[broker] != DEFAULTS[broker]:
            static = ConfigSource.STATIC_BROKER_CONFIG
            return value, static, ((broker, value, static), (broker, factory, default_source))
        return value, default_source, ((broker, factory, default_source),)

    def broker_config_entries(self) -> list[ConfigEntry]:
        """The broker's settings under their Kafka names (all read-only: set at start)."""
        entries = []

        def add(
            name: str, value: str, default: str | None, kind: ConfigType, doc: str
        ) -> None:
            dflt = ConfigSource.DEFAULT_CONFIG
            if default is not None and value == default:
                source, synonyms = dflt, ((name, value, dflt),)
            else:
                static = ConfigSource.STATIC_BROKER_CONFIG
                source, synonyms = static, ((name, value, static),)
                if default is not None:
                    synonyms = (*synonyms, (name, default, dflt))
            entries.append(ConfigEntry(name, value, source, True, kind, doc, synonyms))

        node = _text(self.settings["node.id"])
        add("broker.id", node, _text(DEFAULTS["node.id"]), _I, "Id of this broker.")
        add("node.id", node, _text(DEFAULTS["node.id"]), _I, "Id of this broker.")
        add("log.dirs", str(self.settings.data_dir.resolve()), None, _S, "The data directory.")
        add("listeners", f"PLAINTEXT://{self.settings['kafka']}", None, _S, "Kafka listener.")
        host, port = self.advertised()
        host = f"[{host}]" if ":" in host else host
        add(
            "advertised.listeners", f"PLAINTEXT://{host}:{port}", None, _S,
            "Address clients are told to connect to.",
        )
        for name, (kind, doc) in _BROKER_SETTINGS.items():
            add(name, _text(self.settings[name]), _text(DEFAULTS[name]), kind, doc)
        for key in TOPIC_CONFIGS.values():
            broker = key.broker
            if broker is None or broker in _BROKER_SETTINGS:
                continue
            if broker in DEFAULTS:
                add(broker, _text(self.settings[broker]), _text(DEFAULTS[broker]), key.type,
                    key.doc)
            else:
                add(broker, key.default, key.default, key.type, key.doc)
        entries.sort(key=lambda e: e.name)
        return entries

    def group_config_entries(self, group_id: str) -> list[ConfigEntry]:
        """Every group config of ``group_id``: its overrides, else the broker defaults."""
        configs = self.group_configs
        assert configs is not None
        overrides = configs.overrides(group_id)
        entries = []
        for name, key in sorted(GROUP_CONFIGS.items()):
            source = ConfigSource.GROUP_CONFIG if name in overrides else (
                ConfigSource.DEFAULT_CONFIG
            )
            entries.append(
                ConfigEntry(
                    name=name,
                    value=configs.value(group_id, name),
                    source=source,
                    read_only=False,
                    type=ConfigType.INT if key.type == "int" else ConfigType.STRING,
                    doc=key.doc,
                    synonyms=((name, configs.value(group_id, name), source),),
                )
            )
        return entries

    def _alter_group(self, group_id: str, resource_configs: Any, incremental: bool,
                     validate_only: bool) -> None:
        configs = self.group_configs
        assert configs is not None
        out = configs.overrides(group_id) if incremental else {}
        for config in resource_configs:
            op = config.config_operation if incremental else AlterOp.SET
            if op == AlterOp.DELETE:
                out.pop(config.name, None)
                continue
            if op != AlterOp.SET:
                raise Refused(
                    ErrorCode.invalid_config,
                    f"Config value append/subtract is not allowed for config key: {config.name}",
                )
            if config.value is None:
                if incremental:
                    raise Refused(
                        ErrorCode.invalid_request, f"Null value not supported for: {config.name}"
                    )
                continue
            out[config.name] = config.value
        try:
            configs.replace(group_id, out, validate_only)
        except InvalidConfigError as exc:
            raise Refused(ErrorCode.invalid_config, str(exc)) from None

    # -- AlterConfigs / IncrementalAlterConfigs --------------------------------------------
    def alter_configs(self, header: RequestHeader, req: Any) -> Response:
        def new_overrides(topic: Topic, configs: Any) -> dict[str, str]:
            out: dict[str, str] = {}
            for config in configs:
                if config.value is None:  # Kafka drops null values from a full replacement
                    continue
                out[config.name] = self._checked(config.name, config.value)
            return out

        return self._alter(header, req, new_overrides)

    def incremental_alter_configs(self, header: RequestHeader, req: Any) -> Response:
        def new_overrides(topic: Topic, configs: Any) -> dict[str, str]:
            out = dict(topic.configs)
            for config in configs:
                name, op, value = config.name, config.config_operation, config.value
                if op == AlterOp.DELETE:
                    out.pop(name, None)
                    continue
                if op not in (AlterOp.SET, AlterOp.APPEND, AlterOp.SUBTRACT):
                    raise Refused(ErrorCode.invalid_request, f"Unknown config operation {op}")
                if value is None:
                    raise Refused(
                        ErrorCode.invalid_request, f"Null value not supported for: {name}"
                    )
                if op == AlterOp.SET:
                    out[name] = self._checked(name, value)
                    continue
                key = self._known(name)
                verb = "append" if op == AlterOp.APPEND else "subtract"
                if key.type is not ConfigType.LIST:
                    raise Refused(
                        ErrorCode.invalid_config,
                        f"Config value {verb} is not allowed for config key: {name}",
                    )
                current = split_list(out.get(name, key.default))
                change = split_list(value)
                if op == AlterOp.APPEND:
                    items = current + [item for item in change if item not in current]
                else:
                    items = [item for item in current if item not in change]
                out[name] = self._checked(name, ",".join(items))
            return out

        return self._alter(header, req, new_overrides)

    @staticmethod
    def _known(name: str) -> TopicConfigKey:
        try:
            return config_key(name)
        except InvalidConfigError as exc:
            raise Refused(ErrorCode.invalid_config, str(exc)) from None

    def _checked(self, name: str, value: str) -> str:
        key = self._known(name)
        try:
            return key.check(value)
        except InvalidConfigError as exc:
            raise Refused(ErrorCode.invalid_config, str(exc)) from None

    def _alter(
        self,
        header: RequestHeader,
        req: Any,
        new_overrides: Callable[[Topic, Any], dict[str, str]],
    ) -> Response:
        build = ResponseBuilder(header)
        seen = Counter((r.resource_type, r.resource_name) for r in req.resources)
        responses = []
        for resource in req.resources:
            error, message = NO_ERROR, None
            try:
                if seen[(resource.resource_type, resource.resource_name)] > 1:
                    raise Refused(
                        ErrorCode.invalid_request,
                        f"Duplicate resource {resource.resource_name!r} in the request",
                    )
                names = [c.name for c in resource.configs]
                duplicates = sorted({n for n in names if names.count(n) > 1})
                if duplicates:
                    raise Refused(
                        ErrorCode.invalid_request,
                        f"Error due to duplicate config keys: {', '.join(duplicates)}",
                    )
                kind = self._resource_type(resource.resource_type)
                if kind is ResourceType.BROKER:
                    self._check_broker(resource.resource_name)
                    if names:
                        raise Refused(
                            ErrorCode.invalid_request,
                            f"Cannot update these configs dynamically: {sorted(names)}; dari "
                            "takes broker settings from dari.toml, DARI_* variables or --set "
                            "at start",
                        )
                elif kind is ResourceType.GROUP:
                    self._alter_group(
                        resource.resource_name,
                        resource.configs,
                        header.api_key == ApiKey.INCREMENTAL_ALTER_CONFIGS,
                        req.validate_only,
                    )
                else:
                    topic = self._topic(resource.resource_name)
                    configs = new_overrides(topic, resource.configs)
                    self._apply(topic, configs, req.validate_only)
            except Refused as exc:
                error, message = exc.code, str(exc)
                log.info(
                    "alter configs of %s refused: %s", resource.resource_name or "<cluster>", exc
                )
            responses.append(
                build(
                    "AlterConfigsResourceResponse",
                    error_code=error,
                    error_message=message,
                    resource_type=resource.resource_type,
                    resource_name=resource.resource_name,
                )
            )
        return build(throttle_time=ZERO, responses=tuple(responses))

    def _apply(self, topic: Topic, configs: dict[str, str], validate_only: bool) -> None:
        try:
            if validate_only:
                self.topics.validate_configs(configs, topic.configs)
            else:
                self.topics.alter_configs(topic.name, configs)
                log.info("topic %s configs are now %s", topic.name, configs)
        except InvalidConfigError as exc:
            raise Refused(ErrorCode.invalid_config, str(exc)) from None
        except UnknownTopicError as exc:
            raise Refused(ErrorCode.unknown_topic_or_partition, str(exc)) from None

    # -- DescribeCluster -------------------------------------------------------------------
    def describe_cluster(self, header: RequestHeader, req: Any) -> Response:
        build = ResponseBuilder(header)
        if getattr(req, "endpoint_type", 1) != 1:
            return build(
                throttle_time=ZERO,
                error_code=ErrorCode.unsupported_endpoint_type,
                error_message="dari brokers describe brokers only (endpoint type 1)",
                endpoint_type=req.endpoint_type,
                cluster_id=self.cluster_id,
                controller_id=-1,
                brokers=(),
                cluster_authorized_operations=NO_AUTHORIZED_OPERATIONS,
            )
        host, port = self.advertised()
        operations = NO_AUTHORIZED_OPERATIONS
        if req.include_cluster_authorized_operations:
            operations = CLUSTER_OPERATIONS  # no ACLs: all the cluster supports
        broker = build(
            "DescribeClusterBroker", broker_id=self.node_id, host=host, port=port, rack=None
        )
        return build(
            throttle_time=ZERO,
            error_code=NO_ERROR,
            error_message=None,
            endpoint_type=1,
            cluster_id=self.cluster_id,
            controller_id=self.node_id,
            brokers=(broker,),
            cluster_authorized_operations=operations,
        )

    # -- DeleteRecords ---------------------------------------------------------------------
    def delete_records(self, header: RequestHeader, req: Any) -> Response:
        build = ResponseBuilder(header)
        topics = []
        for req_topic in req.topics:
            partitions = []
            for part in req_topic.partitions:
                error, low = NO_ERROR, -1
                try:
                    low = self._delete_before(req_topic.name, part.partition_index, part.offset)
                except Refused as exc:
                    error = exc.code
                    log.info("delete records of %s-%d refused: %s",
                             req_topic.name, part.partition_index, exc)
                partitions.append(
                    build(
                        "DeleteRecordsPartitionResult",
                        partition_index=part.partition_index,
                        low_watermark=low,
                        error_code=error,
                    )
                )
            topics.append(
                build("DeleteRecordsTopicResult", name=req_topic.name, partitions=tuple(partitions))
            )
        return build(throttle_time=ZERO, topics=tuple(topics))

    def _delete_before(self, name: str, index: int, offset: int) -> int:
        topic = self.topics.get(name)
        partition = topic.partition(index) if topic is not None else None
        if topic is None or partition is None:
            raise Refused(ErrorCode.unknown_topic_or_partition, f"unknown partition {name}-{index}")
        if topic.is_internal:
            raise Refused(
                ErrorCode.invalid_topic_exception,
                f"Cannot delete records of internal topic {name}",
            )
        target = partition.high_watermark if offset == -1 else offset  # -1: the high watermark
        try:
            return partition.delete_records(target)
        except PolicyViolationError as exc:
            raise Refused(ErrorCode.policy_violation, str(exc)) from None
        except OffsetOutOfRangeError as exc:
            raise Refused(ErrorCode.offset_out_of_range, str(exc)) from None
        except UnknownTopicError as exc:
            raise Refused(ErrorCode.unknown_topic_or_partition, str(exc)) from None

    # -- OffsetForLeaderEpoch --------------------------------------------------------------
    def offset_for_leader_epoch(self, header: RequestHeader, req: Any) -> Response:
        """End offset of a leader epoch. The only epoch is 0 (starting at offset 0), so
        epoch 0 ends at the log end; an epoch above it is unknown (-1/-1, as Kafka answers
        for epochs past its latest). ``current_leader_epoch`` is fenced as Kafka does."""
        build = ResponseBuilder(header)
        topics = []
        for req_topic in req.topics:
            partitions = []
            for part in req_topic.partitions:
                error, epoch, end = NO_ERROR, -1, -1
                current = part.current_leader_epoch
                try:
                    partition = self.topics.partition(req_topic.topic, part.partition)
                except UnknownTopicError:
                    error = ErrorCode.unknown_topic_or_partition
                else:
                    if current != -1 and current < LEADER_EPOCH:
                        error = ErrorCode.fenced_leader_epoch
                    elif current > LEADER_EPOCH:
                        error = ErrorCode.unknown_leader_epoch
                    elif part.leader_epoch == LEADER_EPOCH:
                        epoch, end = LEADER_EPOCH, partition.high_watermark
                partitions.append(
                    build(
                        "EpochEndOffset",
                        error_code=error,
                        partition=part.partition,
                        leader_epoch=epoch,
                        end_offset=end,
                    )
                )
            topics.append(
                build(
                    "OffsetForLeaderTopicResult",
                    topic=req_topic.topic,
                    partitions=tuple(partitions),
                )
            )
        return build(throttle_time=ZERO, topics=tuple(topics))

    # -- DescribeLogDirs -------------------------------------------------------------------
    def describe_log_dirs(self, header: RequestHeader, req: Any) -> Response:
        build = ResponseBuilder(header)
        data_dir = self.topics.store.data_dir.resolve()
        if req.topics is None:
            wanted = [(t, range(len(t.partitions))) for t in self.topics]
        else:
            wanted = []
            for req_topic in req.topics:
                topic = self.topics.get(req_topic.topic)
                if topic is not None:
                    wanted.append((topic, req_topic.partitions))
        topics = []
        for topic, indexes in wanted:
            partitions = tuple(
                build(
                    "DescribeLogDirsPartition",
                    partition_index=index,
                    partition_size=topic.partitions[index].size_bytes,
                    offset_lag=0,
                    is_future_key=False,
                )
                for index in indexes
                if 0 <= index < len(topic.partitions)
            )
            if partitions:
                topics.append(
                    build("DescribeLogDirsTopic", name=topic.name, partitions=partitions)
                )
        total = usable = -1
        if header.api_version >= 4:
            usage = shutil.disk_usage(data_dir)
            total, usable = usage.total, usage.free
        result = build(
            "DescribeLogDirsResult",
            error_code=NO_ERROR,
            log_dir=str(data_dir),
            topics=tuple(topics),
            total_bytes=total,
            usable_bytes=usable,
        )
        return build(throttle_time=ZERO, error_code=NO_ERROR, results=(result,))
