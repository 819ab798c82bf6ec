"""Helpers for the consumer-group acceptance tests: group consumers and bounded waits."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Message

from broker import Broker

WAIT_S = 30.0
FAST_GROUPS = {"group.initial.rebalance.delay.ms": 0}
# An AMQP listener on a free port, so these Kafka tests never contend for the default 5672.
FREE_AMQP = {"amqp_port": 0}


def start_groups_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A broker without the initial rebalance delay, for a module fixture (distinct groups)."""
    root: Path = tmp_path_factory.mktemp("groups-broker")
    broker = Broker(root / "data", log_dir=root / "logs", settings=FAST_GROUPS, amqp_port=0).start()
    yield broker
    broker.close()


def group_consumer(bootstrap: str, group: str, **config: object) -> Consumer:
    base: dict[str, object] = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
        "enable.auto.commit": False,
    }
    return Consumer({**base, **config})


def assigned(c: Consumer) -> set[int]:
    return {tp.partition for tp in c.assignment()}


def poll_all(consumers: Iterable[Consumer], timeout: float = 0.05) -> list[tuple[int, Message]]:
    """One poll round over every consumer: (consumer index, message) for each record."""
    out = []
    for index, c in enumerate(consumers):
        for msg in c.consume(num_messages=500, timeout=timeout):
            err = msg.error()
            if err is not None:
                assert err.code() == KafkaError._PARTITION_EOF, f"consumer error: {err}"
                continue
            out.append((index, msg))
    return out


def poll_until(
    consumers: list[Consumer],
    done: Callable[[], bool],
    what: str,
    timeout: float = WAIT_S,
    sink: list[tuple[int, Message]] | None = None,
) -> None:
    """Keep every consumer polling (rebalances need it) until ``done()``; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            state = [sorted(assigned(c)) for c in consumers]
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; {state}")
        got = poll_all(consumers)
        if sink is not None:
            sink.extend(got)


def java_hash_partition(group: str, partitions: int = 50) -> int:
    """Kafka's __consumer_offsets partition of a group: abs(String.hashCode) % partitions."""
    h = 0
    data = group.encode("utf-16-be")
    for i in range(0, len(data), 2):
        h = (31 * h + int.from_bytes(data[i : i + 2], "big")) & 0xFFFFFFFF
    return (h & 0x7FFFFFFF) % partitions
