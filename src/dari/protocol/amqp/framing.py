"""Split an AMQP 0-9-1 byte stream into frames (sans-IO).

A frame is ``type:octet channel:short size:long payload:size frame-end:0xCE``. Payloads are
handed out as ``bytes`` slices of the received chunk: at ~100 B per message a slice costs
less than a memoryview and is hashable, so decoders can key caches on it and queues can keep
it as is. An incomplete frame is accumulated in a bytearray (amortised appends, so a peer
trickling a large frame byte by byte costs linear time) and turned into bytes once complete.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from dari.protocol.amqp.errors import FrameError

__all__ = [
    "FRAME_BODY",
    "FRAME_END",
    "FRAME_HEADER",
    "FRAME_HEARTBEAT",
    "FRAME_METHOD",
    "FRAME_MIN_SIZE",
    "FRAME_OVERHEAD",
    "HEARTBEAT_FRAME",
    "PROTOCOL_HEADER",
    "Frame",
    "FrameReader",
    "encode_frame",
]

FRAME_METHOD = 1
FRAME_HEADER = 2
FRAME_BODY = 3
FRAME_HEARTBEAT = 8
FRAME_END = 0xCE
FRAME_MIN_SIZE = 4096  # spec: frame-min-size; also the frame_max used before tune-ok
FRAME_OVERHEAD = 8  # type + channel + size + frame-end
PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
HEARTBEAT_FRAME = b"\x08\x00\x00\x00\x00\x00\x00\xce"

_FRAME_HEAD = struct.Struct(">BHI")
_U64 = struct.Struct(">Q")
_KNOWN_TYPES = frozenset({FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT})


class Frame(NamedTuple):
    """One complete frame; ``payload`` excludes the 7-byte head and the frame-end octet.

    ``FrameReader.next_frame`` returns plain ``(type, channel, payload)`` tuples with this
    layout (``Frame._make(t)`` names them): at three frames per published message even a
    NamedTuple's constructor shows up in the profile.
    """

    type: int
    channel: int
    payload: bytes


def encode_frame(frame_type: int, channel: int, payload: bytes | bytearray | memoryview) -> bytes:
    """One frame on the wire."""
    return b"".join((_FRAME_HEAD.pack(frame_type, channel, len(payload)), payload, b"\xce"))


class FrameReader:
    """Incremental frame splitter for one connection; owned by it, not thread-safe.

    ``feed`` adds received bytes; ``next_frame`` returns the next complete frame or ``None``
    when more bytes are needed, and raises ``FrameError`` (501) when the stream is malformed:
    an unknown frame type, a payload larger than ``frame_max`` or a wrong frame-end octet.
    After it raises, the stream is lost and the connection must be closed.

    Like RabbitMQ (``rabbit_reader:handle_input``), a payload of up to ``frame_max`` bytes is
    tolerated although the spec caps the *whole* frame at frame_max: clients commonly get the
    8-byte overhead wrong. ``frame_max == 0`` means no limit.

    Invariant: either ``_pending`` is empty, or ``_buf`` is fully consumed and ``_pending``
    holds fewer than ``_need`` bytes (an incomplete frame).
    """

    __slots__ = ("_buf", "_need", "_pending", "_pos", "frame_max")

    def __init__(self, frame_max: int = FRAME_MIN_SIZE) -> None:
        self.frame_max = frame_max
        self._buf = b""  # the chunk frames are sliced from
        self._pos = 0
        self._pending = bytearray()  # an incomplete frame
        self._need = 0  # bytes _pending must reach before it is worth parsing again

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as frames."""
        return len(self._buf) - self._pos + len(self._pending)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Add received bytes."""
        if not data:
            return
        if self._pending:
            self._pending += data
            if len(self._pending) >= self._need:
                self._buf, self._pos = bytes(self._pending), 0
                self._pending = bytearray()
        elif self._pos < len(self._buf):
            self._buf, self._pos = self._buf[self._pos :] + bytes(data), 0
        else:
            self._buf, self._pos = (data if type(data) is bytes else bytes(data)), 0

    def read_exact(self, n: int) -> bytes | None:
        """Take the next ``n`` raw bytes (the protocol header), or None if not yet received."""
        data = self.peek()
        if len(data) < n:
            return None
        self._buf, self._pos, self._pending = data[n:], 0, bytearray()
        return data[:n]

    def peek(self) -> bytes:
        """All buffered bytes (for protocol-header sniffing before framing starts)."""
        return self._buf[self._pos :] + bytes(self._pending)

    def next_frame(self) -> tuple[int, int, bytes] | None:
        """The next complete frame as (type, channel, payload), or None; see ``Frame``."""
        buf = self._buf
        pos = self._pos
        avail = len(buf) - pos
        if avail < 7:
            return self._stash(buf, pos, 7) if avail else None
        frame_type, channel, size = _FRAME_HEAD.unpack_from(buf, pos)
        if frame_type not in _KNOWN_TYPES or (self.frame_max and size > self.frame_max):
            self._check_head(frame_type, size)
        end = pos + 7 + size
        if avail < size + FRAME_OVERHEAD:
            return self._stash(buf, pos, size + FRAME_OVERHEAD)
        if buf[end] != FRAME_END:
            raise FrameError(f"invalid frame end marker 0x{buf[end]:02x}")
        self._pos = end + 1
        return frame_type, channel, buf[pos + 7 : end]

    def next_content(self, channel: int) -> tuple[bytes, bytes] | None:
        """If a content header and a single body frame on ``channel`` follow, both complete,
        take them and return their payloads; else take nothing and return None.

        The publish fast path: most messages are publish + header + one body frame in the same
        read, and this avoids two rounds through the general frame loop. Only a body frame
        that carries the header's whole body size counts (so never an empty body).
        """
        buf = self._buf
        pos = self._pos
        if len(buf) - pos < 14:
            return None
        frame_type, number, size = _FRAME_HEAD.unpack_from(buf, pos)
        if frame_type != FRAME_HEADER or number != channel:
            return None
        body_at = pos + 8 + size
        if len(buf) < body_at + 7:
            return None
        btype, bnumber, bsize = _FRAME_HEAD.unpack_from(buf, body_at)
        end = body_at + 7 + bsize
        frame_max = self.frame_max
        if (
            size < 12
            or not bsize
            or _U64.unpack_from(buf, pos + 11)[0] != bsize
            or btype != FRAME_BODY
            or bnumber != channel
            or len(buf) <= end
            or buf[body_at - 1] != FRAME_END
            or buf[end] != FRAME_END
            or (frame_max and (size > frame_max or bsize > frame_max))
        ):
            return None
        self._pos = end + 1
        return buf[pos + 7 : body_at - 1], buf[body_at + 7 : end]

    def _stash(self, buf: bytes, pos: int, need: int) -> None:
        self._pending = bytearray(buf[pos:])
        self._need = need
        self._buf, self._pos = b"", 0
        return None

    def _check_head(self, frame_type: int, size: int) -> None:
        if frame_type not in _KNOWN_TYPES:
            raise FrameError(f"unknown frame type {frame_type}")
        if self.frame_max and size > self.frame_max:
            raise FrameError(f"frame payload of {size} bytes exceeds frame_max {self.frame_max}")
