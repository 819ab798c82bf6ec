"""AMQPConnection: handshake, channel and content state machines, errors, batching — driven
with bytes produced by pika's and pamqp's own frame encoders."""

from __future__ import annotations

import pika.frame
import pika.spec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import commands
from pamqp import frame as pframe
from pamqp import header as pheader

from dari.protocol.amqp import (
    PROTOCOL_HEADER,
    Ack,
    AMQPConnection,
    AMQPError,
    BadProtocolHeader,
    ChannelState,
    ConnectionState,
    ContentReceived,
    HeartbeatReceived,
    LocalProtocolError,
    MethodReceived,
    Nack,
    ProtocolHeaderReceived,
    Reject,
    encode_frame,
)


def method(channel: int, cmd) -> bytes:
    return pframe.marshal(cmd, channel)


def publish_frames(
    channel: int, body: bytes, exchange: str = "ex", routing_key: str = "rk", **props
) -> bytes:
    return b"".join(
        (
            pika.frame.Method(
                channel, pika.spec.Basic.Publish(exchange=exchange, routing_key=routing_key)
            ).marshal(),
            pika.frame.Header(channel, len(body), pika.spec.BasicProperties(**props)).marshal(),
            pika.frame.Body(channel, body).marshal() if body else b"",
        )
    )


def events(conn: AMQPConnection) -> list:
    out = []
    while (event := conn.next_event()) is not None:
        out.append(event)
    return out


def feed(conn: AMQPConnection, data: bytes) -> list:
    conn.receive_data(data)
    return events(conn)


def decode_out(data: bytes) -> list:
    """Frames we wrote, as pika decodes them."""
    out, pos = [], 0
    while pos < len(data):
        used, frame = pika.frame.decode_frame(data[pos:])
        assert used, data[pos:]
        out.append(frame)
        pos += used
    return out


def open_connection(**kwargs) -> AMQPConnection:
    conn = AMQPConnection(**kwargs)
    assert feed(conn, pika.frame.ProtocolHeader().marshal()) == [ProtocolHeaderReceived()]
    conn.send_start()
    start_ok = pika.spec.Connection.StartOk(
        client_properties={"product": "pika"}, mechanism="PLAIN", response="\0guest\0guest"
    )
    [event] = feed(conn, pika.frame.Method(0, start_ok).marshal())
    assert event.method.name == "Connection.StartOk"
    conn.send_tune()
    tune_ok = pika.spec.Connection.TuneOk(conn.channel_max, conn.frame_max, 60)
    feed(conn, pika.frame.Method(0, tune_ok).marshal())
    [event] = feed(conn, pika.frame.Method(0, pika.spec.Connection.Open("/")).marshal())
    assert event.method.virtual_host == "/"
    conn.send_open_ok()
    assert conn.state is ConnectionState.OPEN
    return conn


def open_channel(conn: AMQPConnection, number: int = 1) -> None:
    [event] = feed(conn, pika.frame.Method(number, pika.spec.Channel.Open()).marshal())
    assert event == MethodReceived(number, event.method) and event.method.name == "Channel.Open"
    out = decode_out(conn.send_channel_open_ok(number))
    assert out[0].method.NAME == "Channel.OpenOk"


def raises(conn: AMQPConnection, data: bytes) -> AMQPError:
    conn.receive_data(data)
    with pytest.raises(AMQPError) as info:
        events(conn)
    return info.value


# -- protocol header and handshake ----------------------------------------------------------


