"""Split an AMQP 0-9-1 byte stream into frames (sans-IO).

A frame is ``type:octet channel:short size:long payload:size frame-end:0xCE``. The reader hands
out payloads as memoryview slices without copying them: a ``bytes`` chunk that holds whole
frames is sliced in place, and a partial frame is accumulated in a private bytearray that is
never mutated again once views into it exist. Returned views therefore stay valid for as long
as the caller holds them (holding one keeps its whole receive chunk alive, so copy bodies that
outlive the current batch).
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
_KNOWN_TYPES = frozenset({FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT})


class Frame(NamedTuple):
    """One complete frame; ``payload`` excludes the 7-byte head and the frame-end octet.

    ``FrameReader.next_frame`` returns plain ``(type, channel, payload)`` tuples with this
    layout (``Frame._make(t)`` names them): at three frames per published message even a
    NamedTuple's constructor shows up in the profile.
    """

    type: int
    channel: int
    payload: memoryview


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
    """

    __slots__ = ("_pending", "_pos", "_view", "frame_max")

    def __init__(self, frame_max: int = FRAME_MIN_SIZE) -> None:
        self.frame_max = frame_max
        self._view: memoryview | None = None  # frozen chunk frames are sliced from
        self._pos = 0
        self._pending = bytearray()  # an incomplete tail; no views into it ever exist

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as frames."""
        held = len(self._view) - self._pos if self._view is not None else 0
        return held + len(self._pending)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Add received bytes (copied only when they complete a partial frame)."""
        if not data:
            return
        if self._view is not None:
            if self._pos < len(self._view):
                self._pending = bytearray(self._view[self._pos :])
            self._view = None
        if self._pending or type(data) is not bytes:
            self._pending += data
        else:
            self._view = memoryview(data)
            self._pos = 0

    def read_exact(self, n: int) -> bytes | None:
        """Take the next ``n`` raw bytes (the protocol header), or None if not yet received."""
        if self._view is not None:
            self._pending = bytearray(self._view[self._pos :]) + self._pending
            self._view = None
        if len(self._pending) < n:
            return None
        out = bytes(self._pending[:n])
        del self._pending[:n]
        return out

    def peek(self) -> bytes:
        """All buffered bytes (for protocol-header sniffing before framing starts)."""
        if self._view is not None:
            return bytes(self._view[self._pos :]) + bytes(self._pending)
        return bytes(self._pending)

    def next_frame(self) -> tuple[int, int, memoryview] | None:
        """The next complete frame as (type, channel, payload), or None; see ``Frame``."""
        view = self._view
        if view is None:
            if not self._has_frame(self._pending):
                return None
            view = self._view = memoryview(self._pending)
            self._pending = bytearray()
            self._pos = 0
        pos = self._pos
        avail = len(view) - pos
        if avail < 7:
            return self._stash(view, pos)
        frame_type, channel, size = _FRAME_HEAD.unpack_from(view, pos)
        if frame_type not in _KNOWN_TYPES or (self.frame_max and size > self.frame_max):
            self._check_head(frame_type, size)
        end = pos + 7 + size
        if avail < size + FRAME_OVERHEAD:
            return self._stash(view, pos)
        if view[end] != FRAME_END:
            raise FrameError(f"invalid frame end marker 0x{view[end]:02x}")
        self._pos = end + 1
        if self._pos == len(view):
            self._view = None
        return frame_type, channel, view[pos + 7 : end]

    def _stash(self, view: memoryview, pos: int) -> None:
        self._pending = bytearray(view[pos:])
        self._view = None
        return None

    def _has_frame(self, buf: bytearray) -> bool:
        if len(buf) < 7:
            return False
        frame_type, _channel, size = _FRAME_HEAD.unpack_from(buf, 0)
        self._check_head(frame_type, size)
        return len(buf) >= size + FRAME_OVERHEAD

    def _check_head(self, frame_type: int, size: int) -> None:
        if frame_type not in _KNOWN_TYPES:
            raise FrameError(f"unknown frame type {frame_type}")
        if self.frame_max and size > self.frame_max:
            raise FrameError(f"frame payload of {size} bytes exceeds frame_max {self.frame_max}")
