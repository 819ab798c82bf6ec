"""Bad input over a real socket gets a Kafka error code or a closed connection, never a dead broker.

Requests are written by hand (Produce v3, the simplest flexible-free version) so the test can send
what no well-behaved client would: a flipped CRC bit, an oversized batch, garbage, unknown APIs.
After each abuse a normal client must still be served.
"""

from __future__ import annotations

import socket
import struct

import pytest

from broker import Broker
from compat_kafka import raw
from compat_kafka.clients import Sent, consume_range, produce_all, producer
from dari.records import build_batch

CORRUPT_MESSAGE = 2
MESSAGE_TOO_LARGE = 10


def _produce_error_code(bootstrap: str, topic: str, records: bytes) -> int:
    with raw.connect(bootstrap) as sock:
        return raw.produce_result(sock, topic, records)[0]


def _closed_after(bootstrap: str, data: bytes) -> bool:
    host, port = bootstrap.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(data)
        try:
            return sock.recv(1024) == b""
        except ConnectionResetError:
            return True


def _still_serves(bootstrap: str, topic: str) -> None:
    sent = [Sent(key=b"k", value=b"still alive", headers=(), timestamp=None)]
    produce_all(producer(bootstrap, acks="all"), topic, sent)
    got = consume_range(bootstrap, topic, count=1)
    assert [r.value for r in got] == [b"still alive"]


def test_corrupt_crc_is_refused_with_corrupt_message(broker: Broker, topic: str) -> None:
    batch = bytearray(build_batch([(b"key", b"value")]))
    batch[-1] ^= 0x01  # a flipped bit inside the CRC-covered records
    assert _produce_error_code(broker.bootstrap, topic, bytes(batch)) == CORRUPT_MESSAGE
    _still_serves(broker.bootstrap, topic)


def test_oversized_batch_is_refused_with_message_too_large(make_broker, topic: str) -> None:
    broker = make_broker(settings={"message.max.bytes": 10_000})
    batch = build_batch([(b"key", b"x" * 20_000)])
    assert _produce_error_code(broker.bootstrap, topic, batch) == MESSAGE_TOO_LARGE
    _still_serves(broker.bootstrap, topic)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(struct.pack(">i", 200 * 1024 * 1024) + b"\0" * 64, id="over-request-limit"),
        pytest.param(struct.pack(">i", -5) + b"\0" * 16, id="negative-size"),
        pytest.param(struct.pack(">ihhi", 10, 9999, 0, 1) + b"\0\0", id="unknown-api"),
        pytest.param(struct.pack(">ihhi", 10, 3, 99, 1) + b"\0\0", id="unsupported-version"),
        pytest.param(struct.pack(">i", 40) + bytes(range(40)), id="garbage-body"),
    ],
)
def test_malformed_requests_close_the_connection(broker: Broker, topic: str, data: bytes) -> None:
    assert _closed_after(broker.bootstrap, data)
    _still_serves(broker.bootstrap, topic)
    assert broker.running
