"""StreamQueue: stream declarations on the broker's topics (argument mapping, RabbitMQ's
refusals), appends as records, consumer offsets (first/last/next/offset/timestamp), the
x-stream-offset header, acks that never delete, independent consumers and recovery after a
restart. Real logs in a temporary data directory; no sockets."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dari.message import Field, Message, encode_properties
from dari.protocol.amqp.properties import decode_properties
from dari.queues.broker import AMQPBroker, User
from dari.queues.consumers import Delivery, PrefetchConsumer
from dari.queues.errors import FeatureNotImplemented, PreconditionFailed
from dari.queues.stream_queue import OffsetHeaders, StreamQueue, max_age_ms, topic_name
from dari.records import build_batch
from dari.records.records import iter_records
from dari.server.amqp_streams import TopicStreams
from dari.storage import FlushScheduler, LogConfig, LogStore
from dari.streams.topics import TopicManager

STREAM = {"x-queue-type": "stream"}


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class Env:
    """A broker with topics over one data directory, reopened by ``restart``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.clock = Clock()
        self.open()

    def open(self) -> None:
        self.store = LogStore(self.data_dir)
        self.topics = TopicManager(self.store, LogConfig(flush="os"))
        self.topics.load()
        self.broker = AMQPBroker(
            self.data_dir, FlushScheduler(), LogConfig(),
            {"guest": User("guest", "guest", True, ("*",))},
            vhosts=("/", "a/b"), clock=self.clock, topics=TopicStreams(self.topics),
        )
        self.broker.load()

    def close(self) -> None:
        self.broker.close()
        self.topics.close()
        self.store.close()

    def restart(self) -> None:
        self.close()
        self.open()

    def declare(self, name: str = "s", vhost: str = "/", **kw: Any) -> StreamQueue:
        options: dict[str, Any] = {
            "passive": False, "durable": True, "exclusive_owner": None, "auto_delete": False,
            "arguments": STREAM,
        }
        options.update(kw)
        queue = self.broker.declare_queue(vhost, name, **options)
        assert isinstance(queue, StreamQueue)
        return queue


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path / "data")
    yield e
    e.close()


def consumer(tag: str = "c", prefetch: int = 1000) -> tuple[PrefetchConsumer, list[Delivery]]:
    got: list[Delivery] = []
    return PrefetchConsumer(tag, got.append, prefetch=prefetch), got