def test_handshake_replies_decode_in_pika():
    conn = AMQPConnection(frame_max=65536, channel_max=100, heartbeat=30)
    feed(conn, PROTOCOL_HEADER)
    [start] = decode_out(conn.send_start())
    assert (start.method.version_major, start.method.version_minor) == (0, 9)
    assert start.method.server_properties["capabilities"]["publisher_confirms"] is True
    assert start.method.mechanisms == b"PLAIN AMQPLAIN"
    feed(conn, method(0, commands.Connection.StartOk(response="\0u\0p")))
    [tune] = decode_out(conn.send_tune())
    assert (tune.method.channel_max, tune.method.frame_max, tune.method.heartbeat) == (
        100,
        65536,
        30,
    )
    feed(conn, method(0, commands.Connection.TuneOk(50, 8192, 10)))
    assert (conn.channel_max, conn.frame_max, conn.heartbeat) == (50, 8192, 10)
    feed(conn, method(0, commands.Connection.Open("/vhost")))
    assert conn.state is ConnectionState.OPENING
    [open_ok] = decode_out(conn.send_open_ok())
    assert open_ok.method.NAME == "Connection.OpenOk"
    assert conn.state is ConnectionState.OPEN


def test_protocol_header_split_across_reads():
    conn = AMQPConnection()
    for byte in PROTOCOL_HEADER[:-1]:
        assert feed(conn, bytes([byte])) == []
    assert feed(conn, PROTOCOL_HEADER[-1:]) == [ProtocolHeaderReceived()]


@pytest.mark.parametrize(
    "header",
    [
        b"AMQP\x01\x01\x00\x09",  # AMQP 0-9
        b"AMQP\x00\x00\x09\x00",  # 0-9-0
        b"AMQP\x00\x00\x08\x00",  # 0-8
        b"AMQP\x00\x01\x00\x00",  # AMQP 1.0
        b"AMQP\x03\x01\x00\x00",  # AMQP 1.0 SASL
        b"GET / HTTP/1.1\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01",  # TLS client hello
        b"\x00\x00\x00\x00\x00\x00\x00\x00",
    ],
)
def test_bad_protocol_header_asks_for_our_header_and_close(header):
    conn = AMQPConnection()
    [event] = feed(conn, header)
    assert isinstance(event, BadProtocolHeader)
    assert event.reply == b"AMQP\x00\x00\x09\x01"
    assert header.startswith(event.received)
    assert conn.state is ConnectionState.CLOSED
    assert feed(conn, b"more bytes") == []


def test_start_ok_before_start_is_sent_is_refused():
    conn = AMQPConnection()
    feed(conn, PROTOCOL_HEADER)
    error = raises(conn, method(0, commands.Connection.StartOk()))
    assert error.reply_code == 503 and error.connection_level


@pytest.mark.parametrize(
    ("channel_max", "frame_max", "text"),
    [
        (10, 200_000, "frame_max = 200000 is higher"),
        (10, 0, "frame_max = 0 is higher"),
        (10, 1024, "frame_max = 1024 is lower"),
        (5000, 4096, "channel_max = 5000 is higher"),
        (0, 4096, "channel_max = 0 is higher"),
    ],
)
def test_tune_ok_outside_the_offer_is_not_allowed(channel_max, frame_max, text):
    conn = AMQPConnection()
    feed(conn, PROTOCOL_HEADER)
    conn.send_start()
    feed(conn, method(0, commands.Connection.StartOk()))
    conn.send_tune()
    error = raises(conn, method(0, commands.Connection.TuneOk(channel_max, frame_max, 0)))
    assert error.reply_code == 530 and text in error.reply_text
    assert (error.class_id, error.method_id) == (10, 31)
    [close] = decode_out(conn.send_error(error))
    assert close.method.NAME == "Connection.Close" and close.method.reply_code == 530
    assert conn.state is ConnectionState.CLOSING


def test_secure_round_trip_is_in_the_table():
    conn = AMQPConnection()
    feed(conn, PROTOCOL_HEADER)
    conn.send_start()
    feed(conn, method(0, commands.Connection.StartOk()))
    conn.send_secure(b"challenge")
    assert conn.state is ConnectionState.SECURE_SENT
    [event] = feed(conn, method(0, commands.Connection.SecureOk("answer")))
    assert event.method.response == "answer" and conn.state is ConnectionState.STARTING


