"""UnackedDeliveries: tags in order, what an ack/nack/reject takes, the credit it gives back,
and both qos modes."""

from __future__ import annotations

import pytest

from dari.message import Message, encode_properties
from dari.queues.consumers import Delivery, PrefetchConsumer
from dari.queues.errors import PreconditionFailed
from dari.queues.queue import Queue
from dari.server.amqp_unacked import UnackedDeliveries


def filled(n: int) -> Queue:
    queue = Queue("q")
    for i in range(n):
        queue.publish(Message.from_amqp("", "q", encode_properties(), b"%d" % i))
    return queue


def consumed(queue: Queue, unacked: UnackedDeliveries, prefetch: int = 0) -> PrefetchConsumer:
    """A consumer whose deliveries the tracker records as the channel's delivery loop does."""
    consumer: PrefetchConsumer

    def deliver_many(deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            unacked.entries[unacked.next_tag] = (delivery, consumer)
            unacked.next_tag += 1

    consumer = PrefetchConsumer(
        "c", None, on_deliver_many=deliver_many, prefetch=prefetch,
        channel_credit=unacked.channel_credit,
    )
    queue.add_consumer(consumer)
    return consumer


def bodies(entries: list) -> list[bytes]:
    return [delivery.message.body for delivery, _consumer in entries]


def test_take_one_tag_or_a_prefix_with_multiple() -> None:
    unacked = UnackedDeliveries()
    consumed(filled(6), unacked)
    assert list(unacked.entries) == [1, 2, 3, 4, 5, 6]
    assert bodies(unacked.take(2, False)) == [b"1"]
    assert bodies(unacked.take(4, True)) == [b"0", b"2", b"3"]
    assert bodies(unacked.take(0, True)) == [b"4", b"5"]  # 0 with multiple: all
    assert unacked.entries == {}


@pytest.mark.parametrize(("tag", "multiple"), [(9, False), (1, True), (3, False)])
def test_an_unknown_tag_is_406(tag: int, multiple: bool) -> None:
    unacked = UnackedDeliveries()
    unacked.next_tag = 2  # tags 2 and 3 handed out, 3 already taken
    consumed(filled(2), unacked)
    unacked.take(3, False)
    with pytest.raises(PreconditionFailed, match=f"unknown delivery tag {tag}"):
        unacked.take(tag, multiple)


def test_settle_gives_the_credit_back_to_each_window() -> None:
    unacked = UnackedDeliveries()
    unacked.set_qos(3, global_=False)
    unacked.set_qos(4, global_=True)
    queue = filled(6)
    consumer = consumed(queue, unacked, prefetch=unacked.prefetch_count)
    assert len(unacked.entries) == 3 and consumer.in_flight == 3
    got = queue.get()
    assert got is not None and unacked.may_get(no_ack=False)
    assert unacked.track_get(got, no_ack=False) == 4
    assert unacked.channel_credit.in_flight == 4 and not unacked.may_get(no_ack=False)
    assert unacked.may_get(no_ack=True)  # a no-ack get is never limited
    unacked.settle(unacked.take(4, True))
    assert consumer.in_flight == 0 and unacked.channel_credit.in_flight == 0


def test_a_no_ack_get_gets_a_tag_but_stays_untracked() -> None:
    unacked = UnackedDeliveries()
    got = filled(1).get(no_ack=True)
    assert got is not None
    assert unacked.track_get(got, no_ack=True) == 1
    assert unacked.entries == {} and unacked.next_tag == 2


def test_take_all_empties_the_same_dict_in_tag_order() -> None:
    unacked = UnackedDeliveries()
    entries = unacked.entries
    consumed(filled(3), unacked)
    assert bodies(unacked.take_all()) == [b"0", b"1", b"2"]
    assert unacked.entries is entries and entries == {}
