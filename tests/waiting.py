"""Bounded polling for tests: fail naming what never happened, never sleep a fixed time and hope."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
WAIT_S = 30.0


def wait_until(
    probe: Callable[[], T], done: Callable[[T], bool], what: str, timeout: float = WAIT_S
) -> T:
    """Poll `probe()` until `done(state)`; on timeout fail naming `what` and the last state seen."""
    deadline = time.monotonic() + timeout
    while True:
        state = probe()
        if done(state):
            return state
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f} s waiting for {what}; last: {state!r}"
            )
        time.sleep(0.05)