def test_authentication_failure_close_during_handshake():
    conn = AMQPConnection()
    feed(conn, PROTOCOL_HEADER)
    conn.send_start()
    feed(conn, method(0, commands.Connection.StartOk()))
    error = AMQPError(403, "bad login", connection_level=True)
    [close] = decode_out(conn.send_error(error))
    assert (
        close.method.reply_code == 403 and close.method.reply_text == "ACCESS_REFUSED - bad login"
    )
    [event] = feed(conn, method(0, commands.Connection.CloseOk()))
    assert event.method.name == "Connection.CloseOk" and conn.state is ConnectionState.CLOSED


def test_channel_frames_before_open_are_unexpected():
    conn = AMQPConnection()
    feed(conn, PROTOCOL_HEADER)
    conn.send_start()
    error = raises(conn, method(1, commands.Channel.Open()))
    assert error.reply_code == 505


def test_connection_method_out_of_sequence_when_open_is_command_invalid():
    conn = open_connection()
    error = raises(conn, method(0, commands.Connection.TuneOk(1, 4096, 0)))
    assert error.reply_code == 503 and error.connection_level


def test_sending_out_of_sequence_is_our_bug():
    conn = AMQPConnection()
    with pytest.raises(LocalProtocolError):
        conn.send_tune()
    conn = open_connection()
    with pytest.raises(LocalProtocolError):
        conn.send_open_ok()
    with pytest.raises(LocalProtocolError):
        conn.send_deliver(1, "c", 1, False, "", "q", b"\x00\x3c" + bytes(10) + b"\x00\x00", b"")
    with pytest.raises(LocalProtocolError):
        conn.send_method(3, commands.Queue.DeclareOk("q", 0, 0))


# -- heartbeats and channel 0 -----------------------------------------------------------------


def test_heartbeats():
    conn = open_connection()
    assert feed(conn, pika.frame.Heartbeat().marshal() * 2) == [HeartbeatReceived()] * 2
    assert conn.send_heartbeat() == pika.frame.Heartbeat().marshal()


def test_heartbeat_on_a_channel_is_unexpected():
    conn = open_connection()
    open_channel(conn)
    assert raises(conn, encode_frame(8, 1, b"")).reply_code == 505


def test_content_frames_on_channel_zero_are_unexpected():
    conn = open_connection()
    assert raises(conn, encode_frame(3, 0, b"body")).reply_code == 505


# -- channels ------------------------------------------------------------------------------


def test_method_on_an_unopened_channel_is_a_channel_error():
    conn = open_connection()
    error = raises(conn, method(3, commands.Queue.Declare(queue="q")))
    assert error.reply_code == 504 and error.connection_level
    assert (error.class_id, error.method_id) == (50, 10)


def test_content_on_an_unopened_channel_is_a_channel_error():
    conn = open_connection()
    assert raises(conn, publish_frames(2, b"x")).reply_code == 504


def test_second_channel_open_is_a_channel_error():
    conn = open_connection()
    open_channel(conn)
    error = raises(conn, method(1, commands.Channel.Open()))
    assert error.reply_code == 504 and "second 'channel.open'" in error.reply_text


def test_channel_beyond_channel_max_is_not_allowed():
    conn = open_connection(channel_max=2)
    open_channel(conn, 1)
    open_channel(conn, 2)
    error = raises(conn, method(3, commands.Channel.Open()))
    assert error.reply_code == 530 and error.connection_level


def test_channel_numbers_are_not_bounded_by_channel_max():
    """RabbitMQ limits the count of open channels; any number up to 65535 may be used."""
    conn = open_connection()  # channel_max 2047
    open_channel(conn, 65535)
    conn = open_connection(channel_max=2)
    open_channel(conn, 40000)
    open_channel(conn, 3)


