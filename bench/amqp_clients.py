"""The AMQP benchmarks' client processes: `bench.amqp_loadgen` workers driven from the harness."""

from __future__ import annotations

import json
import selectors
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from bench import procs
from bench.kafka_bench import Client


class LoadClient(Client):
    """A `bench.amqp_loadgen` process; same START / READY / RESULT protocol as `Client`."""

    def __init__(self, spec: dict[str, Any], log_dir: Path) -> None:
        self.log_path = log_dir / f"amqp-{spec['mode']}-{uuid.uuid4().hex[:6]}.log"
        with self.log_path.open("wb") as err:
            self.proc = procs.spawn(
                [sys.executable, "-m", "bench.amqp_loadgen", json.dumps(spec)],
                stdout=subprocess.PIPE, stderr=err,
                stdin=subprocess.PIPE if spec.get("go") else subprocess.DEVNULL,
                cwd=Path(__file__).resolve().parent.parent,
            )
        self.sel = selectors.DefaultSelector()
        assert self.proc.stdout is not None
        self.sel.register(self.proc.stdout, selectors.EVENT_READ)

    def go(self) -> None:
        """Release a consumer started with `go` (it waits after READY)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"GO\n")
        self.proc.stdin.flush()


def run_deadline(count: int, rate: float = 5_000) -> float:
    """Generous per-run limit so a stuck broker fails one row instead of hanging the run."""
    return time.perf_counter() + 60.0 + count / rate
