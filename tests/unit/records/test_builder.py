"""The one record writer: pack_batch wraps an encoded records section in a sealed header."""

from __future__ import annotations

from dari.records import (
    TIMESTAMP_TYPE_MASK,
    build_batch,
    iter_records,
    pack_batch,
    parse_header,
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
