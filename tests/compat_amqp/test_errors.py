"""Protocol errors: the reply codes and the channel-vs-connection scope RabbitMQ clients expect."""

from __future__ import annotations

import aio_pika
import aiormq
import pika
import pytest
from pika.exceptions import (
    ChannelClosedByBroker,
    ConnectionClosedByBroker,
    ProbableAuthenticationError,
)

from .amqp_clients import (
    assert_channel_closed,
    assert_connection_closed,
    connect,
    parameters,
    pump_until,
)
from .conftest import AmqpServer


def test_redeclare_with_different_arguments_is_precondition_failed(
    amqp_url: str, name: str
) -> None:
    conn = connect(amqp_url)
    try:
        ch = conn.channel()
        ch.queue_declare(name, auto_delete=True, arguments={"x-max-length": 10})
        ch.queue_declare(name, auto_delete=True, arguments={"x-max-length": 10})  # same: fine
        with pytest.raises(ChannelClosedByBroker) as exc:
            ch.queue_declare(name, auto_delete=True, arguments={"x-max-length": 20})
        assert_channel_closed(exc, 406, "PRECONDITION_FAILED", ch)

        ch = conn.channel()  # the connection survives; the queue keeps its first arguments
        with pytest.raises(ChannelClosedByBroker) as exc:
            ch.queue_declare(name, durable=True, auto_delete=True, arguments={"x-max-length": 10})
        assert_channel_closed(exc, 406, "PRECONDITION_FAILED", ch)
        conn.channel().queue_delete(name)
    finally:
        conn.close()


def test_redeclare_exchange_with_another_type_is_precondition_failed(
    amqp_url: str, name: str
) -> None:
    conn = connect(amqp_url)
    try:
        ch = conn.channel()
        ch.exchange_declare(name, "direct")
        with pytest.raises(ChannelClosedByBroker) as exc:
            ch.exchange_declare(name, "fanout")
        assert_channel_closed(exc, 406, "PRECONDITION_FAILED", ch)
        conn.channel().exchange_delete(name)
    finally:
        conn.close()


def test_passive_declare_of_unknown_queue_or_exchange_is_not_found(
    amqp_url: str, name: str
) -> None:
    conn = connect(amqp_url)
    try:
        ch = conn.channel()
        with pytest.raises(ChannelClosedByBroker) as exc:
            ch.queue_declare(f"{name}-missing", passive=True)
        assert_channel_closed(exc, 404, "NOT_FOUND", ch)

        ch = conn.channel()
        with pytest.raises(ChannelClosedByBroker) as exc:
            ch.exchange_declare(f"{name}-missing", passive=True)
        assert_channel_closed(exc, 404, "NOT_FOUND", ch)

        ch = conn.channel()
        ch.confirm_delivery()
        with pytest.raises(ChannelClosedByBroker) as exc:
            ch.basic_publish(f"{name}-missing", "key", b"x")
        assert_channel_closed(exc, 404, "NOT_FOUND", ch)

        ch = conn.channel()
        with pytest.raises(ChannelClosedByBroker) as exc:
            ch.basic_consume(f"{name}-missing", lambda *a: None)
        assert_channel_closed(exc, 404, "NOT_FOUND", ch)
    finally:
        conn.close()


def test_unbinding_what_does_not_exist_succeeds(amqp_url: str, name: str) -> None:
    """RabbitMQ answers unbind-ok for a missing queue, exchange or binding: unbinding is
    idempotent, and the channel stays open."""
    conn = connect(amqp_url)
    try:
        ch = conn.channel()
        ch.exchange_declare(name, "direct", auto_delete=True)
        ch.queue_declare(name, auto_delete=True)
        ch.queue_unbind(f"{name}-missing", name, "k")
        ch.queue_unbind(name, f"{name}-missing", "k")
        ch.queue_unbind(name, name, "never-bound")
        ch.exchange_unbind(f"{name}-missing", name, "k")
        ch.exchange_unbind(name, f"{name}-missing", "k")
        assert ch.is_open
        ch.queue_delete(name)
        ch.exchange_delete(name)
    finally:
        conn.close()


def test_exclusive_queue_is_locked_to_its_connection(amqp_url: str, name: str) -> None:
    owner = connect(amqp_url)
    other = connect(amqp_url)
    try:
        owner.channel().queue_declare(name, exclusive=True)
        for attempt in (
            lambda ch: ch.queue_declare(name, exclusive=True),
            lambda ch: ch.queue_declare(name, passive=True),
            lambda ch: ch.basic_consume(name, lambda *a: None),
        ):
            ch = other.channel()
            with pytest.raises(ChannelClosedByBroker) as exc:
                attempt(ch)
            assert_channel_closed(exc, 405, "RESOURCE_LOCKED", ch)

        owner.close()  # an exclusive queue dies with its connection
        ch = other.channel()
        with pytest.raises(ChannelClosedByBroker) as exc:
            ch.queue_declare(name, passive=True)
        assert_channel_closed(exc, 404, "NOT_FOUND", ch)
    finally:
        for conn in (owner, other):
            if conn.is_open:
                conn.close()


