"""pika's callback-driven SelectConnection: confirms, consume and ack without any blocking call."""

from __future__ import annotations

from dataclasses import dataclass, field

import pika
from pika.channel import Channel
from pika.frame import Method
from pika.spec import Basic

from .amqp_clients import WAIT_S, parameters

COUNT = 200


@dataclass
class Flow:
    """declare -> confirm.select -> publish COUNT -> all confirmed -> consume + ack -> close."""

    queue: str
    acked_by_broker: set[int] = field(default_factory=set)
    nacked_by_broker: set[int] = field(default_factory=set)
    received: list[tuple[bytes, bool, str | None]] = field(default_factory=list)
    returned: list[int] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    timed_out: bool = False
    conn: pika.SelectConnection | None = None
    channel: Channel | None = None

    def on_open(self, conn: pika.SelectConnection) -> None:
        self.steps.append("open")
        conn.channel(on_open_callback=self.on_channel)

    def on_channel(self, ch: Channel) -> None:
        self.steps.append("channel")
        self.channel = ch
        ch.add_on_return_callback(lambda c, m, p, b: self.returned.append(m.reply_code))
        ch.confirm_delivery(self.on_confirm, callback=self.on_confirm_ok)

    def on_confirm_ok(self, _frame: Method) -> None:
        self.steps.append("confirm")
        assert self.channel is not None
        self.channel.queue_declare(self.queue, exclusive=True, callback=self.on_declared)

    def on_declared(self, frame: Method) -> None:
        self.steps.append(f"declared {frame.method.queue}")
        assert self.channel is not None
        self.channel.basic_qos(prefetch_count=50, callback=self.on_qos)

    def on_qos(self, _frame: Method) -> None:
        assert self.channel is not None
        for i in range(COUNT):
            self.channel.basic_publish(
                "",
                self.queue,
                f"m{i}".encode(),
                pika.BasicProperties(message_id=str(i)),
                mandatory=True,
            )
        self.channel.basic_publish("", f"{self.queue}-nowhere", b"r", mandatory=True)

    def on_confirm(self, frame: Method) -> None:
        method = frame.method
        settled = self.acked_by_broker | self.nacked_by_broker
        if method.multiple:  # everything still outstanding up to the tag
            tags = {t for t in range(1, method.delivery_tag + 1) if t not in settled}
        else:
            tags = {method.delivery_tag}
        target = self.acked_by_broker if isinstance(method, Basic.Ack) else self.nacked_by_broker
        target.update(tags)
        if len(self.acked_by_broker) + len(self.nacked_by_broker) == COUNT + 1:
            self.steps.append("all confirmed")
            assert self.channel is not None
            self.channel.basic_consume(self.queue, self.on_message)

    def on_message(
        self, ch: Channel, method: Basic.Deliver, props: pika.BasicProperties, body: bytes
    ) -> None:
        self.received.append((body, method.redelivered, props.message_id))
        ch.basic_ack(method.delivery_tag)
        if len(self.received) == COUNT:
            self.steps.append("consumed")
            assert self.conn is not None
            self.conn.close()

    def on_timeout(self) -> None:
        self.timed_out = True
        assert self.conn is not None
        self.conn.close()


def test_select_connection_confirm_publish_consume_ack(amqp_url: str, name: str) -> None:
    flow = Flow(name)
    conn = pika.SelectConnection(
        parameters(amqp_url),
        on_open_callback=flow.on_open,
        on_open_error_callback=lambda c, err: flow.steps.append(f"open error {err!r}"),
        on_close_callback=lambda c, reason: c.ioloop.stop(),
    )
    flow.conn = conn
    conn.ioloop.call_later(WAIT_S, flow.on_timeout)
    conn.ioloop.start()

    assert not flow.timed_out, f"flow stalled after {WAIT_S:.0f} s at steps {flow.steps}"
    assert flow.steps[-2:] == ["all confirmed", "consumed"], flow.steps
    assert flow.acked_by_broker == set(range(1, COUNT + 2)), "every publish acked, returned too"
    assert not flow.nacked_by_broker
    assert flow.returned == [312], "the unroutable mandatory publish comes back as NO_ROUTE"
    assert [body for body, _, _ in flow.received] == [f"m{i}".encode() for i in range(COUNT)]
    assert [mid for _, _, mid in flow.received] == [str(i) for i in range(COUNT)]
    assert not any(redelivered for _, redelivered, _ in flow.received)
