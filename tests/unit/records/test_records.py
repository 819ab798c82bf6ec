"""RecordBatch v2: build, validate, decode, and the broker's in-place header rewrites."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dari.records import (
    HEADER_SIZE,
    Codec,
    ControlType,
    CorruptRecordError,
    HeaderLayout,
    LayoutMismatchError,
    NewRecord,
    Record,
    UnsupportedCompressionError,
    UnsupportedMagicError,
    assign_offsets,
    build_batch,
    build_control_batch,
    control_type,
    decode_records,
    iter_batch_records,
    iter_batches,
    iter_key_values,
    iter_records,
    parse_header,
    records_section,
    scan_keys,
    seal_crc,
    valid_prefix,
    validate,
)

NOW = 1_700_000_000_000

maybe_bytes = st.none() | st.binary(max_size=64)
headers = st.lists(st.tuples(st.text(max_size=12), maybe_bytes), max_size=4)
timestamps = st.none() | st.integers(min_value=-1, max_value=2**45)
new_records = st.lists(
    st.builds(
        NewRecord,
        key=maybe_bytes,
        value=maybe_bytes,
        headers=headers,
        timestamp=timestamps,
        offset_delta=st.none(),
    ),
    min_size=1,
    max_size=30,
)


def expected(records: list[NewRecord], base_offset: int, log_append: bool = False) -> list[Record]:
    return [
        Record(
            offset=base_offset + i,
            timestamp=NOW if log_append or r.timestamp is None else r.timestamp,
            key=r.key,
            value=r.value,
            headers=tuple(r.headers),
        )
        for i, r in enumerate(records)
    ]


@pytest.mark.parametrize("codec", list(Codec), ids=lambda c: c.name)
@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    records=new_records,
    base_offset=st.integers(min_value=0, max_value=2**62),
    log_append=st.booleans(),
)
def test_any_records_round_trip(
    codec: Codec, records: list[NewRecord], base_offset: int, log_append: bool
) -> None:
    batch = build_batch(
        records,
        base_offset=base_offset,
        compression=codec,
        timestamp_type_log_append=log_append,
        now_ms=NOW,
    )
    (header,) = validate(batch)
    assert header.compression == codec
    assert header.record_count == len(records)
    assert header.base_offset == base_offset
    assert header.next_offset == base_offset + len(records)
    assert header.log_append_time == log_append
    assert header.size == len(batch)
    assert list(iter_records(batch)) == expected(records, base_offset, log_append)


def test_header_fields_are_written() -> None:
    batch = build_batch(
        [(b"k", b"v", (), 1000), (b"k2", b"v2", (), 3000), (None, b"v3", (), 2000)],
        base_offset=7,
        compression=Codec.LZ4,
        producer_id=42,
        producer_epoch=3,
        base_sequence=10,
        is_transactional=True,
        partition_leader_epoch=5,
    )
    header = parse_header(batch)
    assert header.base_offset == 7
    assert header.partition_leader_epoch == 5
    assert header.magic == 2
    assert header.last_offset_delta == 2
    assert (header.base_timestamp, header.max_timestamp) == (1000, 3000)
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == (42, 3, 10)
    assert header.is_transactional and not header.is_control
    assert not header.log_append_time
    assert header.compression == Codec.LZ4


def test_convenient_inputs() -> None:
    batch = build_batch(
        [
            b"bare value",
            "text value",
            ("key", "value"),
            ("k", None, {"h1": "v1", "h2": None}),
            NewRecord(value=bytearray(b"ba"), headers=[(b"raw", memoryview(b"mv"))]),
        ],
        now_ms=NOW,
    )
    assert [(r.key, r.value, r.headers) for r in iter_records(batch)] == [
        (None, b"bare value", ()),
        (None, b"text value", ()),
        (b"key", b"value", ()),
        (b"k", None, (("h1", b"v1"), ("h2", None))),
        (None, b"ba", (("raw", b"mv"),)),
    ]
    assert {r.timestamp for r in iter_records(batch)} == {NOW}


def test_missing_timestamps_default_to_the_clock() -> None:
    batch = build_batch([b"x"])
    (record,) = iter_records(batch)
    assert record.timestamp > NOW


def test_negative_timestamp_deltas() -> None:
    batch = build_batch([(None, b"a", (), 5000), (None, b"b", (), 10), (None, b"c", (), 2**40)])
    header = parse_header(batch)
    assert (header.base_timestamp, header.max_timestamp) == (5000, 2**40)
    assert [r.timestamp for r in iter_records(batch)] == [5000, 10, 2**40]


def test_log_append_time_gives_every_record_the_max_timestamp() -> None:
    batch = build_batch(
        [(None, b"a", (), 1), (None, b"b", (), 2)], timestamp_type_log_append=True, now_ms=NOW
    )
    header = parse_header(batch)
    assert header.log_append_time and header.max_timestamp == NOW
    assert [r.timestamp for r in iter_records(batch)] == [NOW, NOW]


def test_records_with_gaps_keep_their_offsets() -> None:
    """Compaction rewrites a batch with some records gone and offsets unchanged."""
    original = build_batch([(f"k{i % 3}", f"v{i}") for i in range(6)], base_offset=100, now_ms=NOW)
    header = parse_header(original)
    survivors = [r for r in iter_records(original) if r.offset >= 103]
    rebuilt = build_batch(
        survivors,
        base_offset=header.base_offset,
        last_offset_delta=header.last_offset_delta,
        compression=Codec.ZSTD,
    )
    (rebuilt_header,) = validate(rebuilt)
    assert rebuilt_header.next_offset == header.next_offset
    assert rebuilt_header.record_count == 3
    assert list(iter_records(rebuilt)) == survivors


@pytest.mark.parametrize("codec", list(Codec), ids=lambda c: c.name)
def test_empty_batch_keeps_its_offset_range(codec: Codec) -> None:
    batch = build_batch(
        [], base_offset=50, last_offset_delta=4, compression=codec, producer_id=9, now_ms=NOW
    )
    (header,) = validate(batch)
    assert header.record_count == 0
    assert header.next_offset == 55
    assert header.size == HEADER_SIZE
    assert list(iter_records(batch)) == []


def test_builder_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="last_offset_delta"):
        build_batch([])
    with pytest.raises(ValueError, match="increase"):
        build_batch([NewRecord(value=b"a", offset_delta=2), NewRecord(value=b"b", offset_delta=1)])
    with pytest.raises(ValueError, match="increase"):
        build_batch([NewRecord(value=b"a", offset_delta=-1)])
    with pytest.raises(ValueError, match="below"):
        build_batch([b"a", b"b"], last_offset_delta=0)
    with pytest.raises(UnsupportedCompressionError):
        build_batch([b"a"], compression=6)
    with pytest.raises(TypeError):
        build_batch([(1, b"v")])


@pytest.mark.parametrize("kind", list(ControlType))
def test_control_batch(kind: ControlType) -> None:
    batch = build_control_batch(kind, producer_id=7, producer_epoch=2, coordinator_epoch=3)
    (header,) = validate(batch)
    assert header.is_control and header.is_transactional
    assert (header.producer_id, header.producer_epoch) == (7, 2)
    (record,) = iter_records(batch)
    assert control_type(record) == kind
    assert record.value == b"\x00\x00\x00\x00\x00\x03"


# --- validate / valid_prefix ------------------------------------------------------------------


def three_batches() -> bytes:
    return b"".join(
        build_batch([(b"k", b"value %d" % i)] * (i + 1), compression=c, now_ms=NOW)
        for i, c in enumerate([Codec.NONE, Codec.GZIP, Codec.SNAPPY])
    )


def test_validate_returns_every_header() -> None:
    headers = validate(three_batches())
    assert [h.record_count for h in headers] == [1, 2, 3]


def test_validate_rejects_any_flipped_byte_under_the_crc() -> None:
    batch = build_batch([(b"key", b"value", [("h", b"v")]), (None, b"v2")], now_ms=NOW)
    for pos in range(len(batch)):
        flipped = bytearray(batch)
        flipped[pos] ^= 0x40
        if pos < 8 or 12 <= pos < 16:  # base offset and leader epoch are outside the CRC
            assert len(validate(flipped)) == 1
        else:
            with pytest.raises(CorruptRecordError):
                validate(flipped)


def test_validate_rejects_old_magic() -> None:
    batch = bytearray(build_batch([b"x"]))
    batch[16] = 1
    with pytest.raises(UnsupportedMagicError):
        validate(batch)


def test_validate_rejects_every_truncation() -> None:
    data = three_batches()
    ends = {0}
    for header in validate(data):
        ends.add(max(ends) + header.size)
    for cut in range(len(data)):
        if cut in ends:
            assert sum(h.size for h in validate(data[:cut])) == cut
            continue
        with pytest.raises(CorruptRecordError):
            validate(data[:cut])
        length, headers = valid_prefix(data[:cut])
        assert length == max(e for e in ends if e <= cut)
        assert sum(h.size for h in headers) == length


def test_valid_prefix_stops_at_a_corrupt_batch() -> None:
    data = bytearray(three_batches())
    first, _, _ = validate(data)
    data[first.size + 40] ^= 1
    length, headers = valid_prefix(data)
    assert length == first.size
    assert headers == [first]


# --- assign_offsets ---------------------------------------------------------------------------


def test_assign_offsets_renumbers_and_keeps_crc_valid() -> None:
    buf = bytearray(three_batches())
    headers = validate(buf)
    next_offset = assign_offsets(buf, headers, base_offset=1000, leader_epoch=4)
    assert next_offset == 1006
    rewritten = validate(buf)
    assert [h.base_offset for h in rewritten] == [1000, 1001, 1003]
    assert {h.partition_leader_epoch for h in rewritten} == {4}
    assert [h.crc for h in rewritten] == [h.crc for h in headers]
    records = [r for _, r in iter_batch_records(buf)]
    assert [r.offset for r in records] == list(range(1000, 1006))
    assert {r.timestamp for r in records} == {NOW}


def test_assign_offsets_with_log_append_time_reseals_crc() -> None:
    buf = bytearray(three_batches())
    headers = validate(buf)
    assign_offsets(buf, headers, base_offset=0, append_time=NOW + 5)
    rewritten = validate(buf)  # raises if any CRC were stale
    assert all(h.log_append_time and h.max_timestamp == NOW + 5 for h in rewritten)
    assert [h.compression for h in rewritten] == [h.compression for h in headers]
    assert {r.timestamp for _, r in iter_batch_records(buf)} == {NOW + 5}


# --- iteration over many batches and corrupt contents ----------------------------------------


def test_iter_batch_records_pairs_records_with_headers() -> None:
    data = three_batches()
    pairs = list(iter_batch_records(data))
    assert [h.compression for h, _ in pairs] == [0, 1, 1, 2, 2, 2]
    assert [r.value for _, r in pairs][-1] == b"value 2"


def test_iter_batches_strict_and_lenient_tail() -> None:
    data = three_batches()
    with pytest.raises(CorruptRecordError):
        list(iter_batches(data[:-1]))
    assert len(list(iter_batches(data[:-1], strict=False))) == 2
    assert len(list(iter_batch_records(data[:-1], strict=False))) == 3


def test_truncated_single_batch_is_corrupt() -> None:
    batch = build_batch([b"abc"] * 3)
    for cut in (10, HEADER_SIZE, len(batch) - 1):
        with pytest.raises(CorruptRecordError):
            list(iter_records(batch[:cut]))


def test_record_count_mismatch_is_corrupt() -> None:
    batch = bytearray(build_batch([b"a", b"b"]))
    batch[60] = 3  # recordCount: claims one record more than there is
    seal_crc(batch)
    with pytest.raises(CorruptRecordError):
        list(iter_records(batch))
    batch[60] = 1  # one record fewer: the second becomes trailing garbage
    seal_crc(batch)
    with pytest.raises(CorruptRecordError):
        list(iter_records(batch))


@settings(max_examples=300)
@given(
    codec=st.sampled_from([Codec.NONE, Codec.GZIP]),
    mutations=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1),
)
def test_mangled_records_never_escape_as_other_errors(
    codec: Codec, mutations: list[tuple[int, int]]
) -> None:
    batch = bytearray(
        build_batch([(b"key", b"value", [("h", b"x")]), (None, None), (b"k" * 200, b"v")])
    )
    for where, byte in mutations:
        batch[HEADER_SIZE + where % (len(batch) - HEADER_SIZE)] = byte
    seal_crc(batch)
    try:
        for record in iter_records(batch):
            assert isinstance(record, Record)
    except CorruptRecordError:
        pass


# --- decode_records: the one reader and its fast variants -----------------------------------


def test_decode_records_gives_plain_rows_with_raw_header_names() -> None:
    batch = build_batch(
        [(b"k", b"v", [("h", b"x")], NOW + 3), (None, None, (), NOW + 5)],
        base_offset=10,
        now_ms=NOW,
    )
    header = parse_header(batch)
    rows = decode_records(records_section(batch), header)
    assert rows == [(10, NOW + 3, b"k", b"v", ((b"h", b"x"),)), (11, NOW + 5, None, None, ())]
    assert decode_records(records_section(batch), header, headers=False) == [
        (10, NOW + 3, b"k", b"v", ()),
        (11, NOW + 5, None, None, ()),
    ]


def test_key_scan_reports_tombstones_without_copying_values() -> None:
    batch = build_batch([(b"a", b"x" * 500), (b"b", None), (None, b"")], now_ms=NOW)
    assert scan_keys(records_section(batch), parse_header(batch)) == [
        (0, b"a", False),
        (1, b"b", True),
        (2, None, False),
    ]


@given(
    records=new_records, codec=st.sampled_from([Codec.NONE, Codec.GZIP]), log_append=st.booleans()
)
@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
def test_every_variant_agrees_with_iter_records(
    records: list[NewRecord], codec: Codec, log_append: bool
) -> None:
    batch = build_batch(
        records,
        base_offset=7,
        compression=codec,
        timestamp_type_log_append=log_append,
        now_ms=NOW,
    )
    header = parse_header(batch)
    section = records_section(batch, header)
    decoded = list(iter_records(batch))
    full = decode_records(section, header)
    assert [(r.offset, r.timestamp, r.key, r.value) for r in decoded] == [row[:4] for row in full]
    assert [r.headers for r in decoded] == [
        tuple((name.decode(), value) for name, value in row[4]) for row in full
    ]
    assert scan_keys(section, header) == [(r.offset, r.key, r.value is None) for r in decoded]
    assert list(iter_key_values([(header, memoryview(batch))], 9)) == [
        (r.key, r.value) for r in decoded if r.offset >= 9
    ]


def test_header_layout_gives_the_values_of_known_headers() -> None:
    layout = HeaderLayout(("first", "second"))
    batch = build_batch(
        [
            (None, b"body", [("first", b"1"), ("second", b"")]),
            (b"k", None, [("first", b"x"), ("second", b"y")]),
        ],
        now_ms=NOW,
    )
    rows = decode_records(records_section(batch), parse_header(batch), layout=layout)
    assert [(k, v, h) for _o, _t, k, v, h in rows] == [
        (None, b"body", [b"1", b""]),
        (b"k", None, [b"x", b"y"]),
    ]
    assert layout.prefixes == (b"\x0afirst", b"\x0csecond")


@pytest.mark.parametrize(
    "headers",
    [
        [("first", b"1")],  # too few
        [("second", b"1"), ("first", b"2")],  # other order
        [("first", b"1"), ("secone", b"2")],  # another name
        [("first", b"1"), ("second", None)],  # a null value
        [("first", b"1"), ("second", b"2"), ("third", b"3")],  # too many
    ],
)
def test_header_layout_mismatch_is_reported_not_corrupt(headers) -> None:
    layout = HeaderLayout(("first", "second"))
    batch = build_batch([(None, b"body", headers)], now_ms=NOW)
    with pytest.raises(LayoutMismatchError):
        decode_records(records_section(batch), parse_header(batch), layout=layout)


def test_iter_key_values_skips_control_batches_and_records_below_the_start() -> None:
    data = (
        build_batch([(b"a", b"1"), (b"b", b"2")], base_offset=0, now_ms=NOW)
        + build_control_batch(ControlType.COMMIT, producer_id=1, producer_epoch=0, base_offset=2)
        + build_batch([(b"c", None)], base_offset=3, now_ms=NOW)
    )
    assert list(iter_key_values(iter_batches(data))) == [(b"a", b"1"), (b"b", b"2"), (b"c", None)]
    assert list(iter_key_values(iter_batches(data), 1)) == [(b"b", b"2"), (b"c", None)]


@pytest.mark.parametrize("decode", [decode_records, scan_keys])
def test_decoding_rejects_a_key_overrunning_its_record(decode) -> None:
    batch = bytearray(build_batch([(b"key", b"value")], now_ms=NOW))
    # record: length, attributes, timestamp delta, offset delta, key length (3 -> 30)
    batch[HEADER_SIZE + 4] = 60
    seal_crc(batch)
    with pytest.raises(CorruptRecordError):
        decode(records_section(batch), parse_header(batch))
