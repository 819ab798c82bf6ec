"""Kafka handlers of share groups (KIP-932) and the asyncio side of the share coordinator.

ShareGroupHeartbeat, ShareGroupDescribe, ShareFetch, ShareAcknowledge and the share-group
offsets APIs: decode, call ``streams.share`` (the coordinator, its sessions and the
``SharePartition`` ack state), encode. ShareFetch reads batch bytes from the log and puts them
into the response as they are (``protocol.kafka.share_fetch``), with the acquired ranges that
tell the client which records it holds; a fetch that acquired nothing waits for an append or
for records released by others or by a lock timeout. ``ShareService`` also runs the
coordinator's timers (session timeouts, lock expiry) on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from dari.protocol.kafka.apis import ApiKey
from dari.protocol.kafka.codec import RequestHeader, millis
from dari.protocol.kafka.errors import ErrorCode
from dari.protocol.kafka.share_fetch import ShareFetchPartition, encode_share_fetch_response
from dari.records import HEADER_SIZE, parse_header
from dari.server.kafka import client_host, current_connection
from dari.server.kafka_handlers import (
    GROUP_OPERATIONS,
    NO_AUTHORIZED_OPERATIONS,
    Handled,
    Response,
    ResponseBuilder,
)
from dari.streams.errors import OffsetOutOfRangeError
from dari.streams.groups.timers import wall_clock_ms
from dari.streams.share.coordinator import (
    ASSIGNOR,
    AckBatch,
    HeartbeatRequest,
    ShareCoordinator,
    ShareGroupError,
)
from dari.streams.share.group import PartitionKey, ShareGroup
from dari.streams.share.partition import ShareAckError, SharePartition
from dari.streams.share.sessions import FINAL_EPOCH, INITIAL_EPOCH, ShareSession
from dari.streams.topics import Topic, TopicManager
from dari.streams.waiters import AppendWaiters

log = logging.getLogger(__name__)

ZERO = timedelta(0)
NO_ERROR = ErrorCode.none
DEFAULT_MAX_RECORDS = 500
SWEEP_INTERVAL_S = 5.0
# Bytes read per partition and fetch: enough for a full poll of small records, and a backlog
# is never read whole only to acquire max.poll.records of it (at least one batch is read).
PARTITION_READ_BYTES = 1 << 20
_ACK_CODES = {ShareAckError.INVALID_RECORD_STATE: ErrorCode.invalid_record_state}
_MESSAGES = {
    ErrorCode.invalid_record_state: "The record state is invalid. The acknowledgement of "
    "delivery could not be completed.",
    ErrorCode.share_session_not_found: "The share session was not found.",
    ErrorCode.invalid_share_session_epoch: "The share session epoch is invalid.",
    ErrorCode.unknown_topic_or_partition: "This server does not host this topic-partition.",
    ErrorCode.unknown_topic_id: "This server does not host this topic ID.",
}


def _message(error: ErrorCode) -> str | None:
    return None if error is NO_ERROR else _MESSAGES.get(error, error.name)


def _refused(build: ResponseBuilder, error: ErrorCode, message: str | None) -> Response:
    """A share-group offsets answer refused as a whole: the error and no topics."""
    return build(throttle_time=ZERO, error_code=error, error_message=message, responses=())


def _ack_batches(batches: Any) -> list[AckBatch]:
    return [
        AckBatch(b.first_offset, b.last_offset, tuple(int(t) for t in b.acknowledge_types))
        for b in batches
    ]


def _valid_batches(batches: list[AckBatch]) -> bool:
    """Ascending, non-overlapping ranges with one type, or one per offset (KIP-932)."""
    previous = -1
    for b in batches:
        if b.first_offset > b.last_offset or b.first_offset <= previous:
            return False
        size = b.last_offset - b.first_offset + 1
        if len(b.types) not in (1, size) or any(t < 0 or t > 3 for t in b.types):
            return False
        previous = b.last_offset
    return True


def _cut_to(data: bytes | memoryview, last_offset: int) -> bytes | memoryview:
    """The whole batches of ``data`` up to the one holding ``last_offset``."""
    view = memoryview(data)
    pos = 0
    while pos + HEADER_SIZE <= len(view):
        header = parse_header(view, pos)
        pos += header.size
        if header.last_offset >= last_offset:
            break
    return view[:pos] if pos < len(view) else data


def _end_offset(data: bytes | memoryview) -> int:
    """The offset after the last batch of ``data``."""
    view = memoryview(data)
    pos, end = 0, -1
    while pos + HEADER_SIZE <= len(view):
        header = parse_header(view, pos)
        end = header.next_offset
        pos += header.size
    return end


class ShareService:
    """The share-group APIs of one broker and the coordinator's timers.

    Owned by the broker's event loop; not thread-safe. ``table`` maps API keys to handlers
    with the signature of ``KafkaHandlers.table``.
    """

    def __init__(
        self,
        coordinator: ShareCoordinator,
        topics: TopicManager,
        waiters: AppendWaiters,
        *,
        clock: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.coordinator = coordinator
        self.topics = topics
        self.waiters = waiters
        self.clock = clock
        coordinator.on_available = self._wake
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline: int | None = None
        self._closed = False
        self.table: dict[int, Callable[[RequestHeader, Any], Handled]] = {
            ApiKey.SHARE_GROUP_HEARTBEAT: self.heartbeat,
            ApiKey.SHARE_GROUP_DESCRIBE: self.describe,
            ApiKey.SHARE_FETCH: self.share_fetch,
            ApiKey.SHARE_ACKNOWLEDGE: self.share_acknowledge,
            ApiKey.DESCRIBE_SHARE_GROUP_OFFSETS: self.describe_offsets,
            ApiKey.ALTER_SHARE_GROUP_OFFSETS: self.alter_offsets,
            ApiKey.DELETE_SHARE_GROUP_OFFSETS: self.delete_offsets,
        }

    # -- timers ----------------------------------------------------------------------------
    def _wake(self, share: SharePartition) -> None:
        self.waiters.notify(share)

    def arm_timer(self) -> None:
        if self._closed:
            return
        deadline = self.coordinator.next_deadline_ms()
        if deadline == self._timer_deadline and self._timer is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_deadline = deadline
        if deadline is None:
            return
        delay = max(0.0, (deadline - self.clock()) / 1000)
        self._timer = asyncio.get_running_loop().call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_deadline = None
        try:
            self.coordinator.expire(self.clock())
        except Exception:
            log.exception("share coordinator timers failed")
        self.arm_timer()

    async def sweep_forever(self) -> None:
        """Forget the state of deleted topics now and then."""
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            try:
                self.coordinator.drop_unknown_topics()
            except Exception:
                log.exception("share state sweep failed")

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _connection_lost(self, connection: object) -> None:
        """A client connection closed: its share sessions end and their records are
        released at once (Kafka 4.1+), not only after their locks time out."""
        for session in self.coordinator.sessions.owned_by(connection):
            self.coordinator.close_session(session)
        self.arm_timer()

    # -- ShareGroupHeartbeat ---------------------------------------------------------------
    def heartbeat(self, header: RequestHeader, req: Any) -> Response:
        build = ResponseBuilder(header)
        request = HeartbeatRequest(
            group_id=req.group_id,
            member_id=req.member_id,
            member_epoch=req.member_epoch,
            rack_id=req.rack_id,
            subscribed=(
                None if req.subscribed_topic_names is None else tuple(req.subscribed_topic_names)
            ),
            client_id=header.client_id or "",
            client_host=client_host.get(),
        )
        try:
            result = self.coordinator.heartbeat(request, self.clock())
        except ShareGroupError as exc:
            return build(
                throttle_time=ZERO,
                error_code=ErrorCode[exc.code],
                error_message=str(exc),
                member_id=None,
                member_epoch=0,
                heartbeat_interval=ZERO,
                assignment=None,
            )
        finally:
            self.arm_timer()
        assignment = None
        if result.assignment is not None:
            assignment = build(
                "Assignment",
                topic_partitions=tuple(
                    build("TopicPartitions", topic_id=topic_id, partitions=partitions)
                    for topic_id, partitions in sorted(result.assignment.items())
                ),
            )
        return build(
            throttle_time=ZERO,
            error_code=NO_ERROR,
            error_message=None,
            member_id=result.member_id,
            member_epoch=result.member_epoch,
            heartbeat_interval=timedelta(milliseconds=result.heartbeat_interval_ms),
            assignment=assignment,
        )

    # -- ShareGroupDescribe ----------------------------------------------------------------
    def describe(self, header: RequestHeader, req: Any) -> Response:
        build = ResponseBuilder(header)
        asked = req.include_authorized_operations
        groups = []
        for group_id in req.group_ids:
            group = self.coordinator.group(group_id)
            if group is None:
                message = (
                    f"Group {group_id} is not a share group."
                    if self.coordinator.is_classic_group(group_id)
                    else f"Group {group_id} not found."
                )
                groups.append(
                    build(
                        "DescribedGroup",
                        error_code=ErrorCode.group_id_not_found,
                        error_message=message,
                        group_id=group_id,
                        group_state="Dead",
                        group_epoch=-1,
                        assignment_epoch=-1,
                        assignor_name="",
                        members=(),
                    )
                )
                continue
            groups.append(
                build(
                    "DescribedGroup",
                    error_code=NO_ERROR,
                    error_message=None,
                    group_id=group_id,
                    group_state=group.state.value,
                    group_epoch=group.epoch,
                    assignment_epoch=group.assignment_epoch,
                    assignor_name=ASSIGNOR,
                    members=self._members(build, group),
                    authorized_operations=GROUP_OPERATIONS if asked else NO_AUTHORIZED_OPERATIONS,
                )
            )
        return build(throttle_time=ZERO, groups=tuple(groups))

    def _members(self, build: ResponseBuilder, group: ShareGroup) -> tuple[Any, ...]:
        out = []
        for m in group.members.values():
            partitions = []
            for topic_id, indexes in sorted(m.assignment.items()):
                topic = self.topics.by_id.get(topic_id)
                if topic is not None:
                    partitions.append(
                        build(
                            "TopicPartitions",
                            topic_id=topic_id,
                            topic_name=topic.name,
                            partitions=indexes,
                        )
                    )
            out.append(
                build(
                    "Member",
                    member_id=m.member_id,
                    rack_id=m.rack_id,
                    member_epoch=m.epoch,
                    client_id=m.client_id,
                    client_host=m.client_host,
                    subscribed_topic_names=m.subscribed,
                    assignment=build("Assignment", topic_partitions=tuple(partitions)),
                )
            )
        return tuple(out)

    # -- ShareFetch ------------------------------------------------------------------------
    def share_fetch(self, header: RequestHeader, req: Any) -> Handled:
        now = self.clock()
        group_id, member_id = req.group_id or "", req.member_id or ""
        epoch = req.share_session_epoch
        lock_ms = self.coordinator.configs.int_value(group_id, "share.record.lock.duration.ms")

        def failed(error: ErrorCode) -> Response:
            return encode_share_fetch_response(header, error, _message(error), lock_ms, [])

        requested: list[PartitionKey] = []
        acks: dict[PartitionKey, list[AckBatch]] = {}
        for t in req.topics:
            for p in t.partitions:
                key = (t.topic_id, p.partition_index)
                requested.append(key)
                if p.acknowledgement_batches:
                    acks[key] = _ack_batches(p.acknowledgement_batches)
        forgotten = [(t.topic_id, i) for t in req.forgotten_topics_data for i in t.partitions]
        if (
            (epoch == INITIAL_EPOCH and acks)
            or (epoch == FINAL_EPOCH and forgotten)
            or not all(_valid_batches(b) for b in acks.values())
        ):
            return failed(ErrorCode.invalid_request)
        if self.coordinator.is_classic_group(group_id):
            return failed(ErrorCode.group_id_not_found)
        session = self._session(group_id, member_id, epoch)
        if isinstance(session, ErrorCode):
            return failed(session)
        results: dict[PartitionKey, ShareFetchPartition] = {}
        self._apply_acks(group_id, member_id, acks, results, now)
        if epoch == FINAL_EPOCH:
            self.coordinator.close_session(session)
            self.arm_timer()
            return self._respond(header, lock_ms, results)
        for key in requested:
            session.partitions[key] = None
        for key in forgotten:
            session.partitions.pop(key, None)
        self.coordinator.release(group_id, member_id, forgotten)
        max_records = req.max_records if req.max_records > 0 else DEFAULT_MAX_RECORDS
        shares = self._acquire(session, max_records, req.max_bytes, results, now)
        self.arm_timer()
        acquired = any(r.acquired for r in results.values())
        wait = millis(req.max_wait)
        if acquired or wait <= 0 or not shares:
            return self._respond(header, lock_ms, results)
        return self._fetch_later(header, req, session, lock_ms, results, shares, wait)

    def _session(self, group_id: str, member_id: str, epoch: int) -> ShareSession | ErrorCode:
        sessions = self.coordinator.sessions
        if epoch == INITIAL_EPOCH:
            old = sessions.get(group_id, member_id)
            if old is not None:
                self.coordinator.close_session(old)
            session, _ = sessions.open(group_id, member_id)
            connection = current_connection.get()
            if connection is not None:
                session.owner = connection
                if self._connection_lost not in connection.close_callbacks:
                    connection.close_callbacks.append(self._connection_lost)
            return session
        session, error = sessions.use(group_id, member_id, epoch)
        if error is not None:
            stale = sessions.get(group_id, member_id)
            if stale is not None:
                self.coordinator.close_session(stale)
            return ErrorCode[error.value]
        assert session is not None
        if epoch != FINAL_EPOCH:
            session.epoch += 1
        return session

    async def _fetch_later(
        self,
        header: RequestHeader,
        req: Any,
        session: ShareSession,
        lock_ms: int,
        results: dict[PartitionKey, ShareFetchPartition],
        shares: list[tuple[SharePartition, Any]],
        wait_ms: int,
    ) -> Response:
        deadline = time.monotonic() + wait_ms / 1000
        max_records = req.max_records if req.max_records > 0 else DEFAULT_MAX_RECORDS
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._closed:
                break
            keys: list[object] = [s for s, _p in shares] + [p.log for _s, p in shares]
            await self.waiters.wait_any(keys, remaining)
            if self.coordinator.sessions.get(session.group_id, session.member_id) is not session:
                break  # closed or replaced meanwhile: acquire nothing for it
            shares = self._acquire(session, max_records, req.max_bytes, results, self.clock())
            self.arm_timer()
            if any(r.acquired for r in results.values()) or not shares:
                break
        return self._respond(header, lock_ms, results)

    def _apply_acks(
        self,
        group_id: str,
        member_id: str,
        acks: dict[PartitionKey, list[AckBatch]],
        results: dict[PartitionKey, ShareFetchPartition],
        now: int,
    ) -> None:
        for key, batches in acks.items():
            topic = self.topics.by_id.get(key[0])
            part = results.setdefault(key, ShareFetchPartition(key[1]))
            if topic is None or topic.partition(key[1]) is None:
                code = ErrorCode.unknown_topic_or_partition
            else:
                error = self.coordinator.acknowledge(
                    group_id, member_id, topic, key[1], batches, now
                )
                code = NO_ERROR if error is None else _ACK_CODES[error]
            part.acknowledge_error_code = code
            part.acknowledge_error_message = _message(code)

    def _acquire(
        self,
        session: ShareSession,
        max_records: int,
        max_bytes: int,
        results: dict[PartitionKey, ShareFetchPartition],
        now: int,
    ) -> list[tuple[SharePartition, Any]]:
        """Acquire records of the session's partitions into ``results``; returns the
        partitions read (the ones a waiting fetch listens to)."""
        keys = list(session.partitions)
        read: list[tuple[SharePartition, Any]] = []
        budget = max_bytes if max_bytes > 0 else 1 << 30
        left = max_records
        for key in keys:
            topic = self.topics.by_id.get(key[0])
            partition = topic.partition(key[1]) if topic is not None else None
            if topic is None or partition is None:
                part = results.setdefault(key, ShareFetchPartition(key[1]))
                code = ErrorCode.unknown_topic_or_partition
                part.error_code, part.error_message = code, _message(code)
                continue
            share = self.coordinator.share_partition(session.group_id, topic, key[1], now)
            read.append((share, partition))
            if left <= 0 or budget <= 0 or (key in results and results[key].acquired):
                continue
            share.advance_log_start(partition.log_start_offset)
            high_watermark = partition.high_watermark
            start = share.next_offset(high_watermark)
            if start is None:
                continue
            try:
                data = partition.read(start, min(budget, PARTITION_READ_BYTES))
            except OffsetOutOfRangeError:
                share.advance_log_start(partition.log_start_offset)
                continue
            if not data:
                continue
            end = min(_end_offset(data), high_watermark)
            acquired = share.acquire(session.member_id, left, now, end)
            if not acquired:
                continue
            data = _cut_to(data, acquired[-1].last_offset)
            left -= sum(r.last_offset - r.first_offset + 1 for r in acquired)
            budget -= len(data)
            part = results.setdefault(key, ShareFetchPartition(key[1]))
            part.records = data
            part.acquired = [tuple(r) for r in acquired]  # type: ignore[misc]
        if keys:  # start with the next partition next time, so none starves
            first = next(iter(session.partitions))
            session.partitions.pop(first)
            session.partitions[first] = None
        return read

    def _respond(
        self, header: RequestHeader, lock_ms: int, results: dict[PartitionKey, ShareFetchPartition]
    ) -> Response:
        by_topic: dict[uuid.UUID, list[ShareFetchPartition]] = {}
        for (topic_id, _index), part in sorted(results.items(), key=lambda kv: kv[0]):
            by_topic.setdefault(topic_id, []).append(part)
        return encode_share_fetch_response(
            header, NO_ERROR, None, lock_ms, list(by_topic.items())
        )

    # -- ShareAcknowledge ------------------------------------------------------------------
    def share_acknowledge(self, header: RequestHeader, req: Any) -> Response:
        build = ResponseBuilder(header)
        now = self.clock()
        group_id, member_id = req.group_id or "", req.member_id or ""
        epoch = req.share_session_epoch

        def failed(error: ErrorCode) -> Response:
            return build(
                throttle_time=ZERO,
                error_code=error,
                error_message=_message(error),
                responses=(),
                node_endpoints=(),
            )

        acks: dict[PartitionKey, list[AckBatch]] = {}
        for t in req.topics:
            for p in t.partitions:
                acks[(t.topic_id, p.partition_index)] = _ack_batches(p.acknowledgement_batches)
        if not all(_valid_batches(b) for b in acks.values()):
            return failed(ErrorCode.invalid_request)
        if epoch == INITIAL_EPOCH:
            return failed(ErrorCode.invalid_share_session_epoch)
        session = self._session(group_id, member_id, epoch)
        if isinstance(session, ErrorCode):
            return failed(session)
        results: dict[PartitionKey, ShareFetchPartition] = {}
        self._apply_acks(group_id, member_id, acks, results, now)
        if epoch == FINAL_EPOCH:
            self.coordinator.close_session(session)
        self.arm_timer()
        by_topic: dict[uuid.UUID, list[Any]] = {}
        for (topic_id, index), part in sorted(results.items(), key=lambda kv: kv[0]):
            by_topic.setdefault(topic_id, []).append(
                build(
                    "PartitionData",
                    partition_index=index,
                    error_code=ErrorCode(part.acknowledge_error_code),
                    error_message=part.acknowledge_error_message,
                    current_leader=build("LeaderIdAndEpoch", leader_id=-1, leader_epoch=-1),
                )
            )
        return build(
            throttle_time=ZERO,
            error_code=NO_ERROR,
            error_message=None,
            responses=tuple(
                build("ShareAcknowledgeTopicResponse", topic_id=t, partitions=tuple(p))
                for t, p in by_topic.items()
            ),
            node_endpoints=(),
        )

    # -- share-group offsets ---------------------------------------------------------------
    def describe_offsets(self, header: RequestHeader, req: Any) -> Response:
        build = ResponseBuilder(header)
        groups = []
        for g in req.groups:
            group = self.coordinator.group(g.group_id)
            if group is None:
                message = (
                    f"Group {g.group_id} is not a share group."
                    if self.coordinator.is_classic_group(g.group_id)
                    else f"Group {g.group_id} not found."
                )
                groups.append(
                    build(
                        "DescribeShareGroupOffsetsResponseGroup",
                        group_id=g.group_id,
                        topics=(),
                        error_code=ErrorCode.group_id_not_found,
                        error_message=message,
                    )
                )
                continue
            wanted: list[tuple[str, list[int]]]
            if g.topics is None:
                names: dict[str, list[int]] = {}
                for topic_id, index in sorted(group.partitions):
                    topic = self.topics.by_id.get(topic_id)
                    if topic is not None:
                        names.setdefault(topic.name, []).append(index)
                wanted = list(names.items())
            else:
                wanted = [(t.topic_name, list(t.partitions)) for t in g.topics]
            topics = []
            for name, indexes in wanted:
                topic = self.topics.get(name)
                topics.append(
                    build(
                        "DescribeShareGroupOffsetsResponseTopic",
                        topic_name=name,
                        topic_id=topic.topic_id if topic is not None else uuid.UUID(int=0),
                        partitions=tuple(
                            self._offset_entry(build, group, topic, i) for i in indexes
                        ),
                    )
                )
            groups.append(
                build(
                    "DescribeShareGroupOffsetsResponseGroup",
                    group_id=g.group_id,
                    topics=tuple(topics),
                    error_code=NO_ERROR,
                    error_message=None,
                )
            )
        return build(throttle_time=ZERO, groups=tuple(groups))

    def _offset_entry(
        self, build: ResponseBuilder, group: ShareGroup, topic: Topic | None, index: int
    ) -> Any:
        partition = topic.partition(index) if topic is not None else None
        if topic is None or partition is None:
            code = ErrorCode.unknown_topic_or_partition
            return build(
                "DescribeShareGroupOffsetsResponsePartition",
                partition_index=index,
                start_offset=-1,
                leader_epoch=-1,
                lag=-1,
                error_code=code,
                error_message=_message(code),
            )
        share = group.partitions.get((topic.topic_id, index))
        if share is not None:
            share.advance_log_start(partition.log_start_offset)
        return build(
            "DescribeShareGroupOffsetsResponsePartition",
            partition_index=index,
            start_offset=share.start_offset if share is not None else -1,
            leader_epoch=0 if share is not None else -1,
            lag=share.lag(partition.high_watermark) if share is not None else -1,
            error_code=NO_ERROR,
            error_message=None,
        )

    def alter_offsets(self, header: RequestHeader, req: Any) -> Response:
        build = ResponseBuilder(header)
        try:
            self.coordinator.check_empty(req.group_id)
        except ShareGroupError as exc:
            return _refused(build, ErrorCode[exc.code], str(exc))
        responses = []
        for t in req.topics:
            topic = self.topics.get(t.topic_name)
            partitions = []
            for p in t.partitions:
                code = NO_ERROR
                if topic is None or topic.partition(p.partition_index) is None:
                    code = ErrorCode.unknown_topic_or_partition
                else:
                    self.coordinator.reset_offset(
                        req.group_id, topic, p.partition_index, p.start_offset
                    )
                partitions.append(
                    build(
                        "AlterShareGroupOffsetsResponsePartition",
                        partition_index=p.partition_index,
                        error_code=code,
                        error_message=_message(code),
                    )
                )
            responses.append(
                build(
                    "AlterShareGroupOffsetsResponseTopic",
                    topic_name=t.topic_name,
                    topic_id=topic.topic_id if topic is not None else uuid.UUID(int=0),
                    partitions=tuple(partitions),
                )
            )
        return build(
            throttle_time=ZERO, error_code=NO_ERROR, error_message=None, responses=tuple(responses)
        )

    def delete_offsets(self, header: RequestHeader, req: Any) -> Response:
        build = ResponseBuilder(header)
        if self.coordinator.group(req.group_id) is None:
            code = ErrorCode.group_id_not_found
            return _refused(build, code, f"Group {req.group_id} not found.")
        try:
            self.coordinator.check_empty(req.group_id)
        except ShareGroupError as exc:
            return _refused(build, ErrorCode[exc.code], str(exc))
        responses = []
        for t in req.topics:
            topic = self.topics.get(t.topic_name)
            code = NO_ERROR
            if topic is None:
                code = ErrorCode.unknown_topic_or_partition
            else:
                self.coordinator.delete_offsets(req.group_id, topic)
            responses.append(
                build(
                    "DeleteShareGroupOffsetsResponseTopic",
                    topic_name=t.topic_name,
                    topic_id=topic.topic_id if topic is not None else uuid.UUID(int=0),
                    error_code=code,
                    error_message=_message(code),
                )
            )
        return build(
            throttle_time=ZERO, error_code=NO_ERROR, error_message=None, responses=tuple(responses)
        )
