"""Resource alarm thresholds with made-up readings, their settings, and how a blocked AMQP
connection shares its read pause with write backpressure."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from dari.config import ConfigError, Settings
from dari.server.alarms import DISK, MEMORY, Limits, ResourceMonitor
from dari.server.amqp import AMQPServerConnection

GIB = 1 << 30


class Readings:
    """What the monitor's readers return; tests change the values between checks."""

    def __init__(self, used: int = GIB, total: int = 16 * GIB, free: int = 100 * GIB) -> None:
        self.used, self.total, self.free = used, total, free
        self.disk_error: OSError | None = None

    def disk(self, _path: Path) -> int:
        if self.disk_error is not None:
            raise self.disk_error
        return self.free

    def monitor(self, limits: Limits) -> ResourceMonitor:
        return ResourceMonitor(
            limits, Path("."), memory_used=lambda: self.used,
            memory_total=lambda: self.total, disk_free=self.disk,
        )


def _alarm_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_memory_alarm_sets_above_the_fraction_and_clears_back_under(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "dari.server.alarms")
    r = Readings(used=GIB, total=10 * GIB)
    monitor = r.monitor(Limits(memory_fraction=0.4))
    changes: list[frozenset[str]] = []
    monitor.listeners.append(lambda: changes.append(monitor.active))
    assert monitor.memory_limit == 4 * GIB
    assert monitor.active == frozenset()
    r.used = 4 * GIB  # at the limit is not above it
    monitor.check()
    assert monitor.active == frozenset()
    r.used = 4 * GIB + 1
    monitor.check()
    monitor.check()  # still above: no second alarm, no second log line
    assert monitor.active == {MEMORY}
    assert monitor.reason == "low on memory"
    r.used = 3 * GIB
    monitor.check()
    assert changes == [frozenset({MEMORY}), frozenset()]
    logs = _alarm_logs(caplog)
    assert len(logs) == 2
    assert logs[0].startswith("memory resource limit alarm set on node 0")
    assert "Publishers will be blocked until this alarm clears" in logs[0]
    assert logs[1].startswith("memory resource limit alarm cleared on node 0")


def test_absolute_memory_limit_wins_and_is_capped_at_total_memory() -> None:
    r = Readings(used=GIB, total=8 * GIB)
    assert r.monitor(Limits(memory_fraction=0.1, memory_bytes=2 * GIB)).memory_limit == 2 * GIB
    assert r.monitor(Limits(memory_bytes=64 * GIB)).memory_limit == 8 * GIB
    assert r.monitor(Limits(memory_bytes=1)).active == {MEMORY}, "checked at once"
    assert r.monitor(Limits(memory_fraction=0.0)).active == {MEMORY}, "0 stops all publishing"


def test_disk_alarm_below_the_free_limit() -> None:
    r = Readings(free=50_000_000)
    monitor = r.monitor(Limits(disk_free_bytes=50_000_000))
    assert monitor.active == frozenset(), "exactly the limit free is enough"
    r.free = 49_999_999
    monitor.check()
    assert monitor.active == {DISK}
    assert monitor.reason == "low on disk"
    r.free = 60_000_000
    monitor.check()
    assert monitor.active == frozenset()


def test_both_alarms_give_rabbitmqs_combined_reason() -> None:
    r = Readings(used=10 * GIB, free=1)
    monitor = r.monitor(Limits(memory_bytes=GIB))
    assert monitor.active == {MEMORY, DISK}
    assert monitor.reason == "low on disk & memory"
    r.used = 1
    monitor.check()
    assert monitor.active == {DISK}, "each alarm clears on its own"


def test_new_limits_apply_at_once() -> None:
    r = Readings(used=2 * GIB, total=10 * GIB)
    monitor = r.monitor(Limits(memory_fraction=0.1))
    changes: list[frozenset[str]] = []
    monitor.listeners.append(lambda: changes.append(monitor.active))
    assert monitor.active == {MEMORY}
    monitor.set_limits(Limits(memory_fraction=0.6))
    assert changes == [frozenset()]


