"""Domain errors of the streams model; each protocol maps them to its own error codes."""

from __future__ import annotations

from enum import Enum


class StreamsError(Exception):
    """Root of the errors a client's request can cause in the streams domain."""


class UnknownTopicError(StreamsError):
    pass


class TopicExistsError(StreamsError):
    pass


class InvalidTopicError(StreamsError):
    pass


class InvalidPartitionsError(StreamsError):
    pass


class InvalidConfigError(StreamsError):
    pass


class InvalidReplicationFactorError(StreamsError):
    pass


class OffsetOutOfRangeError(StreamsError):
    """A read or DeleteRecords offset outside the partition's [log start, log end]."""


class PolicyViolationError(StreamsError):
    """The topic's cleanup policy forbids the operation (DeleteRecords on a compacted topic)."""


class AppendError(Enum):
    """Why ``Partition.append`` refused a produce. A value, not an exception: refusals are part
    of a produce answer (one per partition), and the hot path should not raise for them."""

    INVALID_RECORD = "invalid_record"  # no batches, or a keyless record on a compacted topic
    MESSAGE_TOO_LARGE = "message_too_large"
    UNSUPPORTED_FORMAT = "unsupported_for_message_format"  # a magic other than v2
    CORRUPT_RECORD = "corrupt_message"
    OUT_OF_ORDER_SEQUENCE = "out_of_order_sequence_number"
    INVALID_PRODUCER_EPOCH = "invalid_producer_epoch"


class ProducerStateError(StreamsError):
    """A batch the idempotent-producer state refuses; ``reason`` says why."""

    def __init__(self, reason: AppendError, message: str) -> None:
        super().__init__(message)
        self.reason = reason
