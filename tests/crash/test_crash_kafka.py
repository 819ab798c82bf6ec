"""SIGKILL the broker while a producer streams with acks=all; nothing acknowledged may be lost.

With `log.flush.policy=always` an acknowledgement means "fsynced". The producer sends each value
at most once (no retries, no idempotence), so an acknowledged value must be in the log exactly once,
at the very offset its acknowledgement named, and the offsets must stay contiguous across every
crash (a torn tail is truncated, never left as a hole).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from confluent_kafka import KafkaError, Message

from broker import Broker
from compat_kafka.clients import consume_range, producer, wait_until, watermarks

CYCLES = 5
ACKS_PER_CYCLE = (700, 1500, 300, 2500, 1000)
WAIT_S = 30.0


class StreamingProducer:
    """A thread producing 0, 1, 2, ... as values, recording which were acknowledged and where."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.lock = threading.Lock()
        self.acked: dict[int, int] = {}  # value -> offset the broker acknowledged
        self.double_acks: list[int] = []
        self.failed: dict[int, str] = {}
        self.sent = 0
        self.stop_event = threading.Event()
        self.producer = producer(
            bootstrap,
            acks="all",
            **{
                "enable.idempotence": False,
                "message.send.max.retries": 0,
                "linger.ms": 2,
                "queue.buffering.max.messages": 5000,
                "message.timeout.ms": 20000,
                "reconnect.backoff.ms": 20,
                "reconnect.backoff.max.ms": 200,
            },
        )
        self.thread = threading.Thread(target=self._run, name="crash-producer", daemon=True)

    def on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        seq = int(msg.value())
        with self.lock:
            if err is not None:
                self.failed[seq] = err.name()
            elif seq in self.acked:
                self.double_acks.append(seq)
            else:
                self.acked[seq] = msg.offset()

    def acked_count(self) -> int:
        with self.lock:
            return len(self.acked)

    def _run(self) -> None:
        p = self.producer
        while not self.stop_event.is_set():
            try:
                p.produce(
                    self.topic, value=b"%d" % self.sent, partition=0, on_delivery=self.on_delivery
                )
            except BufferError:  # broker down: the local queue is full, let it drain
                p.poll(0.05)
                continue
            self.sent += 1
            p.poll(0)
        p.flush(30)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(60)


def test_acknowledged_records_survive_sigkill(make_broker: Callable[..., Broker]) -> None:
    broker = make_broker(settings={"log.flush.policy": "always"})
    topic = "crash-acks"
    stream = StreamingProducer(broker.bootstrap, topic)
    stream.start()
    try:
        for cycle in range(CYCLES):
            target = stream.acked_count() + ACKS_PER_CYCLE[cycle]
            wait_until(
                stream.acked_count, lambda n, t=target: n >= t, f"acks in cycle {cycle}", WAIT_S
            )
            broker.kill()  # mid-stream: the producer thread keeps sending while we pull the plug
            broker.start()  # same data dir, same port: the producer reconnects by itself
        final = stream.acked_count() + 500
        wait_until(stream.acked_count, lambda n: n >= final, "acks after the last restart", WAIT_S)
    finally:
        stream.stop()
    assert not stream.thread.is_alive(), "producer did not finish flushing"
    assert stream.failed, "no request was in flight at any kill: the crash was not mid-stream"
    assert not stream.double_acks, f"values acknowledged twice: {stream.double_acks[:10]}"

    acked = dict(stream.acked)
    low, high = watermarks(broker.bootstrap, topic)
    assert low == 0, f"log start moved to {low} without retention"
    records = consume_range(broker.bootstrap, topic, start=0, count=high)
    offsets = [r.offset for r in records]
    assert offsets == list(range(high)), "offsets are not contiguous from 0 after the crashes"

    values = [int(r.value) for r in records]
    where: dict[int, list[int]] = {}
    for offset, value in zip(offsets, values, strict=True):
        where.setdefault(value, []).append(offset)
    lost = sorted(v for v in acked if v not in where)
    duplicated = sorted(v for v in acked if len(where.get(v, [])) > 1)
    moved = sorted(v for v in acked if v in where and where[v] != [acked[v]])
    assert not lost, (
        f"{len(lost)} of {len(acked)} acknowledged values missing after {CYCLES} SIGKILLs, "
        f"first {lost[:10]} (acked at offsets {[acked[v] for v in lost[:10]]}); log has {high}"
    )
    assert not duplicated, f"acknowledged values stored twice: {duplicated[:10]}"
    assert not moved, (
        f"acknowledged values not at their acknowledged offsets: "
        f"{[(v, acked[v], where[v]) for v in moved[:10]]}"
    )
    assert len(acked) >= sum(ACKS_PER_CYCLE) + 500
    assert stream.sent >= len(acked)
