"""Publisher confirms of one AMQP channel in confirm mode.

Each publish gets the next sequence number. A message is confirmed once every queue it was
routed to has stored it per its flush policy; a queue that refused it (``x-overflow
reject-publish``) makes it a nack. The confirms of one event-loop turn go out together, in
order: the nacks of that turn, then one ``basic.ack multiple`` up to the turn's last number —
after the durable queues' appends of that turn are flushed, if any.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from dari.queues.queue import PublishResult, Queue

# (seq, multiple) -> None: writes a basic.ack or basic.nack frame
SendConfirm = Callable[[int, bool], None]
Spawn = Callable[[Coroutine[Any, Any, Any]], "asyncio.Task[Any]"]


class PublisherConfirms:
    """The sequence numbers and confirms still owed on one channel; owned by that channel
    (event loop thread). ``spawn`` runs the wait for durable appends as a task the connection
    owns; ``flush`` sends the confirms a finished wait released.
    """

    __slots__ = (
        "_ack",
        "_acked_upto",
        "_flush",
        "_nack",
        "_pending",
        "_spawn",
        "_turn_nacks",
        "_turn_seq",
        "_turn_waits",
        "closed",
        "seq",
    )

    def __init__(
        self, ack: SendConfirm, nack: SendConfirm, spawn: Spawn, flush: Callable[[], None]
    ) -> None:
        self._ack, self._nack, self._spawn, self._flush = ack, nack, spawn, flush
        self.seq = 0  # the last sequence number handed out
        self._turn_seq = 0  # the last one of this turn (0: no publish this turn)
        self._turn_nacks: list[int] = []
        self._turn_waits: dict[int, tuple[Queue, int]] = {}  # id(queue) -> highest offset
        # turns not confirmed yet: (last seq, nacks, wait for durable appends or None)
        self._pending: deque[tuple[int, list[int], asyncio.Task[None] | None]] = deque()
        self._acked_upto = 0
        self.closed = False

    def next_seq(self) -> int:
        """The sequence number of a new publish (confirmed at the end of this turn at the
        earliest, routed or not)."""
        seq = self.seq = self._turn_seq = self.seq + 1
        return seq

    def stored(self, seq: int, queue: Queue, result: PublishResult) -> None:
        """``queue``'s answer to publish ``seq``: refused (a nack), or appended at an offset
        of its log that has to be durable before the ack."""
        if not result.accepted:
            self._turn_nacks.append(seq)
            return
        if result.offset >= 0:  # a queue's offsets only grow: the last one is the highest
            self._turn_waits[id(queue)] = (queue, result.offset)

    def end_of_turn(self) -> None:
        """After a socket read: owe this turn's confirms, and send those already due."""
        if not self._turn_seq:
            return
        upto, nacks, waits = self._turn_seq, self._turn_nacks, self._turn_waits
        self._turn_seq, self._turn_nacks, self._turn_waits = 0, [], {}
        task = None
        if waits:
            task = self._spawn(_wait_durable(list(waits.values())))
            task.add_done_callback(self._wait_done)
        self._pending.append((upto, nacks, task))
        self._drain()

    def _wait_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self.closed:
            return
        self._drain()
        self._flush()

    def _drain(self) -> None:
        """Send the confirms of the finished turns at the head, in turn order; a failed flush
        nacks the whole turn."""
        pending = self._pending
        while pending:
            upto, nacks, task = pending[0]
            if task is not None and not task.done():
                return
            pending.popleft()
            failed = task is not None and task.exception() is not None
            for seq in nacks:
                self._nack(seq, False)
            if failed:
                self._nack(upto, True)
            else:
                # the ack must not name a nacked number: clients confirm by the tag named
                last = upto
                while nacks and last in nacks and last > self._acked_upto:
                    last -= 1
                if last > self._acked_upto:
                    self._ack(last, True)
            self._acked_upto = max(self._acked_upto, upto)

    def close(self) -> None:
        """The channel closed: nothing more is sent; stop waiting for appends."""
        self.closed = True
        for _upto, _nacks, task in self._pending:
            if task is not None:
                task.cancel()
        self._pending.clear()


async def _wait_durable(waits: list[tuple[Queue, int]]) -> None:
    await asyncio.gather(*(queue.wait_durable(offset) for queue, offset in waits))
