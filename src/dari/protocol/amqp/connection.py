"""Server side of one AMQP 0-9-1 connection as a sans-IO state machine.

Bytes go in with ``receive_data``; ``next_event`` returns events until it needs more bytes
(then ``None``); the ``send_*`` methods return the bytes to write and advance the state. No
sockets, no asyncio, no timers: the adapter in ``dari.server`` owns all of that (it also
sends heartbeats and watches for missing ones using ``heartbeat``).

Every (state, direction, method) pair allowed is listed in ``CONNECTION_TRANSITIONS`` and
``CHANNEL_TRANSITIONS``; a received pair missing from them is a protocol error (an
``AMQPError`` from ``next_event``), a sent one is our bug (``LocalProtocolError``).

Error handling contract: when ``next_event`` raises an ``AMQPError`` the connection has
already moved on — to CLOSING for a connection-level error, or the offending channel to
CLOSING for a channel-level one — so the adapter only has to write ``send_error(exc)`` and
keep draining events (frames the protocol says to ignore are then dropped here).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Mapping
from typing import Any

from dari.protocol.amqp import fastpath
from dari.protocol.amqp.errors import AMQPError, FrameError, LocalProtocolError, ReplyCode
from dari.protocol.amqp.events import (
    BadProtocolHeader,
    ContentReceived,
    Event,
    HeartbeatReceived,
    MethodReceived,
    ProtocolHeaderReceived,
)
from dari.protocol.amqp.fastpath import ContentHeader, DeliverEncoder, Publish
from dari.protocol.amqp.framing import (
    FRAME_BODY,
    FRAME_HEADER,
    FRAME_HEARTBEAT,
    FRAME_METHOD,
    FRAME_MIN_SIZE,
    HEARTBEAT_FRAME,
    PROTOCOL_HEADER,
    FrameReader,
)
from dari.protocol.amqp.methods import commands, decode_method, encode_method, method_ids

__all__ = [
    "CHANNEL_TRANSITIONS",
    "CONNECTION_TRANSITIONS",
    "DEFAULT_CHANNEL_MAX",
    "DEFAULT_FRAME_MAX",
    "DEFAULT_HEARTBEAT",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "AMQPConnection",
    "ChannelState",
    "ConnectionState",
    "default_server_properties",
]

DEFAULT_FRAME_MAX = 131_072  # RabbitMQ's frame_max
DEFAULT_CHANNEL_MAX = 2047  # RabbitMQ's channel_max
DEFAULT_HEARTBEAT = 60  # seconds, RabbitMQ's heartbeat
DEFAULT_MAX_MESSAGE_SIZE = 134_217_728  # RabbitMQ's max_message_size (128 MiB)
# rabbit_command_assembler refuses bodies above ?MAX_MSG_SIZE with FRAME_ERROR.
HARD_MAX_MESSAGE_SIZE = 536_870_912

_U32 = struct.Struct(">I")
RECV, SEND = "recv", "send"

# Publishers repeat themselves: the same publish method (exchange, routing key, flags) and the
# same content header (properties and body size) come again and again. Both decoded values are
# immutable, so each distinct payload is decoded and validated once; a full cache starts over.
_CACHE_SIZE = 4096
_PUBLISHES: dict[bytes, Publish] = {}
_HEADERS: dict[bytes, ContentHeader] = {}


def _publish_method(payload: bytes) -> Publish:
    publish = _PUBLISHES.get(payload)
    if publish is None:
        publish = fastpath.decode_publish(payload)
        if len(_PUBLISHES) >= _CACHE_SIZE:
            _PUBLISHES.clear()
        _PUBLISHES[bytes(payload)] = publish
    return publish


class ConnectionState(enum.Enum):
    AWAIT_HEADER = "await-header"  # nothing received yet
    HEADER_RECEIVED = "header-received"  # server must send connection.start
    START_SENT = "start-sent"  # waiting for start-ok
    STARTING = "starting"  # start-ok/secure-ok received: server authenticates
    SECURE_SENT = "secure-sent"  # waiting for secure-ok
    TUNE_SENT = "tune-sent"  # waiting for tune-ok
    TUNED = "tuned"  # waiting for connection.open
    OPENING = "opening"  # open received: server checks the vhost, sends open-ok
    OPEN = "open"
    CLOSE_RECEIVED = "close-received"  # client sent close: server sends close-ok
    CLOSING = "closing"  # server sent close: only close/close-ok are read
    CLOSED = "closed"


class ChannelState(enum.Enum):
    CLOSED = "closed"  # not open (also: never opened); such channels are not stored
    OPEN = "open"
    CLOSE_RECEIVED = "close-received"  # client sent channel.close: server sends close-ok
    CLOSING = "closing"  # server sent channel.close: only close/close-ok are read


C = ConnectionState
_HANDSHAKE = (C.START_SENT, C.STARTING, C.SECURE_SENT, C.TUNE_SENT, C.TUNED, C.OPENING)

CONNECTION_TRANSITIONS: dict[tuple[ConnectionState, str, str], ConnectionState] = {
    (C.AWAIT_HEADER, RECV, "ProtocolHeader"): C.HEADER_RECEIVED,
    (C.HEADER_RECEIVED, SEND, "Connection.Start"): C.START_SENT,
    (C.START_SENT, RECV, "Connection.StartOk"): C.STARTING,
    (C.STARTING, SEND, "Connection.Secure"): C.SECURE_SENT,
    (C.SECURE_SENT, RECV, "Connection.SecureOk"): C.STARTING,
    (C.STARTING, SEND, "Connection.Tune"): C.TUNE_SENT,
    (C.TUNE_SENT, RECV, "Connection.TuneOk"): C.TUNED,
    (C.TUNED, RECV, "Connection.Open"): C.OPENING,
    (C.OPENING, SEND, "Connection.OpenOk"): C.OPEN,
    (C.OPEN, RECV, "Connection.UpdateSecret"): C.OPEN,
    (C.OPEN, SEND, "Connection.UpdateSecretOk"): C.OPEN,
    (C.OPEN, SEND, "Connection.Blocked"): C.OPEN,
    (C.OPEN, SEND, "Connection.Unblocked"): C.OPEN,
    (C.OPEN, RECV, "Connection.Close"): C.CLOSE_RECEIVED,
    (C.CLOSE_RECEIVED, SEND, "Connection.CloseOk"): C.CLOSED,
    # Both sides closing at once: answer the peer's close, then we are done.
    (C.CLOSING, RECV, "Connection.Close"): C.CLOSING,
    (C.CLOSING, SEND, "Connection.CloseOk"): C.CLOSED,
    (C.CLOSING, RECV, "Connection.CloseOk"): C.CLOSED,
    **{(state, SEND, "Connection.Close"): C.CLOSING for state in (*_HANDSHAKE, C.OPEN)},
    **{(state, RECV, "Connection.Close"): C.CLOSE_RECEIVED for state in _HANDSHAKE},
}

# Methods a client may send on a channel, and those a server may send (besides channel.*).
_CLIENT_METHODS = [
    "Exchange.Declare",
    "Exchange.Delete",
    "Exchange.Bind",
    "Exchange.Unbind",
    "Queue.Declare",
    "Queue.Bind",
    "Queue.Purge",
    "Queue.Delete",
    "Queue.Unbind",
    "Basic.Qos",
    "Basic.Consume",
    "Basic.Cancel",
    "Basic.CancelOk",
    "Basic.Publish",
    "Basic.Get",
    "Basic.Ack",
    "Basic.Reject",
    "Basic.RecoverAsync",
    "Basic.Recover",
    "Basic.Nack",
    "Confirm.Select",
    "Tx.Select",
    "Tx.Commit",
    "Tx.Rollback",
    "Channel.Flow",
    "Channel.FlowOk",
]
_SERVER_METHODS = [
    "Channel.OpenOk",
    "Channel.Flow",
    "Channel.FlowOk",
    "Exchange.DeclareOk",
    "Exchange.DeleteOk",
    "Exchange.BindOk",
    "Exchange.UnbindOk",
    "Queue.DeclareOk",
    "Queue.BindOk",
    "Queue.PurgeOk",
    "Queue.DeleteOk",
    "Queue.UnbindOk",
    "Basic.QosOk",
    "Basic.ConsumeOk",
    "Basic.Cancel",
    "Basic.CancelOk",
    "Basic.Return",
    "Basic.Deliver",
    "Basic.GetOk",
    "Basic.GetEmpty",
    "Basic.Ack",
    "Basic.Nack",
    "Basic.RecoverOk",
    "Confirm.SelectOk",
    "Tx.SelectOk",
    "Tx.CommitOk",
    "Tx.RollbackOk",
]

H = ChannelState
CHANNEL_TRANSITIONS: dict[tuple[ChannelState, str, str], ChannelState] = {
    (H.CLOSED, RECV, "Channel.Open"): H.OPEN,
    **{(H.OPEN, RECV, name): H.OPEN for name in _CLIENT_METHODS},
    **{(H.OPEN, SEND, name): H.OPEN for name in _SERVER_METHODS},
    (H.OPEN, RECV, "Channel.Close"): H.CLOSE_RECEIVED,
    (H.CLOSE_RECEIVED, SEND, "Channel.CloseOk"): H.CLOSED,
    (H.OPEN, SEND, "Channel.Close"): H.CLOSING,
    # RabbitMQ's rabbit_channel in state closing: answer a close with close-ok and keep
    # waiting for the peer's close-ok; drop everything else.
    (H.CLOSING, RECV, "Channel.Close"): H.CLOSING,
    (H.CLOSING, SEND, "Channel.CloseOk"): H.CLOSING,
    (H.CLOSING, RECV, "Channel.CloseOk"): H.CLOSED,
}
del C, H

_NOT_READING = (ConnectionState.CLOSE_RECEIVED, ConnectionState.CLOSING, ConnectionState.CLOSED)


def default_server_properties(product: str = "dari", version: str = "0") -> dict[str, Any]:
    """``server_properties`` for connection.start with the RabbitMQ capabilities clients
    probe for (pika, aio-pika and kombu enable confirms, nacks and cancel-notify from these)."""
    capabilities = dict.fromkeys(
        (
            "publisher_confirms",
            "exchange_exchange_bindings",
            "basic.nack",
            "consumer_cancel_notify",
            "connection.blocked",
            "consumer_priorities",
            "authentication_failure_close",
            "per_consumer_qos",
            "direct_reply_to",
        ),
        True,
    )
    return {
        "capabilities": capabilities,
        "product": product,
        "version": version,
        "platform": "Python",
        "information": "dari message broker",
    }


class _Channel:
    """Per-channel state: the protocol state plus a content being assembled."""

    __slots__ = ("header", "parts", "publish", "remaining", "state")

    def __init__(self) -> None:
        self.state = ChannelState.OPEN
        self.publish: Publish | None = None
        self.header: ContentHeader | None = None
        self.remaining = 0
        self.parts: list[bytes] = []

    def drop_content(self) -> None:
        self.publish = None
        self.header = None
        self.parts = []


class AMQPConnection:
    """One client connection seen from the broker; owned by its adapter, not thread-safe.

    ``frame_max``, ``channel_max`` and ``heartbeat`` are the server's limits offered in
    connection.tune; after tune-ok they hold the negotiated values. ``max_message_size`` is
    RabbitMQ's setting of that name (a bigger message is a 406 channel error).
    """

    def __init__(
        self,
        server: bool = True,
        *,
        frame_max: int = DEFAULT_FRAME_MAX,
        channel_max: int = DEFAULT_CHANNEL_MAX,
        heartbeat: int = DEFAULT_HEARTBEAT,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        if not server:
            raise NotImplementedError("only the server side of AMQP 0-9-1 is implemented")
        self.frame_max = frame_max
        self.channel_max = channel_max
        self.heartbeat = heartbeat
        self.max_message_size = min(max_message_size, HARD_MAX_MESSAGE_SIZE)
        self.state = ConnectionState.AWAIT_HEADER
        # Until tune-ok, accept frames up to our own frame_max (large login tokens fit).
        self._reader = FrameReader(frame_max)
        self._channels: dict[int, _Channel] = {}
        self._broken = False  # the byte stream is lost: read nothing more

    # -- introspection --------------------------------------------------------------------

    def channel_state(self, channel: int) -> ChannelState:
        ch = self._channels.get(channel)
        return ch.state if ch is not None else ChannelState.CLOSED

    def is_open(self, channel: int) -> bool:
        """True if deliveries may be sent on ``channel``."""
        ch = self._channels.get(channel)
        return ch is not None and ch.state is ChannelState.OPEN

    @property
    def channels(self) -> dict[int, ChannelState]:
        return {number: ch.state for number, ch in self._channels.items()}

    @property
    def buffered(self) -> int:
        """Received bytes not yet turned into events (for backpressure)."""
        return self._reader.buffered

    # -- input ----------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Add bytes read from the socket (``b""`` at EOF is ignored: the adapter closes)."""
        if self.state is ConnectionState.CLOSED or self._broken:
            return
        self._reader.feed(data)

    def next_event(self) -> Event | None:
        """The next event, or None when more bytes are needed (or nothing more will be read).

        Raises ``AMQPError``; see the module docstring for what the adapter does then.
        """
        reader = self._reader
        channels = self._channels
        OPEN = ChannelState.OPEN  # hoisted for the hot loop
        while True:
            if self.state is not ConnectionState.OPEN:
                if self._broken or self.state is ConnectionState.CLOSED:
                    return None
                if self.state is ConnectionState.AWAIT_HEADER:
                    return self._protocol_header()
            try:
                frame = reader.next_frame()
            except FrameError:
                self._fail_connection()
                raise
            if frame is None:
                return None
            ftype, number, payload = frame
            try:
                ch = channels.get(number)
                if ch is not None and ch.state is OPEN:
                    # Hot path: the frames of publishes and acks on an open channel.
                    if ftype == FRAME_BODY and ch.header is not None:
                        remaining = ch.remaining - len(payload)
                        if remaining > 0:
                            ch.remaining = remaining
                            ch.parts.append(payload)
                            continue
                        if remaining == 0 and not ch.parts:
                            event = ContentReceived(number, ch.publish, ch.header, payload)  # type: ignore[arg-type]
                            ch.publish = ch.header = None
                            return event
                    elif ftype == FRAME_METHOD and ch.publish is None and len(payload) >= 4:
                        index = _U32.unpack_from(payload, 0)[0]
                        if index == fastpath.PUBLISH:
                            publish = _publish_method(payload)
                            content = reader.next_content(number)
                            if content is None:
                                ch.publish = publish
                                continue
                            header_payload, body = content
                            header = _HEADERS.get(header_payload)
                            if header is not None and len(body) <= self.max_message_size:
                                return ContentReceived(number, publish, header, body)
                            # A header not seen before: validate it on the general path.
                            ch.publish = publish
                            self._content_header(ch, number, header_payload)
                            return self._channel_frame(FRAME_BODY, number, body)
                        if index == fastpath.ACK:
                            return MethodReceived(number, fastpath.decode_ack(payload))
                if number == 0:
                    event = self._channel0(ftype, payload)
                else:
                    event = self._channel_frame(ftype, number, payload)
            except AMQPError as exc:
                if exc.connection_level:
                    self._fail_connection(isinstance(exc, FrameError))
                else:
                    self._fail_channel(exc.channel)
                raise
            if event is not None:
                return event

    def _protocol_header(self) -> Event | None:
        sniff = self._reader.peek()[:8]
        if sniff != PROTOCOL_HEADER[: len(sniff)]:
            # Another protocol or version (RabbitMQ would also accept 0-9; we follow the
            # 0-9-1 spec): no need to wait for all 8 bytes once one differs.
            self.state = ConnectionState.CLOSED
            return BadProtocolHeader(sniff)
        if len(sniff) < 8:
            return None
        self._reader.read_exact(8)
        self.state = CONNECTION_TRANSITIONS[(self.state, RECV, "ProtocolHeader")]
        return ProtocolHeaderReceived()

    def _fail_connection(self, broken: bool = True) -> None:
        if broken:
            self._broken = True
        if self.state is not ConnectionState.CLOSED:
            self.state = ConnectionState.CLOSING

    def _fail_channel(self, number: int) -> None:
        ch = self._channels.get(number)
        if ch is not None:
            ch.state = ChannelState.CLOSING
            ch.drop_content()

    # -- channel 0 ------------------------------------------------------------------------

    def _channel0(self, ftype: int, payload: bytes) -> Event | None:
        stopping = self.state in _NOT_READING
        if ftype == FRAME_HEARTBEAT:
            if payload:
                raise FrameError("heartbeat frame with a payload")
            return None if stopping else HeartbeatReceived()
        if ftype != FRAME_METHOD:
            if stopping:
                return None
            raise AMQPError(ReplyCode.UNEXPECTED_FRAME, f"frame type {ftype} on channel 0")
        if stopping:
            if self.state is not ConnectionState.CLOSING or len(payload) < 4:
                return None
            index = _U32.unpack_from(payload, 0)[0]
            if index not in (commands.Connection.Close.index, commands.Connection.CloseOk.index):
                return None
        method = decode_method(payload)
        key = (self.state, RECV, method.name)
        new_state = CONNECTION_TRANSITIONS.get(key)
        if new_state is None:
            class_id, method_id = method_ids(method)
            raise AMQPError(
                ReplyCode.COMMAND_INVALID,
                f"{method.name} is not valid on channel 0 in state {self.state.value}",
                class_id=class_id,
                method_id=method_id,
            )
        if method.name == "Connection.TuneOk":
            self._apply_tune_ok(method)
        self.state = new_state
        if new_state is ConnectionState.CLOSE_RECEIVED:
            self._channels.clear()
        return MethodReceived(0, method)

    def _apply_tune_ok(self, tune_ok: Any) -> None:
        # rabbit_reader validate_negotiated_integer_value: 0 means "no limit", which the
        # client may only ask for when the server has none; below the minimum is refused.
        frame_max = self._negotiate("frame_max", tune_ok.frame_max, self.frame_max, FRAME_MIN_SIZE)
        channel_max = self._negotiate("channel_max", tune_ok.channel_max, self.channel_max, 0)
        self.frame_max, self.channel_max = frame_max, channel_max
        self.heartbeat = tune_ok.heartbeat
        self._reader.frame_max = frame_max

    @staticmethod
    def _negotiate(name: str, client: int, server: int, minimum: int) -> int:
        if client != 0 and client < minimum:
            raise AMQPError(
                ReplyCode.NOT_ALLOWED,
                f"negotiated {name} = {client} is lower than the minimum allowed value ({minimum})",
                class_id=10,
                method_id=31,
            )
        if server != 0 and (client == 0 or client > server):
            raise AMQPError(
                ReplyCode.NOT_ALLOWED,
                f"negotiated {name} = {client} is higher than the maximum allowed value ({server})",
                class_id=10,
                method_id=31,
            )
        return client

    # -- channels > 0 ---------------------------------------------------------------------

    def _channel_frame(self, ftype: int, number: int, payload: bytes) -> Event | None:
        if self.state is not ConnectionState.OPEN:
            if self.state in _NOT_READING:
                return None
            raise AMQPError(
                ReplyCode.UNEXPECTED_FRAME,
                f"frame on channel {number} before the connection is open",
                channel=number,
            )
        ch = self._channels.get(number)
        if ch is None:
            return self._unopened_channel(ftype, number, payload)
        if ch.state is not ChannelState.OPEN:
            if ch.state is ChannelState.CLOSING and ftype == FRAME_METHOD:
                return self._closing_channel_method(ch, number, payload)
            return None  # dropped, as RabbitMQ does after channel.close
        if ftype == FRAME_METHOD:
            if ch.publish is not None:
                raise AMQPError(
                    ReplyCode.UNEXPECTED_FRAME,
                    "expected content header or body, got a method frame",
                    class_id=60,
                    method_id=40,
                    channel=number,
                )
            if len(payload) < 4:
                raise FrameError("method frame shorter than its class and method ids")
            index = _U32.unpack_from(payload, 0)[0]
            if index == fastpath.PUBLISH:
                ch.publish = _publish_method(payload)
                return None
            if index == fastpath.ACK:
                return MethodReceived(number, fastpath.decode_ack(payload))
            if index == fastpath.NACK:
                return MethodReceived(number, fastpath.decode_nack(payload))
            if index == fastpath.REJECT:
                return MethodReceived(number, fastpath.decode_reject(payload))
            return self._channel_method(ch, number, decode_method(payload))
        if ftype == FRAME_HEADER:
            return self._content_header(ch, number, payload)
        if ftype == FRAME_BODY:
            header = ch.header
            if header is None:
                raise AMQPError(
                    ReplyCode.UNEXPECTED_FRAME,
                    "content body frame without a preceding basic.publish and header",
                    channel=number,
                )
            size = len(payload)
            remaining = ch.remaining - size
            if remaining < 0:
                raise FrameError(
                    "content body frame exceeds remaining content size", class_id=60, method_id=40
                )
            if remaining:
                ch.remaining = remaining
                ch.parts.append(payload)
                return None
            publish = ch.publish
            parts = ch.parts
            ch.publish = ch.header = None
            if parts:
                parts.append(payload)
                ch.parts = []
                return ContentReceived(number, publish, header, b"".join(parts))  # type: ignore[arg-type]
            return ContentReceived(number, publish, header, payload)  # type: ignore[arg-type]
        # A heartbeat on a channel other than 0 (rabbit_reader: unexpected_frame).
        raise AMQPError(
            ReplyCode.UNEXPECTED_FRAME, f"frame type {ftype} on channel {number}", channel=number
        )

    def _content_header(self, ch: _Channel, number: int, payload: bytes) -> Event | None:
        publish = ch.publish
        if publish is None or ch.header is not None:
            raise AMQPError(
                ReplyCode.UNEXPECTED_FRAME,
                "content header frame without a preceding basic.publish",
                channel=number,
            )
        header = _HEADERS.get(payload)
        if header is None:
            header = ContentHeader(payload)
            if header.class_id != fastpath.BASIC_CLASS or header.weight != 0:
                raise AMQPError(
                    ReplyCode.UNEXPECTED_FRAME,
                    f"expected content header for class 60, got one for class {header.class_id}",
                    class_id=60,
                    method_id=40,
                    channel=number,
                )
            if len(_HEADERS) >= _CACHE_SIZE:
                _HEADERS.clear()
            _HEADERS[bytes(payload)] = header
        size = header.body_size
        if size > self.max_message_size:
            if size > HARD_MAX_MESSAGE_SIZE:
                raise FrameError(
                    f"content body size {size} exceeds maximum allowed size "
                    f"{HARD_MAX_MESSAGE_SIZE}",
                    class_id=60,
                    method_id=40,
                )
            raise AMQPError(
                ReplyCode.PRECONDITION_FAILED,
                f"message size {size} is larger than configured max size {self.max_message_size}",
                class_id=60,
                method_id=40,
                channel=number,
            )
        if size == 0:
            ch.publish = None
            return ContentReceived(number, publish, header, b"")
        ch.header = header
        ch.remaining = size
        return None

    def _unopened_channel(self, ftype: int, number: int, payload: bytes) -> Event | None:
        method = decode_method(payload) if ftype == FRAME_METHOD else None
        if method is None or method.name != "Channel.Open":
            class_id, method_id = method_ids(method) if method is not None else (0, 0)
            raise AMQPError(
                ReplyCode.CHANNEL_ERROR,
                f"expected 'channel.open' on channel {number}",
                class_id=class_id,
                method_id=method_id,
                channel=number,
            )
        # RabbitMQ (rabbit_reader:create_channel) limits how many channels are open at once,
        # not their numbers: any number up to 65535 may be opened while fewer than the
        # negotiated channel_max are. Over the limit it is a NOT_ALLOWED connection error
        # raised by "operation none".
        count = len(self._channels)
        if self.channel_max and count >= self.channel_max:
            raise AMQPError(
                ReplyCode.NOT_ALLOWED,
                f"number of channels opened ({count}) has reached the negotiated "
                f"channel_max ({self.channel_max})",
                connection_level=True,
                channel=number,
            )
        self._channels[number] = _Channel()
        return MethodReceived(number, method)

    def _channel_method(self, ch: _Channel, number: int, method: Any) -> Event:
        new_state = CHANNEL_TRANSITIONS.get((ch.state, RECV, method.name))
        if new_state is None:
            class_id, method_id = method_ids(method)
            if method.name == "Channel.Open":
                code, text = ReplyCode.CHANNEL_ERROR, "second 'channel.open' seen"
            else:
                code, text = ReplyCode.COMMAND_INVALID, f"{method.name} is not valid here"
            raise AMQPError(code, text, class_id=class_id, method_id=method_id, channel=number)
        self._set_channel_state(number, ch, new_state)
        return MethodReceived(number, method)

    def _closing_channel_method(
        self, ch: _Channel, number: int, payload: bytes
    ) -> Event | None:
        if len(payload) < 4:
            return None
        index = _U32.unpack_from(payload, 0)[0]
        if index not in (commands.Channel.Close.index, commands.Channel.CloseOk.index):
            return None
        method = decode_method(payload)
        self._set_channel_state(number, ch, CHANNEL_TRANSITIONS[(ch.state, RECV, method.name)])
        return MethodReceived(number, method)

    def _set_channel_state(self, number: int, ch: _Channel, state: ChannelState) -> None:
        if state is ChannelState.CLOSED:
            del self._channels[number]
        else:
            if state is not ChannelState.OPEN:
                ch.drop_content()
            ch.state = state

    # -- output ---------------------------------------------------------------------------

    def _transition_connection(self, name: str) -> None:
        new_state = CONNECTION_TRANSITIONS.get((self.state, SEND, name))
        if new_state is None:
            raise LocalProtocolError(f"cannot send {name} in state {self.state.value}")
        self.state = new_state
        if new_state in (ConnectionState.CLOSING, ConnectionState.CLOSED):
            self._channels.clear()

    def _transition_channel(self, number: int, name: str) -> None:
        if self.state is not ConnectionState.OPEN:
            raise LocalProtocolError(f"cannot send {name} with the connection {self.state.value}")
        ch = self._channels.get(number)
        state = ch.state if ch is not None else ChannelState.CLOSED
        new_state = CHANNEL_TRANSITIONS.get((state, SEND, name))
        if new_state is None or ch is None:
            raise LocalProtocolError(f"cannot send {name} on channel {number} ({state.value})")
        self._set_channel_state(number, ch, new_state)

    def send_method(self, channel: int, method: Any) -> bytes:
        """Any pamqp command object; advances the connection or channel state."""
        if channel == 0:
            self._transition_connection(method.name)
        else:
            self._transition_channel(channel, method.name)
        return encode_method(channel, method)

    def send_start(
        self,
        server_properties: Mapping[str, Any] | None = None,
        mechanisms: str = "PLAIN AMQPLAIN",
        locales: str = "en_US",
    ) -> bytes:
        """connection.start (0-9-1) after ``ProtocolHeaderReceived``."""
        start = commands.Connection.Start.__new__(commands.Connection.Start)
        start.version_major, start.version_minor = 0, 9
        start.server_properties = dict(server_properties or default_server_properties())
        start.mechanisms, start.locales = mechanisms, locales
        return self.send_method(0, start)

    def send_secure(self, challenge: bytes) -> bytes:
        return self.send_method(0, commands.Connection.Secure(challenge))  # type: ignore[arg-type]

    def send_tune(self) -> bytes:
        """connection.tune with this connection's frame_max, channel_max and heartbeat."""
        return self.send_method(
            0, commands.Connection.Tune(self.channel_max, self.frame_max, self.heartbeat)
        )

    def send_open_ok(self) -> bytes:
        return self.send_method(0, commands.Connection.OpenOk())

    def send_close_ok(self) -> bytes:
        """connection.close-ok in answer to the client's connection.close."""
        return self.send_method(0, commands.Connection.CloseOk())

    def send_blocked(self, reason: str) -> bytes:
        return self.send_method(0, commands.Connection.Blocked(reason))

    def send_unblocked(self) -> bytes:
        return self.send_method(0, commands.Connection.Unblocked())

    def send_channel_open_ok(self, channel: int) -> bytes:
        return self.send_method(channel, commands.Channel.OpenOk())

    def send_channel_close_ok(self, channel: int) -> bytes:
        """channel.close-ok in answer to the client's channel.close (in either channel
        state: after it the channel number is free, or still waits for our close's ok)."""
        return self.send_method(channel, commands.Channel.CloseOk())

    def send_error(self, error: AMQPError) -> bytes:
        """connection.close or channel.close carrying ``error``'s code, text and method.

        Works whether ``next_event`` raised the error (the state already moved) or the domain
        did (e.g. NOT_FOUND for a queue.declare on channel 3).
        """
        if error.connection_level or error.channel == 0:
            close = commands.Connection.Close(
                error.reply_code, error.reply_text, error.class_id, error.method_id
            )
            if self.state in (ConnectionState.CLOSING, ConnectionState.CLOSED):
                return encode_method(0, close)
            return self.send_method(0, close)
        close = commands.Channel.Close(
            error.reply_code, error.reply_text, error.class_id, error.method_id
        )
        ch = self._channels.get(error.channel)
        if ch is not None and ch.state is ChannelState.CLOSING:
            return encode_method(error.channel, close)
        return self.send_method(error.channel, close)

    def send_heartbeat(self) -> bytes:
        return HEARTBEAT_FRAME

    # -- hot path output ------------------------------------------------------------------

    def _check_open(self, channel: int, what: str) -> None:
        ch = self._channels.get(channel)
        if (
            ch is None
            or ch.state is not ChannelState.OPEN
            or self.state is not ConnectionState.OPEN
        ):
            raise LocalProtocolError(f"cannot send {what} on channel {channel}: not open")

    def send_deliver(
        self,
        channel: int,
        consumer_tag: str | bytes,
        delivery_tag: int,
        redelivered: bool,
        exchange: str | bytes,
        routing_key: str | bytes,
        header: ContentHeader | bytes,
        body: bytes | bytearray | memoryview,
    ) -> bytes:
        """basic.deliver + content, the header forwarded byte-for-byte, the body split at the
        negotiated frame_max."""
        self._check_open(channel, "basic.deliver")
        return fastpath.encode_deliver(
            channel,
            consumer_tag,
            delivery_tag,
            redelivered,
            exchange,
            routing_key,
            header,
            body,
            self.frame_max,
        )

    def deliver_encoder(self, channel: int, consumer_tag: str | bytes) -> DeliverEncoder:
        """The basic.deliver encoder of one consumer on an open ``channel``, at the negotiated
        frame_max. Its ``add`` appends one delivery's frames to a list; the list of a whole
        batch goes out through ``send_deliveries``, which checks the states once per batch."""
        self._check_open(channel, "basic.deliver")
        return DeliverEncoder(channel, consumer_tag, self.frame_max)

    def send_deliveries(self, channel: int, parts: list[bytes]) -> bytes:
        """A batch of deliveries appended to ``parts`` by this channel's ``deliver_encoder``:
        the bytes to write, if deliveries may still be sent on ``channel``. (The check is
        ``_check_open`` inlined: with consumers sharing a queue a batch is one message.)"""
        ch = self._channels.get(channel)
        if (
            ch is None
            or ch.state is not ChannelState.OPEN
            or self.state is not ConnectionState.OPEN
        ):
            raise LocalProtocolError(f"cannot send basic.deliver on channel {channel}: not open")
        return b"".join(parts)

    def send_get_ok(
        self,
        channel: int,
        delivery_tag: int,
        redelivered: bool,
        exchange: str | bytes,
        routing_key: str | bytes,
        message_count: int,
        header: ContentHeader | bytes,
        body: bytes | bytearray | memoryview,
    ) -> bytes:
        self._check_open(channel, "basic.get-ok")
        return fastpath.encode_get_ok(
            channel,
            delivery_tag,
            redelivered,
            exchange,
            routing_key,
            message_count,
            header,
            body,
            self.frame_max,
        )

    def send_return(
        self,
        channel: int,
        reply_code: int,
        reply_text: str,
        exchange: str | bytes,
        routing_key: str | bytes,
        header: ContentHeader | bytes,
        body: bytes | bytearray | memoryview,
    ) -> bytes:
        self._check_open(channel, "basic.return")
        return fastpath.encode_return(
            channel, reply_code, reply_text, exchange, routing_key, header, body, self.frame_max
        )

    def send_ack(self, channel: int, delivery_tag: int, multiple: bool = False) -> bytes:
        """A publisher confirm."""
        self._check_open(channel, "basic.ack")
        return fastpath.encode_ack(channel, delivery_tag, multiple)

    def send_nack(self, channel: int, delivery_tag: int, multiple: bool = False) -> bytes:
        """A negative publisher confirm."""
        self._check_open(channel, "basic.nack")
        return fastpath.encode_nack(channel, delivery_tag, multiple, False)
