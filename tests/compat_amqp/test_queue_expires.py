"""x-expires (queue TTL): a queue left unused for its period is deleted, as RabbitMQ does it.

"Unused" means no consumer, no redeclare and no basic.get for the whole period; publishing does
not count. Existence is probed with a mandatory publish under confirms, which (unlike a
passive declare) does not renew the lease. Instead of timing anything, each test declares a
control queue with the same period right after the queue under test: once the control is
gone, the period of the other queue has passed too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import ChannelClosedByBroker, UnroutableError

from broker import Broker

from .amqp_clients import assert_channel_closed, channel, connect, wait_until

PERIOD_MS = 400


@contextmanager
def prober(url: str) -> Iterator[Callable[[str], bool]]:
    """``exists(queue)``: routes a mandatory message to it through the default exchange."""
    conn = connect(url)
    try:
        ch = conn.channel()
        ch.confirm_delivery()

        def exists(queue: str) -> bool:
            try:
                ch.basic_publish("", queue, b"probe", mandatory=True)
            except UnroutableError:
                return False
            return True

        yield exists
    finally:
        if conn.is_open:
            conn.close()


def _expiring(ch: BlockingChannel, queue: str, period: int = PERIOD_MS, **kw: object) -> None:
    ch.queue_declare(queue, arguments={"x-expires": period}, **kw)  # type: ignore[arg-type]


def _assert_missing(url: str, queue: str) -> None:
    with channel(url) as ch:
        with pytest.raises(ChannelClosedByBroker) as exc:
            ch.queue_declare(queue, passive=True)
        assert_channel_closed(exc, 404, "NOT_FOUND", ch)
    assert exc.value.reply_text == f"NOT_FOUND - no queue '{queue}' in vhost '/'"


def test_unused_queue_is_deleted_with_its_bindings(amqp_url: str, name: str) -> None:
    exchange = f"{name}-fan"
    with channel(amqp_url) as ch, prober(amqp_url) as exists:
        ch.exchange_declare(exchange, "fanout", auto_delete=False)
        _expiring(ch, name)
        ch.queue_bind(name, exchange)
        ch.basic_publish(exchange, "", b"waiting")  # messages do not keep a queue alive
        wait_until(lambda: exists(name), lambda alive: not alive, f"{name} to expire")
        _assert_missing(amqp_url, name)

        ch.queue_declare(name, exclusive=True)
        ch.confirm_delivery()
        with pytest.raises(UnroutableError):
            ch.basic_publish(exchange, "", b"x", mandatory=True)  # the binding went with it
        ch.exchange_delete(exchange)


def test_consumer_keeps_queue_alive(amqp_url: str, name: str) -> None:
    control = f"{name}-control"
    with channel(amqp_url) as ch, prober(amqp_url) as exists:
        _expiring(ch, name)
        tag = ch.basic_consume(name, lambda *_: None)
        _expiring(ch, control)
        wait_until(lambda: exists(control), lambda alive: not alive, f"{control} to expire")
        assert exists(name), "a queue with a consumer must not expire"

        ch.basic_cancel(tag)  # the period starts again from the cancel
        wait_until(lambda: exists(name), lambda alive: not alive, f"{name} to expire")
        _assert_missing(amqp_url, name)


def test_redeclare_and_basic_get_renew_the_lease(amqp_url: str, name: str) -> None:
    redeclared, polled = f"{name}-redeclared", f"{name}-polled"
    control = f"{name}-control"
    with channel(amqp_url) as ch, prober(amqp_url) as exists:
        _expiring(ch, redeclared)
        _expiring(ch, polled)
        _expiring(ch, control)

        def use_and_probe() -> bool:
            _expiring(ch, redeclared)
            ch.basic_get(polled, auto_ack=True)
            return exists(control)

        wait_until(use_and_probe, lambda alive: not alive, f"{control} to expire")
        assert exists(redeclared), "redeclaring renews the lease"
        assert exists(polled), "basic.get renews the lease"
        wait_until(
            lambda: (exists(redeclared), exists(polled)),
            lambda state: state == (False, False),
            "both queues to expire once left alone",
        )


def test_durable_queue_deadline_restarts_on_broker_restart(own_broker: Broker, name: str) -> None:
    """RabbitMQ starts a recovered queue's period afresh; an expired durable queue is gone
    for good (its definition too)."""
    period = 3000
    url = own_broker.amqp_url
    with channel(url) as ch:
        _expiring(ch, name, period, durable=True)
        ch.basic_publish("", name, b"kept", pika.BasicProperties(delivery_mode=2))
    own_broker.terminate()
    stopped = time.monotonic()
    # Stay down longer than the period: only a restarted deadline lets the queue survive.
    wait_until(
        lambda: (time.monotonic() - stopped) * 1000,
        lambda ms: ms > period,
        "the period to pass while the broker is stopped",
    )
    own_broker.start()
    with prober(url) as exists:
        assert exists(name), "the period restarts when the broker recovers the queue"
        wait_until(lambda: exists(name), lambda alive: not alive, f"{name} to expire")
    own_broker.terminate()
    own_broker.start()
    _assert_missing(url, name)
