"""Start, observe and stop the AMQP brokers under test: dari and a private RabbitMQ node.

RabbitMQ runs as its own node (own name, ports, data and log directories, no plugins) so it
neither touches nor is disturbed by a system RabbitMQ on the default ports. Ready is the first
completed AMQP handshake for both brokers; dari's `dari ready` line is recorded as well.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench import procs
from bench.amqp_probe import ProbeError, probe
from bench.brokers import (
    Broker,
    BrokerStartError,
    _spawn,
    free_port,
    spawn_dari,
    wait_probe,
)

_DARI_READY = re.compile(rb"dari ready kafka=\S+ amqp=(\S+):(\d+)")
_DARI_KAFKA = re.compile(rb"dari ready kafka=(\S+:\d+) ")
RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"


@dataclass
class RabbitBroker(Broker):
    """The `rabbitmq-server` script runs `erl` as a child: stop the VM, then the script."""

    def stop(self) -> None:
        tree = self._tree()
        vms = [p for p in tree if p.name().startswith("beam")]
        for p in vms or tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.terminate()  # the VM shuts RabbitMQ down cleanly on SIGTERM
        _gone, alive = psutil.wait_procs(tree, timeout=15)
        for p in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        procs.stop(self.proc, timeout=2)


def _wait_probe(broker: Broker, deadline: float) -> float:
    """Poll until an AMQP handshake succeeds; return seconds since spawn."""
    return wait_probe(broker, deadline, probe, (OSError, ProbeError), "AMQP handshake")


def start_dari(workdir: Path, name: str = "dari", extra: tuple[str, ...] = (),
               timeout: float = 60.0, src: Path | None = None) -> Broker:
    """dari with its AMQP listener under test; ready = its `dari ready` line. `src`: the
    sources of another dari tree (the `dari-base` broker)."""
    listeners = ["--kafka", "127.0.0.1:0", "--amqp", f"127.0.0.1:{free_port()}", *extra]
    broker, deadline = spawn_dari(workdir, name, listeners, _DARI_READY, timeout, src)
    broker.probe_s = _wait_probe(broker, deadline)
    return broker


def kafka_bootstrap(broker: Broker) -> str | None:
    """dari's Kafka listener as its ready line names it; None for other brokers."""
    if not broker.name.startswith("dari"):
        return None
    match = _DARI_KAFKA.search(broker.log_path.read_bytes())
    return match.group(1).decode() if match else None


def rabbitmq_env(workdir: Path, node: str, port: int, dist_port: int) -> dict[str, str]:
    """Everything a node needs, inside `workdir`: cookie (HOME), data, logs, empty plugin list."""
    plugins = workdir / "enabled_plugins"
    plugins.write_text("[].\n")
    env_file = workdir / "rabbitmq-env.conf"
    env_file.write_text("")
    return procs.child_env(
        HOME=str(workdir),
        RABBITMQ_NODENAME=node,
        RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
        RABBITMQ_NODE_PORT=str(port),
        RABBITMQ_DIST_PORT=str(dist_port),
        RABBITMQ_MNESIA_BASE=str(workdir / "mnesia"),
        RABBITMQ_LOG_BASE=str(workdir / "log"),
        RABBITMQ_LOGS="-",
        RABBITMQ_PID_FILE=str(workdir / "rabbitmq.pid"),
        RABBITMQ_ENABLED_PLUGINS_FILE=str(plugins),
        RABBITMQ_CONF_ENV_FILE=str(env_file),
        RABBITMQ_CONFIG_FILE=str(workdir / "rabbitmq"),
        RABBITMQ_ADVANCED_CONFIG_FILE=str(workdir / "advanced.config"),
    )


def start_rabbitmq(workdir: Path, timeout: float = 60.0) -> Broker:
    """A private node `bench-<port>@localhost`; ready = first AMQP handshake."""
    if not Path(RABBITMQ_SERVER).exists():
        raise BrokerStartError(f"{RABBITMQ_SERVER} not found (apt-get install rabbitmq-server)")
    workdir.mkdir(parents=True, exist_ok=True)
    port, dist_port = free_port(), free_port()
    env = rabbitmq_env(workdir, f"bench-{port}@localhost", port, dist_port)
    proc_broker = _spawn("rabbitmq", [RABBITMQ_SERVER], workdir, env)
    broker = RabbitBroker(proc_broker.name, proc_broker.proc, "127.0.0.1", port, workdir,
                          proc_broker.log_path, proc_broker.spawned_at)
    broker.ready_s = broker.probe_s = _wait_probe(broker, broker.spawned_at + timeout)
    return broker


def rabbitmq_version() -> str:
    dpkg = shutil.which("dpkg-query")
    if not dpkg:
        return "unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        res = subprocess.run([dpkg, "-W", "-f=${Version}", "rabbitmq-server"],
                             capture_output=True, text=True, timeout=10)
        return res.stdout.strip() or "unknown"
    return "unknown"


def start(name: str, workdir: Path, base_src: Path | None = None) -> Broker:
    """`dari-base` is dari run from `base_src` (another tree's `src`), to compare commits."""
    if name == "dari":
        return start_dari(workdir)
    if name == "dari-base":
        if base_src is None:
            raise BrokerStartError("dari-base needs --base-src (a dari tree's src directory)")
        return start_dari(workdir, name, src=base_src)
    if name == "dari-fsync":  # confirms wait for fsync, as RabbitMQ's do for persistent messages
        return start_dari(workdir, name, ("--set", "log.flush.policy=always"))
    if name == "rabbitmq":
        return start_rabbitmq(workdir)
    raise ValueError(f"unknown broker {name!r}")
