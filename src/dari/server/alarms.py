"""Resource alarms, as RabbitMQ raises them: memory high watermark and disk free limit.

A ``ResourceMonitor`` on the event loop reads the broker's resident memory and the free space of
the data directory's filesystem once a second (RabbitMQ's default memory check interval). An
alarm is set when a reading crosses its limit and cleared on the first reading back under it; like
RabbitMQ there is no hysteresis, the check interval is what keeps it from flapping. While any
alarm is active the AMQP listener blocks connections that publish (see ``AMQPServerConnection``);
consumers keep going, which is how the memory gets freed.

Memory is the process RSS (``/proc/self/statm``, as RabbitMQ's default ``rss`` strategy reads it)
against a fraction of total RAM (``/proc/meminfo``) or an absolute byte count; disk is
``shutil.disk_usage(data_dir).free`` against ``disk.free.limit``. Readers are injectable so the
threshold logic can be tested with made-up readings.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 1.0
MEMORY, DISK = "memory", "disk"
_ONE_MIB = 1 << 20
# RabbitMQ assumes 1 GiB when it cannot tell the total memory of the host.
_UNKNOWN_TOTAL_MEMORY = 1 << 30


def process_memory() -> int:
    """Resident set size of this process in bytes (peak RSS where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def total_memory() -> int:
    """Installed RAM in bytes: MemTotal of /proc/meminfo, as RabbitMQ reads it on Linux."""
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError):
        return _UNKNOWN_TOTAL_MEMORY


def disk_free(path: Path) -> int:
    return shutil.disk_usage(path).free


@dataclass(frozen=True)
class Limits:
    """The configured limits; ``memory_bytes`` 0 means "use ``memory_fraction`` of RAM"."""

    memory_fraction: float = 0.6
    memory_bytes: int = 0
    disk_free_bytes: int = 50_000_000

    @classmethod
    def from_settings(cls, settings: Any) -> Limits:
        return cls(
            float(settings["amqp.memory.high.watermark"]),
            int(settings["amqp.memory.high.watermark.bytes"]),
            int(settings["disk.free.limit"]),
        )


class ResourceMonitor:
    """Owns the set of active alarms; ``listeners`` are called after every change of it."""

    def __init__(
        self,
        limits: Limits,
        data_dir: Path,
        *,
        node: object = 0,
        memory_used: Callable[[], int] = process_memory,
        memory_total: Callable[[], int] = total_memory,
        disk_free: Callable[[Path], int] = disk_free,
        interval_s: float = CHECK_INTERVAL_S,
    ) -> None:
        self.data_dir = data_dir
        self.node = node
        self.interval_s = interval_s
        self._memory_used = memory_used
        self._memory_total = memory_total
        self._disk_free = disk_free
        self.active: frozenset[str] = frozenset()
        self.listeners: list[Callable[[], None]] = []
        self.limits = limits
        self.memory_limit = 0
        self._disk_error_logged = False
        self.set_limits(limits)

    # -- limits and readings -----------------------------------------------------------------
    def set_limits(self, limits: Limits) -> None:
        """Apply (new) limits and check at once, as ``rabbitmqctl set_vm_memory_high_watermark``
        and ``set_disk_free_limit`` do."""
        self.limits = limits
        total = self._memory_total()
        if limits.memory_bytes > 0:
            self.memory_limit = min(limits.memory_bytes, total)
        else:
            self.memory_limit = int(limits.memory_fraction * total)
        log.info(
            "Memory high watermark set to %d MiB (%d bytes) of %d MiB (%d bytes) total",
            self.memory_limit // _ONE_MIB, self.memory_limit, total // _ONE_MIB, total,
        )
        log.info("Disk free limit set to %dMB", limits.disk_free_bytes // 1_000_000)
        self.check()

    def check(self) -> None:
        """Take one reading of each resource; set or clear alarms; tell the listeners."""
        used = self._memory_used()
        try:
            free: int | None = self._disk_free(self.data_dir)
            self._disk_error_logged = False
        except OSError as exc:
            # Like RabbitMQ: an unknown free space raises no alarm.
            if not self._disk_error_logged:
                log.warning("Free disk space monitoring failed: %s", exc)
                self._disk_error_logged = True
            free = None
        active = set(self.active)
        self._update(active, MEMORY, used > self.memory_limit, used, self.memory_limit, "used")
        low_disk = free is not None and free < self.limits.disk_free_bytes
        self._update(active, DISK, low_disk, free, self.limits.disk_free_bytes, "free")
        if active != self.active:
            self.active = frozenset(active)
            for listener in list(self.listeners):
                listener()

    def _update(
        self, active: set[str], source: str, alarmed: bool, value: int | None, limit: int,
        what: str,
    ) -> None:
        if alarmed == (source in active):
            return
        if alarmed:
            active.add(source)
            log.warning(
                "%s resource limit alarm set on node %s (%s %d bytes, limit %d bytes). "
                "Publishers will be blocked until this alarm clears",
                source, self.node, what, value, limit,
            )
        else:
            active.discard(source)
            log.warning(
                "%s resource limit alarm cleared on node %s (%s %s bytes, limit %d bytes)",
                source, self.node, what, "unknown" if value is None else value, limit,
            )

    @property
    def reason(self) -> str:
        """The connection.blocked reason RabbitMQ sends: ``low on memory``, ``low on disk`` or
        ``low on disk & memory``."""
        return "low on " + " & ".join(sorted(self.active))

    # -- the periodic check ------------------------------------------------------------------
    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                self.check()
            except Exception:
                log.exception("resource check failed")
