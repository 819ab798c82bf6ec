"""The exchange and queue class methods of one AMQP channel: declare, bind, purge, delete.

Each method checks the user's permissions (``ChannelAccess``), calls the vhost or the broker,
saves the vhost's durable definitions when they changed, and answers with the ``-ok`` method
unless ``nowait``. Domain errors propagate to the channel, which closes itself with them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pamqp import commands

from dari.queues.direct_reply import REPLY_QUEUE, is_reply_name
from dari.queues.errors import NotFound, PreconditionFailed, QueuesError, resource
from dari.queues.permissions import CONFIGURE, READ
from dari.queues.queue import Queue
from dari.queues.vhost import VirtualHost
from dari.server.amqp_access import ChannelAccess
from dari.server.amqp_channel_owner import ChannelOwner

# Methods where an empty queue name means the channel's last declared queue.
QUEUE_NAME_SHORTCUT = frozenset({
    commands.Queue.Bind, commands.Queue.Unbind, commands.Queue.Purge, commands.Queue.Delete,
    commands.Basic.Consume, commands.Basic.Get,
})


class ChannelAdmin:
    """Exchange and queue administration on behalf of one channel; owned by it (event loop
    thread). ``send`` writes a method on the channel."""

    def __init__(
        self,
        owner: ChannelOwner,
        vhost_name: str,
        access: ChannelAccess,
        send: Callable[[Any], None],
    ) -> None:
        self.owner = owner
        self.broker = owner.broker
        self.vhost_name = vhost_name
        self.vhost: VirtualHost = self.broker.vhost(vhost_name)
        self.access = access
        self._send = send
        self.last_queue = ""  # the queue last declared here, for the empty-name shortcut

    def handlers(self) -> dict[type, Callable[[Any], None]]:
        return {
            commands.Exchange.Declare: self.exchange_declare,
            commands.Exchange.Delete: self.exchange_delete,
            commands.Exchange.Bind: self.exchange_bind,
            commands.Exchange.Unbind: self.exchange_unbind,
            commands.Queue.Declare: self.queue_declare,
            commands.Queue.Bind: self.queue_bind,
            commands.Queue.Unbind: self.queue_unbind,
            commands.Queue.Purge: self.queue_purge,
            commands.Queue.Delete: self.queue_delete,
        }

    def expand_queue_name(self, method: Any) -> None:
        """The spec's shortcut: an empty queue name is the queue last declared on this channel,
        and a queue.bind/unbind with an empty routing key too binds by that queue's name."""
        if not self.last_queue:
            raise NotFound("no previously declared queue")
        method.queue = self.last_queue
        if isinstance(method, commands.Queue.Bind | commands.Queue.Unbind):
            method.routing_key = method.routing_key or self.last_queue

    def usable_queue(self, name: str) -> Queue:
        """The named queue, 404 if missing, 405 if another connection's exclusive queue."""
        queue = self.broker.get_queue(self.vhost_name, name)
        queue.check_exclusive(self.owner)
        return queue

    def _save_if(self, durable: bool) -> None:
        if durable:
            self.broker.save(self.vhost_name)

    # -- exchanges -------------------------------------------------------------------------
    def exchange_declare(self, method: Any) -> None:
        self.access.permit_exchange_declare(method)
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

    def exchange_delete(self, method: Any) -> None:
        self.access.permit_exchange_delete(method.exchange)
        existing = self.vhost.get_exchange(method.exchange)
        self.vhost.delete_exchange(method.exchange, if_unused=method.if_unused)
        self._save_if(existing is not None and existing.durable)
        if not method.nowait:
            self._send(commands.Exchange.DeleteOk())

    def exchange_bind(self, method: Any) -> None:
        self.access.permit_binding("exchange", method.destination, method.source)
        self.vhost.bind_exchange(
            method.destination, method.source, method.routing_key, method.arguments or {}
        )
        self._save_if(True)
        if not method.nowait:
            self._send(commands.Exchange.BindOk())

    def exchange_unbind(self, method: Any) -> None:
        self.access.permit_binding("exchange", method.destination, method.source)
        self.vhost.unbind_exchange(
            method.destination, method.source, method.routing_key, method.arguments or {}
        )
        self._save_if(True)
        if not method.nowait:
            self._send(commands.Exchange.UnbindOk())

    # -- queues ----------------------------------------------------------------------------
    def queue_declare(self, method: Any) -> None:
        if is_reply_name(method.queue):
            self._declare_reply_queue(method)
            return
        self.access.permit_queue_declare(method)
        owner = self.owner
        queue = self.broker.declare_queue(
            self.vhost_name,
            method.queue,
            passive=method.passive,
            durable=method.durable,
            exclusive_owner=owner if method.exclusive else None,
            auto_delete=method.auto_delete,
            arguments=method.arguments or {},
            connection=owner,
        )
        self.last_queue = queue.name
        if not method.nowait:
            self._send(
                commands.Queue.DeclareOk(queue.name, queue.message_count, queue.consumer_count)
            )

    def _declare_reply_queue(self, method: Any) -> None:
        """A declare of the direct reply-to pseudo-queue or of a reply name is passive
        whatever its flags (nothing can create one), as in RabbitMQ: declare-ok with no
        message and one consumer if it exists, 404 otherwise."""
        name = method.queue
        if name != REPLY_QUEUE and not self.broker.direct_replies.exists(self.vhost_name, name):
            raise NotFound(f"no {resource('queue', name, self.vhost_name)}")
        self.last_queue = name
        if not method.nowait:
            self._send(commands.Queue.DeclareOk(name, 0, 1))

    def queue_bind(self, method: Any) -> None:
        self.access.permit_binding("queue", method.queue, method.exchange)
        if self.vhost.get_exchange(method.exchange) is None:
            raise NotFound(f"no {resource('exchange', method.exchange, self.vhost_name)}")
        queue = self.usable_queue(method.queue)
        self.vhost.bind_queue(queue.name, method.exchange, method.routing_key,
                              method.arguments or {})
        self._save_if(queue.durable)
        if not method.nowait:
            self._send(commands.Queue.BindOk())

    def queue_unbind(self, method: Any) -> None:
        self.access.permit_binding("queue", method.queue, method.exchange)
        try:
            queue = self.usable_queue(method.queue)
        except NotFound:  # nothing to unbind: RabbitMQ answers unbind-ok
            self._send(commands.Queue.UnbindOk())
            return
        self.vhost.unbind_queue(queue.name, method.exchange, method.routing_key,
                                method.arguments or {})
        self._save_if(queue.durable)
        self._send(commands.Queue.UnbindOk())

    def queue_purge(self, method: Any) -> None:
        self.access.permit_queue(READ, method.queue)
        queue = self.usable_queue(method.queue)
        count = queue.purge()
        if not method.nowait:
            self._send(commands.Queue.PurgeOk(count))

    def queue_delete(self, method: Any) -> None:
        self.access.permit_queue(CONFIGURE, method.queue)
        try:
            queue = self.broker.get_queue(self.vhost_name, method.queue)
        except QueuesError:
            if not method.nowait:  # deleting a missing queue succeeds, as in RabbitMQ
                self._send(commands.Queue.DeleteOk(0))
            return
        queue.check_exclusive(self.owner)
        where = resource("queue", queue.name, self.vhost_name)
        if method.if_unused and queue.consumer_count:
            raise PreconditionFailed(f"{where} in use")
        if method.if_empty and queue.message_count:
            raise PreconditionFailed(f"{where} is not empty")
        count = self.broker.delete_queue(self.vhost_name, queue)
        if not method.nowait:
            self._send(commands.Queue.DeleteOk(count))
