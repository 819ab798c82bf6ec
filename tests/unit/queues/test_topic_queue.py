"""TopicQueue: queues over Kafka topics on share-group state. Declaration (x-topic and its
refusals), publishes appended to the keyed partition, Kafka records as AMQP messages, competing
consumers with prefetch, ack/nack/reject mapped to ACCEPT/RELEASE/REJECT, dead-lettering
(rejected, delivery_limit), basic.get, purge, delete and acks that survive a restart. Real
topics, logs and share journals in a temporary data directory; no sockets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dari.config import DEFAULTS
from dari.message import KEY_HEADER, Field, Message, encode_properties
from dari.protocol.amqp.properties import decode_properties
from dari.queues.broker import AMQPBroker, User
from dari.queues.consumers import Delivery, PrefetchConsumer
from dari.queues.errors import NotFound, PreconditionFailed
from dari.queues.queue import Queue
from dari.queues.topic_queue import (
    DELIVERY_COUNT_HEADER,
    OFFSET_HEADER,
    PARTITION_HEADER,
    TopicQueue,
    group_name,
)
from dari.records import build_batch, iter_batches
from dari.records.builder import NewRecord
from dari.records.records import Record, iter_records
from dari.server.amqp_streams import TopicStreams
from dari.server.amqp_topic_queues import TopicShareGroups, partition_for_key
from dari.storage import FlushScheduler, LogConfig, LogStore
from dari.streams.share.coordinator import ShareCoordinator
from dari.streams.share.group_configs import GroupConfigs
from dari.streams.share.state_store import ShareStateStore
from dari.streams.topics import TopicManager


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class Env:
    """A broker with topics and share state over one data directory, reopened by
    ``restart``."""

    def __init__(self, data_dir: Path, auto_create: bool = True) -> None:
        self.data_dir = data_dir
        self.clock = Clock()
        self.auto_create = auto_create
        self.open()

    def open(self) -> None:
        self.store = LogStore(self.data_dir)
        self.topics = TopicManager(self.store, LogConfig(flush="os"))
        self.topics.load()
        self.shares = ShareStateStore(self.data_dir / ".meta" / "share")
        configs = GroupConfigs(self.data_dir / ".meta" / "group_configs.json", DEFAULTS)
        self.coordinator = ShareCoordinator(self.topics, self.shares, configs)
        self.coordinator.load()
        self.broker = AMQPBroker(
            self.data_dir, FlushScheduler(), LogConfig(),
            {"guest": User("guest", "guest", True, ("*",))},
            vhosts=("/", "a/b"), clock=self.clock, topics=TopicStreams(self.topics),
            topic_shares=TopicShareGroups(
                self.topics, self.coordinator, auto_create=self.auto_create, clock=self.clock
            ),
        )
        self.broker.load()

    def close(self) -> None:
        self.broker.close()
        self.shares.close()
        self.topics.close()
        self.store.close()

    def restart(self) -> None:
        self.close()
        self.open()

    def declare(self, name: str = "q", vhost: str = "/", **kw: Any) -> TopicQueue:
        options: dict[str, Any] = {
            "passive": False, "durable": True, "exclusive_owner": None, "auto_delete": False,
            "arguments": {"x-topic": "events"},
        }
        options.update(kw)
        queue = self.broker.declare_queue(vhost, name, **options)
        assert isinstance(queue, TopicQueue)
        return queue

    def produce(self, topic: str, values: list[bytes], partition: int = 0, **kw: Any) -> None:
        """Records as a Kafka producer appends them."""
        records = [NewRecord(kw.get("key"), v, kw.get("headers", ())) for v in values]
        result = self.topics.partition(topic, partition).append(
            build_batch(records, now_ms=1_700_000_000_123)
        )
        assert result.error is None


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path / "data")
    yield e
    e.close()


def consumer(tag: str = "c", prefetch: int = 1000, no_ack: bool = False) -> tuple[
    PrefetchConsumer, list[Delivery]
]:
    got: list[Delivery] = []
    return PrefetchConsumer(tag, got.append, prefetch=prefetch, no_ack=no_ack), got


def publish(queue: TopicQueue, count: int, start: int = 0, routing_key: str = "") -> None:
    for i in range(start, start + count):
        props = encode_properties(delivery_mode=2)
        queue.publish(Message.from_amqp("ex", routing_key, props, f"m{i}".encode()))


def bodies(deliveries: list[Delivery]) -> list[bytes]:
    return [d.message.body for d in deliveries]


def settle(c: PrefetchConsumer, queue: TopicQueue, deliveries: list[Delivery]) -> None:
    """What the channel does on basic.ack multiple."""
    queue.ack_many(deliveries)
    c.settle(len(deliveries))
    queue.dispatch()


def read_all(env: Env, topic: str, partition: int = 0) -> list[Record]:
    data = env.topics.partition(topic, partition).read(0, 1 << 20)
    return [r for _h, batch in iter_batches(data) for r in iter_records(batch)]


# -- declare -----------------------------------------------------------------------------------


def test_declare_creates_a_missing_topic_with_the_default_partitions(env: Env) -> None:
    queue = env.declare()
    topic = env.topics.get("events")
    assert topic is not None and len(topic.partitions) == 1
    assert queue.message_count == 0 and queue.durable


def test_missing_topic_is_404_without_auto_create(tmp_path: Path) -> None:
    e = Env(tmp_path / "data", auto_create=False)
    try:
        with pytest.raises(NotFound, match="no topic 'events'"):
            e.declare()
        e.topics.create("events", 3)
        assert len(e.declare().topic.partitions) == 3
    finally:
        e.close()


def test_group_name_of_another_vhost() -> None:
    assert group_name("/", "q") == "q"
    assert group_name("a/b", "q") == "a_b.q"


@pytest.mark.parametrize(
    ("kw", "text"),
    [
        ({"durable": False}, "invalid property 'non-durable' for queue 'q' in vhost '/'"),
        ({"auto_delete": True}, "invalid property 'auto-delete' for queue 'q' in vhost '/'"),
        ({"exclusive_owner": object()},
         "invalid property 'exclusive-owner' for queue 'q' in vhost '/'"),
        ({"arguments": {"x-topic": "events", "x-max-priority": 5}},
         "invalid arg 'x-max-priority' for queue 'q' in vhost '/' of queue type topic"),
        ({"arguments": {"x-topic": "events", "x-queue-type": "stream"}},
         "invalid arg 'x-queue-type' for queue 'q' in vhost '/': a queue over a topic cannot "
         "be of type 'stream'"),
        ({"arguments": {"x-topic": 5}},
         "invalid arg 'x-topic' for queue 'q' in vhost '/': {unacceptable_type,"),
        ({"arguments": {"x-topic": "no spaces"}},
         "invalid arg 'x-topic' for queue 'q' in vhost '/': 'no spaces' is not a legal topic"),
        ({"arguments": {"x-topic": "__consumer_offsets"}}, "is not a legal topic"),
        ({"arguments": {"x-topic": "events", "x-topic-offset": "middle"}},
         "invalid arg 'x-topic-offset' for queue 'q' in vhost '/': {invalid_offset,middle}"),
        ({"arguments": {"x-topic": "events", "x-delivery-limit": -1}},
         "invalid arg 'x-delivery-limit' for queue 'q' in vhost '/': {value_negative,-1}"),
        ({"arguments": {"x-topic": "events", "x-delivery-limit": "3"}},
         "invalid arg 'x-delivery-limit' for queue 'q' in vhost '/': \"expected integer"),
    ],
)
def test_declare_refusals(env: Env, kw: dict[str, Any], text: str) -> None:
    with pytest.raises(PreconditionFailed) as caught:
        env.declare(**kw)
    assert caught.value.reply_text.startswith(text) or text in caught.value.reply_text


def test_redeclare_with_another_topic_is_inequivalent(env: Env) -> None:
    env.declare()
    with pytest.raises(PreconditionFailed, match="inequivalent arg 'x-topic' for queue 'q'"):
        env.declare(arguments={"x-topic": "other"})
    assert env.declare() is env.broker.get_queue("/", "q")


def test_declared_queue_comes_back_after_a_restart(env: Env) -> None:
    env.declare()
    env.restart()
    assert isinstance(env.broker.get_queue("/", "q"), TopicQueue)


# -- publish -----------------------------------------------------------------------------------


def test_publish_appends_to_the_partition_of_the_routing_key(env: Env) -> None:
    env.topics.create("events", 4)
    queue = env.declare()
    for key in ("a", "b", "c", "d", "e"):
        publish(queue, 1, routing_key=key)
    for key in ("a", "b", "c", "d", "e"):
        index = partition_for_key(key.encode(), 4)
        keys = [Message.from_record(r).routing_key for r in read_all(env, "events", index)]
        assert key in keys


def test_published_message_reads_back_from_the_topic_unchanged(env: Env) -> None:
    queue = env.declare()
    props = encode_properties(delivery_mode=2, headers={"h": "v"}, message_id="m-1")
    queue.publish(Message.from_amqp("ex", "rk", props, b"body"))
    (record,) = read_all(env, "events")
    message = Message.from_record(record)
    assert (message.exchange, message.routing_key, message.body) == ("ex", "rk", b"body")
    assert message.properties == props


# -- record -> AMQP message --------------------------------------------------------------------


def test_a_kafka_record_becomes_an_amqp_message(env: Env) -> None:
    queue = env.declare()
    env.produce("events", [b"v1"], key=b"k1", headers=[("trace", b"t-1"), ("none", None)])
    c, got = consumer()
    queue.add_consumer(c)
    (delivery,) = got
    message = delivery.message
    assert message.body == b"v1" and message.routing_key == "k1" and not delivery.redelivered
    headers = message.typed_headers()
    assert headers["trace"] == Field("S", b"t-1")
    assert headers["none"] == Field("V", None)
    assert headers[KEY_HEADER] == Field("S", b"k1")
    assert headers[PARTITION_HEADER] == Field("l", 0)
    assert headers[OFFSET_HEADER] == Field("l", 0)
    assert message.delivery_mode == 0
    assert decode_properties(message.properties).timestamp == 1_700_000_000


# -- consumers and acks ------------------------------------------------------------------------


def test_competing_consumers_share_the_records_within_their_prefetch(env: Env) -> None:
    queue = env.declare()
    publish(queue, 30)
    a, got_a = consumer("a", prefetch=5)
    b, got_b = consumer("b", prefetch=5)
    queue.add_consumer(a)
    queue.add_consumer(b)
    assert len(got_a) == 5 and len(got_b) == 5
    assert queue.message_count == 20 and queue.unacked_count == 10
    seen: list[bytes] = []
    while len(seen) < 30:
        batch_a, batch_b = got_a[:], got_b[:]
        got_a.clear()
        got_b.clear()
        seen += bodies(batch_a) + bodies(batch_b)
        settle(a, queue, batch_a)
        settle(b, queue, batch_b)
    assert sorted(seen) == sorted(f"m{i}".encode() for i in range(30))
    assert queue.message_count == 0 and queue.unacked_count == 0


def test_consumers_with_uneven_room_take_every_acquired_record(env: Env) -> None:
    queue = env.declare()
    big, got_big = consumer("big", prefetch=100)
    small, got_small = consumer("small", prefetch=1)
    big.blocked = small.blocked = True  # (channel.flow) both are there when records are
    queue.add_consumer(big)
    queue.add_consumer(small)
    publish(queue, 50, routing_key="k")
    big.blocked = small.blocked = False
    queue.dispatch()
    assert len(got_big) + len(got_small) == 50 and len(got_small) == 1
    assert queue.unacked_count == 50 and queue.message_count == 0


def test_nack_with_requeue_redelivers_with_a_delivery_count(env: Env) -> None:
    queue = env.declare()
    publish(queue, 2)
    c, got = consumer(prefetch=1)
    queue.add_consumer(c)
    (first,) = got
    got.clear()
    c.settle()
    assert queue.reject(first, requeue=True)
    (again,) = got
    assert again.message.body == b"m0" and again.redelivered
    assert again.message.typed_headers()[DELIVERY_COUNT_HEADER] == Field("l", 1)
    assert again.message.persistent  # the AMQP properties are kept


def test_reject_archives_and_dead_letters(env: Env) -> None:
    queue = env.declare(
        arguments={"x-topic": "events", "x-dead-letter-exchange": "",
                   "x-dead-letter-routing-key": "dlq"}
    )
    dlq = env.broker.declare_queue(
        "/", "dlq", passive=False, durable=True, exclusive_owner=None, auto_delete=False,
        arguments={},
    )
    publish(queue, 1)
    c, got = consumer()
    queue.add_consumer(c)
    assert queue.reject(got[0], requeue=False)
    assert queue.message_count == 0
    dead = dlq.get(no_ack=True)
    assert dead is not None and dead.message.body == b"m0"
    death = dead.message.headers["x-death"][0]  # type: ignore[index]
    assert death["reason"] == "rejected" and death["queue"] == "q"


def test_delivery_limit_dead_letters_with_reason_delivery_limit(env: Env) -> None:
    queue = env.declare(
        arguments={"x-topic": "events", "x-delivery-limit": 1, "x-dead-letter-exchange": "",
                   "x-dead-letter-routing-key": "dlq"}
    )
    dlq = cast_queue(env.broker.declare_queue(
        "/", "dlq", passive=False, durable=True, exclusive_owner=None, auto_delete=False,
        arguments={},
    ))
    publish(queue, 1)
    c, got = consumer(prefetch=1)
    queue.add_consumer(c)
    for _ in range(2):  # the delivery and the one redelivery the limit allows
        delivery = got.pop()
        c.settle()
        queue.requeue_all([delivery])
    assert not got
    dead = dlq.get(no_ack=True)
    assert dead is not None and dead.message.body == b"m0"
    assert dead.message.headers["x-death"][0]["reason"] == "delivery_limit"  # type: ignore[index]


def cast_queue(queue: Any) -> Queue:
    assert isinstance(queue, Queue)
    return queue


def test_no_ack_consumers_accept_on_delivery(env: Env) -> None:
    queue = env.declare()
    publish(queue, 5)
    c, got = consumer(no_ack=True)
    queue.add_consumer(c)
    assert len(got) == 5 and queue.unacked_count == 0 and queue.message_count == 0
    env.restart()
    queue = env.broker.get_queue("/", "q")  # type: ignore[assignment]
    c, got = consumer()
    queue.add_consumer(c)
    assert got == []


def test_basic_get_acquires_one_record(env: Env) -> None:
    queue = env.declare()
    assert queue.get() is None
    publish(queue, 2)
    first = queue.get()
    assert first is not None and first.message.body == b"m0" and first.consumer_tag is None
    second = queue.get(no_ack=True)
    assert second is not None and second.message.body == b"m1"
    assert queue.get() is None
    assert queue.requeue_all([first]) == 1
    again = queue.get()
    assert again is not None and again.message.body == b"m0" and again.redelivered


def test_start_at_last_skips_the_existing_records(env: Env) -> None:
    env.topics.create("events", 1)
    env.produce("events", [b"old"])
    queue = env.declare(arguments={"x-topic": "events", "x-topic-offset": "last"})
    assert queue.message_count == 0
    env.produce("events", [b"new"])
    c, got = consumer()
    queue.add_consumer(c)
    assert bodies(got) == [b"new"]


def test_records_of_all_partitions_are_delivered(env: Env) -> None:
    env.topics.create("events", 3)
    for index in range(3):
        env.produce("events", [f"p{index}-{i}".encode() for i in range(4)], partition=index)
    queue = env.declare()
    assert queue.message_count == 12
    c, got = consumer()
    queue.add_consumer(c)
    assert sorted(bodies(got)) == sorted(f"p{p}-{i}".encode() for p in range(3) for i in range(4))


# -- purge, delete, restart --------------------------------------------------------------------


def test_purge_archives_what_is_not_acquired(env: Env) -> None:
    queue = env.declare()
    publish(queue, 10)
    held = queue.get()
    assert held is not None
    assert queue.purge() == 9
    assert queue.message_count == 0
    assert queue.ack(held)
    publish(queue, 1, start=10)
    c, got = consumer()
    queue.add_consumer(c)
    assert bodies(got) == [b"m10"]


def test_delete_forgets_the_group_state_but_keeps_the_topic(env: Env) -> None:
    queue = env.declare()
    publish(queue, 3)
    c, got = consumer()
    queue.add_consumer(c)
    settle(c, queue, got[:])
    assert env.broker.delete_queue("/", queue) == 0
    assert env.topics.get("events") is not None
    assert env.topics.partition("events", 0).high_watermark == 3
    again = env.declare()  # a new group: from the first record again
    c, got = consumer()
    again.add_consumer(c)
    assert len(got) == 3


def test_acks_survive_a_restart_and_unacked_records_come_back(env: Env) -> None:
    queue = env.declare()
    publish(queue, 10)
    c, got = consumer()
    queue.add_consumer(c)
    queue.ack_many(got[:4])
    queue.ack(got[7])
    env.shares.flush_pending()
    env.restart()
    queue = env.broker.get_queue("/", "q")  # type: ignore[assignment]
    assert queue.message_count == 5
    c, got = consumer()
    queue.add_consumer(c)
    assert bodies(got) == [b"m4", b"m5", b"m6", b"m8", b"m9"]
    assert all(d.redelivered for d in got)


def test_a_queue_whose_topic_was_deleted_while_down_waits_for_it(env: Env) -> None:
    queue = env.declare()
    publish(queue, 2)
    env.close()
    env.store = LogStore(env.data_dir)
    topics = TopicManager(env.store, LogConfig(flush="os"))
    topics.load()
    topics.delete("events")
    topics.close()
    env.store.close()
    env.open()
    assert env.topics.get("events") is None  # not made again by the recovery
    queue = env.broker.get_queue("/", "q")  # type: ignore[assignment]
    assert queue.message_count == 0
    assert not queue.publish(Message.from_amqp("", "", encode_properties(), b"x")).accepted
    env.topics.create("events", 1)
    publish(queue, 1)
    c, got = consumer()
    queue.add_consumer(c)
    assert bodies(got) == [b"m0"]
