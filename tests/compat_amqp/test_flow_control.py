"""Resource alarms and blocked connections, as RabbitMQ applies them to AMQP 0-9-1 clients.

While a memory or disk alarm is active, a connection that publishes stops being read and, if its
client declared the `connection.blocked` capability, receives `connection.blocked` with the
reason; when the alarm clears it is read again and receives `connection.unblocked`. Nothing is
dropped, and connections that only consume keep receiving and acking.

Against dari the test starts its own broker with a config file and raises or clears alarms by
rewriting the file and sending SIGHUP. Against an external RabbitMQ (DARI_TEST_AMQP_URL) set
DARI_TEST_RABBITMQCTL to the rabbitmqctl command line for that node (e.g.
`rabbitmqctl -n rabbit@localhost`); the tests call `set_vm_memory_high_watermark` and
`set_disk_free_limit` through it, and are skipped without it.
"""

from __future__ import annotations

import os
import select
import shlex
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
from pamqp import body as pamqp_body
from pamqp import commands, frame, header
from pamqp.heartbeat import Heartbeat

from broker import Broker

from .amqp_clients import connect, consume, pump_until, queue_depth, wait_until
from .conftest import EXTERNAL_SKIP_REASON, EXTERNAL_URL, AmqpServer, external_server, server_of

MEMORY, DISK = "memory", "disk"
REASONS = {MEMORY: "low on memory", DISK: "low on disk"}
# Config files: no alarm can trigger / an alarm at once (watermark 0, or more free disk than
# any disk has). The watermark of 0 is RabbitMQ's documented way to stop all publishing.
_CONFIGS = {
    None: '"amqp.memory.high.watermark" = 1.0\n"disk.free.limit" = 0\n',
    MEMORY: '"amqp.memory.high.watermark" = 0.0\n"disk.free.limit" = 0\n',
    DISK: '"amqp.memory.high.watermark" = 1.0\n"disk.free.limit" = 4611686018427387904\n',
}
_RABBITMQCTL = {
    None: [["set_vm_memory_high_watermark", "0.4"], ["set_disk_free_limit", "50000000"]],
    MEMORY: [["set_vm_memory_high_watermark", "0"]],
    DISK: [["set_disk_free_limit", "4611686018427387904"]],
}
BODY = b"x" * 1024
_NOTICES = (Heartbeat, commands.Connection.Blocked, commands.Connection.Unblocked)


class AlarmSwitch:
    """Raises one resource alarm (or clears all) and returns once the broker applied it."""

    def __init__(self, server: AmqpServer, config: Path | None = None) -> None:
        self.server = server
        self.config = config
        self.reloads = 0

    def set(self, source: str | None) -> None:
        if self.config is None:
            ctl = shlex.split(os.environ["DARI_TEST_RABBITMQCTL"])
            for args in _RABBITMQCTL[source]:
                subprocess.run([*ctl, *args], check=True, capture_output=True, timeout=60)
            return
        broker = self.server.broker
        assert broker is not None and broker.proc is not None
        self.config.write_text(_CONFIGS[source])
        self.reloads += 1
        broker.proc.send_signal(signal.SIGHUP)
        # The limits are applied (and checked) right after this line, in the same loop turn.
        wait_until(
            broker.stderr,
            lambda err: err.count("Disk free limit set to") > self.reloads,
            "the broker to reload its configuration on SIGHUP",
        )


@pytest.fixture
def alarms(tmp_path: Path) -> Iterator[AlarmSwitch]:
    if EXTERNAL_URL:
        if not os.environ.get("DARI_TEST_RABBITMQCTL"):
            pytest.skip(EXTERNAL_SKIP_REASON + "; set DARI_TEST_RABBITMQCTL to control alarms")
        switch = AlarmSwitch(external_server())
        try:
            yield switch
        finally:
            switch.set(None)
        return
    config = tmp_path / "dari.toml"
    config.write_text(_CONFIGS[None])
    broker = Broker(
        tmp_path / "data", log_dir=tmp_path / "logs", amqp_port=0,
        extra_args=["--config", str(config)],
    ).start()
    try:
        yield AlarmSwitch(server_of(broker), config)
    finally:
        broker.close()


