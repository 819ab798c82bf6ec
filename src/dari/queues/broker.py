"""The AMQP broker model: virtual hosts, their queues, users, dead-lettering and expiry.

``AMQPBroker`` is what the AMQP adapter (``server/amqp*.py``) talks to. Each vhost's queues are
registered in the vhost itself (``VirtualHost`` is the one registry); the broker makes the
queues (``declare_queue``, with RabbitMQ's redeclare-equivalence checks), deletes them, routes
their dead letters and persists durable definitions through ``DefinitionsStore``
(``<data-dir>/.meta/amqp/<vhost>.json``). Durable queues' messages live in
``<data-dir>/.queues/<queue>-<digest>`` on the log engine; non-durable queues page out to
``<data-dir>/.scratch``, wiped at start. Transient state is dropped on restart, as RabbitMQ
drops it.

Time-driven work — per-message TTL at the head of a queue and x-expires of unused queues —
happens in ``tick(now_ms)``, which the server calls periodically; nothing here sleeps or runs a
task of its own, so tests drive expiry with an injected clock.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple, cast

from dari.message import Message
from dari.queues.dead_letter import REJECTED, headers_of, is_cycle, record_death
from dari.queues.definitions import DefinitionsStore, QueueDefinition, VHostDefinitions
from dari.queues.direct_reply import ReplyConsumers
from dari.queues.errors import (
    AccessRefused,
    FeatureNotImplemented,
    NotFound,
    PreconditionFailed,
    resource,
)
from dari.queues.permissions import FULL, NO_ACCESS, Permissions
from dari.queues.queue import Queue
from dari.queues.queue_store import QueueStore
from dari.queues.quorum import (
    QUORUM_ARGUMENTS,
    QuorumQueue,
    check_classic_arguments,
    is_quorum,
    server_named_refusal,
)
from dari.queues.quorum import check_declare as check_quorum_declare
from dari.queues.stream_queue import (
    StreamQueue,
    StreamTopics,
    check_declare,
    check_topic_name,
    is_stream,
    topic_name,
)
from dari.queues.topic_queue import (
    TopicQueue,
    TopicShares,
    group_name,
    is_topic_queue,
    parse_declare,
)
from dari.queues.values import type_name
from dari.queues.vhost import VirtualHost
from dari.storage import FlushScheduler, LogConfig

log = logging.getLogger(__name__)

# The queue arguments RabbitMQ compares on redeclare (others may differ freely).
_COMPARED_ARGS = (
    "x-message-ttl",
    "x-expires",
    "x-max-length",
    "x-max-length-bytes",
    "x-overflow",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-priority",
    "x-queue-type",
    "x-topic",
    "x-queue-mode",
    "x-single-active-consumer",
)
# What RabbitMQ compares for a stream (its queue type's own argument list).
_STREAM_COMPARED_ARGS = (
    "x-max-length-bytes",
    "x-queue-type",
    "x-max-age",
    "x-stream-max-segment-size-bytes",
    "x-stream-filter-size-bytes",
    "x-initial-cluster-size",
    "x-queue-leader-locator",
)


@dataclass
class User:
    """A user who may log in: password, loopback restriction, vhosts and permission patterns."""

    name: str
    password: str
    loopback_only: bool = False
    vhosts: tuple[str, ...] = ("/",)  # where the user may connect; "*": every vhost
    permissions: Mapping[str, Permissions] = field(default_factory=dict)

    def permissions_in(self, vhost: str) -> Permissions:
        """The user's patterns in ``vhost``: a vhost listed without patterns grants ``.*``."""
        found = self.permissions.get(vhost)
        if found is not None:
            return found
        return FULL if vhost in self.vhosts or "*" in self.vhosts else NO_ACCESS


class Expired(NamedTuple):
    """What one ``tick`` expired: messages dropped (and dead-lettered) at the head of their
    queues, and the queues deleted for x-expires, as (vhost, queue name)."""

    messages: int
    queues: list[tuple[str, str]]


