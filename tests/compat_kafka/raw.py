"""Hand-written Kafka requests over a plain socket, for what no well-behaved client sends."""

from __future__ import annotations

import socket
import struct


def string(text: str | None) -> bytes:
    if text is None:
        return struct.pack(">h", -1)
    raw = text.encode()
    return struct.pack(">h", len(raw)) + raw


def frame(api_key: int, version: int, correlation_id: int, body: bytes) -> bytes:
    payload = struct.pack(">hhi", api_key, version, correlation_id) + string("raw-test") + body
    return struct.pack(">i", len(payload)) + payload


def produce_v3(topic: str, records: bytes, correlation_id: int = 7, acks: int = 1) -> bytes:
    body = (
        string(None)  # transactional_id
        + struct.pack(">hi", acks, 5000)
        + struct.pack(">i", 1)
        + string(topic)
        + struct.pack(">i", 1)
        + struct.pack(">ii", 0, len(records))
        + records
    )
    return frame(0, 3, correlation_id, body)


def recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        data += chunk
    return data


def recv_response(sock: socket.socket) -> bytes:
    """The payload of one response (after the size), correlation id included."""
    (size,) = struct.unpack(">i", recv_exact(sock, 4))
    return recv_exact(sock, size)


def connect(bootstrap: str) -> socket.socket:
    host, port = bootstrap.split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def produce_result(sock: socket.socket, topic: str, records: bytes) -> tuple[int, int]:
    """Send Produce v3 for partition 0 and return (error code, base offset)."""
    sock.sendall(produce_v3(topic, records))
    payload = recv_response(sock)
    (name_len,) = struct.unpack_from(">h", payload, 8)
    pos = 10 + name_len
    partitions, index, error_code, base_offset = struct.unpack_from(">iihq", payload, pos)
    assert (partitions, index) == (1, 0)
    return error_code, base_offset


def init_producer_id(sock: socket.socket) -> tuple[int, int]:
    """InitProducerId v0 without a transactional id: (producer id, epoch)."""
    sock.sendall(frame(22, 0, 9, string(None) + struct.pack(">i", 60_000)))
    payload = recv_response(sock)
    _correlation, _throttle, error_code, producer_id, epoch = struct.unpack_from(
        ">iihqh", payload, 0
    )
    assert error_code == 0, f"InitProducerId failed with error {error_code}"
    return producer_id, epoch


def kio_call(bootstrap: str, request: object, correlation_id: int = 11) -> object:
    """Send one kio request object and decode the answer with kio (for APIs no client has)."""
    import io

    from kio.index import load_response_schema
    from kio.serial import entity_reader, entity_writer

    cls = type(request)
    api_key, version = cls.__api_key__, cls.__version__  # type: ignore[attr-defined]
    buf = io.BytesIO()
    entity_writer(cls)(buf, request)
    flexible = cls.__flexible__  # type: ignore[attr-defined]
    body = (b"\x00" if flexible else b"") + buf.getvalue()
    with connect(bootstrap) as sock:
        sock.sendall(frame(api_key, version, correlation_id, body))
        payload = recv_response(sock)
    response_cls = load_response_schema(api_key, version)
    pos = 4 + (1 if response_cls.__flexible__ else 0)
    response, _size = entity_reader(response_cls)(memoryview(payload), pos)
    return response
