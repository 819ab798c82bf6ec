"""The log engine: segmented append-only logs of Kafka RecordBatch v2 bytes.

``PartitionLog`` is one log (a directory of segments with sparse offset and time indexes,
retention, recovery); ``LogStore`` owns the data directory; ``FlushScheduler`` turns the
per-log flush policy into group-committed fsyncs off the event loop; ``LogCleaner``
compacts logs with cleanup.policy "compact" (``run_cleaner`` schedules it). Imports only
``dari.records``. ``atomic_write`` is how every layer replaces a small state file.
"""

from dari.storage.compaction import CleanStats, LogCleaner
from dari.storage.config import CLEANUP_POLICIES, FLUSH_POLICIES, LogConfig
from dari.storage.files import atomic_write, fsync_dir
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
    clean_due_logs,
    maintain,
    run_cleaner,
    run_maintenance,
)

__all__ = [
    "CLEANUP_POLICIES",
    "FLUSH_POLICIES",
    "AppendInfo",
    "CleanStats",
    "DataDirLockedError",
    "FlushScheduler",
    "LogCleaner",
    "LogClosedError",
    "LogConfig",
    "LogStore",
    "OffsetOutOfRangeError",
    "PartitionLog",
    "atomic_write",
    "clean_due_logs",
    "fsync_dir",
    "maintain",
    "run_cleaner",
    "run_maintenance",
]
