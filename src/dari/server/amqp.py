"""asyncio adapter for the AMQP 0-9-1 listener: socket bytes -> codec events -> domain -> bytes.

``AMQPServerConnection`` drains every event of a socket read, lets channels (``amqp_channel``)
act on them, and writes all output of the read with one ``writelines``. It owns the handshake
(SASL PLAIN/AMQPLAIN, guest from loopback only, tune, vhost), heartbeats both ways with
dead-peer detection, and the cleanup of a closed connection: unacked messages go back to their
queues, exclusive queues are deleted.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import struct
import time
from typing import TYPE_CHECKING, Any

from pamqp import commands

from dari import __version__
from dari.protocol.amqp import (
    AMQPConnection,
    AMQPError,
    BadProtocolHeader,
    ConnectionState,
    ContentReceived,
    HeartbeatReceived,
    MethodReceived,
    ProtocolHeaderReceived,
    ReplyCode,
    decode_table,
    default_server_properties,
)
from dari.queues.broker import AMQPBroker
from dari.server.amqp_channel import Channel

if TYPE_CHECKING:
    from dari.server.alarms import ResourceMonitor

log = logging.getLogger(__name__)

_LOGIN_REFUSED = (
    "Login was refused using authentication mechanism {mechanism}. "
    "For details see the broker logfile."
)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return host == "localhost"


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _credentials(mechanism: str, response: bytes | str) -> tuple[str, str] | None:
    """(user, password) from a PLAIN or AMQPLAIN start-ok response, or None if malformed."""
    raw = response.encode("utf-8", "surrogateescape") if isinstance(response, str) else response
    if mechanism == "PLAIN":
        parts = raw.split(b"\0")
        if len(parts) != 3:
            return None
        return parts[1].decode("utf-8", "replace"), parts[2].decode("utf-8", "replace")
    if mechanism == "AMQPLAIN":
        # A field table without its length prefix (as py-amqp and pika send it).
        try:
            table, _end = decode_table(struct.pack(">I", len(raw)) + raw, 0)
        except AMQPError:
            return None
        login, password = table.get("LOGIN"), table.get("PASSWORD")
        if not isinstance(login, str | bytes) or not isinstance(password, str | bytes):
            return None
        return _text(login), _text(password)
    return None


class AMQPServerConnection(asyncio.Protocol):
    """One client connection; owned by the event loop thread. It is the ``ChannelOwner`` of
    its channels (``amqp_channel_owner``)."""

    def __init__(
        self,
        broker: AMQPBroker,
        settings: dict[str, int],
        connections: set[Any],
        alarms: ResourceMonitor | None = None,
    ):
        self.broker = broker
        self.connections = connections
        self.conn = AMQPConnection(
            server=True,
            frame_max=settings["frame_max"],
            channel_max=settings["channel_max"],
            heartbeat=settings["heartbeat"],
        )
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.peer_host = ""
        self.out: list[bytes] = []
        self._flush_scheduled = False
        self.channels: dict[int, Channel] = {}
        self.vhost: str | None = None
        self.user: str | None = None
        self.capabilities: dict[str, Any] = {}
        self.closed = False
        self.last_received = time.monotonic()
        self._heartbeat_task: asyncio.Task[None] | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        self.reading_paused = False
        self._writing_paused = False
        # Resource alarms (RabbitMQ's blocked connections): ``published`` is set by every
        # publish of a socket read; ``blocked`` once one arrived while an alarm was active.
        self.alarms = alarms
        self.published = False
        self.blocked = False
        self._blocked_sent = False

    # -- asyncio callbacks -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer_host = peer[0]
            self.peer = f"{peer[0]}:{peer[1]}"
        self.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cleanup()

    def pause_writing(self) -> None:
        self._writing_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._update_reading()

    def _update_reading(self) -> None:
        """Read only while neither write backpressure nor a resource alarm holds us."""
        pause = self._writing_paused or self.blocked
        transport = self.transport
        if pause == self.reading_paused or transport is None or transport.is_closing():
            return
        if pause:
            transport.pause_reading()
        else:
            transport.resume_reading()
        self.reading_paused = pause

    def data_received(self, data: bytes) -> None:
        self.last_received = time.monotonic()
        conn = self.conn
        conn.receive_data(data)
        while not self.closed:
            try:
                event = conn.next_event()
            except AMQPError as exc:
                self._protocol_error(exc)
                continue
            if event is None:
                break
            try:
                self._handle(event)
            except AMQPError as exc:
                self._protocol_error(exc)
        for channel in self.channels.values():
            channel.end_of_turn()
        self.flush()
        if self.published:
            self._after_publish()

    # -- output ----------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Queue output; it goes out in one write at the end of this event-loop turn (writes
        caused by other connections, e.g. deliveries of their publishes, included)."""
        self.out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        if self.out and self.transport is not None and not self.transport.is_closing():
            self.transport.writelines(self.out)
        self.out = []

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    # -- events ----------------------------------------------------------------------------
    def _handle(self, event: Any) -> None:
        if type(event) is ContentReceived:
            channel = self.channels.get(event.channel)
            if channel is not None:
                channel.on_publish(event.publish, event.header, event.body)
            return
        if type(event) is MethodReceived:
            if event.channel == 0:
                self._connection_method(event.method)
                return
            channel = self.channels.get(event.channel)
            method = event.method
            if isinstance(method, commands.Channel.Open):
                self.channels[event.channel] = Channel(self, event.channel)
                self.write(self.conn.send_channel_open_ok(event.channel))
            elif isinstance(method, commands.Channel.Close):
                if channel is not None:
                    channel.close()
                self.channels.pop(event.channel, None)
                self.write(self.conn.send_channel_close_ok(event.channel))
            elif isinstance(method, commands.Channel.CloseOk):
                self.channels.pop(event.channel, None)
            elif channel is not None:
                channel.on_method(method)
            return
        if type(event) is HeartbeatReceived:
            return
        if type(event) is ProtocolHeaderReceived:
            properties = default_server_properties("dari", __version__)
            self.write(self.conn.send_start(properties))
            return
        if type(event) is BadProtocolHeader:
            log.info("AMQP connection from %s: bad protocol header %r", self.peer, event.received)
            self.write(event.reply)
            self._close_transport()

    def _connection_method(self, method: Any) -> None:
        conn = self.conn
        if isinstance(method, commands.Connection.StartOk):
            props = method.client_properties or {}
            caps = props.get("capabilities") if hasattr(props, "get") else None
            self.capabilities = dict(caps) if hasattr(caps, "items") else {}
            self._authenticate(method.mechanism, method.response)
        elif isinstance(method, commands.Connection.TuneOk):
            if conn.heartbeat:
                self._heartbeat_task = self.spawn(self._heartbeats(conn.heartbeat))
        elif isinstance(method, commands.Connection.Open):
            vhost = method.virtual_host or "/"
            user = self.broker.users.get(self.user or "")
            if vhost not in self.broker.vhosts:
                raise AMQPError(
                    ReplyCode.NOT_ALLOWED, f"vhost {vhost} not found", connection_level=True,
                    class_id=10, method_id=40,
                )
            if user is not None and vhost not in user.vhosts and "*" not in user.vhosts:
                raise AMQPError(
                    ReplyCode.NOT_ALLOWED,
                    f"access to vhost '{vhost}' refused for user '{self.user}'",
                    connection_level=True, class_id=10, method_id=40,
                )
            self.vhost = vhost
            self.write(conn.send_open_ok())
        elif isinstance(method, commands.Connection.Close):
            self.write(conn.send_close_ok())
            self._cleanup()
            self.flush()
            self._close_transport()
        elif isinstance(method, commands.Connection.CloseOk):
            self._close_transport()
        elif isinstance(method, commands.Connection.Blocked | commands.Connection.Unblocked):
            pass  # clients do not send these; ignore like RabbitMQ
        elif isinstance(method, commands.Connection.UpdateSecret):
            self.write(conn.send_method(0, commands.Connection.UpdateSecretOk()))

    def _authenticate(self, mechanism: str, response: Any) -> None:
        creds = _credentials(mechanism, response)
        user = self.broker.users.get(creds[0]) if creds else None
        ok = (
            user is not None
            and creds is not None
            and user.password == creds[1]
            and (not user.loopback_only or _is_loopback(self.peer_host))
        )
        if not ok:
            who = creds[0] if creds else "?"
            log.warning("AMQP login of user %r from %s refused", who, self.peer)
            if self.capabilities.get("authentication_failure_close"):
                error = AMQPError(
                    ReplyCode.ACCESS_REFUSED,
                    _LOGIN_REFUSED.format(mechanism=mechanism),
                    connection_level=True,
                    class_id=10,
                    method_id=11,
                )
                self.write(self.conn.send_error(error))
            self.flush()
            self._close_transport()
            return
        self.user = creds[0] if creds else None
        self.write(self.conn.send_tune())

    def _protocol_error(self, exc: AMQPError) -> None:
        """Answer a peer error with channel.close or connection.close, as RabbitMQ does."""
        if self.conn.state is ConnectionState.CLOSED:
            self._close_transport()
            return
        log.info("AMQP error on %s channel %s: %s", self.peer, exc.channel, exc.reply_text)
        if exc.connection_level or not exc.channel:
            self.write(self.conn.send_error(exc))
            self._cleanup()
            self.flush()
            # Give the client a moment to read the close before the socket goes.
            asyncio.get_running_loop().call_later(1.0, self._close_transport)
            return
        channel = self.channels.pop(exc.channel, None)
        if channel is not None:
            channel.close()
        self.write(self.conn.send_error(exc))

    # -- flow control: resource alarms ------------------------------------------------------
    def _after_publish(self) -> None:
        """End of a socket read that published: with an alarm active, stop reading and tell a
        client that declared the ``connection.blocked`` capability why (RabbitMQ's
        ``publish_received``). Only publishing connections block; consumers' acks still flow."""
        self.published = False
        alarms = self.alarms
        if alarms is None or not alarms.active or self.blocked or self.closed:
            return
        self.blocked = True
        self._update_reading()
        if self.capabilities.get("connection.blocked") is True and self._is_open():
            self.write(self.conn.send_blocked(alarms.reason))
            self._blocked_sent = True
            self.flush()

    def alarms_changed(self) -> None:
        """The set of active alarms changed: once none is left, read again and send
        ``connection.unblocked`` if ``connection.blocked`` was sent."""
        if not self.blocked or (self.alarms is not None and self.alarms.active):
            return
        self.blocked = False
        self.last_received = time.monotonic()  # silence while blocked was not the peer's fault
        self._update_reading()
        if self._blocked_sent and self._is_open():
            self.write(self.conn.send_unblocked())
            self.flush()
        self._blocked_sent = False

    def _is_open(self) -> bool:
        return not self.closed and self.conn.state is ConnectionState.OPEN

    # -- heartbeats and cleanup -------------------------------------------------------------
    async def _heartbeats(self, interval: int) -> None:
        """Send a heartbeat every interval/2 s; drop a peer silent for two intervals (not while
        blocked: we are not reading it then, RabbitMQ pauses its heartbeat monitor too)."""
        while not self.closed:
            await asyncio.sleep(interval / 2)
            if not self.blocked and time.monotonic() - self.last_received > 2 * interval:
                log.warning("AMQP peer %s missed heartbeats; closing", self.peer)
                self._cleanup()
                self._close_transport()
                return
            if self.conn.state is ConnectionState.OPEN:
                self.write(self.conn.send_heartbeat())
                self.flush()

    def _cleanup(self) -> None:
        """Connection gone: requeue unacked messages, delete exclusive queues."""
        if self.closed:
            return
        self.closed = True
        self.connections.discard(self)
        for channel in list(self.channels.values()):
            channel.close()
        self.channels.clear()
        for task in list(self.tasks):
            if task is not asyncio.current_task():
                task.cancel()
        if self.vhost is not None:
            self.broker.delete_exclusive(self.vhost, self)

    def _close_transport(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.flush()
            self.transport.close()

    def close(self) -> None:
        """Broker shutdown: connection.close 320 as RabbitMQ sends it, then close."""
        if not self.closed and self.conn.state is ConnectionState.OPEN:
            error = AMQPError(
                ReplyCode.CONNECTION_FORCED, "broker forced connection closure with reason "
                "'shutdown'", connection_level=True,
            )
            self.write(self.conn.send_error(error))
        self._cleanup()
        self._close_transport()
