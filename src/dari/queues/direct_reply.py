"""RabbitMQ's direct reply-to: replies that go straight to a consumer, with no queue between.

An RPC client consumes (no-ack) from the pseudo-queue ``amq.rabbitmq.reply-to`` and sends its
requests with ``reply_to = "amq.rabbitmq.reply-to"``; the broker rewrites that property to a
name of its own, ``amq.rabbitmq.reply-to.<key>``, and a responder on any connection publishes its
reply to the default exchange with that name as routing key. The reply is handed to the
consumer at once: nothing buffers, acknowledges or stores it, and a reply for a consumer that
is gone is dropped (at-most-once, as RabbitMQ documents).

The key is random (unguessable: a name is the capability to write to that consumer) and
forgotten when the consumer goes, so a name never works again after its channel closed.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from dari.message import Message

REPLY_QUEUE = "amq.rabbitmq.reply-to"
REPLY_PREFIX = REPLY_QUEUE + "."
# What a cheap substring test of raw property bytes looks for before any decoding.
REPLY_QUEUE_BYTES = REPLY_QUEUE.encode()

Deliver = Callable[[Message], None]


def is_reply_name(name: str) -> bool:
    """Whether ``name`` is the pseudo-queue or one of its reply names (never a real queue:
    ``amq.*`` queue names cannot be declared)."""
    return name.startswith(REPLY_QUEUE)


class ReplyConsumers:
    """The live reply names of a broker and who receives each one's replies.

    Owned by ``AMQPBroker`` (one per broker process); the channels register and unregister
    their reply consumers. Event loop thread only: not thread-safe.
    """

    def __init__(self) -> None:
        self._consumers: dict[str, tuple[str, Deliver]] = {}  # name -> (vhost, deliver)

    def register(self, vhost: str, deliver: Deliver) -> str:
        """A new reply name whose replies published in ``vhost`` go to ``deliver``."""
        while True:
            name = REPLY_PREFIX + secrets.token_urlsafe(24)
            if name not in self._consumers:
                self._consumers[name] = (vhost, deliver)
                return name

    def unregister(self, name: str) -> None:
        self._consumers.pop(name, None)

    def exists(self, vhost: str, name: str) -> bool:
        """Whether ``name`` is a live reply name of ``vhost`` (what a passive declare of it
        answers)."""
        entry = self._consumers.get(name)
        return entry is not None and entry[0] == vhost

    def deliver(self, vhost: str, message: Message) -> bool:
        """Hand a reply published to the default exchange of ``vhost`` (routing key: the reply
        name) to its consumer; False when there is none (the reply is dropped)."""
        entry = self._consumers.get(message.routing_key)
        if entry is None or entry[0] != vhost:
            return False
        entry[1](message)
        return True

    def __len__(self) -> int:
        return len(self._consumers)
