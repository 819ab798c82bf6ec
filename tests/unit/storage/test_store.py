"""LogStore (data directory, lock), FlushScheduler (group commit, interval, os) and the
maintenance loop."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest
from storage_helpers import append, make_batch, read_all

from dari.storage import (
    DataDirLockedError,
    FlushScheduler,
    LogConfig,
    LogStore,
    PartitionLog,
    run_maintenance,
)
from dari.storage.loader import read_checkpoint


def test_lock_refuses_a_second_store(tmp_path):
    first = LogStore(tmp_path / "data")
    first.lock()
    second = LogStore(tmp_path / "data")
    with pytest.raises(
        DataDirLockedError, match=rf"in use by another dari process \(pid {os.getpid()}\)"
    ):
        second.lock()
    with pytest.raises(DataDirLockedError):
        second.open_log("orders-0", LogConfig())  # opening a log takes the lock too
    first.close()
    second.lock()  # released on close
    second.close()


def test_logs_survive_a_store_restart_and_can_be_removed(tmp_path):
    store = LogStore(tmp_path / "data")
    orders = store.open_log("orders-0", LogConfig())
    assert store.open_log("orders-0", LogConfig(flush="always")) is orders
    assert orders.config.flush == "always"
    append(orders, make_batch(3))
    store.open_log("payments-1", LogConfig())
    store.close()
    assert orders.closed

    store = LogStore(tmp_path / "data")
    store.lock()
    assert store.log_names() == ["orders-0", "payments-1"]
    orders = store.open_log("orders-0", LogConfig())
    assert read_all(orders) == [0, 1, 2]
    store.remove_log("orders-0")
    store.remove_log("payments-1")  # not open: removed from disk all the same
    assert store.log_names() == []
    assert sorted(os.listdir(tmp_path / "data")) == [".lock"]
    store.close()


@pytest.mark.parametrize("name", ["", ".hidden", "a/b", "..", "x" * 256])
def test_invalid_log_names(tmp_path, name):
    store = LogStore(tmp_path / "data")
    with pytest.raises(ValueError):
        store.open_log(name, LogConfig())
    store.close()


async def test_group_commit_shares_fsyncs_between_concurrent_producers(tmp_path):
    store = LogStore(tmp_path / "data")
    logs = [store.open_log(f"t-{i}", LogConfig(flush="always")) for i in range(3)]
    scheduler = FlushScheduler(store)
    await scheduler.start()

    async def produce(log: PartitionLog) -> None:
        info = append(log, make_batch(2))
        await scheduler.durable(log, info.last_offset + 1)
        assert log.flushed_offset > info.last_offset

    producers = [produce(log) for _ in range(40) for log in logs]
    await asyncio.gather(*producers)
    assert 1 <= scheduler.rounds < len(producers) // 10
    for log in logs:
        assert log.flushed_offset == log.log_end_offset == 80
        assert log.flush_count <= scheduler.rounds
    # A second wave while a round is in flight is served by the following round(s).
    await asyncio.gather(*(produce(logs[0]) for _ in range(30)))
    assert logs[0].flushed_offset == 140
    await scheduler.aclose()
    store.close()


async def test_group_commit_serves_late_arrivals_in_the_next_round(tmp_path):
    store = LogStore(tmp_path / "data")
    log = store.open_log("t-0", LogConfig(flush="always"))
    scheduler = FlushScheduler(store)
    first = append(log, make_batch(1))
    waiter = asyncio.ensure_future(scheduler.durable(log, first.last_offset + 1))
    await asyncio.sleep(0)  # the first round starts
    late = [append(log, make_batch(1)) for _ in range(10)]
    await asyncio.gather(waiter, *(scheduler.durable(log, info.last_offset + 1) for info in late))
    assert log.flushed_offset == 11
    assert scheduler.rounds <= 3
    await scheduler.aclose()
    store.close()


async def test_interval_policy_flushes_periodically(tmp_path):
    store = LogStore(tmp_path / "data")
    log = store.open_log("t-0", LogConfig(flush="interval", flush_interval_ms=5))
    scheduler = FlushScheduler(store)
    await scheduler.start()
    info = append(log, make_batch(4))
    await asyncio.wait_for(scheduler.durable(log, info.last_offset + 1), timeout=30)
    assert log.flushed_offset == 4
    assert scheduler.periodic_flushes >= 1
    assert scheduler.rounds == 0  # no group-commit rounds for interval logs
    await scheduler.aclose()
    store.close()


async def test_os_policy_acknowledges_without_fsync(tmp_path):
    store = LogStore(tmp_path / "data")
    log = store.open_log("t-0", LogConfig(flush="os"))
    scheduler = FlushScheduler(store)
    info = append(log, make_batch(4))
    await scheduler.durable(log, info.last_offset + 1)
    assert log.flushed_offset == 0 and log.flush_count == 0
    await scheduler.aclose()
    store.close()
    assert log.flushed_offset == 4  # close flushes


async def test_periodic_task_flushes_rolled_segments_under_os_policy(tmp_path):
    store = LogStore(tmp_path / "data")
    log = store.open_log("t-0", LogConfig(flush="os", segment_bytes=300))
    scheduler = FlushScheduler(store, idle_tick_s=0.001)
    await scheduler.start()
    for _ in range(10):
        append(log, make_batch(2))
    assert log.has_unflushed_rolled_segments
    for _ in range(10_000):
        if not log.has_unflushed_rolled_segments:
            break
        await asyncio.sleep(0.001)
    assert not log.has_unflushed_rolled_segments
    # Rolled segments are durable and the recovery point moved past them.
    assert log.flushed_offset == log.segments[-1].base_offset > 0
    assert read_checkpoint(log.directory).recovery_point == log.segments[-1].base_offset
    await scheduler.aclose()
    store.close()


async def test_durable_on_a_log_closed_underneath_fails(tmp_path):
    store = LogStore(tmp_path / "data")
    log = store.open_log("t-0", LogConfig(flush="always"))
    scheduler = FlushScheduler(store)
    info = append(log, make_batch(1))
    log.close()  # flushes: the waiter is satisfied
    await scheduler.durable(log, info.last_offset + 1)
    await scheduler.aclose()
    with pytest.raises(RuntimeError):
        await scheduler.durable(log, 100)
    store.close()


def test_from_topic_configs():
    config = LogConfig.from_topic_configs(
        {
            "segment.bytes": "1048576",
            "retention.ms": "-1",
            "retention.bytes": "5000",
            "message.timestamp.type": "LogAppendTime",
            "cleanup.policy": "delete",
            "flush.messages": "1",
        }
    )
    assert config.segment_bytes == 1 << 20
    assert config.retention_ms == -1
    assert config.retention_bytes == 5000
    assert config.log_append_time
    assert config.flush == "always"
    assert config.topic_configs["cleanup.policy"] == "delete"  # unknown: kept
    described = config.to_topic_configs()
    assert described["message.timestamp.type"] == "LogAppendTime"
    assert described["segment.bytes"] == "1048576"
    assert LogConfig.from_topic_configs(described) == config
    interval = LogConfig.from_topic_configs({"flush.ms": "250"})
    assert (interval.flush, interval.flush_interval_ms) == ("interval", 250)
    layered = LogConfig.from_topic_configs({"retention.ms": "10"}, defaults=config)
    assert (layered.retention_ms, layered.segment_bytes) == (10, 1 << 20)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("segment.bytes", "abc"),
        ("segment.bytes", "10"),
        ("retention.ms", "-2"),
        ("message.timestamp.type", "Whenever"),
        ("flush.policy", "sometimes"),
    ],
)
def test_from_topic_configs_rejects_bad_values(name, value):
    with pytest.raises(ValueError, match=name):
        LogConfig.from_topic_configs({name: value})


async def test_run_maintenance_rolls_expires_and_calls_back_after_each_pass(tmp_path, clock):
    store = LogStore(tmp_path / "data", clock)
    log = store.open_log("t-0", LogConfig(segment_ms=1000, retention_ms=5000))
    closed = store.open_log("t-1", LogConfig(segment_ms=1000, retention_ms=5000))
    append(log, make_batch(2, timestamp=int(clock() * 1000)))
    closed.close()  # closed logs are passed over
    threads = []
    passes = asyncio.Queue()

    def after_pass() -> None:
        passes.put_nowait(len(log.segments))

    def provider():
        threads.append(threading.get_ident())
        return store.logs.values()

    clock.advance_ms(2000)
    task = asyncio.ensure_future(run_maintenance(provider, 0.001, clock, after_pass=after_pass))
    try:
        assert await asyncio.wait_for(passes.get(), 30) == 2  # rolled, not yet expired
        clock.advance_ms(10_000)
        while await asyncio.wait_for(passes.get(), 30) != 1:
            pass
    finally:
        task.cancel()
    assert log.log_start_offset == 2
    assert set(threads) == {threading.get_ident()}  # the provider is asked on the loop
    store.close()
