"""Child-process bookkeeping: every process the harness starts dies with it.

Brokers and clients are registered here; `kill_all` runs on normal exit, on Ctrl-C and on SIGTERM,
and on Linux each child also gets PR_SET_PDEATHSIG so a SIGKILLed harness leaves nothing behind.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

_live: list[subprocess.Popen[Any]] = []
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: ask the kernel to SIGKILL us if the harness dies."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def spawn(argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
    """Start a registered child in its own process group (Ctrl-C reaches only the harness)."""
    if sys.platform.startswith("linux"):
        kwargs.setdefault("preexec_fn", _die_with_parent)
    kwargs.setdefault("start_new_session", True)
    proc = subprocess.Popen(list(argv), **kwargs)
    _live.append(proc)
    return proc


def stop(proc: subprocess.Popen[Any], timeout: float = 5.0) -> int | None:
    """Terminate gracefully, then kill; safe to call twice."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
    if proc in _live:
        _live.remove(proc)
    return proc.returncode


def kill_all() -> None:
    """Stop every child still alive, newest first (clients before the broker they talk to)."""
    for proc in reversed(list(_live)):
        stop(proc, timeout=3.0)


def _on_sigterm(signum: int, frame: object) -> None:
    kill_all()
    raise SystemExit(128 + signum)


def install_cleanup() -> None:
    """Hook `kill_all` into exit and SIGTERM/SIGHUP; Ctrl-C unwinds through `finally` blocks."""
    atexit.register(kill_all)
    # A shell starting us in the background may have set SIGINT to "ignore"; Ctrl-C must work.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _on_sigterm)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, _on_sigterm)


def child_env(**extra: str) -> dict[str, str]:
    """The harness environment plus `extra`, for children that need e.g. LD_LIBRARY_PATH."""
    env = dict(os.environ)
    env.update(extra)
    return env
