"""Producer ids are never handed out twice, even across restarts."""

from pathlib import Path

from dari.streams.producers import BLOCK_SIZE, ProducerIdManager


def test_ids_are_unique_across_restarts(tmp_path: Path) -> None:
    first = ProducerIdManager(tmp_path)
    ids = [first.allocate() for _ in range(BLOCK_SIZE + 5)]
    assert ids == list(range(BLOCK_SIZE + 5))
    # A restart (even after a crash) starts past everything reserved before.
    second = ProducerIdManager(tmp_path)
    assert second.allocate() == 2 * BLOCK_SIZE


def test_bump_keeps_id_and_raises_epoch(tmp_path: Path) -> None:
    manager = ProducerIdManager(tmp_path)
    pid = manager.allocate()
    assert manager.bump(pid, 0) == (pid, 1)
    assert manager.bump(pid, 32766) == (pid + 1, 0)  # epoch exhausted: a fresh id
    assert manager.bump(10_000_000, 3)[1] == 0  # unknown id: a fresh id
