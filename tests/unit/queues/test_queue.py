"""Queue semantics in memory: ordering, prefetch, round robin, requeue, get, purge, auto-delete,
TTL, length limits and dead-lettering."""

from __future__ import annotations

import pytest

from dari.message import Message, encode_properties
from dari.queues.consumers import Credit, Delivery, PrefetchConsumer
from dari.queues.errors import AccessRefused, PreconditionFailed, ResourceLocked
from dari.queues.queue import PublishResult, Queue, QueueArguments, requeue


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def msg(i: int | str, **props: object) -> Message:
    raw = encode_properties(**props) if props else encode_properties()
    return Message.from_amqp("", "q", raw, str(i).encode())


class Sink:
    """A consumer recording what it got."""

    def __init__(self, tag: str, prefetch: int = 0, **kw: object) -> None:
        self.got: list[Delivery] = []
        self.consumer = PrefetchConsumer(tag, self.got.append, prefetch=prefetch, **kw)

    def bodies(self) -> list[bytes]:
        return [d.message.body for d in self.got]

    def ack_all(self, queue: Queue) -> None:
        for d in self.got:
            if queue.ack(d):
                self.consumer.settle()
        queue.dispatch()


def fill(queue: Queue, n: int, start: int = 0) -> list[PublishResult]:
    return [queue.publish(msg(i)) for i in range(start, start + n)]


def test_fifo_delivery_and_prefetch_window() -> None:
    q = Queue("q")
    fill(q, 10)
    sink = Sink("c1", prefetch=3)
    q.add_consumer(sink.consumer)
    assert sink.bodies() == [b"0", b"1", b"2"]
    assert q.message_count == 7 and q.unacked_count == 3
    assert q.ack(sink.got[0])
    sink.consumer.settle()
    assert q.dispatch() == 1
    assert sink.bodies()[-1] == b"3"
    assert all(not d.redelivered and d.consumer_tag == "c1" for d in sink.got)


def test_round_robin_is_fair_with_prefetch_one() -> None:
    q = Queue("q")
    a, b = Sink("a", prefetch=1), Sink("b", prefetch=1)
    q.add_consumer(a.consumer)
    q.add_consumer(b.consumer)
    fill(q, 6)
    assert (a.bodies(), b.bodies()) == ([b"0"], [b"1"])
    for _ in range(2):
        a.ack_all(q)
        b.ack_all(q)
    assert a.bodies() == [b"0", b"2", b"4"]
    assert b.bodies() == [b"1", b"3", b"5"]


def test_round_robin_without_prefetch_alternates() -> None:
    q = Queue("q")
    sinks = [Sink(t) for t in "abc"]
    for s in sinks:
        q.add_consumer(s.consumer)
    fill(q, 9)
    assert [len(s.got) for s in sinks] == [3, 3, 3]
    assert sinks[1].bodies() == [b"1", b"4", b"7"]


def test_higher_priority_consumers_are_served_first() -> None:
    q = Queue("q")
    low, high = Sink("low"), Sink("high", prefetch=2, priority=5)
    q.add_consumer(low.consumer)
    q.add_consumer(high.consumer)
    fill(q, 5)
    assert high.bodies() == [b"0", b"1"]
    assert low.bodies() == [b"2", b"3", b"4"]


def test_channel_wide_credit_is_shared() -> None:
    q = Queue("q")
    shared = Credit(2)
    a, b = Sink("a", channel_credit=shared), Sink("b", channel_credit=shared)
    q.add_consumer(a.consumer)
    q.add_consumer(b.consumer)
    fill(q, 5)
    assert len(a.got) + len(b.got) == 2
    assert q.message_count == 3


def test_no_ack_consumer_takes_everything_and_leaves_nothing_unacked() -> None:
    q = Queue("q")
    sink = Sink("c", no_ack=True, prefetch=1)
    q.add_consumer(sink.consumer)
    fill(q, 50)
    assert len(sink.got) == 50 and q.unacked_count == 0 and q.message_count == 0


def test_requeue_restores_original_order_with_redelivered_flag() -> None:
    q = Queue("q")
    fill(q, 6)
    got = [q.get() for _ in range(4)]  # 0..3 unacked, 4 and 5 ready
    assert q.requeue_all([got[3], got[1]]) == 2
    assert q.requeue_all([got[2], got[0]]) == 2
    order = []
    while (d := q.get(no_ack=True)) is not None:
        order.append((d.message.body, d.redelivered))
    assert order == [
        (b"0", True),
        (b"1", True),
        (b"2", True),
        (b"3", True),
        (b"4", False),
        (b"5", False),
    ]


