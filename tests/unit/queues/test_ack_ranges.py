"""AckRanges against a plain set model: membership, mark-delete, compactness, encoding."""

from __future__ import annotations

import itertools
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from dari.queues.ack_ranges import AckRanges, decode_runs, encode_runs, merge_runs, runs

ops = st.lists(
    st.tuples(st.integers(0, 300), st.integers(1, 12)),
    max_size=120,
)


def _check_invariants(state: AckRanges) -> None:
    ranges = state.ranges()
    for start, end in ranges:
        assert state.mark_delete < start < end
    for (_, end), (start, _) in itertools.pairwise(ranges):
        assert end < start  # disjoint and never adjacent (adjacent ones merge)
    assert state.acked_above == sum(e - s for s, e in ranges)


@given(ops)
@settings(max_examples=300)
def test_matches_set_model(items: list[tuple[int, int]]) -> None:
    state = AckRanges()
    model: set[int] = set()
    for start, length in items:
        end = start + length
        added = state.add_range(start, end)
        new = set(range(start, end)) - model
        assert added == len(new)
        model |= new
        _check_invariants(state)
    mark = 0
    while mark in model:
        mark += 1
    assert state.mark_delete == mark
    for position in range(0, 330):
        assert (position in state) == (position in model)
    unacked = [p for a, b in state.unacked_runs(0, 330) for p in range(a, b)]
    assert unacked == [p for p in range(330) if p not in model]
    assert AckRanges.decode(state.encode()) == state


@given(st.lists(st.integers(0, 200), max_size=200))
def test_single_adds_match_set_model(positions: list[int]) -> None:
    state = AckRanges()
    model: set[int] = set()
    for p in positions:
        assert state.add(p) == (p not in model)
        model.add(p)
    _check_invariants(state)
    assert [p for p in range(210) if p in state] == sorted(model)


def test_in_order_acks_only_move_the_mark() -> None:
    state = AckRanges()
    for p in range(10_000):
        state.add(p)
    assert state.mark_delete == 10_000
    assert len(state) == 0


def test_out_of_order_acks_of_a_million_stay_compact() -> None:
    """Shuffled acks within a sliding window: the ranges never grow beyond the window."""
    state = AckRanges()
    rng = random.Random(7)
    window = 1_000
    total = 1_000_000
    peak = 0
    for base in range(0, total, window):
        block = list(range(base, base + window))
        rng.shuffle(block)
        for p in block:
            state.add(p)
        peak = max(peak, len(state))
    assert state.mark_delete == total
    assert len(state) == 0
    assert peak <= window // 2 + 1


def test_every_other_position_is_one_range_per_hole() -> None:
    state = AckRanges()
    for p in range(1, 2001, 2):
        state.add(p)
    assert state.mark_delete == 0
    assert len(state) == 1000
    for p in range(0, 2000, 2):
        state.add(p)
    assert state.mark_delete == 2000
    assert len(state) == 0


def test_clip_forgets_positions_beyond_the_log() -> None:
    state = AckRanges()
    state.add_range(0, 10)
    state.add_range(12, 20)
    state.add_range(25, 30)
    state.clip(15)
    assert state.ranges() == [(12, 15)]
    assert 16 not in state and 12 in state
    state.clip(5)
    assert state.mark_delete == 5 and len(state) == 0


def test_runs_helpers() -> None:
    assert runs([5, 1, 2, 3, 9, 5]) == [(1, 4), (5, 6), (9, 10)]
    assert merge_runs([(5, 6), (1, 3), (3, 4), (2, 5)]) == [(1, 6)]
    pairs = [(1, 4), (9, 10)]
    assert decode_runs(encode_runs(pairs)) == pairs