class AMQPBroker:
    """Vhosts, queues, users and the persistence of durable definitions; see the module
    docstring. Owned by the event loop thread (``load`` may run in a worker thread before the
    broker is shared); not safe across threads."""

    def __init__(
        self,
        data_dir: Path,
        flusher: FlushScheduler,
        queue_log_config: LogConfig,
        users: Mapping[str, User],
        vhosts: tuple[str, ...] = ("/",),
        queue_memory_bytes: int = 0,
        clock: Callable[[], float] = time.time,
        topics: StreamTopics | None = None,
        topic_shares: TopicShares | None = None,
    ) -> None:
        self.data_dir = data_dir
        # The Kafka side's topics: a stream queue is one of them (None: no stream queues).
        self.topics = topics
        if topics is not None:
            topics.on_delete(self._topic_deleted)
        # Topics with share groups: what x-topic queues work off (None: no such queues).
        self.topic_shares = topic_shares
        self.flusher = flusher
        self.queue_log_config = queue_log_config
        # ready message bytes a queue keeps in memory before paging to a log
        self.queue_memory_bytes = queue_memory_bytes
        self.users = dict(users)
        self.vhosts = {name: VirtualHost(name) for name in vhosts}
        self.definitions = DefinitionsStore(data_dir / ".meta" / "amqp")
        self.direct_replies = ReplyConsumers()  # direct reply-to consumers of all channels
        self._clock = clock  # seconds, as time.time; queues read it for TTL and x-expires
        self._queue_dir = data_dir / ".queues"
        # Where non-durable queues page out; nothing in it outlives the process.
        self._scratch_dir = data_dir / ".scratch"
        self._recovering = False  # load() is making the queues it recovers

    def vhost(self, name: str) -> VirtualHost:
        return self.vhosts[name]

    def queues(self, vhost_name: str) -> list[Queue]:
        """The queues of a vhost, in declaration order (a copy: callers may delete)."""
        return cast("list[Queue]", self.vhosts[vhost_name].queues())

    # -- lifecycle ---------------------------------------------------------------------------
    def load(self) -> None:
        """Recover durable queues (their unacked messages), exchanges and bindings."""
        self.definitions.directory.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self._scratch_dir, ignore_errors=True)  # transient pages of a past run
        self._recovering = True  # (a failed load fails the broker's start)
        for name, vhost in self.vhosts.items():
            saved = self.definitions.load(name)
            if saved is None:
                continue
            for item in saved.queues:
                vhost.add_queue(
                    self._make_queue(
                        name,
                        item.name,
                        durable=True,
                        auto_delete=item.auto_delete,
                        arguments=item.arguments,
                    )
                )
            skipped = vhost.restore(saved.routing)
            if skipped:
                log.warning("vhost %s: skipped %d bindings to missing queues", name, len(skipped))
            log.info("vhost %s: recovered %d durable queues", name, len(saved.queues))
        self._recovering = False

    def close(self) -> None:
        for name in self.vhosts:
            for queue in self.queues(name):
                queue.close()

    def tick(self, now_ms: int) -> Expired:
        """Expire what is due at ``now_ms`` (epoch milliseconds): messages whose TTL passed at
        the head of their queues (dead-lettered if so configured), and queues left unused for
        their x-expires period (deleted). The server calls this a few times a second."""
        messages = 0
        deleted: list[tuple[str, str]] = []
        for vhost_name in self.vhosts:
            for queue in self.queues(vhost_name):
                if queue.unused_expired(now_ms):
                    log.debug("queue %s expired (x-expires)", queue.name)
                    self.delete_queue(vhost_name, queue)
                    deleted.append((vhost_name, queue.name))
                    continue
                due = queue.next_expiry_ms()
                if due is not None and due <= now_ms:
                    messages += queue.expire(now_ms)
        return Expired(messages, deleted)

    def logs(self) -> Iterator[Any]:
        """Every log of every durable queue (for the flush scheduler)."""
        for name in self.vhosts:
            for queue in self.queues(name):
                if queue.store is not None:
                    yield from queue.store.logs

    # -- persistence -------------------------------------------------------------------------
    def save(self, vhost_name: str) -> None:
        """Write the vhost's durable definitions (called after every durable change)."""
        vhost = self.vhosts[vhost_name]
        queues = tuple(
            QueueDefinition(q.name, q.auto_delete, q.arguments)
            for q in self.queues(vhost_name)
            if q.durable and not q.deleted
        )
        self.definitions.save(vhost_name, VHostDefinitions(vhost.snapshot(), queues))

    # -- queues ------------------------------------------------------------------------------
    def _store_dir(self, vhost: str, queue: str) -> Path:
        # Queue names may hold any character; a digest keeps directory names safe and short.
        digest = hashlib.sha1(f"{vhost}\0{queue}".encode()).hexdigest()[:16]
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in queue)[:64]
        return self._queue_dir / f"{safe}-{digest}"

    def _make_queue(
        self,
        vhost_name: str,
        name: str,
        *,
        durable: bool,
        auto_delete: bool,
        arguments: Mapping[str, Any],
        exclusive_owner: object | None = None,
    ) -> Queue:
        """The queue factory: a stream queue opens (or makes) its topic; a durable queue opens
        (and recovers) its store; a non-durable one gets a scratch log on first page-out."""
        if is_topic_queue(arguments):  # x-topic: whatever x-queue-type says (it refuses stream)
            return self._make_topic_queue(
                vhost_name, name, durable=durable, auto_delete=auto_delete,
                arguments=arguments, exclusive=exclusive_owner is not None,
            )
        if is_stream(arguments):
            return self._make_stream(
                vhost_name, name, durable=durable, auto_delete=auto_delete,
                arguments=arguments, exclusive=exclusive_owner is not None,
            )
        quorum = is_quorum(arguments)
        store = None
        if durable:
            store = QueueStore.open(
                self._store_dir(vhost_name, name),
                self.queue_log_config,
                flush_scheduler=self.flusher,
            )
        return (QuorumQueue if quorum else Queue)(
            name,
            durable=durable,
            exclusive_owner=exclusive_owner,
            auto_delete=auto_delete,
            arguments=arguments,
            vhost=vhost_name,
            store=store,
            clock=self._clock,
            dead_letter=self._dead_letter,
            on_delete=lambda q: self.forget_queue(vhost_name, q),
            memory_bytes=self.queue_memory_bytes,
            scratch=None if durable else lambda: self._scratch_store(vhost_name, name),
        )

    def _make_stream(
        self,
        vhost_name: str,
        name: str,
        *,
        durable: bool,
        auto_delete: bool,
        arguments: Mapping[str, Any],
        exclusive: bool,
    ) -> Queue:
        """A stream queue on the one-partition topic ``topic_name(vhost, name)``, made with
        the configs its arguments map to unless it exists (a Kafka-made topic is opened as
        it is)."""
        configs = check_declare(
            name, vhost_name, durable=durable, exclusive=exclusive, auto_delete=auto_delete,
            arguments=arguments,
        )
        if self.topics is None:
            raise FeatureNotImplemented("stream queues need the broker's topics")
        tname = topic_name(vhost_name, name)
        check_topic_name(tname, resource("queue", name, vhost_name))
        partition = self.topics.open(tname, configs)
        stream = StreamQueue(name, vhost_name, arguments, partition, self.flusher, self._clock)
        return cast("Queue", stream)

    def _make_topic_queue(
        self,
        vhost_name: str,
        name: str,
        *,
        durable: bool,
        auto_delete: bool,
        arguments: Mapping[str, Any],
        exclusive: bool,
    ) -> Queue:
        """A queue over topic ``x-topic`` worked off by the share group
        ``group_name(vhost, name)``."""
        topic, start, delivery_limit, args = parse_declare(
            name, vhost_name, durable=durable, exclusive=exclusive, auto_delete=auto_delete,
            arguments=arguments,
        )
        if self.topic_shares is None:
            raise FeatureNotImplemented("queues over topics need the broker's topics")
        shared = self.topic_shares.open(
            topic, group_name(vhost_name, name), start=start, delivery_limit=delivery_limit,
            create=not self._recovering,  # a recovered queue waits for a deleted topic
        )
        queue = TopicQueue(
            name, vhost_name, arguments, args, shared, dead_letter=self._dead_letter,
            flusher=self.flusher, clock=self._clock,
        )
        return cast("Queue", queue)

    def _scratch_store(self, vhost: str, queue: str) -> QueueStore:
        """A log for a non-durable queue's paged-out messages: never fsynced, removed with the
        queue, and wiped at the next start."""
        name = f"{self._store_dir(vhost, queue).name}-{secrets.token_hex(4)}"
        return QueueStore.open(self._scratch_dir / name, replace(self.queue_log_config, flush="os"))

    def declare_queue(
        self,
        vhost_name: str,
        name: str,
        *,
        passive: bool,
        durable: bool,
        exclusive_owner: object | None,
        auto_delete: bool,
        arguments: Mapping[str, Any],
        connection: object | None = None,
    ) -> Queue:
        """queue.declare from ``connection`` (``exclusive_owner`` is it when exclusive)."""
        vhost = self.vhosts[vhost_name]
        generated = not name and not passive
        if generated:
            if is_quorum(arguments):
                raise server_named_refusal()
            name = "amq.gen-" + secrets.token_urlsafe(16)
        elif name.startswith("amq.") and not passive:  # even when it exists, as RabbitMQ
            raise AccessRefused(f"queue name '{name}' contains reserved prefix 'amq.*'")
        existing = cast("Queue | None", vhost.get_queue(name))
        if existing is not None:
            existing.check_exclusive(connection)
            if not passive:
                if exclusive_owner is not None and not existing.exclusive:
                    # RabbitMQ's strict exclusive-access check on declare
                    existing.exclusive_owner, owner = object(), existing.exclusive_owner
                    try:
                        existing.check_exclusive(connection)
                    finally:
                        existing.exclusive_owner = owner
                _check_equivalent(existing, durable, auto_delete, arguments)
            existing.touch()  # a declare renews the x-expires lease, passive or not
            return existing
        if passive:
            raise NotFound(f"no {resource('queue', name, vhost_name)}")
        if is_topic_queue(arguments):
            pass  # its own rules, checked as it is made
        elif is_quorum(arguments):
            check_quorum_declare(
                name, vhost_name, durable=durable, exclusive=exclusive_owner is not None,
                auto_delete=auto_delete, arguments=arguments,
            )
        elif not is_stream(arguments):
            check_classic_arguments(name, vhost_name, arguments)
        queue = self._make_queue(
            vhost_name,
            name,
            durable=durable,
            auto_delete=auto_delete,
            arguments=arguments,
            exclusive_owner=exclusive_owner,
        )
        vhost.add_queue(queue)
        if durable:
            self.save(vhost_name)
        return queue

    def get_queue(self, vhost_name: str, name: str) -> Queue:
        queue = cast("Queue | None", self.vhosts[vhost_name].get_queue(name))
        if queue is None or queue.deleted:
            raise NotFound(f"no {resource('queue', name, vhost_name)}")
        return queue

    def delete_queue(self, vhost_name: str, queue: Queue) -> int:
        count = queue.delete()
        self.forget_queue(vhost_name, queue)
        if isinstance(queue, StreamQueue) and self.topics is not None:
            # a stream's data goes with it, as in RabbitMQ
            self.topics.delete(topic_name(vhost_name, queue.name))
        return count

    def forget_queue(self, vhost_name: str, queue: Queue) -> None:
        """Unregister a deleted queue (its bindings go; a durable one's definition too)."""
        vhost = self.vhosts[vhost_name]
        if vhost.get_queue(queue.name) is queue:
            vhost.remove_queue(queue.name)
        if queue.durable:
            self.save(vhost_name)

    def _topic_deleted(self, name: str) -> None:
        """A topic was deleted (DeleteTopics from a Kafka client): the stream queue that is
        that topic goes too, its consumers cancelled, as if deleted by queue.delete."""
        for vhost_name, vhost in self.vhosts.items():
            for queue in vhost.queues():
                if (
                    isinstance(queue, StreamQueue)
                    and not queue.deleted
                    and topic_name(vhost_name, queue.name) == name
                ):
                    queue.delete()
                    self.forget_queue(vhost_name, queue)
                    log.info("deleted stream %s with its topic", queue.where)

    def delete_exclusive(self, vhost_name: str, owner: object) -> list[str]:
        """A connection closed: delete the exclusive queues it owned in ``vhost_name`` (the
        vhost it was open on); returns their names."""
        doomed = [q for q in self.queues(vhost_name) if q.exclusive_owner is owner]
        for queue in doomed:
            self.delete_queue(vhost_name, queue)
        return [q.name for q in doomed]

    # -- dead-lettering ----------------------------------------------------------------------
    def _dead_letter(self, queue: Queue, message: Message, reason: str) -> None:
        """Republish to the queue's dead-letter exchange (RabbitMQ's DLX) with its x-death
        history updated; the routing key is x-dead-letter-routing-key or the original. A
        fully automatic cycle back into a queue is dropped, as RabbitMQ drops it."""
        vhost = self.vhosts[queue.vhost]
        exchange = queue.args.dead_letter_exchange
        if exchange is None or vhost.get_exchange(exchange) is None:
            return
        dead = record_death(
            message, queue.name, reason, int(self._clock()),
            exchange=exchange, routing_key=queue.args.dead_letter_routing_key,
        )
        targets = vhost.route(exchange, dead.routing_key, headers_of(dead), allow_internal=True)
        for target in targets:
            if reason != REJECTED and is_cycle(dead, target.name):
                log.debug("dead-letter cycle into %s: message dropped", target.name)
                continue
            cast("Queue", target).publish(dead)