def test_channel_close_requeues_two_consumers_interleaved() -> None:
    q = Queue("q")
    a, b = Sink("a", prefetch=2), Sink("b", prefetch=2)
    q.add_consumer(a.consumer)
    q.add_consumer(b.consumer)
    fill(q, 6)  # a: 0, 2; b: 1, 3; ready 4, 5
    q.cancel_consumer(b.consumer)
    assert q.requeue_all(b.got) == 2
    q.cancel_consumer(a.consumer)
    assert requeue(a.got) == 2
    bodies = [q.get(no_ack=True).message.body for _ in range(6)]
    assert bodies == [b"0", b"1", b"2", b"3", b"4", b"5"]
    assert q.get() is None


def test_requeued_message_goes_to_the_next_consumer_with_credit() -> None:
    q = Queue("q")
    a, b = Sink("a", prefetch=1), Sink("b", prefetch=1)
    q.add_consumer(a.consumer)
    fill(q, 1)
    q.add_consumer(b.consumer)
    assert q.reject(a.got[0], requeue=True)
    a.consumer.settle()
    assert b.got[0].message.body == b"0" and b.got[0].redelivered


def test_get_and_get_empty() -> None:
    q = Queue("q")
    assert q.get() is None
    fill(q, 2)
    d = q.get()
    assert d is not None and d.consumer_tag is None and d.message.body == b"0"
    assert q.message_count == 1 and q.unacked_count == 1
    assert q.ack(d) and not q.ack(d)  # a second ack of the same delivery is refused
    assert q.get(no_ack=True).message.body == b"1"
    assert q.unacked_count == 0 and q.get() is None


def test_reject_without_requeue_dead_letters_only_with_a_dlx() -> None:
    dead: list[tuple[str, bytes, str]] = []

    def hook(queue: Queue, message: Message, reason: str) -> None:
        dead.append((queue.name, message.body, reason))

    plain = Queue("plain", dead_letter=hook)
    fill(plain, 1)
    assert plain.reject(plain.get(), requeue=False)
    assert dead == [] and plain.message_count == 0
    q = Queue("q", arguments={"x-dead-letter-exchange": "dlx"}, dead_letter=hook)
    fill(q, 2)
    assert q.nack(q.get(), requeue=False)
    assert dead == [("q", b"0", "rejected")]
    assert q.message_count == 1


def test_purge_drops_ready_but_not_unacked() -> None:
    q = Queue("q")
    fill(q, 5)
    d = q.get()
    assert q.purge() == 4
    assert q.message_count == 0 and q.unacked_count == 1
    q.requeue_all([d])
    assert q.message_count == 1


def test_auto_delete_after_last_consumer_is_cancelled() -> None:
    gone: list[str] = []
    q = Queue("q", auto_delete=True, on_delete=lambda queue: gone.append(queue.name))
    fill(q, 3)
    a, b = Sink("a"), Sink("b")
    q.add_consumer(a.consumer)
    q.add_consumer(b.consumer)
    assert q.cancel_consumer("a") is a.consumer
    assert not q.deleted
    assert q.cancel_consumer(b.consumer) is b.consumer
    assert q.deleted and gone == ["q"]
    assert q.publish(msg(9)).accepted is False


def test_auto_delete_queue_without_consumers_stays() -> None:
    q = Queue("q", auto_delete=True)
    fill(q, 1)
    assert q.cancel_consumer("nobody") is None
    assert not q.deleted and q.message_count == 1


def test_delete_cancels_consumers_and_returns_ready_count() -> None:
    q = Queue("q")
    cancelled: list[str] = []
    sink = Sink("c", prefetch=1, on_cancel=lambda: cancelled.append("c"))
    q.add_consumer(sink.consumer)
    fill(q, 4)
    assert q.delete() == 3
    assert cancelled == ["c"] and q.consumer_count == 0 and q.deleted
    assert not q.ack(sink.got[0])


def test_exclusive_consumer_and_exclusive_queue() -> None:
    q = Queue("q", exclusive_owner="conn-1")
    q.add_consumer(Sink("a", exclusive=True).consumer)
    with pytest.raises(AccessRefused, match="in exclusive use"):
        q.add_consumer(Sink("b").consumer)
    q.check_exclusive("conn-1")
    with pytest.raises(ResourceLocked):
        q.check_exclusive("conn-2")
    other = Queue("r")
    other.add_consumer(Sink("a").consumer)
    with pytest.raises(AccessRefused):
        other.add_consumer(Sink("b", exclusive=True).consumer)


