"""Acknowledgement state of a log-backed queue as ranges: a mark-delete position plus the
acknowledged ranges above it.

Every position below ``mark_delete`` is acknowledged; above it, acknowledged positions are kept
as sorted, disjoint, non-adjacent half-open ranges ``[start, end)``. Memory is proportional to
the number of *holes* (unacknowledged runs between acknowledged ones), not to the number of
messages, so tens of millions of out-of-order acks stay compact. Ranges are found by bisection
(O(log n)); inserting or merging shifts a Python list (a memmove), which is fast at the sizes
that occur.

Owned by one queue on the event loop thread; not safe across threads.
"""

from __future__ import annotations

import struct
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator

_Q = struct.Struct(">q")


class AckRanges:
    """See the module docstring."""

    __slots__ = ("_ends", "_starts", "acked_above", "mark_delete")

    def __init__(self, mark_delete: int = 0) -> None:
        self.mark_delete = mark_delete
        self._starts: list[int] = []
        self._ends: list[int] = []
        self.acked_above = 0  # acknowledged positions >= mark_delete

    # ---- updates --------------------------------------------------------------------------------

    def add(self, position: int) -> bool:
        """Acknowledge one position; False if it already was."""
        mark = self.mark_delete
        if position < mark:
            return False
        if position == mark and not self._starts:  # the in-order fast path
            self.mark_delete = mark + 1
            return True
        return self.add_range(position, position + 1) == 1

    def add_range(self, start: int, end: int) -> int:
        """Acknowledge ``[start, end)``; returns how many positions were newly acknowledged."""
        mark = self.mark_delete
        start = max(start, mark)
        if end <= start:
            return 0
        starts, ends = self._starts, self._ends
        # Ranges that overlap or touch [start, end) are merged with it: those from the one
        # starting at or before ``start`` (if it reaches ``start``) to the last starting <= end.
        lo = bisect_right(starts, start) - 1
        if lo < 0 or ends[lo] < start:
            lo += 1
        hi = bisect_right(starts, end)
        if lo == hi:
            starts.insert(lo, start)
            ends.insert(lo, end)
            added = end - start
        else:
            new_start = min(start, starts[lo])
            new_end = max(end, ends[hi - 1])
            covered = 0
            for i in range(lo, hi):
                covered += ends[i] - starts[i]
            added = (new_end - new_start) - covered
            starts[lo:hi] = [new_start]
            ends[lo:hi] = [new_end]
        self.acked_above += added
        if starts[0] == mark:
            self.mark_delete = ends[0]
            self.acked_above -= ends[0] - mark
            del starts[0]
            del ends[0]
        return added

    def add_all(self, positions: Iterable[int]) -> int:
        """Acknowledge many positions (one range per run of consecutive ones)."""
        added = 0
        for start, end in runs(positions):
            added += self.add_range(start, end)
        return added

    def clip(self, limit: int) -> None:
        """Forget everything at or above ``limit`` (positions that do not exist any more)."""
        if self.mark_delete >= limit:
            self.mark_delete = limit
            self._starts.clear()
            self._ends.clear()
            self.acked_above = 0
            return
        i = bisect_left(self._starts, limit)
        del self._starts[i:]
        del self._ends[i:]
        if self._ends and self._ends[-1] > limit:
            self._ends[-1] = limit
        self.acked_above = sum(e - s for s, e in zip(self._starts, self._ends, strict=True))

    # ---- queries --------------------------------------------------------------------------------

    def __contains__(self, position: int) -> bool:
        if position < self.mark_delete:
            return True
        i = bisect_right(self._starts, position) - 1
        return i >= 0 and position < self._ends[i]

    def __len__(self) -> int:
        """Number of ranges above the mark-delete position (the memory this state takes)."""
        return len(self._starts)

    def ranges(self) -> list[tuple[int, int]]:
        return list(zip(self._starts, self._ends, strict=True))

    def unacked_runs(self, start: int, end: int) -> Iterator[tuple[int, int]]:
        """The unacknowledged runs ``[a, b)`` within ``[start, end)``, in order."""
        start = max(start, self.mark_delete)
        starts, ends = self._starts, self._ends
        i = bisect_right(starts, start) - 1
        if i >= 0 and ends[i] > start:
            start = ends[i]
        i += 1
        while start < end:
            if i < len(starts) and starts[i] < end:
                if starts[i] > start:
                    yield start, starts[i]
                start = ends[i]
                i += 1
            else:
                yield start, end
                return

    # ---- persistence ----------------------------------------------------------------------------

    def encode(self) -> bytes:
        """``mark_delete`` and the ranges as big-endian int64s."""
        flat = [self.mark_delete, len(self._starts)]
        for s, e in zip(self._starts, self._ends, strict=True):
            flat.append(s)
            flat.append(e)
        return struct.pack(f">{len(flat)}q", *flat)

    @classmethod
    def decode(cls, data: bytes | memoryview) -> AckRanges:
        mark, count = struct.unpack_from(">qq", data, 0)
        flat = struct.unpack_from(f">{2 * count}q", data, 16)
        state = cls(mark)
        state._starts = list(flat[0::2])
        state._ends = list(flat[1::2])
        state.acked_above = sum(e - s for s, e in zip(state._starts, state._ends, strict=True))
        return state

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, AckRanges)
            and self.mark_delete == other.mark_delete
            and self._starts == other._starts
            and self._ends == other._ends
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        shown = self.ranges()[:4]
        more = "..." if len(self._starts) > 4 else ""
        return f"AckRanges(mark_delete={self.mark_delete}, ranges={shown}{more})"


def runs(positions: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted, merged half-open runs covering ``positions``."""
    ordered = sorted(set(positions))
    out: list[tuple[int, int]] = []
    if not ordered:
        return out
    start = prev = ordered[0]
    for p in ordered[1:]:
        if p != prev + 1:
            out.append((start, prev + 1))
            start = p
        prev = p
    out.append((start, prev + 1))
    return out


def merge_runs(pairs: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, merged half-open runs covering the union of ``pairs``."""
    out: list[tuple[int, int]] = []
    for start, end in sorted(pairs):
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def encode_runs(pairs: list[tuple[int, int]]) -> bytes:
    flat = [len(pairs)]
    for s, e in pairs:
        flat.append(s)
        flat.append(e)
    return struct.pack(f">{len(flat)}q", *flat)


def decode_runs(data: bytes | memoryview, pos: int = 0) -> list[tuple[int, int]]:
    (count,) = _Q.unpack_from(data, pos)
    flat = struct.unpack_from(f">{2 * count}q", data, pos + 8)
    return list(zip(flat[0::2], flat[1::2], strict=True))