class Notifications:
    """connection.blocked / connection.unblocked as a pika client sees them, in order."""

    def __init__(self, conn: pika.BlockingConnection) -> None:
        self.seen: list[tuple[str, str | None]] = []
        conn.add_on_connection_blocked_callback(
            lambda _conn, frame: self.seen.append(("blocked", frame.method.reason))
        )
        conn.add_on_connection_unblocked_callback(
            lambda _conn, _frame: self.seen.append(("unblocked", None))
        )


def _bodies(prefix: str, count: int) -> list[bytes]:
    return [f"{prefix}-{i}".encode() + BODY for i in range(count)]


@pytest.mark.parametrize("source", [MEMORY, DISK])
def test_publisher_is_blocked_then_unblocked_and_nothing_is_lost(
    alarms: AlarmSwitch, name: str, source: str
) -> None:
    url = alarms.server.url
    conn = connect(url)
    notes = Notifications(conn)
    ch = conn.channel()
    ch.queue_declare(name, exclusive=True)
    alarms.set(source)
    early, late = _bodies("early", 20), _bodies("late", 30)
    for body in early:
        ch.basic_publish("", name, body)
    pump_until(conn, lambda: bool(notes.seen), "connection.blocked after publishing")
    assert notes.seen == [("blocked", REASONS[source])]
    for body in late:  # wait in the client's socket, unread by the broker: none may be lost
        ch.basic_publish("", name, body)
    alarms.set(None)
    pump_until(conn, lambda: len(notes.seen) == 2, "connection.unblocked")
    assert notes.seen == [("blocked", REASONS[source]), ("unblocked", None)]
    wait_until(lambda: queue_depth(ch, name), lambda n: n == 50, "all 50 messages in the queue")
    got = consume(ch, name, 50)
    assert [g.body for g in got] == early + late, "every message arrives, in publish order"
    conn.close()


def test_consumers_keep_receiving_and_acking_while_publishers_are_blocked(
    alarms: AlarmSwitch, name: str
) -> None:
    url = alarms.server.url
    publisher = connect(url)
    pub_notes = Notifications(publisher)
    pub = publisher.channel()
    pub.queue_declare(name)
    consumer = connect(url)
    cons_notes = Notifications(consumer)
    cons = consumer.channel()
    try:
        backlog = _bodies("backlog", 40)
        for body in backlog:
            pub.basic_publish("", name, body)
        wait_until(lambda: queue_depth(pub, name), lambda n: n == 40, "the backlog queued")
        alarms.set(MEMORY)
        pub.basic_publish("", name, b"during-alarm")
        pump_until(publisher, lambda: bool(pub_notes.seen), "the publisher to be blocked")
        assert pub_notes.seen == [("blocked", "low on memory")]
        # A prefetch window smaller than the backlog: only acks the broker reads make room.
        cons.basic_qos(prefetch_count=5)
        got = consume(cons, name, 40)
        assert [g.body for g in got] == backlog
        assert cons_notes.seen == [], "a connection that never published is not blocked"
        alarms.set(None)
        pump_until(publisher, lambda: len(pub_notes.seen) == 2, "the publisher to be unblocked")
        rest = consume(cons, name, 1)
        assert [g.body for g in rest] == [b"during-alarm"]
        assert cons_notes.seen == []
    finally:
        alarms.set(None)  # a blocked connection could not be closed cleanly
        cons.queue_delete(name)
        consumer.close()
        publisher.close()