def publish(queue: StreamQueue, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        props = encode_properties(delivery_mode=2)
        queue.publish(Message.from_amqp("ex", f"rk.{i}", props, f"m{i}".encode()))


def bodies(deliveries: list[Delivery]) -> list[bytes]:
    return [d.message.body for d in deliveries]


# -- declare -----------------------------------------------------------------------------------


def test_declare_makes_a_one_partition_topic_with_mapped_configs(env: Env) -> None:
    args = {
        **STREAM, "x-max-age": "7D", "x-max-length-bytes": 10_000_000,
        "x-stream-max-segment-size-bytes": 1_000_000,
    }
    env.declare("events", arguments=args)
    topic = env.topics.get("events")
    assert topic is not None and len(topic.partitions) == 1
    assert topic.configs == {
        "retention.ms": str(7 * 86_400_000), "retention.bytes": "10000000",
        "segment.bytes": "1000000",
    }


def test_topic_name_of_another_vhost(env: Env) -> None:
    assert topic_name("/", "q") == "q"
    assert topic_name("a/b", "q") == "a_b.q"
    env.declare("q", vhost="a/b")
    assert env.topics.get("a_b.q") is not None


@pytest.mark.parametrize(
    ("text", "ms"),
    [("7D", 7 * 86_400_000), ("12h", 43_200_000), ("30m", 1_800_000), ("10s", 10_000),
     ("1Y", 365 * 86_400_000), ("1M", 30 * 86_400_000), ("7x", None), ("D", None)],
)
def test_max_age_units(text: str, ms: int | None) -> None:
    assert max_age_ms(text) == ms


@pytest.mark.parametrize(
    ("kw", "text"),
    [
        ({"durable": False}, "invalid property 'non-durable' for queue 's' in vhost '/'"),
        ({"auto_delete": True}, "invalid property 'auto-delete' for queue 's' in vhost '/'"),
        ({"exclusive_owner": object()},
         "invalid property 'exclusive-owner' for queue 's' in vhost '/'"),
        ({"arguments": {**STREAM, "x-max-priority": 5}},
         "invalid arg 'x-max-priority' for queue 's' in vhost '/' of queue type "
         "rabbit_stream_queue"),
    ],
)
def test_refused_declarations(env: Env, kw: dict[str, Any], text: str) -> None:
    with pytest.raises(PreconditionFailed) as info:
        env.declare(**kw)
    assert info.value.reply_text == text
    assert env.topics.get("s") is None


def test_kafka_topic_is_opened_as_a_stream(env: Env) -> None:
    env.topics.create("k", 1)
    env.topics.partition("k", 0).append(build_batch([(b"key", b"v0"), (None, b"v1")]))
    queue = env.declare("k")
    c, got = consumer()
    queue.add_consumer(c, queue.start_offset("first"))
    assert bodies(got) == [b"v0", b"v1"]
    assert got[0].message.routing_key == "key"


# -- publish and consume -----------------------------------------------------------------------


def test_publish_appends_one_amqp_record_per_message(env: Env) -> None:
    queue = env.declare()
    publish(queue, 3)
    plog = env.topics.partition("s", 0).log
    assert plog.log_end_offset == 3
    records = [r for _h, b in plog.iter_batches(0) for r in iter_records(b)]
    assert [r.value for r in records] == [b"m0", b"m1", b"m2"]
    assert dict(records[1].headers)["x-amqp-routing-key"] == b"rk.1"
    assert all(r.timestamp == int(env.clock.now * 1000) for r in records)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("first", list(range(5))), ("last", [4]), ("next", []), (None, []), (3, [3, 4]),
     (-7, list(range(5))), (99, [])],
)
def test_start_offsets(env: Env, spec: Any, expected: list[int]) -> None:
    queue = env.declare()
    publish(queue, 5)
    c, got = consumer()
    queue.add_consumer(c, queue.start_offset(spec))
    assert [d.position for d in got] == expected


def test_start_from_a_timestamp(env: Env) -> None:
    queue = env.declare()
    publish(queue, 2)
    env.clock.now += 10
    publish(queue, 2, start=2)
    at = datetime.datetime.fromtimestamp(env.clock.now, datetime.UTC)
    c, got = consumer()
    queue.add_consumer(c, queue.start_offset(at))
    assert bodies(got) == [b"m2", b"m3"]


@pytest.mark.parametrize("spec", ["bogus", 1.5, True, {"a": 1}])
def test_bad_offset_spec_is_refused(env: Env, spec: Any) -> None:
    queue = env.declare()
    with pytest.raises(PreconditionFailed) as info:
        queue.start_offset(spec)
    assert info.value.reply_text.startswith(
        "failed consuming from stream queue 's' in vhost '/': "
    )


def test_next_gets_only_new_messages_and_offset_header(env: Env) -> None:
    queue = env.declare()
    publish(queue, 2)
    c, got = consumer()
    queue.add_consumer(c)
    assert got == []
    publish(queue, 2, start=2)
    assert bodies(got) == [b"m2", b"m3"]
    assert [d.message.headers["x-stream-offset"] for d in got] == [2, 3]  # type: ignore[index]
    assert got[0].message.typed_headers()["x-stream-offset"].tag == "l"
    assert got[0].message.delivery_mode == 2
    assert got[0].message.routing_key == "rk.2"