def test_one_channel_over_channel_max_has_rabbitmqs_error():
    conn = open_connection(channel_max=2)
    open_channel(conn, 9)
    open_channel(conn, 5)
    error = raises(conn, method(1, commands.Channel.Open()))
    assert error.reply_code == 530 and error.connection_level
    assert (error.class_id, error.method_id) == (0, 0)  # RabbitMQ: "operation none"
    assert error.reply_text == (
        "NOT_ALLOWED - number of channels opened (2) has reached the negotiated channel_max (2)"
    )
    assert conn.state is ConnectionState.CLOSING


def test_channel_max_zero_means_no_limit():
    conn = open_connection(channel_max=0)
    for number in (1, 2, 3, 65535):
        open_channel(conn, number)


def test_too_many_open_channels_is_not_allowed():
    conn = open_connection(channel_max=2)
    open_channel(conn, 1)
    open_channel(conn, 2)
    feed(conn, method(1, commands.Channel.Close(200, "", 0, 0)))
    conn.send_channel_close_ok(1)
    open_channel(conn, 1)  # the number is free again
    assert raises(conn, method(1, commands.Channel.Open())).reply_code == 504


def test_client_channel_close_then_frames_are_dropped_until_close_ok():
    conn = open_connection()
    open_channel(conn)
    [event] = feed(conn, method(1, commands.Channel.Close(200, "bye", 0, 0)))
    assert event.method.name == "Channel.Close"
    assert conn.channel_state(1) is ChannelState.CLOSE_RECEIVED
    assert feed(conn, publish_frames(1, b"late") + method(1, commands.Basic.Ack(1))) == []
    [close_ok] = decode_out(conn.send_channel_close_ok(1))
    assert close_ok.method.NAME == "Channel.CloseOk"
    assert conn.channel_state(1) is ChannelState.CLOSED and conn.channels == {}


def test_server_channel_close_accepts_only_close_ok():
    conn = open_connection()
    open_channel(conn)
    open_channel(conn, 2)
    error = AMQPError(404, "no exchange 'x' in vhost '/'", class_id=60, method_id=40, channel=1)
    [close] = decode_out(conn.send_error(error))
    assert (close.channel_number, close.method.reply_code) == (1, 404)
    assert close.method.reply_text == "NOT_FOUND - no exchange 'x' in vhost '/'"
    assert not error.connection_level and conn.channel_state(1) is ChannelState.CLOSING
    with pytest.raises(LocalProtocolError):
        conn.send_deliver(1, "c", 1, False, "", "q", b"\x00\x3c" + bytes(10) + b"\x00\x00", b"")
    # Everything but close/close-ok is dropped on a closing channel; others carry on.
    dropped = publish_frames(1, b"x") + method(1, commands.Queue.Declare(queue="q"))
    [event] = feed(conn, dropped + publish_frames(2, b"y"))
    assert isinstance(event, ContentReceived) and event.channel == 2
    [event] = feed(conn, method(1, commands.Channel.CloseOk()))
    assert event.method.name == "Channel.CloseOk"
    assert conn.channel_state(1) is ChannelState.CLOSED


def test_simultaneous_channel_close():
    conn = open_connection()
    open_channel(conn)
    conn.send_error(AMQPError(406, "precondition", channel=1))
    [event] = feed(conn, method(1, commands.Channel.Close(200, "", 0, 0)))
    assert event.method.name == "Channel.Close"
    conn.send_channel_close_ok(1)
    assert conn.channel_state(1) is ChannelState.CLOSING
    feed(conn, method(1, commands.Channel.CloseOk()))
    assert conn.channel_state(1) is ChannelState.CLOSED


def test_close_ok_on_an_open_channel_is_invalid():
    conn = open_connection()
    open_channel(conn)
    assert raises(conn, method(1, commands.Channel.CloseOk())).reply_code == 503


def test_server_only_method_from_client_is_invalid():
    conn = open_connection()
    open_channel(conn)
    error = raises(conn, method(1, commands.Basic.ConsumeOk("ctag")))
    assert error.reply_code == 503 and (error.class_id, error.method_id) == (60, 21)


