"""The one record reader: decode the records inside RecordBatch v2 batches.

The hot path never comes here: it moves whole batches. Compaction, internal topics, queue
recovery and tests do. Everything decodes through one loop: ``decode_records``, whose options
let a caller skip headers or match a header layout it knows, and ``scan_keys``, the cleaner's
key scan that copies no values; the fast variants stay fast without a decoder of their own.
Decoding is careful about bounds (any malformed byte raises CorruptRecordError) and fast (one
copy of the records section, plain tuples, one-byte varints decoded inline).

Record layout (varints are zigzag-encoded)::

    length varint, attributes int8, timestampDelta varlong, offsetDelta varint,
    keyLength varint, key, valueLength varint, value,
    headerCount varint, [headerKeyLength varint, headerKey, headerValueLength varint, value]...
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from dari.records.batch import (
    HEADER_SIZE,
    LOG_OVERHEAD,
    MAGIC_V2,
    BatchHeader,
    CorruptRecordError,
    UnsupportedMagicError,
    parse_header,
)
from dari.records.compression import decompress
from dari.records.varint import read_varint, write_varint

Buffer = bytes | bytearray | memoryview
Headers = tuple[tuple[str, bytes | None], ...]
# (offset, timestamp, key, value, headers): what decode_records returns per record.
RawRecord = tuple[int, int, bytes | None, bytes | None, tuple | list]


@dataclass(frozen=True, slots=True)
class Record:
    """One decoded record with absolute offset and timestamp."""

    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: Headers = ()


class LayoutMismatchError(Exception):
    """A record does not carry the headers of the ``HeaderLayout`` it was decoded with."""


class HeaderLayout:
    """The header names (in order, values never null) every record of a log is written with.

    ``decode_records(layout=...)`` compares the encoded names (``expected``: each prefix, length
    varint + name, with its size) as raw bytes instead of decoding them and gives the header
    values alone: a queue's messages log reads back without building (name, value) pairs.
    Writers put ``prefixes`` in front of the values. Immutable; share one instance per layout.
    """

    __slots__ = ("count_byte", "expected", "names", "prefixes")

    def __init__(self, names: Sequence[str]) -> None:
        if len(names) >= 64:
            raise ValueError("a header layout holds fewer than 64 names (a one-byte count)")
        self.names = tuple(names)
        prefixes = []
        for name in self.names:
            prefix = bytearray()
            write_varint(prefix, len(name.encode()))
            prefixes.append(bytes(prefix) + name.encode())
        self.prefixes = tuple(prefixes)
        self.count_byte = len(prefixes) << 1  # the header count as its one varint byte
        self.expected = tuple((prefix, len(prefix)) for prefix in prefixes)


def _field(data: bytes, pos: int, end: int) -> tuple[bytes | None, int]:
    """A length-prefixed byte string (length -1 means null) that must end by ``end``."""
    length, pos = read_varint(data, pos)
    if length < 0:
        if length != -1:
            raise CorruptRecordError(f"negative length {length}")
        return None, pos
    stop = pos + length
    if stop > end:
        raise CorruptRecordError("field overruns its record")
    return data[pos:stop], stop


def _headers(data: bytes, pos: int, end: int) -> tuple[tuple[tuple[bytes, bytes | None], ...], int]:
    """The (raw name, value) pairs of a record's headers."""
    count, pos = read_varint(data, pos)
    if count < 0:
        raise CorruptRecordError(f"negative header count {count}")
    pairs = []
    for _ in range(count):
        name, pos = _field(data, pos, end)
        if name is None:
            raise CorruptRecordError("null header key")
        value, pos = _field(data, pos, end)
        pairs.append((name, value))
    return tuple(pairs), pos


def decode_records(
    section: bytes,
    header: BatchHeader,
    *,
    headers: bool = True,
    layout: HeaderLayout | None = None,
) -> list[RawRecord]:
    """(offset, timestamp, key, value, headers) of every record in a batch's uncompressed
    records section (``records_section``), as plain tuples.

    ``headers=False`` skips headers (``()``); by default they are (raw name bytes, value)
    pairs; with ``layout`` they are a list of the layout's values alone. LogAppendTime batches
    give every record the batch's max timestamp, as Kafka does. Raises CorruptRecordError on
    any malformed record, LayoutMismatchError when a record does not match ``layout``.
    """
    return _decode(section, header, False, headers, layout)