def test_unreadable_disk_raises_no_alarm_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    r = Readings(free=1)
    monitor = r.monitor(Limits())
    assert monitor.active == {DISK}
    caplog.clear()
    r.disk_error = OSError("gone")
    monitor.check()
    monitor.check()
    assert monitor.active == frozenset()
    failures = [m for m in _alarm_logs(caplog) if "monitoring failed" in m]
    assert len(failures) == 1


# -- settings ----------------------------------------------------------------------------------


def test_settings_defaults_and_sources(tmp_path: Path) -> None:
    defaults = Settings.load(environ={})
    assert Limits.from_settings(defaults) == Limits(0.6, 0, 50_000_000)
    env = {"DARI_AMQP_MEMORY_HIGH_WATERMARK": "0.25", "DARI_DISK_FREE_LIMIT": "1000"}
    settings = Settings.load(None, {"amqp.memory.high.watermark.bytes": "1"}, environ=env)
    assert Limits.from_settings(settings) == Limits(0.25, 1, 1000)
    toml = tmp_path / "dari.toml"
    toml.write_text('"amqp.memory.high.watermark" = 0\n')
    assert Settings.load(toml, environ={})["amqp.memory.high.watermark"] == 0.0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"amqp.memory.high.watermark": "1.5"}, "fraction from 0 to 1"),
        ({"amqp.memory.high.watermark": "-0.1"}, "fraction from 0 to 1"),
        ({"amqp.memory.high.watermark": "lots"}, "expects a float"),
        ({"amqp.memory.high.watermark": True}, "expects a float"),
        ({"disk.free.limit": "-1"}, "must not be negative"),
        ({"amqp.memory.high.watermark.bytes": "-1"}, "must not be negative"),
    ],
)
def test_invalid_limits_are_refused(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.load(None, overrides, environ={})


def test_reload_reads_the_config_file_again_and_flags_still_win(tmp_path: Path) -> None:
    toml = tmp_path / "dari.toml"
    toml.write_text('"amqp.memory.high.watermark" = 0.0\n"disk.free.limit" = 5\n')
    settings = Settings.load(toml, {"disk.free.limit": "7"}, environ={})
    toml.write_text('"amqp.memory.high.watermark" = 0.5\n"disk.free.limit" = 9\n')
    again = settings.reload()
    assert again["amqp.memory.high.watermark"] == 0.5
    assert again["disk.free.limit"] == 7


# -- the connection's read pause ------------------------------------------------------------------


class Transport:
    """Records reading state like an asyncio transport."""

    def __init__(self) -> None:
        self.reading = True

    def pause_reading(self) -> None:
        assert self.reading, "paused twice"
        self.reading = False

    def resume_reading(self) -> None:
        assert not self.reading, "resumed twice"
        self.reading = True

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, _name: str) -> None:
        return None


def _connection(monitor: ResourceMonitor) -> tuple[AMQPServerConnection, Transport]:
    settings = {"frame_max": 131072, "channel_max": 2047, "heartbeat": 0}
    conn = AMQPServerConnection(None, settings, set(), monitor)  # type: ignore[arg-type]
    transport = Transport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    return conn, transport


def test_alarm_and_write_backpressure_pause_reading_together() -> None:
    r = Readings(used=1)
    monitor = r.monitor(Limits(memory_bytes=GIB))
    conn, transport = _connection(monitor)
    conn.published = True
    conn._after_publish()
    assert transport.reading and not conn.blocked, "no alarm: publishing changes nothing"
    r.used = 2 * GIB
    monitor.check()
    assert transport.reading, "an alarm alone does not block: the next publish does"
    conn.pause_writing()
    conn.published = True
    conn._after_publish()
    assert conn.blocked and not transport.reading
    conn.resume_writing()
    assert not transport.reading, "still blocked by the alarm"
    conn.pause_writing()
    r.used = 1
    monitor.check()
    conn.alarms_changed()
    assert not conn.blocked and not transport.reading, "still paused for backpressure"
    conn.resume_writing()
    assert transport.reading


def test_a_connection_that_does_not_publish_is_not_blocked() -> None:
    monitor = Readings(used=2 * GIB).monitor(Limits(memory_bytes=GIB))
    conn, transport = _connection(monitor)
    conn.data_received(b"")  # a read without publishes (acks, heartbeats, ...)
    assert transport.reading and not conn.blocked
