"""TxBuffer: what a transaction holds until commit or rollback."""

from __future__ import annotations

from dari.protocol.amqp import Ack, ContentHeader, Publish, Reject, encode_content_header
from dari.protocol.amqp.fastpath import Properties
from dari.server.amqp_tx import TxBuffer


def test_take_returns_everything_in_order_and_starts_over() -> None:
    tx = TxBuffer()
    header = ContentHeader(encode_content_header(3, Properties()))
    body = bytearray(b"abc")
    tx.publish(Publish("", "q"), header, memoryview(body))
    tx.settle(Ack(1))
    tx.settle(Reject(2, requeue=False))
    body[:] = b"xyz"  # the received buffer is reused: the transaction kept a copy
    publishes, acks = tx.take()
    assert publishes == [(Publish("", "q"), header, b"abc")]
    assert acks == [Ack(1), Reject(2, requeue=False)]
    assert tx.take() == ([], [])


def test_clear_drops_the_transaction() -> None:
    tx = TxBuffer()
    tx.publish(Publish("", "q"), ContentHeader(encode_content_header(0, Properties())), b"")
    tx.settle(Ack(1))
    tx.clear()
    assert tx.take() == ([], [])
