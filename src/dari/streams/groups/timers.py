"""Injected time for the group coordinator: a clock and named one-shot timers.

The coordinator never sleeps and never reads the system clock itself. Production code passes
``wall_clock_ms`` and lets the server fire due timers from the event loop; tests pass a
``ManualClock`` and call ``Timers.run_due`` after ``advance`` (no sleeping, no flakiness).
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable, Hashable

Clock = Callable[[], int]  # milliseconds since the epoch


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class ManualClock:
    """A clock that moves only when told to; for tests."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self.now_ms = start_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, ms: int) -> None:
        self.now_ms += ms


class Timers:
    """Named one-shot deadlines; scheduling a key again replaces its previous deadline.

    Owned by the event loop thread (not thread-safe). Cancelled entries stay in the heap and
    are skipped when they surface, so schedule and cancel are O(log n) and O(1).
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._heap: list[tuple[int, int, Hashable]] = []
        self._live: dict[Hashable, tuple[int, int, Callable[[], None]]] = {}
        self._seq = itertools.count()

    def schedule(self, key: Hashable, delay_ms: int, callback: Callable[[], None]) -> None:
        deadline = self.clock() + max(0, delay_ms)
        seq = next(self._seq)
        self._live[key] = (deadline, seq, callback)
        heapq.heappush(self._heap, (deadline, seq, key))

    def cancel(self, key: Hashable) -> None:
        self._live.pop(key, None)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._live

    def next_deadline(self) -> int | None:
        """The earliest live deadline, or None when nothing is scheduled."""
        heap = self._heap
        while heap:
            deadline, seq, key = heap[0]
            entry = self._live.get(key)
            if entry is not None and entry[1] == seq:
                return deadline
            heapq.heappop(heap)
        return None

    def run_due(self, now_ms: int | None = None) -> int:
        """Fire every timer whose deadline is <= now (in deadline order); returns the count.

        Callbacks may schedule further timers; those that are already due fire too.
        """
        fired = 0
        while True:
            now = self.clock() if now_ms is None else now_ms
            deadline = self.next_deadline()
            if deadline is None or deadline > now:
                return fired
            _, _seq, key = heapq.heappop(self._heap)
            entry = self._live.pop(key)
            fired += 1
            entry[2]()
