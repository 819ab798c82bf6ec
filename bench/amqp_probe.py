"""A blocking AMQP handshake (up to connection.open-ok, then close): the broker's ready point.

RabbitMQ opens its AMQP listener late in boot, and a listener that accepts is not yet proof of
service, so readiness is a completed login and vhost open, the same for every broker.
"""

from __future__ import annotations

import socket
import time

from pamqp import commands
from pamqp import frame as pframe
from pamqp.base import Frame as PFrame


class ProbeError(RuntimeError):
    """The broker answered, but not with a successful handshake."""


def _read_frame(sock: socket.socket, buf: bytearray) -> PFrame:
    while True:
        if len(buf) >= 7:
            size = int.from_bytes(buf[3:7], "big")
            if len(buf) >= size + 8:
                used, _channel, frame = pframe.unmarshal(bytes(buf[: size + 8]))
                del buf[:used]
                return frame
        data = sock.recv(65536)
        if not data:
            raise ProbeError("connection closed during the handshake")
        buf += data


def _expect(sock: socket.socket, buf: bytearray, kind: type) -> PFrame:
    frame = _read_frame(sock, buf)
    if isinstance(frame, commands.Connection.Close):
        raise ProbeError(f"{frame.reply_code} {frame.reply_text}")
    if not isinstance(frame, kind):
        raise ProbeError(f"expected {kind.__name__}, got {frame.name}")
    return frame


def probe(host: str, port: int, timeout: float = 2.0, user: str = "guest",
          password: str = "guest") -> float:
    """Log in, open vhost '/', close; return the seconds it took."""
    t0 = time.perf_counter()
    with socket.create_connection((host, port), timeout=timeout) as sock:
        buf = bytearray()
        sock.sendall(b"AMQP\x00\x00\x09\x01")
        _expect(sock, buf, commands.Connection.Start)
        sock.sendall(pframe.marshal(commands.Connection.StartOk(
            client_properties={"product": "dari-bench-probe"}, mechanism="PLAIN",
            response=f"\0{user}\0{password}", locale="en_US"), 0))
        tune = _expect(sock, buf, commands.Connection.Tune)
        sock.sendall(pframe.marshal(commands.Connection.TuneOk(
            tune.channel_max, tune.frame_max, 0), 0))
        sock.sendall(pframe.marshal(commands.Connection.Open("/"), 0))
        _expect(sock, buf, commands.Connection.OpenOk)
        sock.sendall(pframe.marshal(commands.Connection.Close(200, "probe", 0, 0), 0))
        _expect(sock, buf, commands.Connection.CloseOk)
    return time.perf_counter() - t0
