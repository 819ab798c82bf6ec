"""Kafka handlers of the group APIs, and the asyncio side of the group coordinator.

Handlers translate kio requests into the coordinator's plain requests and its results back
into responses (via ``ResponseBuilder``, so one handler serves every version). Records the
coordinator asks for are appended to ``__consumer_offsets`` right after each call; OffsetCommit
answers only once they are durable under the log's flush policy. JoinGroup/SyncGroup answers
that wait for a rebalance are returned as awaitables. ``GroupService`` also fires the coordinator's
timers on the event loop and expires old offsets periodically.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from dari.config import Settings
from dari.protocol.kafka.apis import ApiKey
from dari.protocol.kafka.codec import RequestHeader, millis
from dari.protocol.kafka.errors import ErrorCode
from dari.server.kafka import client_host
from dari.server.kafka_handlers import (
    GROUP_OPERATIONS,
    NO_AUTHORIZED_OPERATIONS,
    Handled,
    KafkaHandlers,
    Response,
    ResponseBuilder,
)
from dari.storage import FlushScheduler, PartitionLog
from dari.streams.groups.coordinator import GroupCoordinator
from dari.streams.groups.messages import (
    CommitOffset,
    CommitRequest,
    Deferred,
    GroupError,
    JoinRequest,
    JoinResult,
    OffsetsRecord,
    SyncRequest,
    SyncResult,
)
from dari.streams.groups.offsets_log import OffsetsLog
from dari.streams.groups.timers import wall_clock_ms
from dari.streams.share.coordinator import PROTOCOL_TYPE as SHARE_PROTOCOL_TYPE
from dari.streams.share.coordinator import ShareCoordinator
from dari.streams.topics import TopicManager
from dari.streams.waiters import AppendWaiters

log = logging.getLogger(__name__)

ZERO = timedelta(0)
NO_ERROR = ErrorCode.none
KEY_TYPE_GROUP, KEY_TYPE_TRANSACTION = 0, 1


def code(error: GroupError) -> ErrorCode:
    return ErrorCode[error.value]


class GroupService:
    """The coordinator, its offsets log and its timers; owned by the broker's event loop."""

    def __init__(
        self,
        coordinator: GroupCoordinator,
        offsets_log: OffsetsLog,
        flusher: FlushScheduler,
        waiters: AppendWaiters,
        *,
        node_id: int,
        advertised: Callable[[], tuple[str, int]],
        expiry_interval_s: float,
    ) -> None:
        self.coordinator = coordinator
        self.offsets_log = offsets_log
        self.flusher = flusher
        self.waiters = waiters
        self.node_id = node_id
        self.advertised = advertised
        self.expiry_interval_s = expiry_interval_s
        self._timer_handle: asyncio.TimerHandle | None = None
        self._timer_deadline: int | None = None
        self._closed = False
        # Share groups (set by the broker): a group id is either classic or share, and the
        # admin group APIs answer for both.
        self.share: ShareCoordinator | None = None
        self.table: dict[int, Callable[[RequestHeader, Any], Handled]] = {
            ApiKey.FIND_COORDINATOR: self.find_coordinator,
            ApiKey.JOIN_GROUP: self.join_group,
            ApiKey.SYNC_GROUP: self.sync_group,
            ApiKey.HEARTBEAT: self.heartbeat,
            ApiKey.LEAVE_GROUP: self.leave_group,
            ApiKey.OFFSET_COMMIT: self.offset_commit,
            ApiKey.OFFSET_FETCH: self.offset_fetch,
            ApiKey.DESCRIBE_GROUPS: self.describe_groups,
            ApiKey.LIST_GROUPS: self.list_groups,
            ApiKey.DELETE_GROUPS: self.delete_groups,
            ApiKey.OFFSET_DELETE: self.offset_delete,
        }

    @classmethod
    async def open(
        cls,
        settings: Settings,
        topics: TopicManager,
        flusher: FlushScheduler,
        handlers: KafkaHandlers,
    ) -> GroupService:
        """Create or open ``__consumer_offsets``, replay it, and return the running service."""
        offsets_log = OffsetsLog(
            topics,
            settings["offsets.topic.num.partitions"],
            settings["offsets.topic.segment.bytes"],
        )
        offsets_log.ensure()
        loop = asyncio.get_running_loop()
        state = await loop.run_in_executor(None, offsets_log.load)

        def partition_exists(topic: str, partition: int) -> bool:
            found = topics.get(topic)
            return found is not None and 0 <= partition < len(found.partitions)

        coordinator = GroupCoordinator(
            wall_clock_ms,
            offsets_partitions=offsets_log.partitions,
            initial_rebalance_delay_ms=settings["group.initial.rebalance.delay.ms"],
            min_session_timeout_ms=settings["group.min.session.timeout.ms"],
            max_session_timeout_ms=settings["group.max.session.timeout.ms"],
            offsets_retention_ms=settings["offsets.retention.minutes"] * 60_000,
            max_metadata_bytes=settings["offset.metadata.max.bytes"],
            partition_exists=partition_exists,
        )
        coordinator.restore(state)
        if state.records:
            log.info(
                "loaded %d groups and the offsets of %d groups from %d records",
                len(state.groups),
                len(state.offsets),
                state.records,
            )
        service = cls(
            coordinator,
            offsets_log,
            flusher,
            topics.waiters,
            node_id=handlers.node_id,
            advertised=handlers.advertised,
            expiry_interval_s=settings["offsets.retention.check.interval.ms"] / 1000,
        )
        service._arm_timer()
        return service

    def close(self) -> None:
        self._closed = True
        self.coordinator.shutdown()
        if self._timer_handle is not None:
            self._timer_handle.cancel()
            self._timer_handle = None

    def has_group(self, group_id: str) -> bool:
        """Whether ``group_id`` is a classic group (with members or committed offsets)."""
        coordinator = self.coordinator
        return group_id in coordinator.groups or bool(coordinator.offsets.get(group_id))

    def _is_share(self, group_id: str) -> bool:
        return self.share is not None and self.share.is_share_group(group_id)

    # -- records and timers ----------------------------------------------------------------
    def _write(self, records: list[OffsetsRecord]) -> list[tuple[PartitionLog, int]]:
        if not records:
            return []
        written = self.offsets_log.append(records)
        for plog, _end in written:
            self.waiters.notify(plog)
        return written

    def _apply(self, outcome: Any) -> Any:
        """Append an outcome's records, re-arm the timer, and hand back the response."""
        self._write(outcome.records)
        self._arm_timer()
        return outcome.response

    def _arm_timer(self) -> None:
        if self._closed:
            return
        deadline = self.coordinator.timers.next_deadline()
        if deadline == self._timer_deadline and self._timer_handle is not None:
            return
        if self._timer_handle is not None:
            self._timer_handle.cancel()
            self._timer_handle = None
        self._timer_deadline = deadline
        if deadline is None:
            return
        delay = max(0.0, (deadline - wall_clock_ms()) / 1000)
        self._timer_handle = asyncio.get_running_loop().call_later(delay, self._fire_timers)

    def _fire_timers(self) -> None:
        self._timer_handle = None
        self._timer_deadline = None
        try:
            self._write(self.coordinator.run_timers())
        except Exception:
            log.exception("group coordinator timers failed")
        self._arm_timer()

    async def expire_offsets_forever(self) -> None:
        """Every ``offsets.retention.check.interval.ms``: tombstone expired offsets."""
        while True:
            await asyncio.sleep(self.expiry_interval_s)
            try:
                self._write(self.coordinator.expire_offsets())
            except Exception:
                log.exception("expiring committed offsets failed")

    @staticmethod
    async def _deferred(deferred: Deferred[Any], respond: Callable[[Any], Response]) -> Response:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def settle(value: Any) -> None:
            if not future.done():
                future.set_result(value)

        deferred.add_callback(settle)
        return respond(await future)

    def _answer(self, deferred: Deferred[Any], respond: Callable[[Any], Response]) -> Handled:
        if deferred.done:
            return respond(deferred.value)
        return self._deferred(deferred, respond)

    # -- FindCoordinator -------------------------------------------------------------------
    def find_coordinator(self, header: RequestHeader, req: Any) -> Response:
        build = ResponseBuilder(header)
        key_type = getattr(req, "key_type", KEY_TYPE_GROUP)
        host, port = self.advertised()

        def answer(key: str) -> dict[str, Any]:
            if key_type == KEY_TYPE_GROUP:
                return dict(
                    key=key,
                    node_id=self.node_id,
                    host=host,
                    port=port,
                    error_code=NO_ERROR,
                    error_message=None,
                )
            if key_type == KEY_TYPE_TRANSACTION:
                error, message = (
                    ErrorCode.coordinator_not_available,
                    ("transactions are not supported by this broker yet"),
                )
            else:
                error, message = ErrorCode.invalid_request, f"unknown key type {key_type}"
            return dict(
                key=key, node_id=-1, host="", port=-1, error_code=error, error_message=message
            )

        if header.api_version >= 4:
            coordinators = tuple(build("Coordinator", **answer(k)) for k in req.coordinator_keys)
            return build(throttle_time=ZERO, coordinators=coordinators)
        return build(throttle_time=ZERO, **answer(req.key))

    # -- JoinGroup / SyncGroup / Heartbeat / LeaveGroup ------------------------------------
    def join_group(self, header: RequestHeader, req: Any) -> Handled:
        version = header.api_version
        session = millis(req.session_timeout)
        rebalance = millis(getattr(req, "rebalance_timeout", None)) if version >= 1 else session
        request = JoinRequest(
            group_id=req.group_id,
            member_id=req.member_id,
            protocol_type=req.protocol_type,
            protocols=[(p.name, bytes(p.metadata)) for p in req.protocols],
            session_timeout_ms=session,
            rebalance_timeout_ms=rebalance if rebalance > 0 else session,
            group_instance_id=getattr(req, "group_instance_id", None),
            client_id=header.client_id or "",
            client_host=client_host.get(),  # "/<ip>" of the connection, as Kafka reports it
            require_known_member_id=version >= 4,
            supports_skip_assignment=version >= 9,
        )
        build = ResponseBuilder(header)
        if self._is_share(req.group_id):
            deferred: Deferred[JoinResult] = Deferred()
            deferred.complete(
                JoinResult(GroupError.INCONSISTENT_GROUP_PROTOCOL, member_id=req.member_id)
            )
        else:
            deferred = self._apply(self.coordinator.join(request))

        def respond(result: JoinResult) -> Response:
            members = tuple(
                build(
                    "JoinGroupResponseMember",
                    member_id=m.member_id,
                    group_instance_id=m.group_instance_id,
                    metadata=m.metadata,
                )
                for m in result.members
            )
            protocol = result.protocol
            if protocol is None and version < 7:
                protocol = ""
            return build(
                throttle_time=ZERO,
                error_code=code(result.error),
                generation_id=result.generation,
                protocol_type=result.protocol_type,
                protocol_name=protocol,
                leader=result.leader,
                skip_assignment=result.skip_assignment,
                member_id=result.member_id,
                members=members,
            )

        return self._answer(deferred, respond)

    def sync_group(self, header: RequestHeader, req: Any) -> Handled:
        request = SyncRequest(
            group_id=req.group_id,
            generation=req.generation_id,
            member_id=req.member_id,
            assignments={a.member_id: bytes(a.assignment) for a in req.assignments},
            group_instance_id=getattr(req, "group_instance_id", None),
            protocol_type=getattr(req, "protocol_type", None),
            protocol=getattr(req, "protocol_name", None),
        )
        deferred = self._apply(self.coordinator.sync(request))
        build = ResponseBuilder(header)

        def respond(result: SyncResult) -> Response:
            return build(
                throttle_time=ZERO,
                error_code=code(result.error),
                protocol_type=result.protocol_type,
                protocol_name=result.protocol,
                assignment=result.assignment,
            )

        return self._answer(deferred, respond)

    def heartbeat(self, header: RequestHeader, req: Any) -> Response:
        error = self._apply(
            self.coordinator.heartbeat(
                req.group_id,
                req.generation_id,
                req.member_id,
                getattr(req, "group_instance_id", None),
            )
        )
        return ResponseBuilder(header)(throttle_time=ZERO, error_code=code(error))

    def leave_group(self, header: RequestHeader, req: Any) -> Response:
        build = ResponseBuilder(header)
        if header.api_version >= 3:
            leaving = [(m.member_id, m.group_instance_id) for m in req.members]
        else:
            leaving = [(req.member_id, None)]
        result = self._apply(self.coordinator.leave(req.group_id, leaving))
        top = result.error
        if header.api_version < 3 and top is GroupError.NONE and result.members:
            top = result.members[0][2]
        members = tuple(
            build("MemberResponse", member_id=m, group_instance_id=i, error_code=code(e))
            for m, i, e in result.members
        )
        return build(throttle_time=ZERO, error_code=code(top), members=members)

    # -- offsets ---------------------------------------------------------------------------
    def offset_commit(self, header: RequestHeader, req: Any) -> Handled:
        offsets = [
            CommitOffset(
                t.name,
                p.partition_index,
                p.committed_offset,
                getattr(p, "committed_leader_epoch", -1),
                p.committed_metadata,
            )
            for t in req.topics
            for p in t.partitions
        ]
        request = CommitRequest(
            group_id=req.group_id,
            generation=req.generation_id_or_member_epoch,
            member_id=req.member_id,
            offsets=offsets,
            group_instance_id=getattr(req, "group_instance_id", None),
        )
        outcome = self.coordinator.commit(request)
        written = self._write(outcome.records)
        self._arm_timer()
        results = outcome.response
        build = ResponseBuilder(header)
        topics = tuple(
            build(
                "OffsetCommitResponseTopic",
                name=t.name,
                partitions=tuple(
                    build(
                        "OffsetCommitResponsePartition",
                        partition_index=p.partition_index,
                        error_code=code(results[(t.name, p.partition_index)]),
                    )
                    for p in t.partitions
                ),
            )
            for t in req.topics
        )
        response = build(throttle_time=ZERO, topics=topics)
        waits = [
            self.flusher.durable(plog, end)
            for plog, end in written
            if plog.config.flush == "always"
        ]
        if waits:
            return _after(waits, response)
        return response

    def offset_fetch(self, header: RequestHeader, req: Any) -> Response:
        build = ResponseBuilder(header)
        version = header.api_version
        if version >= 8:
            groups = tuple(
                self._fetch_group(build, version, g.group_id, g.topics) for g in req.groups
            )
            return build(throttle_time=ZERO, groups=groups)
        topics = self._fetch_group(build, version, req.group_id, req.topics)
        return build(throttle_time=ZERO, topics=topics, error_code=NO_ERROR)

    def _fetch_group(self, build: ResponseBuilder, version: int, group_id: str, topics: Any) -> Any:
        wanted = None if topics is None else [(t.name, list(t.partition_indexes)) for t in topics]
        fetched = self._apply(self.coordinator.fetch_offsets(group_id, wanted))
        suffix = "s" if version >= 8 else ""
        by_topic: dict[str, list[Any]] = {}
        for f in fetched:
            by_topic.setdefault(f.topic, []).append(
                build(
                    f"OffsetFetchResponsePartition{suffix}",
                    partition_index=f.partition,
                    committed_offset=f.offset,
                    committed_leader_epoch=f.leader_epoch,
                    metadata=f.metadata,
                    error_code=code(f.error),
                )
            )
        if wanted is not None:  # answer every requested topic, even one without partitions
            for name, _ in wanted:
                by_topic.setdefault(name, [])
        out = tuple(
            build(f"OffsetFetchResponseTopic{suffix}", name=name, partitions=tuple(parts))
            for name, parts in by_topic.items()
        )
        if version >= 8:
            return build(
                "OffsetFetchResponseGroup", group_id=group_id, topics=out, error_code=NO_ERROR
            )
        return out

    def offset_delete(self, header: RequestHeader, req: Any) -> Response:
        build = ResponseBuilder(header)
        wanted = [(t.name, p.partition_index) for t in req.topics for p in t.partitions]
        error, results = self._apply(self.coordinator.delete_offsets(req.group_id, wanted))
        topics: tuple[Any, ...] = ()
        if error is GroupError.NONE:
            topics = tuple(
                build(
                    "OffsetDeleteResponseTopic",
                    name=t.name,
                    partitions=tuple(
                        build(
                            "OffsetDeleteResponsePartition",
                            partition_index=p.partition_index,
                            error_code=code(results[(t.name, p.partition_index)]),
                        )
                        for p in t.partitions
                    ),
                )
                for t in req.topics
            )
        return build(error_code=code(error), throttle_time=ZERO, topics=topics)

    # -- admin -----------------------------------------------------------------------------
    def describe_groups(self, header: RequestHeader, req: Any) -> Response:
        build = ResponseBuilder(header)
        classic = [g for g in req.groups if not self._is_share(g)]
        described = {g.group_id: g for g in self._apply(self.coordinator.describe(classic))}
        # v3+ may ask for the authorized operations of each group found (dead ones included);
        # with no authorizer every operation a group supports is allowed, as in Kafka.
        asked = getattr(req, "include_authorized_operations", False)
        groups = tuple(
            build(
                "DescribedGroup",
                error_code=code(g.error),
                group_id=g.group_id,
                group_state=g.state,
                protocol_type=g.protocol_type,
                protocol_data=g.protocol,
                members=tuple(
                    build(
                        "DescribedGroupMember",
                        member_id=m.member_id,
                        group_instance_id=m.group_instance_id,
                        client_id=m.client_id,
                        client_host=m.client_host,
                        member_metadata=m.metadata,
                        member_assignment=m.assignment,
                    )
                    for m in g.members
                ),
                authorized_operations=(
                    GROUP_OPERATIONS
                    if asked and g.error is GroupError.NONE
                    else NO_AUTHORIZED_OPERATIONS
                ),
            )
            if g is not None
            # Kafka's DescribeGroups describes classic groups only; a share group is
            # GROUP_ID_NOT_FOUND "Group <id> is not a classic group."
            else build(
                "DescribedGroup",
                error_code=ErrorCode.group_id_not_found,
                error_message=f"Group {group_id} is not a classic group.",
                group_id=group_id,
                group_state="Dead",
                protocol_type="",
                protocol_data="",
                members=(),
                authorized_operations=NO_AUTHORIZED_OPERATIONS,
            )
            for group_id, g in ((gid, described.get(gid)) for gid in req.groups)
        )
        return build(throttle_time=ZERO, groups=groups)

    def list_groups(self, header: RequestHeader, req: Any) -> Response:
        build = ResponseBuilder(header)
        states = getattr(req, "states_filter", ())
        types = {t.lower() for t in getattr(req, "types_filter", ())}
        listed = self._apply(self.coordinator.list_groups(states, types))
        groups = [
            build(
                "ListedGroup",
                group_id=g.group_id,
                protocol_type=g.protocol_type,
                group_state=g.state,
                group_type="classic",
            )
            for g in listed
        ]
        if self.share is not None and (not types or "share" in types):
            groups.extend(
                build(
                    "ListedGroup",
                    group_id=group_id,
                    protocol_type=SHARE_PROTOCOL_TYPE,
                    group_state=state,
                    group_type="share",
                )
                for group_id, state in self.share.list_groups(states)
            )
        return build(throttle_time=ZERO, error_code=NO_ERROR, groups=tuple(groups))

    def delete_groups(self, header: RequestHeader, req: Any) -> Response:
        build = ResponseBuilder(header)
        share = self.share
        classic = [g for g in req.groups_names if not self._is_share(g)]
        deleted = self._apply(self.coordinator.delete_groups(classic))
        results = {g: code(e) for g, e in deleted.items()}
        if share is not None:
            for group_id in req.groups_names:
                if group_id not in results:
                    error = share.delete_group(group_id)
                    results[group_id] = NO_ERROR if error is None else ErrorCode[error]
        return build(
            throttle_time=ZERO,
            results=tuple(
                build("DeletableGroupResult", group_id=g, error_code=results[g])
                for g in dict.fromkeys(req.groups_names)
            ),
        )


async def _after(waits: list[Awaitable[None]], response: Response) -> Response:
    await asyncio.gather(*waits)
    return response
