"""Share-partition state journals in real files: recovery, torn tails, tombstones, rewrite."""

from __future__ import annotations

import asyncio
from pathlib import Path

from dari.streams.share.partition import AcknowledgeType, RecordState, SharePartition
from dari.streams.share.state_store import ShareStateStore

TOPIC = b"\x01" * 16


def test_state_survives_a_clean_close(tmp_path: Path) -> None:
    store = ShareStateStore(tmp_path)
    sp = SharePartition(0)
    store.journal("g").attach(TOPIC, 0, sp)
    sp.acquire("m", 10, 0, 10)
    sp.acknowledge("m", 0, 4, AcknowledgeType.ACCEPT)
    store.close()

    again = ShareStateStore(tmp_path)
    assert again.group_ids() == ["g"]
    restored = SharePartition(0)
    again.journal("g").attach(TOPIC, 0, restored)
    assert (restored.start_offset, restored.end_offset) == (5, 10)
    assert restored.state_of(5) == (RecordState.AVAILABLE, 1)


def test_unflushed_changes_of_a_killed_broker_come_back(tmp_path: Path) -> None:
    store = ShareStateStore(tmp_path)
    sp = SharePartition(0)
    store.journal("g").attach(TOPIC, 0, sp)
    sp.acquire("m", 10, 0, 10)
    store.flush_pending()
    sp.acknowledge("m", 0, 9, AcknowledgeType.ACCEPT)  # never flushed: as after SIGKILL
    restored = SharePartition(0)
    ShareStateStore(tmp_path).journal("g").attach(TOPIC, 0, restored)
    assert (restored.start_offset, restored.end_offset) == (0, 10)


def test_a_torn_tail_is_cut(tmp_path: Path) -> None:
    store = ShareStateStore(tmp_path)
    sp = SharePartition(0)
    journal = store.journal("g")
    journal.attach(TOPIC, 0, sp)
    sp.acquire("m", 3, 0, 3)
    store.flush_pending()
    sp.acknowledge("m", 0, 2, AcknowledgeType.ACCEPT)
    store.close()
    path = journal.path
    path.write_bytes(path.read_bytes()[:-5])
    restored = SharePartition(0)
    ShareStateStore(tmp_path).journal("g").attach(TOPIC, 0, restored)
    assert (restored.start_offset, restored.end_offset) == (0, 3)
    assert path.stat().st_size > 0


def test_forget_and_delete_group(tmp_path: Path) -> None:
    store = ShareStateStore(tmp_path)
    journal = store.journal("a/b c")
    for partition in (0, 1):
        sp = SharePartition(7)
        journal.attach(TOPIC, partition, sp)
        sp.acquire("m", 1, 0, 10)
    store.flush_pending()
    journal.forget(TOPIC, 0)
    store.close()
    reopened = ShareStateStore(tmp_path)
    assert reopened.group_ids() == ["a/b c"]
    assert list(reopened.journal("a/b c").partitions()) == [(TOPIC, 1)]
    reopened.delete_group("a/b c")
    assert reopened.group_ids() == []
    assert list(tmp_path.iterdir()) == []


def test_journal_is_rewritten_when_it_outgrows_its_state(tmp_path: Path) -> None:
    store = ShareStateStore(tmp_path)
    journal = store.journal("g")
    sp = SharePartition(0, max_in_flight=10_000_000)
    journal.attach(TOPIC, 0, sp)
    for offset in range(100_000):
        sp.acquire("m", 1, 0, offset + 1)
        sp.acknowledge("m", offset, offset, AcknowledgeType.ACCEPT)
        store.flush_pending()
    assert journal.path.stat().st_size < 2 << 20
    store.close()
    restored = SharePartition(0)
    ShareStateStore(tmp_path).journal("g").attach(TOPIC, 0, restored)
    assert restored.start_offset == 100_000


def test_changes_of_one_loop_turn_are_written_once(tmp_path: Path) -> None:
    async def scenario() -> int:
        store = ShareStateStore(tmp_path)
        journal = store.journal("g")
        sp = SharePartition(0)
        journal.attach(TOPIC, 0, sp)
        for _ in range(50):
            sp.acquire("m", 1, 0, 100)
        await asyncio.sleep(0)
        size = journal.path.stat().st_size
        store.close()
        return size

    size = asyncio.run(scenario())
    assert 0 < size < 200
