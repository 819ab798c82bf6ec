"""Kafka share groups (KIP-932) with confluent-kafka's ShareConsumer: records of one partition
worked off by several consumers with per-record acknowledgement, lock timeouts, the delivery
limit, restarts, and the share-group admin APIs."""

from __future__ import annotations

import datetime
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections import Counter

import pytest
from confluent_kafka import AcknowledgeType, Consumer, KafkaError, KafkaException
from confluent_kafka.admin import ConfigResource, ResourceType
from kio.schema.alter_share_group_offsets.v0.request import (
    AlterShareGroupOffsetsRequest,
    AlterShareGroupOffsetsRequestPartition,
    AlterShareGroupOffsetsRequestTopic,
)
from kio.schema.delete_share_group_offsets.v0.request import (
    DeleteShareGroupOffsetsRequest,
    DeleteShareGroupOffsetsRequestTopic,
)
from kio.schema.describe_groups.v5.request import DescribeGroupsRequest
from kio.schema.describe_share_group_offsets.v1.request import (
    DescribeShareGroupOffsetsRequest,
    DescribeShareGroupOffsetsRequestGroup,
    DescribeShareGroupOffsetsRequestTopic,
)
from kio.schema.errors import ErrorCode
from kio.schema.join_group.v5.request import JoinGroupRequest, JoinGroupRequestProtocol
from kio.schema.list_groups.v5.request import ListGroupsRequest
from kio.schema.share_group_describe.v1.request import ShareGroupDescribeRequest

from broker import Broker

from .clients import admin, create_topic
from .raw import kio_call
from .share_helpers import (
    SHARE_SETTINGS,
    WAIT_S,
    poll_until,
    produce_values,
    set_group_configs,
    share_consumer,
    start_share_broker,
)

EXPLICIT = {"share.acknowledgement.mode": "explicit"}


@pytest.fixture(scope="module")
def share_broker(tmp_path_factory: pytest.TempPathFactory):
    yield from start_share_broker(tmp_path_factory)


@pytest.fixture
def group() -> str:
    return f"sg-{uuid.uuid4().hex[:8]}"


def new_group(bootstrap: str, topic: str, group: str, records: int, **configs: object) -> None:
    """A one-partition topic with ``records`` values "0".."n-1" and a group reading it from
    the start."""
    create_topic(bootstrap, topic)
    set_group_configs(bootstrap, group, share_auto_offset_reset="earliest", **configs)
    produce_values(bootstrap, topic, (str(i).encode() for i in range(records)))


def describe_offsets(bootstrap: str, group: str, topic: str):
    response = kio_call(
        bootstrap,
        DescribeShareGroupOffsetsRequest(
            groups=(
                DescribeShareGroupOffsetsRequestGroup(
                    group_id=group,
                    topics=(
                        DescribeShareGroupOffsetsRequestTopic(topic_name=topic, partitions=(0,)),
                    ),
                ),
            )
        ),
    )
    (described,) = response.groups
    return described


def start_offset(bootstrap: str, group: str, topic: str) -> int:
    described = describe_offsets(bootstrap, group, topic)
    assert described.error_code == ErrorCode.none, described
    return described.topics[0].partitions[0].start_offset


# -- sharing one partition -------------------------------------------------------------------


def test_three_consumers_share_one_partition_each_record_once(
    share_broker: Broker, topic: str, group: str
) -> None:
    total = 3000
    new_group(share_broker.bootstrap, topic, group, total)
    received: list[tuple[int, int]] = []  # (consumer, offset)
    lock = threading.Lock()
    stop = threading.Event()

    def run(index: int) -> None:
        c = share_consumer(share_broker.bootstrap, group, **{"max.poll.records": 50})
        try:
            c.subscribe([topic])
            while not stop.is_set():
                for msg in c.poll(0.2):
                    assert msg.error() is None, msg.error()
                    with lock:
                        received.append((index, msg.offset()))
                time.sleep(0.005)  # let the others' fetches in between
        finally:
            c.close()  # implicit mode: accepts what the last poll returned

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + WAIT_S
        while len({o for _c, o in received}) < total and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(WAIT_S)
    offsets = Counter(o for _c, o in received)
    assert set(offsets) == set(range(total))
    assert max(offsets.values()) == 1, [o for o, n in offsets.items() if n > 1][:10]
    per_consumer = Counter(c for c, _o in received)
    assert len(per_consumer) >= 2, per_consumer  # the partition really was shared
    assert start_offset(share_broker.bootstrap, group, topic) == total