def test_prefetch_limits_and_acks_give_credit_back_without_deleting(env: Env) -> None:
    queue = env.declare()
    publish(queue, 5)
    c, got = consumer(prefetch=2)
    queue.add_consumer(c, queue.start_offset("first"))
    assert len(got) == 2
    for d in got[:2]:
        assert queue.ack(d)
    c.settle(2)
    queue.dispatch()
    assert [d.position for d in got] == [0, 1, 2, 3]
    assert queue.message_count == 5
    again, got_again = consumer("again")
    queue.add_consumer(again, queue.start_offset("first"))
    assert [d.position for d in got_again] == list(range(5))


def test_two_consumers_read_independently(env: Env) -> None:
    queue = env.declare()
    publish(queue, 3)
    a, got_a = consumer("a")
    b, got_b = consumer("b", prefetch=1)
    queue.add_consumer(a, queue.start_offset("first"))
    queue.add_consumer(b, queue.start_offset(1))
    assert [d.position for d in got_a] == [0, 1, 2]
    assert [d.position for d in got_b] == [1]
    assert queue.consumer_count == 2
    assert queue.cancel_consumer("a") is a
    publish(queue, 1, start=3)
    assert [d.position for d in got_a] == [0, 1, 2]


def test_consume_refusals_and_basic_get(env: Env) -> None:
    queue = env.declare()
    with pytest.raises(PreconditionFailed) as info:
        queue.check_consume(False, 0)
    assert info.value.reply_text == (
        "consumer prefetch count is not set for 'queue 's' in vhost '/''"
    )
    with pytest.raises(FeatureNotImplemented) as ni:
        queue.check_consume(True, 10)
    assert ni.value.reply_text == (
        "automatic acknowledgement not supported by stream queues queue 's' in vhost '/'"
    )
    with pytest.raises(FeatureNotImplemented) as ni:
        queue.check_consume(False, 10, 5)
    assert ni.value.reply_text == "queue 's' in vhost '/' does not support global qos"
    with pytest.raises(FeatureNotImplemented):
        queue.get()


def test_kafka_records_are_consumed_as_plain_messages(env: Env) -> None:
    queue = env.declare()
    env.topics.partition("s", 0).append(
        build_batch([(b"k", b"hello", [("h", b"v")])])
    )
    c, got = consumer()
    queue.add_consumer(c, queue.start_offset("first"))
    (delivery,) = got
    assert delivery.message.body == b"hello"
    assert delivery.message.headers == {"h": "v", "x-record-key": "k", "x-stream-offset": 0}
    assert decode_properties(delivery.message.properties).timestamp == delivery.enqueued_ms // 1000


def test_stream_survives_a_restart(env: Env) -> None:
    publish(env.declare(), 4)
    env.restart()
    queue = env.broker.get_queue("/", "s")
    assert isinstance(queue, StreamQueue)
    c, got = consumer()
    queue.add_consumer(c, queue.start_offset("first"))
    assert bodies(got) == [b"m0", b"m1", b"m2", b"m3"]


def test_redeclare_and_delete(env: Env) -> None:
    queue = env.declare()
    assert env.declare() is queue
    with pytest.raises(PreconditionFailed):
        env.declare(arguments={"x-queue-type": "classic"})
    env.broker.delete_queue("/", queue)
    assert env.topics.get("s") is None


def test_confirm_waits_for_the_flush_under_policy_always(tmp_path: Path) -> None:
    store = LogStore(tmp_path / "data")
    topics = TopicManager(store, LogConfig(flush="always"))
    flusher = FlushScheduler()
    broker = AMQPBroker(
        tmp_path / "data", flusher, LogConfig(), {}, topics=TopicStreams(topics)
    )

    async def run() -> None:
        queue = broker.declare_queue(
            "/", "s", passive=False, durable=True, exclusive_owner=None, auto_delete=False,
            arguments=STREAM,
        )
        result = queue.publish(Message("", "s", b"x"))
        assert result.accepted and result.offset == 0
        plog = topics.partition("s", 0).log
        assert plog.flushed_offset < 1
        await queue.wait_durable(result.offset)
        assert plog.flushed_offset >= 1
        await flusher.aclose()

    asyncio.run(run())
    topics.close()
    store.close()


