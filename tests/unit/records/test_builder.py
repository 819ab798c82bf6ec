"""The one record writer: pack_batch (a sealed header around encoded records), rebuild_batch."""

from __future__ import annotations

from dari.records import (
    TIMESTAMP_TYPE_MASK,
    build_batch,
    iter_records,
    pack_batch,
    parse_header,
    rebuild_batch,
    records_section,
    validate,
)


def test_pack_batch_is_what_build_batch_writes() -> None:
    built = build_batch(
        [(b"k", b"v", (), 5), (None, b"w", (), 9)],
        base_offset=3,
        producer_id=7,
        producer_epoch=1,
        base_sequence=4,
        partition_leader_epoch=2,
        timestamp_type_log_append=True,
        now_ms=11,
    )
    header = parse_header(built)
    packed = pack_batch(
        records_section(built),
        record_count=2,
        last_offset_delta=1,
        base_timestamp=5,
        max_timestamp=11,
        attributes=TIMESTAMP_TYPE_MASK,
        base_offset=3,
        producer_id=7,
        producer_epoch=1,
        base_sequence=4,
        partition_leader_epoch=2,
    )
    assert packed == built
    assert validate(packed) == [header]


def test_pack_batch_defaults_describe_a_plain_batch() -> None:
    section = records_section(build_batch([b"a", b"b", b"c"], now_ms=1))
    packed = pack_batch(
        section, record_count=3, last_offset_delta=2, base_timestamp=1, max_timestamp=1
    )
    (header,) = validate(packed)
    assert (header.base_offset, header.producer_id, header.attributes) == (0, -1, 0)
    assert [r.value for r in iter_records(packed)] == [b"a", b"b", b"c"]


def test_rebuild_batch_keeps_the_batch_identity() -> None:
    original = build_batch(
        [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")],
        base_offset=40,
        producer_id=9,
        producer_epoch=2,
        base_sequence=17,
        partition_leader_epoch=5,
        is_transactional=True,
        timestamp_type_log_append=True,
        now_ms=1234,
    )
    header = parse_header(original)
    survivors = [r for r in iter_records(original) if r.key != b"b"]
    (rebuilt,) = validate(rebuild_batch(header, survivors))
    assert rebuilt._replace(batch_length=0, crc=0, record_count=0) == header._replace(
        batch_length=0, crc=0, record_count=0
    )
    assert rebuilt.record_count == 2
    assert [r.offset for r in iter_records(rebuild_batch(header, survivors))] == [40, 42]
    (empty,) = validate(rebuild_batch(header, []))
    assert (empty.record_count, empty.last_offset) == (0, 42)