def test_queue_ttl_expires_messages_at_the_head() -> None:
    clock = Clock()
    dead: list[tuple[bytes, str]] = []
    q = Queue(
        "q",
        arguments={"x-message-ttl": 1000, "x-dead-letter-exchange": ""},
        clock=clock,
        dead_letter=lambda _q, m, reason: dead.append((m.body, reason)),
    )
    fill(q, 2)
    clock.now += 0.5
    fill(q, 1, start=2)
    assert q.next_expiry_ms() == 1_001_000
    clock.now += 0.6
    assert q.message_count == 1
    assert dead == [(b"0", "expired"), (b"1", "expired")]
    assert q.get().message.body == b"2"


def test_per_message_ttl_and_requeue_keeps_the_deadline() -> None:
    clock = Clock()
    q = Queue("q", clock=clock)
    q.publish(msg("short", expiration="100"))
    q.publish(msg("forever"))
    d = q.get()
    clock.now += 0.2
    q.requeue_all([d])  # requeued with its original deadline: expired now
    assert q.get(no_ack=True).message.body == b"forever"


def test_ttl_zero_is_delivered_only_to_a_waiting_consumer() -> None:
    clock = Clock()
    q = Queue("q", arguments={"x-message-ttl": 0}, clock=clock)
    fill(q, 1)
    assert q.message_count == 0
    sink = Sink("c")
    q.add_consumer(sink.consumer)
    fill(q, 1, start=1)
    assert sink.bodies() == [b"1"]


def test_max_length_drop_head() -> None:
    dead: list[bytes] = []
    q = Queue(
        "q",
        arguments={"x-max-length": 3, "x-dead-letter-exchange": "dlx"},
        dead_letter=lambda _q, m, reason: dead.append(m.body) if reason == "maxlen" else None,
    )
    results = fill(q, 5)
    assert all(r.accepted for r in results)
    assert [q.get(no_ack=True).message.body for _ in range(3)] == [b"2", b"3", b"4"]
    assert dead == [b"0", b"1"]


def test_max_length_reject_publish() -> None:
    q = Queue("q", arguments={"x-max-length": 2, "x-overflow": "reject-publish"})
    assert [r.accepted for r in fill(q, 4)] == [True, True, False, False]
    q.get(no_ack=True)
    assert q.publish(msg(9)).accepted


def test_max_length_bytes_drop_head() -> None:
    q = Queue("q", arguments={"x-max-length-bytes": 10})
    for i in range(4):
        q.publish(Message("", "q", b"%04d" % i))
    assert q.ready_bytes == 8 and q.message_count == 2
    assert q.get(no_ack=True).message.body == b"0002"


@pytest.mark.parametrize(
    ("arguments", "text"),
    [
        ({"x-message-ttl": -1}, "{value_negative,-1}"),
        ({"x-max-length": "10"}, '"expected integer, got longstr"'),
        ({"x-overflow": "explode"}, "invalid_overflow"),
        ({"x-expires": 0}, "{value_zero,0}"),
        ({"x-dead-letter-routing-key": "k"}, "routing_key_but_no_dlx_defined"),
        ({"x-max-priority": 300}, "{max_value_exceeded,300}"),
    ],
)
def test_invalid_arguments_are_precondition_failed(arguments: dict, text: str) -> None:
    with pytest.raises(PreconditionFailed) as info:
        Queue("q", arguments=arguments)
    assert info.value.reply_text.startswith("invalid arg '")
    assert info.value.reply_text.endswith(f"for queue 'q' in vhost '/': {text}")


def test_arguments_are_parsed_and_kept() -> None:
    args = QueueArguments.parse(
        {
            "x-message-ttl": 5,
            "x-dead-letter-exchange": b"dlx",
            "x-dead-letter-routing-key": "rk",
            "x-overflow": "reject-publish-dlx",
            "x-queue-type": "classic",
        }
    )
    assert (args.message_ttl, args.dead_letter_exchange, args.dead_letter_routing_key) == (
        5,
        "dlx",
        "rk",
    )
    assert args.overflow == "reject-publish-dlx"


def test_consumer_delivery_callback_may_ack_synchronously() -> None:
    q = Queue("q")
    seen: list[bytes] = []
    consumer: PrefetchConsumer

    def on_deliver(d: Delivery) -> None:
        seen.append(d.message.body)
        q.ack(d)
        consumer.settle()
        q.dispatch()  # re-entrant call is a no-op; the outer loop continues

    consumer = PrefetchConsumer("c", on_deliver, prefetch=1)
    q.add_consumer(consumer)
    fill(q, 5)
    assert seen == [b"0", b"1", b"2", b"3", b"4"] and q.unacked_count == 0
