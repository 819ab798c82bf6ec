"""Delete policy: which closed segments retention removes (Kafka's cleanup.policy=delete).

Only a prefix of the closed segments is ever deleted, so the log stays contiguous; the active
segment is never deleted here (a time-based roll turns it into a closed one first). Retention by
time and size applies only when the cleanup policy contains "delete"; segments below the log
start offset (DeleteRecords) go whatever the policy.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from enum import Enum

from dari.storage.config import LogConfig
from dari.storage.segment import LogSegment


class Reason(Enum):
    LOG_START = "below log start offset"
    TIME = "retention.ms"
    SIZE = "retention.bytes"


def segment_timestamp(segment: LogSegment) -> int:
    """The segment's largest record timestamp, or its file's mtime when it has none (Kafka)."""
    if segment.max_timestamp >= 0:
        return segment.max_timestamp
    return int(os.stat(segment.log_path).st_mtime * 1000)


def segments_to_delete(
    segments: Sequence[LogSegment],
    config: LogConfig,
    now_ms: int,
    log_start_offset: int,
    total_bytes: int,
) -> list[tuple[LogSegment, Reason]]:
    """The oldest closed segments that are entirely below the log start offset, older than
    retention.ms, or whose removal keeps the log at or above retention.bytes (the last two
    only under cleanup.policy "delete")."""
    doomed: list[tuple[LogSegment, Reason]] = []
    remaining = total_bytes
    by_time = config.delete and config.retention_ms >= 0
    by_size = config.delete and config.retention_bytes >= 0
    for segment in segments[:-1]:
        if segment.next_offset <= log_start_offset:
            reason = Reason.LOG_START
        elif by_time and now_ms - segment_timestamp(segment) > config.retention_ms:
            reason = Reason.TIME
        elif by_size and remaining - segment.size >= config.retention_bytes:
            reason = Reason.SIZE
        else:
            break
        doomed.append((segment, reason))
        remaining -= segment.size
    return doomed