def test_released_record_comes_back_with_a_higher_delivery_count(
    share_broker: Broker, topic: str, group: str
) -> None:
    new_group(share_broker.bootstrap, topic, group, 3)
    c = share_consumer(share_broker.bootstrap, group, **EXPLICIT)
    try:
        c.subscribe([topic])
        first: list = []
        poll_until([c], lambda: len(first) >= 3, "three records", lambda _i, m: first.append(m))
        assert [(m.offset(), m.delivery_count()) for m in first] == [(0, 1), (1, 1), (2, 1)]
        c.acknowledge(first[0], AcknowledgeType.ACCEPT)
        c.acknowledge(first[1], AcknowledgeType.RELEASE)
        c.acknowledge(first[2], AcknowledgeType.ACCEPT)
        results = c.commit_sync()
        assert all(error is None for error in results.values()), results
        again: list = []
        poll_until(
            [c], lambda: len(again) >= 1, "the released record", lambda _i, m: again.append(m)
        )
        assert [(m.offset(), m.value(), m.delivery_count()) for m in again] == [(1, b"1", 2)]
        c.acknowledge(again[0], AcknowledgeType.ACCEPT)
        c.commit_sync()
    finally:
        c.close()
    assert start_offset(share_broker.bootstrap, group, topic) == 3


HOLDER = textwrap.dedent(
    """
    import sys
    from confluent_kafka import ShareConsumer
    c = ShareConsumer({"bootstrap.servers": sys.argv[1], "group.id": sys.argv[2],
                       "share.acknowledgement.mode": "explicit"})
    c.subscribe([sys.argv[3]])
    got = 0
    while got == 0:
        got = len(c.poll(1.0))
    print("holding", got, flush=True)
    sys.stdin.read()  # never acknowledges; killed with SIGKILL
    """
)


