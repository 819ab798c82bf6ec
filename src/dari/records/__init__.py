"""Kafka RecordBatch v2: headers, CRC32C, compression codecs, decoding and building batches.

This package imports nothing else from dari; storage and both protocols build on it.
"""

from dari.records.batch import (
    CONTROL_MASK,
    HEADER_SIZE,
    LOG_OVERHEAD,
    MAGIC_V2,
    TIMESTAMP_TYPE_MASK,
    TRANSACTIONAL_MASK,
    BatchHeader,
    CorruptRecordError,
    UnsupportedMagicError,
    assign_offsets,
    compute_crc,
    pack_header_into,
    parse_header,
    peek_size,
    seal_crc,
    valid_prefix,
    validate,
)
from dari.records.builder import (
    ControlType,
    NewRecord,
    build_batch,
    build_control_batch,
    control_type,
)
from dari.records.compression import Codec, UnsupportedCompressionError, compress, decompress
from dari.records.records import (
    Record,
    iter_batch_records,
    iter_batches,
    iter_records,
    records_section,
)

__all__ = [
    "CONTROL_MASK",
    "HEADER_SIZE",
    "LOG_OVERHEAD",
    "MAGIC_V2",
    "TIMESTAMP_TYPE_MASK",
    "TRANSACTIONAL_MASK",
    "BatchHeader",
    "Codec",
    "ControlType",
    "CorruptRecordError",
    "NewRecord",
    "Record",
    "UnsupportedCompressionError",
    "UnsupportedMagicError",
    "assign_offsets",
    "build_batch",
    "build_control_batch",
    "compress",
    "compute_crc",
    "control_type",
    "decompress",
    "iter_batch_records",
    "iter_batches",
    "iter_records",
    "pack_header_into",
    "parse_header",
    "peek_size",
    "records_section",
    "seal_crc",
    "valid_prefix",
    "validate",
]