# -- content assembly ------------------------------------------------------------------------


def test_publish_is_assembled_from_pika_frames():
    conn = open_connection()
    open_channel(conn)
    data = publish_frames(
        1,
        b"hello",
        exchange="amq.topic",
        routing_key="a.b",
        delivery_mode=2,
        headers={"k": "v"},
        expiration="1000",
        priority=3,
        reply_to="amq.rabbitmq.reply-to",
        correlation_id="42",
        message_id="m1",
    )
    [event] = feed(conn, data)
    assert isinstance(event, ContentReceived) and event.channel == 1
    assert (event.publish.exchange, event.publish.routing_key) == ("amq.topic", "a.b")
    assert bytes(event.body) == b"hello"
    header = event.header
    assert header.persistent and header.expiration == "1000" and header.priority == 3
    assert header.headers == {"k": "v"} and header.reply_to == "amq.rabbitmq.reply-to"
    assert (header.correlation_id, header.message_id) == ("42", "m1")
    # Forwarding: pika decodes the delivery with the publisher's exact properties.
    out = decode_out(conn.send_deliver(1, "ctag", 5, False, "amq.topic", "a.b", header, event.body))
    assert out[0].method.NAME == "Basic.Deliver" and out[0].method.delivery_tag == 5
    assert out[1].properties.headers == {"k": "v"} and out[1].properties.correlation_id == "42"
    assert out[2].fragment == b"hello"


def test_empty_body_completes_with_the_header():
    conn = open_connection()
    open_channel(conn)
    [event] = feed(conn, publish_frames(1, b""))
    assert event.body == b"" and event.header.body_size == 0


