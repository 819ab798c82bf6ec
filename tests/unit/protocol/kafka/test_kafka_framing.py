"""RequestFramer: size-prefixed frames out of an arbitrary chunking of the byte stream."""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dari.protocol.kafka import FrameTooLargeError, KafkaProtocolError, RequestFramer


def frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


PAYLOADS = [bytes([i]) * (10 + i * 7) for i in range(20)]
STREAM = b"".join(frame(p) for p in PAYLOADS)


def test_many_frames_in_one_feed_are_all_returned_in_order():
    framer = RequestFramer()
    frames = framer.feed(STREAM)
    assert [bytes(f) for f in frames] == PAYLOADS
    assert framer.buffered == 0


def test_whole_frames_from_bytes_are_slices_of_the_input():
    data = STREAM
    frames = RequestFramer().feed(data)
    assert all(f.obj is data for f in frames)


def test_partial_frame_is_kept_until_complete():
    framer = RequestFramer()
    data = frame(b"x" * 100)
    assert framer.feed(data[:2]) == []
    assert framer.feed(data[2:50]) == []
    assert framer.buffered == 50
    (only,) = framer.feed(data[50:] + data[:3])
    assert bytes(only) == b"x" * 100
    assert framer.buffered == 3


@pytest.mark.parametrize("split", range(1, len(STREAM)))
def test_stream_split_at_every_byte_boundary(split):
    framer = RequestFramer()
    frames = framer.feed(STREAM[:split]) + framer.feed(STREAM[split:])
    assert [bytes(f) for f in frames] == PAYLOADS
    assert framer.buffered == 0


def test_byte_by_byte_feeding_keeps_earlier_frames_valid():
    framer = RequestFramer()
    frames = []
    for i in range(len(STREAM)):
        frames += framer.feed(STREAM[i : i + 1])
    # Views returned early must not be corrupted by later buffering.
    assert [bytes(f) for f in frames] == PAYLOADS


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=30))
def test_any_chunking_yields_the_same_frames(cuts):
    bounds = sorted({0, len(STREAM), *cuts})
    framer = RequestFramer()
    frames = []
    for start, end in itertools.pairwise(bounds):
        chunk = STREAM[start:end]
        # Alternate buffer types: the framer must copy what it does not own.
        frames += framer.feed(bytearray(chunk) if start % 2 else chunk)
    assert [bytes(f) for f in frames] == PAYLOADS


def test_mutable_input_is_copied():
    data = bytearray(frame(b"a" * 20))
    (only,) = RequestFramer().feed(data)
    data[10] = ord("z")
    assert bytes(only) == b"a" * 20


def test_many_small_frames_fed_one_at_a_time_do_not_accumulate():
    framer = RequestFramer()
    payload = b"p" * 12
    total = 0
    for _ in range(10_000):
        total += len(framer.feed(frame(payload)))
    assert total == 10_000
    assert framer.buffered == 0


def test_oversize_frame_rejected_from_its_size_prefix_alone():
    framer = RequestFramer(max_request_bytes=1000)
    assert len(framer.feed(frame(b"a" * 1000))) == 1
    with pytest.raises(FrameTooLargeError):
        framer.feed(struct.pack(">i", 1001))


@pytest.mark.parametrize("size", [-1, -(2**31), 0, 9])
def test_negative_or_tiny_size_rejected(size):
    with pytest.raises(FrameTooLargeError) as info:
        RequestFramer().feed(struct.pack(">i", size) + b"\0" * 16)
    assert isinstance(info.value, KafkaProtocolError)
