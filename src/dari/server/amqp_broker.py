"""The AMQP side of a broker: virtual hosts, their queues, users, and durable definitions.

Durable exchanges, bindings and queue declarations of each vhost are kept in one JSON file
(``<data-dir>/.meta/amqp/<vhost>.json``, replaced atomically on every change); durable queues'
messages live in ``<data-dir>/.queues/<vhost>/<queue>`` on the log engine. Transient state is
dropped on restart, as RabbitMQ drops it. Owned by the event loop thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

from dari.queues.dead_letter import REJECTED, headers_of, is_cycle, record_death
from dari.queues.errors import AccessRefused, NotFound, PreconditionFailed, resource
from dari.queues.permissions import FULL, NO_ACCESS, Permissions
from dari.queues.queue import Queue
from dari.queues.queue_store import QueueStore
from dari.queues.values import type_name
from dari.queues.vhost import VirtualHost, decode_table, encode_table
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
    "x-queue-mode",
    "x-single-active-consumer",
)


@dataclass
class User:
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


@dataclass
class VHostState:
    """A vhost's routing model plus the queue objects registered in it."""

    vhost: VirtualHost
    queues: dict[str, Queue] = field(default_factory=dict)


def _typed_value(table: Mapping[str, Any], key: str) -> str:
    """RabbitMQ's rendering of a table entry in an inequivalence error."""
    value = table[key]
    shown = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return f"the value '{shown}' of type '{type_name(table, key)}'"


def _bool(value: bool) -> str:
    return "true" if value else "false"