def test_body_split_over_frames_is_joined():
    conn = open_connection()
    open_channel(conn)
    body = bytes(range(256)) * 50
    frames = [
        method(1, commands.Basic.Publish(exchange="", routing_key="q")),
        pframe.marshal(pheader.ContentHeader(0, len(body)), 1),
    ] + [encode_frame(3, 1, body[i : i + 1000]) for i in range(0, len(body), 1000)]
    data = b"".join(frames)
    for cut in (len(frames[0]) + 3, len(data) // 2, len(data) - 1):
        conn2 = open_connection()
        open_channel(conn2)
        got = feed(conn2, data[:cut]) + feed(conn2, data[cut:])
        assert [bytes(e.body) for e in got] == [body]
    [event] = feed(conn, data)
    assert bytes(event.body) == body


def test_content_interleaved_across_channels():
    conn = open_connection()
    open_channel(conn, 1)
    open_channel(conn, 2)
    a, b = publish_frames(1, b"aaa"), publish_frames(2, b"bbb")
    # method(1) method(2) header(1) header(2) body(1) body(2)
    split_a = pika_frames(a)
    split_b = pika_frames(b)
    data = b"".join(x + y for x, y in zip(split_a, split_b, strict=True))
    got = feed(conn, data)
    assert [(e.channel, bytes(e.body)) for e in got] == [(1, b"aaa"), (2, b"bbb")]


def pika_frames(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        used, _frame = pika.frame.decode_frame(data[pos:])
        out.append(data[pos : pos + used])
        pos += used
    return out


def test_body_without_publish_is_unexpected_frame():
    conn = open_connection()
    open_channel(conn)
    error = raises(conn, encode_frame(3, 1, b"body"))
    assert error.reply_code == 505 and error.connection_level
    assert conn.state is ConnectionState.CLOSING


def test_header_without_publish_is_unexpected_frame():
    conn = open_connection()
    open_channel(conn)
    assert raises(conn, pframe.marshal(pheader.ContentHeader(0, 3), 1)).reply_code == 505


def test_method_in_the_middle_of_content_is_unexpected_frame():
    conn = open_connection()
    open_channel(conn)
    frames = pika_frames(publish_frames(1, b"body"))
    assert raises(conn, frames[0] + method(1, commands.Basic.Qos(0, 1))).reply_code == 505
    conn = open_connection()
    open_channel(conn)
    assert raises(conn, frames[0] + frames[1] + method(1, commands.Basic.Ack(1))).reply_code == 505


def test_body_longer_than_declared_is_a_frame_error():
    conn = open_connection()
    open_channel(conn)
    frames = pika_frames(publish_frames(1, b"body"))
    error = raises(conn, frames[0] + frames[1] + encode_frame(3, 1, b"bodybody"))
    assert error.reply_code == 501
    assert feed(conn, publish_frames(1, b"after")) == []  # the stream is no longer read


def test_header_for_another_class_or_with_weight_is_unexpected():
    conn = open_connection()
    open_channel(conn)
    frames = pika_frames(publish_frames(1, b"x"))
    bad_class = encode_frame(2, 1, b"\x00\x32\x00\x00" + bytes(7) + b"\x01\x00\x00")
    assert raises(conn, frames[0] + bad_class).reply_code == 505
    conn = open_connection()
    open_channel(conn)
    weighted = encode_frame(2, 1, b"\x00\x3c\x00\x01" + bytes(7) + b"\x01\x00\x00")
    assert raises(conn, frames[0] + weighted).reply_code == 505


def test_message_over_max_message_size_closes_only_its_channel():
    conn = open_connection(max_message_size=10)
    open_channel(conn, 1)
    open_channel(conn, 2)
    error = raises(conn, publish_frames(1, b"x" * 11))
    assert (error.reply_code, error.channel, error.connection_level) == (406, 1, False)
    assert conn.channel_state(1) is ChannelState.CLOSING
    [close] = decode_out(conn.send_error(error))
    assert close.channel_number == 1 and close.method.reply_code == 406
    # The rest of the oversized message and other channels' traffic are handled.
    [event] = feed(conn, publish_frames(2, b"ok"))
    assert event.channel == 2 and bytes(event.body) == b"ok"


def test_malformed_content_header_is_a_frame_error():
    conn = open_connection()
    open_channel(conn)
    frames = pika_frames(publish_frames(1, b"x"))
    bad = encode_frame(2, 1, b"\x00\x3c\x00\x00" + bytes(7) + b"\x01\x80\x00\x09ab")
    assert raises(conn, frames[0] + bad).reply_code == 501


def test_acks_nacks_rejects_become_events():
    conn = open_connection()
    open_channel(conn)
    data = b"".join(
        pika.frame.Method(1, m).marshal()
        for m in (
            pika.spec.Basic.Ack(7, multiple=True),
            pika.spec.Basic.Nack(8, multiple=False, requeue=False),
            pika.spec.Basic.Reject(9, requeue=True),
        )
    )
    assert [e.method for e in feed(conn, data)] == [
        Ack(7, True),
        Nack(8, False, False),
        Reject(9, True),
    ]


def test_publisher_confirms_decode_in_pika():
    conn = open_connection()
    open_channel(conn)
    [event] = feed(conn, pika.frame.Method(1, pika.spec.Confirm.Select()).marshal())
    assert event.method.name == "Confirm.Select"
    [ack, nack] = decode_out(conn.send_ack(1, 10, multiple=True) + conn.send_nack(1, 11))
    assert (ack.method.NAME, ack.method.delivery_tag, ack.method.multiple) == (
        "Basic.Ack",
        10,
        True,
    )
    assert (nack.method.NAME, nack.method.delivery_tag, nack.method.requeue) == (
        "Basic.Nack",
        11,
        False,
    )


def test_get_ok_and_return_decode_in_pika():
    conn = open_connection(frame_max=4096)
    open_channel(conn)
    body = b"z" * 10000
    frames = pika_frames(publish_frames(1, b"", delivery_mode=2))
    header = pika.frame.Header(1, len(body), pika.spec.BasicProperties(delivery_mode=2)).marshal()
    chunks = [pika.frame.Body(1, body[i : i + 4000]).marshal() for i in range(0, 10000, 4000)]
    [event] = feed(conn, frames[0] + header + b"".join(chunks))
    assert bytes(event.body) == body and isinstance(event.body, bytes)
    out = decode_out(conn.send_get_ok(1, 1, True, "ex", "rk", 4, event.header, event.body))
    assert out[0].method.NAME == "Basic.GetOk" and out[0].method.message_count == 4
    assert b"".join(f.fragment for f in out[2:]) == b"z" * 10000
    assert all(len(f.fragment) <= 4096 - 8 for f in out[2:])
    out = decode_out(conn.send_return(1, 312, "NO_ROUTE", "ex", "rk", event.header, event.body))
    assert (out[0].method.NAME, out[0].method.reply_code) == ("Basic.Return", 312)


def test_thousands_of_publishes_in_one_buffer():
    conn = open_connection()
    open_channel(conn)
    one = publish_frames(1, b"payload-123", delivery_mode=2)
    data = one * 5000
    got = feed(conn, data)
    assert len(got) == 5000
    assert all(bytes(e.body) == b"payload-123" for e in got)
    # Repeated publishes decode once: every event shares one Publish and one ContentHeader.
    assert len({id(e.publish) for e in got}) == 1 and len({id(e.header) for e in got}) == 1
    assert conn.buffered == 0


def test_publishes_fed_in_odd_chunks():
    conn = open_connection()
    open_channel(conn)
    data = b"".join(publish_frames(1, bytes([i]) * i) for i in range(1, 60))
    got = []
    for start in range(0, len(data), 97):
        got += feed(conn, data[start : start + 97])
    assert [bytes(e.body) for e in got] == [bytes([i]) * i for i in range(1, 60)]


def _message_variants() -> list[bytes]:
    """Publishes the one-step path takes and ones it must leave to the general path: split
    bodies, empty bodies, a body size that disagrees with the header, a header of another
    class, a message over max_message_size, and an interleaved ack."""
    ok = publish_frames(1, b"hello", delivery_mode=2)
    ok_other_props = publish_frames(1, b"hi", content_type="text/plain", priority=3)
    split = b"".join(
        (
            method(1, commands.Basic.Publish(exchange="ex", routing_key="k")),
            pframe.marshal(pheader.ContentHeader(0, 6, commands.Basic.Properties()), 1),
            encode_frame(3, 1, b"abc"),
            encode_frame(3, 1, b"def"),
        )
    )
    wrong_size = b"".join(
        (
            method(1, commands.Basic.Publish(exchange="ex", routing_key="k")),
            pframe.marshal(pheader.ContentHeader(0, 4, commands.Basic.Properties()), 1),
            encode_frame(3, 1, b"abcdef"),
        )
    )
    other_class = b"".join(
        (
            method(1, commands.Basic.Publish(exchange="ex", routing_key="k")),
            encode_frame(2, 1, b"\x00\x32\x00\x00" + (3).to_bytes(8, "big") + b"\x00\x00"),
            encode_frame(3, 1, b"abc"),
        )
    )
    too_big = publish_frames(1, b"x" * 300)
    ack = method(1, commands.Basic.Ack(delivery_tag=1))
    return [ok, ok_other_props, split, publish_frames(1, b""), wrong_size, other_class,
            too_big, ack]


def _outcome(conn: AMQPConnection, chunks: list[bytes]) -> list:
    """Events and errors, in order; an error is recorded and reading goes on, as the
    adapter does."""
    out: list = []
    for chunk in chunks:
        conn.receive_data(chunk)
        while True:
            try:
                event = conn.next_event()
            except AMQPError as exc:
                out.append(("error", exc.reply_code, exc.channel))
                continue
            if event is None:
                break
            if isinstance(event, ContentReceived):
                out.append((event.publish, event.header.raw, bytes(event.body)))
            else:
                out.append(event)
    return out


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=7), min_size=1, max_size=12))
def test_one_read_and_byte_by_byte_give_the_same_events_and_errors(picks):
    variants = _message_variants()
    data = b"".join(variants[i] for i in picks)
    whole, trickled = (open_connection(max_message_size=256) for _ in range(2))
    for conn in (whole, trickled):
        open_channel(conn)
    assert _outcome(whole, [data]) == _outcome(
        trickled, [data[i : i + 1] for i in range(len(data))]
    )


