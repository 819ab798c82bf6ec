"""The cleaner is crash-safe at every step of its swap and runs beside the event loop."""

from __future__ import annotations

import asyncio
import functools
import random
import shutil
import threading
import time
from dataclasses import replace

from compaction_helpers import (
    COMPACT,
    append_batch,
    as_map,
    assert_original,
    keyed_batch,
    read_log,
    temp_files,
    write_updates,
)

from dari.records import iter_batch_records
from dari.storage import LogCleaner, LogStore, PartitionLog, clean_due_logs, run_cleaner
from dari.storage.loader import read_cleaner_checkpoint

NOW = 2_000_000_000


def test_a_crash_at_any_step_of_a_swap_loses_nothing(tmp_path, clock):
    path = tmp_path / "t-0"
    log = PartitionLog.open(path, replace(COMPACT, segment_bytes=700), clock)
    written = write_updates(log, rounds=25, keys=10, tombstone_every=11)
    end = log.log_end_offset
    snapshots: list[tuple[str, object]] = []

    def snapshot(step: str) -> None:
        copy = tmp_path / f"crash-{len(snapshots):03d}"
        shutil.copytree(path, copy)  # the directory exactly as a crash here would leave it
        snapshots.append((step, copy))

    cleaner = LogCleaner(step_hook=snapshot)
    assert cleaner.clean(log, NOW).cleaned  # one cleaned segment per old one
    first_pass = len(snapshots)
    write_updates(log, rounds=3, keys=10, start_ts=5_000, written=written)
    assert cleaner.clean(log, NOW, force=True).segments_written >= 1  # merges groups
    steps = {step.split()[0] for step, _ in snapshots}
    assert steps == {"cleaned", "recorded", "committed", "deleted", "swapped", "checkpointed"}
    assert first_pass > 6 and len(snapshots) > first_pass
    final_records = read_log(log)[1]
    log.close()

    for i, (step, copy) in enumerate(snapshots):
        recovered = PartitionLog.open(copy, COMPACT, clock)
        assert recovered.truncated_bytes == 0, step
        assert temp_files(copy) == [], step
        assert recovered.log_end_offset == (end if i < first_pass else final_records[-1].offset + 1)
        _, records = read_log(recovered)
        assert_original(records, written)
        latest = as_map(records)
        assert latest == written.latest(until=recovered.log_end_offset), step
        # The recovered log cleans (again) to the same result.
        LogCleaner().clean(recovered, NOW, force=True)
        assert as_map(read_log(recovered)[1]) == latest, step
        recovered.close()
    assert as_map(final_records) == written.latest()


def test_an_interrupted_swap_is_completed_from_the_checkpoint(tmp_path, clock):
    path = tmp_path / "t-0"
    log = PartitionLog.open(path, COMPACT, clock)
    written = write_updates(log, rounds=20, keys=5)
    copies = {}

    def hook(step: str) -> None:
        if step not in copies:
            copies[step] = tmp_path / step.replace(" ", "-")
            shutil.copytree(path, copies[step])

    LogCleaner(step_hook=hook).clean(log, NOW)
    committed = copies["committed"]
    assert list(committed.glob("*.log.swap"))
    checkpoint = read_cleaner_checkpoint(committed)
    swap_base = checkpoint.swap_base
    assert (committed / f"{swap_base:020d}.log").exists()  # the old segment, not yet deleted
    recovered = PartitionLog.open(committed, COMPACT, clock)
    assert not list(committed.glob("*.swap"))
    _, records = read_log(recovered)
    assert_original(records, written)
    assert as_map(records) == written.latest()
    # (An empty first segment is dropped on load; the log then starts at the next one.)
    assert all(s.compacted for s in recovered.segments if s.base_offset <= swap_base)
    # The cleaned .cleaned files of a swap that never committed are simply dropped.
    cleaned = copies["cleaned"]
    assert list(cleaned.glob("*.log.cleaned"))
    untouched = PartitionLog.open(cleaned, COMPACT, clock)
    assert not list(cleaned.glob("*.cleaned"))
    assert as_map(read_log(untouched)[1]) == written.latest()


