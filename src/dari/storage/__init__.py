"""The log engine: segmented append-only logs of Kafka RecordBatch v2 bytes.

``PartitionLog`` is one log (a directory of segments with sparse offset and time indexes,
retention, recovery); ``LogStore`` owns the data directory; ``FlushScheduler`` turns the
per-log flush policy into group-committed fsyncs off the event loop. Imports only
``dari.records``.
"""

from dari.storage.config import FLUSH_POLICIES, LogConfig
from dari.storage.log import (
    AppendInfo,
    LogClosedError,
    OffsetOutOfRangeError,
    PartitionLog,
)
from dari.storage.store import (
    DataDirLockedError,
    FlushScheduler,
    LogStore,
    maintain,
    run_maintenance,
)

__all__ = [
    "FLUSH_POLICIES",
    "AppendInfo",
    "DataDirLockedError",
    "FlushScheduler",
    "LogClosedError",
    "LogConfig",
    "LogStore",
    "OffsetOutOfRangeError",
    "PartitionLog",
    "maintain",
    "run_maintenance",
]