# -- closing the connection ------------------------------------------------------------------


def test_client_connection_close():
    conn = open_connection()
    open_channel(conn)
    [event] = feed(conn, method(0, commands.Connection.Close(200, "bye", 0, 0)))
    assert event.method.reply_text == "bye"
    assert conn.state is ConnectionState.CLOSE_RECEIVED
    assert feed(conn, publish_frames(1, b"late")) == []
    [close_ok] = decode_out(conn.send_close_ok())
    assert close_ok.method.NAME == "Connection.CloseOk"
    assert conn.state is ConnectionState.CLOSED
    assert feed(conn, method(0, commands.Connection.Open("/"))) == []


def test_server_connection_close_waits_for_close_ok():
    conn = open_connection()
    open_channel(conn)
    [close] = decode_out(conn.send_error(AMQPError(320, "broker shutdown")))
    assert close.method.reply_code == 320 and conn.state is ConnectionState.CLOSING
    noise = publish_frames(1, b"x") + pika.frame.Heartbeat().marshal()
    noise += method(0, commands.Connection.Open("/"))
    assert feed(conn, noise) == []
    [event] = feed(conn, method(0, commands.Connection.CloseOk()))
    assert event.method.name == "Connection.CloseOk" and conn.state is ConnectionState.CLOSED