class RawClient:
    """An AMQP client on a bare socket that declares no capabilities at all, so it must never
    see connection.blocked; it records every frame the broker sends."""

    def __init__(self, host: str, port: int, user: str = "guest", password: str = "guest"):
        self.sock = socket.create_connection((host, port), timeout=30)
        self.buf = b""
        self.frames: list[Any] = []
        self.sock.sendall(frame.marshal(header.ProtocolHeader(), 0))
        self._expect(commands.Connection.Start)
        self.send(
            commands.Connection.StartOk(
                client_properties={"product": "raw-test-client"},
                mechanism="PLAIN",
                response=f"\0{user}\0{password}",
            )
        )
        tune = self._expect(commands.Connection.Tune)
        self.send(commands.Connection.TuneOk(tune.channel_max, tune.frame_max, 0))
        self.send(commands.Connection.Open("/"))
        self._expect(commands.Connection.OpenOk)
        self.send(commands.Channel.Open(), 1)
        self._expect(commands.Channel.OpenOk)

    def send(self, value: Any, channel: int = 0) -> None:
        self.sock.sendall(frame.marshal(value, channel))

    def _read_frame(self) -> Any:
        while True:
            if len(self.buf) >= 7:
                size = int.from_bytes(self.buf[3:7], "big")
                if len(self.buf) >= size + 8:
                    used, _channel, value = frame.unmarshal(self.buf[: size + 8])
                    self.buf = self.buf[used:]
                    self.frames.append(value)
                    return value
            data = self.sock.recv(65536)
            assert data, f"the broker closed the connection; frames so far: {self.frames}"
            self.buf += data

    def _expect(self, kind: type) -> Any:
        """The next frame of `kind`; heartbeats and connection.(un)blocked are only recorded."""
        while True:
            value = self._read_frame()
            if isinstance(value, kind):
                return value
            assert isinstance(value, _NOTICES), f"expected {kind.__name__}, got {value!r}"

    def publish_frames(self, routing_key: str, body: bytes) -> bytes:
        return b"".join(
            (
                frame.marshal(commands.Basic.Publish(exchange="", routing_key=routing_key), 1),
                frame.marshal(header.ContentHeader(0, len(body), commands.Basic.Properties()), 1),
                frame.marshal(pamqp_body.ContentBody(body), 1),
            )
        )

    def publish_until_unread(self, routing_key: str, quiet_s: float = 1.0) -> tuple[int, bytes]:
        """Publish until the socket accepts nothing more for `quiet_s`: the broker stopped
        reading. Returns the whole messages sent and the unsent rest of a partly sent one."""
        message = self.publish_frames(routing_key, BODY)
        sent, pending = 0, memoryview(message)
        total, limit = 0, 512 << 20
        self.sock.setblocking(False)
        try:
            while True:
                try:
                    n = self.sock.send(pending)
                except BlockingIOError:
                    # poll, not select: a long test run may have file descriptors above 1024
                    poller = select.poll()
                    poller.register(self.sock, select.POLLOUT)
                    if not poller.poll(quiet_s * 1000):
                        return sent, bytes(pending)
                    continue
                total += n
                pending = pending[n:]
                if not pending:
                    sent += 1
                    pending = memoryview(message)
                assert total < limit, f"the broker kept reading {total} bytes of publishes"
        finally:
            self.sock.settimeout(30)

    def message_count(self, queue: str) -> int:
        self.send(commands.Queue.Declare(queue=queue, passive=True), 1)
        return self._expect(commands.Queue.DeclareOk).message_count

    def close(self) -> None:
        self.sock.close()


def test_client_without_the_capability_is_paused_without_notification(
    alarms: AlarmSwitch, name: str
) -> None:
    server = alarms.server
    with connect(server.url) as admin:
        admin.channel().queue_declare(name)
    raw = RawClient(server.host, server.port)
    try:
        assert raw.message_count(name) == 0
        alarms.set(DISK)
        sent, rest = raw.publish_until_unread(name)
        alarms.set(None)
        raw.sock.sendall(rest)  # completes the last, partly sent message
        sent += 1
        wait_until(lambda: raw.message_count(name), lambda n: n == sent, f"{sent} messages")
        kinds = {type(value).__name__ for value in raw.frames}
        assert not kinds & {"Blocked", "Unblocked"}, (
            f"connection.blocked/unblocked went to a client without the capability: {kinds}"
        )
    finally:
        raw.close()
        with connect(server.url) as admin:
            admin.channel().queue_delete(name)


def test_alarm_from_the_command_line_blocks_at_once_and_shutdown_still_works(
    tmp_path: Path, name: str
) -> None:
    if EXTERNAL_URL:
        pytest.skip(EXTERNAL_SKIP_REASON)
    broker = Broker(
        tmp_path / "data", log_dir=tmp_path / "logs", amqp_port=0,
        settings={"amqp.memory.high.watermark.bytes": 1},
    ).start()
    try:
        assert "memory resource limit alarm set on node" in broker.stderr()
        conn = connect(broker.amqp_url)
        notes = Notifications(conn)
        ch = conn.channel()
        ch.queue_declare(name, exclusive=True)
        ch.basic_publish("", name, b"first")
        pump_until(conn, lambda: bool(notes.seen), "connection.blocked")
        assert notes.seen == [("blocked", "low on memory")]
        broker.terminate()  # a blocked connection does not hold up a graceful stop
    finally:
        broker.close()
