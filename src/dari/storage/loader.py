"""Open a partition directory: find its segments and recover whatever a crash left behind.

Derived data is never trusted after a crash (Kafka ``LogLoader``): without the clean-shutdown
marker every segment at or after the recovery point is re-validated batch by batch (length,
magic, CRC32C, contiguous offsets), a torn or corrupt tail is truncated and the indexes are
rebuilt. With the marker, indexes are still sanity-checked and rebuilt when inconsistent.
Segments below the recovery point were fsynced with their indexes and are only checked.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from dari.records.batch import CorruptRecordError
from dari.storage.index import IndexCorruptError
from dari.storage.segment import (
    INDEX_SUFFIX,
    LOG_SUFFIX,
    TIME_INDEX_SUFFIX,
    LogSegment,
)

log = logging.getLogger(__name__)

CLEAN_SHUTDOWN_FILE = ".clean_shutdown"
CHECKPOINT_FILE = "log-state.checkpoint"
_CHECKPOINT_VERSION = 1
_TEMP_SUFFIXES = (".cleaned", ".deleted", ".swap", ".tmp")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Small state that must survive restarts: DeleteRecords' log start offset, and the offset
    below which every segment (log and indexes) is known to be fsynced."""

    log_start_offset: int = 0
    recovery_point: int = 0


def read_checkpoint(directory: Path) -> Checkpoint:
    path = directory / CHECKPOINT_FILE
    try:
        lines = path.read_text().split()
    except FileNotFoundError:
        return Checkpoint()
    try:
        version, start, recovery = (int(x) for x in lines)
    except ValueError:
        log.warning("ignoring unreadable %s", path)
        return Checkpoint()
    if version != _CHECKPOINT_VERSION:
        raise ValueError(f"{path} has unknown version {version}")
    return Checkpoint(start, recovery)


def write_checkpoint(directory: Path, checkpoint: Checkpoint) -> None:
    """Atomically replace the checkpoint file (write temp, fsync, rename, fsync directory)."""
    path = directory / CHECKPOINT_FILE
    temp = path.with_name(path.name + ".tmp")
    data = f"{_CHECKPOINT_VERSION}\n{checkpoint.log_start_offset}\n{checkpoint.recovery_point}\n"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, path)
    fsync_dir(directory)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class LoadedLog:
    segments: list[LogSegment]
    log_start_offset: int
    recovery_point: int
    clean: bool
    recovered_segments: int
    truncated_bytes: int


def _parse_base(name: str, suffix: str) -> int | None:
    stem = name[: -len(suffix)]
    if len(stem) == 20 and stem.isdigit():
        return int(stem)
    return None


def remove_leftovers(directory: Path) -> list[Path]:
    """Delete temp files of interrupted operations and index files whose log is gone."""
    removed = []
    logs = {p.name[: -len(LOG_SUFFIX)] for p in directory.glob("*" + LOG_SUFFIX)}
    for path in directory.iterdir():
        name = path.name
        if name.endswith(_TEMP_SUFFIXES):
            orphan = True
        elif name.endswith((INDEX_SUFFIX, TIME_INDEX_SUFFIX)):
            orphan = name.rsplit(".", 1)[0] not in logs
        else:
            orphan = False
        if orphan and path.is_file():
            path.unlink()
            removed.append(path)
    return removed


def load_log(directory: Path, index_interval_bytes: int, now_ms: int) -> LoadedLog:
    """Open (and if needed repair) every segment of the log in ``directory``."""
    clean = (directory / CLEAN_SHUTDOWN_FILE).exists()
    checkpoint = read_checkpoint(directory)
    for path in remove_leftovers(directory):
        log.info("removed leftover %s", path)

    bases = sorted(
        base
        for p in directory.glob("*" + LOG_SUFFIX)
        if (base := _parse_base(p.name, LOG_SUFFIX)) is not None
    )
    segments: list[LogSegment] = []
    recovered = truncated_total = 0
    for i, base in enumerate(bases):
        if segments and segments[-1].next_offset != base:
            # Offsets must stay contiguous: whatever follows a gap or overlap is unreachable.
            log.warning(
                "%s ends at offset %d but the next segment starts at %d; dropping later segments",
                segments[-1].log_path,
                segments[-1].next_offset,
                base,
            )
            for later in bases[i:]:
                LogSegment.open(directory, later).delete()
            break
        segment = LogSegment.open(directory, base)
        is_last = i == len(bases) - 1
        must_recover = not clean and (base >= checkpoint.recovery_point or is_last)
        if not must_recover:
            try:
                segment.load(now_ms)
            except (IndexCorruptError, CorruptRecordError) as exc:
                log.warning("rebuilding indexes of %s: %s", segment.log_path, exc)
                must_recover = True
        if must_recover:
            truncated = segment.recover(now_ms, index_interval_bytes)
            segment.sync(indexes=True)
            recovered += 1
            truncated_total += truncated
            if truncated:
                log.warning("truncated %d invalid bytes from %s", truncated, segment.log_path)
        if not segment.size and not is_last and not segments:
            segment.delete()  # an empty first segment holds nothing; the next one starts the log
            continue
        segments.append(segment)

    log_start = checkpoint.log_start_offset
    if segments:
        log_start = max(log_start, segments[0].base_offset)
        if log_start > segments[-1].next_offset:
            # The checkpoint says records up to log_start were deleted; none of the remaining
            # data is readable, so start afresh there (Kafka's truncateFullyAndStartAt).
            for segment in segments:
                segment.delete()
            segments = []
    if not segments:
        segments.append(LogSegment.create(directory, log_start))
        fsync_dir(directory)
    return LoadedLog(
        segments=segments,
        log_start_offset=log_start,
        recovery_point=segments[-1].base_offset,
        clean=clean,
        recovered_segments=recovered,
        truncated_bytes=truncated_total,
    )
