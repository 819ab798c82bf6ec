"""The broker process: opens the data directory, runs listeners and background work, stops.

``Broker`` owns every long-lived task and listener; ``stop()`` closes them in order: stop accepting,
let in-flight requests finish (bounded), close connections, flush and close the logs, unlock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import uuid
from dataclasses import replace
from pathlib import Path

from dari.config import ConfigError, Settings, parse_hostport
from dari.queues.broker import AMQPBroker, User
from dari.queues.permissions import user_permissions
from dari.server.alarms import Limits, ResourceMonitor
from dari.server.amqp import AMQPServerConnection
from dari.server.amqp_expiry import expire_forever
from dari.server.amqp_streams import TopicStreams
from dari.server.amqp_topic_queues import TopicShareGroups
from dari.server.kafka import KafkaConnection
from dari.server.kafka_admin import KafkaAdmin
from dari.server.kafka_groups import GroupService
from dari.server.kafka_handlers import KafkaHandlers
from dari.server.kafka_share import ShareService
from dari.storage import FlushScheduler, LogConfig, LogStore, PartitionLog
from dari.storage.store import run_cleaner, run_maintenance
from dari.streams.producer_state import ProducerStates
from dari.streams.producers import ProducerIdManager
from dari.streams.share.coordinator import ShareCoordinator
from dari.streams.share.group_configs import GroupConfigs
from dari.streams.share.state_store import ShareStateStore
from dari.streams.topics import TopicManager, remove_orphan_dirs

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 2.0


def broker_log_config(settings: Settings) -> LogConfig:
    """Topic defaults from the broker-wide ``log.*`` settings, as Kafka derives them."""
    return LogConfig(
        segment_bytes=settings["log.segment.bytes"],
        segment_ms=settings["log.roll.ms"],
        retention_ms=settings["log.retention.ms"],
        retention_bytes=settings["log.retention.bytes"],
        index_interval_bytes=settings["log.index.interval.bytes"],
        flush=settings["log.flush.policy"],
        flush_interval_ms=settings["log.flush.interval.ms"],
        log_append_time=settings["log.message.timestamp.type"] == "LogAppendTime",
        max_message_bytes=settings["message.max.bytes"],
    )


def _cluster_id(data_dir: Path, configured: str) -> str:
    """A stable cluster id: configured, or generated once and kept in the data directory."""
    if configured:
        return configured
    path = data_dir / ".meta" / "cluster_id"
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = uuid.uuid4().hex[:22]
    path.write_text(value)
    return value


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Broker:
    """One dari broker; create, ``await start()``, later ``await stop()``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = LogStore(settings.data_dir)
        self.topics: TopicManager | None = None
        self.flusher: FlushScheduler | None = None
        self.kafka_server: asyncio.Server | None = None
        self.kafka_address: tuple[str, int] | None = None
        self.connections: set[KafkaConnection] = set()
        self.kafka_handlers: KafkaHandlers | None = None
        self.producer_states = ProducerStates()
        self.tasks: set[asyncio.Task[None]] = set()
        self.groups: GroupService | None = None
        self.share: ShareService | None = None
        self.share_store: ShareStateStore | None = None
        self.amqp: AMQPBroker | None = None
        self.amqp_server: asyncio.Server | None = None
        self.amqp_address: tuple[str, int] | None = None
        self.amqp_connections: set[AMQPServerConnection] = set()
        self.alarms: ResourceMonitor | None = None
        self._sighup = False

    async def start(self) -> None:
        settings = self.settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.store.lock()
        try:
            await self._open(settings)
        except BaseException:
            self.store.close()
            raise

    async def _open(self, settings: Settings) -> None:
        loop = asyncio.get_running_loop()
        self.topics = TopicManager(
            self.store,
            broker_log_config(settings),
            settings["num.partitions"],
            producer_states=self.producer_states,
        )
        await loop.run_in_executor(None, self.topics.load)
        remove_orphan_dirs(settings.data_dir, {p.directory.name for p in self.topics.all_logs()})
        self.flusher = FlushScheduler()
        await self.flusher.start(self._all_logs)
        handlers = KafkaHandlers(
            self.topics,
            self.flusher,
            node_id=settings["node.id"],
            cluster_id=_cluster_id(settings.data_dir, settings["cluster.id"]),
            advertised=self._advertised,
            auto_create=settings["auto.create.topics.enable"],
            message_max_bytes=settings["message.max.bytes"],
            producer_ids=ProducerIdManager(settings.data_dir / ".meta"),
        )
        self.kafka_handlers = handlers
        # Further Kafka APIs (groups, admin) add their handlers to handlers.table here.
        # Consumer groups: open and replay __consumer_offsets, then serve the group APIs.
        self.groups = await GroupService.open(settings, self.topics, self.flusher, handlers)
        handlers.table.update(self.groups.table)
        self._spawn(self.groups.expire_offsets_forever())
        admin = KafkaAdmin(
            self.topics,
            settings,
            node_id=handlers.node_id,
            cluster_id=handlers.cluster_id,
            advertised=self._advertised,
        )
        handlers.table.update(admin.table)
        self._open_share_groups(settings, handlers, admin)
        host, port = parse_hostport(settings["kafka"])
        max_request = settings["socket.request.max.bytes"]
        self.kafka_server = await loop.create_server(
            lambda: KafkaConnection(handlers, max_request, self.connections),
            host,
            port,
            reuse_address=True,
            backlog=1024,
        )
        sock = self.kafka_server.sockets[0]
        bound = sock.getsockname()
        self.kafka_address = (bound[0], bound[1])
        await self._start_amqp(settings)
        interval = settings["log.retention.check.interval.ms"] / 1000
        self._spawn(
            run_maintenance(self._all_logs, interval, after_pass=self.producer_states.snapshot_all)
        )
        self._spawn(run_cleaner(self._all_logs, settings["log.cleaner.backoff.ms"] / 1000))

    def _open_share_groups(
        self, settings: Settings, handlers: KafkaHandlers, admin: KafkaAdmin
    ) -> None:
        """Share groups (KIP-932): their stored ack state, group configs, APIs and timers."""
        assert self.topics is not None and self.groups is not None
        meta = settings.data_dir / ".meta"
        self.share_store = ShareStateStore(meta / "share")
        configs = GroupConfigs(meta / "group_configs.json", settings.values)
        coordinator = ShareCoordinator(
            self.topics, self.share_store, configs, is_classic_group=self.groups.has_group
        )
        coordinator.load()
        self.share = ShareService(coordinator, self.topics, self.topics.waiters)
        handlers.table.update(self.share.table)
        self.groups.share = coordinator
        admin.group_configs = configs
        self._spawn(self.share.sweep_forever())

    def _topic_shares(self, settings: Settings) -> TopicShareGroups | None:
        """The share groups AMQP queues over topics work off: the Kafka share groups'."""
        if self.topics is None or self.share is None:
            return None
        return TopicShareGroups(
            self.topics, self.share.coordinator,
            auto_create=settings["auto.create.topics.enable"],
        )

    async def _start_amqp(self, settings: Settings) -> None:
        """Recover durable AMQP definitions and queues, then listen."""
        assert self.flusher is not None
        users = {
            settings["amqp.default.user"]: User(
                settings["amqp.default.user"],
                settings["amqp.default.pass"],
                settings["amqp.default.user"] in settings["amqp.loopback.users"].split(","),
                ("*",),
            )
        }
        for name, attrs in settings.users().items():
            permissions = user_permissions(attrs)  # validated by Settings.load
            users[name] = User(
                name,
                str(attrs.get("password", "")),
                name in settings["amqp.loopback.users"].split(","),
                tuple(permissions),
                permissions,
            )
        vhosts = tuple(v.strip() for v in settings["amqp.vhosts"].split(",") if v.strip())
        queue_config = replace(broker_log_config(settings), segment_bytes=64 << 20)
        self.amqp = AMQPBroker(
            settings.data_dir, self.flusher, queue_config, users, vhosts,
            queue_memory_bytes=settings["amqp.queue.memory.bytes"],
            topics=TopicStreams(self.topics) if self.topics is not None else None,
            topic_shares=self._topic_shares(settings),
        )
        await asyncio.get_running_loop().run_in_executor(None, self.amqp.load)
        self._spawn(expire_forever(self.amqp))
        amqp_settings = {
            "frame_max": settings["amqp.frame.max"],
            "channel_max": settings["amqp.channel.max"],
            "heartbeat": settings["amqp.heartbeat"],
        }
        # Resource alarms block publishing connections (first check now, then every second).
        alarms = self.alarms = ResourceMonitor(
            Limits.from_settings(settings), settings.data_dir, node=settings["node.id"]
        )
        alarms.listeners.append(self._alarms_changed)
        self._spawn(alarms.run())
        self._watch_sighup()
        host, port = parse_hostport(settings["amqp"])
        broker = self.amqp
        self.amqp_server = await asyncio.get_running_loop().create_server(
            lambda: AMQPServerConnection(broker, amqp_settings, self.amqp_connections, alarms),
            host,
            port,
            reuse_address=True,
            backlog=1024,
        )
        bound = self.amqp_server.sockets[0].getsockname()
        self.amqp_address = (bound[0], bound[1])

    def _alarms_changed(self) -> None:
        for conn in list(self.amqp_connections):
            conn.alarms_changed()

    def _watch_sighup(self) -> None:
        """SIGHUP re-reads the settings; the resource limits take effect at once (dari's
        ``rabbitmqctl set_vm_memory_high_watermark`` / ``set_disk_free_limit``)."""
        sighup = getattr(signal, "SIGHUP", None)
        if sighup is None:
            return
        try:
            asyncio.get_running_loop().add_signal_handler(sighup, self.reload)
        except (RuntimeError, ValueError, NotImplementedError):
            return  # not the main thread (an embedded broker): no signal handling
        self._sighup = True

    def reload(self) -> None:
        """Read the configuration again and apply what can change at runtime: the resource
        limits. Other settings need a restart; flags and environment still take precedence."""
        try:
            settings = self.settings.reload()
        except ConfigError as exc:
            log.error("configuration reload failed, nothing changed: %s", exc)
            return
        log.info("configuration reloaded")
        if self.alarms is not None:
            self.alarms.set_limits(Limits.from_settings(settings))

    def _all_logs(self) -> list[PartitionLog]:
        """Every log the flush scheduler and maintenance look after."""
        logs = self.topics.all_logs() if self.topics is not None else []
        if self.amqp is not None:
            logs.extend(self.amqp.logs())
        return logs

    def _advertised(self) -> tuple[str, int]:
        configured = self.settings["kafka.advertised"]
        if configured:
            return parse_hostport(configured)
        assert self.kafka_address is not None
        host, port = self.kafka_address
        if host in ("0.0.0.0", "::"):
            host = socket.gethostname()
        return host, port

    @property
    def ready_line(self) -> str:
        assert self.kafka_address is not None
        host, port = self.kafka_address
        line = f"dari ready kafka={_hostport(host, port)}"
        if self.amqp_address is not None:
            line += f" amqp={_hostport(*self.amqp_address)}"
        return line

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def stop(self) -> None:
        if self._sighup:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            self._sighup = False
        if self.kafka_server is not None:
            self.kafka_server.close()
        if self.amqp_server is not None:
            self.amqp_server.close()
        for conn in list(self.amqp_connections):
            conn.close()
        for task in list(self.tasks):
            task.cancel()
        if self.groups is not None:
            self.groups.close()  # no more group timers; pending joins end with their connections
        if self.share is not None:
            self.share.close()
        # Let queued responses (e.g. produce waiting for fsync) finish, within bounds.
        deadline = asyncio.get_running_loop().time() + DRAIN_TIMEOUT_S
        while any(conn.queue for conn in self.connections):
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.01)
        for conn in list(self.connections):
            conn.close()
        if self.kafka_server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.kafka_server.wait_closed(), 1.0)
        if self.flusher is not None:
            await self.flusher.aclose()
        self.producer_states.snapshot_all(closing=True)
        if self.share_store is not None:
            self.share_store.close()  # acknowledged records stay done after a clean stop
        if self.amqp is not None:
            self.amqp.close()
        if self.topics is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.topics.close)
        self.store.close()
        log.info("broker stopped")