def test_a_topic_of_several_partitions_is_not_a_stream(env: Env) -> None:
    env.topics.create("wide", 3)
    with pytest.raises(PreconditionFailed) as info:
        env.declare("wide")
    assert "has 3 partitions" in info.value.reply_text
    assert env.broker.vhost("/").get_queue("wide") is None


def test_a_queue_name_that_is_no_topic_name_is_refused(env: Env) -> None:
    with pytest.raises(PreconditionFailed) as info:
        env.declare("has space")
    assert "is not a legal topic name" in info.value.reply_text


@pytest.mark.parametrize(
    "properties",
    [encode_properties(), encode_properties(delivery_mode=2, message_id="id"),
     encode_properties(headers={"a": 1, "b": "two"}, priority=3, correlation_id="c")],
)
def test_offset_header_templates_encode_as_a_full_rewrite(properties: bytes) -> None:
    headers = OffsetHeaders()
    message = Message.from_amqp("ex", "rk", properties, b"body")
    for offset in (0, 7, 1 << 40, 7):
        fast = headers.add(message, offset)
        full = message.replace_properties(
            headers={**message.typed_headers(), "x-stream-offset": Field("l", offset)}
        )
        assert fast.properties == full.properties
        assert fast.headers["x-stream-offset"] == offset  # type: ignore[index]
        assert (fast.delivery_mode, fast.priority) == (message.delivery_mode, message.priority)


def test_a_reader_behind_the_log_start_continues_at_it(env: Env) -> None:
    queue = env.declare()
    publish(queue, 5)
    c, got = consumer(prefetch=1)
    queue.add_consumer(c, queue.start_offset("first"))
    assert [d.position for d in got] == [0]
    env.topics.partition("s", 0).delete_records(3)  # as retention would
    c.settle(1)
    queue.dispatch()
    assert [d.position for d in got] == [0, 3]


def test_consumers_at_one_offset_share_the_messages_of_a_read(env: Env) -> None:
    queue = env.declare()
    a, got_a = consumer("a", prefetch=2)
    b, got_b = consumer("b", prefetch=2)
    queue.add_consumer(a, queue.start_offset("first"))
    queue.add_consumer(b, queue.start_offset("first"))
    publish(queue, 6)
    for _ in range(2):
        a.settle(2)
        b.settle(2)
        queue.dispatch()
    assert [d.position for d in got_a] == [d.position for d in got_b] == list(range(6))
    assert {d.consumer_tag for d in got_a} == {"a"} and {d.consumer_tag for d in got_b} == {"b"}
    assert all(x.message is y.message for x, y in zip(got_a, got_b, strict=True))
    assert [d.message.headers["x-stream-offset"] for d in got_b] == list(range(6))  # type: ignore[index]


def test_a_consumer_reading_ahead_gets_nothing_once_the_topic_is_deleted(env: Env) -> None:
    queue = env.declare()
    publish(queue, 5)
    c, got = consumer(prefetch=1)
    queue.add_consumer(c, queue.start_offset("first"))
    assert [d.position for d in got] == [0]
    env.topics.delete("s")  # by a Kafka client, under the queue
    c.settle(1)
    queue.dispatch()
    assert [d.position for d in got] == [0]


