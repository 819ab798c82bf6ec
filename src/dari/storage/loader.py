"""Open a partition directory: find its segments and recover whatever a crash left behind.

Derived data is never trusted after a crash (Kafka ``LogLoader``): without the clean-shutdown
marker every segment at or after the recovery point is re-validated batch by batch (length,
magic, CRC32C, contiguous offsets), a torn or corrupt tail is truncated and the indexes are
rebuilt. With the marker, indexes are still sanity-checked and rebuilt when inconsistent.
Segments below the recovery point were fsynced with their indexes and are only checked.

A segment swap of the log cleaner interrupted by a crash is finished first (see
``complete_interrupted_swaps``); its ``.cleaned`` leftovers are discarded.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from dari.records.batch import CorruptRecordError
from dari.storage.files import atomic_write, fsync_dir
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
CLEANER_CHECKPOINT_FILE = "cleaner-offset-checkpoint"
CLEANED_SUFFIX = ".cleaned"
SWAP_SUFFIX = ".swap"
_CHECKPOINT_VERSION = 1
_TEMP_SUFFIXES = (CLEANED_SUFFIX, ".deleted", SWAP_SUFFIX, ".tmp")


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
    data = f"{_CHECKPOINT_VERSION}\n{checkpoint.log_start_offset}\n{checkpoint.recovery_point}\n"
    atomic_write(directory / CHECKPOINT_FILE, data)


@dataclass(frozen=True, slots=True)
class CleanerCheckpoint:
    """The log cleaner's durable state (Kafka's cleaner-offset-checkpoint, per log).

    ``clean_offset``: closed segments below it are compacted; the "dirty" part starts there.
    ``compacted_end``: segments below it may have been rewritten by the cleaner, so offset gaps
    in them are expected (only ever raised, before a swap commits). ``swap_base`` /
    ``swap_end``: the group swap last started: its new segment (``<swap_base>.log.swap``)
    replaces the segments with base offsets in [swap_base, swap_end). ``marks``: (upto,
    cleaned_at_ms) in increasing ``upto`` order; a tombstone below ``upto`` (and at or above the
    previous mark) was first seen by a cleaning at ``cleaned_at_ms`` and is kept until
    delete.retention.ms after that.
    """

    clean_offset: int = 0
    compacted_end: int = 0
    swap_base: int = -1
    swap_end: int = -1
    marks: tuple[tuple[int, int], ...] = ()


def read_cleaner_checkpoint(directory: Path) -> CleanerCheckpoint:
    path = directory / CLEANER_CHECKPOINT_FILE
    try:
        numbers = [int(x) for x in path.read_text().split()]
    except FileNotFoundError:
        return CleanerCheckpoint()
    except ValueError:
        log.warning("ignoring unreadable %s", path)
        return CleanerCheckpoint()
    if not numbers or numbers[0] != _CHECKPOINT_VERSION:
        raise ValueError(f"{path} has an unknown version")
    try:
        clean, compacted, swap_base, swap_end, count = numbers[1:6]
        pairs = numbers[6:]
        if len(pairs) != 2 * count:
            raise ValueError
    except ValueError:
        log.warning("ignoring unreadable %s", path)
        return CleanerCheckpoint()
    marks = tuple((pairs[i], pairs[i + 1]) for i in range(0, len(pairs), 2))
    return CleanerCheckpoint(clean, compacted, swap_base, swap_end, marks)


def write_cleaner_checkpoint(directory: Path, checkpoint: CleanerCheckpoint) -> None:
    """Atomically replace the cleaner checkpoint (temp file, fsync, rename, fsync directory)."""
    lines = [
        str(_CHECKPOINT_VERSION),
        str(checkpoint.clean_offset),
        str(checkpoint.compacted_end),
        f"{checkpoint.swap_base} {checkpoint.swap_end}",
        str(len(checkpoint.marks)),
        *(f"{upto} {at}" for upto, at in checkpoint.marks),
    ]
    atomic_write(directory / CLEANER_CHECKPOINT_FILE, "\n".join(lines) + "\n")


@dataclass
class LoadedLog:
    segments: list[LogSegment]
    log_start_offset: int
    recovery_point: int
    clean: bool
    recovered_segments: int
    truncated_bytes: int
    cleaner: CleanerCheckpoint = CleanerCheckpoint()


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


def complete_interrupted_swaps(directory: Path, checkpoint: CleanerCheckpoint) -> list[int]:
    """Finish cleaner swaps a crash interrupted; returns the base offsets of those finished.

    The cleaner writes ``<base>.log.cleaned`` (and indexes), fsyncs them, records the swap in
    the cleaner checkpoint, renames them to ``.swap`` (the .log last: the commit point), deletes
    the segments it replaces and renames the ``.swap`` files to their final names. A
    ``.log.swap`` file named in the checkpoint therefore means the swap was committed: the
    replaced segments (base offsets in [swap_base, swap_end)) are deleted here and the new one
    takes their place. Any other ``.swap`` or ``.cleaned`` file is a leftover of an
    uncommitted swap, which ``remove_leftovers`` deletes.
    """
    done = []
    suffix = LOG_SUFFIX + SWAP_SUFFIX
    for swapped in sorted(directory.glob("*" + suffix)):
        base = _parse_base(swapped.name, suffix)
        if base is None:
            continue
        if base != checkpoint.swap_base:
            continue  # never recorded as committed: a leftover, removed with the others
        end = checkpoint.swap_end
        for old in directory.glob("*" + LOG_SUFFIX):
            old_base = _parse_base(old.name, LOG_SUFFIX)
            if old_base is not None and base < old_base < end:
                for name in (INDEX_SUFFIX, TIME_INDEX_SUFFIX):
                    old.with_name(old.name[: -len(LOG_SUFFIX)] + name).unlink(missing_ok=True)
                old.unlink()
        fsync_dir(directory)
        stem = swapped.name[: -len(suffix)]
        for name in (INDEX_SUFFIX, TIME_INDEX_SUFFIX):
            index = directory / (stem + name + SWAP_SUFFIX)
            if index.exists():
                os.replace(index, directory / (stem + name))
        os.replace(swapped, directory / (stem + LOG_SUFFIX))
        fsync_dir(directory)
        log.info("completed the interrupted swap of cleaned segment %s", stem)
        done.append(base)
    return done


def load_log(directory: Path, index_interval_bytes: int, now_ms: int) -> LoadedLog:
    """Open (and if needed repair) every segment of the log in ``directory``."""
    clean = (directory / CLEAN_SHUTDOWN_FILE).exists()
    checkpoint = read_checkpoint(directory)
    cleaner = read_cleaner_checkpoint(directory)
    complete_interrupted_swaps(directory, cleaner)
    compacted_end = max(cleaner.clean_offset, cleaner.compacted_end)
    for path in remove_leftovers(directory):
        log.info("removed leftover %s", path)

    bases = sorted(
        base
        for p in directory.glob("*" + LOG_SUFFIX)
        if (base := _parse_base(p.name, LOG_SUFFIX)) is not None
    )
    segments: list[LogSegment] = []
    recovered = truncated_total = 0
    previous_truncated = False
    for i, base in enumerate(bases):
        if segments and _broken_after(segments[-1], base, previous_truncated):
            # Offsets must stay contiguous (compacted segments may end early, but never
            # overlap): whatever follows a gap, an overlap or a truncation is unreachable.
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
        segment.compacted = base < compacted_end
        is_last = i == len(bases) - 1
        must_recover = not clean and (base >= checkpoint.recovery_point or is_last)
        previous_truncated = False
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
            previous_truncated = truncated > 0
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
        cleaner=cleaner,
    )


def _broken_after(previous: LogSegment, base: int, previous_truncated: bool) -> bool:
    if previous.next_offset > base:
        return True
    if previous.next_offset == base:
        return False
    return not previous.compacted or previous_truncated
