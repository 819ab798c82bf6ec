"""Idempotent producers: retries are stored once, gaps and fenced epochs are refused, and the
state survives a restart."""

from __future__ import annotations

import threading

from confluent_kafka import KafkaError

from broker import Broker
from compat_kafka import raw
from compat_kafka.clients import consume_range, producer, wait_until
from dari.records import build_batch

NONE, OUT_OF_ORDER_SEQUENCE, INVALID_PRODUCER_EPOCH = 0, 45, 47


def _batch(producer_id: int, epoch: int, sequence: int, values: list[bytes]) -> bytes:
    return build_batch(
        [(b"k", value) for value in values],
        producer_id=producer_id,
        producer_epoch=epoch,
        base_sequence=sequence,
    )


def test_replayed_batch_is_stored_once(broker: Broker, topic: str) -> None:
    with raw.connect(broker.bootstrap) as sock:
        pid, epoch = raw.init_producer_id(sock)
        first = _batch(pid, epoch, 0, [b"a", b"b"])
        assert raw.produce_result(sock, topic, first) == (NONE, 0)
        # The same batch again, as a producer retrying after a lost response.
        assert raw.produce_result(sock, topic, first) == (NONE, 0)
        assert raw.produce_result(sock, topic, _batch(pid, epoch, 2, [b"c"])) == (NONE, 2)
        # A gap in the sequence is refused; nothing is stored.
        assert raw.produce_result(sock, topic, _batch(pid, epoch, 9, [b"x"]))[0] == (
            OUT_OF_ORDER_SEQUENCE
        )
        # A re-initialised producer gets a new epoch; the old epoch is fenced.
        new_pid, new_epoch = raw.init_producer_id(sock)
        assert raw.produce_result(sock, topic, _batch(new_pid, new_epoch, 0, [b"d"])) == (NONE, 3)
    got = consume_range(broker.bootstrap, topic)
    assert [r.value for r in got] == [b"a", b"b", b"c", b"d"]
    assert [r.offset for r in got] == [0, 1, 2, 3]


def test_older_epoch_is_fenced_and_state_survives_restart(broker: Broker, topic: str) -> None:
    with raw.connect(broker.bootstrap) as sock:
        pid, _ = raw.init_producer_id(sock)
        assert raw.produce_result(sock, topic, _batch(pid, 1, 0, [b"a"])) == (NONE, 0)
        assert raw.produce_result(sock, topic, _batch(pid, 0, 1, [b"b"]))[0] == (
            INVALID_PRODUCER_EPOCH
        )
    broker.kill()  # no snapshot on the way down: the state is rebuilt from the log itself
    broker.restart()
    with raw.connect(broker.bootstrap) as sock:
        # The retry of the stored batch is still recognised after the crash...
        assert raw.produce_result(sock, topic, _batch(pid, 1, 0, [b"a"])) == (NONE, 0)
        # ...and the sequence continues where it stopped.
        assert raw.produce_result(sock, topic, _batch(pid, 1, 1, [b"b"])) == (NONE, 1)
    broker.terminate()
    broker.restart()  # this time from the snapshot written at shutdown
    with raw.connect(broker.bootstrap) as sock:
        assert raw.produce_result(sock, topic, _batch(pid, 1, 1, [b"b"])) == (NONE, 1)
        assert raw.produce_result(sock, topic, _batch(pid, 1, 3, [b"z"]))[0] == (
            OUT_OF_ORDER_SEQUENCE
        )
    assert [r.value for r in consume_range(broker.bootstrap, topic)] == [b"a", b"b"]


def test_confluent_idempotent_producer_survives_restart(broker: Broker, topic: str) -> None:
    """librdkafka with enable.idempotence=true keeps producing across a broker restart; every
    value ends up in the log exactly once and in order."""
    total = 20_000
    acked: list[int] = []
    errors: list[str] = []

    def on_delivery(err: KafkaError | None, msg) -> None:
        if err is None:
            acked.append(int(msg.value()))
        else:
            errors.append(str(err))

    p = producer(
        broker.bootstrap,
        **{"enable.idempotence": True, "acks": "all", "message.timeout.ms": 60_000},
    )
    restarted = threading.Event()

    def restart_midway() -> None:
        wait_until(lambda: len(acked), lambda n: n >= total // 4, "a quarter acknowledged")
        broker.terminate()
        broker.restart()
        restarted.set()

    thread = threading.Thread(target=restart_midway)
    thread.start()
    for value in range(total):
        while True:
            try:
                p.produce(topic, value=str(value).encode(), on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    while len(acked) + len(errors) < total:
        p.poll(0.1)
    p.flush(30)
    thread.join(60)
    assert restarted.is_set(), "the broker was not restarted during the run"
    assert errors == [], f"{len(errors)} deliveries failed, e.g. {errors[:3]}"
    values = [int(r.value) for r in consume_range(broker.bootstrap, topic, count=total)]
    assert len(values) == len(set(values)) == total, "duplicates or losses in the log"
    assert values == sorted(values), "idempotent producer must keep order"
