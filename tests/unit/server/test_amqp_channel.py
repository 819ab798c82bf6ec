"""Channel driven without sockets: pamqp encodes what a client sends, a real AMQPConnection
parses it and encodes the answers, the channels act on a real broker model over a temporary
data directory, and pamqp decodes every byte written back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pamqp import body as pbody
from pamqp import commands
from pamqp import frame as pframe
from pamqp import header as pheader

from dari.protocol.amqp import (
    AMQPConnection,
    AMQPError,
    ContentReceived,
    MethodReceived,
    ProtocolHeaderReceived,
)
from dari.queues.broker import AMQPBroker, User
from dari.queues.permissions import Permissions
from dari.server.amqp_channel import Channel
from dari.storage import FlushScheduler, LogConfig

USERS = {
    "guest": User("guest", "guest", True, ("*",)),
    # may use only names starting with "alice-"
    "alice": User("alice", "pw", permissions={"/": Permissions("^alice-", "^alice-", "^alice-")}),
}


class Decoded:
    """A decoded pamqp method that compares equal to an expected one field by field (pamqp's
    own frames compare by identity); attribute reads and isinstance go to the method."""

    def __init__(self, method: Any) -> None:
        self.method = method

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return type(self.method)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.method, name)

    def __eq__(self, other: object) -> bool:
        other = other.method if isinstance(other, Decoded) else other
        return type(other) is type(self.method) and vars(other) == vars(self.method)

    def __repr__(self) -> str:
        return f"{type(self.method).__name__}{vars(self.method)}"


class Host:
    """The owner of channels (what ``AMQPServerConnection`` is for them), without a socket:
    feeds client frames to a real ``AMQPConnection``, hands its events to ``Channel`` objects
    and keeps every byte they write. Satisfies ``ChannelOwner``."""

    def __init__(self, broker: AMQPBroker, user: str = "guest", **limits: int) -> None:
        self.broker = broker
        self.conn = AMQPConnection(**limits)
        self.vhost: str | None = None
        self.user: str | None = None
        self.capabilities: dict[str, Any] = {"consumer_cancel_notify": True}
        self.published = False
        self.channels: dict[int, Channel] = {}
        self.tasks: set[asyncio.Task[Any]] = set()
        self.closed = False  # by a connection-level error
        self._out: list[bytes] = []
        self._handshake(user)

    # -- ChannelOwner ----------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        self._out.append(data)

    def flush(self) -> None:
        pass  # ``replies`` reads whatever was written

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    # -- client side -----------------------------------------------------------------------
    def _handshake(self, user: str) -> None:
        conn = self.conn
        conn.receive_data(b"AMQP\x00\x00\x09\x01")
        assert conn.next_event() == ProtocolHeaderReceived()
        conn.send_start()
        password = USERS[user].password
        self.feed(0, commands.Connection.StartOk(
            client_properties={}, mechanism="PLAIN", response=f"\0{user}\0{password}"
        ))
        self.user = user
        conn.send_tune()
        self.feed(0, commands.Connection.TuneOk(conn.channel_max, conn.frame_max, 0))
        self.feed(0, commands.Connection.Open(virtual_host="/"))
        self.vhost = "/"
        conn.send_open_ok()

    def feed(self, channel: int, *methods: Any) -> None:
        """One socket read holding ``methods`` (and content frames) on ``channel``."""
        self.feed_bytes(b"".join(
            m if isinstance(m, bytes) else pframe.marshal(m, channel) for m in methods
        ))

    def feed_bytes(self, data: bytes) -> None:
        conn = self.conn
        conn.receive_data(data)
        while not self.closed:
            try:
                event = conn.next_event()
                if event is None:
                    break
                self._handle(event)
            except AMQPError as exc:
                self._error(exc)
        for channel in list(self.channels.values()):
            channel.end_of_turn()

    def _handle(self, event: Any) -> None:
        if type(event) is ContentReceived:
            self.channels[event.channel].on_publish(event.publish, event.header, event.body)
            return
        assert type(event) is MethodReceived, event
        method, number = event.method, event.channel
        if number == 0:
            return  # handshake methods; the state machine already moved
        if isinstance(method, commands.Channel.Open):
            self.channels[number] = Channel(self, number)
            self.write(self.conn.send_channel_open_ok(number))
        elif isinstance(method, commands.Channel.Close):
            self.channels.pop(number).close()
            self.write(self.conn.send_channel_close_ok(number))
        elif isinstance(method, commands.Channel.CloseOk):
            self.channels.pop(number, None)
        else:
            self.channels[number].on_method(method)

    def _error(self, exc: AMQPError) -> None:
        if exc.connection_level or not exc.channel:
            self.write(self.conn.send_error(exc))
            self.closed = True
            for channel in self.channels.values():
                channel.close()
            return
        channel = self.channels.pop(exc.channel, None)
        if channel is not None:
            channel.close()
        self.write(self.conn.send_error(exc))

    def replies(self) -> list[tuple[int, Any]]:
        """(channel, pamqp frame) for every frame written since the last call."""
        data, self._out = b"".join(self._out), []
        frames = []
        while data:
            used, channel, value = pframe.unmarshal(data)
            frames.append((channel, value))
            data = data[used:]
        return frames

    def methods(self) -> list[Any]:
        """The method frames written since the last call (content frames dropped)."""
        return [
            Decoded(value) for _ch, value in self.replies()
            if not isinstance(value, pheader.ContentHeader | pbody.ContentBody)
        ]

    def open(self, number: int = 1) -> None:
        self.feed(number, commands.Channel.Open())
        assert self.methods() == [commands.Channel.OpenOk()]

    def close_channel(self, number: int = 1) -> None:
        self.feed(number, commands.Channel.Close(200, "bye", 0, 0))
        assert self.methods()[-1] == commands.Channel.CloseOk()


def publish(
    channel: int, routing_key: str, body: bytes, exchange: str = "", **properties: Any
) -> bytes:
    """basic.publish + content header + body, as a client encodes them."""
    return b"".join((
        pframe.marshal(commands.Basic.Publish(exchange=exchange, routing_key=routing_key), channel),
        pframe.marshal(
            pheader.ContentHeader(0, len(body), commands.Basic.Properties(**properties)), channel
        ),
        pframe.marshal(pbody.ContentBody(body), channel) if body else b"",
    ))


def deliveries(frames: list[tuple[int, Any]]) -> list[tuple[int, bytes]]:
    """(delivery tag, body) of each basic.deliver in written frames."""
    out: list[tuple[int, bytes]] = []
    tag = None
    for _channel, value in frames:
        if isinstance(value, commands.Basic.Deliver):
            tag = value.delivery_tag
            out.append((tag, b""))
        elif isinstance(value, pbody.ContentBody) and tag is not None:
            out[-1] = (tag, out[-1][1] + value.value)
    return out


def tags(frames: list[tuple[int, Any]]) -> list[int]:
    return [tag for tag, _body in deliveries(frames)]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
async def broker(data_dir: Path) -> AsyncIterator[AMQPBroker]:
    flusher = FlushScheduler()
    broker = AMQPBroker(data_dir, flusher, LogConfig(), USERS)
    broker.load()
    yield broker
    broker.close()
    await flusher.aclose()


@pytest.fixture
def host(broker: AMQPBroker) -> Iterator[Host]:
    host = Host(broker)
    host.open(1)
    yield host
    for channel in host.channels.values():
        channel.close()


def declare(host: Host, queue: str, channel: int = 1, **kwargs: Any) -> None:
    host.feed(channel, commands.Queue.Declare(queue=queue, **kwargs))
    [ok] = host.methods()
    assert isinstance(ok, commands.Queue.DeclareOk) and ok.queue == queue


def consume(host: Host, queue: str, tag: str, channel: int = 1, **kwargs: Any) -> None:
    host.feed(channel, commands.Basic.Consume(queue=queue, consumer_tag=tag, **kwargs))
    assert host.methods() == [commands.Basic.ConsumeOk(tag)]


def channel_close(frames: list[Any]) -> commands.Channel.Close:
    [close] = [m for m in frames if isinstance(m, commands.Channel.Close)]
    return close


# -- round trip --------------------------------------------------------------------------------


async def test_declare_bind_publish_consume_ack_round_trip(host: Host, broker: AMQPBroker):
    host.feed(1, commands.Exchange.Declare(exchange="logs", exchange_type="direct"))
    assert host.methods() == [commands.Exchange.DeclareOk()]
    declare(host, "q")
    host.feed(1, commands.Queue.Bind(queue="q", exchange="logs", routing_key="info"))
    assert host.methods() == [commands.Queue.BindOk()]
    host.feed_bytes(publish(1, "info", b"one", "logs") + publish(1, "info", b"two", "logs"))
    assert host.replies() == []
    host.feed(1, commands.Basic.Consume(queue="q", consumer_tag="c1"))
    frames = host.replies()
    assert Decoded(frames[0][1]) == commands.Basic.ConsumeOk("c1")
    assert deliveries(frames) == [(1, b"one"), (2, b"two")]
    deliver = frames[1][1]
    assert (deliver.consumer_tag, deliver.exchange, deliver.routing_key) == ("c1", "logs", "info")
    assert not deliver.redelivered
    queue = broker.get_queue("/", "q")
    assert (queue.message_count, queue.unacked_count) == (0, 2)
    host.feed(1, commands.Basic.Ack(delivery_tag=2, multiple=True))
    assert host.replies() == []
    assert (queue.message_count, queue.unacked_count) == (0, 0)
    host.feed_bytes(publish(1, "info", b"three", "logs"))
    assert deliveries(host.replies()) == [(3, b"three")]


async def test_consume_ok_precedes_the_backlog_and_acks_free_the_queue(
    host: Host, broker: AMQPBroker
):
    declare(host, "q")
    host.feed_bytes(publish(1, "q", b"one") + publish(1, "q", b"two"))
    host.feed(1, commands.Basic.Consume(queue="q", consumer_tag="c1"))
    frames = host.replies()
    assert Decoded(frames[0][1]) == commands.Basic.ConsumeOk("c1")
    assert deliveries(frames) == [(1, b"one"), (2, b"two")]
    [deliver] = [v for _c, v in frames if isinstance(v, commands.Basic.Deliver)][:1]
    assert (deliver.exchange, deliver.routing_key, deliver.redelivered) == ("", "q", False)
    queue = broker.get_queue("/", "q")
    assert queue.unacked_count == 2
    host.feed(1, commands.Basic.Ack(delivery_tag=2, multiple=True))
    assert host.replies() == [] and queue.unacked_count == 0 and queue.message_count == 0
    host.feed_bytes(publish(1, "q", b"three"))
    assert deliveries(host.replies()) == [(3, b"three")]


async def test_properties_are_forwarded_and_basic_get_counts(host: Host):
    declare(host, "q")
    host.feed_bytes(publish(1, "q", b"a", content_type="text/plain", message_id="m1"))
    host.feed_bytes(publish(1, "q", b"b"))
    host.feed(1, commands.Basic.Get(queue="q"))
    frames = host.replies()
    get_ok, head, body = (v for _c, v in frames)
    assert isinstance(get_ok, commands.Basic.GetOk)
    assert (get_ok.delivery_tag, get_ok.message_count) == (1, 1)
    assert head.properties.content_type == "text/plain" and head.properties.message_id == "m1"
    assert body.value == b"a"
    host.feed(1, commands.Basic.Reject(delivery_tag=1, requeue=True))
    host.feed(1, commands.Basic.Get(queue="q", no_ack=True))
    get_ok = host.methods()[0]
    assert get_ok.redelivered and get_ok.delivery_tag == 2
    host.feed(1, commands.Basic.Get(queue="q", no_ack=True))
    host.feed(1, commands.Basic.Get(queue="q", no_ack=True))
    assert host.methods()[-1] == commands.Basic.GetEmpty()


async def test_unknown_delivery_tag_closes_the_channel_with_406(host: Host):
    host.feed(1, commands.Basic.Ack(delivery_tag=7))
    close = channel_close(host.methods())
    assert (close.reply_code, close.class_id, close.method_id) == (406, 60, 80)
    assert close.reply_text == "PRECONDITION_FAILED - unknown delivery tag 7"


async def test_mandatory_unroutable_publish_is_returned(host: Host):
    host.feed_bytes(
        pframe.marshal(commands.Basic.Publish(routing_key="nowhere", mandatory=True), 1)
        + pframe.marshal(pheader.ContentHeader(0, 4, commands.Basic.Properties()), 1)
        + pframe.marshal(pbody.ContentBody(b"lost"), 1)
    )
    returned, head, body = (value for _channel, value in host.replies())
    assert isinstance(returned, commands.Basic.Return)
    assert (returned.reply_code, returned.reply_text, returned.routing_key) == (
        312, "NO_ROUTE", "nowhere"
    )
    assert head.body_size == 4 and body.value == b"lost"


# -- publisher confirms ------------------------------------------------------------------------


async def test_confirms_one_ack_multiple_per_turn(host: Host):
    declare(host, "q")
    host.feed(1, commands.Confirm.Select())
    assert host.methods() == [commands.Confirm.SelectOk()]
    host.feed_bytes(b"".join(publish(1, "q", b"m%d" % i) for i in range(3)))
    assert host.methods() == [commands.Basic.Ack(delivery_tag=3, multiple=True)]
    host.feed_bytes(publish(1, "unrouted", b"x") + publish(1, "q", b"y"))
    assert host.methods() == [commands.Basic.Ack(delivery_tag=5, multiple=True)]


async def test_confirms_nack_publishes_refused_by_reject_publish_overflow(host: Host):
    declare(host, "q", arguments={"x-max-length": 2, "x-overflow": "reject-publish"})
    host.feed(1, commands.Confirm.Select())
    host.methods()
    host.feed_bytes(b"".join(publish(1, "q", b"m%d" % i) for i in range(4)))
    assert host.methods() == [
        commands.Basic.Nack(delivery_tag=3, multiple=False, requeue=False),
        commands.Basic.Nack(delivery_tag=4, multiple=False, requeue=False),
        commands.Basic.Ack(delivery_tag=4, multiple=True),
    ]


async def test_confirms_of_a_durable_queue_wait_for_its_flush(host: Host):
    declare(host, "dq", durable=True)
    host.feed(1, commands.Confirm.Select())
    host.methods()
    host.feed_bytes(b"".join(publish(1, "dq", body, delivery_mode=2) for body in (b"a", b"b")))
    for _ in range(100):
        if not host.tasks:
            break
        await asyncio.sleep(0.01)
    assert host.methods() == [commands.Basic.Ack(delivery_tag=2, multiple=True)]


async def test_confirm_and_tx_modes_exclude_each_other(host: Host):
    host.feed(1, commands.Confirm.Select())
    host.methods()
    host.feed(1, commands.Tx.Select())
    close = channel_close(host.methods())
    assert close.reply_code == 406 and "confirm to tx" in close.reply_text


# -- transactions ------------------------------------------------------------------------------


async def test_tx_commit_applies_publishes_and_acks(host: Host, broker: AMQPBroker):
    declare(host, "q")
    host.feed_bytes(publish(1, "q", b"old"))
    host.feed(1, commands.Basic.Get(queue="q"))
    host.replies()
    host.feed(1, commands.Tx.Select())
    assert host.methods() == [commands.Tx.SelectOk()]
    host.feed_bytes(publish(1, "q", b"new"))
    host.feed(1, commands.Basic.Ack(delivery_tag=1))
    queue = broker.get_queue("/", "q")
    assert (queue.message_count, queue.unacked_count) == (0, 1)  # nothing applied yet
    host.feed(1, commands.Tx.Commit())
    assert host.methods() == [commands.Tx.CommitOk()]
    assert (queue.message_count, queue.unacked_count) == (1, 0)


async def test_tx_rollback_drops_publishes_and_acks(host: Host, broker: AMQPBroker):
    declare(host, "q")
    host.feed_bytes(publish(1, "q", b"old"))
    host.feed(1, commands.Basic.Get(queue="q"))
    host.replies()
    host.feed(1, commands.Tx.Select())
    host.feed_bytes(publish(1, "q", b"new"))
    host.feed(1, commands.Basic.Ack(delivery_tag=1))
    host.feed(1, commands.Tx.Rollback())
    assert host.methods() == [commands.Tx.SelectOk(), commands.Tx.RollbackOk()]
    queue = broker.get_queue("/", "q")
    assert (queue.message_count, queue.unacked_count) == (0, 1)
    host.feed(1, commands.Tx.Commit())  # an empty transaction
    assert host.methods() == [commands.Tx.CommitOk()]
    assert (queue.message_count, queue.unacked_count) == (0, 1)


async def test_tx_commit_outside_tx_mode_is_406(host: Host):
    host.feed(1, commands.Tx.Commit())
    close = channel_close(host.methods())
    assert (close.reply_code, close.class_id, close.method_id) == (406, 90, 20)


# -- qos ---------------------------------------------------------------------------------------


async def test_per_consumer_prefetch_window(host: Host):
    declare(host, "q")
    host.feed_bytes(b"".join(publish(1, "q", b"%d" % i) for i in range(5)))
    host.feed(1, commands.Basic.Qos(prefetch_count=2))
    assert host.methods() == [commands.Basic.QosOk()]
    host.feed(1, commands.Basic.Consume(queue="q", consumer_tag="a"))
    assert tags(host.replies()) == [1, 2]
    host.feed(1, commands.Basic.Consume(queue="q", consumer_tag="b"))  # its own window
    assert tags(host.replies()) == [3, 4]
    host.feed(1, commands.Basic.Ack(delivery_tag=1))
    assert tags(host.replies()) == [5]


async def test_global_prefetch_window_is_shared_by_the_channel(host: Host):
    declare(host, "q")
    host.feed_bytes(b"".join(publish(1, "q", b"%d" % i) for i in range(5)))
    host.feed(1, commands.Basic.Qos(prefetch_count=3, global_=True))
    host.methods()
    host.feed(1, commands.Basic.Consume(queue="q", consumer_tag="a"))
    assert tags(host.replies()) == [1, 2, 3]
    host.feed(1, commands.Basic.Consume(queue="q", consumer_tag="b"))
    assert tags(host.replies()) == []  # the shared window is full
    host.feed(1, commands.Basic.Get(queue="q"))
    assert host.methods() == [commands.Basic.GetEmpty()]
    host.feed(1, commands.Basic.Ack(delivery_tag=2, multiple=True))
    assert tags(host.replies()) == [4, 5]


async def test_global_prefetch_is_a_per_consumer_window_on_quorum_queues(host: Host):
    quorum = {"x-queue-type": "quorum"}
    declare(host, "q", durable=True, arguments=quorum)
    declare(host, "r", durable=True, arguments=quorum)
    host.feed_bytes(b"".join(publish(1, q, b"%d" % i) for i in range(5) for q in "qr"))
    host.feed(1, commands.Basic.Qos(prefetch_count=2, global_=True))
    host.methods()
    host.feed(1, commands.Basic.Consume(queue="q", consumer_tag="a"))
    assert tags(host.replies()) == [1, 2]
    host.feed(1, commands.Basic.Consume(queue="r", consumer_tag="b"))
    assert tags(host.replies()) == [3, 4], "RabbitMQ 4: no shared window for quorum queues"


async def test_reject_counts_a_failed_delivery_nack_and_recover_do_not(host: Host):
    declare(host, "q", durable=True, arguments={"x-queue-type": "quorum"})
    host.feed_bytes(publish(1, "q", b"m"))

    def get() -> tuple[int, Any]:
        host.feed(1, commands.Basic.Get(queue="q"))
        frames = host.replies()
        [ok] = [v for _c, v in frames if isinstance(v, commands.Basic.GetOk)]
        [header] = [v for _c, v in frames if isinstance(v, pheader.ContentHeader)]
        headers = header.properties.headers or {}
        return ok.delivery_tag, (headers.get("x-delivery-count"),
                                 headers.get("x-acquired-count"))

    tag, counts = get()
    assert counts == (None, None)
    host.feed(1, commands.Basic.Nack(delivery_tag=tag, requeue=True))
    tag, counts = get()
    assert counts == (None, 1)
    host.feed(1, commands.Basic.Recover(requeue=True))
    assert host.methods() == [commands.Basic.RecoverOk()]
    tag, counts = get()
    assert counts == (None, 2)
    host.feed(1, commands.Basic.Reject(delivery_tag=tag, requeue=True))
    tag, counts = get()
    assert counts == (1, 3)


async def test_raising_the_window_dispatches_at_once(host: Host):
    declare(host, "q")
    host.feed_bytes(b"".join(publish(1, "q", b"%d" % i) for i in range(3)))
    host.feed(1, commands.Basic.Qos(prefetch_count=1, global_=True))
    host.feed(1, commands.Basic.Consume(queue="q", consumer_tag="a"))
    assert tags(host.replies()) == [1]
    host.feed(1, commands.Basic.Qos(prefetch_count=0, global_=True))
    assert tags(host.replies()) == [2, 3]


async def test_prefetch_size_is_not_implemented(host: Host):
    host.feed(1, commands.Basic.Qos(prefetch_size=10))
    [close] = host.methods()
    assert isinstance(close, commands.Connection.Close) and close.reply_code == 540


async def test_channel_close_requeues_unacked_in_order(host: Host, broker: AMQPBroker):
    declare(host, "q")
    host.feed_bytes(b"".join(publish(1, "q", b"%d" % i) for i in range(3)))
    host.feed(1, commands.Basic.Consume(queue="q", consumer_tag="a"))
    assert tags(host.replies()) == [1, 2, 3]
    host.close_channel(1)
    host.open(2)
    host.feed(2, commands.Basic.Consume(queue="q", consumer_tag="b"))
    frames = host.replies()
    assert [body for _tag, body in deliveries(frames)] == [b"0", b"1", b"2"]
    assert all(v.redelivered for _c, v in frames if isinstance(v, commands.Basic.Deliver))


# -- permissions -------------------------------------------------------------------------------


@pytest.fixture
def alice(broker: AMQPBroker) -> Host:
    host = Host(broker, "alice")
    host.open(1)
    return host


async def test_declaring_outside_the_users_patterns_is_refused_with_403(alice: Host):
    alice.feed(1, commands.Queue.Declare(queue="bob-q"))
    close = channel_close(alice.methods())
    assert (close.reply_code, close.class_id, close.method_id) == (403, 50, 10)
    assert close.reply_text == (
        "ACCESS_REFUSED - configure access to queue 'bob-q' in vhost '/' refused for user 'alice'"
    )
    alice.open(2)
    declare(alice, "alice-q", channel=2)


async def test_publishing_to_an_exchange_without_write_is_refused_with_403(alice: Host):
    alice.feed_bytes(publish(1, "alice-q", b"x", exchange="amq.direct"))
    close = channel_close(alice.methods())
    assert (close.reply_code, close.class_id, close.method_id) == (403, 60, 40)
    assert "exchange 'amq.direct'" in close.reply_text


async def test_consuming_without_read_is_refused_with_403(host: Host, alice: Host):
    declare(host, "bob-q")
    alice.feed(1, commands.Basic.Consume(queue="bob-q", consumer_tag="c"))
    close = channel_close(alice.methods())
    assert (close.reply_code, close.class_id, close.method_id) == (403, 60, 20)
    assert close.reply_text.startswith("ACCESS_REFUSED - read access to queue 'bob-q'")


# -- bug: no consume-ok for a refused consumer -------------------------------------------------


async def test_consume_on_a_queue_with_an_exclusive_consumer_sends_no_consume_ok(
    host: Host, broker: AMQPBroker
):
    declare(host, "q")
    consume(host, "q", "owner", exclusive=True)
    other = Host(broker)
    other.open(1)
    other.feed(1, commands.Basic.Consume(queue="q", consumer_tag="late"))
    [close] = other.methods()  # and no consume-ok before it
    assert isinstance(close, commands.Channel.Close)
    assert (close.reply_code, close.class_id, close.method_id) == (403, 60, 20)
    assert close.reply_text == "ACCESS_REFUSED - queue 'q' in vhost '/' in exclusive use"
    assert broker.get_queue("/", "q").consumer_count == 1
    # The refused consumer got nothing: the messages go to the exclusive one.
    host.feed_bytes(publish(1, "q", b"x"))
    assert deliveries(host.replies()) == [(1, b"x")]


async def test_exclusive_consume_beside_other_consumers_sends_no_consume_ok(host: Host):
    declare(host, "q")
    consume(host, "q", "first")
    host.open(2)
    host.feed(2, commands.Basic.Consume(queue="q", consumer_tag="x", exclusive=True))
    [close] = host.methods()
    assert isinstance(close, commands.Channel.Close) and close.reply_code == 403


async def test_consume_on_another_connections_exclusive_queue_is_405(
    host: Host, broker: AMQPBroker
):
    declare(host, "mine", exclusive=True)
    other = Host(broker)
    other.open(1)
    other.feed(1, commands.Basic.Consume(queue="mine", consumer_tag="c"))
    [close] = other.methods()
    assert isinstance(close, commands.Channel.Close) and close.reply_code == 405


# -- bug: channel_max limits the count of open channels, not their numbers ---------------------


async def test_any_channel_number_may_be_opened_below_channel_max(broker: AMQPBroker):
    host = Host(broker, channel_max=2)
    host.open(65535)
    host.open(1000)
    declare(host, "q", channel=65535)


async def test_one_channel_more_than_channel_max_closes_the_connection_with_530(
    broker: AMQPBroker,
):
    host = Host(broker, channel_max=2)
    host.open(7)
    host.open(9)
    host.feed(3, commands.Channel.Open())
    [close] = host.methods()
    assert isinstance(close, commands.Connection.Close)
    assert (close.reply_code, close.class_id, close.method_id) == (530, 0, 0)
    assert close.reply_text == (
        "NOT_ALLOWED - number of channels opened (2) has reached the negotiated channel_max (2)"
    )


async def test_a_closed_channel_makes_room_for_another(broker: AMQPBroker):
    host = Host(broker, channel_max=1)
    host.open(5)
    host.close_channel(5)
    host.open(6)
