"""A tiny Kafka readiness probe: TCP connect, ApiVersions v0, then one Metadata request.

Hand-encoded so that "ready" means the broker answered a real metadata request, without the
start-up cost and reconnect back-off of a full client library skewing the start-up figure.
"""

from __future__ import annotations

import socket
import struct

_API_VERSIONS = 18
_METADATA = 3
_CLIENT_ID = b"dari-bench-probe"


class ProbeError(Exception):
    """The broker accepted the connection but did not answer as expected."""


def _request(api_key: int, version: int, corr: int, body: bytes, flexible: bool) -> bytes:
    header = struct.pack(">hhih", api_key, version, corr, len(_CLIENT_ID)) + _CLIENT_ID
    if flexible:
        header += b"\x00"  # empty tagged fields
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def _read_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ProbeError("connection closed by broker")
        buf += chunk
    return bytes(buf)


def _response(sock: socket.socket, corr: int) -> bytes:
    (size,) = struct.unpack(">i", _read_exact(sock, 4))
    data = _read_exact(sock, size)
    (got,) = struct.unpack_from(">i", data)
    if got != corr:
        raise ProbeError(f"correlation id {got} != {corr}")
    return data[4:]


def _metadata_body(version: int) -> bytes:
    """All-topics metadata request body for `version` (1..13)."""
    if version < 9:
        body = struct.pack(">i", -1)
        if version >= 4:
            body += b"\x00"  # allow_auto_topic_creation
        if version >= 8:
            body += b"\x00\x00"  # include cluster / topic authorized operations
        return body
    body = b"\x00" + b"\x00"  # null compact topics array, allow_auto_topic_creation
    if version <= 10:
        body += b"\x00"  # include_cluster_authorized_operations
    return body + b"\x00" + b"\x00"  # include_topic_authorized_operations, tagged fields


def _metadata_range(body: bytes) -> tuple[int, int]:
    (error,) = struct.unpack_from(">h", body)
    if error:
        raise ProbeError(f"ApiVersions error {error}")
    (count,) = struct.unpack_from(">i", body, 2)
    for i in range(count):
        key, lo, hi = struct.unpack_from(">hhh", body, 6 + 6 * i)
        if key == _METADATA:
            return lo, hi
    raise ProbeError("broker does not list the Metadata API")


def probe(host: str, port: int, timeout: float = 1.0) -> None:
    """Raise OSError/ProbeError unless the broker answers ApiVersions and Metadata."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(_request(_API_VERSIONS, 0, 1, b"", flexible=False))
        lo, hi = _metadata_range(_response(sock, 1))
        version = max(lo, 1)
        if version > min(hi, 13):
            raise ProbeError(f"no Metadata version in common (broker {lo}..{hi})")
        flexible = version >= 9
        sock.sendall(_request(_METADATA, version, 2, _metadata_body(version), flexible))
        _response(sock, 2)