def start_holder(bootstrap: str, group: str, topic: str, records: int) -> subprocess.Popen:
    """A ShareConsumer in a subprocess that acquires ``records`` records and never acks."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, bootstrap, group, topic],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert holder.stdout is not None
    line = holder.stdout.readline().decode()
    assert line.startswith(f"holding {records}"), line
    return holder


def take_over(bootstrap: str, group: str, topic: str, records: int) -> list[tuple[int, int]]:
    """(offset, delivery count) of ``records`` records a second consumer gets and accepts."""
    c = share_consumer(bootstrap, group, **EXPLICIT)
    try:
        c.subscribe([topic])
        got: list = []
        poll_until(
            [c], lambda: len(got) >= records, "the held records", lambda _i, m: got.append(m)
        )
        for m in got:
            c.acknowledge(m)
        c.commit_sync()
    finally:
        c.close()
    return [(m.offset(), m.delivery_count()) for m in got]


def test_records_of_a_killed_consumer_go_to_another(
    share_broker: Broker, topic: str, group: str
) -> None:
    # Its connection drops, which ends its share session and releases its records (Kafka
    # 4.1+); the lock timeout would release them too.
    new_group(share_broker.bootstrap, topic, group, 5, share_record_lock_duration_ms=60_000)
    holder = start_holder(share_broker.bootstrap, group, topic, 5)
    holder.kill()
    holder.wait()
    got = take_over(share_broker.bootstrap, group, topic, 5)
    assert got == [(i, 2) for i in range(5)]


def test_records_whose_lock_timed_out_go_to_another(
    share_broker: Broker, topic: str, group: str
) -> None:
    new_group(share_broker.bootstrap, topic, group, 5, share_record_lock_duration_ms=2000)
    holder = start_holder(share_broker.bootstrap, group, topic, 5)
    try:  # the holder stays connected and silent: only the lock timeout frees its records
        got = take_over(share_broker.bootstrap, group, topic, 5)
    finally:
        holder.kill()
        holder.wait()
    assert got == [(i, 2) for i in range(5)]


def test_the_delivery_limit_archives_a_poison_record(
    share_broker: Broker, topic: str, group: str
) -> None:
    new_group(share_broker.bootstrap, topic, group, 2, share_delivery_count_limit=2)
    c = share_consumer(share_broker.bootstrap, group, **EXPLICIT)
    seen: list[tuple[int, int]] = []
    try:
        c.subscribe([topic])

        def handle(_i: int, msg) -> None:
            seen.append((msg.offset(), msg.delivery_count()))
            poison = msg.offset() == 0
            c.acknowledge(msg, AcknowledgeType.RELEASE if poison else AcknowledgeType.ACCEPT)

        poll_until(
            [c],
            lambda: (1, 1) in seen and start_offset(share_broker.bootstrap, group, topic) == 2,
            "record 0 archived after two deliveries and record 1 accepted",
            handle,
        )
        c.commit_sync()
    finally:
        c.close()
    assert [s for s in seen if s[0] == 0] == [(0, 1), (0, 2)]


# -- restarts --------------------------------------------------------------------------------


def consume_all_accepting(bootstrap: str, group: str, topic: str, until: int) -> list[int]:
    """Offsets delivered to a fresh consumer until it has seen offset ``until - 1``."""
    c = share_consumer(bootstrap, group, **EXPLICIT)
    offsets: list[int] = []
    try:
        c.subscribe([topic])

        def take(_i: int, msg) -> None:
            offsets.append(msg.offset())
            c.acknowledge(msg)

        poll_until([c], lambda: until - 1 in offsets, f"offset {until - 1}", take)
        c.commit_sync()
    finally:
        c.close()
    return offsets


def accept_first(bootstrap: str, group: str, topic: str, count: int) -> None:
    """Accept offsets below ``count``, release the rest of what was delivered."""
    c = share_consumer(bootstrap, group, **EXPLICIT)
    done: set[int] = set()
    try:
        c.subscribe([topic])

        def take(_i: int, msg) -> None:
            if msg.offset() < count:
                done.add(msg.offset())
                c.acknowledge(msg, AcknowledgeType.ACCEPT)
            else:
                c.acknowledge(msg, AcknowledgeType.RELEASE)

        poll_until([c], lambda: len(done) >= count, f"{count} accepted records", take)
        results = c.commit_sync()
        assert all(error is None for error in results.values()), results
    finally:
        c.close()


@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
def test_acknowledged_records_stay_done_across_a_restart(
    make_broker, topic: str, group: str, stop: str
) -> None:
    broker = make_broker(settings=SHARE_SETTINGS)
    new_group(broker.bootstrap, topic, group, 100)
    accept_first(broker.bootstrap, group, topic, 50)
    if stop == "sigterm":
        broker.restart()
    else:
        time.sleep(0.2)  # one flush interval of the share state journal (loop turns)
        broker.kill()
        broker.start()
    offsets = consume_all_accepting(broker.bootstrap, group, topic, 100)
    assert set(range(50, 100)) <= set(offsets)  # nothing lost
    if stop == "sigterm":
        assert sorted(offsets) == list(range(50, 100))  # and nothing acknowledged came back
    assert start_offset(broker.bootstrap, group, topic) == 100


# -- admin -----------------------------------------------------------------------------------


def test_list_describe_and_delete_share_groups(
    share_broker: Broker, topic: str, group: str
) -> None:
    bootstrap = share_broker.bootstrap
    new_group(bootstrap, topic, group, 10)
    c = share_consumer(bootstrap, group)
    try:
        c.subscribe([topic])
        got: list = []
        poll_until([c], lambda: len(got) >= 10, "ten records", lambda _i, m: got.append(m))

        listed = kio_call(bootstrap, ListGroupsRequest(states_filter=(), types_filter=("share",)))
        assert (group, "share", "Stable", "share") in {
            (g.group_id, g.protocol_type, g.group_state, g.group_type) for g in listed.groups
        }
        classic_only = kio_call(
            bootstrap, ListGroupsRequest(states_filter=(), types_filter=("classic",))
        )
        assert group not in {g.group_id for g in classic_only.groups}

        described = kio_call(
            bootstrap,
            ShareGroupDescribeRequest(group_ids=(group,), include_authorized_operations=False),
        )
        (g,) = described.groups
        assert (g.error_code, g.group_state, g.assignor_name) == (
            ErrorCode.none,
            "Stable",
            "simple",
        )
        (member,) = g.members
        assert member.subscribed_topic_names == (topic,)
        assert [(t.topic_name, t.partitions) for t in member.assignment.topic_partitions] == [
            (topic, (0,))
        ]

        client = admin(bootstrap)  # keep a reference: a collected client fails its futures
        futures = client.delete_consumer_groups([group], request_timeout=15)
        with pytest.raises(KafkaException) as refused:
            futures[group].result(timeout=WAIT_S)
        assert refused.value.args[0].code() == KafkaError.NON_EMPTY_GROUP
    finally:
        c.close()

    poll_empty = kio_call(
        bootstrap,
        ShareGroupDescribeRequest(group_ids=(group,), include_authorized_operations=False),
    )
    assert poll_empty.groups[0].group_state == "Empty"
    futures = client.delete_consumer_groups([group], request_timeout=15)
    futures[group].result(timeout=WAIT_S)
    gone = kio_call(
        bootstrap,
        ShareGroupDescribeRequest(group_ids=(group,), include_authorized_operations=False),
    )
    assert gone.groups[0].error_code == ErrorCode.group_id_not_found
    assert describe_offsets(bootstrap, group, topic).error_code == ErrorCode.group_id_not_found


def test_share_group_offsets_alter_describe_delete(
    share_broker: Broker, topic: str, group: str
) -> None:
    bootstrap = share_broker.bootstrap
    new_group(bootstrap, topic, group, 20)
    altered = kio_call(
        bootstrap,
        AlterShareGroupOffsetsRequest(
            group_id=group,
            topics=(
                AlterShareGroupOffsetsRequestTopic(
                    topic_name=topic,
                    partitions=(
                        AlterShareGroupOffsetsRequestPartition(partition_index=0, start_offset=15),
                    ),
                ),
            ),
        ),
    )
    assert altered.error_code == ErrorCode.none
    assert altered.responses[0].partitions[0].error_code == ErrorCode.none
    described = describe_offsets(bootstrap, group, topic)
    partition = described.topics[0].partitions[0]
    assert (partition.start_offset, partition.lag) == (15, 5)
    offsets = consume_all_accepting(bootstrap, group, topic, 20)
    assert sorted(offsets) == list(range(15, 20))

    deleted = kio_call(
        bootstrap,
        DeleteShareGroupOffsetsRequest(
            group_id=group, topics=(DeleteShareGroupOffsetsRequestTopic(topic_name=topic),)
        ),
    )
    assert deleted.error_code == ErrorCode.none
    assert deleted.responses[0].error_code == ErrorCode.none
    assert start_offset(bootstrap, group, topic) == -1
    # The next consumer starts afresh from share.auto.offset.reset (earliest here).
    assert sorted(consume_all_accepting(bootstrap, group, topic, 20)) == list(range(20))


def test_a_classic_group_id_cannot_become_a_share_group(
    share_broker: Broker, topic: str, group: str
) -> None:
    bootstrap = share_broker.bootstrap
    create_topic(bootstrap, topic)
    produce_values(bootstrap, topic, [b"x"])
    classic = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest"}
    )
    try:
        classic.subscribe([topic])
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            msg = classic.poll(0.5)
            if msg is not None and msg.error() is None:
                break
        classic.commit(asynchronous=False)
        described = kio_call(
            bootstrap,
            ShareGroupDescribeRequest(group_ids=(group,), include_authorized_operations=False),
        )
        assert described.groups[0].error_code == ErrorCode.group_id_not_found
        assert described.groups[0].error_message == f"Group {group} is not a share group."
    finally:
        classic.close()


def test_describe_and_alter_group_configs(share_broker: Broker, group: str) -> None:
    bootstrap = share_broker.bootstrap
    set_group_configs(bootstrap, group, share_record_lock_duration_ms=5000)
    client = admin(bootstrap)
    (future,) = client.describe_configs([ConfigResource(ResourceType.GROUP, group)]).values()
    configs = future.result(timeout=WAIT_S)
    assert configs["share.record.lock.duration.ms"].value == "5000"
    assert configs["share.auto.offset.reset"].value == "latest"
    assert configs["share.isolation.level"].value == "read_uncommitted"
    with pytest.raises(KafkaException) as refused:
        set_group_configs(bootstrap, group, share_record_lock_duration_ms=999_999)
    assert refused.value.args[0].code() == KafkaError.INVALID_CONFIG
    with pytest.raises(KafkaException):
        set_group_configs(bootstrap, group, share_auto_offset_reset="sometimes")


def test_a_share_group_id_cannot_join_as_a_classic_group(
    share_broker: Broker, topic: str, group: str
) -> None:
    bootstrap = share_broker.bootstrap
    new_group(bootstrap, topic, group, 1)
    c = share_consumer(bootstrap, group)
    try:
        c.subscribe([topic])
        got: list = []
        poll_until([c], lambda: len(got) >= 1, "one record", lambda _i, m: got.append(m))
        joined = kio_call(
            bootstrap,
            JoinGroupRequest(
                group_id=group,
                session_timeout=datetime.timedelta(seconds=10),
                rebalance_timeout=datetime.timedelta(seconds=10),
                member_id="",
                group_instance_id=None,
                protocol_type="consumer",
                protocols=(JoinGroupRequestProtocol(name="range", metadata=b""),),
            ),
        )
        assert joined.error_code == ErrorCode.inconsistent_group_protocol
        described = kio_call(
            bootstrap, DescribeGroupsRequest(groups=(group,), include_authorized_operations=False)
        )
        assert described.groups[0].error_code == ErrorCode.group_id_not_found
    finally:
        c.close()
