"""One AMQP channel: turns the methods of the basic, confirm and tx classes into calls on the
vhost and its queues, and hands the exchange and queue methods to ``ChannelAdmin``.

The parts with one job each live next to it: ``ChannelAccess`` (permissions),
``UnackedDeliveries`` (tags, unacked deliveries, qos windows), ``PublisherConfirms`` and
``TxBuffer``. Every frame goes out through the owner's sans-IO ``AMQPConnection``, so its state
checks apply; deliveries are encoded a whole batch per call.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from typing import Any

from pamqp import commands

from dari.message import Message, parse_properties
from dari.protocol.amqp import (
    Ack,
    AMQPError,
    ContentHeader,
    Nack,
    Publish,
    Reject,
    ReplyCode,
)
from dari.queues import sender_selected
from dari.queues.consumers import Delivery, PrefetchConsumer
from dari.queues.direct_reply import REPLY_PREFIX, REPLY_QUEUE, REPLY_QUEUE_BYTES
from dari.queues.errors import PreconditionFailed, QueuesError
from dari.queues.permissions import READ
from dari.queues.queue import Queue, requeue
from dari.queues.quorum import QuorumQueue, check_consume_arguments
from dari.queues.stream_queue import OFFSET_HEADER, StreamQueue
from dari.server.amqp_access import ChannelAccess
from dari.server.amqp_admin import QUEUE_NAME_SHORTCUT, ChannelAdmin
from dari.server.amqp_channel_owner import ChannelOwner
from dari.server.amqp_confirms import PublisherConfirms
from dari.server.amqp_direct_reply import REPLY_TO_FLAG, ReplyConsumer, rewrite_reply_to
from dari.server.amqp_lazy_headers import LazyHeaders
from dari.server.amqp_tx import TxBuffer
from dari.server.amqp_unacked import Entry, UnackedDeliveries

_PUBLISH, _ACK, _REJECT, _NACK = (60, 40), (60, 80), (60, 90), (60, 120)


def _where(method: Any) -> tuple[int, int]:
    index = getattr(method, "index", 0)
    return index >> 16, index & 0xFFFF


class Channel:
    """State of one open channel of one connection; owned by that connection (event loop
    thread), created on channel.open and closed once (``close``)."""

    def __init__(self, owner: ChannelOwner, number: int) -> None:
        assert owner.vhost is not None, "channels open after connection.open"
        self.owner = owner
        self.conn = owner.conn
        self.number = number
        self.vhost_name = owner.vhost
        self.broker = owner.broker
        self.vhost = self.broker.vhost(self.vhost_name)
        self.access = ChannelAccess(self.broker, self.vhost_name, owner.user)
        self._writable = self.access.writable  # exchanges already allowed for publishing
        self.admin = ChannelAdmin(owner, self.vhost_name, self.access, self._send)
        self.unacked = UnackedDeliveries()
        self.consumers: dict[str, tuple[PrefetchConsumer, Queue]] = {}
        self.reply: ReplyConsumer | None = None  # the consumer of amq.rabbitmq.reply-to
        self.confirms: PublisherConfirms | None = None  # set by confirm.select
        self.tx: TxBuffer | None = None  # set by tx.select
        self.flow_active = True
        self.closed = False
        # queues touched this turn: dispatched at its end (freed credit, new messages)
        self._dirty_queues: dict[int, Queue] = {}
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
            **self.admin.handlers(),
            commands.Confirm.Select: self._confirm_select,
            commands.Tx.Select: self._tx_select,
            commands.Tx.Commit: self._tx_commit,
            commands.Tx.Rollback: self._tx_rollback,
            commands.Channel.Flow: self._channel_flow,
            commands.Channel.FlowOk: lambda _m: None,
        }

    # -- plumbing --------------------------------------------------------------------------
    def _send(self, method: Any) -> None:
        self.owner.write(self.conn.send_method(self.number, method))

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

    def _not_implemented(self, text: str, where: tuple[int, int]) -> AMQPError:
        return AMQPError(
            ReplyCode.NOT_IMPLEMENTED, text, class_id=where[0], method_id=where[1],
            channel=self.number, connection_level=True,
        )

    def on_method(self, method: Any) -> None:
        handler = self._handlers.get(type(method))
        if handler is None:
            raise self._error(
                ReplyCode.NOT_IMPLEMENTED, f"method {method.name} is not implemented",
                _where(method),
            )
        try:
            if type(method) in QUEUE_NAME_SHORTCUT and not method.queue:
                self.admin.expand_queue_name(method)
            handler(method)
        except QueuesError as exc:
            raise self._domain_error(exc, _where(method)) from None

    # -- publish ---------------------------------------------------------------------------
    def on_publish(self, publish: Publish, header: ContentHeader, body: bytes | memoryview) -> None:
        if publish.exchange not in self._writable:
            try:
                self.access.permit_write(publish.exchange)
            except QueuesError as exc:
                raise self._domain_error(exc, _PUBLISH) from None
        self.owner.published = True  # blocks the connection while a resource alarm is on
        if header.flags & REPLY_TO_FLAG and REPLY_QUEUE_BYTES in header.raw_properties:
            try:  # a request for direct reply-to
                header = rewrite_reply_to(header, self.reply)
            except QueuesError as exc:
                raise self._domain_error(exc, _PUBLISH) from None
        if self.tx is not None:
            self.tx.publish(publish, header, body)
            return
        try:
            self._publish(publish, header, body)
        except QueuesError as exc:
            raise self._domain_error(exc, _PUBLISH) from None

    def _publish(self, publish: Publish, header: ContentHeader, body: bytes | memoryview) -> None:
        if publish.immediate:
            raise self._not_implemented("immediate=true", _PUBLISH)
        exchange, routing_key = publish.exchange, publish.routing_key
        properties = header.raw_properties
        headers = LazyHeaders(header) if header.flags & 0x2000 else None
        vhost = self.vhost
        if headers is None:  # no headers table, so no CC/BCC either: the common message
            queues = vhost.route(exchange, routing_key, None)
        else:
            queues, properties = sender_selected.route(
                vhost, exchange, routing_key, headers, properties
            )
        confirms = self.confirms
        seq = confirms.next_seq() if confirms is not None else 0
        if not queues:
            if not exchange and routing_key.startswith(REPLY_PREFIX):
                # A direct reply: routed as far as mandatory goes (RabbitMQ returns none),
                # dropped when its consumer is gone.
                self.broker.direct_replies.deliver(
                    self.vhost_name, Message(exchange, routing_key, bytes(body), properties)
                )
                return
            if publish.mandatory:
                self.owner.write(
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
            # a transient message a queue accepted needs nothing more to be confirmed
            if confirms is not None and (result.offset >= 0 or not result.accepted):
                confirms.stored(seq, queue, result)  # type: ignore[arg-type]

    def end_of_turn(self) -> None:
        """After a socket read: dispatch the queues this turn touched, owe its confirms."""
        if self._dirty_queues:
            queues = list(self._dirty_queues.values())
            self._dirty_queues.clear()
            for queue in queues:
                queue.dispatch()
        if self.confirms is not None:
            self.confirms.end_of_turn()

    # -- consume ---------------------------------------------------------------------------
    def _basic_qos(self, method: Any) -> None:
        if method.prefetch_size:
            raise self._not_implemented(f"prefetch_size!=0 ({method.prefetch_size})", (60, 10))
        self.unacked.set_qos(method.prefetch_count, method.global_)
        self._send(commands.Basic.QosOk())
        for _consumer, queue in list(self.consumers.values()):
            self._dirty_queues[id(queue)] = queue

    def _basic_consume(self, method: Any) -> None:
        if method.queue == REPLY_QUEUE:
            self._consume_replies(method)
            return
        self.access.permit_queue(READ, method.queue)
        queue = self.admin.usable_queue(method.queue)
        tag = method.consumer_tag or "amq.ctag-" + secrets.token_urlsafe(16)
        if tag in self.consumers or (self.reply is not None and tag == self.reply.tag):
            raise AMQPError(
                ReplyCode.NOT_ALLOWED, f"attempt to reuse consumer tag '{tag}'",
                class_id=60, method_id=20, channel=self.number, connection_level=True,
            )
        arguments = method.arguments or {}
        priority = arguments.get("x-priority", 0)
        unacked = self.unacked
        ref: list[PrefetchConsumer] = []
        # RabbitMQ 4 takes basic.qos global=true as global=false for quorum queues: the
        # consumer gets the last prefetch count set, in a window of its own.
        quorum = isinstance(queue, QuorumQueue)
        if quorum:
            check_consume_arguments(queue, arguments)
        consumer = PrefetchConsumer(
            tag,
            None,
            on_deliver_many=self._make_deliver(ref, tag),
            no_ack=method.no_ack,
            prefetch=unacked.last_prefetch_count if quorum else unacked.prefetch_count,
            channel_credit=None if quorum else unacked.channel_credit,
            priority=priority if isinstance(priority, int) else 0,
            exclusive=method.exclusive,
            on_cancel=lambda: self._server_cancel(tag),
        )
        ref.append(consumer)
        # Registered while blocked: the queue may still refuse it (in exclusive use), and
        # then no consume-ok may have gone out, as in RabbitMQ. Once accepted, consume-ok is
        # sent before the first delivery.
        consumer.blocked = True
        if isinstance(queue, StreamQueue):  # a prefetch is required; reads from an offset
            queue.check_consume(
                method.no_ack, consumer.credit.limit, unacked.channel_credit.limit
            )
            start = queue.start_offset(arguments.get(OFFSET_HEADER), arguments)
            queue.add_consumer(consumer, start)
        else:
            queue.add_consumer(consumer)
        self.consumers[tag] = (consumer, queue)
        if not method.nowait:
            self._send(commands.Basic.ConsumeOk(tag))
        consumer.blocked = not self.flow_active
        queue.dispatch()

    def _consume_replies(self, method: Any) -> None:
        """basic.consume of amq.rabbitmq.reply-to: this channel's reply consumer, with
        RabbitMQ's checks (in its order) and no permission check, as in RabbitMQ."""
        tag = method.consumer_tag or "amq.ctag-" + secrets.token_urlsafe(16)
        if tag in self.consumers:
            raise AMQPError(
                ReplyCode.NOT_ALLOWED, f"attempt to reuse consumer tag '{tag}'",
                class_id=60, method_id=20, channel=self.number, connection_level=True,
            )
        if not method.no_ack:
            raise PreconditionFailed("reply consumer cannot acknowledge")
        if self.reply is not None:
            raise PreconditionFailed("reply consumer already set")
        self.reply = ReplyConsumer(
            self.owner, self.number, self.unacked, tag, self.vhost_name,
            self.broker.direct_replies,
        )
        if not method.nowait:
            self._send(commands.Basic.ConsumeOk(tag))

    def _make_deliver(
        self, consumer_ref: list[PrefetchConsumer], consumer_tag: str
    ) -> Callable[[list[Delivery]], None]:
        """The consumer's batch delivery callback: tags, unacked entries and the frames of a
        whole batch in one loop, sent through the connection as one piece."""
        write = self.owner.write
        conn = self.conn
        number = self.number
        unacked = self.unacked
        entries = unacked.entries
        add = conn.deliver_encoder(number, consumer_tag).add
        send_deliveries = conn.send_deliveries

        def deliver_many(deliveries: list[Delivery]) -> None:
            consumer = consumer_ref[0]
            track = not consumer.no_ack
            tag = unacked.next_tag
            parts: list[bytes] = []
            for delivery in deliveries:
                if track:
                    entries[tag] = (delivery, consumer)
                message = delivery.message
                add(
                    parts, tag, delivery.redelivered, message.exchange, message.routing_key,
                    message.properties, message.body,
                )
                tag += 1
            unacked.next_tag = tag
            write(send_deliveries(number, parts))

        return deliver_many

    def _server_cancel(self, tag: str) -> None:
        """The queue was deleted under a consumer: basic.cancel if the client supports it.

        Sent on the next loop turn, so that when this channel deleted the queue its
        queue.delete-ok goes first, as RabbitMQ orders them (py-amqp relies on it)."""
        if self.consumers.pop(tag, None) is None or self.closed:
            return
        if self.owner.capabilities.get("consumer_cancel_notify"):
            asyncio.get_running_loop().call_soon(self._send_cancel, tag)

    def _send_cancel(self, tag: str) -> None:
        if not self.closed and self.conn.is_open(self.number):
            self._send(commands.Basic.Cancel(tag, nowait=True))

    def _basic_cancel(self, method: Any) -> None:
        reply = self.reply
        if reply is not None and method.consumer_tag == reply.tag:
            reply.close()
            self.reply = None
        entry = self.consumers.pop(method.consumer_tag, None)
        if entry is not None:
            consumer, queue = entry
            queue.cancel_consumer(consumer)
        if not method.nowait:
            self._send(commands.Basic.CancelOk(method.consumer_tag))

    def _basic_get(self, method: Any) -> None:
        self.access.permit_queue(READ, method.queue)
        queue = self.admin.usable_queue(method.queue)
        no_ack = method.no_ack
        delivery = queue.get(no_ack) if self.unacked.may_get(no_ack) else None
        if delivery is None:
            self._send(commands.Basic.GetEmpty())
            return
        tag = self.unacked.track_get(delivery, no_ack)
        message = delivery.message
        self.owner.write(
            self.conn.send_get_ok(
                self.number, tag, delivery.redelivered, message.exchange, message.routing_key,
                queue.message_count, message.amqp_header(), message.body,
            )
        )

    def _channel_flow(self, method: Any) -> None:
        self.flow_active = method.active
        for consumer, queue in self.consumers.values():
            consumer.blocked = not method.active
            self._dirty_queues[id(queue)] = queue
        self._send(commands.Channel.FlowOk(method.active))

    # -- acknowledgements ------------------------------------------------------------------
    def _take(self, delivery_tag: int, multiple: bool, where: tuple[int, int]) -> list[Entry]:
        try:
            return self.unacked.take(delivery_tag, multiple)
        except PreconditionFailed as exc:
            raise self._domain_error(exc, where) from None

    def _basic_ack(self, method: Ack) -> None:
        if self.tx is not None:
            self.tx.settle(method)
            return
        entries = self._take(method.delivery_tag, method.multiple, _ACK)
        self.unacked.settle(entries)
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

    def _basic_nack(self, method: Nack) -> None:
        if self.tx is not None:
            self.tx.settle(method)
            return
        entries = self._take(method.delivery_tag, method.multiple, _NACK)
        # a nack hands messages back without failing them (quorum queues do not count it)
        self._reject_entries(entries, method.requeue, failed=False)

    def _basic_reject(self, method: Reject) -> None:
        if self.tx is not None:
            self.tx.settle(method)
            return
        entries = self._take(method.delivery_tag, False, _REJECT)
        self._reject_entries(entries, method.requeue)

    def _reject_entries(
        self, entries: list[Entry], requeue_them: bool, failed: bool = True
    ) -> None:
        self.unacked.settle(entries)
        if requeue_them:
            requeue((delivery for delivery, _c in entries), failed)
            return
        for delivery, _consumer in entries:
            delivery.queue.reject(delivery, False)
            self._dirty_queues[id(delivery.queue)] = delivery.queue

    def _basic_recover(self, method: Any) -> None:
        if not method.requeue:
            raise self._not_implemented("requeue=false", (60, 110))
        self._reject_entries(self.unacked.take_all(), True, failed=False)
        if isinstance(method, commands.Basic.Recover):
            self._send(commands.Basic.RecoverOk())

    # -- confirm and tx --------------------------------------------------------------------
    def _confirm_select(self, method: Any) -> None:
        if self.tx is not None:
            raise PreconditionFailed("cannot switch from tx to confirm mode")
        if self.confirms is None:
            owner, conn, number = self.owner, self.conn, self.number
            self.confirms = PublisherConfirms(
                ack=lambda seq, multiple: owner.write(conn.send_ack(number, seq, multiple)),
                nack=lambda seq, multiple: owner.write(conn.send_nack(number, seq, multiple)),
                spawn=owner.spawn,
                flush=owner.flush,
            )
        if not method.nowait:
            self._send(commands.Confirm.SelectOk())

    def _tx_select(self, method: Any) -> None:
        if self.confirms is not None:
            raise PreconditionFailed("cannot switch from confirm to tx mode")
        if self.tx is None:
            self.tx = TxBuffer()
        self._send(commands.Tx.SelectOk())

    def _tx_commit(self, method: Any) -> None:
        tx = self.tx
        if tx is None:
            raise PreconditionFailed("channel is not transactional")
        publishes, acks = tx.take()
        self.tx = None  # apply for real
        try:
            for publish, header, body in publishes:
                self._publish(publish, header, body)
            for ack in acks:
                self._handlers[type(ack)](ack)
        finally:
            self.tx = tx
        self._send(commands.Tx.CommitOk())

    def _tx_rollback(self, method: Any) -> None:
        if self.tx is None:
            raise PreconditionFailed("channel is not transactional")
        self.tx.clear()
        self._send(commands.Tx.RollbackOk())

    # -- close -----------------------------------------------------------------------------
    def close(self) -> None:
        """Channel closed (or connection lost): cancel consumers, requeue unacked in order."""
        if self.closed:
            return
        self.closed = True
        if self.reply is not None:
            self.reply.close()
            self.reply = None
        for consumer, queue in list(self.consumers.values()):
            queue.cancel_consumer(consumer)
        self.consumers.clear()
        entries = self.unacked.take_all()
        if entries:
            requeue(delivery for delivery, _consumer in entries)
        # This turn's publishes still reach other consumers.
        queues = list(self._dirty_queues.values())
        self._dirty_queues.clear()
        for queue in queues:
            queue.dispatch()
        if self.confirms is not None:
            self.confirms.close()
