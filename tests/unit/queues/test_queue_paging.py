"""Durable queues page a backlog beyond their memory budget to the log and read it back in
order: nothing lost, nothing reordered, memory bounded, and restarts keep exactly the
unacknowledged persistent messages (transient ones paged to disk are dropped)."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from dari.message import Message, encode_properties
from dari.queues.consumers import Delivery, PrefetchConsumer
from dari.queues.queue import Queue
from dari.queues.queue_store import QueueStore

PERSISTENT = encode_properties(delivery_mode=2)
TRANSIENT = encode_properties(delivery_mode=1)
BUDGET = 1000  # bytes of ready bodies kept in memory


def pmsg(i: int) -> Message:
    return Message.from_amqp("", "jobs", PERSISTENT, b"p%05d" % i + b"." * 94)


def tmsg(i: int) -> Message:
    return Message.from_amqp("", "jobs", TRANSIENT, b"t%05d" % i + b"." * 94)


def open_queue(path: Path, budget: int = BUDGET) -> Queue:
    return Queue("jobs", durable=True, store=QueueStore.open(path), memory_bytes=budget)


def bodies(deliveries: list[Delivery]) -> list[bytes]:
    return [d.message.body[:6] for d in deliveries]


def drain(queue: Queue, ack: bool = True) -> list[Delivery]:
    out = []
    while (d := queue.get()) is not None:
        assert queue.ready_bytes >= 0
        if ack:
            queue.ack(d)
        out.append(d)
    queue.flush()
    return out


def test_backlog_beyond_the_budget_stays_on_disk_and_comes_back_in_order(tmp_path: Path) -> None:
    q = open_queue(tmp_path / "q")
    sent = []
    for i in range(300):
        m = tmsg(i) if i % 7 == 0 else pmsg(i)
        q.publish(m)
        sent.append(m.body[:6])
        assert q._ready_bytes <= BUDGET, "in-memory bodies stay within the budget"
    q.flush()
    assert q.message_count == 300
    assert q.paged_count > 250, "most of the backlog is only in the log"
    got = drain(q)
    assert bodies(got) == sent
    assert [d.message.delivery_mode for d in got] == [1 if b[:1] == b"t" else 2 for b in sent]
    assert q.message_count == 0 and q.paged_count == 0 and q.ready_bytes == 0


def test_a_consumer_drains_a_paged_backlog_in_order(tmp_path: Path) -> None:
    q = open_queue(tmp_path / "q")
    for i in range(500):
        q.publish(pmsg(i))
    q.flush()
    got: list[Delivery] = []
    consumer = PrefetchConsumer("c", got.append, prefetch=25)
    q.add_consumer(consumer)
    acked = 0
    while acked < 500:
        batch = got[acked:]
        assert batch, "the consumer keeps getting messages"
        q.ack_many(batch)
        consumer.settle(len(batch))
        acked += len(batch)
        q.dispatch()
    assert bodies(got) == [pmsg(i).body[:6] for i in range(500)]
    assert q.paged_count == 0 and q.message_count == 0


def test_publishing_while_paged_keeps_order_and_paging_ends_when_caught_up(
    tmp_path: Path,
) -> None:
    q = open_queue(tmp_path / "q")
    for i in range(100):
        q.publish(pmsg(i))
    first = [q.get() for _ in range(40)]
    for i in range(100, 150):
        q.publish(pmsg(i))
    rest = drain(q)
    assert bodies(first + rest) == [pmsg(i).body[:6] for i in range(150)]
    assert q._paged_from == -1, "back to memory once the paged tail is read"
    q.publish(pmsg(150))
    assert q.paged_count == 0 and q.message_count == 1


def test_clean_restart_keeps_the_paged_backlog_and_drops_paged_transients(
    tmp_path: Path,
) -> None:
    q = open_queue(tmp_path / "q")
    for i in range(200):
        q.publish(tmsg(i) if i % 5 == 0 else pmsg(i))
    q.flush()
    for d in [q.get() for _ in range(30)]:
        q.ack(d)
    q.close()
    again = open_queue(tmp_path / "q")
    expected = [pmsg(i).body[:6] for i in range(30, 200) if i % 5]
    assert again.message_count == len(expected) and again.paged_count > 0
    got = drain(again)
    assert bodies(got) == expected
    assert not any(d.redelivered for d in got), "none of them had been delivered"
    again.close()
    assert open_queue(tmp_path / "q").message_count == 0


def test_purge_acknowledges_the_paged_backlog(tmp_path: Path) -> None:
    q = open_queue(tmp_path / "q")
    for i in range(120):
        q.publish(pmsg(i))
    assert q.purge() == 120
    assert q.message_count == 0 and q.ready_bytes == 0
    q.publish(pmsg(999))
    q.close()
    again = open_queue(tmp_path / "q")
    assert bodies(drain(again)) == [pmsg(999).body[:6]]


def test_unacked_paged_messages_come_back_redelivered_in_place(tmp_path: Path) -> None:
    q = open_queue(tmp_path / "q")
    for i in range(60):
        q.publish(pmsg(i))
    taken = [q.get() for _ in range(20)]
    q.requeue_all(taken[5:10])
    got = drain(q)
    order = [d.message.body[:6] for d in got]
    assert order[:5] == [pmsg(i).body[:6] for i in range(5, 10)]
    assert [d.redelivered for d in got[:5]] == [True] * 5
    assert order[5:] == [pmsg(i).body[:6] for i in range(20, 60)]


@settings(max_examples=40, deadline=None)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("pub"), st.booleans()),
            st.tuples(st.just("get"), st.booleans()),
            st.just(("restart", False)),
        ),
        max_size=80,
    ),
    budget=st.sampled_from([0, 150, 400, 2000]),
)
def test_paging_is_invisible_to_order_and_content(tmp_path_factory, ops, budget) -> None:
    """Any mix of publishes (persistent or not), gets (acked or requeued) and clean
    restarts gives the same messages in the same order as a model without paging."""
    path = tmp_path_factory.mktemp("q")
    q = open_queue(path, budget)
    model: list[bytes] = []  # ready persistent-or-transient bodies in order
    n = 0
    for op, flag in ops:
        if op == "pub":
            m = pmsg(n) if flag else tmsg(n)
            n += 1
            q.publish(m)
            model.append(m.body[:6])
        elif op == "get":
            d = q.get()
            if not model:
                assert d is None
                continue
            assert d is not None and d.message.body[:6] == model[0]
            if flag:
                q.ack(d)
                model.pop(0)
            else:
                q.requeue_all([d])
        else:
            q.close()
            q = open_queue(path, budget)
            model = [b for b in model if b[:1] == b"p"]  # transients do not survive
        assert q.message_count == len(model)
    assert bodies(drain(q)) == model
    q.close()


def test_a_non_durable_queue_pages_to_a_scratch_store_and_removes_it(tmp_path: Path) -> None:
    made: list[QueueStore] = []

    def scratch() -> QueueStore:
        made.append(QueueStore.open(tmp_path / f"scratch-{len(made)}"))
        return made[-1]

    q = Queue("tmp", memory_bytes=BUDGET, scratch=scratch)
    for i in range(50):
        assert q.publish(tmsg(i) if i % 2 else pmsg(i)).offset == -1, (
            "nothing to wait for before confirming: a non-durable queue stays non-durable"
        )
    assert len(made) == 1 and q.paged_count > 30
    got = drain(q)
    assert bodies(got) == [(tmsg(i) if i % 2 else pmsg(i)).body[:6] for i in range(50)]
    assert not any(d.redelivered for d in got)
    q.delete()
    assert not (tmp_path / "scratch-0").exists(), "the scratch log goes with the queue"


def test_a_queue_that_never_pages_makes_no_scratch_store() -> None:
    def scratch() -> QueueStore:
        raise AssertionError("no paging, no scratch store")

    q = Queue("tmp", memory_bytes=10_000, scratch=scratch)
    for i in range(50):
        q.publish(pmsg(i))
    assert bodies(drain(q)) == [pmsg(i).body[:6] for i in range(50)]


def test_reading_back_matches_the_generic_record_reader() -> None:
    """The read-back decoder knows the layout this store writes; any other batch (a keyed
    record, as a Kafka producer would write) goes through the generic reader, same result."""
    from dari.queues.queue_store import encode_message_batch, iter_messages
    from dari.records import build_batch, iter_batch_records
    from dari.records.builder import NewRecord

    ours = bytearray(encode_message_batch([(pmsg(i), 1_000 + i) for i in range(5)]))
    ours[0:8] = (40).to_bytes(8, "big")  # base offset 40
    foreign = bytearray(build_batch([NewRecord(b"key", b"value", ())], now_ms=7))
    foreign[0:8] = (45).to_bytes(8, "big")
    data = bytes(ours + foreign)
    expected = [
        (record.offset, record.timestamp, Message.from_record(record))
        for _header, record in iter_batch_records(data)
    ]
    assert list(iter_messages(data)) == expected
    assert [offset for offset, _ts, _m in expected] == [40, 41, 42, 43, 44, 45]
