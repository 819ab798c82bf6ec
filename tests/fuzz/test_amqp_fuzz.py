"""Random and mutated AMQP input: the codec answers with AMQPError only, never crashes."""

from __future__ import annotations

import contextlib
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pamqp import commands
from pamqp import frame as pframe
from pamqp import header as pheader

from dari.protocol.amqp import (
    PROTOCOL_HEADER,
    AMQPConnection,
    AMQPError,
    ContentHeader,
    ContentReceived,
    decode_method,
    decode_table,
    decode_table_typed,
    encode_frame,
)
from dari.protocol.amqp.methods import METHODS

FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def handshaken() -> AMQPConnection:
    conn = AMQPConnection(frame_max=8192, channel_max=8, max_message_size=4096)
    conn.receive_data(PROTOCOL_HEADER)
    conn.next_event()
    conn.send_start()
    conn.receive_data(pframe.marshal(commands.Connection.StartOk(response="\0g\0g"), 0))
    conn.next_event()
    conn.send_tune()
    conn.receive_data(pframe.marshal(commands.Connection.TuneOk(8, 8192, 0), 0))
    conn.next_event()
    conn.receive_data(pframe.marshal(commands.Connection.Open("/"), 0))
    conn.next_event()
    conn.send_open_ok()
    conn.receive_data(pframe.marshal(commands.Channel.Open(), 1))
    conn.next_event()
    conn.send_channel_open_ok(1)
    return conn


def drive(conn: AMQPConnection, data: bytes, chunk: int) -> None:
    """Feed in chunks and drain; after each AMQPError act like the adapter and go on."""
    for start in range(0, len(data), chunk):
        conn.receive_data(data[start : start + chunk])
        for _ in range(10_000):
            try:
                event = conn.next_event()
            except AMQPError as exc:
                assert 300 <= exc.reply_code < 600
                assert conn.send_error(exc)
                continue
            if event is None:
                break
            if isinstance(event, ContentReceived):
                with contextlib.suppress(AMQPError):
                    _ = event.header.headers, event.header.properties()


def valid_stream_parts() -> list[bytes]:
    props = commands.Basic.Properties(delivery_mode=2, headers={"a": 1, "b": "x"}, priority=1)
    return [
        pframe.marshal(commands.Basic.Publish(exchange="ex", routing_key="rk"), 1),
        pframe.marshal(pheader.ContentHeader(0, 5, props), 1),
        encode_frame(3, 1, b"hello"),
        pframe.marshal(commands.Basic.Ack(1, False), 1),
        pframe.marshal(commands.Queue.Declare(queue="q", arguments={"x-max-length": 5}), 1),
        pframe.marshal(commands.Channel.Open(), 2),
        pframe.marshal(commands.Channel.Close(200, "", 0, 0), 1),
        pframe.marshal(commands.Connection.Close(200, "", 0, 0), 0),
        b"\x08\x00\x00\x00\x00\x00\x00\xce",
    ]


PARTS = valid_stream_parts()


@st.composite
def mutated_streams(draw) -> bytes:
    parts = draw(st.lists(st.sampled_from(PARTS), min_size=1, max_size=12))
    data = bytearray(b"".join(parts))
    for _ in range(draw(st.integers(0, 4))):
        pos = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "delete", "insert"]))
        if action == "flip":
            data[pos] = draw(st.integers(0, 255))
        elif action == "delete":
            del data[pos]
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        if not data:
            data = bytearray(b"\x01")
    return bytes(data)


@FUZZ
@given(mutated_streams(), st.integers(1, 64))
def test_mutated_streams_raise_only_amqp_errors(data, chunk):
    drive(handshaken(), data, chunk)


@FUZZ
@given(st.binary(max_size=300), st.integers(1, 300))
def test_random_bytes_after_handshake_raise_only_amqp_errors(data, chunk):
    drive(handshaken(), data, chunk)


@FUZZ
@given(st.binary(max_size=64))
def test_random_bytes_as_first_bytes(data):
    drive(AMQPConnection(), data, 7)


@st.composite
def frames_with_random_payloads(draw) -> bytes:
    out = []
    for _ in range(draw(st.integers(1, 6))):
        frame_type = draw(st.sampled_from([1, 2, 3, 8]))
        channel = draw(st.sampled_from([0, 1, 2]))
        if frame_type == 1:
            index = draw(st.sampled_from(sorted(METHODS)))
            payload = struct.pack(">I", index) + draw(st.binary(max_size=40))
        else:
            payload = draw(st.binary(max_size=40))
        out.append(encode_frame(frame_type, channel, payload))
    return b"".join(out)


@FUZZ
@given(frames_with_random_payloads())
def test_well_framed_garbage_raises_only_amqp_errors(data):
    drive(handshaken(), data, len(data))


@FUZZ
@given(st.sampled_from(sorted(METHODS)), st.binary(max_size=80))
def test_decode_method_on_random_fields(index, fields):
    with contextlib.suppress(AMQPError):
        decode_method(struct.pack(">I", index) + fields)


@FUZZ
@given(st.binary(max_size=120))
def test_content_header_and_tables_on_random_bytes(data):
    for parse in (ContentHeader, decode_table, decode_table_typed):
        try:
            result = parse(data)
            if isinstance(result, ContentHeader):
                _ = result.headers, result.properties()
        except AMQPError:
            pass
