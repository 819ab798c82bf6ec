"""Kafka request handlers: decoded requests in, responses out, the streams domain in between.

Handlers only translate: the produce rules, reads and offset look-ups are ``Partition``'s
(``dari.streams.partition``), topic changes ``TopicManager``'s; their domain errors and
``AppendError`` values become Kafka error codes here.

Each handler returns either a finished response or an awaitable of one (only produce with
``acks=all`` under a flush policy and long-polling fetches ever wait), so the connection can keep
the common case free of task creation. Responses are built from the schema library's classes
through ``ResponseBuilder``, which drops fields a given version does not have, so one handler
serves every version of its API.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from enum import IntEnum
from typing import Any

from dari.protocol.kafka.apis import ApiKey
from dari.protocol.kafka.codec import (
    RequestHeader,
    api_versions_response,
    encode_response,
    response_class,
)
from dari.protocol.kafka.errors import ErrorCode
from dari.protocol.kafka.fetch import FetchPartitionResult, encode_fetch_response
from dari.protocol.kafka.produce import (
    PartitionResult,
    ProduceRequestData,
    encode_produce_response,
)
from dari.storage import FlushScheduler
from dari.streams.errors import (
    AppendError,
    InvalidConfigError,
    InvalidPartitionsError,
    InvalidReplicationFactorError,
    InvalidTopicError,
    OffsetOutOfRangeError,
    PolicyViolationError,
    StreamsError,
    TopicExistsError,
    UnknownTopicError,
)
from dari.streams.partition import Partition, wait_for_append
from dari.streams.producers import ProducerIdManager
from dari.streams.topics import Topic, TopicManager, check_topic_name

log = logging.getLogger(__name__)

NO_ERROR = ErrorCode.none
ZERO = timedelta(0)
EARLIEST, LATEST, MAX_TIMESTAMP = -2, -1, -3
INTERNAL_TOPICS = frozenset({"__consumer_offsets", "__transaction_state"})
NO_AUTHORIZED_OPERATIONS = -2147483648  # the schema default: "not requested"


class AclOperation(IntEnum):
    READ = 3
    WRITE = 4
    CREATE = 5
    DELETE = 6
    ALTER = 7
    DESCRIBE = 8
    CLUSTER_ACTION = 9
    DESCRIBE_CONFIGS = 10
    ALTER_CONFIGS = 11
    IDEMPOTENT_WRITE = 12


def _bit_field(*operations: AclOperation) -> int:
    return sum(1 << op for op in operations)


# What a Kafka broker without an authorizer reports as a client's authorized operations: every
# operation the resource type supports (Kafka's AclEntry.supportedOperations) as a bit field.
_A = AclOperation
TOPIC_OPERATIONS = _bit_field(
    _A.READ, _A.WRITE, _A.CREATE, _A.DELETE, _A.ALTER, _A.DESCRIBE, _A.DESCRIBE_CONFIGS,
    _A.ALTER_CONFIGS,
)
CLUSTER_OPERATIONS = _bit_field(
    _A.CREATE, _A.ALTER, _A.DESCRIBE, _A.CLUSTER_ACTION, _A.DESCRIBE_CONFIGS, _A.ALTER_CONFIGS,
    _A.IDEMPOTENT_WRITE,
)
GROUP_OPERATIONS = _bit_field(
    _A.READ, _A.DELETE, _A.DESCRIBE, _A.DESCRIBE_CONFIGS, _A.ALTER_CONFIGS
)

_DOMAIN_CODES: dict[type[StreamsError], ErrorCode] = {
    UnknownTopicError: ErrorCode.unknown_topic_or_partition,
    TopicExistsError: ErrorCode.topic_already_exists,
    InvalidTopicError: ErrorCode.invalid_topic_exception,
    InvalidPartitionsError: ErrorCode.invalid_partitions,
    InvalidConfigError: ErrorCode.invalid_config,
    InvalidReplicationFactorError: ErrorCode.invalid_replication_factor,
    OffsetOutOfRangeError: ErrorCode.offset_out_of_range,
    PolicyViolationError: ErrorCode.policy_violation,
}

APPEND_CODES: dict[AppendError, ErrorCode] = {
    AppendError.INVALID_RECORD: ErrorCode.invalid_record,
    AppendError.MESSAGE_TOO_LARGE: ErrorCode.message_too_large,
    AppendError.UNSUPPORTED_FORMAT: ErrorCode.unsupported_for_message_format,
    AppendError.CORRUPT_RECORD: ErrorCode.corrupt_message,
    AppendError.OUT_OF_ORDER_SEQUENCE: ErrorCode.out_of_order_sequence_number,
    AppendError.INVALID_PRODUCER_EPOCH: ErrorCode.invalid_producer_epoch,
}


def error_code_of(exc: StreamsError) -> ErrorCode:
    return _DOMAIN_CODES.get(type(exc), ErrorCode.unknown_server_error)


class ResponseBuilder:
    """Builds a response and its nested entities for one API version, ignoring absent fields."""

    __slots__ = ("module", "response")

    def __init__(self, header: RequestHeader) -> None:
        self.response = response_class(header.api_key, header.api_version)
        self.module = sys.modules[self.response.__module__]

    def __call__(self, __name: str | None = None, **fields: Any) -> Any:
        cls = self.response if __name is None else getattr(self.module, __name, None)
        if cls is None:  # this version has no such entity; its field is filtered out too
            return None
        allowed = cls.__dataclass_fields__
        return cls(**{k: v for k, v in fields.items() if k in allowed})


Response = Any  # a schema-library response entity, or bytes / buffers already framed
Handled = Response | Awaitable[Response] | None


class KafkaHandlers:
    """The Kafka API of one broker; owned by the event loop thread."""

    def __init__(
        self,
        topics: TopicManager,
        flusher: FlushScheduler,
        *,
        node_id: int,
        cluster_id: str,
        advertised: Callable[[], tuple[str, int]],
        auto_create: bool,
        message_max_bytes: int,
        producer_ids: ProducerIdManager,
    ) -> None:
        self.producer_ids = producer_ids
        self.topics = topics
        self.flusher = flusher
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.advertised = advertised
        self.auto_create = auto_create
        self.message_max_bytes = message_max_bytes
        self.table: dict[int, Callable[[RequestHeader, Any], Handled]] = {
            ApiKey.API_VERSIONS: self.api_versions,
            ApiKey.PRODUCE: self.produce,
            ApiKey.FETCH: self.fetch,
            ApiKey.LIST_OFFSETS: self.list_offsets,
            ApiKey.METADATA: self.metadata,
            ApiKey.CREATE_TOPICS: self.create_topics,
            ApiKey.DELETE_TOPICS: self.delete_topics,
            ApiKey.CREATE_PARTITIONS: self.create_partitions,
            ApiKey.INIT_PRODUCER_ID: self.init_producer_id,
        }

    # -- helpers ---------------------------------------------------------------------------
    def _topic_for_write(self, name: str) -> Topic:
        if name in INTERNAL_TOPICS:  # written by the broker only, as in Kafka
            raise InvalidTopicError(f"cannot append to internal topic {name}")
        topic = self.topics.get(name)
        if topic is None:
            if not self.auto_create:
                raise UnknownTopicError(f"topic '{name}' does not exist")
            check_topic_name(name)
            topic = self.topics.create(name)
        return topic

    def api_versions(self, header: RequestHeader, req: Any) -> Response:
        return api_versions_response(header.api_version)

    # -- Produce ---------------------------------------------------------------------------
    def produce(self, header: RequestHeader, req: ProduceRequestData) -> Handled:
        results: list[tuple[str, list[PartitionResult]]] = []
        durable_waits: list[Awaitable[None]] = []
        for topic_data in req.topics:
            partition_results: list[PartitionResult] = []
            results.append((topic_data.name, partition_results))
            try:
                topic: Topic | None = self._topic_for_write(topic_data.name)
                error = NO_ERROR
            except StreamsError as exc:
                topic, error = None, error_code_of(exc)
            for part in topic_data.partitions:
                if topic is None:
                    partition_results.append(PartitionResult(part.index, error, -1))
                    continue
                partition = topic.partition(part.index)
                if partition is None:
                    partition_results.append(
                        PartitionResult(part.index, ErrorCode.unknown_topic_or_partition, -1)
                    )
                    continue
                result = partition.append(part.records)
                if result.error is not None:
                    partition_results.append(
                        PartitionResult(
                            part.index,
                            APPEND_CODES[result.error],
                            -1,
                            -1,
                            result.log_start_offset,
                            result.message,
                            result.record_errors,
                        )
                    )
                    continue
                partition_results.append(
                    PartitionResult(
                        part.index,
                        NO_ERROR,
                        result.base_offset,
                        result.log_append_time,
                        result.log_start_offset,
                    )
                )
                if partition.config.flush == "always":
                    durable_waits.append(
                        self.flusher.durable(partition.log, partition.high_watermark)
                    )
        if req.acks == 0:
            return None
        response = encode_response(
            header, encode_produce_response(header.api_version, results)
        )
        if durable_waits:
            return self._after(durable_waits, response)
        return response

    async def _after(self, waits: list[Awaitable[None]], response: Response) -> Response:
        await asyncio.gather(*waits)
        return response

    # -- Fetch -----------------------------------------------------------------------------
    def fetch(self, header: RequestHeader, req: Any) -> Handled:
        deadline = time.monotonic() + req.max_wait.total_seconds()
        topics, total, read = self._read_fetch(header, req)
        if total >= req.min_bytes or req.max_wait <= ZERO or not read:
            return encode_fetch_response(header, 0, 0, 0, topics)
        return self._fetch_later(header, req, deadline, read)

    async def _fetch_later(
        self, header: RequestHeader, req: Any, deadline: float, read: list[Partition]
    ) -> Response:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            await wait_for_append(read, remaining)
            topics, total, read_now = self._read_fetch(header, req)
            if total >= req.min_bytes or not read_now:
                return encode_fetch_response(header, 0, 0, 0, topics)
        topics, _total, _read = self._read_fetch(header, req)
        return encode_fetch_response(header, 0, 0, 0, topics)

    def _read_fetch(
        self, header: RequestHeader, req: Any
    ) -> tuple[list[tuple[str | uuid.UUID, list[FetchPartitionResult]]], int, list[Partition]]:
        """Read every requested partition once: (response topics, bytes read, partitions read)."""
        by_id = header.api_version >= 13
        budget = req.max_bytes
        total = 0
        out: list[tuple[str | uuid.UUID, list[FetchPartitionResult]]] = []
        read: list[Partition] = []
        for fetch_topic in req.topics:
            key = fetch_topic.topic_id if by_id else fetch_topic.topic
            topic = self.topics.by_id.get(key) if by_id else self.topics.get(key)
            results: list[FetchPartitionResult] = []
            out.append((key, results))
            for part in fetch_topic.partitions:
                partition = topic.partition(part.partition) if topic is not None else None
                if partition is None:
                    code = ErrorCode.unknown_topic_id if by_id else (
                        ErrorCode.unknown_topic_or_partition
                    )
                    results.append(FetchPartitionResult(part.partition, code, -1, -1, -1, b""))
                    continue
                hw = partition.high_watermark
                try:
                    limit = min(part.partition_max_bytes, budget)
                    data = (
                        partition.read(part.fetch_offset, limit) if limit > 0 or total == 0
                        else b""
                    )
                    if total and len(data) > limit:
                        # Only the first partition with data may exceed the limits (KIP-74),
                        # so one oversized batch can never stall a consumer.
                        data = b""
                except OffsetOutOfRangeError:
                    results.append(
                        FetchPartitionResult(
                            part.partition, ErrorCode.offset_out_of_range, hw, hw,
                            partition.log_start_offset, b"",
                        )
                    )
                    continue
                size = len(data)
                total += size
                budget -= size
                read.append(partition)
                results.append(
                    FetchPartitionResult(
                        part.partition, NO_ERROR, hw, hw, partition.log_start_offset, data
                    )
                )
        return out, total, read

    # -- ListOffsets -----------------------------------------------------------------------
    def list_offsets(self, header: RequestHeader, req: Any) -> Response:
        build = ResponseBuilder(header)
        topics = []
        for req_topic in req.topics:
            partitions = []
            for part in req_topic.partitions:
                error, offset, timestamp = NO_ERROR, -1, -1
                try:
                    partition = self.topics.partition(req_topic.name, part.partition_index)
                except UnknownTopicError:
                    error = ErrorCode.unknown_topic_or_partition
                else:
                    if part.timestamp == EARLIEST:
                        offset = partition.log_start_offset
                    elif part.timestamp == LATEST:
                        offset = partition.high_watermark
                    elif part.timestamp == MAX_TIMESTAMP:
                        offset, timestamp = partition.max_timestamp()
                    else:
                        found = partition.offset_for_timestamp(part.timestamp)
                        if found is not None:
                            offset, timestamp = found
                partitions.append(
                    build(
                        "ListOffsetsPartitionResponse",
                        partition_index=part.partition_index,
                        error_code=error,
                        timestamp=timestamp,
                        offset=offset,
                        leader_epoch=0 if error == NO_ERROR else -1,
                    )
                )
            topics.append(
                build("ListOffsetsTopicResponse", name=req_topic.name, partitions=tuple(partitions))
            )
        return build(throttle_time=ZERO, topics=tuple(topics))

    # -- Metadata --------------------------------------------------------------------------
    def metadata(self, header: RequestHeader, req: Any) -> Response:
        build = ResponseBuilder(header)
        host, port = self.advertised()
        # v8+ ask for authorized operations; with no authorizer every supported one is allowed.
        topic_ops = NO_AUTHORIZED_OPERATIONS
        if getattr(req, "include_topic_authorized_operations", False):
            topic_ops = TOPIC_OPERATIONS
        cluster_ops = NO_AUTHORIZED_OPERATIONS
        if getattr(req, "include_cluster_authorized_operations", False):  # v8-v10 only
            cluster_ops = CLUSTER_OPERATIONS
        if req.topics is None:
            wanted: list[Topic | tuple[str | None, uuid.UUID | None]] = list(self.topics)
        else:
            allow = getattr(req, "allow_auto_topic_creation", True) and self.auto_create
            wanted = []
            for req_topic in req.topics:
                name = getattr(req_topic, "name", None)
                topic_id = getattr(req_topic, "topic_id", None)
                topic = self.topics.get(name) if name else self.topics.by_id.get(topic_id)
                if topic is None and name and allow:
                    try:
                        topic = self.topics.create(name)
                    except StreamsError as exc:
                        wanted.append((name, topic_id, error_code_of(exc)))  # type: ignore[arg-type]
                        continue
                wanted.append(topic if topic is not None else (name, topic_id))
        topics = []
        for item in wanted:
            if isinstance(item, Topic):
                topics.append(self._topic_metadata(build, item, topic_ops))
                continue
            name, topic_id, *code = item
            error = code[0] if code else ErrorCode.unknown_topic_or_partition
            if name is None:
                error = ErrorCode.unknown_topic_id
            topics.append(
                build(
                    "MetadataResponseTopic",
                    error_code=error,
                    name=name,
                    topic_id=topic_id or uuid.UUID(int=0),
                    is_internal=False,
                    partitions=(),
                    # Kafka leaves unknown topic ids at the default, unlike unknown names.
                    topic_authorized_operations=(
                        NO_AUTHORIZED_OPERATIONS if name is None else topic_ops
                    ),
                )
            )
        broker = build("MetadataResponseBroker", node_id=self.node_id, host=host, port=port)
        return build(
            throttle_time=ZERO,
            brokers=(broker,),
            cluster_id=self.cluster_id,
            controller_id=self.node_id,
            topics=tuple(topics),
            cluster_authorized_operations=cluster_ops,
        )

    def _topic_metadata(self, build: ResponseBuilder, topic: Topic, operations: int) -> Any:
        node = (self.node_id,)
        partitions = tuple(
            build(
                "MetadataResponsePartition",
                error_code=NO_ERROR,
                partition_index=index,
                leader_id=self.node_id,
                leader_epoch=0,
                replica_nodes=node,
                isr_nodes=node,
                offline_replicas=(),
            )
            for index in range(len(topic.partitions))
        )
        return build(
            "MetadataResponseTopic",
            error_code=NO_ERROR,
            name=topic.name,
            topic_id=topic.topic_id,
            is_internal=topic.is_internal,
            partitions=partitions,
            topic_authorized_operations=operations,
        )

    # -- admin -----------------------------------------------------------------------------
    def create_topics(self, header: RequestHeader, req: Any) -> Response:
        build = ResponseBuilder(header)
        results = []
        for req_topic in req.topics:
            error, message, topic = NO_ERROR, None, None
            try:
                if len(req_topic.assignments) > 0:
                    raise InvalidReplicationFactorError(
                        "manual replica assignment is not supported on a single broker"
                    )
                # Kafka's catalogue validates the configs (validate_only too): unknown names and
                # bad values are INVALID_CONFIG and nothing is created.
                topic = self.topics.create(
                    req_topic.name,
                    req_topic.num_partitions,
                    {c.name: c.value for c in req_topic.configs},
                    req.validate_only,
                    replication_factor=req_topic.replication_factor,
                )
            except StreamsError as exc:
                error, message = error_code_of(exc), str(exc)
                log.info("create topic %s refused: %s", req_topic.name, exc)
            results.append(
                build(
                    "CreatableTopicResult",
                    name=req_topic.name,
                    topic_id=topic.topic_id if topic else uuid.UUID(int=0),
                    error_code=error,
                    error_message=message,
                    topic_config_error_code=0,
                    num_partitions=self._partition_count(topic, req_topic.num_partitions),
                    replication_factor=1 if topic else -1,
                    configs=self._config_entries(build, topic) if topic else None,
                )
            )
        return build(throttle_time=ZERO, topics=tuple(results))

    def _partition_count(self, topic: Topic | None, requested: int) -> int:
        if topic is None:
            return -1
        if topic.partitions:
            return len(topic.partitions)
        return self.topics.default_partitions if requested == -1 else requested

    def _config_entries(self, build: ResponseBuilder, topic: Topic) -> tuple[Any, ...]:
        return tuple(
            build(
                "CreatableTopicConfigs",
                name=name,
                value=value,
                read_only=False,
                config_source=1,  # TOPIC_CONFIG
                is_sensitive=False,
            )
            for name, value in sorted(topic.configs.items())
        )

    def delete_topics(self, header: RequestHeader, req: Any) -> Response:
        build = ResponseBuilder(header)
        if header.api_version >= 6:
            requested = [(t.name, t.topic_id) for t in req.topics]
        else:
            requested = [(name, None) for name in req.topic_names]
        results = []
        for name, topic_id in requested:
            error, message = NO_ERROR, None
            if name is None and topic_id is not None:
                found = self.topics.by_id.get(topic_id)
                name = found.name if found else None
            try:
                if name is None:
                    raise UnknownTopicError("unknown topic id")
                if name in INTERNAL_TOPICS:
                    raise InvalidTopicError(f"internal topic {name} cannot be deleted")
                deleted = self.topics.delete(name)
                topic_id = deleted.topic_id
            except StreamsError as exc:
                error, message = error_code_of(exc), str(exc)
                if name is None:
                    error = ErrorCode.unknown_topic_id
            results.append(
                build(
                    "DeletableTopicResult",
                    name=name,
                    topic_id=topic_id or uuid.UUID(int=0),
                    error_code=error,
                    error_message=message,
                )
            )
        return build(throttle_time=ZERO, responses=tuple(results))

    def create_partitions(self, header: RequestHeader, req: Any) -> Response:
        build = ResponseBuilder(header)
        results = []
        for req_topic in req.topics:
            error, message = NO_ERROR, None
            try:
                self.topics.add_partitions(req_topic.name, req_topic.count, req.validate_only)
            except StreamsError as exc:
                error, message = error_code_of(exc), str(exc)
            results.append(
                build(
                    "CreatePartitionsTopicResult",
                    name=req_topic.name,
                    error_code=error,
                    error_message=message,
                )
            )
        return build(throttle_time=ZERO, results=tuple(results))

    def init_producer_id(self, header: RequestHeader, req: Any) -> Response:
        build = ResponseBuilder(header)
        if req.transactional_id is not None:
            # Transactions come with the group coordinator; refuse clearly until then.
            return build(
                throttle_time=ZERO,
                error_code=ErrorCode.transactional_id_authorization_failed,
                producer_id=-1,
                producer_epoch=-1,
            )
        old_id = getattr(req, "producer_id", -1)
        if old_id >= 0:
            producer_id, epoch = self.producer_ids.bump(old_id, req.producer_epoch)
        else:
            producer_id, epoch = self.producer_ids.allocate(), 0
        return build(
            throttle_time=ZERO, error_code=NO_ERROR, producer_id=producer_id, producer_epoch=epoch
        )
