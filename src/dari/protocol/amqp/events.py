"""What ``AMQPConnection.next_event`` returns.

Events are immutable and slotted. They are NamedTuples rather than frozen dataclasses because
one is built per message (or per ack) on the hot path: a frozen slotted dataclass costs about
0.66 µs to construct on this class of machine, a NamedTuple about 0.32 µs. They still match
by class in ``match`` statements (``case ContentReceived(channel, publish, header, body):``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from dari.protocol.amqp.fastpath import ContentHeader, Publish
from dari.protocol.amqp.framing import PROTOCOL_HEADER

__all__ = [
    "BadProtocolHeader",
    "ContentReceived",
    "Event",
    "HeartbeatReceived",
    "MethodReceived",
    "ProtocolHeaderReceived",
]


class ProtocolHeaderReceived(NamedTuple):
    """The client sent ``AMQP\\x00\\x00\\x09\\x01``: answer with ``send_start()``."""

    header: bytes = PROTOCOL_HEADER


class BadProtocolHeader(NamedTuple):
    """The client spoke another protocol or version: write ``reply`` (our protocol header,
    as the spec asks) and close the socket. The connection is CLOSED."""

    received: bytes
    reply: bytes = PROTOCOL_HEADER


class MethodReceived(NamedTuple):
    """A method without content. ``method`` is a pamqp command object (``commands.Queue.
    Declare``...), or for the hot methods ``fastpath.Ack`` / ``Nack`` / ``Reject``."""

    channel: int
    method: Any


class ContentReceived(NamedTuple):
    """A complete basic.publish: method, content header and body.

    ``body`` is ``bytes`` or a ``memoryview`` into the receive buffer (when the body came in
    one frame); copy it (``bytes(body)``) if it must outlive the current batch of events.
    """

    channel: int
    publish: Publish
    header: ContentHeader
    body: bytes | memoryview


class HeartbeatReceived(NamedTuple):
    """A heartbeat frame (any received bytes also count as liveness)."""


Event = (
    ProtocolHeaderReceived
    | BadProtocolHeader
    | MethodReceived
    | ContentReceived
    | HeartbeatReceived
)
