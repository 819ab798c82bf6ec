"""Consumer groups with librdkafka (confluent-kafka): assignment, failover, cooperative-sticky."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer

from broker import Broker

from .clients import Sent, admin, create_topic, produce_all, producer
from .groups_helpers import WAIT_S, assigned, group_consumer, poll_until, start_groups_broker

PARTITIONS = 6


@pytest.fixture(scope="module")
def groups_broker(tmp_path_factory: pytest.TempPathFactory):
    yield from start_groups_broker(tmp_path_factory)


def produce_numbered(bootstrap: str, topic: str, count: int, start: int = 0) -> None:
    p = producer(bootstrap)
    produce_all(
        p,
        topic,
        (
            Sent(None, str(i).encode(), (), None, i % PARTITIONS)
            for i in range(start, start + count)
        ),
    )


def test_three_consumers_share_partitions_without_loss_or_duplicates(
    groups_broker: Broker, topic: str
) -> None:
    create_topic(groups_broker.bootstrap, topic, PARTITIONS)
    group = f"g-{uuid.uuid4().hex[:8]}"
    consumers = [group_consumer(groups_broker.bootstrap, group) for _ in range(3)]
    try:
        for c in consumers:
            c.subscribe([topic])

        def balanced() -> bool:
            owned = [assigned(c) for c in consumers]
            return all(len(o) == 2 for o in owned) and set().union(*owned) == set(range(PARTITIONS))

        poll_until(consumers, balanced, "three members owning two partitions each")
        owners = {p: i for i, c in enumerate(consumers) for p in assigned(c)}
        produce_numbered(groups_broker.bootstrap, topic, 10_000)
        received: list = []
        poll_until(consumers, lambda: len(received) >= 10_000, "10,000 records", sink=received)
        values = [int(msg.value()) for _, msg in received]
        assert len(values) == 10_000, f"{len(values) - 10_000} duplicates"
        assert sorted(values) == list(range(10_000))
        wrong = [(i, m.partition()) for i, m in received if owners[m.partition()] != i]
        assert not wrong, f"records delivered to a consumer not owning the partition: {wrong[:5]}"
        assert balanced(), "assignment changed in steady state"
    finally:
        for c in consumers:
            c.close()


VICTIM = textwrap.dedent(
    """
    import sys
    from confluent_kafka import Consumer
    c = Consumer({"bootstrap.servers": sys.argv[1], "group.id": sys.argv[2],
                  "client.id": "a-victim", "session.timeout.ms": 6000,
                  "heartbeat.interval.ms": 500, "auto.offset.reset": "earliest"})
    c.subscribe([sys.argv[3]])
    last = None
    while True:
        c.poll(0.1)
        now = sorted(tp.partition for tp in c.assignment())
        if now != last:
            print("assigned", ",".join(map(str, now)), flush=True)
            last = now
    """
)


def test_seventh_consumer_idles_and_a_killed_member_fails_over(
    groups_broker: Broker, topic: str, tmp_path
) -> None:
    create_topic(groups_broker.bootstrap, topic, PARTITIONS)
    group = f"g-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "victim.out"
    with open(out, "w") as sink:
        victim = subprocess.Popen(
            [sys.executable, "-c", VICTIM, groups_broker.bootstrap, group, topic],
            stdout=sink,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def victim_owns() -> set[int]:
        lines = [ln for ln in out.read_text().splitlines() if ln.startswith("assigned")]
        if not lines:
            return set()
        parts = lines[-1].split(" ", 1)
        return {int(p) for p in parts[1].split(",") if p} if len(parts) > 1 else set()

    # member ids start with the client id and the range assignor sorts by member id, so the
    # victim ("a-...") is first in line and "c-6" last
    consumers = [
        group_consumer(groups_broker.bootstrap, group, **{"client.id": f"b-{i}"}) for i in range(5)
    ]
    try:
        for c in consumers:
            c.subscribe([topic])
        poll_until(
            consumers,
            lambda: all(len(assigned(c)) == 1 for c in consumers) and len(victim_owns()) == 1,
            "six members with one partition each",
        )
        seventh = group_consumer(groups_broker.bootstrap, group, **{"client.id": "c-6"})
        seventh.subscribe([topic])
        consumers.append(seventh)
        poll_until(
            consumers,
            lambda: (
                all(len(assigned(c)) == 1 for c in consumers[:5])
                and len(victim_owns()) == 1
                and seventh.assignment() == []
                and seventh.memberid() is not None
            ),
            "the seventh member to join with no partition",
        )
        victim_partition = victim_owns()
        in_process = set().union(*(assigned(c) for c in consumers))
        assert in_process | victim_partition == set(range(PARTITIONS))
        assert not in_process & victim_partition

        victim.send_signal(signal.SIGKILL)
        victim.wait()
        killed_at = time.monotonic()
        poll_until(
            consumers,
            lambda: set().union(*(assigned(c) for c in consumers)) == set(range(PARTITIONS)),
            "the killed member's partition to move to a live member",
            timeout=6 + WAIT_S,
        )
        took = time.monotonic() - killed_at
        assert all(len(assigned(c)) == 1 for c in consumers), "the idle member got a share"
        print(f"failover after SIGKILL took {took:.1f} s (session timeout 6 s)")
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
        for c in consumers:
            c.close()


def test_cooperative_sticky_incremental_rebalance_without_loss(
    groups_broker: Broker, topic: str
) -> None:
    create_topic(groups_broker.bootstrap, topic, PARTITIONS)
    group = f"g-{uuid.uuid4().hex[:8]}"
    config = {"partition.assignment.strategy": "cooperative-sticky"}
    revoked_a: list[int] = []

    def on_revoke(consumer, partitions) -> None:
        revoked_a.extend(tp.partition for tp in partitions)

    a = group_consumer(groups_broker.bootstrap, group, **config)
    b = group_consumer(groups_broker.bootstrap, group, **config)
    received: list = []
    try:
        a.subscribe([topic], on_revoke=on_revoke)
        poll_until([a], lambda: len(assigned(a)) == PARTITIONS, "the first member to own all")
        produce_numbered(groups_broker.bootstrap, topic, 3000)
        poll_until([a], lambda: len(received) >= 1000, "some records", sink=received)
        b.subscribe([topic])
        produce_numbered(groups_broker.bootstrap, topic, 3000, start=3000)
        poll_until(
            [a, b],
            lambda: len(assigned(a)) == 3 and len(assigned(b)) == 3,
            "an even split after the second member joined",
            sink=received,
        )
        assert not assigned(a) & assigned(b)
        assert sorted(revoked_a) == sorted(assigned(b)), (
            "an incremental rebalance revokes only the partitions that move"
        )
        values = {int(m.value()) for _, m in received}
        poll_until(
            [a, b],
            lambda: {int(m.value()) for _, m in received} >= set(range(6000)),
            "every record",
            sink=received,
        )
        values = {int(m.value()) for _, m in received}
        assert values == set(range(6000))
    finally:
        a.close()
        b.close()


def test_consumer_offsets_topic_is_internal_and_read_only(groups_broker: Broker) -> None:
    client = admin(groups_broker.bootstrap)
    metadata = client.list_topics("__consumer_offsets", timeout=10)
    offsets_topic = metadata.topics["__consumer_offsets"]
    assert offsets_topic.error is None
    assert len(offsets_topic.partitions) == 50
    p = Producer({"bootstrap.servers": groups_broker.bootstrap, "message.timeout.ms": 5000})
    errors: list[KafkaError] = []
    p.produce(
        "__consumer_offsets", b"x", partition=0, on_delivery=lambda err, msg: errors.append(err)
    )
    p.flush(10)
    assert errors and errors[0] is not None
    assert errors[0].code() == KafkaError.TOPIC_EXCEPTION, errors[0]


def test_simple_consumer_commits_without_membership(groups_broker: Broker, topic: str) -> None:
    """assign() + commit with a group id and no subscription: offsets only (generation -1)."""
    from confluent_kafka import TopicPartition

    create_topic(groups_broker.bootstrap, topic, 1)
    group = f"g-{uuid.uuid4().hex[:8]}"
    c = group_consumer(groups_broker.bootstrap, group)
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        c.commit(offsets=[TopicPartition(topic, 0, 17)], asynchronous=False)
        (tp,) = c.committed([TopicPartition(topic, 0)], timeout=10)
        assert tp.offset == 17
        with pytest.raises(KafkaException):
            c.commit(offsets=[TopicPartition("no-such-topic-xyz", 0, 1)], asynchronous=False)
    finally:
        c.close()


def test_kcat_balanced_consumer_group(groups_broker: Broker, topic: str, kcat: str) -> None:
    """Debian's kcat (librdkafka 2.0.2) joins, consumes and leaves a group."""
    create_topic(groups_broker.bootstrap, topic, 2)
    produce_all(
        producer(groups_broker.bootstrap),
        topic,
        (Sent(None, f"v{i}".encode(), (), None, i % 2) for i in range(20)),
    )
    group = f"kcat-{uuid.uuid4().hex[:8]}"
    result = subprocess.run(
        [
            kcat,
            "-b",
            groups_broker.bootstrap,
            "-G",
            group,
            "-o",
            "beginning",
            "-e",
            "-f",
            "%p:%o:%s\\n",
            "-X",
            "session.timeout.ms=6000",
            topic,
        ],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    lines = set(result.stdout.split())
    assert lines == {f"{i % 2}:{i // 2}:v{i}" for i in range(20)}, result.stderr
    assert f"Group {group} rebalanced" in result.stderr
    client = admin(groups_broker.bootstrap)
    listed = client.list_consumer_groups().result(timeout=WAIT_S)
    assert group in {g.group_id for g in listed.valid}


def test_static_member_restart_keeps_assignment_without_rebalance(
    groups_broker: Broker, topic: str
) -> None:
    create_topic(groups_broker.bootstrap, topic, PARTITIONS)
    group = f"g-{uuid.uuid4().hex[:8]}"
    revoked_first: list[int] = []
    first = group_consumer(groups_broker.bootstrap, group, **{"group.instance.id": "s1"})
    second = group_consumer(groups_broker.bootstrap, group, **{"group.instance.id": "s2"})
    try:
        first.subscribe([topic], on_revoke=lambda c, ps: revoked_first.extend(ps))
        second.subscribe([topic])
        poll_until(
            [first, second],
            lambda: len(assigned(first)) == 3 and len(assigned(second)) == 3,
            "a 3/3 split between the static members",
        )
        kept, moved_before = assigned(first), assigned(second)
        revoked_first.clear()
        second.close()  # a static member does not leave the group on close
        second = group_consumer(groups_broker.bootstrap, group, **{"group.instance.id": "s2"})
        second.subscribe([topic])
        poll_until(
            [first, second], lambda: assigned(second) == moved_before, "the old assignment back"
        )
        for _ in range(10):  # the first member keeps polling: nothing must be revoked
            first.poll(0.05)
        assert assigned(first) == kept
        assert revoked_first == [], "the restart of a static member caused a rebalance"
    finally:
        first.close()
        second.close()