def test_kafka_records_of_any_header_shape_read_as_from_record_says(env: Env) -> None:
    queue = env.declare()
    rows = [
        (b"k0", b"plain", []),
        (b"k1", None, [("h", b"v"), ("n", None)]),
        (None, b"routed", [("x-amqp-routing-key", b"rk"), ("x-amqp-exchange", b"ex")]),
        (b"k3", b"again", [("h", b"v"), ("n", None)]),
        (b"k4", b"amqp", [("x-amqp-properties", encode_properties(priority=4)), ("e", b"")]),
    ]
    batch = build_batch(rows)
    env.topics.partition("s", 0).append(batch)
    c, got = consumer()
    queue.add_consumer(c, queue.start_offset("first"))
    expected = [OffsetHeaders().add(Message.from_record(r), r.offset) for r in iter_records(batch)]
    assert [d.message for d in got] == expected
    assert [d.message.routing_key for d in got] == ["k0", "k1", "rk", "k3", "k4"]
    assert got[4].message.priority == 4


def test_a_caught_up_consumer_wakes_on_a_kafka_append(env: Env) -> None:
    queue = env.declare()
    c, got = consumer()

    async def run() -> None:
        queue.add_consumer(c)  # at "next": caught up, waits for the partition's next append
        await asyncio.sleep(0)
        env.topics.partition("s", 0).append(build_batch([b"from kafka"]))
        for _ in range(50):
            if got:
                break
            await asyncio.sleep(0.01)
        queue.cancel_consumer(c)

    asyncio.run(run())
    assert bodies(got) == [b"from kafka"]


# -- what Kafka consumers read of AMQP messages ---------------------------------------------


def _stored_records(env: Env, name: str = "s") -> list[Any]:
    log = env.topics.partition(name, 0).log
    return [r for _header, batch in log.iter_batches(0) for r in iter_records(batch)]


def test_a_binding_can_make_the_routing_key_the_record_key(env: Env) -> None:
    queue = env.declare()
    vhost = env.broker.vhost("/")
    vhost.declare_exchange("keyed", "topic", durable=True)
    vhost.declare_exchange("plain", "topic", durable=True)
    vhost.bind_queue("s", "keyed", "#", {"x-record-key": "routing-key"})
    vhost.bind_queue("s", "plain", "#")
    for exchange in ("keyed", "plain"):
        queue.publish(Message.from_amqp(exchange, "order.7", encode_properties(), b"x"))
    vhost.unbind_queue("s", "keyed", "#", {"x-record-key": "routing-key"})
    queue.publish(Message.from_amqp("keyed", "order.8", encode_properties(), b"x"))
    assert [r.key for r in _stored_records(env)] == [b"order.7", None, None]


def test_a_bad_record_key_binding_argument_is_refused(env: Env) -> None:
    env.declare()
    vhost = env.broker.vhost("/")
    vhost.declare_exchange("keyed", "topic", durable=True)
    with pytest.raises(PreconditionFailed) as refused:
        vhost.bind_queue("s", "keyed", "#", {"x-record-key": "body"})
    assert refused.value.reply_code == 406
    assert "x-record-key" in refused.value.reply_text
    assert not vhost.bindings_for_source("keyed")


def test_amqp_headers_and_timestamp_are_plain_record_fields(env: Env) -> None:
    queue = env.declare()
    props = encode_properties(headers={"trace": "t-1", "n": 5}, timestamp=1_750_000_000)
    queue.publish(Message.from_amqp("", "s", props, b"x"))
    (record,) = _stored_records(env)
    assert record.timestamp == 1_750_000_000_000
    assert dict(record.headers)["trace"] == b"t-1" and dict(record.headers)["n"] == b"5"
    c, got = consumer()
    queue.add_consumer(c, queue.start_offset("first"))
    assert got[0].message.headers == {"trace": "t-1", "n": 5, "x-stream-offset": 0}


def test_deleting_the_topic_deletes_the_stream_queue(env: Env) -> None:
    queue = env.declare()
    publish(queue, 3)
    cancelled: list[bool] = []
    c = PrefetchConsumer("c", None, prefetch=10, on_cancel=lambda: cancelled.append(True))
    queue.add_consumer(c, queue.start_offset("first"))
    env.topics.delete("s")  # what a Kafka DeleteTopics does
    assert queue.deleted and cancelled == [True]
    assert env.broker.vhost("/").get_queue("s") is None
    env.restart()
    assert env.broker.vhost("/").get_queue("s") is None
    again = env.declare()  # the name is free: a new, empty stream
    assert again.message_count == 0


