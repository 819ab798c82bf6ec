"""Append throughput of the storage engine per flush policy.

``python bench/storage_append.py [--seconds 2] [--dir /path/on/the/disk/to/test]``

Each scenario appends pre-built batches of 100 records (values of 1 KiB or 100 B) to one
PartitionLog for a fixed time and prints MB/s and batches/s. Every append copies the batch
into a fresh bytearray (as a network buffer would be) and goes through offset assignment,
the segment write and index maintenance; CRC validation is the caller's job and is excluded.

Scenarios:
  os            page cache only (Kafka's default)
  interval      producers do not wait; a FlushScheduler fsyncs every flush_interval_ms
  always x1     one producer waiting for its fsync after every batch
  always x32    32 concurrent producers sharing fsyncs through group commit
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path

from dari.records import build_batch, validate
from dari.storage import FlushScheduler, LogConfig, PartitionLog

RECORDS_PER_BATCH = 100


def make_template(value_size: int) -> tuple[bytes, list]:
    batch = build_batch([(None, b"x" * value_size)] * RECORDS_PER_BATCH)
    return batch, validate(batch)


async def produce(log, scheduler, template, headers, deadline, wait) -> tuple[int, int]:
    batches = written = 0
    clock = time.perf_counter
    while clock() < deadline:
        buf = bytearray(template)
        info = log.append(buf, headers)
        if wait:
            await scheduler.durable(log, info.last_offset + 1)
        else:
            await asyncio.sleep(0)  # let the periodic flusher run, as a real server loop would
        batches += 1
        written += len(buf)
    return batches, written


async def scenario(directory, policy, producers, wait, value_size, seconds) -> dict:
    template, headers = make_template(value_size)
    config = LogConfig(flush=policy, flush_interval_ms=1000, retention_ms=-1)
    log = PartitionLog.open(directory, config)
    scheduler = FlushScheduler(lambda: [log])
    await scheduler.start()
    start = time.perf_counter()
    deadline = start + seconds
    results = await asyncio.gather(
        *(produce(log, scheduler, template, headers, deadline, wait) for _ in range(producers))
    )
    if wait:
        await scheduler.durable(log, log.log_end_offset)
    elapsed = time.perf_counter() - start
    await scheduler.aclose()
    log.close()
    batches = sum(b for b, _ in results)
    written = sum(w for _, w in results)
    return {
        "batches": batches,
        "mb_s": written / elapsed / 1e6,
        "batches_s": batches / elapsed,
        "fsyncs": log.flush_count,
        "rounds": scheduler.rounds,
    }


SCENARIOS = [
    ("os", "os", 1, False),
    ("interval", "interval", 1, False),
    ("always x1", "always", 1, True),
    ("always x32", "always", 32, True),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of each scenario")
    parser.add_argument("--dir", type=Path, help="where to write (default: a temp dir)")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="dari-bench-", dir=args.dir))
    print(f"writing under {root}; {RECORDS_PER_BATCH} records per batch, {args.seconds}s each")
    print(f"{'value':>6} {'policy':<11} {'MB/s':>9} {'batches/s':>11} {'fsyncs':>8}")
    try:
        for value_size in (1024, 100):
            for name, policy, producers, wait in SCENARIOS:
                directory = root / f"{value_size}-{policy}-{producers}"
                os.sync()  # start each scenario without the previous one's dirty pages
                result = asyncio.run(
                    scenario(directory, policy, producers, wait, value_size, args.seconds)
                )
                shutil.rmtree(directory)
                print(
                    f"{value_size:>5}B {name:<11} {result['mb_s']:>9.1f} "
                    f"{result['batches_s']:>11,.0f} {result['fsyncs']:>8,}"
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
