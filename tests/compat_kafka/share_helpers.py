"""Helpers of the share-group tests: confluent-kafka ShareConsumers, group configs, raw APIs."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import pytest
from confluent_kafka import Message, ShareConsumer
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from broker import Broker

from .clients import Sent, admin, produce_all, producer

WAIT_S = 60.0
# Broker bounds low enough that tests can set short locks and small limits per group.
SHARE_SETTINGS = {
    "group.share.min.record.lock.duration.ms": 1000,
    "group.share.min.session.timeout.ms": 6000,
    "group.share.min.heartbeat.interval.ms": 500,
}


def start_share_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterable[Broker]:
    root = tmp_path_factory.mktemp("share-broker")
    broker = Broker(root / "data", log_dir=root / "logs", settings=SHARE_SETTINGS).start()
    yield broker
    broker.close()


def share_consumer(bootstrap: str, group: str, **config: object) -> ShareConsumer:
    return ShareConsumer({"bootstrap.servers": bootstrap, "group.id": group, **config})


def set_group_configs(bootstrap: str, group: str, **configs: object) -> None:
    """IncrementalAlterConfigs on resource type GROUP, e.g. share.auto.offset.reset."""
    client = admin(bootstrap)
    resource = ConfigResource(
        ResourceType.GROUP,
        group,
        incremental_configs=[
            ConfigEntry(
                name.replace("_", "."), str(value), incremental_operation=AlterConfigOpType.SET
            )
            for name, value in configs.items()
        ],
    )
    for future in client.incremental_alter_configs([resource]).values():
        future.result(timeout=WAIT_S)


def produce_values(bootstrap: str, topic: str, values: Iterable[bytes]) -> None:
    produce_all(producer(bootstrap), topic, (Sent(None, v, (), None, 0) for v in values))


def poll_until(
    consumers: list[ShareConsumer],
    done: Callable[[], bool],
    what: str,
    sink: Callable[[int, Message], None],
    timeout: float = WAIT_S,
) -> None:
    """Poll every consumer in turn, handing each record to ``sink(index, msg)``."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        for i, c in enumerate(consumers):
            for msg in c.poll(0.2):
                assert msg.error() is None, msg.error()
                sink(i, msg)
