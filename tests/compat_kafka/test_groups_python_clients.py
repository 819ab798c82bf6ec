"""kafka-python and aiokafka group consumers, and group administration from both admin APIs."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from confluent_kafka import ConsumerGroupState, ConsumerGroupTopicPartitions, TopicPartition

from broker import Broker

from .clients import Sent, admin, create_topic, produce_all, producer
from .groups_helpers import assigned, group_consumer, poll_until, start_groups_broker

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
PARTITIONS = 3
COUNT = 300
WAIT_S = 30.0


@pytest.fixture(scope="module")
def groups_broker(tmp_path_factory: pytest.TempPathFactory):
    yield from start_groups_broker(tmp_path_factory)


def fill(bootstrap: str, topic: str) -> None:
    create_topic(bootstrap, topic, PARTITIONS)
    produce_all(
        producer(bootstrap),
        topic,
        (Sent(None, str(i).encode(), (), None, i % PARTITIONS) for i in range(COUNT)),
    )


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    client = admin(bootstrap)
    request = [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in range(3)])]
    result = client.list_consumer_group_offsets(request)[group].result(timeout=WAIT_S)
    return {tp.partition: tp.offset for tp in result.topic_partitions}


def group_state(bootstrap: str, group: str) -> str:
    client = admin(bootstrap)  # keep a reference while the future is pending
    described = client.describe_consumer_groups([group])[group].result(timeout=WAIT_S)
    return described.state.name


def test_kafka_python_group_consumer(groups_broker: Broker, topic: str) -> None:
    from kafka import KafkaConsumer

    fill(groups_broker.bootstrap, topic)
    group = f"kp-{uuid.uuid4().hex[:8]}"
    c = KafkaConsumer(
        topic,
        bootstrap_servers=groups_broker.bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
    )
    try:
        values: list[int] = []
        deadline = time.monotonic() + WAIT_S
        while len(values) < COUNT:
            assert time.monotonic() < deadline, f"kafka-python read {len(values)} of {COUNT}"
            for batch in c.poll(timeout_ms=200).values():
                values.extend(int(r.value) for r in batch)
        assert sorted(values) == list(range(COUNT))
        assert {tp.partition for tp in c.assignment()} == set(range(PARTITIONS))
        assert group_state(groups_broker.bootstrap, group) == "STABLE"
        c.commit()
    finally:
        c.close()  # leaves the group
    assert committed_offsets(groups_broker.bootstrap, group, topic) == {0: 100, 1: 100, 2: 100}
    assert group_state(groups_broker.bootstrap, group) == "EMPTY"


def test_aiokafka_group_consumer(groups_broker: Broker, topic: str) -> None:
    from aiokafka import AIOKafkaConsumer

    fill(groups_broker.bootstrap, topic)
    group = f"aio-{uuid.uuid4().hex[:8]}"

    async def run() -> list[int]:
        c = AIOKafkaConsumer(
            topic,
            bootstrap_servers=groups_broker.bootstrap,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=6000,
            heartbeat_interval_ms=500,
        )
        await c.start()
        values: list[int] = []
        try:
            deadline = time.monotonic() + WAIT_S
            while len(values) < COUNT:
                assert time.monotonic() < deadline, f"aiokafka read {len(values)} of {COUNT}"
                batches = await c.getmany(timeout_ms=200)
                for records in batches.values():
                    values.extend(int(r.value) for r in records)
            await c.commit()
        finally:
            await c.stop()
        return values

    values = asyncio.run(run())
    assert sorted(values) == list(range(COUNT))
    assert committed_offsets(groups_broker.bootstrap, group, topic) == {0: 100, 1: 100, 2: 100}
    assert group_state(groups_broker.bootstrap, group) == "EMPTY"


def test_group_admin_with_kafka_python_and_confluent(groups_broker: Broker, topic: str) -> None:
    from kafka.admin import KafkaAdminClient

    fill(groups_broker.bootstrap, topic)
    active, idle = f"active-{uuid.uuid4().hex[:8]}", f"idle-{uuid.uuid4().hex[:8]}"
    member = group_consumer(groups_broker.bootstrap, active, **{"client.id": "admin-test"})
    leaver = group_consumer(groups_broker.bootstrap, idle)
    kadmin = KafkaAdminClient(bootstrap_servers=groups_broker.bootstrap)
    client = admin(groups_broker.bootstrap)
    try:
        member.subscribe([topic])
        poll_until([member], lambda: len(assigned(member)) == PARTITIONS, "an assignment")
        leaver.assign([TopicPartition(topic, 0)])
        leaver.commit(offsets=[TopicPartition(topic, 0, 5)], asynchronous=False)
        leaver.close()

        listed = {g["group_id"]: g for g in kadmin.list_groups()}
        assert listed[active]["protocol_type"] == "consumer"
        assert listed[idle]["protocol_type"] == ""
        stable_only = {g["group_id"] for g in kadmin.list_groups(states_filter=["Stable"])}
        assert active in stable_only and idle not in stable_only

        described = kadmin.describe_groups([active])[active]
        assert described["group_state"] == "Stable"
        assert described["protocol_type"] == "consumer"
        (m,) = described["members"]
        assert m["client_id"] == "admin-test"
        assert m["member_id"].startswith("admin-test-")

        result = client.list_consumer_groups(states={ConsumerGroupState.EMPTY}).result(WAIT_S)
        assert idle in {g.group_id for g in result.valid}
        info = client.describe_consumer_groups([active])[active].result(timeout=WAIT_S)
        assert info.state == ConsumerGroupState.STABLE
        assert info.partition_assignor == "range"
        (cm,) = info.members
        assert {tp.partition for tp in cm.assignment.topic_partitions} == set(range(PARTITIONS))
        request = [ConsumerGroupTopicPartitions(idle, [TopicPartition(topic, 0)])]
        offsets = client.list_consumer_group_offsets(request)[idle].result(timeout=WAIT_S)
        assert [tp.offset for tp in offsets.topic_partitions] == [5]

        deleted = kadmin.delete_groups([active, idle, "no-such-group-xyz"])
        assert deleted == {
            active: "NonEmptyGroupError",
            idle: "OK",
            "no-such-group-xyz": "GroupIdNotFoundError",
        }
        assert idle not in {g["group_id"] for g in kadmin.list_groups()}
        assert committed_offsets(groups_broker.bootstrap, idle, topic)[0] == -1001
    finally:
        kadmin.close()
        member.close()
