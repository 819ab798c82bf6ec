"""A durable queue's backlog beyond `amqp.queue.memory.bytes` lives only in the queue's log: it is
read back in publish order as consumers reach it, survives restarts (persistent messages only, as
RabbitMQ drops transient ones) and does not grow the broker's memory with the backlog.

Brokers are started here with a small budget so a few thousand small messages page out. The
backlog tests without a restart also run against an external broker (whose own paging applies);
the ones that restart the broker or read its memory need their own dari (skipped when external).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import AMQPError

from broker import Broker

from .amqp_clients import Got, channel, connect, consume, get_one, queue_depth
from .conftest import EXTERNAL_SKIP_REASON, EXTERNAL_URL

BUDGET = "amqp.queue.memory.bytes"
SMALL_BUDGET = 65536  # 64 1 KiB bodies: anything bigger than that pages out
CONTENT_TYPE = "application/x-paging-test"
TRANSIENT_EVERY = 10  # one transient message after every 10th persistent one
MIB = 1 << 20


@dataclass(frozen=True)
class Sent:
    """One published message: its persistent or transient sequence number and its body."""

    index: int
    persistent: bool
    body: bytes

    @property
    def kind(self) -> str:
        return "persistent" if self.persistent else "transient"


_PATTERN = bytes(range(48, 112))


def body_of(kind: str, index: int, size: int) -> bytes:
    """`size` bytes starting with the message's kind and index, the rest varying with the index."""
    head = f"{kind}-{index:06d}-".encode()
    shift = index % len(_PATTERN)
    fill = (_PATTERN[shift:] + _PATTERN[:shift]) * (size // len(_PATTERN) + 1)
    return head + fill[: size - len(head)]


def props_of(sent: Sent) -> pika.BasicProperties:
    return pika.BasicProperties(
        delivery_mode=2 if sent.persistent else 1,
        content_type=CONTENT_TYPE,
        headers={"index": sent.index, "kind": sent.kind},
    )


def publish_backlog(
    ch: BlockingChannel, queue: str, persistent: int, *, size: int = 1024, transients: bool = True
) -> list[Sent]:
    """Publish `persistent` messages (a transient one after every 10th) on a confirm channel;
    returns them in publish order. Every publish returns only after the broker's confirm."""
    sent: list[Sent] = []
    for i in range(persistent):
        sent.append(Sent(i, True, body_of("persistent", i, size)))
        if transients and (i + 1) % TRANSIENT_EVERY == 0:
            j = (i + 1) // TRANSIENT_EVERY - 1
            sent.append(Sent(j, False, body_of("transient", j, size)))
    for message in sent:
        ch.basic_publish("", queue, message.body, properties=props_of(message), mandatory=True)
    return sent


def describe(got: list[Got], want: list[Sent]) -> str:
    """The first difference between what came back and what was expected, for failure messages."""
    bodies = [g.body[:18] for g in got]
    wanted = [s.body[:18] for s in want]
    for pos, (a, b) in enumerate(zip(bodies, wanted, strict=False)):
        if a != b:
            return (
                f"first difference at position {pos}: got {a!r}, expected {b!r}; "
                f"got around it: {bodies[max(0, pos - 3) : pos + 4]}"
            )
    return f"got {len(got)} messages, expected {len(want)}; tail: {bodies[-5:]}"


def assert_same_messages(got: list[Got], want: list[Sent]) -> None:
    """Every expected message exactly once, in order, with its properties."""
    assert [g.body for g in got] == [s.body for s in want], describe(got, want)
    for g, s in zip(got, want, strict=True):
        p = g.properties
        assert (p.delivery_mode, p.content_type, p.headers) == (
            2 if s.persistent else 1,
            CONTENT_TYPE,
            {"index": s.index, "kind": s.kind},
        ), f"properties of {s.body[:18]!r} changed: {p}"


def rss_bytes(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, in bytes."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return tuple(int(fields[key].split()[0]) * 1024 for key in ("VmRSS", "VmHWM"))  # type: ignore[return-value]


@pytest.fixture
def start_broker(tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    """Starts this test's dari (one data dir) with a queue memory budget; None = the default."""
    if EXTERNAL_URL:
        pytest.skip(EXTERNAL_SKIP_REASON)
    started: list[Broker] = []

    def start(budget: int | None = SMALL_BUDGET) -> Broker:
        settings = {} if budget is None else {BUDGET: budget}
        broker = Broker(
            tmp_path / "data", log_dir=tmp_path / "logs", amqp_port=0, settings=settings
        ).start()
        started.append(broker)
        return broker

    try:
        yield start
    finally:
        for broker in started:
            broker.close()


@pytest.fixture
def backlog_url(tmp_path: Path) -> Iterator[Callable[[int], str]]:
    """URL of a broker whose durable queues page beyond `budget` bytes (dari started with that
    budget; an external broker as it is)."""
    started: list[Broker] = []

    def url(budget: int) -> str:
        if EXTERNAL_URL:
            return EXTERNAL_URL
        broker = Broker(
            tmp_path / "data", log_dir=tmp_path / "logs", amqp_port=0, settings={BUDGET: budget}
        ).start()
        started.append(broker)
        return broker.amqp_url

    try:
        yield url
    finally:
        for broker in started:
            broker.close()


def declare_confirmed(ch: BlockingChannel, queue: str) -> None:
    ch.queue_declare(queue, durable=True)
    ch.confirm_delivery()


# -- a backlog far beyond the budget, no restart --------------------------------------------------


def test_backlog_beyond_budget_is_consumed_once_in_order(
    backlog_url: Callable[[int], str], name: str
) -> None:
    url = backlog_url(SMALL_BUDGET)
    conn = connect(url)
    try:
        ch = conn.channel()
        declare_confirmed(ch, name)
        sent = publish_backlog(ch, name, 5000)  # ~5.5 MiB of bodies, no consumer attached
        assert len(sent) == 5500
        assert queue_depth(ch, name) == 5500, "every confirmed message is ready"

        ch.basic_qos(prefetch_count=500)
        got = consume(ch, name, len(sent), timeout=120)
        assert_same_messages(got, sent)
        assert not any(g.redelivered for g in got), "nothing was delivered before"
        assert queue_depth(ch, name) == 0
        assert get_one(ch, name) is None, "nothing beyond what was published"
        ch.queue_delete(name)
    finally:
        conn.close()


def test_basic_get_drains_a_paged_backlog_in_order(
    backlog_url: Callable[[int], str], name: str
) -> None:
    url = backlog_url(4096)
    with channel(url) as ch:
        declare_confirmed(ch, name)
        sent = publish_backlog(ch, name, 300)
        assert queue_depth(ch, name) == len(sent) == 330

        got: list[Got] = []
        for remaining in range(len(sent) - 1, -1, -1):
            method, props, body = ch.basic_get(name, auto_ack=False)
            assert method is not None, f"queue reported empty after {len(got)} of {len(sent)}"
            assert method.message_count == remaining, "get-ok counts the messages still ready"
            got.append(Got(body, method.routing_key, "", method.redelivered, 0, props))
            ch.basic_ack(method.delivery_tag)
        assert_same_messages(got, sent)
        assert not any(g.redelivered for g in got)
        assert get_one(ch, name) is None, "basic.get-empty once drained"
        ch.queue_delete(name)


# -- restarts -------------------------------------------------------------------------------------


def ack_head(ch: BlockingChannel, queue: str, sent: list[Sent], first_kept: int) -> int:
    """Consume and ack every message published before persistent message `first_kept`, without
    delivering any later one: prefetch is exactly that many, the consumer is cancelled before
    the (multiple) ack. Returns how many were acked."""
    head = next(pos for pos, s in enumerate(sent) if s.persistent and s.index == first_kept)
    ch.basic_qos(prefetch_count=head)
    got = consume(ch, queue, head, ack=False, timeout=60)
    assert_same_messages(got, sent[:head])
    ch.basic_ack(got[-1].delivery_tag, multiple=True)
    assert queue_depth(ch, queue) == len(sent) - head, "acks are settled (a round trip later)"
    return head


@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
def test_unacked_persistent_backlog_survives_restart_in_order(
    start_broker: Callable[..., Broker], name: str, stop: str
) -> None:
    broker = start_broker()
    conn = connect(broker.amqp_url)
    ch = conn.channel()
    declare_confirmed(ch, name)
    sent = publish_backlog(ch, name, 3000)
    assert queue_depth(ch, name) == 3300
    ack_head(ch, name, sent, first_kept=1000)
    # persistent message 1000 is delivered and left unacked while the broker stops
    held = ch.basic_get(name, auto_ack=False)[0]
    assert held is not None

    if stop == "sigterm":
        broker.terminate(signal.SIGTERM)
    else:
        broker.kill()
    with contextlib.suppress(AMQPError, OSError):  # the broker is gone: just drop the socket
        conn.close()
    broker.start()

    want = [s for s in sent if s.persistent and s.index >= 1000]
    with channel(broker.amqp_url) as ch:
        assert queue_depth(ch, name) == len(want) == 2000, "exactly the unacked persistent ones"
        ch.basic_qos(prefetch_count=500)
        got = consume(ch, name, len(want), timeout=60)
        assert_same_messages(got, want)
        if stop == "sigterm":  # after a crash every recovered message may have been delivered
            assert got[0].redelivered, "the message delivered before the stop is flagged"
            flagged = [g.body[:18] for g in got[1:] if g.redelivered]
            assert not flagged, f"never-delivered messages flagged redelivered: {flagged[:5]}"
        assert get_one(ch, name) is None, "no transient message comes back"


@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
def test_purge_of_paged_backlog_counts_all_and_stays_purged(
    start_broker: Callable[..., Broker], name: str, stop: str
) -> None:
    broker = start_broker()
    with channel(broker.amqp_url) as ch:
        declare_confirmed(ch, name)
        sent = publish_backlog(ch, name, 2000)
        assert ch.queue_purge(name).method.message_count == len(sent) == 2200
        assert queue_depth(ch, name) == 0
        assert get_one(ch, name) is None

    if stop == "sigterm":
        broker.terminate(signal.SIGTERM)
    else:
        broker.kill()
    broker.start()

    with channel(broker.amqp_url) as ch:
        assert queue_depth(ch, name) == 0, "purged messages come back after a restart"
        assert get_one(ch, name) is None
        ch.confirm_delivery()
        ch.basic_publish("", name, b"after", properties=pika.BasicProperties(delivery_mode=2))
        got = get_one(ch, name, auto_ack=True)
        assert got is not None and got.body == b"after", "the queue still works after a purge"


# -- memory ---------------------------------------------------------------------------------------

BIG_COUNT = 3000
BIG_SIZE = 64 * 1024  # 3,000 of them: 192 MiB of bodies
RSS_LIMIT = 160 * MIB
MID_BUDGET = 16 * MIB  # far below the 192 MiB backlog: most of it must stay on disk


def assert_rss_bounded(broker: Broker, when: str) -> None:
    assert broker.proc is not None
    rss, peak = rss_bytes(broker.proc.pid)
    assert rss < RSS_LIMIT, (
        f"broker RSS is {rss / MIB:.0f} MiB (peak {peak / MIB:.0f} MiB) {when} with a "
        f"{BIG_COUNT * BIG_SIZE / MIB:.0f} MiB backlog; the queue should hold "
        f"~{MID_BUDGET // MIB} MiB"
    )


def test_paged_backlog_keeps_broker_memory_bounded(
    start_broker: Callable[..., Broker], name: str
) -> None:
    broker = start_broker(MID_BUDGET)
    with channel(broker.amqp_url) as ch:
        declare_confirmed(ch, name)
        props = pika.BasicProperties(delivery_mode=2, content_type=CONTENT_TYPE)
        for i in range(BIG_COUNT):
            ch.basic_publish("", name, body_of("persistent", i, BIG_SIZE), properties=props)
        assert queue_depth(ch, name) == BIG_COUNT
        assert_rss_bounded(broker, "after publishing")

    broker.restart()  # recovery must not read the backlog into memory either
    with channel(broker.amqp_url) as ch:
        assert queue_depth(ch, name) == BIG_COUNT
        assert_rss_bounded(broker, "after a restart")

        ch.basic_qos(prefetch_count=100)
        deliveries = ch.consume(name, inactivity_timeout=10)
        for count in range(BIG_COUNT):
            method, _props, body = next(deliveries)
            assert method is not None, f"consumer stalled after {count} of {BIG_COUNT}"
            assert body == body_of("persistent", count, BIG_SIZE), (
                f"message {count} out of order or damaged: {body[:18]!r}"
            )
            ch.basic_ack(method.delivery_tag)
        ch.cancel()
        assert queue_depth(ch, name) == 0


def test_non_durable_queue_pages_too_and_leaves_nothing_behind(
    start_broker: Callable[..., Broker], name: str
) -> None:
    """A non-durable queue pages to a scratch log (transient messages included); the log
    goes with the queue and nothing of it survives a restart."""
    broker = start_broker(MID_BUDGET)
    with channel(broker.amqp_url) as ch:
        ch.queue_declare(name)
        ch.confirm_delivery()
        props = pika.BasicProperties(delivery_mode=1, content_type=CONTENT_TYPE)
        for i in range(BIG_COUNT):
            ch.basic_publish("", name, body_of("transient", i, BIG_SIZE), properties=props)
        assert queue_depth(ch, name) == BIG_COUNT
        assert_rss_bounded(broker, "after publishing to a non-durable queue")
        scratch = broker.data_dir / ".scratch"
        assert any(scratch.rglob("*.log")), "the backlog went to a scratch log"
        ch.basic_qos(prefetch_count=100)
        deliveries = ch.consume(name, inactivity_timeout=10)
        for count in range(BIG_COUNT // 2):
            method, _props, body = next(deliveries)
            assert method is not None, f"consumer stalled after {count}"
            assert body == body_of("transient", count, BIG_SIZE), f"message {count} out of order"
            ch.basic_ack(method.delivery_tag)
        ch.cancel()
        ch.queue_delete(name)
        assert not any(scratch.rglob("*.log")), "deleting the queue removes its scratch log"
