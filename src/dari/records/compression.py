"""Record-batch compression codecs, addressed by the id in the batch attributes (bits 0-2).

Decompression is lenient about framing, because every client library frames a little
differently: snappy accepts raw blocks (librdkafka) and the xerial stream framing (Java),
zstd accepts frames without a content size, and gzip/lz4/zstd accept concatenated frames.
Malformed input raises CorruptRecordError, as the broker treats it as a corrupt batch.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from enum import IntEnum
from typing import Protocol

import cramjam
import lz4.frame
import zstandard

from dari.records.batch import CorruptRecordError

Buffer = bytes | bytearray | memoryview


class Codec(IntEnum):
    NONE = 0
    GZIP = 1
    SNAPPY = 2
    LZ4 = 3
    ZSTD = 4


class UnsupportedCompressionError(ValueError):
    """A codec id outside 0-4 (Kafka UNSUPPORTED_COMPRESSION_TYPE)."""


# The snappy-java stream header: marker, "SNAPPY", NUL, then int32 version and compat version.
XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER_SIZE = 16
_INT32 = struct.Struct(">i")


class _FrameDecompressor(Protocol):
    eof: bool
    unused_data: bytes

    def decompress(self, data: Buffer, /) -> bytes: ...


def _decompress_frames(
    new_decompressor: Callable[[], _FrameDecompressor], data: Buffer, name: str
) -> bytes:
    """Decompress one or more concatenated frames, insisting that the last one is complete."""
    parts: list[bytes] = []
    remaining: Buffer = data
    while True:
        decompressor = new_decompressor()
        parts.append(decompressor.decompress(remaining))
        if not decompressor.eof:
            raise CorruptRecordError(f"truncated {name} data")
        remaining = decompressor.unused_data
        if not remaining:
            return b"".join(parts)


def _gzip_compress(data: Buffer) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


def _gzip_decompress(data: Buffer) -> bytes:
    return _decompress_frames(lambda: zlib.decompressobj(16 + zlib.MAX_WBITS), data, "gzip")


def _snappy_compress(data: Buffer) -> bytes:
    # Raw snappy, as librdkafka writes it; every Kafka client reads it.
    return bytes(cramjam.snappy.compress_raw(data))


def _snappy_decompress(data: Buffer) -> bytes:
    view = memoryview(data)
    if bytes(view[: len(XERIAL_MAGIC)]) != XERIAL_MAGIC or len(view) < _XERIAL_HEADER_SIZE:
        return bytes(cramjam.snappy.decompress_raw(view))
    # The version fields are ignored: some producers write them little-endian.
    parts: list[bytes] = []
    pos = _XERIAL_HEADER_SIZE
    end = len(view)
    while pos < end:
        if end - pos < 4:
            raise CorruptRecordError("truncated xerial snappy block length")
        (size,) = _INT32.unpack_from(view, pos)
        pos += 4
        if size < 0 or pos + size > end:
            raise CorruptRecordError("xerial snappy block overruns the data")
        parts.append(bytes(cramjam.snappy.decompress_raw(view[pos : pos + size])))
        pos += size
    return b"".join(parts)


def _lz4_compress(data: Buffer) -> bytes:
    # Kafka's Java reader does not support linked blocks.
    return lz4.frame.compress(data, block_linked=False)


def _lz4_decompress(data: Buffer) -> bytes:
    return _decompress_frames(lz4.frame.LZ4FrameDecompressor, data, "lz4")


def _zstd_compress(data: Buffer) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


def _zstd_decompress(data: Buffer) -> bytes:
    # Streaming copes with frames that omit the content size (librdkafka writes those).
    return _decompress_frames(lambda: zstandard.ZstdDecompressor().decompressobj(), data, "zstd")


def _identity(data: Buffer) -> bytes:
    return bytes(data)


_COMPRESSORS: dict[int, Callable[[Buffer], bytes]] = {
    Codec.NONE: _identity,
    Codec.GZIP: _gzip_compress,
    Codec.SNAPPY: _snappy_compress,
    Codec.LZ4: _lz4_compress,
    Codec.ZSTD: _zstd_compress,
}

_DECOMPRESSORS: dict[int, Callable[[Buffer], bytes]] = {
    Codec.NONE: _identity,
    Codec.GZIP: _gzip_decompress,
    Codec.SNAPPY: _snappy_decompress,
    Codec.LZ4: _lz4_decompress,
    Codec.ZSTD: _zstd_decompress,
}


def compress(codec: int, data: Buffer) -> bytes:
    """Compress ``data`` with the codec whose Kafka attribute id is ``codec``."""
    try:
        compressor = _COMPRESSORS[codec]
    except KeyError:
        raise UnsupportedCompressionError(f"unknown compression codec {codec}") from None
    return compressor(data)


def decompress(codec: int, data: Buffer) -> bytes:
    """Decompress a batch's records section; raises CorruptRecordError on malformed input."""
    try:
        decompressor = _DECOMPRESSORS[codec]
    except KeyError:
        raise UnsupportedCompressionError(f"unknown compression codec {codec}") from None
    try:
        return decompressor(data)
    except CorruptRecordError:
        raise
    except (zlib.error, cramjam.DecompressionError, RuntimeError, zstandard.ZstdError) as exc:
        # lz4.frame reports malformed frames as RuntimeError.
        raise CorruptRecordError(f"cannot decompress {Codec(codec).name} data: {exc}") from exc
