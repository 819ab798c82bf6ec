"""librdkafka's AdminClient (confluent-kafka) against dari: configs, cluster, DeleteRecords, and
config changes that take effect on the running broker and survive a restart."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
)

from broker import Broker

from .clients import (
    Sent,
    admin,
    consume_range,
    create_topic,
    produce_all,
    producer,
    wait_until,
    watermarks,
)

TIMEOUT = {"request_timeout": 15}
Factory = Callable[..., Broker]


def topic_configs(client: AdminClient, topic: str) -> dict[str, ConfigEntry]:
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    return client.describe_configs([resource], **TIMEOUT)[resource].result(timeout=30)


def incremental(client: AdminClient, topic: str, *entries: ConfigEntry) -> None:
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=list(entries))
    client.incremental_alter_configs([resource], **TIMEOUT)[resource].result(timeout=30)


def op(name: str, value: str | None, kind: AlterConfigOpType) -> ConfigEntry:
    return ConfigEntry(name, value, incremental_operation=kind)


def records(n: int, size: int = 200) -> list[Sent]:
    return [Sent(None, b"%08d" % i + b"." * size, (), None) for i in range(n)]


def test_describe_configs_of_a_topic_and_the_broker(module_broker: Broker, topic: str) -> None:
    create_topic(module_broker.bootstrap, topic, config={"retention.ms": "3600000"})
    client = admin(module_broker.bootstrap)
    configs = topic_configs(client, topic)
    retention = configs["retention.ms"]
    assert retention.value == "3600000"
    assert retention.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert not retention.is_default and not retention.is_read_only
    segment = configs["segment.bytes"]
    assert (segment.value, segment.is_default) == (str(1 << 30), True)
    assert configs["cleanup.policy"].value == "delete"

    broker = ConfigResource(ConfigResource.Type.BROKER, "0")
    described = client.describe_configs([broker], **TIMEOUT)[broker].result(timeout=30)
    assert described["num.partitions"].value == "1"
    assert described["auto.create.topics.enable"].value == "true"
    assert described["log.retention.ms"].is_read_only


def test_incremental_alter_configs_set_delete_append(module_broker: Broker, topic: str) -> None:
    create_topic(module_broker.bootstrap, topic)
    client = admin(module_broker.bootstrap)
    incremental(
        client,
        topic,
        op("retention.ms", "86400000", AlterConfigOpType.SET),
        op("cleanup.policy", "compact", AlterConfigOpType.APPEND),
    )
    configs = topic_configs(client, topic)
    assert configs["retention.ms"].value == "86400000"
    assert configs["cleanup.policy"].value == "delete,compact"

    incremental(
        client,
        topic,
        op("retention.ms", None, AlterConfigOpType.DELETE),
        op("cleanup.policy", "delete", AlterConfigOpType.SUBTRACT),
    )
    configs = topic_configs(client, topic)
    assert configs["retention.ms"].value == "604800000"
    assert configs["retention.ms"].is_default
    assert configs["cleanup.policy"].value == "compact"


def test_alter_configs_replaces_overrides(module_broker: Broker, topic: str) -> None:
    create_topic(module_broker.bootstrap, topic, config={"retention.ms": "3600000"})
    client = admin(module_broker.bootstrap)
    resource = ConfigResource(
        ConfigResource.Type.TOPIC, topic, set_config={"max.message.bytes": "200000"}
    )
    client.alter_configs([resource], **TIMEOUT)[resource].result(timeout=30)
    configs = topic_configs(client, topic)
    assert configs["max.message.bytes"].value == "200000"
    assert configs["retention.ms"].is_default  # not in the new set: back to the default


def test_bad_config_value_is_a_clear_invalid_config(module_broker: Broker, topic: str) -> None:
    create_topic(module_broker.bootstrap, topic)
    client = admin(module_broker.bootstrap)
    with pytest.raises(KafkaException) as info:
        incremental(client, topic, op("retention.ms", "a week", AlterConfigOpType.SET))
    error = info.value.args[0]
    assert error.code() == KafkaError.INVALID_CONFIG
    assert "retention.ms" in error.str()
    with pytest.raises(KafkaException) as info:
        incremental(client, topic, op("retention.weeks", "1", AlterConfigOpType.SET))
    assert "Unknown topic config name: retention.weeks" in info.value.args[0].str()
    assert topic_configs(client, topic)["retention.ms"].is_default


def test_describe_cluster(module_broker: Broker) -> None:
    client = admin(module_broker.bootstrap)
    result = client.describe_cluster(**TIMEOUT).result(timeout=30)
    assert result.cluster_id
    [node] = result.nodes
    assert (node.id, node.host, node.port) == (0, module_broker.host, module_broker.port)
    assert result.controller.id == 0


def test_dynamic_broker_configs_are_refused_clearly(module_broker: Broker) -> None:
    client = admin(module_broker.bootstrap)
    resource = ConfigResource(
        ConfigResource.Type.BROKER,
        "0",
        incremental_configs=[op("log.retention.ms", "1000", AlterConfigOpType.SET)],
    )
    with pytest.raises(KafkaException) as info:
        client.incremental_alter_configs([resource], **TIMEOUT)[resource].result(timeout=30)
    error = info.value.args[0]
    assert error.code() == KafkaError.INVALID_REQUEST
    assert "Cannot update these configs dynamically" in error.str()


def test_delete_records(module_broker: Broker, topic: str) -> None:
    create_topic(module_broker.bootstrap, topic)
    produce_all(producer(module_broker.bootstrap), topic, records(20, 10))
    client = admin(module_broker.bootstrap)
    futures = client.delete_records([TopicPartition(topic, 0, 12)], **TIMEOUT)
    deleted = futures[TopicPartition(topic, 0, 12)].result(timeout=30)
    assert deleted.low_watermark == 12
    assert watermarks(module_broker.bootstrap, topic) == (12, 20)
    got = consume_range(module_broker.bootstrap, topic, **{"auto.offset.reset": "earliest"})
    assert [r.offset for r in got] == list(range(12, 20))

    beyond = TopicPartition(topic, 0, 25)
    with pytest.raises(KafkaException) as info:
        client.delete_records([beyond], **TIMEOUT)[beyond].result(timeout=30)
    assert info.value.args[0].code() == KafkaError.OFFSET_OUT_OF_RANGE


def segment_files(partition_dir: Path) -> list[Path]:
    return sorted(partition_dir.glob("*.log"))


def test_config_changes_apply_to_the_running_broker_and_survive_restart(
    make_broker: Factory, topic: str
) -> None:
    broker = make_broker(settings={"log.retention.check.interval.ms": 200})
    create_topic(broker.bootstrap, topic)
    client = admin(broker.bootstrap)
    p = producer(broker.bootstrap, **{"batch.size": 2048, "linger.ms": 1})
    produce_all(p, topic, records(50))
    assert len(segment_files(broker.partition_dir(topic))) == 1

    # Smaller segments: the next appends roll new segment files.
    incremental(client, topic, op("segment.bytes", "4096", AlterConfigOpType.SET))
    produce_all(p, topic, records(200))
    rolled = len(segment_files(broker.partition_dir(topic)))
    assert rolled >= 5, f"only {rolled} segments after lowering segment.bytes"

    # A size limit: retention removes the oldest segments on its next pass.
    incremental(client, topic, op("retention.bytes", "16384", AlterConfigOpType.SET))
    low, high = wait_until(
        lambda: watermarks(broker.bootstrap, topic),
        lambda marks: marks[0] > 0,
        "retention to advance the log start offset",
    )
    assert high == 250
    remaining = len(segment_files(broker.partition_dir(topic)))
    assert remaining < rolled

    broker.restart()
    client = admin(broker.bootstrap)
    configs = topic_configs(client, topic)
    assert configs["segment.bytes"].value == "4096"
    assert configs["retention.bytes"].value == "16384"
    assert configs["segment.bytes"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    produce_all(producer(broker.bootstrap, **{"batch.size": 2048}), topic, records(60))
    assert watermarks(broker.bootstrap, topic)[1] == 310
    # Still 4 KiB segments after the restart: the new records rolled segments of their own
    # (under the 1 GiB default they would all have gone into the segment active at restart).
    bases = [int(path.stem) for path in segment_files(broker.partition_dir(topic))]
    assert max(bases) > high, f"no segment rolled after the restart: {bases}"
    assert low > 0


def test_librdkafka_validates_a_position_by_leader_epoch(module_broker: Broker, topic: str) -> None:
    """A position carrying a leader epoch is checked with OffsetForLeaderEpoch before fetching;
    the answer (epoch 0 ends at the log end) lets the consumer go on from that position."""
    create_topic(module_broker.bootstrap, topic)
    produce_all(producer(module_broker.bootstrap), topic, records(10, 10))
    seen: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    rdlog = logging.getLogger(f"librdkafka.{topic}")
    rdlog.addHandler(Capture())
    rdlog.setLevel(logging.DEBUG)
    c = Consumer(
        {
            "bootstrap.servers": module_broker.bootstrap,
            "group.id": f"g-{topic}",
            "enable.auto.commit": False,
            "auto.offset.reset": "error",
            "debug": "protocol",
        },
        logger=rdlog,
    )
    try:
        c.assign([TopicPartition(topic, 0, 4, leader_epoch=0)])
        offsets: list[int] = []
        deadline = time.monotonic() + 30
        while len(offsets) < 6:
            assert time.monotonic() < deadline, f"read only {offsets}"
            msg = c.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, f"consumer error: {msg.error()}"
            offsets.append(msg.offset())
    finally:
        c.close()
    assert offsets == list(range(4, 10))
    assert any("Received OffsetForLeaderEpochResponse" in line for line in seen), (
        "librdkafka did not validate the position with OffsetForLeaderEpoch"
    )
