"""SIGKILL a process that publishes to and acks from a durable queue; reopen the store.

The child publishes persistent messages whose body is their own log offset, takes deliveries,
acks some and requeues others, and reports on stdout only *after* each flush ("P <next offset>"
once messages are appended, "A <offsets>" once acks are written; "a <offsets>" announces acks
about to be written). After each kill the parent reopens the queue and checks: every reported
message without a reported ack is back, no reported ack resurrects its message, nothing comes
back twice or out of order, and everything recovered after a crash is flagged redelivered.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

from dari.queues.queue import Queue
from dari.queues.queue_store import QueueStore

CYCLES = 6

CHILD = r"""
import random, sys
from dari.message import Message, encode_properties
from dari.queues.queue import Queue
from dari.queues.queue_store import QueueStore
from dari.storage import LogConfig

path, seed = sys.argv[1], int(sys.argv[2])
rng = random.Random(seed)
props = encode_properties(delivery_mode=2)
store = QueueStore.open(path, LogConfig(segment_bytes=64 << 10), snapshot_min_bytes=2048)
queue = Queue("crash", durable=True, store=store)
out = sys.stdout
while True:
    base = store.next_offset
    for i in range(rng.randint(1, 300)):
        queue.publish(Message("", "crash", b"%d" % (base + i), props, 2))
    queue.flush()
    out.write(f"P {store.next_offset}\n")
    out.flush()
    taken = []
    for _ in range(rng.randint(0, 300)):
        d = queue.get()
        if d is None:
            break
        taken.append(d)
    acked = [d for d in taken if rng.random() < 0.8]
    back = [d for d in taken if d not in acked]
    out.write("a " + " ".join(str(d.message.offset) for d in acked) + "\n")
    out.flush()
    for d in acked:
        queue.ack(d)
    queue.requeue_all(back)
    queue.flush()
    out.write("A " + " ".join(str(d.message.offset) for d in acked) + "\n")
    out.flush()
"""


def run_child(path: Path, seed: int, lines_before_kill: int) -> list[str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(seed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if len(lines) >= lines_before_kill:
            break
    proc.send_signal(signal.SIGKILL)
    # Read through the same buffered file: lines it already read ahead must not be skipped.
    rest = proc.stdout.read()
    assert proc.stderr is not None
    err = proc.stderr.read()
    assert proc.wait(timeout=30) == -signal.SIGKILL, err
    lines.extend(rest.split("\n")[:-1])  # a line the kill cut short is not a report
    return lines


def test_sigkill_never_loses_or_resurrects(tmp_path: Path) -> None:
    path = tmp_path / "queue"
    rng = random.Random(42)
    published_upto = 0
    acked: set[int] = set()
    for cycle in range(CYCLES):
        lines = run_child(path, seed=cycle, lines_before_kill=rng.randint(5, 120))
        maybe: set[int] = set()
        for line in lines:
            if not line:
                continue
            kind, _, rest = line.partition(" ")
            offsets = {int(x) for x in rest.split()} if kind in "aA" else set()
            if kind == "P":
                published_upto = max(published_upto, int(rest))
            elif kind == "a":
                maybe = offsets
            elif kind == "A":
                acked |= offsets
                maybe = set()

        store = QueueStore.open(path)
        queue = Queue("crash", durable=True, store=store)
        recovered = []
        while (d := queue.get(no_ack=False)) is not None:
            assert d.redelivered, "after a crash every recovered message counts as delivered"
            assert int(d.message.body) == d.message.offset
            recovered.append(d.message.offset)
        assert recovered == sorted(set(recovered)), "duplicates or out of order"
        must_have = set(range(published_upto)) - acked - maybe
        missing = must_have - set(recovered)
        assert not missing, f"cycle {cycle}: lost {sorted(missing)[:10]}"
        resurrected = acked & set(recovered)
        assert not resurrected, f"cycle {cycle}: acked came back {sorted(resurrected)[:10]}"
        assert all(o < store.next_offset for o in recovered)
        # acks that were written but not reported are indistinguishable from lost ones:
        # only the announced batch may be missing on top of the reported acks
        assert set(range(published_upto)) - set(recovered) - acked <= maybe
        acked |= maybe - set(recovered)
        for d in queue.unacked:
            queue.requeue_all([d])
        queue.close()
    assert published_upto > 0 and acked
