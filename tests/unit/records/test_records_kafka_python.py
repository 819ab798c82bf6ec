"""Cross-check batches against kafka-python's independent RecordBatch v2 encoder and decoder.

kafka-python needs the python-snappy binding for snappy; the fixture below gives it cramjam's
snappy implementation under that module name, so its own xerial framing code runs unchanged.
"""

from __future__ import annotations

import cramjam
import kafka.codec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from dari.records import (
    Codec,
    ControlType,
    NewRecord,
    Record,
    assign_offsets,
    build_batch,
    build_control_batch,
    iter_records,
    parse_header,
    validate,
)

NOW = 1_700_000_000_000


class _CramjamSnappy:
    """The two calls kafka-python makes on the python-snappy module."""

    @staticmethod
    def compress(data: bytes) -> bytes:
        return bytes(cramjam.snappy.compress_raw(data))

    @staticmethod
    def decompress(data: bytes) -> bytes:
        return bytes(cramjam.snappy.decompress_raw(data))


@pytest.fixture(autouse=True)
def kafka_python_snappy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kafka.codec, "snappy", _CramjamSnappy)


def theirs_build(
    records: list[NewRecord],
    codec: int,
    producer: tuple[int, int, int] = (-1, -1, -1),
    transactional: bool = False,
) -> bytes:
    producer_id, epoch, sequence = producer
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=codec,
        is_transactional=transactional,
        producer_id=producer_id,
        producer_epoch=epoch,
        base_sequence=sequence,
        batch_size=1 << 24,
    )
    for offset, r in enumerate(records):
        assert builder.append(offset, r.timestamp, r.key, r.value, list(r.headers)) is not None
    return bytes(builder.build())


def theirs_parse(batch: bytes) -> list[Record]:
    parsed = DefaultRecordBatch(bytearray(batch))
    assert parsed.validate_crc()
    return [Record(r.offset, r.timestamp, r.key, r.value, tuple(r.headers)) for r in parsed]


# Compressible values, so kafka-python keeps the codec instead of falling back to none.
values = st.binary(max_size=40).map(lambda b: b * 8 + b"x" * 200)
records_strategy = st.lists(
    st.builds(
        NewRecord,
        key=st.none() | st.binary(max_size=16),
        value=values,
        headers=st.lists(st.tuples(st.text(max_size=8), st.none() | st.binary(max_size=8))),
        timestamp=st.integers(min_value=0, max_value=2**42),
        offset_delta=st.none(),
    ),
    min_size=1,
    max_size=20,
)
codecs = pytest.mark.parametrize("codec", list(Codec), ids=lambda c: c.name)


@codecs
@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=50)
@given(records=records_strategy)
def test_theirs_to_ours(codec: Codec, records: list[NewRecord]) -> None:
    batch = theirs_build(records, codec)
    (header,) = validate(batch)
    assert header.compression == codec
    assert list(iter_records(batch)) == theirs_parse(batch)
    assert [(r.key, r.value, list(r.headers), r.timestamp) for r in iter_records(batch)] == [
        (r.key, r.value, r.headers, r.timestamp) for r in records
    ]


@codecs
@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=50)
@given(records=records_strategy, base_offset=st.integers(0, 2**40))
def test_ours_to_theirs(codec: Codec, records: list[NewRecord], base_offset: int) -> None:
    batch = build_batch(records, base_offset=base_offset, compression=codec)
    parsed = DefaultRecordBatch(bytearray(batch))
    assert parsed.compression_type == codec
    assert parsed.base_offset == base_offset
    assert parsed.next_offset == base_offset + len(records)
    assert theirs_parse(batch) == list(iter_records(batch))


@codecs
def test_identical_bytes_when_uncompressed_or_deterministic(codec: Codec) -> None:
    """Same input, same encoding: both sides agree byte for byte on the record section."""
    records = [
        NewRecord(b"k%d" % i, b"value" * 30, [("trace", b"abc"), ("n", None)], NOW + i)
        for i in range(10)
    ]
    records.append(NewRecord(None, None, [], NOW - 5))
    ours = build_batch(records, compression=codec)
    theirs = theirs_build(records, codec)
    if codec in (Codec.NONE, Codec.LZ4, Codec.ZSTD):  # same library, same settings
        assert ours == theirs
    assert list(iter_records(ours)) == list(iter_records(theirs))


def test_their_snappy_is_xerial_framed_and_we_read_it() -> None:
    value = bytes(range(256)) * 400  # several 32 KiB xerial blocks
    batch = theirs_build([NewRecord(b"k", value, [], NOW)], Codec.SNAPPY)
    assert batch[61:69] == b"\x82SNAPPY\x00"
    (record,) = iter_records(batch)
    assert record.value == value


def test_producer_state_and_transactional_flag() -> None:
    records = [NewRecord(b"k", b"v" * 300, [], NOW)] * 3
    batch = theirs_build(records, Codec.GZIP, producer=(77, 2, 40), transactional=True)
    header = parse_header(batch)
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == (77, 2, 40)
    assert header.is_transactional and header.last_offset_delta == 2

    ours = build_batch(
        records, producer_id=77, producer_epoch=2, base_sequence=40, is_transactional=True
    )
    parsed = DefaultRecordBatch(bytearray(ours))
    assert (parsed.producer_id, parsed.producer_epoch, parsed.base_sequence) == (77, 2, 40)
    assert parsed.is_transactional and parsed.last_sequence == 42


def test_assigned_log_append_time_is_what_kafka_python_reads() -> None:
    buf = bytearray(theirs_build([NewRecord(None, b"v" * 300, [], 5)] * 2, Codec.LZ4))
    assign_offsets(buf, validate(buf), base_offset=500, leader_epoch=1, append_time=NOW)
    parsed = DefaultRecordBatch(bytearray(buf))
    assert parsed.validate_crc()
    assert parsed.timestamp_type == 1 and parsed.leader_epoch == 1
    assert [(r.offset, r.timestamp) for r in parsed] == [(500, NOW), (501, NOW)]
    assert [(r.offset, r.timestamp) for r in iter_records(buf)] == [(500, NOW), (501, NOW)]


@pytest.mark.parametrize("kind", list(ControlType))
def test_control_batch_is_a_kafka_python_control_record(kind: ControlType) -> None:
    batch = build_control_batch(kind, producer_id=5, producer_epoch=1, base_offset=9)
    parsed = DefaultRecordBatch(bytearray(batch))
    assert parsed.validate_crc() and parsed.is_control_batch and parsed.is_transactional
    (record,) = list(parsed)
    assert record.offset == 9
    assert record.commit == (kind == ControlType.COMMIT)
