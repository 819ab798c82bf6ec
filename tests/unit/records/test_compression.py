"""Compression codecs: round trips and the framings real producers emit."""

from __future__ import annotations

import struct
import zlib

import cramjam
import lz4.frame
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from dari.records import (
    Codec,
    CorruptRecordError,
    UnsupportedCompressionError,
    compress,
    decompress,
)

ALL_CODECS = list(Codec)
COMPRESSED_CODECS = [c for c in Codec if c != Codec.NONE]


def xerial_frame(data: bytes, block_size: int, version: bytes = b"\x00\x00\x00\x01" * 2) -> bytes:
    """The snappy-java stream format: magic, version fields, then length-prefixed raw blocks."""
    out = bytearray(b"\x82SNAPPY\x00" + version)
    for start in range(0, len(data), block_size):
        block = bytes(cramjam.snappy.compress_raw(data[start : start + block_size]))
        out += struct.pack(">i", len(block)) + block
    return bytes(out)


@pytest.mark.parametrize("codec", ALL_CODECS, ids=lambda c: c.name)
@given(data=st.binary(max_size=4096))
def test_round_trip(codec: Codec, data: bytes) -> None:
    compressed = compress(codec, data)
    assert decompress(codec, compressed) == data
    assert decompress(codec, memoryview(compressed)) == data


@pytest.mark.parametrize("codec", COMPRESSED_CODECS, ids=lambda c: c.name)
def test_compression_shrinks_repetitive_data(codec: Codec) -> None:
    data = b"the same line again\n" * 500
    assert len(compress(codec, data)) < len(data) // 5


@pytest.mark.parametrize("codec", [-1, 5, 7, 100])
def test_unknown_codec_is_rejected(codec: int) -> None:
    with pytest.raises(UnsupportedCompressionError):
        compress(codec, b"x")
    with pytest.raises(ValueError):  # the error is a ValueError for callers that do not care
        decompress(codec, b"x")


@pytest.mark.parametrize("codec", COMPRESSED_CODECS, ids=lambda c: c.name)
def test_malformed_input_is_a_corrupt_record(codec: Codec) -> None:
    good = compress(codec, bytes(range(256)) * 20)
    for bad in (good[: len(good) // 2], good[:-2], b"\x07garbage" * 4, b""):
        with pytest.raises(CorruptRecordError):
            decompress(codec, bad)


def test_gzip_accepts_concatenated_members() -> None:
    assert decompress(Codec.GZIP, compress(Codec.GZIP, b"ab") + compress(Codec.GZIP, b"cd")) == (
        b"abcd"
    )


def test_gzip_output_is_a_gzip_stream() -> None:
    compressed = compress(Codec.GZIP, b"hello")
    assert compressed[:2] == b"\x1f\x8b"
    assert zlib.decompress(compressed, 16 + zlib.MAX_WBITS) == b"hello"


def test_snappy_compress_emits_raw_snappy() -> None:
    data = b"raw snappy, as librdkafka writes it" * 10
    assert bytes(cramjam.snappy.decompress_raw(compress(Codec.SNAPPY, data))) == data


@pytest.mark.parametrize("block_size", [1, 7, 1024, 32 * 1024, 1 << 20])
def test_snappy_decodes_xerial_framing(block_size: int) -> None:
    data = bytes(range(256)) * 300 + b"tail"
    assert decompress(Codec.SNAPPY, xerial_frame(data, block_size)) == data


def test_snappy_xerial_ignores_little_endian_version_fields() -> None:
    data = b"some producers write the version fields little-endian" * 3
    framed = xerial_frame(data, 64, version=b"\x01\x00\x00\x00" * 2)
    assert decompress(Codec.SNAPPY, framed) == data


def test_snappy_xerial_with_no_blocks_is_empty() -> None:
    assert decompress(Codec.SNAPPY, xerial_frame(b"", 16)) == b""


@pytest.mark.parametrize("cut", [1, 3, 10])
def test_snappy_truncated_xerial_is_corrupt(cut: int) -> None:
    framed = xerial_frame(b"abcdefgh" * 100, 100)
    with pytest.raises(CorruptRecordError):
        decompress(Codec.SNAPPY, framed[:-cut])


def test_zstd_frame_without_content_size() -> None:
    data = b"librdkafka streams zstd without a content size" * 50
    frame = zstandard.ZstdCompressor(write_content_size=False).compress(data)
    with pytest.raises(zstandard.ZstdError):  # the one-shot API cannot do it
        zstandard.ZstdDecompressor().decompress(frame)
    assert decompress(Codec.ZSTD, frame) == data


def test_zstd_streamed_multi_frame_input() -> None:
    first = zstandard.ZstdCompressor(write_content_size=False).compress(b"one " * 100)
    second = zstandard.ZstdCompressor().compress(b"two " * 100)
    assert decompress(Codec.ZSTD, first + second) == b"one " * 100 + b"two " * 100


def test_lz4_accepts_concatenated_frames_and_independent_blocks() -> None:
    data = bytes(range(256)) * 1000
    linked = lz4.frame.compress(data, block_linked=True, block_size=lz4.frame.BLOCKSIZE_MAX64KB)
    assert decompress(Codec.LZ4, linked) == data
    assert decompress(Codec.LZ4, compress(Codec.LZ4, b"a") + compress(Codec.LZ4, b"b")) == b"ab"