def test_deleting_the_queue_deletes_its_topic_once(env: Env) -> None:
    queue = env.declare()
    env.broker.delete_queue("/", queue)
    assert env.topics.get("s") is None and env.broker.vhost("/").get_queue("s") is None


# -- a turn's publishes are appended together ------------------------------------------------


def test_a_turns_publishes_are_one_append_with_the_offsets_promised(env: Env) -> None:
    async def turn() -> None:
        queue = env.declare()
        props = encode_properties(delivery_mode=2)
        results = [queue.publish(Message.from_amqp("", "s", props, b"a")) for _ in range(3)]
        assert [r.offset for r in results] == [0, 1, 2]
        assert queue.partition.high_watermark == 0 and queue.message_count == 3
        # a Kafka append in the same turn goes after what the queue promised
        kafka = env.topics.partition("s", 0).append(build_batch([(None, b"k", [])]))
        assert kafka.base_offset == 3
        late = queue.publish(Message.from_amqp("", "s", props, b"b"))
        assert late.offset == 4
        await asyncio.sleep(0)  # the end of the turn
        assert queue.partition.high_watermark == 5
        await queue.wait_durable(late.offset)
        batches = list(queue.partition.log.iter_batches(0))
        assert [(h.base_offset, h.record_count) for h, _b in batches] == [(0, 3), (3, 1), (4, 1)]

    asyncio.run(turn())


def test_buffered_publishes_reach_consumers_and_survive_shutdown(env: Env) -> None:
    async def turn() -> list[Delivery]:
        queue = env.declare()
        c, got = consumer()
        queue.add_consumer(c, queue.start_offset("next"))
        publish(queue, 5)
        assert got == []
        await asyncio.sleep(0)
        assert bodies(got) == [f"m{i}".encode() for i in range(5)]
        publish(queue, 2, start=5)  # left buffered: the broker closes before the turn ends
        env.close()
        return got

    asyncio.run(turn())
    env.open()
    queue = env.broker.get_queue("/", "s")
    assert queue.message_count == 7


def test_a_failed_append_fails_the_confirm(env: Env) -> None:
    async def turn() -> None:
        queue = env.declare()
        result = queue.publish(Message.from_amqp("", "s", encode_properties(), b"x"))
        queue.partition.log.close()  # as when the topic is deleted under the queue
        with pytest.raises(Exception, match="failed"):
            await queue.wait_durable(result.offset)

    asyncio.run(turn())


def test_a_message_over_the_topics_max_message_bytes_is_refused(env: Env) -> None:
    queue = env.declare()
    limit = queue.partition.log.config.max_message_bytes
    assert not queue.publish(Message("", "s", b"x" * limit)).accepted
    assert queue.publish(Message("", "s", b"x" * (limit // 2))).accepted


def test_a_redeclare_compares_the_stream_arguments(env: Env) -> None:
    env.declare(arguments={**STREAM, "x-max-age": "7D"})
    env.declare(arguments={**STREAM, "x-max-age": "7D", "x-stream-offset": 1})  # not compared
    with pytest.raises(PreconditionFailed) as refused:
        env.declare(arguments={**STREAM, "x-max-age": "8D"})
    assert refused.value.reply_text == (
        "inequivalent arg 'x-max-age' for queue 's' in vhost '/': received '8D' but current "
        "is '7D'"
    )
    with pytest.raises(PreconditionFailed) as missing:
        env.declare(arguments=STREAM)
    assert "received none but current is the value '7D' of type 'longstr'" in (
        missing.value.reply_text
    )
