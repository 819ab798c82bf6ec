"""The x-death history on dead-lettered messages, exactly as RabbitMQ 3.10 classic queues write it.

Retry loops in applications (and Celery, Spring AMQP, MassTransit) read ``x-death[0]["count"]``
and friends, so the layout, value types and ordering are checked field by field with pika.
"""

from __future__ import annotations

import datetime

import pika
from pika.adapters.blocking_connection import BlockingChannel
from pika.compat import long as amqp_long  # what pika decodes a 64-bit ``l`` field into

from .amqp_clients import Got, channel, get_one, wait_until

UTC = datetime.UTC


def _next(ch: BlockingChannel, queue: str, *, ack: bool = True) -> Got:
    got = wait_until(lambda: get_one(ch, queue), lambda g: g is not None, f"a message in {queue}")
    assert got is not None
    if ack:
        ch.basic_ack(got.delivery_tag)
    return got


def _now() -> datetime.datetime:
    return datetime.datetime.now(UTC)


def _death_time_ok(value: object, before: datetime.datetime) -> bool:
    """A timestamp in whole seconds, taken between ``before`` and now."""
    if not isinstance(value, datetime.datetime):
        return False
    slack = datetime.timedelta(seconds=1)
    return before.replace(microsecond=0) - slack <= value <= _now() + slack


def test_rejected_message_gets_x_death(amqp_url: str, name: str) -> None:
    dlx, dlq, source = f"{name}-dlx", f"{name}-dlq", f"{name}-src"
    with channel(amqp_url) as ch:
        ch.exchange_declare(dlx, "topic", auto_delete=True)
        ch.queue_declare(dlq, exclusive=True)
        ch.queue_bind(dlq, dlx, "#")
        ch.exchange_declare(source, "direct", auto_delete=True)
        ch.queue_declare(name, exclusive=True, arguments={"x-dead-letter-exchange": dlx})
        ch.queue_bind(name, source, "rk")
        before = _now()
        ch.basic_publish(
            source,
            "rk",
            b"payload",
            pika.BasicProperties(
                headers={"CC": ["cc1"], "attempt": 1},
                expiration="60000",
                content_type="text/plain",
                message_id="m-1",
            ),
        )
        got = _next(ch, name, ack=False)
        ch.basic_reject(got.delivery_tag, requeue=False)

        dead = _next(ch, dlq)
        assert dead.body == b"payload"
        assert (dead.exchange, dead.routing_key) == (dlx, "rk"), "republished to the DLX"
        props = dead.properties
        assert props.expiration is None, "the per-message TTL is removed"
        assert (props.content_type, props.message_id) == ("text/plain", "m-1")
        headers = props.headers
        assert list(headers) == sorted(headers), "RabbitMQ writes the headers sorted by key"
        (death,) = headers["x-death"]
        assert list(death) == [
            "count",
            "reason",
            "queue",
            "time",
            "exchange",
            "routing-keys",
            "original-expiration",
        ]
        assert type(death["count"]) is amqp_long and death["count"] == 1, "count is a long"
        assert death["reason"] == "rejected"
        assert death["queue"] == name
        assert _death_time_ok(death["time"], before), death["time"]
        assert death["exchange"] == source
        assert death["routing-keys"] == ["rk", "cc1"], "publish key plus the CC keys"
        assert death["original-expiration"] == "60000"
        assert headers["x-first-death-reason"] == "rejected"
        assert headers["x-first-death-queue"] == name
        assert headers["x-first-death-exchange"] == source
        assert headers["CC"] == ["cc1"] and headers["attempt"] == 1, "other headers are kept"


def test_expired_by_queue_ttl(amqp_url: str, name: str) -> None:
    with channel(amqp_url) as ch:
        ch.queue_declare(f"{name}-dlq", exclusive=True)
        ch.queue_declare(
            name,
            exclusive=True,
            arguments={
                "x-message-ttl": 50,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": f"{name}-dlq",
            },
        )
        before = _now()
        ch.basic_publish("", name, b"late")
        dead = _next(ch, f"{name}-dlq")
        assert (dead.exchange, dead.routing_key) == ("", f"{name}-dlq")
        (death,) = dead.properties.headers["x-death"]
        assert list(death) == ["count", "reason", "queue", "time", "exchange", "routing-keys"]
        assert death["count"] == 1 and death["reason"] == "expired"
        assert death["queue"] == name and death["exchange"] == ""
        assert death["routing-keys"] == [name]
        assert _death_time_ok(death["time"], before), death["time"]
        assert "original-expiration" not in death, "no per-message TTL, no original-expiration"
        assert dead.properties.headers["x-first-death-reason"] == "expired"


def test_expired_by_per_message_ttl(amqp_url: str, name: str) -> None:
    with channel(amqp_url) as ch:
        ch.queue_declare(f"{name}-dlq", exclusive=True)
        ch.queue_declare(
            name,
            exclusive=True,
            arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": f"{name}-dlq"},
        )
        ch.basic_publish(
            "", name, b"short", pika.BasicProperties(expiration="50", headers={"CC": ["other"]})
        )
        dead = _next(ch, f"{name}-dlq")
        assert dead.properties.expiration is None
        headers = dead.properties.headers
        (death,) = headers["x-death"]
        assert death["reason"] == "expired"
        assert death["original-expiration"] == "50"
        assert death["routing-keys"] == [name, "other"]
        assert "CC" not in headers, "x-dead-letter-routing-key drops the CC header"


