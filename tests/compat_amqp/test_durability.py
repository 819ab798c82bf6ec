"""What survives a broker restart: confirmed persistent messages after SIGKILL, durable topology
after SIGTERM; transient entities do not come back. Needs its own broker (skipped when external)."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from pika.exceptions import AMQPError, ChannelClosedByBroker

from broker import Broker

from .amqp_clients import (
    assert_channel_closed,
    channel,
    connect,
    get_all,
    persistent,
    queue_depth,
    wait_until,
)

KILL_AFTER = 400  # confirmed messages before the plug is pulled


class ConfirmedPublisher(threading.Thread):
    """Publishes persistent messages with confirms until the connection dies; records the
    confirmed ones (basic_publish returns only after the broker's ack)."""

    def __init__(self, url: str, queue: str) -> None:
        super().__init__(daemon=True)
        self.url, self.queue = url, queue
        self.confirmed: list[bytes] = []
        self.attempted = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            conn = connect(self.url)
            ch = conn.channel()
            ch.confirm_delivery()
            i = 0
            while True:
                body = f"msg-{i:06d}".encode()
                self.attempted = i + 1
                ch.basic_publish("", self.queue, body, properties=persistent(), mandatory=True)
                self.confirmed.append(body)
                i += 1
        except (AMQPError, OSError) as exc:  # the broker went away: expected
            self.error = exc


def test_confirmed_persistent_messages_survive_sigkill(own_broker: Broker, name: str) -> None:
    with channel(own_broker.amqp_url) as ch:
        ch.queue_declare(name, durable=True)
    publisher = ConfirmedPublisher(own_broker.amqp_url, name)
    publisher.start()
    wait_until(lambda: len(publisher.confirmed), lambda n: n >= KILL_AFTER, "confirmed publishes")
    own_broker.kill()
    publisher.join(timeout=30)
    assert not publisher.is_alive(), "publisher did not notice the broker died"
    confirmed = list(publisher.confirmed)

    own_broker.start()
    with channel(own_broker.amqp_url) as ch:
        got = get_all(ch, name)
    bodies = [g.body for g in got]
    missing = sorted(set(confirmed) - set(bodies))
    assert not missing, (
        f"{len(missing)} of {len(confirmed)} confirmed messages lost after SIGKILL, "
        f"first: {missing[:5]}"
    )
    sent = {f"msg-{i:06d}".encode() for i in range(publisher.attempted)}
    assert set(bodies) <= sent, "delivered something that was never published"
    seen: Counter[bytes] = Counter()
    for g in got:
        seen[g.body] += 1
        assert seen[g.body] == 1 or g.redelivered, f"{g.body!r} delivered twice, unflagged"
    firsts = list(dict.fromkeys(bodies))
    assert firsts == sorted(firsts), "one publisher's messages come back in publish order"
    assert all(g.properties.delivery_mode == 2 for g in got), "delivery mode is kept"


def test_durable_topology_survives_sigterm_restart_and_transient_does_not(
    own_broker: Broker, name: str
) -> None:
    url = own_broker.amqp_url
    with channel(url) as ch:
        ch.exchange_declare(f"{name}-dx", "topic", durable=True)
        ch.exchange_declare(f"{name}-dfan", "fanout", durable=True)
        ch.exchange_bind(f"{name}-dfan", f"{name}-dx", routing_key="fan.#")
        ch.queue_declare(f"{name}-dq", durable=True, arguments={"x-max-length": 100})
        ch.queue_bind(f"{name}-dq", f"{name}-dx", routing_key="orders.#")
        ch.queue_declare(f"{name}-dq2", durable=True)
        ch.queue_bind(f"{name}-dq2", f"{name}-dfan")

        ch.exchange_declare(f"{name}-tx", "direct", durable=False)
        ch.queue_declare(f"{name}-tq", durable=False)
        ch.queue_bind(f"{name}-tq", f"{name}-dx", routing_key="orders.#")

        ch.confirm_delivery()
        ch.basic_publish(f"{name}-dx", "orders.1", b"kept", properties=persistent())
        assert queue_depth(ch, f"{name}-tq") == 1

    own_broker.terminate()
    own_broker.start()

    conn = connect(url)
    try:
        ch = conn.channel()
        ch.exchange_declare(f"{name}-dx", passive=True)
        ch.exchange_declare(f"{name}-dfan", passive=True)
        assert queue_depth(ch, f"{name}-dq") == 1, "the persistent message survives"
        ch.queue_declare(f"{name}-dq", durable=True, arguments={"x-max-length": 100})
        with pytest.raises(ChannelClosedByBroker) as exc:
            ch.exchange_declare(f"{name}-tx", passive=True)
        assert_channel_closed(exc, 404, "NOT_FOUND", ch)  # the transient exchange is gone
        ch = conn.channel()
        with pytest.raises(ChannelClosedByBroker) as exc:
            ch.queue_declare(f"{name}-tq", passive=True)
        assert_channel_closed(exc, 404, "NOT_FOUND", ch)  # the transient queue is gone
        ch = conn.channel()

        ch.confirm_delivery()
        ch.basic_publish(f"{name}-dx", "orders.2", b"routed", properties=persistent())
        ch.basic_publish(f"{name}-dx", "fan.out", b"via e2e", properties=persistent())
        assert [g.body for g in get_all(ch, f"{name}-dq")] == [b"kept", b"routed"], (
            "the durable queue binding survived"
        )
        assert [g.body for g in get_all(ch, f"{name}-dq2")] == [b"via e2e"], (
            "the durable exchange-to-exchange binding survived"
        )
        with pytest.raises(ChannelClosedByBroker) as exc:
            ch.queue_declare(f"{name}-dq", durable=True, arguments={"x-max-length": 5})
        assert_channel_closed(exc, 406, "PRECONDITION_FAILED", ch)
    finally:
        conn.close()
