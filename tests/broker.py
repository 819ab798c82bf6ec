"""A real `dari serve` subprocess for acceptance tests.

Tests drive the broker only through its command line and its sockets, exactly as a user would, so
this helper knows nothing of dari's internals: it starts `python -m dari serve`, waits for the
`dari ready kafka=HOST:PORT [amqp=HOST:PORT]` line and offers the lifecycle operations the tests
need (graceful stop, SIGKILL, restart on the same data dir and ports so clients can reconnect).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0
_ADDRESS = r"(?:[^\s:=]+|\[[^\]]+\]):\d+"
_READY_RE = re.compile(rf"^dari ready(?P<listeners>(?:\s+[a-z]+={_ADDRESS})+)\s*$")
_LISTENER_RE = re.compile(r"(?P<name>[a-z]+)=(?P<host>[^\s:=]+|\[[^\]]+\]):(?P<port>\d+)")


def parse_ready_line(line: str) -> dict[str, tuple[str, int]] | None:
    """`dari ready kafka=H:P amqp=H:P` -> {"kafka": (H, P), "amqp": (H, P)}; None if malformed."""
    match = _READY_RE.match(line)
    if match is None:
        return None
    return {
        m["name"]: (m["host"], int(m["port"])) for m in _LISTENER_RE.finditer(match["listeners"])
    }


class Broker:
    """One broker process on one data dir; restarts keep the data dir and the port.

    stdout and stderr go to files under `log_dir` (not pipes) so a chatty broker can never block
    on a full pipe, and every start's output is kept for failure messages.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        log_dir: Path | None = None,
        settings: Mapping[str, object] | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str | None = None,
        via_env: bool = False,
        amqp_port: int | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.log_dir = (
            Path(log_dir) if log_dir is not None else self.data_dir.parent / "broker-logs"
        )
        self.settings = dict(settings or {})
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        self.host = host
        self.port = port
        self.log_level = log_level
        self.via_env = via_env  # pass data dir and listener as DARI_* variables instead of flags
        # None: no --amqp flag (Kafka-only tests); 0: a free port, kept across restarts.
        self.amqp_port = amqp_port
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._stdout_path: Path | None = None
        self._stderr_path: Path | None = None

    # -- addresses -------------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        assert self.port, "broker has not reported its port yet"
        return f"{self.host}:{self.port}"

    @property
    def amqp_address(self) -> str:
        assert self.amqp_port, "broker has no AMQP listener (start it with amqp_port=0)"
        return f"{self.host}:{self.amqp_port}"

    @property
    def amqp_url(self) -> str:
        """What pika, aio-pika, kombu and celery connect to (default user, default vhost)."""
        return f"amqp://guest:guest@{self.amqp_address}/"

    def partition_dir(self, topic: str, partition: int = 0) -> Path:
        return self.data_dir / f"{topic}-{partition}"

    # -- lifecycle -------------------------------------------------------------------------------

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "dari", "serve"]
        if not self.via_env:
            cmd += ["--data-dir", str(self.data_dir), "--kafka", f"{self.host}:{self.port}"]
        if self.amqp_port is not None:
            cmd += ["--amqp", f"{self.host}:{self.amqp_port}"]
        elif not self.via_env:
            # Kafka-only tests still get an AMQP listener: on any free port, never 5672.
            cmd += ["--amqp", f"{self.host}:0"]
        if self.log_level:
            cmd += ["--log-level", self.log_level]
        for key, value in self.settings.items():
            cmd += ["--set", f"{key}={_format_value(value)}"]
        return cmd + self.extra_args

    def start(self) -> Broker:
        assert not self.running, "broker already running"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        self._stdout_path = self.log_dir / f"stdout.{self.starts}.log"
        self._stderr_path = self.log_dir / f"stderr.{self.starts}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        if self.via_env:
            env["DARI_DATA_DIR"] = str(self.data_dir)
            env["DARI_KAFKA"] = f"{self.host}:{self.port}"
            if self.amqp_port is None:
                env["DARI_AMQP"] = f"{self.host}:0"
        with open(self._stdout_path, "wb") as out, open(self._stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                self.command(), stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env
            )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            line = self._ready_line()
            if line is not None:
                self._take_ready_line(line)
                return
            code = self.proc.poll()
            if code is not None:
                raise AssertionError(
                    f"broker exited with code {code} before printing its ready line\n"
                    f"{self.describe()}"
                )
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(
                    f"broker printed no ready line within {READY_TIMEOUT_S:.0f} s\n"
                    f"{self.describe()}"
                )
            time.sleep(0.02)

    def _take_ready_line(self, line: str) -> None:
        """Learn the listeners' ports; a listener that was asked for but not reported fails now."""
        listeners = parse_ready_line(line)
        assert listeners is not None and "kafka" in listeners, (
            f"malformed ready line {line!r}\n{self.describe()}"
        )
        self.port = self._check_port("kafka", self.port, listeners["kafka"][1])
        if self.amqp_port is not None:
            assert "amqp" in listeners, (
                f"broker was started with --amqp but its ready line {line!r} reports no "
                f"amqp= listener\n{self.describe()}"
            )
            self.amqp_port = self._check_port("amqp", self.amqp_port, listeners["amqp"][1])

    def _check_port(self, name: str, asked: int, reported: int) -> int:
        assert asked in (0, reported), (
            f"broker asked for {name} port {asked} but reported {reported}\n{self.describe()}"
        )
        return reported

    def _ready_line(self) -> str | None:
        for line in self.stdout().split("\n")[:-1]:  # complete lines only, never a torn one
            if line.startswith("dari ready"):
                return line
        return None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT_S) -> None:
        """Graceful stop: the contract is exit code 0 within 5 s."""
        assert self.proc is not None, "broker was never started"
        assert self.proc.poll() is None, (
            f"broker died on its own (code {self.proc.returncode})\n{self.describe()}"
        )
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"broker did not exit within {timeout:.0f} s of {signal.Signals(sig).name}\n"
                f"{self.describe()}"
            ) from None
        assert code == 0, (
            f"broker exited with code {code} after {signal.Signals(sig).name}\n{self.describe()}"
        )

    def kill(self) -> None:
        """SIGKILL: no chance to flush, the crash tests' way of pulling the plug."""
        assert self.proc is not None, "broker was never started"
        self.proc.kill()
        self.proc.wait()

    def restart(self) -> Broker:
        """Start again on the same data dir and the same port (clients keep their bootstrap)."""
        if self.running:
            self.terminate()
        return self.start()

    def close(self) -> None:
        """Teardown: stop whatever still runs, politely first, without asserting on the outcome."""
        if not self.running:
            return
        assert self.proc is not None
        self.proc.terminate()
        try:
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    # -- diagnostics -----------------------------------------------------------------------------

    def stdout(self) -> str:
        return _read(self._stdout_path)

    def stderr(self) -> str:
        return _read(self._stderr_path)

    def describe(self, tail: int = 6000) -> str:
        """Command line and the tail of this start's output, for assertion messages."""
        return (
            f"command: {' '.join(self.command())}\n"
            f"--- broker stdout ---\n{self.stdout()[-tail:]}\n"
            f"--- broker stderr ---\n{self.stderr()[-tail:]}"
        )


def run_serve(
    args: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = READY_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """Run `python -m dari serve ARGS` to completion (for contract checks that expect an exit)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "dari", "serve", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def _format_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _read(path: Path | None) -> str:
    if path is None or not path.exists():
        return ""
    return path.read_text(errors="replace")
