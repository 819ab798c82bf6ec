"""TopicManager hands out Partitions and cleans up after a deleted topic."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from dari.records import build_batch
from dari.storage import LogConfig, LogStore
from dari.streams.errors import UnknownTopicError
from dari.streams.producer_state import SNAPSHOT_FILE
from dari.streams.topics import TopicManager


@pytest.fixture
def topics(tmp_path: Path) -> Iterator[TopicManager]:
    store = LogStore(tmp_path / "data")
    manager = TopicManager(store, LogConfig(retention_ms=-1))
    manager.load()
    yield manager
    manager.close()
    store.close()


def idempotent_batch(sequence: int) -> bytes:
    return build_batch([(b"k", b"v")], producer_id=7, producer_epoch=0, base_sequence=sequence)


def test_partitions_are_handed_out_by_name_and_index(topics: TopicManager) -> None:
    topic = topics.create("t", 2)
    assert topics.partition("t", 1) is topic.partition(1)
    assert topic.partition(1).log is topic.partitions[1]
    assert topic.partition(2) is None and topic.partition(-1) is None
    with pytest.raises(UnknownTopicError):
        topics.partition("t", 2)
    topics.add_partitions("t", 3)
    assert topics.partition("t", 2).index == 2


def test_deleting_a_topic_forgets_its_producer_state(
    topics: TopicManager, caplog: pytest.LogCaptureFixture
) -> None:
    topics.create("t", 1)
    partition = topics.partition("t", 0)
    assert partition.append(idempotent_batch(0)).error is None
    directory = partition.log.directory
    topics.delete("t")
    with caplog.at_level(logging.WARNING):
        topics.producer_states.snapshot_all(closing=True)
    assert not directory.exists()
    assert "cannot snapshot" not in caplog.text
    # A topic of the same name starts with no producers: sequence 1 is a gap again.
    topics.create("t", 1)
    assert topics.partition("t", 0).append(idempotent_batch(1)).error is not None


def test_producer_state_snapshot_is_written_whole(topics: TopicManager) -> None:
    topics.create("t", 1)
    partition = topics.partition("t", 0)
    partition.append(idempotent_batch(0))
    topics.producer_states.snapshot_all()
    files = sorted(p.name for p in partition.log.directory.iterdir() if "producer" in p.name)
    assert files == [SNAPSHOT_FILE]