def test_max_length_drop_head(amqp_url: str, name: str) -> None:
    with channel(amqp_url) as ch:
        ch.queue_declare(f"{name}-dlq", exclusive=True)
        ch.queue_declare(
            name,
            exclusive=True,
            arguments={
                "x-max-length": 1,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": f"{name}-dlq",
            },
        )
        ch.basic_publish("", name, b"first")
        ch.basic_publish("", name, b"second")
        dead = _next(ch, f"{name}-dlq")
        assert dead.body == b"first"
        (death,) = dead.properties.headers["x-death"]
        assert (death["count"], death["reason"], death["queue"]) == (1, "maxlen", name)


def test_repeated_rejection_increments_count(amqp_url: str, name: str) -> None:
    """A queue that dead-letters rejections to itself: one x-death entry, counted."""
    with channel(amqp_url) as ch:
        ch.queue_declare(name, exclusive=True, arguments={"x-dead-letter-exchange": ""})
        ch.basic_publish("", name, b"again")
        for _ in range(3):
            got = _next(ch, name, ack=False)
            ch.basic_reject(got.delivery_tag, requeue=False)
        dead = _next(ch, name)
        (death,) = dead.properties.headers["x-death"]
        assert list(death) == ["count", "exchange", "queue", "reason", "routing-keys", "time"], (
            "an updated entry is written with sorted keys"
        )
        assert type(death["count"]) is amqp_long and death["count"] == 3
        assert (death["reason"], death["queue"]) == ("rejected", name)


def test_retry_through_a_delay_queue(amqp_url: str, name: str) -> None:
    """The classic retry loop: work rejects into a TTL queue that dead-letters back to work.
    Rejections break the cycle, so it runs; the newest death is always first."""
    work, wait = f"{name}-work", f"{name}-wait"
    with channel(amqp_url) as ch:
        ch.queue_declare(
            work,
            exclusive=True,
            arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": wait},
        )
        ch.queue_declare(
            wait,
            exclusive=True,
            arguments={
                "x-message-ttl": 20,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": work,
            },
        )
        ch.basic_publish("", work, b"job")
        for attempt in range(1, 4):
            got = _next(ch, work, ack=False)
            deaths = (got.properties.headers or {}).get("x-death", [])
            assert [d["count"] for d in deaths] == ([attempt - 1] * 2 if attempt > 1 else [])
            ch.basic_reject(got.delivery_tag, requeue=False)
        got = _next(ch, work)
        deaths = got.properties.headers["x-death"]
        assert [(d["queue"], d["reason"], d["count"]) for d in deaths] == [
            (wait, "expired", 3),
            (work, "rejected", 3),
        ]
        assert got.properties.headers["x-first-death-queue"] == work
        assert got.properties.headers["x-first-death-reason"] == "rejected"


def test_history_order_across_queues(amqp_url: str, name: str) -> None:
    """Three queues rejecting along a chain, then back to the first: RabbitMQ 3.10 puts the
    newest death first but reverses the older entries each time it rewrites a longer history."""
    names = [f"{name}-{i}" for i in range(4)]
    with channel(amqp_url) as ch:
        for i, queue in enumerate(names):
            nxt = names[(i + 1) % len(names)]
            ch.queue_declare(
                queue,
                exclusive=True,
                arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": nxt},
            )
        ch.basic_publish("", names[0], b"hop")
        for i in range(5):
            got = _next(ch, names[i % 4], ack=False)
            ch.basic_reject(got.delivery_tag, requeue=False)
        got = _next(ch, names[1])
        deaths = got.properties.headers["x-death"]
        assert [(d["queue"], d["count"]) for d in deaths] == [
            (names[0], 2),
            (names[2], 1),
            (names[1], 1),
            (names[3], 1),
        ]


def test_automatic_cycle_is_dropped(amqp_url: str, name: str) -> None:
    """A queue whose expired messages dead-letter back into itself: RabbitMQ drops that copy
    (a cycle with no rejection) and still delivers to the other queues the DLX routes to."""
    fanout, tap = f"{name}-fan", f"{name}-tap"
    with channel(amqp_url) as ch:
        ch.exchange_declare(fanout, "fanout", auto_delete=True)
        ch.queue_declare(tap, exclusive=True)
        ch.queue_declare(
            name,
            exclusive=True,
            arguments={"x-message-ttl": 30, "x-dead-letter-exchange": fanout},
        )
        ch.queue_bind(tap, fanout)
        ch.queue_bind(name, fanout)
        ch.basic_publish("", name, b"looping")
        first = _next(ch, tap)
        assert first.body == b"looping"
        assert first.properties.headers["x-death"][0]["count"] == 1
        # Had the copy gone back into the queue, it would expire (and reach the tap) before a
        # message published now.
        ch.basic_publish("", name, b"marker")
        second = _next(ch, tap)
        assert second.body == b"marker", "the cycling copy was not dropped"
        assert ch.queue_declare(name, passive=True).method.message_count == 0
