"""Random and mutated request frames: the Kafka codec answers with protocol errors only."""

from __future__ import annotations

import contextlib
import io
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kio.schema.request_header.v1 import RequestHeader as HeaderV1
from kio.schema.request_header.v2 import RequestHeader as HeaderV2
from kio.serial import entity_writer
from kio.static.primitive import Records

from dari.protocol.kafka import (
    FUTURE_APIS,
    SUPPORTED_APIS,
    KafkaProtocolError,
    RequestFramer,
    parse_request,
    request_class,
)
from dari.protocol.kafka.apis import decodable_range

st.register_type_strategy(Records, st.binary(max_size=32).map(Records))

FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ALL_APIS = {**SUPPORTED_APIS, **FUTURE_APIS}
VERSIONS = [
    (key, version)
    for key in sorted(ALL_APIS)
    for version in range(decodable_range(key, ALL_APIS)[0], decodable_range(key, ALL_APIS)[1] + 1)
]


def try_parse(frame: bytes) -> None:
    for apis in (SUPPORTED_APIS, ALL_APIS):
        with contextlib.suppress(KafkaProtocolError):
            parse_request(memoryview(frame), apis)


@st.composite
def valid_frames(draw) -> bytes:
    api_key, version = draw(st.sampled_from(VERSIONS))
    cls = request_class(api_key, version)
    header_cls = HeaderV2 if cls.__flexible__ else HeaderV1
    buf = io.BytesIO()
    entity_writer(header_cls)(
        buf,
        header_cls(
            request_api_key=api_key,
            request_api_version=version,
            correlation_id=1,
            client_id=draw(st.none() | st.text(max_size=8)),
        ),
    )
    entity_writer(cls)(buf, draw(st.from_type(cls)))
    return buf.getvalue()


@st.composite
def mutated_frames(draw) -> bytes:
    frame = bytearray(draw(valid_frames()))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "length"]))
        pos = draw(st.integers(0, max(len(frame) - 1, 0)))
        if kind == "flip" and frame:
            frame[pos] ^= draw(st.integers(1, 255))
        elif kind == "truncate":
            del frame[pos:]
        elif kind == "insert":
            frame[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del frame[pos : pos + draw(st.integers(1, 8))]
        elif kind == "length" and len(frame) >= pos + 4:
            # Overwrite with a hostile length or count (-1, 0, huge).
            value = draw(st.sampled_from([-2, -1, 0, 1, 0x7FFF, 0x7FFFFFFF]))
            frame[pos : pos + 4] = struct.pack(">i", value)
    return bytes(frame)


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes(frame):
    try_parse(frame)


@FUZZ
@given(
    st.sampled_from([*sorted(ALL_APIS), -1, 999]),
    st.integers(-2, 20),
    st.binary(max_size=120),
)
def test_random_bodies_after_plausible_header(api_key, version, tail):
    try_parse(struct.pack(">hhih", api_key, version, 1, 0) + tail)
    try_parse(struct.pack(">hhih", api_key, version, 1, 0) + b"\x00" + tail)


@FUZZ
@given(mutated_frames())
def test_mutated_valid_requests(frame):
    try_parse(frame)


@pytest.mark.parametrize("version", range(3, 11))
@FUZZ
@given(data=st.binary(max_size=150))
def test_random_produce_bodies(version, data):
    try_parse(struct.pack(">hhih", 0, version, 1, -1) + (b"\x00" if version >= 9 else b"") + data)


@FUZZ
@given(st.lists(st.binary(max_size=64), max_size=20))
def test_framer_accepts_or_rejects_random_streams(chunks):
    framer = RequestFramer(max_request_bytes=4096)
    try:
        for chunk in chunks:
            for frame in framer.feed(chunk):
                assert 10 <= len(frame) <= 4096
                try_parse(bytes(frame))
    except KafkaProtocolError:
        pass
