"""One AMQP channel: the methods of the exchange, queue, basic, confirm and tx classes.

A channel turns client methods into calls on the vhost and its queues, assigns delivery tags,
keeps the unacknowledged deliveries (in tag order, so ``multiple`` acks and requeues on close
are ordered), applies both of RabbitMQ's qos modes, and sends publisher confirms once messages
are stored per the flush policy — one ``ack multiple`` per event-loop turn, in order.
Owned by the event loop thread.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pamqp import commands

from dari.message import Message, parse_properties
from dari.protocol.amqp import (
    Ack,
    AMQPError,
    ContentHeader,
    DeliverEncoder,
    LocalProtocolError,
    Nack,
    Publish,
    Reject,
    ReplyCode,
)
from dari.queues.consumers import Credit, Delivery, PrefetchConsumer
from dari.queues.errors import NotFound, PreconditionFailed, QueuesError, resource
from dari.queues.exchanges import exchange_type
from dari.queues.permissions import (
    CONFIGURE,
    NO_ACCESS,
    READ,
    WRITE,
    Permissions,
    check_name,
    refusal,
)
from dari.queues.queue import Queue, requeue
from dari.queues.sender_selected import may_route_by_headers, routing_headers

if TYPE_CHECKING:
    from dari.queues.broker import AMQPBroker
    from dari.server.amqp import AMQPServerConnection

_PUBLISH, _ACK, _REJECT, _NACK = (60, 40), (60, 80), (60, 90), (60, 120)
_WRITABLE_CACHE_SIZE = 1024  # exchanges a channel remembers it may publish to


class _LazyHeaders(dict):  # type: ignore[type-arg]
    """Message headers decoded only if a headers exchange asks for them."""

    __slots__ = ("_header", "_loaded")

    def __init__(self, header: ContentHeader) -> None:
        super().__init__()
        self._header = header
        self._loaded = False

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            headers = self._header.headers
            if headers:
                super().update(headers)

    def __getitem__(self, key: Any) -> Any:
        self._load()
        return super().__getitem__(key)

    def get(self, key: Any, default: Any = None) -> Any:
        self._load()
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        self._load()
        return super().__contains__(key)

    def __iter__(self) -> Any:
        self._load()
        return super().__iter__()

    def __len__(self) -> int:
        self._load()
        return super().__len__()

    def items(self) -> Any:
        self._load()
        return super().items()

    def keys(self) -> Any:
        self._load()
        return super().keys()


# Methods where an empty queue name means the channel's last declared queue.
_QUEUE_NAME_SHORTCUT = frozenset({
    commands.Queue.Bind, commands.Queue.Unbind, commands.Queue.Purge, commands.Queue.Delete,
    commands.Basic.Consume, commands.Basic.Get,
})


def _where(method: Any) -> tuple[int, int]:
    index = getattr(method, "index", 0)
    return index >> 16, index & 0xFFFF


class Channel:
    """State of one open channel of one connection."""

    def __init__(self, connection: AMQPServerConnection, number: int) -> None:
        self.connection = connection
        self.conn = connection.conn
        self.number = number
        self.consumers: dict[str, tuple[PrefetchConsumer, Queue]] = {}
        self.unacked: dict[int, tuple[Delivery, PrefetchConsumer | None]] = {}
        self.next_tag = 1
        self.prefetch_count = 0  # basic.qos global=false: for consumers created afterwards
        self.channel_credit = Credit(0)  # basic.qos global=true: shared by the channel
        self.flow_active = True
        # publisher confirms
        self.confirm = False
        self.publish_seq = 0
        self._turn_waits: dict[int, tuple[Queue, int]] = {}
        self._turn_nacks: list[int] = []
        self._turn_seq = 0
        self._confirms: deque[tuple[int, list[int], asyncio.Task[None] | None]] = deque()
        self._acked_upto = 0
        # transactions
        self.tx = False
        self._tx_publishes: list[tuple[Publish, ContentHeader, bytes]] = []
        self._tx_acks: list[Any] = []
        self._dirty_queues: dict[int, Queue] = {}
        self.closed = False
        self._vhost: Any = None
        self._last_queue = ""  # the queue last declared here, for the empty-name shortcut
        self._perms: Permissions | None = None  # the user's patterns in this vhost, looked up once
        self._writable: set[str] = set()  # exchanges already checked for write on this channel
        self._handlers: dict[type, Callable[[Any], None]] = {
            Ack: self._basic_ack,
            Nack: self._basic_nack,
            Reject: self._basic_reject,
            commands.Basic.Qos: self._basic_qos,
            commands.Basic.Consume: self._basic_consume,
            commands.Basic.Cancel: self._basic_cancel,
            commands.Basic.Get: self._basic_get,
            commands.Basic.Recover: self._basic_recover,
            commands.Basic.RecoverAsync: self._basic_recover,
            commands.Exchange.Declare: self._exchange_declare,
            commands.Exchange.Delete: self._exchange_delete,
            commands.Exchange.Bind: self._exchange_bind,
            commands.Exchange.Unbind: self._exchange_unbind,
            commands.Queue.Declare: self._queue_declare,
            commands.Queue.Bind: self._queue_bind,
            commands.Queue.Unbind: self._queue_unbind,
            commands.Queue.Purge: self._queue_purge,
            commands.Queue.Delete: self._queue_delete,
            commands.Confirm.Select: self._confirm_select,
            commands.Tx.Select: self._tx_select,
            commands.Tx.Commit: self._tx_commit,
            commands.Tx.Rollback: self._tx_rollback,
            commands.Channel.Flow: self._channel_flow,
            commands.Channel.FlowOk: lambda _m: None,
        }

    # -- plumbing --------------------------------------------------------------------------
    @property
    def broker(self) -> AMQPBroker:
        return self.connection.broker

    @property
    def vhost_name(self) -> str:
        assert self.connection.vhost is not None
        return self.connection.vhost

    @property
    def vhost(self) -> Any:
        return self._vhost or self._bind_vhost()

    def _bind_vhost(self) -> Any:
        """The connection's vhost never changes once open: look it up once."""
        self._vhost = self.broker.vhosts[self.vhost_name].vhost
        return self._vhost

    def _send(self, method: Any) -> None:
        self.connection.write(self.conn.send_method(self.number, method))

    def _error(self, code: int, text: str, where: tuple[int, int]) -> AMQPError:
        return AMQPError(code, text, class_id=where[0], method_id=where[1], channel=self.number)

    def _domain_error(self, exc: QueuesError, where: tuple[int, int]) -> AMQPError:
        return AMQPError(
            exc.reply_code,
            exc.reply_text,
            class_id=where[0],
            method_id=where[1],
            channel=self.number,
            connection_level=exc.connection_level,
        )

    def on_method(self, method: Any) -> None:
        handler = self._handlers.get(type(method))
        if handler is None:
            raise self._error(
                ReplyCode.NOT_IMPLEMENTED, f"method {method.name} is not implemented",
                _where(method),
            )
        try:
            if type(method) in _QUEUE_NAME_SHORTCUT and not method.queue:
                self._expand_queue_name(method)
            handler(method)
        except QueuesError as exc:
            raise self._domain_error(exc, _where(method)) from None

    # -- access control --------------------------------------------------------------------
    def _restricted(self) -> Permissions | None:
        """The user's patterns in this vhost, or None when all three are ``.*`` (no checks)."""
        perms = self._perms
        if perms is None:
            user = self.broker.users.get(self.connection.user or "")
            perms = self._perms = user.permissions_in(self.vhost_name) if user else NO_ACCESS
        return None if perms.unrestricted else perms

    def _permit(self, permission: str, kind: str, name: str) -> None:
        """RabbitMQ's check_resource_access: 403 ACCESS_REFUSED unless the pattern matches."""
        perms = self._restricted()
        if perms is None or perms.allows(permission, check_name(kind, name)):
            return
        raise refusal(permission, kind, name, self.vhost_name, self.connection.user or "")

    def _permit_queue(self, permission: str, name: str) -> None:
        """A check on a named queue (dari has no ``""`` shortcut for the last declared one:
        that name gets the 404 it would otherwise get)."""
        if name:
            self._permit(permission, "queue", name)

    def _permit_passive(self, kind: str, name: str) -> None:
        """Passive declares need any permission (RabbitMQ >= 4.2.7); refused as configure."""
        perms = self._restricted()
        if perms is not None and not perms.allows_any(check_name(kind, name)):
            raise refusal(CONFIGURE, kind, name, self.vhost_name, self.connection.user or "")

    def _permit_write(self, exchange: str) -> None:
        """The first publish to ``exchange`` on this channel: write permission, then cached."""
        try:
            self._permit(WRITE, "exchange", exchange)
        except QueuesError as exc:
            raise self._domain_error(exc, _PUBLISH) from None
        if len(self._writable) >= _WRITABLE_CACHE_SIZE:
            self._writable.clear()
        self._writable.add(exchange)

    def _permit_exchange_declare(self, method: Any) -> None:
        """In RabbitMQ's order: type (406), default exchange (403, left to the vhost),
        configure, then for a new exchange with an alternate exchange: read here, write there."""
        name = method.exchange
        if self._restricted() is None or not name:
            return
        if method.passive:
            self._permit_passive("exchange", name)
            return
        exchange_type(method.exchange_type)
        self._permit(CONFIGURE, "exchange", name)
        ae = (method.arguments or {}).get("alternate-exchange")
        new = self.vhost.get_exchange(name) is None and not name.startswith("amq.")
        if new and isinstance(ae, str):
            self._permit(READ, "exchange", name)
            self._permit(WRITE, "exchange", ae)

    def _permit_queue_declare(self, method: Any) -> None:
        """Configure on the queue (a server-named one is checked under a fresh ``amq.gen-``
        name: the name it gets is as random); for a new queue with a dead-letter exchange,
        read on the queue and write on that exchange. A reserved ``amq.`` name is refused first.
        """
        if self._restricted() is None:
            return
        name = method.queue
        if method.passive:
            self._permit_passive("queue", name)
            return
        if name.startswith("amq."):
            return
        name = name or "amq.gen-" + secrets.token_urlsafe(16)
        self._permit(CONFIGURE, "queue", name)
        dlx = (method.arguments or {}).get("x-dead-letter-exchange")
        if isinstance(dlx, str) and self.broker.vhosts[self.vhost_name].queues.get(name) is None:
            self._permit(READ, "queue", name)
            self._permit(WRITE, "exchange", dlx)

    def _permit_binding(self, kind: str, destination: str, source: str) -> None:
        """Write on the destination, then read on the source exchange; a binding to or from
        the default exchange is refused in between (by the vhost)."""
        if kind == "queue":
            self._permit_queue(WRITE, destination)
        else:
            self._permit(WRITE, "exchange", destination)
        if source and (destination or kind == "queue"):
            self._permit(READ, "exchange", source)

    def _expand_queue_name(self, method: Any) -> None:
        """The spec's shortcut: an empty queue name is the queue last declared on this channel,
        and a queue.bind/unbind with an empty routing key too binds by that queue's name."""
        if not self._last_queue:
            raise NotFound("no previously declared queue")
        method.queue = self._last_queue
        if isinstance(method, commands.Queue.Bind | commands.Queue.Unbind):
            method.routing_key = method.routing_key or self._last_queue

    # -- publish ---------------------------------------------------------------------------
    def on_publish(self, publish: Publish, header: ContentHeader, body: bytes | memoryview) -> None:
        if publish.exchange not in self._writable:
            self._permit_write(publish.exchange)
        self.connection.published = True  # blocks the connection while a resource alarm is on
        if self.tx:
            self._tx_publishes.append((publish, header, bytes(body)))
            return
        try:
            self._publish(publish, header, body)
        except QueuesError as exc:
            raise self._domain_error(exc, _PUBLISH) from None

    def _publish(self, publish: Publish, header: ContentHeader, body: bytes | memoryview) -> None:
        if publish.immediate:
            raise AMQPError(
                ReplyCode.NOT_IMPLEMENTED, "immediate=true", class_id=60, method_id=40,
                channel=self.number, connection_level=True,
            )
        exchange, routing_key = publish.exchange, publish.routing_key
        properties = header.raw_properties
        headers = _LazyHeaders(header) if header.flags & 0x2000 else None
        vhost = self._vhost or self._bind_vhost()
        queues = vhost.route(exchange, routing_key, headers)
        if headers is not None and may_route_by_headers(properties):
            extra_keys, without_bcc = routing_headers(header)
            for key in extra_keys:
                queues += [q for q in vhost.route(exchange, key, headers) if q not in queues]
            if without_bcc is not None:
                properties = without_bcc
        seq = 0
        if self.confirm:
            self.publish_seq += 1
            seq = self.publish_seq
            self._turn_seq = seq
        if not queues:
            if publish.mandatory:
                self.connection.write(
                    self.conn.send_return(
                        self.number, ReplyCode.NO_ROUTE, "NO_ROUTE", exchange, routing_key,
                        header, body,
                    )
                )
            return
        try:
            delivery_mode, priority, expiration = parse_properties(properties)  # cached
        except ValueError as exc:
            raise self._error(ReplyCode.SYNTAX_ERROR, str(exc), _PUBLISH) from None
        message = Message(
            exchange, routing_key, bytes(body), properties, delivery_mode, priority, expiration
        )
        dirty = self._dirty_queues
        for queue in queues:
            result = queue.publish(message, False)  # type: ignore[attr-defined]
            dirty[id(queue)] = queue  # type: ignore[assignment]  # dispatched at end_of_turn
            if not result.accepted:
                if seq:
                    self._turn_nacks.append(seq)
                continue
            if seq and result.offset >= 0:
                key = id(queue)
                previous = self._turn_waits.get(key)
                if previous is None or previous[1] < result.offset:
                    self._turn_waits[key] = (queue, result.offset)  # type: ignore[assignment]

    def end_of_turn(self) -> None:
        """After a socket read: schedule this turn's confirms (and dispatch freed credit)."""
        if self._dirty_queues:
            queues = list(self._dirty_queues.values())
            self._dirty_queues.clear()
            for queue in queues:
                queue.dispatch()
        if not self._turn_seq:
            return
        upto, nacks, waits = self._turn_seq, self._turn_nacks, self._turn_waits
        self._turn_seq, self._turn_nacks, self._turn_waits = 0, [], {}
        task = None
        if waits:
            task = self.connection.spawn(self._wait_durable(list(waits.values())))
            task.add_done_callback(self._confirm_done)
        self._confirms.append((upto, nacks, task))
        self._drain_confirms()

    async def _wait_durable(self, waits: list[tuple[Queue, int]]) -> None:
        await asyncio.gather(*(queue.wait_durable(offset) for queue, offset in waits))

    def _confirm_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self.closed:
            return
        self._drain_confirms()
        self.connection.flush()

    def _drain_confirms(self) -> None:
        confirms = self._confirms
        while confirms:
            upto, nacks, task = confirms[0]
            if task is not None and not task.done():
                return
            confirms.popleft()
            failed = task is not None and task.exception() is not None
            for seq in nacks:
                self.connection.write(self.conn.send_nack(self.number, seq))
            if failed:
                self.connection.write(self.conn.send_nack(self.number, upto, multiple=True))
            elif upto > self._acked_upto:
                self.connection.write(self.conn.send_ack(self.number, upto, multiple=True))
            self._acked_upto = max(self._acked_upto, upto)

    # -- deliveries ------------------------------------------------------------------------
    def _make_deliver(
        self, consumer_ref: list[PrefetchConsumer], consumer_tag: str
    ) -> Callable[[list[Delivery]], None]:
        """The consumer's batch delivery callback: tags, unacked entries and the frames of a
        whole batch in one loop, written as one piece."""
        write = self.connection.write
        conn = self.conn
        number = self.number
        unacked = self.unacked
        encoder = DeliverEncoder(number, consumer_tag, conn.frame_max)
        add = encoder.add

        def deliver_many(deliveries: list[Delivery]) -> None:
            if not conn.is_open(number):
                raise LocalProtocolError(f"cannot send basic.deliver on channel {number}")
            consumer = consumer_ref[0]
            track = not consumer.no_ack
            tag = self.next_tag
            parts: list[bytes] = []
            for delivery in deliveries:
                if track:
                    unacked[tag] = (delivery, consumer)
                message = delivery.message
                add(
                    parts, tag, delivery.redelivered, message.exchange, message.routing_key,
                    message.properties, message.body,
                )
                tag += 1
            self.next_tag = tag
            write(b"".join(parts))

        return deliver_many

    def _settle(self, entries: list[tuple[Delivery, PrefetchConsumer | None]]) -> None:
        """Give the credit of settled deliveries back (basic.get ones hold channel credit)."""
        counts: dict[PrefetchConsumer | None, int] = {}
        for _delivery, consumer in entries:
            counts[consumer] = counts.get(consumer, 0) + 1
        for consumer, count in counts.items():
            if consumer is not None:
                consumer.settle(count)
            else:
                self.channel_credit.settle(count)

    def _take(self, delivery_tag: int, multiple: bool, where: tuple[int, int]) -> list[Any]:
        """Remove and return the unacked entries an ack/nack addresses (406 if unknown)."""
        unacked = self.unacked
        if multiple:
            if delivery_tag == 0:
                taken = list(unacked.values())
                unacked.clear()
                return taken
            tags = []
            for tag in unacked:  # in ascending tag order: tags are handed out in order
                if tag > delivery_tag:
                    break
                tags.append(tag)
            if not tags:
                raise self._error(
                    ReplyCode.PRECONDITION_FAILED, f"unknown delivery tag {delivery_tag}", where
                )
            return [unacked.pop(t) for t in tags]
        entry = unacked.pop(delivery_tag, None)
        if entry is None:
            raise self._error(
                ReplyCode.PRECONDITION_FAILED, f"unknown delivery tag {delivery_tag}", where
            )
        return [entry]

    def _basic_ack(self, method: Ack) -> None:
        if self.tx:
            self._tx_acks.append(method)
            return
        entries = self._take(method.delivery_tag, method.multiple, _ACK)
        self._settle(entries)
        by_queue: dict[Queue, list[Delivery]] = {}
        for delivery, _consumer in entries:
            queue = delivery.queue
            deliveries = by_queue.get(queue)
            if deliveries is None:
                by_queue[queue] = [delivery]
            else:
                deliveries.append(delivery)
        for queue, deliveries in by_queue.items():
            if len(deliveries) == 1:
                queue.ack(deliveries[0])
            else:
                queue.ack_many(deliveries)
            self._dirty_queues[id(queue)] = queue

    def _reject_entries(self, entries: list[Any], requeue_them: bool) -> None:
        self._settle(entries)
        if requeue_them:
            requeue(delivery for delivery, _c in entries)
            return
        for delivery, _consumer in entries:
            delivery.queue.reject(delivery, False)
            self._dirty_queues[id(delivery.queue)] = delivery.queue

    def _basic_nack(self, method: Nack) -> None:
        if self.tx:
            self._tx_acks.append(method)
            return
        entries = self._take(method.delivery_tag, method.multiple, _NACK)
        self._reject_entries(entries, method.requeue)

    def _basic_reject(self, method: Reject) -> None:
        if self.tx:
            self._tx_acks.append(method)
            return
        entries = self._take(method.delivery_tag, False, _REJECT)
        self._reject_entries(entries, method.requeue)

    def _basic_qos(self, method: Any) -> None:
        if method.prefetch_size:
            raise AMQPError(
                ReplyCode.NOT_IMPLEMENTED, f"prefetch_size!=0 ({method.prefetch_size})",
                class_id=60, method_id=10, channel=self.number, connection_level=True,
            )
        if method.global_:
            self.channel_credit.limit = method.prefetch_count
        else:
            self.prefetch_count = method.prefetch_count
        self._send(commands.Basic.QosOk())
        for _consumer, queue in list(self.consumers.values()):
            self._dirty_queues[id(queue)] = queue

    def _basic_consume(self, method: Any) -> None:
        self._permit_queue(READ, method.queue)
        queue = self.broker.get_queue(self.vhost_name, method.queue)
        queue.check_exclusive(self.connection)
        tag = method.consumer_tag or "amq.ctag-" + secrets.token_urlsafe(16)
        if tag in self.consumers:
            raise AMQPError(
                ReplyCode.NOT_ALLOWED, f"attempt to reuse consumer tag '{tag}'",
                class_id=60, method_id=20, channel=self.number, connection_level=True,
            )
        arguments = method.arguments or {}
        priority = arguments.get("x-priority", 0)
        ref: list[PrefetchConsumer] = []
        consumer = PrefetchConsumer(
            tag,
            None,
            on_deliver_many=self._make_deliver(ref, tag),
            no_ack=method.no_ack,
            prefetch=self.prefetch_count,
            channel_credit=self.channel_credit,
            priority=priority if isinstance(priority, int) else 0,
            exclusive=method.exclusive,
            on_cancel=lambda: self._server_cancel(tag),
        )
        ref.append(consumer)
        consumer.blocked = not self.flow_active
        # consume-ok must reach the client before the first delivery
        if not method.nowait:
            self._send(commands.Basic.ConsumeOk(tag))
        queue.add_consumer(consumer)
        self.consumers[tag] = (consumer, queue)

    def _server_cancel(self, tag: str) -> None:
        """The queue was deleted under a consumer: basic.cancel if the client supports it.

        Sent on the next loop turn, so that when this channel deleted the queue its
        queue.delete-ok goes first, as RabbitMQ orders them (py-amqp relies on it)."""
        if self.consumers.pop(tag, None) is None or self.closed:
            return
        if self.connection.capabilities.get("consumer_cancel_notify"):
            asyncio.get_running_loop().call_soon(self._send_cancel, tag)

    def _send_cancel(self, tag: str) -> None:
        if not self.closed and self.conn.is_open(self.number):
            self._send(commands.Basic.Cancel(tag, nowait=True))

    def _basic_cancel(self, method: Any) -> None:
        entry = self.consumers.pop(method.consumer_tag, None)
        if entry is not None:
            consumer, queue = entry
            queue.cancel_consumer(consumer)
        if not method.nowait:
            self._send(commands.Basic.CancelOk(method.consumer_tag))

    def _basic_get(self, method: Any) -> None:
        self._permit_queue(READ, method.queue)
        queue = self.broker.get_queue(self.vhost_name, method.queue)
        queue.check_exclusive(self.connection)
        if not method.no_ack and not self.channel_credit.available():
            self._send(commands.Basic.GetEmpty())
            return
        delivery = queue.get(method.no_ack)
        if delivery is None:
            self._send(commands.Basic.GetEmpty())
            return
        tag = self.next_tag
        self.next_tag = tag + 1
        if not method.no_ack:
            self.unacked[tag] = (delivery, None)
            self.channel_credit.in_flight += 1
        message = delivery.message
        self.connection.write(
            self.conn.send_get_ok(
                self.number, tag, delivery.redelivered, message.exchange, message.routing_key,
                queue.message_count, message.amqp_header(), message.body,
            )
        )

    def _basic_recover(self, method: Any) -> None:
        if not method.requeue:
            raise AMQPError(
                ReplyCode.NOT_IMPLEMENTED, "requeue=false", class_id=60, method_id=110,
                channel=self.number, connection_level=True,
            )
        entries = list(self.unacked.values())
        self.unacked.clear()
        self._reject_entries(entries, True)
        if isinstance(method, commands.Basic.Recover):
            self._send(commands.Basic.RecoverOk())

    def _channel_flow(self, method: Any) -> None:
        self.flow_active = method.active
        for consumer, queue in self.consumers.values():
            consumer.blocked = not method.active
            self._dirty_queues[id(queue)] = queue
        self._send(commands.Channel.FlowOk(method.active))

    # -- confirm and tx --------------------------------------------------------------------
    def _confirm_select(self, method: Any) -> None:
        if self.tx:
            raise PreconditionFailed("cannot switch from tx to confirm mode")
        self.confirm = True
        if not method.nowait:
            self._send(commands.Confirm.SelectOk())

    def _tx_select(self, method: Any) -> None:
        if self.confirm:
            raise PreconditionFailed("cannot switch from confirm to tx mode")
        self.tx = True
        self._send(commands.Tx.SelectOk())

    def _tx_commit(self, method: Any) -> None:
        if not self.tx:
            raise PreconditionFailed("channel is not transactional")
        publishes, acks = self._tx_publishes, self._tx_acks
        self._tx_publishes, self._tx_acks = [], []
        self.tx = False  # apply for real
        try:
            for publish, header, body in publishes:
                self._publish(publish, header, body)
            for ack in acks:
                self._handlers[type(ack)](ack)
        finally:
            self.tx = True
        self._send(commands.Tx.CommitOk())

    def _tx_rollback(self, method: Any) -> None:
        if not self.tx:
            raise PreconditionFailed("channel is not transactional")
        self._tx_publishes, self._tx_acks = [], []
        self._send(commands.Tx.RollbackOk())

    # -- exchanges -------------------------------------------------------------------------
    def _save_if(self, durable: bool) -> None:
        if durable:
            self.broker.save(self.vhost_name)

    def _exchange_declare(self, method: Any) -> None:
        self._permit_exchange_declare(method)
        exchange, created = self.vhost.declare_exchange(
            method.exchange,
            method.exchange_type,
            passive=method.passive,
            durable=method.durable,
            auto_delete=method.auto_delete,
            internal=method.internal,
            arguments=method.arguments or {},
        )
        if created:
            self._save_if(exchange.durable)
        if not method.nowait:
            self._send(commands.Exchange.DeclareOk())

    def _exchange_delete(self, method: Any) -> None:
        if method.exchange and not method.exchange.startswith("amq."):  # else: vhost refuses
            self._permit(CONFIGURE, "exchange", method.exchange)
        existing = self.vhost.get_exchange(method.exchange)
        self.vhost.delete_exchange(method.exchange, if_unused=method.if_unused)
        self._save_if(existing is not None and existing.durable)
        if not method.nowait:
            self._send(commands.Exchange.DeleteOk())

    def _exchange_bind(self, method: Any) -> None:
        self._permit_binding("exchange", method.destination, method.source)
        self.vhost.bind_exchange(
            method.destination, method.source, method.routing_key, method.arguments or {}
        )
        self._save_if(True)
        if not method.nowait:
            self._send(commands.Exchange.BindOk())

    def _exchange_unbind(self, method: Any) -> None:
        self._permit_binding("exchange", method.destination, method.source)
        self.vhost.unbind_exchange(
            method.destination, method.source, method.routing_key, method.arguments or {}
        )
        self._save_if(True)
        if not method.nowait:
            self._send(commands.Exchange.UnbindOk())

    # -- queues ----------------------------------------------------------------------------
    def _queue_declare(self, method: Any) -> None:
        self._permit_queue_declare(method)
        queue = self.broker.declare_queue(
            self.vhost_name,
            method.queue,
            passive=method.passive,
            durable=method.durable,
            exclusive_owner=self.connection if method.exclusive else None,
            auto_delete=method.auto_delete,
            arguments=method.arguments or {},
            connection=self.connection,
        )
        self._last_queue = queue.name
        if not method.nowait:
            self._send(
                commands.Queue.DeclareOk(queue.name, queue.message_count, queue.consumer_count)
            )

    def _bindable_queue(self, name: str) -> Queue:
        queue = self.broker.get_queue(self.vhost_name, name)
        queue.check_exclusive(self.connection)
        return queue

    def _queue_bind(self, method: Any) -> None:
        self._permit_binding("queue", method.queue, method.exchange)
        if self.vhost.get_exchange(method.exchange) is None:
            missing = NotFound(f"no {resource('exchange', method.exchange, self.vhost_name)}")
            raise self._domain_error(missing, (50, 20))
        queue = self._bindable_queue(method.queue)
        self.vhost.bind_queue(queue.name, method.exchange, method.routing_key,
                              method.arguments or {})
        self._save_if(queue.durable)
        if not method.nowait:
            self._send(commands.Queue.BindOk())

    def _queue_unbind(self, method: Any) -> None:
        self._permit_binding("queue", method.queue, method.exchange)
        try:
            queue = self._bindable_queue(method.queue)
        except NotFound:  # nothing to unbind: RabbitMQ answers unbind-ok
            self._send(commands.Queue.UnbindOk())
            return
        self.vhost.unbind_queue(queue.name, method.exchange, method.routing_key,
                                method.arguments or {})
        self._save_if(queue.durable)
        self._send(commands.Queue.UnbindOk())

    def _queue_purge(self, method: Any) -> None:
        self._permit_queue(READ, method.queue)
        queue = self._bindable_queue(method.queue)
        count = queue.purge()
        if not method.nowait:
            self._send(commands.Queue.PurgeOk(count))

    def _queue_delete(self, method: Any) -> None:
        self._permit_queue(CONFIGURE, method.queue)
        try:
            queue = self.broker.get_queue(self.vhost_name, method.queue)
        except QueuesError:
            if not method.nowait:  # deleting a missing queue succeeds, as in RabbitMQ
                self._send(commands.Queue.DeleteOk(0))
            return
        queue.check_exclusive(self.connection)
        where = resource("queue", queue.name, self.vhost_name)
        if method.if_unused and queue.consumer_count:
            raise PreconditionFailed(f"{where} in use")
        if method.if_empty and queue.message_count:
            raise PreconditionFailed(f"{where} is not empty")
        count = self.broker.delete_queue(self.vhost_name, queue)
        if not method.nowait:
            self._send(commands.Queue.DeleteOk(count))

    # -- close -----------------------------------------------------------------------------
    def close(self) -> None:
        """Channel closed (or connection lost): cancel consumers, requeue unacked in order."""
        if self.closed:
            return
        self.closed = True
        for consumer, queue in list(self.consumers.values()):
            queue.cancel_consumer(consumer)
        self.consumers.clear()
        entries = list(self.unacked.values())
        self.unacked.clear()
        if entries:
            requeue(delivery for delivery, _consumer in entries)
        # This turn's publishes still reach other consumers.
        queues = list(self._dirty_queues.values())
        self._dirty_queues.clear()
        for queue in queues:
            queue.dispatch()
        for _upto, _nacks, task in self._confirms:
            if task is not None:
                task.cancel()
        self._confirms.clear()