def test_after_a_frame_error_nothing_more_is_read():
    conn = open_connection()
    error = raises(conn, encode_frame(1, 0, b"abcd")[:-1] + b"\x00")
    assert error.reply_code == 501
    [close] = decode_out(conn.send_error(error))
    assert close.method.reply_code == 501 and close.method.reply_text.startswith("FRAME_ERROR")
    assert feed(conn, method(0, commands.Connection.CloseOk())) == []


def test_a_batch_of_deliveries_goes_through_the_connection():
    conn = open_connection(frame_max=4096)
    open_channel(conn, 3)
    encoder = conn.deliver_encoder(3, "ctag")
    parts: list[bytes] = []
    # the property flags and values of a header frame: its payload after class, weight, size
    properties = pika.frame.Header(
        3, 0, pika.spec.BasicProperties(correlation_id="7")
    ).marshal()[7 + 12 : -1]
    encoder.add(parts, 1, False, "ex", "rk", properties, b"a")
    encoder.add(parts, 2, True, "ex", "rk2", properties, b"b" * 5000)  # split at frame_max
    out = decode_out(conn.send_deliveries(3, parts))
    assert [f.method.delivery_tag for f in out if isinstance(f, pika.frame.Method)] == [1, 2]
    assert [f.channel_number for f in out] == [3] * 7
    assert out[1].properties.correlation_id == "7" and out[2].fragment == b"a"
    assert out[4].body_size == 5000 and out[5].fragment + out[6].fragment == b"b" * 5000
    assert out[3].method.redelivered and out[3].method.routing_key == "rk2"


def test_deliveries_need_an_open_channel():
    conn = open_connection()
    with pytest.raises(LocalProtocolError):
        conn.deliver_encoder(1, "ctag")
    open_channel(conn, 1)
    encoder = conn.deliver_encoder(1, "ctag")
    parts: list[bytes] = []
    encoder.add(parts, 1, False, "", "q", b"\x00\x00", b"x")
    conn.send_error(AMQPError(406, "bye", channel=1))  # the channel is closing now
    with pytest.raises(LocalProtocolError, match=r"basic\.deliver on channel 1"):
        conn.send_deliveries(1, parts)