# -- redeclare equivalence -------------------------------------------------------------------


def _check_equivalent(
    queue: Queue,
    durable: bool,
    auto_delete: bool,
    arguments: Mapping[str, Any],
) -> None:
    """406 unless a redeclare matches the queue: durable, auto_delete and the compared
    arguments (value and type), worded as RabbitMQ words it."""
    where = resource("queue", queue.name, queue.vhost)

    def refuse(key: str, received: str, current: str) -> PreconditionFailed:
        return PreconditionFailed(
            f"inequivalent arg '{key}' for {where}: received '{received}' but current is "
            f"'{current}'"
        )

    if queue.durable != durable:
        raise refuse("durable", _bool(durable), _bool(queue.durable))
    if queue.auto_delete != auto_delete:
        raise refuse("auto_delete", _bool(auto_delete), _bool(queue.auto_delete))
    compared = (
        QUORUM_ARGUMENTS if isinstance(queue, QuorumQueue)
        else _STREAM_COMPARED_ARGS if isinstance(queue, StreamQueue)
        else _COMPARED_ARGS
    )
    for key in compared:
        new, old = arguments.get(key), queue.arguments.get(key)
        if key == "x-queue-type":  # RabbitMQ 4 declares "classic" when none is given
            new, old = _queue_type(new), _queue_type(old)
        if new != old or type(new) is not type(old):
            if new is None or old is None:
                received = "none" if new is None else _typed_value(arguments, key)
                current = "none" if old is None else _typed_value(queue.arguments, key)
                raise PreconditionFailed(
                    f"inequivalent arg '{key}' for {where}: received {received} but "
                    f"current is {current}"
                )
            raise refuse(key, str(new), str(old))


def _queue_type(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return "classic" if value is None or value == "" else value


def _typed_value(table: Mapping[str, Any], key: str) -> str:
    """RabbitMQ's rendering of a table entry in an inequivalence error."""
    value = table[key]
    shown = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return f"the value '{shown}' of type '{type_name(table, key)}'"


def _bool(value: bool) -> str:
    return "true" if value else "false"