def scan_keys(section: bytes, header: BatchHeader) -> list[tuple[int, bytes | None, bool]]:
    """(offset, key, is tombstone) of every record in a batch's uncompressed records section:
    the key scan of the log cleaner, which decides on nothing else. Values are not copied,
    headers not read; framing errors raise CorruptRecordError as in ``decode_records``."""
    return _decode(section, header, True, False, None)


def _decode(
    section: bytes,
    header: BatchHeader,
    keys_only: bool,
    headers: bool,
    layout: HeaderLayout | None,
) -> list:
    """The one record decoding loop behind ``decode_records`` and ``scan_keys``."""
    rows: list = []
    append = rows.append
    base_offset = header.base_offset
    base_timestamp = header.base_timestamp
    size = len(section)
    pos = 0
    one, read = _ONE, read_varint  # locals: the loop runs per record
    if layout is not None:
        count_byte, expected = layout.count_byte, layout.expected
    # One-byte varints (the common case for deltas and key lengths) are decoded inline.
    try:
        for _ in range(header.record_count):
            length, pos = read(section, pos)  # often two bytes: not inlined
            end = pos + length
            if length < 0 or end > size:
                raise CorruptRecordError(f"record length {length} overruns the batch")
            byte = section[pos + 1]  # after the attributes byte, unused in v2
            if byte < 0x80:
                timestamp = base_timestamp + one[byte]
                pos += 2
            else:
                timestamp, pos = read(section, pos + 1)
                timestamp += base_timestamp
            byte = section[pos]
            if byte < 0x80:
                offset = base_offset + one[byte]
                pos += 1
            else:
                offset, pos = read(section, pos)
                offset += base_offset
            key_length = section[pos]
            if key_length < 0x80:
                key_length = one[key_length]
                pos += 1
            else:
                key_length, pos = read(section, pos)
            if key_length < 0:
                key = _null(key_length)
            elif pos + key_length > end:
                raise CorruptRecordError("key overruns its record")
            else:
                key = section[pos : pos + key_length]
                pos += key_length
            if keys_only:  # is the value null? -1 is the single byte 0x01
                append((offset, key, section[pos] == 1))
                pos = end
                continue
            value_length, pos = read(section, pos)
            if value_length >= 0:
                stop = pos + value_length
                if stop > end:
                    raise CorruptRecordError("value overruns its record")
                value = section[pos:stop]
                pos = stop
            else:
                value = _null(value_length)
            if layout is not None:  # matched inline: this is a queue's read-back path
                if section[pos] != count_byte:
                    raise LayoutMismatchError("another number of headers")
                pos += 1
                extra = []
                for prefix, prefix_size in expected:
                    stop = pos + prefix_size
                    if section[pos:stop] != prefix:
                        raise LayoutMismatchError(f"header {prefix!r} expected")
                    value_length, pos = read(section, stop)
                    stop = pos + value_length
                    if value_length < 0 or stop > end:
                        raise LayoutMismatchError("null or overlong header value")
                    extra.append(section[pos:stop])
                    pos = stop
            elif headers:
                extra, pos = _headers(section, pos, end)
            else:
                extra, pos = (), end
            if pos != end:
                raise CorruptRecordError(f"record length {length} does not match its fields")
            append((offset, timestamp, key, value, extra))
    except IndexError:
        raise CorruptRecordError(f"records end inside record at byte {pos}") from None
    if pos != size:
        raise CorruptRecordError(
            f"batch declares {header.record_count} records but has {size - pos} extra bytes"
        )
    if header.log_append_time and not keys_only:  # rare: fixed afterwards, the loop stays lean
        fixed = header.max_timestamp
        return [(offset, fixed, key, value, extra) for offset, _, key, value, extra in rows]
    return rows


