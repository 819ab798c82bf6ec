"""Durable queues on real logs: recovery, redelivered flags, ack-log compaction, trimming of
fully acknowledged segments, one append per turn, and waiting for durability."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from dari.message import Message, encode_properties
from dari.queues.consumers import Delivery, PrefetchConsumer
from dari.queues.queue import Queue
from dari.queues.queue_store import QueueStore, batch_messages, encode_message_batch
from dari.records import build_batch, iter_batches
from dari.storage import FlushScheduler, LogConfig

PERSISTENT = encode_properties(delivery_mode=2)
TRANSIENT = encode_properties(delivery_mode=1)


def pmsg(i: int) -> Message:
    return Message.from_amqp("", "jobs", PERSISTENT, b"job-%d" % i)


def tmsg(i: int) -> Message:
    return Message.from_amqp("", "jobs", TRANSIENT, b"tmp-%d" % i)


def open_queue(path: Path, **kw: object) -> Queue:
    store = QueueStore.open(path, kw.pop("config", None), **kw)  # type: ignore[arg-type]
    return Queue("jobs", durable=True, store=store)


def drain(queue: Queue) -> list[tuple[bytes, bool]]:
    out = []
    while (d := queue.get(no_ack=True)) is not None:
        out.append((d.message.body, d.redelivered))
    return out


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def test_clean_restart_keeps_exactly_the_unacked_with_exact_redelivered_flags(
    tmp_path: Path,
) -> None:
    q = open_queue(tmp_path / "q")
    for i in range(10):
        q.publish(pmsg(i))
        q.publish(tmsg(i))
    q.flush()
    got = [q.get() for _ in range(6)]  # persistent 0, 1, 2 and transient 0, 1, 2
    for d in got:
        if d.message.body in (b"job-0", b"job-2"):
            q.ack(d)
    q.close()

    again = open_queue(tmp_path / "q")
    assert again.recovered == 8
    assert drain(again) == [(b"job-1", True)] + [(b"job-%d" % i, False) for i in range(3, 10)]


def test_crash_restart_marks_everything_redelivered_and_never_resurrects_acked(
    tmp_path: Path,
) -> None:
    q = open_queue(tmp_path / "q")
    for i in range(20):
        q.publish(pmsg(i))
    q.flush()
    for _ in range(5):
        q.ack(q.get())
    q.flush()  # acks persisted; the queue is never closed (as after SIGKILL)
    q.publish(pmsg(20))
    q.flush()

    again = open_queue(tmp_path / "q")
    got = drain(again)
    assert [b for b, _ in got] == [b"job-%d" % i for i in range(5, 21)]
    assert all(redelivered for _, redelivered in got)


def test_unflushed_acks_come_back_but_flushed_ones_do_not(tmp_path: Path) -> None:
    q = open_queue(tmp_path / "q")
    for i in range(4):
        q.publish(pmsg(i))
    q.flush()
    q.ack(q.get())
    q.flush()
    q.ack(q.get())  # in memory only when the "crash" happens
    again = open_queue(tmp_path / "q")
    assert [b for b, _ in drain(again)] == [b"job-1", b"job-2", b"job-3"]


def test_purge_and_requeue_survive_restart(tmp_path: Path) -> None:
    q = open_queue(tmp_path / "q")
    for i in range(6):
        q.publish(pmsg(i))
    q.flush()
    held = [q.get(), q.get()]
    assert q.purge() == 4
    q.requeue_all(held[1:])
    q.close()
    again = open_queue(tmp_path / "q")
    # job-0 was delivered and never acked: it is back too, redelivered
    assert drain(again) == [(b"job-0", True), (b"job-1", True)]


def test_ttl_survives_restart(tmp_path: Path) -> None:
    now = [1_000.0]
    store = QueueStore.open(tmp_path / "q", clock=lambda: now[0])
    q = Queue(
        "q", durable=True, store=store, arguments={"x-message-ttl": 500}, clock=lambda: now[0]
    )
    q.publish(pmsg(0))
    now[0] += 0.4
    q.publish(pmsg(1))
    q.close()
    now[0] += 0.2
    store = QueueStore.open(tmp_path / "q", clock=lambda: now[0])
    again = Queue(
        "q", durable=True, store=store, arguments={"x-message-ttl": 500}, clock=lambda: now[0]
    )
    assert again.message_count == 1
    assert again.get().message.body == b"job-1"


def test_deleting_a_durable_queue_removes_its_files(tmp_path: Path) -> None:
    q = open_queue(tmp_path / "q")
    q.publish(pmsg(0))
    q.flush()
    assert q.delete() == 1
    assert not (tmp_path / "q").exists()


def test_ack_log_compaction_keeps_it_bounded(tmp_path: Path) -> None:
    store = QueueStore.open(tmp_path / "q", snapshot_min_bytes=4096)
    q = Queue("q", durable=True, store=store)
    acks_dir = tmp_path / "q" / "acks"
    sizes = []
    for round_ in range(40):
        for i in range(500):
            q.publish(pmsg(round_ * 500 + i))
        q.flush()
        deliveries = [q.get() for _ in range(500)]
        for d in deliveries[::-1]:  # newest first: holes until the last one
            q.ack(d)
            q.flush()  # one ack record per "turn": the worst case for the ack log
        sizes.append(dir_bytes(acks_dir))
    assert store.snapshots_written > 10
    assert max(sizes[10:]) < 3 * (1 << 20)  # bounded by snapshot interval + a segment
    assert len(store.ranges) == 0 and store.ranges.mark_delete == 20_000
    q.close()
    again = open_queue(tmp_path / "q")
    assert again.recovered == 0


def test_million_out_of_order_acks_stay_compact_and_segments_are_deleted(
    tmp_path: Path,
) -> None:
    total = 1_000_000
    chunk = 20_000
    config = LogConfig(segment_bytes=1 << 20)
    store = QueueStore.open(tmp_path / "q", config)
    body_props = (pmsg(0).properties, b"x" * 16)
    msg = Message("", "q", body_props[1], body_props[0], 2)
    rng = random.Random(1)
    peak_ranges = 0
    peak_segments = 0
    for base in range(0, total, chunk):
        for _ in range(chunk):
            store.append(msg, 1_000)
        store.flush_pending()
        offsets = list(range(base, base + chunk))
        rng.shuffle(offsets)
        # acks arrive shuffled within the chunk; a few stragglers stay unacked for a while
        for offset in offsets:
            if offset % 50_000 == 7 and offset + chunk < total:
                continue
            store.ack(offset)
        if base >= chunk:
            for offset in range(base - chunk, base):
                if offset % 50_000 == 7:
                    store.ack(offset)
        store.flush_pending()
        peak_ranges = max(peak_ranges, len(store.ranges))
        peak_segments = max(peak_segments, len(store.messages.segments))
    assert store.ranges.mark_delete == total
    assert len(store.ranges) == 0
    assert peak_ranges <= 4
    # ~1M records of ~60 bytes are ~60 MiB; trimming keeps only the unacknowledged tail
    assert peak_segments <= 4
    assert len(store.messages.segments) == 1  # only the active segment is left
    assert store.messages.log_start_offset > total - 2 * chunk
    assert dir_bytes(tmp_path / "q" / "messages") < 4 << 20
    store.close()
    assert list(QueueStore.open(tmp_path / "q").iter_unacked()) == []


def test_fast_encoder_matches_the_generic_builder() -> None:
    items = [(pmsg(i), 1_000 + i) for i in range(5)] + [(Message("x", "é", b"", b"\x00\x00"), 9)]
    generic = build_batch([m.to_record(ts) for m, ts in items], now_ms=0)
    assert encode_message_batch(items) == generic


async def test_publishes_of_one_turn_are_one_append(tmp_path: Path) -> None:
    q = open_queue(tmp_path / "q")
    results = [q.publish(pmsg(i)) for i in range(100)]
    assert [r.offset for r in results] == list(range(100))
    assert q.store is not None and q.store.messages.log_end_offset == 0
    await asyncio.sleep(0)  # end of the turn: the store flushes
    log = q.store.messages
    assert log.log_end_offset == 100
    assert len(list(iter_batches(bytes(log.read(0, 1 << 20))))) == 1
    q.close()


async def test_confirm_waits_for_fsync_under_flush_always(tmp_path: Path) -> None:
    scheduler = FlushScheduler()
    store = QueueStore.open(tmp_path / "q", LogConfig(flush="always"), flush_scheduler=scheduler)
    q = Queue("q", durable=True, store=store)
    results = [q.publish(pmsg(i)) for i in range(10)]
    results.append(q.publish(tmsg(0)))
    assert results[-1].offset == -1  # transient: confirmable at once
    await q.wait_durable(results[9].offset)
    assert store.messages.flushed_offset >= 10
    assert scheduler.rounds >= 1
    await scheduler.aclose()
    q.close()


async def test_consumer_acks_flow_to_disk_at_end_of_turn(tmp_path: Path) -> None:
    q = open_queue(tmp_path / "q")
    got: list[Delivery] = []
    consumer = PrefetchConsumer("c", got.append, prefetch=10)
    q.add_consumer(consumer)
    for i in range(30):
        q.publish(pmsg(i))
    assert len(got) == 10
    for d in got:
        q.ack(d)
    consumer.settle(10)
    q.dispatch()
    await asyncio.sleep(0)
    assert q.store is not None and q.store.ranges.mark_delete == 10
    q.close()
    again = open_queue(tmp_path / "q")
    assert again.recovered == 20  # 10 more were delivered but not acked
    assert drain(again)[:1] == [(b"job-10", True)]


def test_batch_messages_keeps_only_the_offsets_asked_for() -> None:
    ours = bytearray(encode_message_batch([(pmsg(i), 1_000 + i) for i in range(5)]))
    ours[0:8] = (10).to_bytes(8, "big")
    foreign = bytearray(build_batch([(b"key", b"v%d" % i) for i in range(5)], now_ms=7))
    foreign[0:8] = (10).to_bytes(8, "big")
    for data in (ours, foreign):
        ((header, batch),) = iter_batches(bytes(data))
        pairs = list(batch_messages(header, batch, 11, 13))
        assert [m.offset for _ts, m in pairs] == [11, 12]
        assert len(list(batch_messages(header, batch))) == 5
    assert [ts for ts, _m in batch_messages(*next(iter_batches(bytes(ours))), 13)] == [
        1_003,
        1_004,
    ]
