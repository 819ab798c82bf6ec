"""Log cleaner throughput.

``python bench/compaction_bench.py [--mb 100] [--keys 10000] [--value-bytes 1000]
[--compression none|gzip|lz4|zstd|snappy] [--dir /path/on/the/disk/to/test]``

Builds a compacted log of ``--mb`` MB of keyed records (updates of ``--keys`` distinct keys,
values half random, batches of 50 records, 8 MiB segments), rolls it so every segment is
cleanable, then times ``LogCleaner.clean``: a first pass over the whole log, and a second one
after 10% more updates (the clean part is copied again, the dirty part mapped and merged in).
MB/s counts the bytes of the segments read by the pass.
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from pathlib import Path

from dari.records import Codec, build_batch, validate
from dari.storage import CleanStats, LogCleaner, LogConfig, PartitionLog

RECORDS_PER_BATCH = 50
CODECS = {
    "none": Codec.NONE,
    "gzip": Codec.GZIP,
    "lz4": Codec.LZ4,
    "zstd": Codec.ZSTD,
    "snappy": Codec.SNAPPY,
}


def fill(
    log: PartitionLog, target_bytes: int, keys: int, value_bytes: int, codec: int, start: int
) -> int:
    """Append updates round-robin over the keys until ``target_bytes`` more are in the log.
    Values are half random bytes, so compressed batches shrink about 2:1, not 100:1."""
    rng = random.Random(start)
    half = value_bytes // 2
    values = [rng.randbytes(half) + b"x" * (value_bytes - half) for _ in range(64)]
    goal = log.size_bytes + target_bytes
    n = start
    ts = 1_000
    while log.size_bytes < goal:
        items = []
        for _ in range(RECORDS_PER_BATCH):
            items.append((b"key-%08d" % (n % keys), values[n % 64], (), ts))
            n += 1
        buf = bytearray(build_batch(items, compression=codec, now_ms=ts))
        log.append(buf, validate(buf))
        ts += 1
    return n


def roll(log: PartitionLog) -> None:
    log.roll_if_due(log.segments[-1].rolling_ms + log.config.roll_ms)


def row(name: str, stats: CleanStats, size_after: int) -> str:
    return (
        f"{name:<14} {stats.bytes_read / 1e6:>9.1f} {stats.records_read:>10,} "
        f"{stats.records_removed:>10,} {size_after / 1e6:>9.2f} {stats.seconds:>8.2f} "
        f"{stats.mb_per_s:>8.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--value-bytes", type=int, default=1000)
    parser.add_argument("--compression", choices=sorted(CODECS), default="none")
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="dari-compaction-", dir=args.dir))
    try:
        config = LogConfig(cleanup_policy="compact", segment_bytes=8 << 20, retention_ms=-1)
        log = PartitionLog.open(work / "bench-0", config)
        codec = CODECS[args.compression]
        started = time.perf_counter()
        n = fill(log, args.mb * 1_000_000, args.keys, args.value_bytes, codec, 0)
        roll(log)
        built = time.perf_counter() - started
        print(
            f"log: {log.size_bytes / 1e6:.1f} MB, {n:,} records, {args.keys:,} keys, "
            f"{len(log.segments) - 1} segments, {args.compression} (built in {built:.1f}s)"
        )
        cleaner = LogCleaner()
        now_ms = int(time.time() * 1000)
        print(
            f"{'pass':<14} {'MB read':>9} {'records':>10} {'removed':>10} {'MB after':>9} "
            f"{'seconds':>8} {'MB/s':>8}"
        )
        first = cleaner.clean(log, now_ms, force=True)
        print(row("first", first, log.size_bytes))
        fill(log, args.mb * 100_000, args.keys, args.value_bytes, codec, n)
        roll(log)
        second = cleaner.clean(log, now_ms, force=True)
        print(row("incremental", second, log.size_bytes))
        log.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
