"""kafka-python's KafkaAdminClient and aiokafka's AIOKafkaAdminClient against dari."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from aiokafka.admin import NewTopic as AioNewTopic
from aiokafka.admin.config_resource import ConfigResource as AioConfigResource
from aiokafka.admin.config_resource import ConfigResourceType as AioResourceType
from aiokafka.structs import TopicPartition as AioTopicPartition
from kafka import KafkaAdminClient, TopicPartition
from kafka.admin import ConfigResource, NewTopic
from kafka.errors import OffsetOutOfRangeError

from broker import Broker

from .clients import Sent, produce_all, producer, watermarks

WAIT_S = 30.0


@pytest.fixture
def kp_admin(module_broker: Broker) -> Iterator[KafkaAdminClient]:
    client = KafkaAdminClient(bootstrap_servers=module_broker.bootstrap, request_timeout_ms=15000)
    yield client
    client.close()


def fill(broker: Broker, topic: str, n: int) -> None:
    sent = [Sent(None, b"v%d" % i, (), None) for i in range(n)]
    produce_all(producer(broker.bootstrap), topic, sent)


def test_kafka_python_topic_lifecycle_and_configs(
    kp_admin: KafkaAdminClient, module_broker: Broker, topic: str
) -> None:
    kp_admin.create_topics(
        [NewTopic(topic, num_partitions=2, replication_factor=1,
                  topic_configs={"retention.ms": "3600000"})]
    )
    assert topic in kp_admin.list_topics()
    (described,) = kp_admin.describe_topics([topic])
    assert (described["name"], len(described["partitions"])) == (topic, 2)

    modified = kp_admin.describe_configs([ConfigResource("TOPIC", topic)])
    assert set(modified["topic"][topic]) == {"retention.ms"}  # default filter: overrides only
    entry = modified["topic"][topic]["retention.ms"]
    assert (entry["value"], entry["config_source"]) == ("3600000", "DYNAMIC_TOPIC_CONFIG")

    # Incremental by default (the broker advertises IncrementalAlterConfigs).
    result = kp_admin.alter_configs(
        [ConfigResource("TOPIC", topic, configs={"segment.bytes": "1048576"})]
    )
    assert result == {"topic": {topic: "OK"}}
    everything = kp_admin.describe_configs([ConfigResource("TOPIC", topic)], config_filter="all")
    configs = everything["topic"][topic]
    assert configs["segment.bytes"]["value"] == "1048576"
    assert configs["retention.ms"]["value"] == "3600000"
    assert configs["compression.type"]["config_source"] == "DEFAULT_CONFIG"

    # The legacy AlterConfigs API, filling in the other overrides as kafka-python does.
    result = kp_admin.alter_configs(
        [ConfigResource("TOPIC", topic, configs={"retention.bytes": "1000000"})],
        incremental=False,
    )
    assert result == {"topic": {topic: "OK"}}
    overrides = kp_admin.describe_configs([ConfigResource("TOPIC", topic)])["topic"][topic]
    assert {k: v["value"] for k, v in overrides.items()} == {
        "retention.ms": "3600000",
        "segment.bytes": "1048576",
        "retention.bytes": "1000000",
    }

    kp_admin.delete_topics([topic])
    assert topic not in kp_admin.list_topics()


def test_kafka_python_broker_configs_and_cluster(
    kp_admin: KafkaAdminClient, module_broker: Broker
) -> None:
    result = kp_admin.describe_configs([ConfigResource("BROKER", "0")], config_filter="all")
    configs = result["broker"]["0"]
    assert configs["num.partitions"]["value"] == "1"
    assert configs["log.segment.bytes"]["value"] == str(1 << 30)
    assert configs["message.max.bytes"]["read_only"] is True
    cluster = kp_admin.describe_cluster()
    [broker] = cluster["brokers"]
    assert (broker["broker_id"], broker["port"]) == (0, module_broker.port)
    assert cluster["controller_id"] == 0


def test_kafka_python_delete_records_and_log_dirs(
    kp_admin: KafkaAdminClient, module_broker: Broker, topic: str
) -> None:
    kp_admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    fill(module_broker, topic, 10)
    result = kp_admin.delete_records({TopicPartition(topic, 0): 4})
    assert result[TopicPartition(topic, 0)]["low_watermark"] == 4
    assert watermarks(module_broker.bootstrap, topic) == (4, 10)
    with pytest.raises(OffsetOutOfRangeError):
        kp_admin.delete_records({TopicPartition(topic, 0): 11})

    [per_broker] = kp_admin.describe_log_dirs()
    [log_dir] = per_broker["log_dirs"]
    assert log_dir["log_dir"] == str(module_broker.data_dir.resolve())
    sizes = {t["name"]: t["partitions"] for t in log_dir["topics"]}
    [partition] = sizes[topic]
    assert partition["partition_index"] == 0
    assert partition["partition_size"] > 0
    assert log_dir["total_bytes"] >= log_dir["usable_bytes"] > 0


def test_aiokafka_admin_configs_and_delete_records(module_broker: Broker, topic: str) -> None:
    async def scenario() -> None:
        client = AIOKafkaAdminClient(bootstrap_servers=module_broker.bootstrap)
        await client.start()
        try:
            await client.create_topics([AioNewTopic(topic, 1, 1)])
            fill(module_broker, topic, 6)
            await client.alter_configs(
                [AioConfigResource(AioResourceType.TOPIC, topic, {"retention.ms": "120000"})]
            )
            [response] = await client.describe_configs(
                [AioConfigResource(AioResourceType.TOPIC, topic)]
            )
            [(error, _message, _type, name, entries)] = response.resources
            assert (error, name) == (0, topic)
            values = {entry[0]: entry[1] for entry in entries}
            assert values["retention.ms"] == "120000"
            assert values["segment.bytes"] == str(1 << 30)
            deleted = await client.delete_records(
                {AioTopicPartition(topic, 0): RecordsToDelete(before_offset=5)}
            )
            assert deleted == {AioTopicPartition(topic, 0): 5}
        finally:
            await client.close()

    asyncio.run(asyncio.wait_for(scenario(), WAIT_S))
    assert watermarks(module_broker.bootstrap, topic) == (5, 6)
