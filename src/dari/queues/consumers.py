"""Ready-made consumers: prefetch windows (``Credit``) and ``PrefetchConsumer``.

A queue only needs something shaped like ``queue.Consumer``: it asks ``room()`` and hands over
up to that many ``Delivery`` objects with ``deliver_many()``. Prefetch accounting lives in the
consumer, so the same queue code serves per-consumer and per-channel (``global``) qos:
``PrefetchConsumer`` implements both with ``Credit`` windows the channel may share between its
consumers. Delivery tags are the channel's business: a ``Delivery`` carries the queue's own
``position`` for acknowledging, never a tag. (``Consumer`` and ``Delivery`` are defined next to
the queue that uses them and re-exported here; this module imports the queue, never the reverse.)
"""

from __future__ import annotations

from collections.abc import Callable

from dari.queues.queue import Consumer, Delivery

__all__ = ["UNLIMITED", "Consumer", "Credit", "Delivery", "PrefetchConsumer"]


UNLIMITED = 1 << 62  # room() of a consumer without a prefetch limit


class Credit:
    """A prefetch window: at most ``limit`` unacknowledged deliveries (0 = unlimited).

    basic.qos with global=false gives each consumer its own window; RabbitMQ's global=true
    is one window the channel shares between its consumers.
    """

    __slots__ = ("in_flight", "limit")

    def __init__(self, limit: int = 0) -> None:
        self.limit = limit
        self.in_flight = 0

    def available(self) -> bool:
        return self.limit == 0 or self.in_flight < self.limit

    def room(self) -> int:
        return UNLIMITED if self.limit == 0 else max(0, self.limit - self.in_flight)

    def settle(self, count: int = 1) -> None:
        self.in_flight = max(0, self.in_flight - count)


class PrefetchConsumer:
    """A ready-made ``Consumer``: counts in-flight deliveries against its own window and an
    optional shared channel window, and hands deliveries to ``on_deliver_many`` (a batch, as
    the channel encodes them) or else to ``on_deliver`` one by one.

    The channel calls ``settle()`` for each ack/nack/reject (and for requeued deliveries),
    then ``queue.dispatch()`` so the freed credit is used. ``no_ack`` consumers are never
    limited, as in RabbitMQ. ``blocked`` lets the channel stop deliveries (channel.flow).
    """

    __slots__ = (
        "blocked",
        "channel_credit",
        "credit",
        "exclusive",
        "no_ack",
        "on_cancel",
        "on_deliver",
        "on_deliver_many",
        "priority",
        "tag",
    )

    def __init__(
        self,
        tag: str,
        on_deliver: Callable[[Delivery], None] | None,
        *,
        no_ack: bool = False,
        prefetch: int = 0,
        channel_credit: Credit | None = None,
        priority: int = 0,
        exclusive: bool = False,
        on_cancel: Callable[[], None] | None = None,
        on_deliver_many: Callable[[list[Delivery]], None] | None = None,
    ) -> None:
        self.tag = tag
        self.on_deliver = on_deliver
        self.on_deliver_many = on_deliver_many
        self.no_ack = no_ack
        self.credit = Credit(prefetch)
        self.channel_credit = channel_credit
        self.priority = priority
        self.exclusive = exclusive
        self.on_cancel = on_cancel
        self.blocked = False

    def room(self) -> int:
        if self.blocked:
            return 0
        if self.no_ack:
            return UNLIMITED
        room = self.credit.room()
        shared = self.channel_credit
        return room if shared is None else min(room, shared.room())

    def deliver_many(self, deliveries: list[Delivery]) -> None:
        if not self.no_ack:
            self.credit.in_flight += len(deliveries)
            if self.channel_credit is not None:
                self.channel_credit.in_flight += len(deliveries)
        if self.on_deliver_many is not None:
            self.on_deliver_many(deliveries)
        elif self.on_deliver is not None:
            for delivery in deliveries:
                self.on_deliver(delivery)

    def settle(self, count: int = 1) -> None:
        """``count`` deliveries of this consumer were acked, rejected or requeued."""
        self.credit.settle(count)
        if self.channel_credit is not None:
            self.channel_credit.settle(count)

    def cancelled(self) -> None:
        if self.on_cancel is not None:
            self.on_cancel()

    @property
    def in_flight(self) -> int:
        return self.credit.in_flight

    def __repr__(self) -> str:
        return f"PrefetchConsumer({self.tag!r}, in_flight={self.credit.in_flight})"