_ONE = tuple((byte >> 1) ^ -(byte & 1) for byte in range(0x80))  # one-byte zigzag varints


def _null(length: int) -> None:
    """A negative field length is null when it is -1, and corrupt otherwise."""
    if length != -1:
        raise CorruptRecordError(f"negative length {length}")


def iter_key_values(
    batches: Iterable[tuple[BatchHeader, Buffer]], from_offset: int = 0
) -> Iterator[tuple[bytes | None, bytes | None]]:
    """(key, value) of every data record at or after ``from_offset`` in ``batches`` (what
    ``PartitionLog.iter_batches`` yields), skipping control batches and headers: what a
    replay of an internal log (consumer offsets, queue acks) needs, without Record objects."""
    for header, batch in batches:
        if header.is_control or not header.record_count:
            continue
        rows = decode_records(records_section(batch, header), header, headers=False)
        for offset, _timestamp, key, value, _headers in rows:
            if offset >= from_offset:
                yield key, value


def records_section(batch: Buffer, header: BatchHeader | None = None) -> bytes:
    """The uncompressed records bytes of the batch at the start of ``batch``."""
    view = memoryview(batch)
    if header is None:
        if len(view) < HEADER_SIZE:
            raise CorruptRecordError(f"batch of {len(view)} bytes is shorter than its header")
        header = parse_header(view)
    if header.magic != MAGIC_V2:
        raise UnsupportedMagicError(f"message format v{header.magic} is not supported")
    if header.batch_length < HEADER_SIZE - LOG_OVERHEAD or header.size > len(view):
        raise CorruptRecordError(f"batch length {header.batch_length} is invalid")
    body = view[HEADER_SIZE : header.size]
    if header.compression and body:  # an empty batch has no compressed frame at all
        return decompress(header.compression, body)
    return bytes(body)


def iter_records(batch: Buffer) -> Iterator[Record]:
    """Decode the records of the one v2 batch at the start of ``batch`` (CRC is not checked).

    Header, decompression and record errors raise before the first record is returned.
    """
    view = memoryview(batch)
    if len(view) < HEADER_SIZE:
        raise CorruptRecordError(f"batch of {len(view)} bytes is shorter than its header")
    header = parse_header(view)
    return _iter_records(records_section(view, header), header)


def _iter_records(section: bytes, header: BatchHeader) -> Iterator[Record]:
    for offset, timestamp, key, value, pairs in decode_records(section, header):
        if pairs:  # most records have none: skip building an empty tuple again
            try:
                pairs = tuple((name.decode(), header_value) for name, header_value in pairs)
            except UnicodeDecodeError as exc:
                raise CorruptRecordError("header key is not UTF-8") from exc
        yield Record(offset, timestamp, key, value, pairs)


def iter_batches(buf: Buffer, *, strict: bool = True) -> Iterator[tuple[BatchHeader, memoryview]]:
    """Walk consecutive batches, yielding each header with a view of its bytes.

    A truncated last batch raises CorruptRecordError, or ends the walk when ``strict`` is false
    (fetch responses may legitimately end with a partial batch).
    """
    view = memoryview(buf)
    end = len(view)
    pos = 0
    while pos < end:
        if end - pos < HEADER_SIZE:
            if strict:
                raise CorruptRecordError(f"truncated batch header at byte {pos}")
            return
        header = parse_header(view, pos)
        if header.batch_length < HEADER_SIZE - LOG_OVERHEAD:
            raise CorruptRecordError(f"batch length {header.batch_length} at byte {pos} is invalid")
        if pos + header.size > end:
            if strict:
                raise CorruptRecordError(f"truncated batch at byte {pos}")
            return
        yield header, view[pos : pos + header.size]
        pos += header.size


def iter_batch_records(buf: Buffer, *, strict: bool = True) -> Iterator[tuple[BatchHeader, Record]]:
    """Every record of every batch in ``buf``, paired with its batch header."""
    for header, batch in iter_batches(buf, strict=strict):
        for record in _iter_records(records_section(batch, header), header):
            yield header, record
