"""aiokafka (asyncio client) against dari: produce, manual assignment, offsets queries."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from broker import Broker

N = 1000
BASE_TS = 1_700_000_000_000
WAIT_S = 30.0


def expected(i: int) -> tuple[bytes | None, bytes, list[tuple[str, bytes]], int]:
    key = f"aio-key-{i}".encode() if i % 5 else None
    value = f"aio-value-{i}-".encode() + b"z" * (i % 100)
    headers = [("n", str(i).encode()), ("kind", b"aio")]
    return key, value, headers, BASE_TS + 3 * i


async def read_all(c: AIOKafkaConsumer, count: int) -> list:
    out: list = []

    async def drain() -> None:
        while len(out) < count:
            for batch in (await c.getmany(timeout_ms=500)).values():
                out.extend(batch)

    try:
        await asyncio.wait_for(drain(), WAIT_S)
    except TimeoutError:
        raise AssertionError(f"read {len(out)} of {count} records in {WAIT_S} s") from None
    return out


@pytest.mark.parametrize("compression", [None, "gzip"])
async def test_aiokafka_round_trip(
    module_broker: Broker, topic: str, compression: str | None
) -> None:
    p = AIOKafkaProducer(
        bootstrap_servers=module_broker.bootstrap,
        acks="all",
        linger_ms=5,
        compression_type=compression,
    )
    await p.start()
    try:
        futures = []
        for i in range(N):
            key, value, headers, ts = expected(i)
            futures.append(
                await p.send(topic, value, key=key, partition=0, timestamp_ms=ts, headers=headers)
            )
        metas = await asyncio.wait_for(asyncio.gather(*futures), WAIT_S)
    finally:
        await p.stop()
    offsets = [m.offset for m in metas]
    assert offsets == list(range(N)), f"acknowledged offsets not 0..{N - 1}: {offsets[:10]}"

    tp = TopicPartition(topic, 0)
    c = AIOKafkaConsumer(
        bootstrap_servers=module_broker.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="none",
    )
    await c.start()
    try:
        c.assign([tp])
        assert await c.beginning_offsets([tp]) == {tp: 0}
        assert await c.end_offsets([tp]) == {tp: N}
        await c.seek_to_beginning(tp)
        records = await read_all(c, N)
        assert await c.position(tp) == N
        c.seek(tp, 123)
        middle = await read_all(c, N - 123)
    finally:
        await c.stop()
    assert len(records) == N, f"read {len(records)} records, produced {N}"
    for i, rec in enumerate(records):
        key, value, headers, ts = expected(i)
        assert rec.offset == i, f"record {i} has offset {rec.offset}"
        assert (rec.key, rec.value) == (key, value), f"offset {i}: {rec.key!r} {rec.value[:20]!r}"
        assert list(rec.headers) == headers, f"offset {i}: headers {rec.headers!r}"
        assert rec.timestamp == ts, f"offset {i}: timestamp {rec.timestamp} != {ts}"
    assert [r.offset for r in middle] == list(range(123, N))
