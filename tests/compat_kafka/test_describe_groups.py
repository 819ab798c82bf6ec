"""DescribeGroups as Kafka answers it: each member's host is "/<ip>" of the connection that sent
its JoinGroup, and a group's authorized operations (when asked) are every operation a group
supports, since there is no authorizer. Checked with librdkafka and kafka-python members and
admin clients."""

from __future__ import annotations

import time
import uuid

import pytest
from kafka import KafkaAdminClient, KafkaConsumer

from broker import Broker

from .clients import admin, create_topic
from .groups_helpers import WAIT_S, assigned, group_consumer, poll_until, start_groups_broker

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
GROUP_OPS = {"READ", "DELETE", "DESCRIBE", "DESCRIBE_CONFIGS", "ALTER_CONFIGS"}


@pytest.fixture(scope="module")
def groups_broker(tmp_path_factory: pytest.TempPathFactory):
    yield from start_groups_broker(tmp_path_factory)


def test_librdkafka_member_host_and_group_operations(groups_broker: Broker, topic: str) -> None:
    create_topic(groups_broker.bootstrap, topic)
    group = f"hosts-{uuid.uuid4().hex[:8]}"
    member = group_consumer(groups_broker.bootstrap, group, **{"client.id": "host-test"})
    client = admin(groups_broker.bootstrap)
    try:
        member.subscribe([topic])
        poll_until([member], lambda: assigned(member) == {0}, "an assignment")
        asked = client.describe_consumer_groups(
            [group], include_authorized_operations=True, request_timeout=15
        )[group].result(timeout=WAIT_S)
        (described,) = asked.members
        assert (described.client_id, described.host) == ("host-test", "/127.0.0.1")
        assert {op.name for op in asked.authorized_operations} == GROUP_OPS

        plain = client.describe_consumer_groups([group], request_timeout=15)[group]
        assert plain.result(timeout=WAIT_S).authorized_operations is None
    finally:
        member.close()


def test_kafka_python_member_host_and_group_operations(groups_broker: Broker, topic: str) -> None:
    create_topic(groups_broker.bootstrap, topic)
    group = f"kp-hosts-{uuid.uuid4().hex[:8]}"
    member = KafkaConsumer(
        bootstrap_servers=groups_broker.bootstrap,
        group_id=group,
        client_id="kp-host-test",
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
        enable_auto_commit=False,
        metadata_max_age_ms=1000,
    )
    kadmin = KafkaAdminClient(bootstrap_servers=groups_broker.bootstrap, request_timeout_ms=15000)
    try:
        deadline = time.monotonic() + WAIT_S
        # The member leads its group and assigns from its own metadata: a join made before
        # it has the new topic's partitions assigns nothing, so subscribe once it has them.
        while not member.partitions_for_topic(topic):
            assert time.monotonic() < deadline, "kafka-python never saw the new topic"
            time.sleep(0.1)
        member.subscribe([topic])
        while not member.assignment():
            assert time.monotonic() < deadline, "kafka-python member got no assignment"
            member.poll(timeout_ms=100)
        described = kadmin.describe_groups([group])[group]
        assert described["group_state"] == "Stable"
        (m,) = described["members"]
        assert (m["client_id"], m["client_host"]) == ("kp-host-test", "/127.0.0.1")
        assert set(described["authorized_operations"]) == GROUP_OPS  # it always asks
    finally:
        member.close()
        kadmin.close()
