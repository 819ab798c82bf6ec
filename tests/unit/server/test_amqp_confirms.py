"""PublisherConfirms: sequence numbers, one ack multiple per turn, nacks first, turns confirmed
in order even when an earlier one waits for a durable queue's flush."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from dari.message import Message, encode_properties
from dari.queues.queue import PublishResult, Queue
from dari.queues.queue_store import QueueStore
from dari.server.amqp_confirms import PublisherConfirms
from dari.storage import LogConfig


class Wire:
    """Where the confirms go: ("ack" | "nack", seq, multiple) in send order."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int, bool]] = []
        self.flushes = 0
        self.tasks: list[asyncio.Task[Any]] = []

    def confirms(self) -> PublisherConfirms:
        return PublisherConfirms(
            ack=lambda seq, multiple: self.sent.append(("ack", seq, multiple)),
            nack=lambda seq, multiple: self.sent.append(("nack", seq, multiple)),
            spawn=self.spawn,
            flush=self.flush,
        )

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self.tasks.append(task)
        return task

    def flush(self) -> None:
        self.flushes += 1

    def take(self) -> list[tuple[str, int, bool]]:
        sent, self.sent = self.sent, []
        return sent


ACCEPTED = PublishResult(True)
REFUSED = PublishResult(False)


@pytest.fixture
def durable_queue(tmp_path: Path) -> Any:
    queue = Queue("dq", durable=True, store=QueueStore.open(tmp_path / "dq", LogConfig()))
    yield queue
    queue.close()


def message(body: bytes) -> Message:
    return Message.from_amqp("", "dq", encode_properties(delivery_mode=2), body)


async def test_sequence_numbers_and_one_ack_multiple_per_turn() -> None:
    wire = Wire()
    confirms = wire.confirms()
    queue = Queue("q")
    for expected in (1, 2, 3):
        seq = confirms.next_seq()
        assert seq == expected
        confirms.stored(seq, queue, ACCEPTED)
    confirms.next_seq()  # routed nowhere: still confirmed
    confirms.end_of_turn()
    assert wire.take() == [("ack", 4, True)]
    confirms.end_of_turn()  # a turn without publishes owes nothing
    assert wire.take() == []


async def test_refused_publishes_are_nacked_before_the_turns_ack() -> None:
    wire = Wire()
    confirms = wire.confirms()
    queue = Queue("q")
    results = [ACCEPTED, REFUSED, ACCEPTED, REFUSED]
    for result in results:
        confirms.stored(confirms.next_seq(), queue, result)
    confirms.end_of_turn()
    # the turn's ack names its last accepted publish, never a nacked one (pika confirms by
    # the tag named and fails on a second confirm of a nacked tag)
    assert wire.take() == [("nack", 2, False), ("nack", 4, False), ("ack", 3, True)]


async def test_a_turn_of_refused_publishes_is_not_acked() -> None:
    wire = Wire()
    confirms = wire.confirms()
    queue = Queue("q")
    confirms.stored(confirms.next_seq(), queue, ACCEPTED)
    confirms.end_of_turn()
    confirms.stored(confirms.next_seq(), queue, REFUSED)
    confirms.end_of_turn()
    assert wire.take() == [("ack", 1, True), ("nack", 2, False)]


async def test_a_turn_waiting_for_a_flush_holds_back_later_turns(durable_queue: Queue) -> None:
    wire = Wire()
    confirms = wire.confirms()
    seq = confirms.next_seq()
    confirms.stored(seq, durable_queue, durable_queue.publish(message(b"a")))
    confirms.end_of_turn()
    confirms.stored(confirms.next_seq(), Queue("q"), ACCEPTED)
    confirms.end_of_turn()
    assert wire.take() == []  # turn 2 is done, but turn 1 is not durable yet
    await asyncio.gather(*wire.tasks)
    await asyncio.sleep(0)  # the done callback
    assert wire.take() == [("ack", 1, True), ("ack", 2, True)]
    assert wire.flushes == 1


async def test_close_cancels_the_waits_and_sends_nothing_more(durable_queue: Queue) -> None:
    wire = Wire()
    confirms = wire.confirms()
    seq = confirms.next_seq()
    confirms.stored(seq, durable_queue, durable_queue.publish(message(b"a")))
    confirms.end_of_turn()
    confirms.close()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert wire.take() == [] and wire.flushes == 0
    assert all(task.cancelled() for task in wire.tasks)
