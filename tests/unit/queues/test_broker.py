"""AMQPBroker: declare and redeclare equivalence, the one queue registry, exclusive cleanup,
expiry driven by tick(now) with an injected clock, dead-letter routing, and durable definitions
reloaded from a data directory (real files, real queue stores)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dari.message import Message, encode_properties
from dari.queues.broker import AMQPBroker, User
from dari.queues.consumers import Delivery, PrefetchConsumer
from dari.queues.dead_letter import headers_of
from dari.queues.errors import AccessRefused, NotFound, PreconditionFailed, ResourceLocked
from dari.queues.queue import Queue
from dari.storage import FlushScheduler, LogConfig

T0 = 1_800_000_000.0  # seconds, as time.time()
T0_MS = int(T0 * 1000)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now

    def at_ms(self, ms: int) -> int:
        """Move to ``T0 + ms`` and return that time in epoch milliseconds (tick's argument)."""
        self.now = T0 + ms / 1000
        return T0_MS + ms


def make_broker(data_dir: Path, clock: Clock | None = None, **kw: Any) -> AMQPBroker:
    broker = AMQPBroker(
        data_dir,
        FlushScheduler(),
        LogConfig(),
        {"guest": User("guest", "guest", True, ("*",))},
        vhosts=("/", "other"),
        clock=clock or Clock(),
        **kw,
    )
    broker.load()
    return broker


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def broker(tmp_path: Path, clock: Clock) -> Iterator[AMQPBroker]:
    b = make_broker(tmp_path, clock)
    yield b
    b.close()


def declare(broker: AMQPBroker, name: str, vhost: str = "/", **kw: Any) -> Queue:
    options: dict[str, Any] = {
        "passive": False,
        "durable": False,
        "exclusive_owner": None,
        "auto_delete": False,
        "arguments": {},
    }
    options.update(kw)
    return broker.declare_queue(vhost, name, **options)


def msg(body: bytes, routing_key: str = "q", **props: Any) -> Message:
    return Message.from_amqp("", routing_key, encode_properties(**props), body)


def drain(queue: Queue) -> list[Delivery]:
    got: list[Delivery] = []
    while (delivery := queue.get(no_ack=True)) is not None:
        got.append(delivery)
    return got


# ---- declare, registry, equivalence ------------------------------------------------------


def test_declare_registers_the_queue_once_in_its_vhost(broker: AMQPBroker) -> None:
    q = declare(broker, "q")
    vhost = broker.vhost("/")
    assert vhost.get_queue("q") is q
    assert broker.vhost("/").get_queue("q") is q  # one registry: the vhost's own
    assert broker.get_queue("/", "q") is q
    assert declare(broker, "q") is q
    assert broker.vhost("other").get_queue("q") is None
    with pytest.raises(NotFound, match="no queue 'q' in vhost 'other'"):
        broker.get_queue("other", "q")


def test_passive_declare_of_a_missing_queue_is_not_found(broker: AMQPBroker) -> None:
    with pytest.raises(NotFound, match="no queue 'nope' in vhost '/'"):
        declare(broker, "nope", passive=True)


def test_generated_names_and_the_reserved_prefix(broker: AMQPBroker) -> None:
    q = declare(broker, "")
    assert q.name.startswith("amq.gen-")
    with pytest.raises(AccessRefused, match=r"reserved prefix 'amq\.\*'"):
        declare(broker, "amq.mine")


@pytest.mark.parametrize(
    ("first", "second", "text"),
    [
        (
            {"durable": True},
            {"durable": False},
            "inequivalent arg 'durable' for queue 'q' in vhost '/': received 'false' but "
            "current is 'true'",
        ),
        (
            {"auto_delete": False},
            {"auto_delete": True},
            "inequivalent arg 'auto_delete' for queue 'q' in vhost '/': received 'true' but "
            "current is 'false'",
        ),
        (
            {"arguments": {"x-message-ttl": 1000}},
            {"arguments": {"x-message-ttl": 2000}},
            "inequivalent arg 'x-message-ttl' for queue 'q' in vhost '/': received '2000' but "
            "current is '1000'",
        ),
        (
            {"arguments": {}},
            {"arguments": {"x-max-length": 5}},
            "inequivalent arg 'x-max-length' for queue 'q' in vhost '/': received the value "
            "'5' of type 'long' but current is none",
        ),
    ],
)
def test_redeclare_must_be_equivalent(
    broker: AMQPBroker, first: dict[str, Any], second: dict[str, Any], text: str
) -> None:
    declare(broker, "q", **first)
    with pytest.raises(PreconditionFailed) as err:
        declare(broker, "q", **second)
    assert str(err.value) == text


def test_arguments_not_compared_may_differ_and_passive_skips_the_check(
    broker: AMQPBroker,
) -> None:
    q = declare(broker, "q", arguments={"x-message-ttl": 1000})
    assert declare(broker, "q", arguments={"x-message-ttl": 1000, "x-custom": 1}) is q
    assert declare(broker, "q", passive=True, durable=True) is q


def test_delete_queue_unregisters_it_and_its_bindings(broker: AMQPBroker) -> None:
    q = declare(broker, "q")
    vhost = broker.vhost("/")
    vhost.bind_queue("q", "amq.direct", "k")
    q.publish(msg(b"a"))
    assert broker.delete_queue("/", q) == 1
    assert vhost.get_queue("q") is None and q.deleted
    assert vhost.bindings_for_source("amq.direct") == []
    with pytest.raises(NotFound):
        broker.get_queue("/", "q")


def test_forgetting_a_stale_queue_leaves_its_successor_registered(broker: AMQPBroker) -> None:
    old = declare(broker, "q")
    broker.delete_queue("/", old)
    new = declare(broker, "q")
    broker.forget_queue("/", old)
    assert broker.get_queue("/", "q") is new


# ---- exclusive queues ----------------------------------------------------------------------


def test_exclusive_queue_is_locked_to_its_connection(broker: AMQPBroker) -> None:
    mine, theirs = object(), object()
    declare(broker, "x", exclusive_owner=mine, connection=mine)
    with pytest.raises(ResourceLocked, match="cannot obtain exclusive access to locked queue"):
        declare(broker, "x", exclusive_owner=theirs, connection=theirs)
    with pytest.raises(ResourceLocked):
        declare(broker, "x", passive=True, connection=theirs)


def test_exclusive_declare_of_an_existing_shared_queue_is_locked(broker: AMQPBroker) -> None:
    conn = object()
    declare(broker, "shared")
    with pytest.raises(ResourceLocked):
        declare(broker, "shared", exclusive_owner=conn, connection=conn)


def test_closing_a_connection_deletes_only_its_exclusive_queues(broker: AMQPBroker) -> None:
    mine, theirs = object(), object()
    a = declare(broker, "a", exclusive_owner=mine, connection=mine)
    b = declare(broker, "b", exclusive_owner=mine, connection=mine)
    other = declare(broker, "c", exclusive_owner=theirs, connection=theirs)
    shared = declare(broker, "d")
    broker.vhost("/").bind_queue("a", "amq.fanout")
    assert sorted(broker.delete_exclusive("/", mine)) == ["a", "b"]
    assert a.deleted and b.deleted and not other.deleted and not shared.deleted
    assert [q.name for q in broker.queues("/")] == ["c", "d"]
    assert broker.vhost("/").bindings_for_source("amq.fanout") == []
    assert broker.delete_exclusive("/", mine) == []


# ---- tick: expiry with an injected clock ---------------------------------------------------


def test_tick_expires_messages_at_their_ttl(broker: AMQPBroker, clock: Clock) -> None:
    q = declare(broker, "q", arguments={"x-message-ttl": 1000})
    q.publish(msg(b"old"))
    clock.at_ms(600)
    q.publish(msg(b"new"))
    assert broker.tick(clock.at_ms(999)).messages == 0
    assert q.message_count == 2
    expired = broker.tick(clock.at_ms(1000))
    assert expired.messages == 1 and expired.queues == []
    assert [d.message.body for d in drain(q)] == [b"new"]


def test_tick_expires_per_message_ttl(broker: AMQPBroker, clock: Clock) -> None:
    q = declare(broker, "q")
    q.publish(msg(b"short", expiration="50"))
    assert broker.tick(clock.at_ms(49)).messages == 0
    assert broker.tick(clock.at_ms(50)).messages == 1
    assert q.message_count == 0


def test_tick_deletes_a_queue_unused_for_its_x_expires(broker: AMQPBroker, clock: Clock) -> None:
    q = declare(broker, "q", arguments={"x-expires": 5000})
    declare(broker, "keep")
    assert broker.tick(clock.at_ms(4000)).queues == []
    declare(broker, "q", arguments={"x-expires": 5000})  # a redeclare renews the lease
    assert broker.tick(clock.at_ms(8999)).queues == []
    expired = broker.tick(clock.at_ms(9000))
    assert expired.queues == [("/", "q")]
    assert q.deleted and broker.vhost("/").get_queue("q") is None
    assert broker.get_queue("/", "keep")


def test_a_consumer_keeps_an_x_expires_queue_alive(broker: AMQPBroker, clock: Clock) -> None:
    q = declare(broker, "q", arguments={"x-expires": 1000})
    q.add_consumer(PrefetchConsumer("c", lambda d: None))
    assert broker.tick(clock.at_ms(60_000)).queues == []
    assert not q.deleted


def test_tick_in_every_vhost(broker: AMQPBroker, clock: Clock) -> None:
    a = declare(broker, "q", arguments={"x-message-ttl": 10})
    b = declare(broker, "q", vhost="other", arguments={"x-message-ttl": 10})
    a.publish(msg(b"1"))
    b.publish(msg(b"2"))
    assert broker.tick(clock.at_ms(10)).messages == 2


# ---- dead-lettering ------------------------------------------------------------------------


def test_expired_messages_are_dead_lettered_with_x_death(
    broker: AMQPBroker, clock: Clock
) -> None:
    vhost = broker.vhost("/")
    vhost.declare_exchange("dlx", "direct")
    dlq = declare(broker, "dlq")
    vhost.bind_queue("dlq", "dlx", "dead")
    q = declare(
        broker,
        "q",
        arguments={
            "x-message-ttl": 100,
            "x-dead-letter-exchange": "dlx",
            "x-dead-letter-routing-key": "dead",
        },
    )
    q.publish(msg(b"m"))
    broker.tick(clock.at_ms(100))
    (got,) = drain(dlq)
    assert got.message.body == b"m" and got.message.routing_key == "dead"
    headers = headers_of(got.message)
    assert headers is not None
    death = headers["x-death"][0]
    assert death["queue"] == "q" and death["reason"] == "expired"
    assert death["exchange"] == ""  # where the message was published, as RabbitMQ has it
    assert death["time"] == int(T0 + 0.1)  # seconds, from the injected clock
    assert headers["x-first-death-reason"] == "expired"


def test_rejected_messages_go_to_the_dlx_with_their_own_routing_key(
    broker: AMQPBroker,
) -> None:
    vhost = broker.vhost("/")
    vhost.declare_exchange("dlx", "fanout")
    dlq = declare(broker, "dlq")
    vhost.bind_queue("dlq", "dlx")
    q = declare(broker, "q", arguments={"x-dead-letter-exchange": "dlx"})
    q.publish(msg(b"m", routing_key="orig"))
    delivery = q.get()
    assert delivery is not None
    q.reject(delivery, requeue=False)
    (got,) = drain(dlq)
    assert got.message.routing_key == "orig"
    headers = headers_of(got.message)
    assert headers is not None and headers["x-death"][0]["reason"] == "rejected"


def test_a_missing_dead_letter_exchange_drops_the_message(
    broker: AMQPBroker, clock: Clock
) -> None:
    q = declare(broker, "q", arguments={"x-message-ttl": 1, "x-dead-letter-exchange": "gone"})
    q.publish(msg(b"m"))
    assert broker.tick(clock.at_ms(1)).messages == 1
    assert q.message_count == 0


def test_an_automatic_dead_letter_cycle_is_dropped_a_rejection_is_not(
    broker: AMQPBroker, clock: Clock
) -> None:
    # q dead-letters through the default exchange back into itself
    q = declare(
        broker,
        "q",
        arguments={
            "x-message-ttl": 10,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "q",
        },
    )
    q.publish(msg(b"rejected"))
    delivery = q.get()
    assert delivery is not None
    q.reject(delivery, requeue=False)
    (back,) = drain(q)
    assert back.message.body == b"rejected"
    q.publish(msg(b"expired"))
    assert broker.tick(clock.at_ms(10)).messages == 1
    assert q.message_count == 0  # expired into the queue it died in: dropped


# ---- durable definitions across a restart --------------------------------------------------


def test_durable_definitions_and_messages_survive_a_restart(tmp_path: Path) -> None:
    broker = make_broker(tmp_path)
    args = {"x-max-length": 10, "x-dead-letter-exchange": "dlx", "x-custom": b"\x00raw"}
    q = declare(broker, "jobs", durable=True, arguments=args)
    declare(broker, "transient")
    declare(broker, "elsewhere", vhost="other", durable=True)
    vhost = broker.vhost("/")
    vhost.declare_exchange("dlx", "topic", durable=True)
    vhost.declare_exchange("scratch-x", "fanout")
    vhost.bind_queue("jobs", "dlx", "a.#", {"x-match": "all"})
    vhost.bind_queue("jobs", "scratch-x")
    broker.save("/")
    q.publish(msg(b"kept", routing_key="jobs", delivery_mode=2))
    q.publish(msg(b"lost", routing_key="jobs"))  # transient: gone on restart
    broker.close()

    again = make_broker(tmp_path)
    try:
        jobs = again.get_queue("/", "jobs")
        assert jobs.durable and dict(jobs.arguments) == args
        assert [d.message.body for d in drain(jobs)] == [b"kept"]
        assert [q.name for q in again.queues("/")] == ["jobs"]
        assert again.get_queue("other", "elsewhere").durable
        routing = again.vhost("/")
        dlx = routing.get_exchange("dlx")
        assert dlx is not None and dlx.type == "topic" and dlx.durable
        assert routing.get_exchange("scratch-x") is None
        bindings = routing.bindings_for_source("dlx")
        assert [(b.destination.name, b.routing_key, dict(b.arguments)) for b in bindings] == [
            ("jobs", "a.#", {"x-match": "all"})
        ]
        # the redeclare-equivalence check sees the recovered arguments as declared
        assert declare(again, "jobs", durable=True, arguments=args) is jobs
    finally:
        again.close()


def test_a_deleted_durable_queue_is_not_recovered(tmp_path: Path) -> None:
    broker = make_broker(tmp_path)
    declare(broker, "keep", durable=True)
    gone = declare(broker, "gone", durable=True)
    gone.publish(msg(b"m", routing_key="gone", delivery_mode=2))
    broker.delete_queue("/", gone)
    broker.close()
    again = make_broker(tmp_path)
    try:
        assert [q.name for q in again.queues("/")] == ["keep"]
        assert again.declare_queue(
            "/", "gone", passive=False, durable=True, exclusive_owner=None,
            auto_delete=False, arguments={},
        ).message_count == 0
    finally:
        again.close()


def test_non_durable_queues_page_to_scratch_logs_wiped_at_start(tmp_path: Path) -> None:
    broker = make_broker(tmp_path, queue_memory_bytes=10)
    q = declare(broker, "big")
    for i in range(20):
        q.publish(msg(b"x" * 8 + bytes([i])))
    assert q.paged_count > 0 and any((tmp_path / ".scratch").iterdir())
    assert [d.message.body[-1] for d in drain(q)] == list(range(20))
    broker.close()
    (tmp_path / ".scratch" / "left-over").mkdir(parents=True)  # as a killed run leaves it
    again = make_broker(tmp_path)
    try:
        assert not (tmp_path / ".scratch").exists()
        assert again.queues("/") == []
    finally:
        again.close()


def test_users_permissions_in_a_vhost() -> None:
    user = User("u", "pw", vhosts=("/",))
    assert user.permissions_in("/").configure == ".*"
    assert user.permissions_in("other").configure == ""
