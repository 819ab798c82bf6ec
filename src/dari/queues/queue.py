"""An AMQP queue: ready messages, consumers, unacknowledged deliveries, TTL and length limits.

RabbitMQ's classic-queue semantics, as pika, aio-pika, kombu and Celery expect them: FIFO
delivery round-robin among consumers with prefetch credit (higher ``x-priority`` first), acks by
the queue's own position, requeued messages back *in their original position* with
``redelivered=True``, ``purge`` of ready messages only, auto-delete once the last consumer of a
queue that ever had one is cancelled, per-queue and per-message TTL expiring at the head,
``x-max-length``/``x-max-length-bytes`` with drop-head or reject-publish, and dead-lettering
through a callback the broker provides (``queues.broker``).

A durable queue keeps its persistent messages in a ``QueueStore`` (a log plus an ack log) and
recovers them on construction; transient messages are lost on restart, as in RabbitMQ. Ready
messages are held in memory up to ``memory_bytes`` of bodies (``amqp.queue.memory.bytes``);
beyond that budget new messages are paged out to a log — the durable store, or for a
non-durable queue a scratch store made on first use — and read back in order as the in-memory
head drains. Queues with a length limit or priorities keep every ready message in memory.

Publisher confirms: ``publish`` returns a ``PublishResult``; when its ``offset`` is >= 0 the
message went to the log and the confirm must wait for ``await queue.wait_durable(offset)``
(once, for the largest offset of a batch, is enough). Otherwise it may be confirmed at once.

The channel layer calls ``dispatch()`` after it frees credit (acks, qos changes); ``publish``
and ``requeue`` dispatch by themselves. Owned by the event loop thread; not thread-safe.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from heapq import merge
from operator import itemgetter
from typing import Any, NamedTuple, Protocol

from dari.message import Message
from dari.queues.errors import AccessRefused, PreconditionFailed, ResourceLocked, resource
from dari.queues.priority import PriorityReady
from dari.queues.queue_store import QueueStore
from dari.queues.values import type_name

OVERFLOW_POLICIES = ("drop-head", "reject-publish", "reject-publish-dlx")
# classic: this module's Queue; quorum: queues.quorum.QuorumQueue; stream: queues.stream_queue
QUEUE_TYPES = ("classic", "quorum", "stream")
QUEUE_MODES = ("default", "lazy")
# reasons given to the dead-letter callback (RabbitMQ's x-death "reason")
EXPIRED, MAXLEN, REJECTED = "expired", "maxlen", "rejected"

DeadLetter = Callable[["Queue", Message, str], None]
_SEQ = itemgetter(0)
# A ready entry: (position, message, enqueued_ms, expires_ms or None, redelivered).
_Entry = tuple[int, Message, int, int | None, bool]


class PublishResult(NamedTuple):
    """What became of a published message.

    ``accepted`` is False when the queue refused it (x-overflow=reject-publish at its limit,
    or the queue is deleted): the channel nacks it under confirms. ``offset`` >= 0 means the
    confirm must wait for ``Queue.wait_durable(offset)``.
    """

    accepted: bool
    offset: int = -1


_ACCEPTED = PublishResult(True)
_REFUSED = PublishResult(False)


class Delivery(NamedTuple):
    """One message handed out by a queue (to a consumer, or to basic.get).

    ``position`` identifies the message in its queue for ack/nack/requeue; ``redelivered``
    is the AMQP flag; ``consumer_tag`` is None for basic.get. ``enqueued_ms`` and
    ``expires_ms`` (None = never) travel along so a requeued message keeps its TTL deadline.
    """

    message: Message
    queue: Queue
    position: int
    redelivered: bool
    consumer_tag: str | None
    enqueued_ms: int
    expires_ms: int | None


class Consumer(Protocol):
    """What a queue needs of a consumer (basic.consume)."""

    tag: str
    no_ack: bool
    priority: int  # x-priority: higher-priority consumers with credit are served first
    exclusive: bool

    def room(self) -> int:
        """How many more deliveries fit in the consumer's prefetch window now (0 when full
        or the channel is flow-blocked; ``consumers.UNLIMITED`` when nothing limits it)."""
        ...

    def deliver_many(self, deliveries: list[Delivery]) -> None:
        """Take deliveries (at most ``room()``), in order. Called synchronously by
        ``Queue.dispatch``; the channel encodes the frames and writes them once per
        event-loop turn."""
        ...

    def cancelled(self) -> None:
        """The queue went away (deleted): the channel sends basic.cancel if the client
        supports consumer_cancel_notify."""
        ...


@dataclass(frozen=True, slots=True)
class QueueArguments:
    """The x-arguments a queue acts on, validated as RabbitMQ does on declare."""

    message_ttl: int | None = None
    max_length: int | None = None
    max_length_bytes: int | None = None
    overflow: str = "drop-head"
    dead_letter_exchange: str | None = None
    dead_letter_routing_key: str | None = None
    expires: int | None = None
    max_priority: int | None = None
    single_active_consumer: bool = False
    queue_type: str = "classic"

    @classmethod
    def parse(
        cls, arguments: Mapping[str, Any] | None, queue: str = "", vhost: str = "/"
    ) -> QueueArguments:
        """Validate ``arguments`` in RabbitMQ's order (``rabbit_amqqueue:declare_args``); a bad
        value raises PreconditionFailed (406) worded as RabbitMQ words it, e.g. ``invalid arg
        'x-max-length' for queue 'q' in vhost '/': {value_negative,-1}``."""
        table = arguments or {}
        where = resource("queue", queue, vhost)

        def bad(key: str, reason: str) -> PreconditionFailed:
            return PreconditionFailed(f"invalid arg '{key}' for {where}: {reason}")

        def integer(key: str, minimum: int, maximum: int | None = None) -> int | None:
            value = table.get(key)
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, int):
                raise bad(key, f'"expected integer, got {type_name(table, key)}"')
            if value < minimum:
                raise bad(key, f"{{{'value_zero' if value == 0 else 'value_negative'},{value}}}")
            if maximum is not None and value > maximum:
                raise bad(key, f"{{max_value_exceeded,{value}}}")
            return value

        def text(key: str) -> str | None:
            value = table.get(key)
            if value is None:
                return None
            if isinstance(value, bytes):
                return value.decode("utf-8", "surrogateescape")
            if not isinstance(value, str):
                raise bad(key, f"{{unacceptable_type,{type_name(table, key)}}}")
            return value

        queue_type = text("x-queue-type") or "classic"  # checked first, as RabbitMQ does
        if queue_type not in QUEUE_TYPES:
            raise bad("x-queue-type", f"\"unsupported queue type '{queue_type}'\"")
        expires = integer("x-expires", 1)
        message_ttl = integer("x-message-ttl", 0)
        dlx = table.get("x-dead-letter-exchange")
        if dlx is not None and not isinstance(dlx, str | bytes):
            raise PreconditionFailed(
                f"invalid type '{type_name(table, 'x-dead-letter-exchange')}' for arg "
                f"'x-dead-letter-exchange' in {where}"
            )
        dlx = text("x-dead-letter-exchange")
        dlrk = text("x-dead-letter-routing-key")
        if dlrk is not None and dlx is None:
            raise bad("x-dead-letter-routing-key", "routing_key_but_no_dlx_defined")
        max_length = integer("x-max-length", 0)
        max_length_bytes = integer("x-max-length-bytes", 0)
        max_priority = integer("x-max-priority", 0, 255)
        overflow = text("x-overflow") or "drop-head"
        if overflow not in OVERFLOW_POLICIES:
            raise bad("x-overflow", "invalid_overflow")
        mode = text("x-queue-mode")
        if mode is not None and mode not in QUEUE_MODES:
            raise bad("x-queue-mode", f"\"unsupported queue mode '{mode}'\"")
        sac = table.get("x-single-active-consumer", False)
        if not isinstance(sac, bool):
            raise bad(
                "x-single-active-consumer",
                f"{{unacceptable_type,{type_name(table, 'x-single-active-consumer')}}}",
            )
        return cls(
            message_ttl=message_ttl,
            max_length=max_length,
            max_length_bytes=max_length_bytes,
            overflow=overflow,
            dead_letter_exchange=dlx,
            dead_letter_routing_key=dlrk,
            expires=expires,
            max_priority=max_priority,
            single_active_consumer=sac,
            queue_type=queue_type,
        )


class _Group:
    """Consumers of one x-priority, served round-robin."""

    __slots__ = ("members", "next", "priority")

    def __init__(self, priority: int) -> None:
        self.priority = priority
        self.members: list[Consumer] = []
        self.next = 0


class Queue:
    """One AMQP queue; see the module docstring."""

    # True: transient messages are stored (and recovered) like persistent ones (quorum queues)
    persists_all = False

    def __init__(
        self,
        name: str,
        *,
        durable: bool = False,
        exclusive_owner: object | None = None,
        auto_delete: bool = False,
        arguments: Mapping[str, Any] | None = None,
        vhost: str = "/",
        store: QueueStore | None = None,
        clock: Callable[[], float] = time.time,
        dead_letter: DeadLetter | None = None,
        on_delete: Callable[[Queue], None] | None = None,
        memory_bytes: int = 0,
        scratch: Callable[[], QueueStore] | None = None,
    ) -> None:
        self.name = name
        self.durable = durable
        self.exclusive_owner = exclusive_owner
        self.auto_delete = auto_delete
        # A decoded field table is kept as is: it remembers wire types for error texts.
        self.arguments: Mapping[str, Any] = (
            arguments if hasattr(arguments, "typed") else dict(arguments or {})
        )
        self.vhost = vhost
        self.args = QueueArguments.parse(self.arguments, name, vhost)
        self._limited = self.args.max_length is not None or self.args.max_length_bytes is not None
        self.store = store
        self.dead_letter = dead_letter
        self.on_delete = on_delete
        self._clock = clock
        self._ready: deque[_Entry] | PriorityReady = (
            PriorityReady(self.args.max_priority) if self.args.max_priority else deque()
        )
        self._ready_bytes = 0  # bodies of the ready messages held in memory
        # Paging (queues without length limits or priorities): beyond memory_bytes of ready
        # bodies, new messages live only in a log from offset _paged_from on (-1: not paging)
        # and are read back in order as the in-memory head drains. The log is the durable
        # store, or for a non-durable queue a scratch store made by ``scratch`` on first use.
        # ``_log`` is whichever holds messages with an offset (acks go there).
        self._log = store
        self._scratch = scratch if store is None else None
        pageable = (store is not None or scratch is not None) and not self._limited
        self._memory_bytes = memory_bytes if pageable and not self.args.max_priority else 0
        self._paged_from = -1
        self._paged_count = 0
        self._paged_bytes = 0
        self._unacked: dict[int, Delivery] = {}
        self._groups: list[_Group] = []
        self._arrivals: list[Consumer] = []  # in registration order (single active consumer)
        self._consumer_count = 0
        self._exclusive_consumer: Consumer | None = None
        self._had_consumer = False
        self._dispatching = False
        self._next_position = 0
        self.deleted = False
        self.recovered = 0  # messages recovered from the store
        self.last_used_ms = int(clock() * 1000)  # for x-expires; see touch()
        if store is not None:
            self._recover(store)

    # ---- properties -----------------------------------------------------------------------------

    @property
    def exclusive(self) -> bool:
        return self.exclusive_owner is not None

    @property
    def message_count(self) -> int:
        """Ready messages (queue.declare-ok / queue.delete-ok counts); expires the head
        first so expired messages are not counted."""
        if self._ready and self._ready[0][3] is not None:
            self.expire()
        return len(self._ready) + self._paged_count

    @property
    def ready_bytes(self) -> int:
        return self._ready_bytes + self._paged_bytes

    @property
    def paged_count(self) -> int:
        """Ready messages that are only in the log, not in memory."""
        return self._paged_count

    @property
    def unacked_count(self) -> int:
        return len(self._unacked)

    @property
    def consumer_count(self) -> int:
        return self._consumer_count

    @property
    def consumers(self) -> list[Consumer]:
        return [c for g in self._groups for c in g.members]

    def touch(self) -> None:
        """Renew the x-expires lease: declare, basic.get, consume and cancel do, as in
        RabbitMQ (publishing does not)."""
        self.last_used_ms = int(self._clock() * 1000)

    def unused_expired(self, now_ms: int) -> bool:
        """True once an x-expires queue has had no consumer and no use for its period."""
        expires = self.args.expires
        return (
            expires is not None
            and not self._consumer_count
            and now_ms - self.last_used_ms >= expires
        )

    def check_exclusive(self, owner: object) -> None:
        """405 RESOURCE_LOCKED unless ``owner`` (a connection) may use this queue."""
        if self.exclusive_owner is not None and self.exclusive_owner is not owner:
            raise ResourceLocked(
                f"cannot obtain exclusive access to locked "
                f"{resource('queue', self.name, self.vhost)}. It could be originally declared "
                "on another connection or the exclusive property value does not match that "
                "of the original declaration."
            )

    # ---- publish --------------------------------------------------------------------------------

    def publish(self, message: Message, dispatch: bool = True) -> PublishResult:
        """Enqueue ``message`` (then dispatch, then apply length limits and TTL).

        ``dispatch=False`` lets a caller that publishes a batch (a socket read's worth)
        dispatch once at its end, so a consumer gets the batch in one piece; the queue still
        dispatches at once where a length limit or a TTL depends on it."""
        if self.deleted:
            return _REFUSED
        args = self.args
        limited = self._limited
        if limited and args.overflow != "drop-head" and self._over_limit_with(message):
            if args.overflow == "reject-publish-dlx":
                self._dead_letter(message, MAXLEN)
            return _REFUSED
        now = int(self._clock() * 1000)
        if self._memory_bytes and (
            self._paged_from >= 0 or self._ready_bytes + len(message.body) > self._memory_bytes
        ):
            result = self._page_out(message, now)
            if dispatch and self._consumer_count:
                self.dispatch()
            return result
        offset = -1
        if self.store is not None and (message.delivery_mode == 2 or self.persists_all):
            offset = self.store.append(message, now)
            message = message.with_offset(offset)
        position = self._next_position
        self._next_position = position + 1
        expires = _expiry(message, now, args.message_ttl)
        self._ready.append((position, message, now, expires, False))
        self._ready_bytes += len(message.body)
        if self._consumer_count and (dispatch or limited or expires is not None):
            self.dispatch()
        if limited:
            self._drop_over_limit()
        if expires is not None:
            self.expire(now)
        return _ACCEPTED if offset < 0 else PublishResult(True, offset)

    def _page_out(self, message: Message, now: int) -> PublishResult:
        """Append ``message`` to the log only (transient ones too: recovery drops those)."""
        log = self._log
        if log is None:
            assert self._scratch is not None
            log = self._log = self._scratch()
        offset = log.append(message, now)
        if self._paged_from < 0:
            self._paged_from = offset
        self._paged_count += 1
        self._paged_bytes += len(message.body)
        durable = self.store is not None and (message.delivery_mode == 2 or self.persists_all)
        return PublishResult(True, offset) if durable else _ACCEPTED

    def _page_in(self) -> None:
        """Read paged-out messages back into memory, in log order, up to the memory budget;
        called when the in-memory head runs below half of it."""
        store = self._log
        if self._paged_from < 0 or store is None or self._ready_bytes > self._memory_bytes // 2:
            return
        room = self._memory_bytes - self._ready_bytes
        ready = self._ready
        ttl = self.args.message_ttl
        next_deliver = store.next_deliver
        for timestamp, message in store.iter_unacked(self._paged_from):
            size = len(message.body)
            if size > room and self._ready_bytes:
                break  # (one message is always taken, however large)
            expires = _expiry(message, timestamp, ttl)
            redelivered = message.offset < next_deliver
            ready.append((self._next_position, message, timestamp, expires, redelivered))
            self._next_position += 1
            self._paged_from = message.offset + 1
            self._paged_count -= 1
            self._paged_bytes -= size
            self._ready_bytes += size
            room -= size
        else:  # the whole paged-out tail is back in memory
            self._paged_from, self._paged_count, self._paged_bytes = -1, 0, 0

    def _over_limit_with(self, message: Message) -> bool:
        args = self.args
        if args.max_length is not None and len(self._ready) + 1 > args.max_length:
            return True
        limit = args.max_length_bytes
        return limit is not None and self._ready_bytes + len(message.body) > limit

    def _drop_over_limit(self) -> None:
        max_length = self.args.max_length
        max_bytes = self.args.max_length_bytes
        ready = self._ready
        while ready and (
            (max_length is not None and len(ready) > max_length)
            or (max_bytes is not None and self._ready_bytes > max_bytes)
        ):
            entry = ready.popleft()
            self._ready_bytes -= len(entry[1].body)
            self._discard(entry[1], MAXLEN)

    async def wait_durable(self, offset: int) -> None:
        """Wait until the message at ``offset`` (and all before it) is durable per the log's
        flush policy; see PublishResult."""
        if self.store is not None and offset >= 0:
            await self.store.wait_durable(offset + 1)

    def flush(self) -> None:
        """Write this turn's buffered publishes and acks now (done automatically at the end of
        the turn when an event loop runs)."""
        if self._log is not None:
            self._log.flush_pending()

    # ---- consumers ------------------------------------------------------------------------------

    def add_consumer(self, consumer: Consumer) -> None:
        """basic.consume: 403 if an exclusive consumer is in the way; then dispatch."""
        if self._exclusive_consumer is not None or (consumer.exclusive and self._consumer_count):
            raise AccessRefused(f"{resource('queue', self.name, self.vhost)} in exclusive use")
        priority = getattr(consumer, "priority", 0) or 0
        for group in self._groups:
            if group.priority == priority:
                break
        else:
            group = _Group(priority)
            self._groups.append(group)
            self._groups.sort(key=lambda g: -g.priority)
        group.members.append(consumer)
        self._arrivals.append(consumer)
        self._consumer_count += 1
        self._had_consumer = True
        self.touch()
        if consumer.exclusive:
            self._exclusive_consumer = consumer
        self.dispatch()

    def cancel_consumer(self, consumer: Consumer | str) -> Consumer | None:
        """basic.cancel (by consumer object, or by tag when tags are unique on this queue).

        Unacknowledged deliveries stay outstanding. Auto-deletes the queue when its last
        consumer goes (``deleted`` becomes True and ``on_delete`` is called)."""
        found: Consumer | None = None
        for group in self._groups:
            for i, member in enumerate(group.members):
                if member is consumer or (isinstance(consumer, str) and member.tag == consumer):
                    found = member
                    del group.members[i]
                    if group.next > i:
                        group.next -= 1
                    break
            if found is not None:
                if not group.members:
                    self._groups.remove(group)
                break
        if found is None:
            return None
        self._arrivals.remove(found)
        self._consumer_count -= 1
        self.touch()
        if self._exclusive_consumer is found:
            self._exclusive_consumer = None
        if self.auto_delete and self._consumer_count == 0 and self._had_consumer:
            self.delete()
            if self.on_delete is not None:
                self.on_delete(self)
        return found

    def _pick(self) -> tuple[Consumer, int] | None:
        """The next consumer with credit and how many deliveries it may take in a row:
        highest priority first, round-robin within a priority — so one at a time when it
        shares its priority with others, as many as its window allows when it is alone.

        With x-single-active-consumer only the earliest registered consumer gets messages;
        when it goes, the next one in registration order takes over (RabbitMQ's classic
        queues)."""
        if self.args.single_active_consumer:
            active = self._arrivals[0] if self._arrivals else None
            room = active.room() if active is not None else 0
            return (active, room) if active is not None and room > 0 else None
        for group in self._groups:
            members = group.members
            count = len(members)
            start = group.next
            for i in range(count):
                index = (start + i) % count
                consumer = members[index]
                room = consumer.room()
                if room > 0:
                    group.next = (index + 1) % count
                    return consumer, (room if count == 1 else 1)
        return None

    def dispatch(self) -> int:
        """Deliver ready messages to consumers while any has credit; returns how many."""
        ready = self._ready
        if self._paged_from >= 0:
            self._page_in()
        if not ready or not self._consumer_count or self._dispatching:
            return 0
        self._dispatching = True  # a delivery callback may ack, requeue or cancel
        try:
            now: int | None = None
            store = self._log
            unacked = self._unacked
            popleft = ready.popleft
            delivered = 0
            while ready:
                picked = self._pick()
                if picked is None:
                    break
                consumer, room = picked
                tag = consumer.tag
                no_ack = consumer.no_ack
                batch: list[Delivery] = []
                size = 0
                for _ in range(min(room, len(ready))):
                    position, message, enqueued, expires, redelivered = popleft()
                    size += len(message.body)
                    if expires is not None:
                        if now is None:
                            now = int(self._clock() * 1000)
                        if expires < now:  # a deadline of "now" (TTL 0) may still go out
                            self._ready_bytes -= size
                            size = 0
                            self._discard(message, EXPIRED)
                            continue
                    delivery = Delivery(
                        message, self, position, redelivered, tag, enqueued, expires
                    )
                    if no_ack:
                        if store is not None and message.offset >= 0:
                            store.ack(message.offset)
                    else:
                        unacked[position] = delivery
                    batch.append(delivery)
                self._ready_bytes -= size
                if batch:
                    consumer.deliver_many(batch)
                    delivered += len(batch)
                if self._paged_from >= 0:
                    self._page_in()
            return delivered
        finally:
            self._dispatching = False

    # ---- basic.get ------------------------------------------------------------------------------

    def get(self, no_ack: bool = False) -> Delivery | None:
        """basic.get: the head message, or None when the queue is empty (get-empty)."""
        self.touch()
        ready = self._ready
        if self._paged_from >= 0:
            self._page_in()
        if ready and ready[0][3] is not None:
            self.expire()
        if not ready:
            return None
        position, message, enqueued, expires, redelivered = ready.popleft()
        self._ready_bytes -= len(message.body)
        delivery = Delivery(message, self, position, redelivered, None, enqueued, expires)
        if no_ack:
            self._settle(message)
        else:
            self._unacked[position] = delivery
        return delivery

    # ---- acks -----------------------------------------------------------------------------------

    def ack(self, delivery: Delivery) -> bool:
        """basic.ack of one delivery; False if it was not outstanding (already settled)."""
        if self._unacked.pop(delivery.position, None) is None:
            return False
        message = delivery.message
        if message.offset >= 0 and self._log is not None:
            self._log.ack(message.offset)
        return True

    def ack_many(self, deliveries: Iterable[Delivery]) -> int:
        """basic.ack multiple=true; returns how many were outstanding."""
        unacked = self._unacked
        offsets: list[int] = []
        count = 0
        for delivery in deliveries:
            if unacked.pop(delivery.position, None) is None:
                continue
            count += 1
            if delivery.message.offset >= 0:
                offsets.append(delivery.message.offset)
        if offsets and self._log is not None:
            self._log.ack_many(offsets)
        return count

    def reject(self, delivery: Delivery, requeue: bool) -> bool:
        """basic.reject / basic.nack of one delivery: back in place, or discarded (and
        dead-lettered with reason "rejected" when the queue has a DLX)."""
        if requeue:
            return self.requeue_all((delivery,)) == 1
        if self._unacked.pop(delivery.position, None) is None:
            return False
        self._discard(delivery.message, REJECTED)
        return True

    nack = reject

    def requeue_all(self, deliveries: Iterable[Delivery]) -> int:
        """Put outstanding deliveries back at their original positions, flagged redelivered
        (channel close, connection loss, basic.recover, nack with requeue); then dispatch.

        On channel close, cancel the channel's consumers first so requeued messages do not
        go straight back to them."""
        unacked = self._unacked
        entries: list[_Entry] = []
        for d in deliveries:
            if unacked.pop(d.position, None) is None:
                continue
            entries.append((d.position, d.message, d.enqueued_ms, d.expires_ms, True))
            self._ready_bytes += len(d.message.body)
        if not entries:
            return 0
        entries.sort(key=_SEQ)
        ready = self._ready
        last = entries[-1][0]
        head: list[_Entry] = []
        while ready and ready[0][0] < last:
            head.append(ready.popleft())
        combined = list(merge(head, entries, key=_SEQ)) if head else entries
        ready.extendleft(reversed(combined))
        self.dispatch()
        return len(entries)

    def return_all(self, deliveries: Iterable[Delivery]) -> int:
        """Deliveries handed back without a failure (basic.nack with requeue, basic.recover):
        a classic queue requeues them as ``requeue_all`` does; a quorum queue does not count
        them as failed deliveries."""
        return self.requeue_all(deliveries)

    @property
    def unacked(self) -> list[Delivery]:
        return list(self._unacked.values())

    # ---- expiry, purge, delete -------------------------------------------------------------------

    def expire(self, now_ms: int | None = None) -> int:
        """Drop (and dead-letter) expired messages at the head; returns how many."""
        ready = self._ready
        if not ready or ready[0][3] is None:
            return 0
        now = int(self._clock() * 1000) if now_ms is None else now_ms
        dropped = 0
        while ready:
            expires = ready[0][3]
            if expires is None or expires > now:
                break
            entry = ready.popleft()
            self._ready_bytes -= len(entry[1].body)
            self._discard(entry[1], EXPIRED)
            dropped += 1
            if not ready and self._paged_from >= 0:
                self._page_in()
        return dropped

    def next_expiry_ms(self) -> int | None:
        """When the head message expires (for the server's timer), or None."""
        return self._ready[0][3] if self._ready else None

    def purge(self) -> int:
        """queue.purge: drop every ready message (not the unacknowledged ones)."""
        ready = self._ready
        count = len(ready) + self._paged_count
        if self._log is not None:
            offsets = [e[1].offset for e in ready if e[1].offset >= 0]
            if offsets:
                self._log.ack_many(offsets)
            if self._paged_from >= 0:
                self._log.ack_range(self._paged_from, self._log.next_offset)
        ready.clear()
        self._ready_bytes = 0
        self._paged_from, self._paged_count, self._paged_bytes = -1, 0, 0
        return count

    def delete(self) -> int:
        """queue.delete: returns the ready message count. Consumers get ``cancelled()``; a
        durable store's files are removed. ``on_delete`` is called only for auto-delete."""
        if self.deleted:
            return 0
        count = len(self._ready) + self._paged_count
        self._paged_from, self._paged_count, self._paged_bytes = -1, 0, 0
        self.deleted = True
        consumers = self.consumers
        self._groups = []
        self._consumer_count = 0
        self._exclusive_consumer = None
        self._ready.clear()
        self._ready_bytes = 0
        self._unacked.clear()
        if self._log is not None:
            self._log.delete()
        for consumer in consumers:
            consumer.cancelled()
        return count

    def close(self) -> None:
        """Broker shutdown: persist everything and close the store cleanly (the next start
        knows exactly which recovered messages had been delivered). A scratch store goes."""
        if self.deleted:
            return
        if self.store is None:
            if self._log is not None:
                self._log.delete()
            return
        next_deliver = self.store.next_offset if self._paged_from < 0 else self._paged_from
        for _position, message, _enq, _exp, redelivered in self._ready:
            if message.offset >= 0 and not redelivered:
                next_deliver = min(next_deliver, message.offset)
                break
        self.store.close(next_deliver)

    # ---- internals ------------------------------------------------------------------------------

    def _settle(self, message: Message) -> None:
        if message.offset >= 0 and self._log is not None:
            self._log.ack(message.offset)

    def _discard(self, message: Message, reason: str) -> None:
        self._dead_letter(message, reason)
        self._settle(message)

    def _dead_letter(self, message: Message, reason: str) -> None:
        if self.dead_letter is not None and self.args.dead_letter_exchange is not None:
            self.dead_letter(self, message, reason)

    def _recover(self, store: QueueStore) -> None:
        """The unacknowledged persistent messages, in log order: in memory up to the memory
        budget, the rest left paged out in the log. Transient messages written while paging
        are dropped (acknowledged), as RabbitMQ drops transient messages on restart."""
        ttl = self.args.message_ttl
        next_deliver = store.next_deliver
        ready = self._ready
        budget = self._memory_bytes
        transient: list[int] = []
        for timestamp, message in store.iter_unacked():
            if message.delivery_mode != 2 and not self.persists_all:
                transient.append(message.offset)
                continue
            size = len(message.body)
            if budget and (self._paged_from >= 0 or self._ready_bytes + size > budget):
                if self._paged_from < 0:
                    self._paged_from = message.offset
                self._paged_count += 1
                self._paged_bytes += size
                continue
            expires = _expiry(message, timestamp, ttl)
            position = self._next_position
            self._next_position += 1
            ready.append((position, message, timestamp, expires, message.offset < next_deliver))
            self._ready_bytes += size
        if transient:
            store.ack_many(transient)
            store.flush_pending()
        self.recovered = len(ready) + self._paged_count

    def __repr__(self) -> str:
        return (
            f"Queue({self.name!r}, ready={len(self._ready)}, unacked={len(self._unacked)}, "
            f"consumers={self._consumer_count})"
        )


def _expiry(message: Message, enqueued_ms: int, ttl: int | None) -> int | None:
    """When a message enqueued at ``enqueued_ms`` expires: the queue's TTL or its own
    expiration, whichever is shorter (None: never)."""
    limit = ttl
    if message.expiration is not None:
        per_message = message.ttl_ms()
        if per_message is not None and (limit is None or per_message < limit):
            limit = per_message
    return None if limit is None else enqueued_ms + limit


def requeue(deliveries: Iterable[Delivery], failed: bool = True) -> int:
    """Requeue deliveries that may come from several queues (a closing channel's unacked).

    ``failed`` (basic.reject, a closed channel) marks them as failed deliveries, which quorum
    queues count against their delivery limit; basic.nack and basic.recover pass False."""
    by_queue: dict[int, tuple[Queue, list[Delivery]]] = {}
    for d in deliveries:
        by_queue.setdefault(id(d.queue), (d.queue, []))[1].append(d)
    if failed:
        return sum(queue.requeue_all(items) for queue, items in by_queue.values())
    # a queue kind without return_all (streams) requeues both alike
    return sum(
        getattr(queue, "return_all", queue.requeue_all)(items)
        for queue, items in by_queue.values()
    )