def test_close_stops_a_running_cleaning(tmp_path, clock):
    path = tmp_path / "t-0"
    log = PartitionLog.open(path, COMPACT, clock)
    written = write_updates(log, rounds=20, keys=5)
    before = read_log(log)[1]
    started = threading.Event()

    def hook(step: str) -> None:
        if step == "cleaned":
            started.set()
            deadline = time.monotonic() + 10
            while not log.cleaner_abort_requested and time.monotonic() < deadline:
                time.sleep(0.001)

    result = {}
    worker = threading.Thread(
        target=lambda: result.setdefault("stats", LogCleaner(step_hook=hook).clean(log, NOW))
    )
    worker.start()
    assert started.wait(10)
    log.close()  # asks the cleaner to stop and waits for it
    worker.join(10)
    assert result["stats"].aborted and not result["stats"].cleaned
    assert temp_files(path) == [] and not list(path.glob("*.cleaned"))
    reopened = PartitionLog.open(path, COMPACT, clock)
    assert reopened.recovered_segments == 0
    assert read_log(reopened)[1] == before
    assert_original(before, written)


async def test_appends_and_reads_on_the_loop_while_a_thread_cleans(tmp_path, clock):
    log = PartitionLog.open(tmp_path / "t-0", replace(COMPACT, segment_bytes=900), clock)
    written = write_updates(log, rounds=20, keys=8)
    cleaner = LogCleaner()
    loop = asyncio.get_running_loop()
    passes = 0
    stop = False

    async def clean_repeatedly() -> None:
        nonlocal passes
        while not stop:
            clean = functools.partial(cleaner.clean, log, NOW, force=True)
            stats = await loop.run_in_executor(None, clean)
            passes += stats.cleaned

    task = asyncio.create_task(clean_repeatedly())
    rng = random.Random(7)
    reads = 0
    for i in range(600):
        write_updates(log, rounds=1, keys=rng.randint(1, 4), start_ts=10_000 + i, written=written)
        offset = rng.randint(log.log_start_offset, log.log_end_offset - 1)
        data = log.read(offset, rng.choice([200, 5_000]))
        records = [r for _, r in iter_batch_records(bytes(data)) if r.offset >= offset]
        assert records, offset
        assert_original(records, written)  # never a torn, mixed or renumbered view
        reads += 1
        if i % 5 == 0:
            await asyncio.sleep(0)  # let the cleaner's result come back now and then
        if i % 50 == 0:
            log.roll_if_due(log.segments[-1].rolling_ms + log.config.roll_ms)
    for _ in range(10_000):
        if passes >= 3 or task.done():
            break
        await asyncio.sleep(0.001)
    stop = True
    await task
    assert passes >= 3 and reads == 600
    _, records = read_log(log)
    assert_original(records, written)
    assert as_map(records) == written.latest()
    log.close()


async def test_clean_due_logs_and_run_cleaner_on_a_store(tmp_path, clock):
    store = LogStore(tmp_path / "data", clock)
    compacted = store.open_log("compacted-0", COMPACT)
    plain = store.open_log("plain-0", replace(COMPACT, cleanup_policy="delete"))
    written = write_updates(compacted, rounds=20, keys=4)
    write_updates(plain, rounds=20, keys=4)
    plain_before = read_log(plain)[1]
    cleaner = LogCleaner()

    done = await clean_due_logs(store.logs.values(), cleaner, now_ms=NOW)
    assert [s.cleaned for s in done] == [True]
    assert as_map(read_log(compacted)[1]) == written.latest()
    assert read_log(plain)[1] == plain_before
    assert await clean_due_logs(store.logs.values(), cleaner, now_ms=NOW) == []  # nothing due

    write_updates(compacted, rounds=20, keys=4, start_ts=8_000, written=written)
    sizes = compacted.size_bytes
    task = asyncio.create_task(run_cleaner(store, interval_s=0.01, clock=clock))
    try:
        for _ in range(2_000):
            if compacted.cleaner_checkpoint.clean_offset > done[0].clean_offset:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
    assert compacted.cleaner_checkpoint.clean_offset > done[0].clean_offset
    assert compacted.size_bytes < sizes
    assert as_map(read_log(compacted)[1]) == written.latest()
    append_batch(compacted, keyed_batch([(b"key-0", b"after")], 9_000))
    store.close()
