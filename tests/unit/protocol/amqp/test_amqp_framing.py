"""FrameReader: AMQP frames out of any chunking of the byte stream; malformed streams refused."""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dari.protocol.amqp import AMQPError, FrameError, FrameReader, ReplyCode, encode_frame
from dari.protocol.amqp.framing import FRAME_BODY, FRAME_HEARTBEAT, FRAME_METHOD, Frame

FRAMES = [
    (FRAME_METHOD if i % 3 == 0 else FRAME_BODY, i % 5, bytes([i]) * (i * 11)) for i in range(30)
]
STREAM = b"".join(encode_frame(t, c, p) for t, c, p in FRAMES)


def drain(reader: FrameReader) -> list[tuple[int, int, bytes]]:
    out = []
    while (frame := reader.next_frame()) is not None:
        t, c, p = frame
        out.append((t, c, bytes(p)))
    return out


def test_encode_frame_layout():
    assert encode_frame(1, 7, b"abc") == b"\x01\x00\x07\x00\x00\x00\x03abc\xce"


def test_many_frames_in_one_feed_come_out_in_order():
    reader = FrameReader(frame_max=131072)
    reader.feed(STREAM)
    assert drain(reader) == FRAMES
    assert reader.buffered == 0


def test_whole_frames_are_bytes_slices_of_the_fed_chunk():
    reader = FrameReader(frame_max=131072)
    data = bytes(STREAM)
    reader.feed(data)
    payloads = []
    while (frame := reader.next_frame()) is not None:
        payloads.append(frame[2])
    assert [p for _t, _c, p in FRAMES] == payloads
    assert all(type(p) is bytes for p in payloads)  # hashable: decoders key caches on them
    assert Frame._make((1, 0, payloads[0])).type == 1


@pytest.mark.parametrize("cut", range(1, 40))
def test_split_at_every_byte_boundary_of_the_first_frames(cut):
    reader = FrameReader(frame_max=131072)
    reader.feed(STREAM[:cut])
    first = drain(reader)
    reader.feed(STREAM[cut:])
    assert first + drain(reader) == FRAMES


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=25))
def test_arbitrary_chunking_yields_the_same_frames(cuts):
    reader = FrameReader(frame_max=131072)
    bounds = sorted(set(cuts) | {0, len(STREAM)})
    out = []
    for start, end in itertools.pairwise(bounds):
        reader.feed(STREAM[start:end])
        out += drain(reader)
    assert out == FRAMES
    assert reader.buffered == 0


def test_byte_at_a_time_delivery_of_a_large_frame():
    payload = bytes(range(256)) * 40
    data = encode_frame(FRAME_BODY, 1, payload)
    reader = FrameReader(frame_max=131072)
    for i in range(len(data)):
        assert reader.next_frame() is None
        reader.feed(bytearray(data[i : i + 1]))
    assert drain(reader) == [(FRAME_BODY, 1, payload)]


def test_returned_views_survive_later_feeds():
    reader = FrameReader(frame_max=131072)
    data = encode_frame(FRAME_BODY, 1, b"a" * 10) + encode_frame(FRAME_BODY, 1, b"b" * 10)
    reader.feed(data[:5])
    reader.feed(data[5:25])
    first = reader.next_frame()
    reader.feed(data[25:])
    second = reader.next_frame()
    assert bytes(first[2]) == b"a" * 10 and bytes(second[2]) == b"b" * 10


def test_incomplete_frame_is_not_an_error():
    reader = FrameReader()
    reader.feed(encode_frame(FRAME_METHOD, 0, b"x" * 20)[:-1])
    assert reader.next_frame() is None
    assert reader.buffered == 27


def test_wrong_frame_end_is_a_frame_error():
    reader = FrameReader()
    reader.feed(encode_frame(FRAME_METHOD, 0, b"abcd")[:-1] + b"\x00")
    with pytest.raises(FrameError) as info:
        reader.next_frame()
    assert info.value.reply_code == ReplyCode.FRAME_ERROR == 501
    assert info.value.connection_level


def test_oversized_frame_is_refused_from_its_head_alone():
    reader = FrameReader(frame_max=4096)
    reader.feed(struct.pack(">BHI", FRAME_BODY, 1, 4097))
    with pytest.raises(FrameError, match="exceeds frame_max"):
        reader.next_frame()


def test_payload_of_exactly_frame_max_is_tolerated_like_rabbitmq():
    reader = FrameReader(frame_max=4096)
    reader.feed(encode_frame(FRAME_BODY, 1, b"z" * 4096))
    assert len(reader.next_frame()[2]) == 4096


def test_frame_max_zero_means_unlimited():
    reader = FrameReader(frame_max=0)
    reader.feed(encode_frame(FRAME_BODY, 1, b"z" * 300_000))
    assert len(reader.next_frame()[2]) == 300_000


@pytest.mark.parametrize("frame_type", [0, 4, 7, 9, 65, 255])
def test_unknown_frame_type_is_a_frame_error(frame_type):
    reader = FrameReader()
    reader.feed(encode_frame(frame_type, 0, b""))
    with pytest.raises(AMQPError) as info:
        reader.next_frame()
    assert info.value.reply_code == 501


def test_heartbeat_frame():
    reader = FrameReader()
    reader.feed(b"\x08\x00\x00\x00\x00\x00\x00\xce")
    assert drain(reader) == [(FRAME_HEARTBEAT, 0, b"")]


def test_read_exact_and_peek_serve_the_protocol_header():
    reader = FrameReader()
    reader.feed(b"AMQP\x00\x00")
    assert reader.read_exact(8) is None
    reader.feed(b"\x09\x01" + encode_frame(FRAME_METHOD, 0, b"abcd"))
    assert reader.peek()[:8] == b"AMQP\x00\x00\x09\x01"
    assert reader.read_exact(8) == b"AMQP\x00\x00\x09\x01"
    assert drain(reader) == [(FRAME_METHOD, 0, b"abcd")]