def test_bad_credentials_are_access_refused(amqp: AmqpServer) -> None:
    with pytest.raises(ProbableAuthenticationError) as exc:
        pika.BlockingConnection(parameters(amqp.url_with(password="wrong-password")))
    assert "403" in str(exc.value) and "ACCESS_REFUSED" in str(exc.value), (
        f"with authentication_failure_close the broker says connection.close 403: {exc.value!r}"
    )
    with pytest.raises(ProbableAuthenticationError):
        pika.BlockingConnection(parameters(amqp.url_with(user="nobody", password="guest")))


async def test_bad_credentials_with_aio_pika(amqp: AmqpServer) -> None:
    with pytest.raises(aiormq.exceptions.ProbableAuthenticationError) as exc:
        await aio_pika.connect(amqp.url_with(password="wrong-password"), timeout=10)
    assert "ACCESS_REFUSED" in str(exc.value)


def test_unknown_vhost_is_not_allowed(amqp: AmqpServer) -> None:
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as exc:
        pika.BlockingConnection(parameters(amqp.url_with(vhost="no-such-vhost")))
    assert "530" in str(exc.value) and "NOT_ALLOWED" in str(exc.value)


def test_qos_with_prefetch_size_is_not_implemented_and_closes_the_connection(
    amqp_url: str,
) -> None:
    conn = connect(amqp_url)
    ch = conn.channel()
    with pytest.raises(ConnectionClosedByBroker) as exc:
        ch.basic_qos(prefetch_size=4096, prefetch_count=1)
    assert_connection_closed(exc, 540, "NOT_IMPLEMENTED", conn)


def test_recover_without_requeue_is_not_implemented(amqp_url: str) -> None:
    conn = connect(amqp_url)
    ch = conn.channel()
    ch.basic_recover(requeue=True)  # the supported form is fine
    with pytest.raises(ConnectionClosedByBroker) as exc:
        ch.basic_recover(requeue=False)
    assert_connection_closed(exc, 540, "NOT_IMPLEMENTED", conn)


def test_recover_with_requeue_redelivers_unacked_messages(amqp_url: str, name: str) -> None:
    conn = connect(amqp_url)
    try:
        ch = conn.channel()
        ch.queue_declare(name, exclusive=True)
        ch.confirm_delivery()
        ch.basic_publish("", name, b"again")
        got: list[tuple[bytes, bool]] = []
        ch.basic_consume(name, lambda c, m, p, b: got.append((b, m.redelivered)))
        pump_until(conn, lambda: len(got) >= 1, "the first delivery")
        ch.basic_recover(requeue=True)
        pump_until(conn, lambda: len(got) >= 2, "the redelivery after basic.recover")
        assert got == [(b"again", False), (b"again", True)]
    finally:
        conn.close()


@pytest.mark.parametrize("method", ["ack", "nack", "reject"])
def test_settling_an_unknown_delivery_tag_is_precondition_failed(
    amqp_url: str, method: str
) -> None:
    conn = connect(amqp_url)
    try:
        ch = conn.channel()
        getattr(ch, f"basic_{method}")(42)
        with pytest.raises(ChannelClosedByBroker) as exc:
            ch.queue_declare("", exclusive=True)  # any synchronous call surfaces the close
        assert_channel_closed(exc, 406, "PRECONDITION_FAILED", ch)
        assert "unknown delivery tag 42" in exc.value.reply_text
    finally:
        conn.close()


def test_double_ack_is_precondition_failed(amqp_url: str, name: str) -> None:
    conn = connect(amqp_url)
    try:
        ch = conn.channel()
        ch.queue_declare(name, exclusive=True)
        ch.confirm_delivery()
        ch.basic_publish("", name, b"once")
        method, _props, _body = ch.basic_get(name)
        ch.basic_ack(method.delivery_tag)
        ch.basic_ack(method.delivery_tag)
        with pytest.raises(ChannelClosedByBroker) as exc:
            ch.queue_declare(name, passive=True)
        assert_channel_closed(exc, 406, "PRECONDITION_FAILED", ch)
        assert f"unknown delivery tag {method.delivery_tag}" in exc.value.reply_text
    finally:
        conn.close()


def test_tx_select_after_confirm_select_is_precondition_failed(amqp_url: str) -> None:
    conn = connect(amqp_url)
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        with pytest.raises(ChannelClosedByBroker) as exc:
            ch.tx_select()
        assert_channel_closed(exc, 406, "PRECONDITION_FAILED", ch)

        ch = conn.channel()
        ch.tx_select()
        with pytest.raises(ChannelClosedByBroker) as exc:
            ch.confirm_delivery()
        assert_channel_closed(exc, 406, "PRECONDITION_FAILED", ch)
    finally:
        conn.close()


def test_transactions_commit_and_rollback(amqp_url: str, name: str) -> None:
    conn = connect(amqp_url)
    try:
        ch = conn.channel()
        ch.queue_declare(name, exclusive=True)
        ch.tx_select()
        ch.basic_publish("", name, b"rolled back")
        ch.tx_rollback()
        ch.basic_publish("", name, b"committed")
        ch.tx_commit()
        method, _props, body = ch.basic_get(name, auto_ack=True)
        assert body == b"committed" and method.message_count == 0
    finally:
        conn.close()
