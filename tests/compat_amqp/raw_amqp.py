"""An AMQP 0-9-1 client on a bare socket, for what client libraries hide: exactly which frames
the broker sends, and in which order. Frames are encoded and decoded by pamqp.

Every read is bounded by the socket timeout and fails saying what had arrived so far.
"""

from __future__ import annotations

import socket
from typing import Any

from pamqp import commands, frame, header
from pamqp.heartbeat import Heartbeat

from .conftest import AmqpServer

TIMEOUT_S = 30.0


class RawConnection:
    """One open connection (handshake done); owned by the test's thread."""

    def __init__(
        self, server: AmqpServer, user: str = "guest", password: str = "guest",
        channel_max: int | None = None,
    ) -> None:
        self.sock = socket.create_connection((server.host, server.port), timeout=TIMEOUT_S)
        self.buf = b""
        self.seen: list[tuple[int, Any]] = []  # every frame read, for failure messages
        self.sock.sendall(frame.marshal(header.ProtocolHeader(), 0))
        self.expect(commands.Connection.Start)
        self.send(commands.Connection.StartOk(
            client_properties={"product": "raw-amqp-test-client"},
            mechanism="PLAIN",
            response=f"\0{user}\0{password}",
        ))
        tune = self.expect(commands.Connection.Tune)
        limit = tune.channel_max if channel_max is None else channel_max
        self.send(commands.Connection.TuneOk(limit, tune.frame_max, 0))
        self.send(commands.Connection.Open("/"))
        self.expect(commands.Connection.OpenOk)

    def send(self, value: Any, channel: int = 0) -> None:
        self.sock.sendall(frame.marshal(value, channel))

    def read(self) -> tuple[int, Any] | None:
        """The next (channel, frame) other than a heartbeat; None once the broker closed."""
        while True:
            if len(self.buf) >= 7:
                size = int.from_bytes(self.buf[3:7], "big")
                if len(self.buf) >= size + 8:
                    used, channel, value = frame.unmarshal(self.buf[: size + 8])
                    self.buf = self.buf[used:]
                    if isinstance(value, Heartbeat):
                        continue
                    self.seen.append((channel, value))
                    return channel, value
            data = self.sock.recv(65536)
            if not data:
                return None
            self.buf += data

    def expect(self, kind: type) -> Any:
        """The next frame, which must be a `kind`."""
        got = self.read()
        assert got is not None, f"connection closed; frames so far: {self.seen}"
        assert isinstance(got[1], kind), f"expected {kind.__name__}, got {got[1]!r}"
        return got[1]

    def until(self, kind: type) -> list[Any]:
        """Every frame up to and including the first `kind`."""
        frames = []
        while True:
            got = self.read()
            assert got is not None, f"closed before a {kind.__name__}; frames: {self.seen}"
            frames.append(got[1])
            if isinstance(got[1], kind):
                return frames

    def open_channel(self, number: int) -> None:
        self.send(commands.Channel.Open(), number)
        self.expect(commands.Channel.OpenOk)

    def close(self) -> None:
        self.sock.close()
