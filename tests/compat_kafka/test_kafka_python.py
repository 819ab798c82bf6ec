"""kafka-python (pure-Python client) against dari: produce, manual assignment, offsets queries."""

from __future__ import annotations

import time

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from broker import Broker

N = 1000
BASE_TS = 1_700_000_000_000
WAIT_S = 30.0


def expected(i: int) -> tuple[bytes | None, bytes, list[tuple[str, bytes]], int]:
    key = f"kp-key-{i}".encode() if i % 7 else None
    value = f"kp-value-{i}-".encode() + bytes(range(i % 256))  # binary-safe values
    headers = [("n", str(i).encode()), ("bin", b"\x00\xff")]
    return key, value, headers, BASE_TS + i


def read_all(c: KafkaConsumer, count: int) -> list:
    out: list = []
    deadline = time.monotonic() + WAIT_S
    while len(out) < count:
        assert time.monotonic() < deadline, f"read {len(out)} of {count} records in {WAIT_S} s"
        for batch in c.poll(timeout_ms=500).values():
            out.extend(batch)
    return out


@pytest.mark.parametrize("compression", [None, "gzip", "lz4", "zstd"])
def test_kafka_python_round_trip(
    module_broker: Broker, topic: str, compression: str | None
) -> None:
    p = KafkaProducer(
        bootstrap_servers=module_broker.bootstrap,
        acks="all",
        linger_ms=5,
        compression_type=compression,
        request_timeout_ms=15000,
    )
    try:
        futures = []
        for i in range(N):
            key, value, headers, ts = expected(i)
            futures.append(
                p.send(topic, key=key, value=value, headers=headers, partition=0, timestamp_ms=ts)
            )
        p.flush(timeout=WAIT_S)
        offsets = [f.get(timeout=WAIT_S).offset for f in futures]
    finally:
        p.close(timeout=5)
    assert offsets == list(range(N)), f"acknowledged offsets not 0..{N - 1}: {offsets[:10]}"

    tp = TopicPartition(topic, 0)
    c = KafkaConsumer(
        bootstrap_servers=module_broker.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="none",
    )
    try:
        c.assign([tp])
        assert c.beginning_offsets([tp]) == {tp: 0}
        assert c.end_offsets([tp]) == {tp: N}
        c.seek_to_beginning(tp)
        records = read_all(c, N)
        assert c.position(tp) == N
        c.seek(tp, N - 5)
        tail = read_all(c, 5)
    finally:
        c.close()
    assert len(records) == N, f"read {len(records)} records, produced {N}"
    for i, rec in enumerate(records):
        key, value, headers, ts = expected(i)
        assert rec.offset == i, f"record {i} has offset {rec.offset}"
        assert (rec.key, rec.value) == (key, value), f"offset {i}: {rec.key!r} {rec.value[:20]!r}"
        assert list(rec.headers) == headers, f"offset {i}: headers {rec.headers!r}"
        assert rec.timestamp == ts, f"offset {i}: timestamp {rec.timestamp} != {ts}"
    assert [r.offset for r in tail] == list(range(N - 5, N))
