"""Priority queues: highest priority first, FIFO within a level, requeues back in place."""

from dari.message import Message
from dari.queues.consumers import PrefetchConsumer
from dari.queues.queue import Queue


def _message(body: str, priority: int | None) -> Message:
    return Message("", "q", body.encode(), priority=priority)


def test_higher_priorities_first_and_fifo_within_a_level() -> None:
    queue = Queue("q", arguments={"x-max-priority": 5})
    for body, priority in [("a", 1), ("b", None), ("c", 9), ("d", 1), ("e", 5)]:
        queue.publish(_message(body, priority))
    got = [queue.get(no_ack=True).message.body for _ in range(5)]
    # 9 is clamped to the maximum 5 and keeps its publish order against "e".
    assert got == [b"c", b"e", b"a", b"d", b"b"]
    assert queue.get() is None


def test_requeued_messages_return_to_their_place_in_their_level() -> None:
    queue = Queue("q", arguments={"x-max-priority": 2})
    delivered = []
    consumer = PrefetchConsumer("c", delivered.append, prefetch=2)
    for body, priority in [("h1", 2), ("h2", 2), ("h3", 2), ("l1", 0)]:
        queue.publish(_message(body, priority))
    queue.add_consumer(consumer)
    assert [d.message.body for d in delivered] == [b"h1", b"h2"]
    queue.cancel_consumer(consumer)
    queue.requeue_all(delivered)
    got = [queue.get(no_ack=True) for _ in range(4)]
    assert [d.message.body for d in got] == [b"h1", b"h2", b"h3", b"l1"]
    assert [d.redelivered for d in got] == [True, True, False, False]
