"""Delivery tags, unacknowledged deliveries and basic.qos prefetch windows of one AMQP channel.

Tags are handed out in ascending order and the unacked entries kept in that order (a dict), so
``multiple`` acks take a prefix and requeues on close or recover go back in delivery order.
RabbitMQ has two qos modes and dari both: ``global=false`` sets the window of each consumer
created afterwards, ``global=true`` one window the channel's consumers (and basic.get) share.
No I/O.
"""

from __future__ import annotations

from dari.queues.consumers import Credit, Delivery, PrefetchConsumer
from dari.queues.errors import PreconditionFailed

# An unacked delivery and the consumer whose credit it holds (None: a basic.get, which holds
# the channel's shared credit only).
Entry = tuple[Delivery, PrefetchConsumer | None]


class UnackedDeliveries:
    """One channel's delivery tags and outstanding deliveries; owned by that channel (event loop
    thread).

    The channel's batch delivery loop writes ``entries`` and ``next_tag`` directly (one dict
    store per message, no call); everything else goes through the methods.
    """

    __slots__ = ("channel_credit", "entries", "last_prefetch_count", "next_tag", "prefetch_count")

    def __init__(self) -> None:
        self.entries: dict[int, Entry] = {}
        self.next_tag = 1
        self.prefetch_count = 0  # basic.qos global=false: for consumers created afterwards
        self.channel_credit = Credit(0)  # basic.qos global=true: shared by the channel
        # the last basic.qos of either kind: quorum consumers' window (RabbitMQ 4 has no
        # global qos for them)
        self.last_prefetch_count = 0

    def set_qos(self, prefetch_count: int, global_: bool) -> None:
        self.last_prefetch_count = prefetch_count
        if global_:
            self.channel_credit.limit = prefetch_count
        else:
            self.prefetch_count = prefetch_count

    def may_get(self, no_ack: bool) -> bool:
        """Whether a basic.get fits the shared window (a no-ack get always does)."""
        return no_ack or self.channel_credit.available()

    def track_get(self, delivery: Delivery, no_ack: bool) -> int:
        """The tag of a basic.get-ok; unless ``no_ack``, the delivery stays unacked on the
        channel's shared credit."""
        tag = self.next_tag
        self.next_tag = tag + 1
        if not no_ack:
            self.entries[tag] = (delivery, None)
            self.channel_credit.in_flight += 1
        return tag

    def take(self, delivery_tag: int, multiple: bool) -> list[Entry]:
        """Remove and return the entries an ack, nack or reject addresses: one tag, or with
        ``multiple`` every tag up to it (0: all). 406 if none is outstanding."""
        entries = self.entries
        if multiple:
            if delivery_tag == 0:
                return self.take_all()
            tags = []
            for tag in entries:  # in ascending tag order: tags are handed out in order
                if tag > delivery_tag:
                    break
                tags.append(tag)
            if not tags:
                raise PreconditionFailed(f"unknown delivery tag {delivery_tag}")
            return [entries.pop(t) for t in tags]
        entry = entries.pop(delivery_tag, None)
        if entry is None:
            raise PreconditionFailed(f"unknown delivery tag {delivery_tag}")
        return [entry]

    def take_all(self) -> list[Entry]:
        """Every outstanding entry, in tag order (basic.recover, channel close)."""
        taken = list(self.entries.values())
        self.entries.clear()  # the same dict: the delivery loops hold it
        return taken

    def settle(self, entries: list[Entry]) -> None:
        """Give the credit of settled deliveries back to their consumers' windows (and the
        shared one); the queues then have room to dispatch more."""
        counts: dict[PrefetchConsumer | None, int] = {}
        for _delivery, consumer in entries:
            counts[consumer] = counts.get(consumer, 0) + 1
        for consumer, count in counts.items():
            if consumer is not None:
                consumer.settle(count)
            else:
                self.channel_credit.settle(count)
