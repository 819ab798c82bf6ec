"""decode_method / encode_method agree with pamqp for every method of AMQP 0-9-1."""

from __future__ import annotations

import pika.frame
import pika.spec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import commands
from pamqp import frame as pframe

from dari.protocol.amqp import AMQPError, FrameError, Table, decode_method, encode_method
from dari.protocol.amqp.methods import METHODS, method_payload

ALL = sorted(METHODS.items())

FIELD_VALUES = {
    "shortstr": st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.:", max_size=30),
    "longstr": st.text(max_size=40),
    "octet": st.integers(0, 255),
    "short": st.integers(0, 65535),
    "long": st.integers(0, 2**32 - 1),
    "longlong": st.integers(0, 2**63 - 1),
    "bit": st.booleans(),
    "table": st.dictionaries(
        st.text(alphabet="abcxyz-", min_size=1, max_size=8),
        st.integers(0, 2**40) | st.text(max_size=10) | st.booleans(),
        max_size=4,
    ),
}


@st.composite
def pamqp_methods(draw):
    """A pamqp command of any class with random field values pamqp's own validation accepts."""
    _index, cls = draw(st.sampled_from(ALL))
    method = cls()
    for name in cls.__slots__:
        value = draw(FIELD_VALUES[cls.amqp_type(name)])
        previous = getattr(method, name)
        setattr(method, name, value)
        try:
            method.validate()
        except ValueError:
            setattr(method, name, previous)
    return method


def fields(method) -> dict:
    return {name: getattr(method, name) for name in type(method).__slots__}


def only_payload(frame: bytes) -> bytes:
    return frame[7:-1]


@settings(max_examples=400, deadline=None)
@given(pamqp_methods(), st.integers(0, 65535))
def test_pamqp_encoded_methods_decode_to_equal_fields(method, channel):
    decoded = decode_method(only_payload(pframe.marshal(method, channel)))
    assert type(decoded) is type(method)
    assert fields(decoded) == fields(method)


@settings(max_examples=400, deadline=None)
@given(pamqp_methods(), st.integers(0, 65535))
def test_our_encoded_methods_decode_in_pamqp(method, channel):
    data = encode_method(channel, method)
    used, ch, decoded = pframe.unmarshal(data)
    assert (used, ch) == (len(data), channel)
    assert type(decoded) is type(method)
    assert fields(decoded) == fields(method)


@pytest.mark.parametrize(("index", "cls"), ALL, ids=[cls.name for _, cls in ALL])
def test_every_method_round_trips_with_default_fields(index, cls):
    method = cls()
    zero = {"shortstr": "", "longstr": "", "table": {}, "bit": False}
    for name in cls.__slots__:
        if getattr(method, name) is None:
            setattr(method, name, zero.get(cls.amqp_type(name), 0))
    payload = method_payload(method)
    assert payload == only_payload(pframe.marshal(method, 1))
    assert fields(decode_method(payload)) == fields(method)


def test_tables_in_methods_are_read_only_tables_forwarded_verbatim():
    raw_args = (
        b"\x00\x00\x00\x22"
        b"\x0dx-message-ttl"
        b"l\x00\x00\x00\x00\x00\x00\x00\x05"  # a long-long pamqp would narrow to 'b'
        b"\x01kd?\xf8\x00\x00\x00\x00\x00\x00"  # a double pamqp would write as float32
    )
    declare = only_payload(pframe.marshal(commands.Queue.Declare(queue="q"), 1))
    payload = declare[:-4] + raw_args
    decoded = decode_method(payload)
    assert isinstance(decoded.arguments, Table)
    assert decoded.arguments == {"x-message-ttl": 5, "k": 1.5}
    assert method_payload(decoded) == payload


def test_names_pamqp_would_refuse_to_send_are_encoded():
    declare_ok = commands.Queue.DeclareOk.__new__(commands.Queue.DeclareOk)
    declare_ok.queue, declare_ok.message_count, declare_ok.consumer_count = "café ☕", 3, 1
    payload = method_payload(declare_ok)
    assert fields(decode_method(payload)) == {
        "queue": "café ☕",
        "message_count": 3,
        "consumer_count": 1,
    }


def test_pika_client_methods_decode():
    cases = [
        pika.spec.Queue.Declare(queue="tasks", durable=True, arguments={"x-max-length": 10}),
        pika.spec.Exchange.Declare(exchange="logs", type="topic", durable=True),
        pika.spec.Queue.Bind(queue="tasks", exchange="logs", routing_key="a.*"),
        pika.spec.Basic.Consume(queue="tasks", consumer_tag="ctag", arguments={"x-priority": 3}),
        pika.spec.Basic.Qos(prefetch_count=10, global_qos=True),
        pika.spec.Confirm.Select(),
        pika.spec.Connection.StartOk(
            client_properties={"product": "pika", "capabilities": {"basic.nack": True}},
            mechanism="PLAIN",
            response="\0guest\0guest",
        ),
    ]
    for method in cases:
        data = pika.frame.Method(1, method).marshal()
        decoded = decode_method(only_payload(data))
        assert decoded.name == method.NAME
    declare = decode_method(only_payload(pika.frame.Method(1, cases[0]).marshal()))
    assert (declare.queue, declare.durable, declare.arguments) == (
        "tasks",
        True,
        {"x-max-length": 10},
    )
    start_ok = decode_method(only_payload(pika.frame.Method(0, cases[-1]).marshal()))
    assert start_ok.client_properties["capabilities"] == {"basic.nack": True}
    assert start_ok.response == "\0guest\0guest"


def test_our_server_methods_decode_in_pika():
    out = encode_method(1, commands.Queue.DeclareOk("amq.gen-1", 5, 2))
    used, frame = pika.frame.decode_frame(out)
    assert used == len(out)
    assert (frame.method.queue, frame.method.message_count) == ("amq.gen-1", 5)


def test_unknown_method_is_command_invalid():
    with pytest.raises(AMQPError) as info:
        decode_method(b"\x00\x63\x00\x01")
    assert (info.value.reply_code, info.value.class_id, info.value.method_id) == (503, 99, 1)


@pytest.mark.parametrize("cut", [0, 2, 5, 8, 12])
def test_truncated_method_is_a_frame_error_with_its_ids(cut):
    payload = method_payload(commands.Queue.Bind(queue="q", exchange="e", routing_key="k"))
    with pytest.raises(AMQPError) as info:
        decode_method(payload[:cut])
    assert info.value.reply_code == 501
    if cut >= 4:
        assert isinstance(info.value, FrameError)
        assert (info.value.class_id, info.value.method_id) == (50, 20)


def test_bad_table_in_method_names_the_method():
    payload = method_payload(commands.Queue.Declare(queue="q"))[:-4] + b"\x00\x00\x00\x03\x01kZ"
    with pytest.raises(AMQPError) as info:
        decode_method(payload)
    assert (info.value.reply_code, info.value.class_id, info.value.method_id) == (502, 50, 10)
