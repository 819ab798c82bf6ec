"""Authorized operations as a Kafka broker without an authorizer reports them: when a client asks,
every operation the resource type supports (Kafka's AclEntry.supportedOperations) is allowed;
when it does not ask, the field keeps its "not requested" default. Checked through librdkafka's
and kafka-python's admin clients, and Metadata v8-v12 requests encoded by kafka-python."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest
from confluent_kafka import TopicCollection
from confluent_kafka.admin import AclOperation
from kafka import KafkaAdminClient
from kafka.protocol.metadata import MetadataRequest
from kafka.protocol.parser import KafkaProtocol

from broker import Broker

from . import raw
from .clients import admin, create_topic

WAIT_S = 30.0
TIMEOUT = {"request_timeout": 15}
UNKNOWN_TOPIC_OR_PARTITION = 3

TOPIC_OPS = {"READ", "WRITE", "CREATE", "DELETE", "ALTER", "DESCRIBE", "DESCRIBE_CONFIGS",
             "ALTER_CONFIGS"}
CLUSTER_OPS = {"CREATE", "ALTER", "DESCRIBE", "CLUSTER_ACTION", "DESCRIBE_CONFIGS",
               "ALTER_CONFIGS", "IDEMPOTENT_WRITE"}


def codes(names: set[str]) -> set[int]:
    return {AclOperation[name].value for name in names}


def names(operations: list[AclOperation] | None) -> set[str] | None:
    return None if operations is None else {op.name for op in operations}


@pytest.fixture
def kp_admin(module_broker: Broker) -> Iterator[KafkaAdminClient]:
    client = KafkaAdminClient(bootstrap_servers=module_broker.bootstrap, request_timeout_ms=15000)
    yield client
    client.close()


def metadata(bootstrap: str, version: int, topics: list[str], ask: bool) -> object:
    """One Metadata request of ``version`` over a plain socket, decoded by kafka-python."""
    fields: dict[str, object] = {
        "topics": [MetadataRequest[version].MetadataRequestTopic(name=t) for t in topics],
        "allow_auto_topic_creation": False,
        "include_topic_authorized_operations": ask,
    }
    if version <= 10:
        fields["include_cluster_authorized_operations"] = ask
    protocol = KafkaProtocol(client_id="authorized-operations-test")
    protocol.send_request(MetadataRequest[version](**fields))
    with raw.connect(bootstrap) as sock:
        sock.sendall(bytes(protocol.send_bytes()))
        payload = raw.recv_response(sock)
    ((_correlation_id, response),) = protocol.receive_bytes(
        struct.pack(">i", len(payload)) + payload
    )
    return response


def test_librdkafka_describe_topics_and_cluster(module_broker: Broker, topic: str) -> None:
    create_topic(module_broker.bootstrap, topic)
    client = admin(module_broker.bootstrap)
    topics = TopicCollection([topic])
    asked = client.describe_topics(topics, include_authorized_operations=True, **TIMEOUT)
    assert names(asked[topic].result(WAIT_S).authorized_operations) == TOPIC_OPS
    plain = client.describe_topics(topics, **TIMEOUT)
    assert plain[topic].result(WAIT_S).authorized_operations is None

    cluster = client.describe_cluster(include_authorized_operations=True, **TIMEOUT)
    assert names(cluster.result(WAIT_S).authorized_operations) == CLUSTER_OPS
    assert client.describe_cluster(**TIMEOUT).result(WAIT_S).authorized_operations is None


def test_kafka_python_describe_topics_and_cluster(
    kp_admin: KafkaAdminClient, module_broker: Broker, topic: str
) -> None:
    create_topic(module_broker.bootstrap, topic)
    (described,) = kp_admin.describe_topics([topic])
    assert set(described["authorized_operations"]) == TOPIC_OPS
    assert set(kp_admin.describe_cluster()["authorized_operations"]) == CLUSTER_OPS


@pytest.mark.parametrize("version", [8, 9, 10, 11, 12])
def test_metadata_reports_operations_only_when_asked(
    module_broker: Broker, topic: str, version: int
) -> None:
    create_topic(module_broker.bootstrap, topic)
    missing = f"{topic}-missing"
    asked = metadata(module_broker.bootstrap, version, [topic, missing], ask=True)
    by_name = {t.name: t for t in asked.topics}
    assert by_name[topic].error_code == 0
    assert by_name[missing].error_code == UNKNOWN_TOPIC_OR_PARTITION
    for name in (topic, missing):  # Kafka fills them in for unknown topic names too
        assert by_name[name].authorized_operations == codes(TOPIC_OPS)
    if version <= 10:  # the cluster field exists in v8-v10 only
        assert asked.authorized_operations == codes(CLUSTER_OPS)

    plain = metadata(module_broker.bootstrap, version, [topic], ask=False)
    (entry,) = plain.topics
    assert entry.authorized_operations is None  # kafka-python's reading of -2147483648
    if version <= 10:
        assert plain.authorized_operations is None
