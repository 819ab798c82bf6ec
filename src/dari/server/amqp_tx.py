"""The open transaction of an AMQP channel in tx mode (``tx.select``).

Publishes and acks/nacks/rejects wait here until ``tx.commit`` applies them in the order they
arrived (publishes first, as RabbitMQ does) or ``tx.rollback`` drops them. No I/O.
"""

from __future__ import annotations

from typing import Any

from dari.protocol.amqp import ContentHeader, Publish

BufferedPublish = tuple[Publish, ContentHeader, bytes]


class TxBuffer:
    """What one channel's current transaction holds; owned by that channel (event loop
    thread). Bodies are copied: the received buffer is not kept past its socket read."""

    __slots__ = ("acks", "publishes")

    def __init__(self) -> None:
        self.publishes: list[BufferedPublish] = []
        self.acks: list[Any] = []  # Ack, Nack and Reject methods

    def publish(self, publish: Publish, header: ContentHeader, body: bytes | memoryview) -> None:
        self.publishes.append((publish, header, bytes(body)))

    def settle(self, method: Any) -> None:
        """An ack, nack or reject, applied at commit."""
        self.acks.append(method)

    def take(self) -> tuple[list[BufferedPublish], list[Any]]:
        """Everything buffered (for commit); the buffer starts a new transaction."""
        publishes, acks = self.publishes, self.acks
        self.publishes, self.acks = [], []
        return publishes, acks

    def clear(self) -> None:
        """tx.rollback."""
        self.publishes, self.acks = [], []
