"""Ready messages of a priority queue (``x-max-priority``), with a deque's interface.

One FIFO per priority level; the head is the oldest message of the highest non-empty level,
as RabbitMQ's priority queues deliver. A message's priority is clamped to the queue's maximum
(absent = 0). Requeued entries go back into their level at their original position.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

Entry = tuple[Any, ...]  # (position, message, enqueued_ms, expires_ms, redelivered)


class PriorityReady:
    """Owned by its queue (event loop thread)."""

    __slots__ = ("_count", "_levels", "_max")

    def __init__(self, max_priority: int) -> None:
        self._max = max_priority
        self._levels: list[deque[Entry]] = [deque() for _ in range(max_priority + 1)]
        self._count = 0

    def _level(self, entry: Entry) -> deque[Entry]:
        priority = entry[1].priority or 0
        return self._levels[min(max(priority, 0), self._max)]

    def _head_level(self) -> deque[Entry]:
        for level in reversed(self._levels):
            if level:
                return level
        raise IndexError("no ready messages")

    def append(self, entry: Entry) -> None:
        self._level(entry).append(entry)
        self._count += 1

    def popleft(self) -> Entry:
        entry = self._head_level().popleft()
        self._count -= 1
        return entry

    def extendleft(self, entries: Iterable[Entry]) -> None:
        """Put entries back, each at its position within its level."""
        for entry in entries:
            level = self._level(entry)
            index = 0
            while index < len(level) and level[index][0] < entry[0]:
                index += 1
            level.insert(index, entry)
            self._count += 1

    def clear(self) -> None:
        for level in self._levels:
            level.clear()
        self._count = 0

    def __getitem__(self, index: int) -> Entry:
        if index != 0:
            raise IndexError("only the head of a priority queue can be read")
        return self._head_level()[0]

    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    def __iter__(self) -> Iterator[Entry]:
        """In position (publish) order, whatever the priority."""
        return heapq.merge(*self._levels, key=lambda entry: entry[0])
