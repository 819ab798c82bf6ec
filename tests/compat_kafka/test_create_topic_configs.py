"""CreateTopics validates topic configs as a Kafka broker does (LogConfig.validate): unknown names
and bad values are INVALID_CONFIG with Kafka's messages, validate_only answers the same, and a
refused topic is never created. Driven by librdkafka's and kafka-python's admin clients."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource as KpConfigResource

from broker import Broker

from .clients import admin

WAIT_S = 30.0
TIMEOUT = {"request_timeout": 15, "operation_timeout": 10}
INVALID_CONFIG, TOPIC_ALREADY_EXISTS = 40, 36

BAD_CONFIGS = [
    pytest.param(
        {"cleanup.policy": "foo"},
        "Invalid value foo for configuration cleanup.policy: String must be one of: "
        "compact, delete",
        id="cleanup.policy",
    ),
    pytest.param(
        {"cleanup.policy": "compact,foo"},
        "Invalid value foo for configuration cleanup.policy: String must be one of: "
        "compact, delete",
        id="cleanup.policy-list-item",
    ),
    pytest.param(
        {"retention.ms": "abc"},
        "Invalid value abc for configuration retention.ms: Not a number of type LONG",
        id="retention.ms",
    ),
    pytest.param(
        {"min.insync.replicas": "0"},
        "Invalid value 0 for configuration min.insync.replicas: Value must be at least 1",
        id="min.insync.replicas",
    ),
    pytest.param(
        {"segment.bytes": "4294967296"},
        "Invalid value 4294967296 for configuration segment.bytes: Not a number of type INT",
        id="segment.bytes-overflow",
    ),
    pytest.param(
        {"retention.ms": "1000", "retention.weeks": "1"},
        "Unknown topic config name: retention.weeks",
        id="unknown-name",
    ),
]


@pytest.fixture
def kp_admin(module_broker: Broker) -> Iterator[KafkaAdminClient]:
    client = KafkaAdminClient(bootstrap_servers=module_broker.bootstrap, request_timeout_ms=15000)
    yield client
    client.close()


def create_error(
    client: AdminClient, topic: NewTopic, validate_only: bool = False
) -> KafkaError | None:
    future = client.create_topics([topic], validate_only=validate_only, **TIMEOUT)[topic.topic]
    try:
        future.result(timeout=WAIT_S)
    except KafkaException as exc:
        return exc.args[0]
    return None


def topic_names(client: AdminClient) -> set[str]:
    return set(client.list_topics(timeout=WAIT_S).topics)


@pytest.mark.parametrize("validate_only", [False, True], ids=["create", "validate-only"])
@pytest.mark.parametrize(("config", "message"), BAD_CONFIGS)
def test_bad_topic_configs_are_invalid_config_and_nothing_is_created(
    module_broker: Broker, topic: str, config: dict[str, str], message: str, validate_only: bool
) -> None:
    client = admin(module_broker.bootstrap)
    error = create_error(client, NewTopic(topic, 1, 1, config=config), validate_only)
    assert error is not None, "the broker accepted a bad topic config"
    assert (error.code(), error.str()) == (KafkaError.INVALID_CONFIG, message)
    assert topic not in topic_names(client)


def test_valid_configs_are_accepted_and_validate_only_creates_nothing(
    module_broker: Broker, topic: str
) -> None:
    client = admin(module_broker.bootstrap)
    config = {"cleanup.policy": "compact,delete", "retention.ms": "3600000", "preallocate": "true"}
    assert create_error(client, NewTopic(topic, 1, 1, config=config), validate_only=True) is None
    assert topic not in topic_names(client)

    assert create_error(client, NewTopic(topic, 2, 1, config=config)) is None
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    described = client.describe_configs([resource], request_timeout=15)[resource].result(WAIT_S)
    assert {name: described[name].value for name in config} == config


def test_config_checks_come_after_existence_and_before_replication(
    module_broker: Broker, topic: str
) -> None:
    """Kafka's controller checks names and existence first, then configs, then the layout."""
    client = admin(module_broker.bootstrap)
    bad = {"retention.weeks": "1"}
    error = create_error(client, NewTopic(topic, 1, 3, config=bad))
    assert error is not None and error.code() == KafkaError.INVALID_CONFIG
    error = create_error(client, NewTopic(topic, 0, 1, config=bad))
    assert error is not None and error.code() == KafkaError.INVALID_CONFIG

    assert create_error(client, NewTopic(topic, 1, 1)) is None
    error = create_error(client, NewTopic(topic, 1, 1, config=bad))
    assert error is not None and error.code() == KafkaError.TOPIC_ALREADY_EXISTS


def test_kafka_python_gets_each_topic_its_own_answer(
    kp_admin: KafkaAdminClient, topic: str
) -> None:
    good, bad, null = f"{topic}-good", f"{topic}-bad", f"{topic}-null"
    response = kp_admin.create_topics(
        {
            good: {"num_partitions": 1, "configs": {"retention.ms": " 5000 "}},
            bad: {"num_partitions": 1, "configs": {"flush.policy": "sometimes"}},
            null: {"num_partitions": 1, "configs": {"retention.ms": None}},
        },
        raise_errors=False,
    )
    results = {t["name"]: (t["error_code"], t["error_message"]) for t in response["topics"]}
    assert results == {
        good: (0, None),
        bad: (
            INVALID_CONFIG,
            "Invalid value sometimes for configuration flush.policy: String must be one of: "
            "always, interval, os",
        ),
        null: (INVALID_CONFIG, "Null value not supported for topic configs: retention.ms"),
    }
    topics = set(kp_admin.list_topics())
    assert good in topics and bad not in topics and null not in topics
    described = kp_admin.describe_configs([KpConfigResource("TOPIC", good)])
    assert described["topic"][good]["retention.ms"]["value"] == "5000"  # trimmed, as Kafka does

    again = kp_admin.create_topics(
        {good: {"configs": {"nope": "1"}}}, validate_only=True, raise_errors=False
    )
    ((code, message),) = [(t["error_code"], t["error_message"]) for t in again["topics"]]
    assert code == TOPIC_ALREADY_EXISTS, message