class AMQPBroker:
    """Vhosts, queues, users and the persistence of durable definitions."""

    def __init__(
        self,
        data_dir: Path,
        flusher: FlushScheduler,
        queue_log_config: LogConfig,
        users: Mapping[str, User],
        vhosts: tuple[str, ...] = ("/",),
        queue_memory_bytes: int = 0,
    ) -> None:
        self.data_dir = data_dir
        self.flusher = flusher
        self.queue_log_config = queue_log_config
        # ready message bytes a queue keeps in memory before paging to a log
        self.queue_memory_bytes = queue_memory_bytes
        self.users = dict(users)
        self.vhosts = {name: VHostState(VirtualHost(name)) for name in vhosts}
        self._meta_dir = data_dir / ".meta" / "amqp"
        self._queue_dir = data_dir / ".queues"
        # Where non-durable queues page out; nothing in it outlives the process.
        self._scratch_dir = data_dir / ".scratch"

    # -- lifecycle ---------------------------------------------------------------------------
    def load(self) -> None:
        """Recover durable queues (their unacked messages), exchanges and bindings."""
        self._meta_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self._scratch_dir, ignore_errors=True)  # transient pages of a past run
        for name, state in self.vhosts.items():
            path = self._meta_path(name)
            if not path.exists():
                continue
            data = json.loads(path.read_text())
            for item in data.get("queues", []):
                queue = self._make_queue(
                    state,
                    item["name"],
                    durable=True,
                    auto_delete=item.get("auto_delete", False),
                    arguments=decode_table(item.get("arguments", {})),
                )
                state.queues[queue.name] = queue
                state.vhost.add_queue(queue)
            skipped = state.vhost.restore(data.get("routing", {}))
            if skipped:
                log.warning("vhost %s: skipped %d bindings to missing queues", name, len(skipped))
            log.info("vhost %s: recovered %d durable queues", name, len(state.queues))

    def close(self) -> None:
        for state in self.vhosts.values():
            for queue in state.queues.values():
                queue.close()

    async def expire_forever(self, interval_s: float = 0.25) -> None:
        """Drop messages whose TTL passed at the head of their queues (and dead-letter them),
        and delete queues left unused for their x-expires period."""
        while True:
            await asyncio.sleep(interval_s)
            now = int(time.time() * 1000)
            for vhost_name, state in self.vhosts.items():
                for queue in list(state.queues.values()):
                    if queue.unused_expired(now):
                        log.debug("queue %s expired (x-expires)", queue.name)
                        self.delete_queue(vhost_name, queue)
                        continue
                    due = queue.next_expiry_ms()
                    if due is not None and due <= now:
                        queue.expire(now)

    def logs(self) -> Iterator[Any]:
        """Every log of every durable queue (for the flush scheduler)."""
        for state in self.vhosts.values():
            for queue in state.queues.values():
                if queue.store is not None:
                    yield from queue.store.logs

    # -- persistence -------------------------------------------------------------------------
    def _meta_path(self, vhost: str) -> Path:
        return self._meta_dir / f"{quote(vhost, safe='')}.json"

    def save(self, vhost_name: str) -> None:
        """Write the vhost's durable definitions (called after every durable change)."""
        state = self.vhosts[vhost_name]
        data = {
            "routing": state.vhost.snapshot(),
            "queues": [
                {
                    "name": q.name,
                    "auto_delete": q.auto_delete,
                    "arguments": encode_table(q.arguments),
                }
                for q in state.queues.values()
                if q.durable and not q.deleted
            ],
        }
        path = self._meta_path(vhost_name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as fh:
            json.dump(data, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    # -- queues ------------------------------------------------------------------------------
    def _store_dir(self, vhost: str, queue: str) -> Path:
        # Queue names may hold any character; a digest keeps directory names safe and short.
        digest = hashlib.sha1(f"{vhost}\0{queue}".encode()).hexdigest()[:16]
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in queue)[:64]
        return self._queue_dir / f"{safe}-{digest}"

    def _make_queue(
        self,
        state: VHostState,
        name: str,
        *,
        durable: bool,
        auto_delete: bool,
        arguments: Mapping[str, Any],
        exclusive_owner: object | None = None,
    ) -> Queue:
        store = None
        if durable:
            store = QueueStore.open(
                self._store_dir(state.vhost.name, name),
                self.queue_log_config,
                flush_scheduler=self.flusher,
            )
        return Queue(
            name,
            durable=durable,
            exclusive_owner=exclusive_owner,
            auto_delete=auto_delete,
            arguments=arguments,
            vhost=state.vhost.name,
            store=store,
            dead_letter=self._dead_letter,
            on_delete=lambda q: self.forget_queue(state.vhost.name, q),
            memory_bytes=self.queue_memory_bytes,
            scratch=None if durable else lambda: self._scratch_store(state.vhost.name, name),
        )

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
        state = self.vhosts[vhost_name]
        generated = not name and not passive
        if generated:
            name = "amq.gen-" + secrets.token_urlsafe(16)
        elif name.startswith("amq.") and not passive:  # even when it exists, as RabbitMQ
            raise AccessRefused(f"queue name '{name}' contains reserved prefix 'amq.*'")
        existing = state.queues.get(name)
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
                self._check_equivalent(existing, durable, auto_delete, arguments)
            existing.touch()  # a declare renews the x-expires lease, passive or not
            return existing
        if passive:
            raise NotFound(f"no {resource('queue', name, vhost_name)}")
        queue = self._make_queue(
            state,
            name,
            durable=durable,
            auto_delete=auto_delete,
            arguments=arguments,
            exclusive_owner=exclusive_owner,
        )
        state.queues[name] = queue
        state.vhost.add_queue(queue)
        if durable:
            self.save(vhost_name)
        return queue

    def _check_equivalent(
        self,
        queue: Queue,
        durable: bool,
        auto_delete: bool,
        arguments: Mapping[str, Any],
    ) -> None:
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
        for key in _COMPARED_ARGS:
            new, old = arguments.get(key), queue.arguments.get(key)
            if new != old or type(new) is not type(old):
                if new is None or old is None:
                    received = "none" if new is None else _typed_value(arguments, key)
                    current = "none" if old is None else _typed_value(queue.arguments, key)
                    raise PreconditionFailed(
                        f"inequivalent arg '{key}' for {where}: received {received} but "
                        f"current is {current}"
                    )
                raise refuse(key, str(new), str(old))

    def get_queue(self, vhost_name: str, name: str) -> Queue:
        queue = self.vhosts[vhost_name].queues.get(name)
        if queue is None or queue.deleted:
            raise NotFound(f"no {resource('queue', name, vhost_name)}")
        return queue

    def delete_queue(self, vhost_name: str, queue: Queue) -> int:
        count = queue.delete()
        self.forget_queue(vhost_name, queue)
        return count

    def forget_queue(self, vhost_name: str, queue: Queue) -> None:
        state = self.vhosts[vhost_name]
        if state.queues.get(queue.name) is queue:
            del state.queues[queue.name]
        state.vhost.remove_queue(queue.name)
        if queue.durable:
            self.save(vhost_name)

    def _dead_letter(self, queue: Queue, message: Any, reason: str) -> None:
        """Republish to the queue's dead-letter exchange (RabbitMQ's DLX) with its x-death
        history updated; the routing key is x-dead-letter-routing-key or the original. A
        fully automatic cycle back into a queue is dropped, as RabbitMQ drops it."""
        state = self.vhosts[queue.vhost]
        exchange = queue.args.dead_letter_exchange
        if exchange is None or state.vhost.get_exchange(exchange) is None:
            return
        dead = record_death(
            message, queue.name, reason, int(time.time()),
            exchange=exchange, routing_key=queue.args.dead_letter_routing_key,
        )
        targets = state.vhost.route(
            exchange, dead.routing_key, headers_of(dead), allow_internal=True
        )
        for target in targets:
            if reason != REJECTED and is_cycle(dead, target.name):
                log.debug("dead-letter cycle into %s: message dropped", target.name)
                continue
            target.publish(dead)  # type: ignore[attr-defined]
