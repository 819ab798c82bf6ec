"""Split a Kafka byte stream into request frames (sans-IO).

Every Kafka request is an int32 size followed by that many bytes. The framer returns each
complete frame as a memoryview without copying it again: bytes that arrive as whole frames in
one ``bytes`` chunk are sliced in place, and a partially received frame is kept in one
bytearray that is handed over (never mutated again) once it completes, so returned views
stay valid for as long as the caller holds them.
"""

from __future__ import annotations

import struct

from dari.protocol.kafka.errors import FrameTooLargeError

__all__ = ["DEFAULT_MAX_REQUEST_BYTES", "MIN_FRAME_BYTES", "FrameTooLargeError", "RequestFramer"]

DEFAULT_MAX_REQUEST_BYTES = 104_857_600  # Kafka's socket.request.max.bytes
MIN_FRAME_BYTES = 10  # api_key, api_version, correlation_id and the client_id length
_SIZE = struct.Struct(">i")


class RequestFramer:
    """Incremental request framer for one connection; owned by it, not thread-safe.

    After ``feed`` raises, the stream is unusable and the connection should be closed.
    """

    __slots__ = ("_buf", "_max")

    def __init__(self, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES) -> None:
        self._max = max_request_bytes
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes received that do not yet form a complete frame."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[memoryview]:
        """Add received bytes; return the payload (after the size) of every completed frame."""
        if not self._buf and type(data) is bytes:
            view = memoryview(data)  # immutable: frames can be slices of it
        else:
            self._buf += data
            view = memoryview(self._buf)
        frames, consumed = self._split(view)
        if view.obj is self._buf:
            if frames:
                # Hand the old buffer over to the frames; keep only the partial tail.
                self._buf = bytearray(view[consumed:])
            else:
                view.release()
        elif consumed < len(view):
            self._buf = bytearray(view[consumed:])
        return frames

    def _split(self, view: memoryview) -> tuple[list[memoryview], int]:
        frames: list[memoryview] = []
        pos = 0
        end = len(view)
        while end - pos >= 4:
            (size,) = _SIZE.unpack_from(view, pos)
            if size > self._max:
                raise FrameTooLargeError(
                    f"request of {size} bytes exceeds socket.request.max.bytes ({self._max})"
                )
            if size < MIN_FRAME_BYTES:
                raise FrameTooLargeError(f"invalid request size {size}")
            if end - pos - 4 < size:
                break
            frames.append(view[pos + 4 : pos + 4 + size])
            pos += 4 + size
        return frames, pos
