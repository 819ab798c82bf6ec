"""What an AMQP channel needs from the connection that owns it.

The channel modules type their connection with this protocol instead of importing
``dari.server.amqp``, which creates the channels: the dependency points one way, and a channel can
be driven in tests by any object with these members.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Protocol

from dari.protocol.amqp import AMQPConnection
from dari.queues.broker import AMQPBroker


class ChannelOwner(Protocol):
    """The connection adapter of a channel (``AMQPServerConnection``); event loop thread only.

    Its identity is the owner of exclusive queues the channel declares.
    """

    conn: AMQPConnection  # the sans-IO connection: every frame the channel sends goes through it
    broker: AMQPBroker
    vhost: str | None  # set by connection.open, before any channel opens
    user: str | None
    capabilities: dict[str, Any]  # the client's, from connection.start-ok
    published: bool  # set by each publish; the owner blocks publishers during resource alarms

    def write(self, data: bytes) -> None:
        """Queue bytes to send; they go out in one write at the end of the loop turn."""

    def flush(self) -> None:
        """Send what was queued now (for output produced outside a socket read)."""

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` as a task the owner cancels when the connection goes."""
