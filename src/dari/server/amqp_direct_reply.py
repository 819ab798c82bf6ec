"""The AMQP side of direct reply-to (``dari.queues.direct_reply``): a channel's reply consumer,
and the ``reply_to`` rewrite of the requests that channel publishes.

A channel has at most one reply consumer. It is registered in the broker's ``ReplyConsumers``
under a random reply name, writes each reply as one basic.deliver on its channel (no-ack, so
no unacked entry) and is unregistered when cancelled or when its channel closes.
"""

from __future__ import annotations

from dari.message import Message
from dari.protocol.amqp.properties import ContentHeader, decode_properties, encode_properties
from dari.queues.direct_reply import REPLY_QUEUE, ReplyConsumers
from dari.queues.errors import PreconditionFailed
from dari.server.amqp_channel_owner import ChannelOwner
from dari.server.amqp_unacked import UnackedDeliveries

REPLY_TO_FLAG = 1 << 9  # the reply-to bit of a content header's property flags


class ReplyConsumer:
    """The consumer of ``amq.rabbitmq.reply-to`` on one channel; owned by that channel (event
    loop thread). ``name`` is the reply name requests of the channel carry as ``reply_to``."""

    __slots__ = ("_add", "_number", "_owner", "_registry", "_unacked", "name", "tag")

    def __init__(
        self,
        owner: ChannelOwner,
        number: int,
        unacked: UnackedDeliveries,
        tag: str,
        vhost: str,
        registry: ReplyConsumers,
    ) -> None:
        self.tag = tag
        self._owner = owner
        self._number = number
        self._unacked = unacked  # for delivery tags only: replies are never acknowledged
        self._add = owner.conn.deliver_encoder(number, tag).add
        self._registry = registry
        self.name = registry.register(vhost, self.deliver)

    def deliver(self, message: Message) -> None:
        """Write one reply (called from whichever channel published it)."""
        conn = self._owner.conn
        if not conn.is_open(self._number):  # closing: the reply is dropped
            return
        unacked = self._unacked
        tag = unacked.next_tag
        unacked.next_tag = tag + 1
        parts: list[bytes] = []
        self._add(
            parts, tag, False, message.exchange, message.routing_key, message.properties,
            message.body,
        )
        self._owner.write(conn.send_deliveries(self._number, parts))

    def close(self) -> None:
        """Forget the reply name: replies to it are dropped from now on."""
        self._registry.unregister(self.name)


def rewrite_reply_to(header: ContentHeader, reply: ReplyConsumer | None) -> ContentHeader:
    """``header`` with ``reply_to = amq.rabbitmq.reply-to`` replaced by the reply name of the
    publishing channel's reply consumer (other headers unchanged); 406 without one, as
    RabbitMQ answers. Called only for headers whose property bytes mention the pseudo-queue."""
    if header.reply_to != REPLY_QUEUE:
        return header
    if reply is None:
        raise PreconditionFailed("fast reply consumer does not exist")
    properties = encode_properties(decode_properties(header.raw_properties), reply_to=reply.name)
    return ContentHeader(header.raw[:12] + properties)
