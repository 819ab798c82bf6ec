"""pika helpers shared by the AMQP acceptance tests.

Every wait is bounded and fails saying what was still missing; nothing sleeps a fixed time and
hopes. Blocking pika objects belong to one thread each, so helpers take the channel to use.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import ChannelClosedByBroker, ConnectionClosedByBroker

from waiting import wait_until  # noqa: F401  (re-exported for the tests)

WAIT_S = 30.0


@dataclass(frozen=True)
class Got:
    """One delivery in plain comparable form."""

    body: bytes
    routing_key: str
    exchange: str
    redelivered: bool
    delivery_tag: int
    properties: pika.BasicProperties


def parameters(url: str) -> pika.URLParameters:
    params = pika.URLParameters(url)
    params.connection_attempts = 1
    params.socket_timeout = 10
    params.blocked_connection_timeout = WAIT_S
    return params


def connect(url: str) -> pika.BlockingConnection:
    return pika.BlockingConnection(parameters(url))


@contextmanager
def channel(url: str) -> Iterator[BlockingChannel]:
    """A channel on its own connection, closed afterwards whatever state the test left it in."""
    conn = connect(url)
    try:
        yield conn.channel()
    finally:
        if conn.is_open:
            conn.close()


def persistent(**fields: object) -> pika.BasicProperties:
    return pika.BasicProperties(delivery_mode=2, **fields)  # type: ignore[arg-type]


def get_one(ch: BlockingChannel, queue: str, *, auto_ack: bool = False) -> Got | None:
    method, props, body = ch.basic_get(queue, auto_ack=auto_ack)
    if method is None:
        return None
    return Got(
        body, method.routing_key, method.exchange, method.redelivered, method.delivery_tag, props
    )


def get_all(ch: BlockingChannel, queue: str) -> list[Got]:
    """basic.get with auto-ack until the queue reports empty: the queue's whole ready content."""
    out: list[Got] = []
    while (got := get_one(ch, queue, auto_ack=True)) is not None:
        out.append(got)
    return out


def consume(
    ch: BlockingChannel,
    queue: str,
    count: int,
    *,
    ack: bool = True,
    timeout: float = WAIT_S,
) -> list[Got]:
    """Receive exactly `count` deliveries through basic.consume (acking each unless ack=False)."""
    out: list[Got] = []
    deadline = time.monotonic() + timeout
    for method, props, body in ch.consume(queue, inactivity_timeout=0.1):
        if method is not None:
            out.append(
                Got(
                    body,
                    method.routing_key,
                    method.exchange,
                    method.redelivered,
                    method.delivery_tag,
                    props,
                )
            )
            if ack:
                ch.basic_ack(method.delivery_tag)
        if len(out) >= count:
            break
        assert time.monotonic() < deadline, (
            f"received {len(out)} of {count} messages from {queue!r} in {timeout:.0f} s; "
            f"bodies so far: {[g.body for g in out][:10]}"
        )
    ch.cancel()
    return out


def pump_until(
    conn: pika.BlockingConnection, done: Callable[[], bool], what: str, timeout: float = WAIT_S
) -> None:
    """Run a blocking connection's callbacks until `done()`; fail naming `what` on timeout."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        conn.process_data_events(time_limit=0.05)


def settle(conn: pika.BlockingConnection, seconds: float = 0.3) -> None:
    """Let the broker deliver anything more it would (used before asserting 'no more came')."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.05)


def queue_depth(ch: BlockingChannel, queue: str) -> int:
    return ch.queue_declare(queue, passive=True).method.message_count


def assert_channel_closed(
    exc: pytest.ExceptionInfo[BaseException], code: int, name: str, ch: BlockingChannel
) -> None:
    """The broker closed the channel (not the connection) with `code NAME - ...`."""
    err = exc.value
    assert isinstance(err, ChannelClosedByBroker), f"expected a channel error, got {err!r}"
    assert err.reply_code == code, f"expected reply code {code} {name}, got {err!r}"
    assert err.reply_text.startswith(name), f"reply text should start with {name}: {err!r}"
    assert not ch.is_open, "the channel must be closed after a channel exception"
    assert ch.connection.is_open, "a channel exception must leave the connection open"


def assert_connection_closed(
    exc: pytest.ExceptionInfo[BaseException], code: int, name: str, conn: pika.BlockingConnection
) -> None:
    """The broker closed the whole connection with `code NAME - ...` (a connection exception)."""
    err = exc.value
    assert isinstance(err, ConnectionClosedByBroker), f"expected a connection error, got {err!r}"
    assert err.reply_code == code, f"expected reply code {code} {name}, got {err!r}"
    assert err.reply_text.startswith(name), f"reply text should start with {name}: {err!r}"
    assert not conn.is_open, "a connection exception must close the connection"
